//! `ferrite produce`: each line of standard input becomes a message of a topic.
//!
//! Messages are grouped into one record batch per partition and sent to each partition's
//! leader once a batch is full (`--batch-messages`, `--batch-bytes`), once the oldest waiting
//! message has waited `--linger-ms` (so an interactive or slow writer sees its lines sent
//! promptly), and at end of input. One request is in flight at a time: with acks 1 or all, a
//! line is acknowledged before anything after the request that carries it is sent.
//!
//! Partitions: `--partition N` sends everything there; otherwise a keyed message goes where
//! the Java client and librdkafka put the same key ([`crate::partitioner`]), and keyless ones
//! take the partitions in turn.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use crate::admin::{AdminError, BrokerArguments};
use crate::client::cluster::{topic_name, Cluster, TopicMetadata};
use crate::partitioner::partition_for_key;
use crate::records::{encode_batch, Message};

/// How long the leader may wait for the acknowledgements `--acks` asks for.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines read ahead of the batches being sent; the reader waits beyond it (back-pressure).
const LINES_READ_AHEAD_MAX: usize = 1024;

#[derive(clap::Args)]
pub struct Arguments {
    #[command(flatten)]
    broker: BrokerArguments,
    /// The topic to write to (it must exist: `ferrite topic create`).
    #[arg(long)]
    topic: String,
    /// Read each line as KEY<TAB>VALUE (split at the first TAB); a line without a TAB is an
    /// error (exit 2). Without it, the whole line is the value and the message has no key.
    #[arg(long)]
    keyed: bool,
    /// When the broker acknowledges: 0 never (fire and forget), 1 once the leader has the
    /// batch, all once every in-sync replica has it.
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Send every message to this partition instead of choosing by key.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Compression codec of the record batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: Codec,
    /// Send a partition's batch once it holds this many messages.
    #[arg(long, value_name = "COUNT", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_messages: u32,
    /// Send a partition's batch before its keys and values would exceed this many bytes
    /// (brokers refuse batches over their limit, 1 MiB by default in Kafka).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    batch_bytes: u32,
    /// Send waiting batches once the oldest message in them has waited this long.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    linger_ms: u64,
    /// Print where each batch went (partition, base offset, message count) on standard output.
    #[arg(long)]
    verbose: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Acks {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

pub fn run(arguments: Arguments) -> std::process::ExitCode {
    crate::admin::exit("produce", produce(&arguments))
}

/// A line of input, split as the flags say.
pub fn parse_line(line: &[u8], keyed: bool) -> Option<Message> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if !keyed {
        return Some(Message {
            key: None,
            value: Bytes::copy_from_slice(line),
        });
    }
    let tab = line.iter().position(|&byte| byte == b'\t')?;
    Some(Message {
        key: Some(Bytes::copy_from_slice(&line[..tab])),
        value: Bytes::copy_from_slice(&line[tab + 1..]),
    })
}

/// Chooses each message's partition.
struct Partitioner {
    fixed: Option<i32>,
    partition_count: i32,
    keyless_next: i32,
}

impl Partitioner {
    fn partition(&mut self, message: &Message) -> i32 {
        if let Some(partition) = self.fixed {
            return partition;
        }
        match &message.key {
            Some(key) => partition_for_key(key, self.partition_count),
            None => {
                let partition = self.keyless_next;
                self.keyless_next = (self.keyless_next + 1) % self.partition_count;
                partition
            }
        }
    }
}

/// The messages waiting to be sent, one batch per partition.
struct Pending {
    batches: BTreeMap<i32, Vec<Message>>,
    batch_bytes: BTreeMap<i32, usize>,
    /// When the oldest waiting message arrived.
    oldest: Option<Instant>,
}

fn produce(arguments: &Arguments) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&arguments.broker.bootstrap)?;
    let topic = cluster.topic(&arguments.topic)?;
    if let Some(partition) = arguments.partition {
        topic.leader_of(partition)?;
    }
    let partition_count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    if partition_count == 0 {
        return Err(AdminError::Cluster(format!(
            "topic {} has no partitions",
            arguments.topic
        )));
    }
    let mut partitioner = Partitioner {
        fixed: arguments.partition,
        partition_count,
        keyless_next: 0,
    };
    let mut sender = BatchSender {
        cluster,
        topic,
        arguments,
    };
    let mut pending = Pending {
        batches: BTreeMap::new(),
        batch_bytes: BTreeMap::new(),
        oldest: None,
    };
    let linger = Duration::from_millis(arguments.linger_ms);
    let lines = read_lines_in_background();
    let mut line_number: u64 = 0;
    loop {
        let next = match pending.oldest {
            None => lines
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(oldest) => lines.recv_timeout(linger.saturating_sub(oldest.elapsed())),
        };
        let line = match next {
            Ok(Ok(line)) => line,
            Ok(Err(error)) => {
                sender.send_all(&mut pending)?;
                return Err(AdminError::Stdin(error));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sender.send_all(&mut pending)?;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        line_number += 1;
        let Some(message) = parse_line(&line, arguments.keyed) else {
            // What came before the bad line is sent, so the outcome is easy to state.
            sender.send_all(&mut pending)?;
            return Err(AdminError::Usage(format!(
                "line {line_number} has no TAB between key and value (--keyed reads \
                 KEY<TAB>VALUE); the lines before it were sent"
            )));
        };
        let partition = partitioner.partition(&message);
        let message_bytes = message.batch_bytes();
        let batch_bytes = pending.batch_bytes.get(&partition).copied().unwrap_or(0);
        if batch_bytes > 0 && batch_bytes + message_bytes > arguments.batch_bytes as usize {
            sender.send(&mut pending, &[partition])?;
        }
        pending.batches.entry(partition).or_default().push(message);
        *pending.batch_bytes.entry(partition).or_default() += message_bytes;
        pending.oldest.get_or_insert_with(Instant::now);
        if pending.batches[&partition].len() >= arguments.batch_messages as usize {
            sender.send(&mut pending, &[partition])?;
        }
    }
    sender.send_all(&mut pending)
}

/// Reads standard input on a thread of its own, so the main loop can wait for a line or for
/// the linger time, whichever comes first. Ends the channel at end of input.
fn read_lines_in_background() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (line_sender, lines) = mpsc::sync_channel(LINES_READ_AHEAD_MAX);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line_sender.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = line_sender.send(Err(error));
                    return;
                }
            }
        }
    });
    lines
}

/// Turns waiting messages into Produce requests to each partition's leader.
struct BatchSender<'a> {
    cluster: Cluster,
    topic: TopicMetadata,
    arguments: &'a Arguments,
}

impl BatchSender<'_> {
    fn send_all(&mut self, pending: &mut Pending) -> Result<(), AdminError> {
        let partitions: Vec<i32> = pending.batches.keys().copied().collect();
        self.send(pending, &partitions)
    }

    /// Sends the batches of `partitions`: one request per leader, each answered before the
    /// next is sent.
    fn send(&mut self, pending: &mut Pending, partitions: &[i32]) -> Result<(), AdminError> {
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        for (leader, group) in self.topic.by_leader(partitions.iter().copied())? {
            let mut partition_data = Vec::new();
            let mut counts = BTreeMap::new();
            for partition in group {
                let Some(messages) = pending.batches.remove(&partition) else {
                    continue;
                };
                pending.batch_bytes.remove(&partition);
                let batch = encode_batch(
                    &messages,
                    self.arguments.compression.compression(),
                    timestamp_ms,
                )
                .map_err(|reason| {
                    AdminError::Cluster(format!(
                        "cannot encode a batch for partition {}-{partition}: {reason}",
                        self.topic.name
                    ))
                })?;
                counts.insert(partition, messages.len());
                partition_data.push(
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                );
            }
            if partition_data.is_empty() {
                continue;
            }
            let request = ProduceRequest::default()
                .with_acks(self.arguments.acks.code())
                .with_timeout_ms(i32::try_from(ACK_TIMEOUT.as_millis()).unwrap_or(i32::MAX))
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(&self.topic.name))
                    .with_partition_data(partition_data)]);
            self.send_request(leader, &request, &counts)?;
        }
        if pending.batches.is_empty() {
            pending.oldest = None;
        }
        Ok(())
    }

    fn send_request(
        &mut self,
        leader: i32,
        request: &ProduceRequest,
        counts: &BTreeMap<i32, usize>,
    ) -> Result<(), AdminError> {
        let connection = self.cluster.broker(leader)?;
        let version = connection.version::<ProduceRequest>()?;
        if request.acks == 0 {
            connection.send_without_response(request, version)?;
            return Ok(());
        }
        let response = connection.send(request, version, ACK_TIMEOUT)?;
        let mut answered = Vec::new();
        for answer in response
            .responses
            .iter()
            .flat_map(|topic| &topic.partition_responses)
        {
            let subject = format!("partition {}-{}", self.topic.name, answer.index);
            if let Some(error) = AdminError::from_code(
                subject,
                answer.error_code,
                answer.error_message.as_ref().map(StrBytes::as_str),
            ) {
                return Err(error);
            }
            answered.push(answer.index);
            if self.arguments.verbose {
                println!(
                    "partition {} base-offset {} messages {}",
                    answer.index,
                    answer.base_offset,
                    counts.get(&answer.index).copied().unwrap_or(0)
                );
            }
        }
        if let Some(partition) = counts
            .keys()
            .find(|partition| !answered.contains(partition))
        {
            return Err(AdminError::Cluster(format!(
                "the Produce response says nothing of partition {}-{partition}; its messages \
                 may or may not have been written",
                self.topic.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str, keyed: bool) -> Option<(Option<String>, String)> {
        parse_line(line.as_bytes(), keyed).map(|message| {
            (
                message
                    .key
                    .map(|key| String::from_utf8(key.to_vec()).unwrap()),
                String::from_utf8(message.value.to_vec()).unwrap(),
            )
        })
    }

    #[test]
    fn unkeyed_lines_are_values_whole() {
        assert_eq!(parsed("hello\n", false), Some((None, "hello".into())));
        assert_eq!(parsed("a\tb\n", false), Some((None, "a\tb".into())));
        assert_eq!(
            parsed("no newline at eof", false),
            Some((None, "no newline at eof".into()))
        );
        assert_eq!(parsed("\n", false), Some((None, String::new())));
        assert_eq!(parsed("crlf\r\n", false), Some((None, "crlf\r".into())));
    }

    #[test]
    fn keyed_lines_split_at_the_first_tab() {
        assert_eq!(parsed("k\tv\n", true), Some((Some("k".into()), "v".into())));
        assert_eq!(
            parsed("k\tv\twith tab\n", true),
            Some((Some("k".into()), "v\twith tab".into()))
        );
        assert_eq!(
            parsed("\tempty key\n", true),
            Some((Some(String::new()), "empty key".into()))
        );
        assert_eq!(
            parsed("k\t\n", true),
            Some((Some("k".into()), String::new()))
        );
        assert_eq!(parsed("no tab\n", true), None);
    }

    #[test]
    fn keys_go_where_kafka_puts_them_and_keyless_messages_take_turns() {
        let mut partitioner = Partitioner {
            fixed: None,
            partition_count: 7,
            keyless_next: 0,
        };
        let keyed = parse_line(b"21\tx", true).unwrap();
        assert_eq!(partitioner.partition(&keyed), 1173551340 % 7);
        let keyless = parse_line(b"x", false).unwrap();
        let turns: Vec<i32> = (0..9).map(|_| partitioner.partition(&keyless)).collect();
        assert_eq!(turns, [0, 1, 2, 3, 4, 5, 6, 0, 1]);
        let mut fixed = Partitioner {
            fixed: Some(3),
            partition_count: 7,
            keyless_next: 0,
        };
        assert_eq!(fixed.partition(&keyed), 3);
        assert_eq!(fixed.partition(&keyless), 3);
    }
}
