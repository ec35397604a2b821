//! What a shard's replication did, for `/metrics` (`ferrite_replication_*`): the partition
//! messages its replicas sent and received, by kind, how long each stage of a replicated
//! write took, and how late the shard's replication clock ticked. Counted here, where the work
//! happens; `net` reads them with the shard's other figures when it publishes the shard's
//! metrics snapshot ([`crate::cluster::ShardCluster::replication_stats`]) and renders them.

/// Where a replicated write's time goes, for `/metrics` (`ferrite_replication_*`): what the
/// shard's replicas sent and received, by kind, and how long each stage of an acks=all write
/// took. Kept per shard ([`crate::shard::ShardReplication::replication_stats`]), published with
/// the shard's other metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Partition messages sent to peers, by [`MessageKind`].
    pub sent: [u64; MessageKind::COUNT],
    /// Partition messages received from peers, by [`MessageKind`].
    pub received: [u64; MessageKind::COUNT],
    /// Record batches carried by fetch answers sent (leader) and received (follower).
    pub batches_sent: u64,
    pub batches_received: u64,
    /// Frames sent to peers carrying partition messages (each gathers one executor turn's).
    pub frames_sent: u64,
    /// Fetches a leader held (nothing new for the follower) until its log or commit moved.
    pub fetches_held: u64,
    /// Answers with entries after which a follower did not fetch at once: the entries of
    /// the answer before were not durable yet (the fetch floor).
    pub fetch_floor_waits: u64,
    /// Stage durations, by [`Stage`].
    pub stages: [StageHistogram; Stage::COUNT],
    /// Messages of any kind (partition frames, leader reports, controller and peer calls) the
    /// shard's transport dropped unsent: the oldest of a full queue to a slow or unreachable
    /// peer, or those being written when a connection failed. Raft and the callers resend.
    pub transport_messages_dropped: u64,
    /// Inbound inter-broker connections the shard's transport closed in their handshake or
    /// for a bad frame (another cluster or version, a node not in `--peers`, a failed proof).
    pub transport_connections_refused: u64,
    /// Inter-broker connections, either way, whose peer failed to prove it holds the
    /// cluster's secret (or has none while this broker has one).
    pub transport_authentication_failures: u64,
    /// How late each tick of the shard's replication clock ran after its timer was due: the
    /// wait for the shard's turn (the work queued ahead of it on the shard, and the time the
    /// operating system gave the core to other threads), which every message, completion and
    /// request the shard handles waits too: what tells a shard starved of its core from one
    /// waiting for its disk or its peers when the stages above take long.
    pub tick_lateness: StageHistogram,
}

/// The kinds of partition message [`ReplicationStats`] counts. Elections have their own, so
/// that a failover's campaigns can be read off the counters: each campaign sends a pre-vote to
/// every other voter, and a campaign that timed out sends them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Fetch,
    /// A fetch answer carrying batches.
    FetchEntries,
    /// A fetch answer carrying none (the commit index, a divergence, a snapshot point).
    FetchAnswer,
    Durable,
    PreVote,
    PreVoteGranted,
    PreVoteRefused,
    Vote,
    VoteGranted,
    VoteRefused,
    /// A new leader's announcement.
    BeginEpoch,
    /// A leadership transfer's "start an election now".
    TimeoutNow,
}

impl MessageKind {
    pub const COUNT: usize = 12;
    pub const ALL: [MessageKind; MessageKind::COUNT] = [
        MessageKind::Fetch,
        MessageKind::FetchEntries,
        MessageKind::FetchAnswer,
        MessageKind::Durable,
        MessageKind::PreVote,
        MessageKind::PreVoteGranted,
        MessageKind::PreVoteRefused,
        MessageKind::Vote,
        MessageKind::VoteGranted,
        MessageKind::VoteRefused,
        MessageKind::BeginEpoch,
        MessageKind::TimeoutNow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Fetch => "fetch",
            MessageKind::FetchEntries => "fetch_entries",
            MessageKind::FetchAnswer => "fetch_answer",
            MessageKind::Durable => "durable",
            MessageKind::PreVote => "pre_vote",
            MessageKind::PreVoteGranted => "pre_vote_granted",
            MessageKind::PreVoteRefused => "pre_vote_refused",
            MessageKind::Vote => "vote",
            MessageKind::VoteGranted => "vote_granted",
            MessageKind::VoteRefused => "vote_refused",
            MessageKind::BeginEpoch => "begin_epoch",
            MessageKind::TimeoutNow => "timeout_now",
        }
    }
}

/// The stages of a replicated write that [`ReplicationStats`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Leader: a producer's batch submitted until the partition's writer placed it (waiting
    /// behind earlier writes).
    Place,
    /// Leader: placed until durable in its own log.
    LeaderDurable,
    /// Leader: placed until committed (acks=all answered).
    Commit,
    /// Leader: entries sent to a follower until the follower's report (fetch or `Durable`)
    /// says they are durable there: the replication round trip.
    FollowerRound,
    /// Follower: fetched entries handed to its writer until durable in its log.
    FollowerDurable,
}

impl Stage {
    pub const COUNT: usize = 5;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Place,
        Stage::LeaderDurable,
        Stage::Commit,
        Stage::FollowerRound,
        Stage::FollowerDurable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Place => "place",
            Stage::LeaderDurable => "leader_durable",
            Stage::Commit => "commit",
            Stage::FollowerRound => "follower_round",
            Stage::FollowerDurable => "follower_durable",
        }
    }
}

/// A Prometheus histogram of durations: counts per upper bound (cumulative when rendered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageHistogram {
    /// Observations per bucket of [`StageHistogram::BOUNDS_MICROS`], the last one unbounded.
    pub buckets: [u64; StageHistogram::BOUNDS_MICROS.len() + 1],
    pub count: u64,
    pub sum_micros: u64,
}

impl StageHistogram {
    /// Upper bounds, in microseconds: 0.5 ms to 5 s.
    pub const BOUNDS_MICROS: [u64; 13] = [
        500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
        2_000_000, 5_000_000,
    ];

    pub fn observe(&mut self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(Self::BOUNDS_MICROS.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds another shard's observations.
    pub fn merge(&mut self, other: &StageHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }
}

impl ReplicationStats {
    pub fn observe(&mut self, stage: Stage, elapsed: std::time::Duration) {
        self.stages[stage as usize].observe(elapsed);
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: &ReplicationStats) {
        for (mine, theirs) in self.sent.iter_mut().zip(other.sent) {
            *mine += theirs;
        }
        for (mine, theirs) in self.received.iter_mut().zip(other.received) {
            *mine += theirs;
        }
        self.batches_sent += other.batches_sent;
        self.batches_received += other.batches_received;
        self.frames_sent += other.frames_sent;
        self.fetches_held += other.fetches_held;
        self.fetch_floor_waits += other.fetch_floor_waits;
        self.transport_messages_dropped += other.transport_messages_dropped;
        self.transport_connections_refused += other.transport_connections_refused;
        self.transport_authentication_failures += other.transport_authentication_failures;
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.merge(theirs);
        }
        self.tick_lateness.merge(&other.tick_lateness);
    }
}
