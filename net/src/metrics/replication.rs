//! What the shards' replicas sent, received and waited for, and how late their clocks ticked,
//! summed over the shards; nothing on a broker without replication.

use std::fmt::Write;

use ferrite_replication::stats::{MessageKind, ReplicationStats, Stage, StageHistogram};

use super::exposition::write_family;
use super::shard::ShardSnapshot;

/// The replication counters and stage histograms, summed over the shards; nothing on a broker
/// without replication.
pub(super) fn render_replication(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut total = ReplicationStats::default();
    for snapshot in snapshots {
        total.merge(&snapshot.replication);
    }
    if total == ReplicationStats::default() {
        return;
    }
    for (name, help, counts) in [
        (
            "ferrite_replication_messages_sent_total",
            "Partition Raft messages sent to peer brokers, by kind.",
            &total.sent,
        ),
        (
            "ferrite_replication_messages_received_total",
            "Partition Raft messages received from peer brokers, by kind.",
            &total.received,
        ),
    ] {
        write_family(out, name, "counter", help);
        for kind in MessageKind::ALL {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                kind.name(),
                counts[kind as usize]
            );
        }
    }
    for (name, help, value) in [
        (
            "ferrite_replication_batches_sent_total",
            "Record batches sent in fetch answers (as a leader).",
            total.batches_sent,
        ),
        (
            "ferrite_replication_batches_received_total",
            "Record batches received in fetch answers (as a follower).",
            total.batches_received,
        ),
        (
            "ferrite_replication_frames_sent_total",
            "Frames carrying partition messages sent to peer brokers.",
            total.frames_sent,
        ),
        (
            "ferrite_replication_fetches_held_total",
            "Followers' fetches held by a leader until it had something new.",
            total.fetches_held,
        ),
        (
            "ferrite_replication_fetch_floor_waits_total",
            "Fetch answers with entries after which the follower waited for its disk before \
             fetching again.",
            total.fetch_floor_waits,
        ),
        (
            "ferrite_transport_messages_dropped_total",
            "Messages to peer brokers dropped unsent: the oldest of a full queue to a slow or \
             unreachable peer, or those being written when a connection failed.",
            total.transport_messages_dropped,
        ),
        (
            "ferrite_transport_connections_refused_total",
            "Inbound inter-broker connections closed in their handshake or for a bad frame: \
             another cluster or protocol version, a node not in --peers, a failed proof.",
            total.transport_connections_refused,
        ),
        (
            "ferrite_transport_authentication_failures_total",
            "Inter-broker connections, either way, whose peer failed to prove it holds the \
             cluster secret.",
            total.transport_authentication_failures,
        ),
    ] {
        write_family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "ferrite_replication_stage_seconds";
    write_family(
        out,
        name,
        "histogram",
        "Time a replicated write spends in each stage: place (submitted until the leader's \
         writer placed it), leader_durable, commit (placed until committed), follower_round \
         (entries sent until the follower reports them durable), follower_durable.",
    );
    for stage in Stage::ALL {
        let label = format!("stage=\"{}\"", stage.name());
        write_histogram(out, name, &label, &total.stages[stage as usize]);
    }
    let name = "ferrite_replication_tick_lateness_seconds";
    write_family(
        out,
        name,
        "histogram",
        "How late each tick of a shard's replication clock ran after it was due: the wait for \
         the shard's turn (work queued ahead of it, and the core given to other threads), which \
         every message and request the shard handles waits too.",
    );
    write_histogram(out, name, "", &total.tick_lateness);
}

/// One histogram's buckets (cumulative), sum and count, each sample with `label` (`key="value"`,
/// or nothing).
fn write_histogram(out: &mut String, name: &str, label: &str, histogram: &StageHistogram) {
    let separator = if label.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in StageHistogram::BOUNDS_MICROS.iter().zip(histogram.buckets) {
        cumulative += count;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}{separator}le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}{separator}le=\"+Inf\"}} {}",
        histogram.count
    );
    let sum = histogram.sum_micros as f64 / 1e6;
    let labels = if label.is_empty() {
        String::new()
    } else {
        format!("{{{label}}}")
    };
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {}", histogram.count);
}
