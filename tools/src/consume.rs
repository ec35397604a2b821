//! `ferrite consume`: prints a topic's messages on standard output, one per line.
//!
//! It keeps its own position per partition (no consumer group, nothing committed), starting
//! where `--from`/`--from-timestamp` say, and long-polls each partition's leader with Fetch.
//! With `--exit-at-end` it notes each partition's high-water mark when it starts and exits 0
//! once it has printed everything before those marks: what was in the topic when it started,
//! exactly, even if producers keep writing. Otherwise it runs until `--count` messages were
//! printed or it is interrupted (SIGINT: exit 130, every printed line complete).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;

use crate::admin::{AdminError, BrokerArguments};
use crate::client::cluster::{
    known_offsets, topic_name, Cluster, TopicMetadata, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::records::{decode_batches, FetchedRecord};

/// How long the broker may hold a fetch that has nothing to return.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Fetch size limits: per partition and per response (soft: a broker returns at least one
/// whole batch even if it is larger, so a big message never stalls the consumer).
const FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;
pub const FETCH_RESPONSE_BYTES_MAX: i32 = 16 << 20;

#[derive(clap::Args)]
pub struct Arguments {
    #[command(flatten)]
    broker: BrokerArguments,
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// Read only this partition (all of them by default).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Where to start in each partition: `beginning` (the oldest message kept), `end` (only
    /// messages written from now on), or an offset.
    #[arg(long, value_name = "beginning|end|OFFSET", default_value = "end", value_parser = parse_start)]
    from: Start,
    /// Start at the first message whose timestamp is at or after MS (milliseconds since the
    /// Unix epoch); partitions with none start at their end.
    #[arg(long, value_name = "MS", conflicts_with = "from")]
    from_timestamp: Option<i64>,
    /// Exit after printing this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit 0 once every message that was in the partitions when the command started has been
    /// printed (each partition's high-water mark at start), instead of waiting for more.
    #[arg(long)]
    exit_at_end: bool,
    /// Print KEY<TAB>VALUE (an absent key as an empty string), as `produce --keyed` reads it.
    #[arg(long)]
    keyed: bool,
    /// Start each line with PARTITION<TAB>OFFSET<TAB>.
    #[arg(long)]
    offsets: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        _ => match text.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!(
                "expected `beginning`, `end` or an offset (0 or more), got {text:?}"
            )),
        },
    }
}

pub fn run(arguments: Arguments) -> std::process::ExitCode {
    crate::admin::exit("consume", consume(&arguments))
}

fn consume(arguments: &Arguments) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&arguments.broker.bootstrap)?;
    let topic = cluster.topic(&arguments.topic)?;
    let partitions: Vec<i32> = match arguments.partition {
        Some(partition) => {
            topic.leader_of(partition)?;
            vec![partition]
        }
        None => topic
            .partitions
            .iter()
            .map(|partition| partition.index)
            .collect(),
    };
    let mut positions = start_positions(&mut cluster, &topic, &partitions, arguments)?;
    let ends = if arguments.exit_at_end {
        Some(known_offsets(cluster.offsets_at(
            &topic,
            &partitions,
            LATEST_TIMESTAMP,
        )?))
    } else {
        None
    };
    let mut output = Output {
        stdout: std::io::BufWriter::new(std::io::stdout().lock()),
        arguments,
        printed: 0,
    };
    loop {
        let active: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|partition| {
                ends.as_ref()
                    .is_none_or(|ends| positions[partition] < ends[partition])
            })
            .collect();
        if active.is_empty() || output.done() {
            return Ok(());
        }
        for (leader, group) in topic.by_leader(active)? {
            let fetched = fetch(&mut cluster, &topic, leader, &group, &positions)?;
            for (partition, (records, offset_next)) in fetched {
                let position = positions[&partition];
                let end = ends.as_ref().map(|ends| ends[&partition]);
                let wanted = records.iter().filter(|record| {
                    record.offset >= position && end.is_none_or(|end| record.offset < end)
                });
                for record in wanted {
                    match output.print(partition, record) {
                        Ok(()) => {}
                        // The reader went away (`| head`): that is where we stop, not a failure.
                        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                            return Ok(());
                        }
                        Err(error) => return Err(AdminError::Stdout(error)),
                    }
                    if output.done() {
                        break;
                    }
                }
                if let Some(offset_next) = offset_next {
                    positions.insert(partition, offset_next.max(position));
                }
                if output.done() {
                    break;
                }
            }
            match output.stdout.flush() {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(error) => return Err(AdminError::Stdout(error)),
            }
        }
    }
}

/// Each partition's first offset to read.
fn start_positions(
    cluster: &mut Cluster,
    topic: &TopicMetadata,
    partitions: &[i32],
    arguments: &Arguments,
) -> Result<BTreeMap<i32, i64>, AdminError> {
    if let Some(timestamp) = arguments.from_timestamp {
        let found = cluster.offsets_at(topic, partitions, timestamp)?;
        let ends = known_offsets(cluster.offsets_at(topic, partitions, LATEST_TIMESTAMP)?);
        return Ok(found
            .into_iter()
            .map(|(partition, offset)| (partition, offset.unwrap_or(ends[&partition])))
            .collect());
    }
    match arguments.from {
        Start::Beginning => Ok(known_offsets(cluster.offsets_at(
            topic,
            partitions,
            EARLIEST_TIMESTAMP,
        )?)),
        Start::End => Ok(known_offsets(cluster.offsets_at(
            topic,
            partitions,
            LATEST_TIMESTAMP,
        )?)),
        Start::Offset(offset) => Ok(partitions
            .iter()
            .map(|&partition| (partition, offset))
            .collect()),
    }
}

type Fetched = BTreeMap<i32, (Vec<FetchedRecord>, Option<i64>)>;

/// One Fetch of `partitions` from their leader: each partition's records and the offset after
/// its last complete batch.
fn fetch(
    cluster: &mut Cluster,
    topic: &TopicMetadata,
    leader: i32,
    partitions: &[i32],
    positions: &BTreeMap<i32, i64>,
) -> Result<Fetched, AdminError> {
    let connection = cluster.broker(leader)?;
    let version = connection.version::<FetchRequest>()?;
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(i32::try_from(FETCH_WAIT.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_BYTES_MAX)
        // No fetch session (KIP-227): every request names every partition.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(&topic.name))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&partition| {
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(positions[&partition])
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
                    })
                    .collect(),
            )]);
    let response = connection.send(&request, version, FETCH_WAIT)?;
    if let Some(error) = AdminError::from_code(
        format!("fetch from topic {}", topic.name),
        response.error_code,
        None,
    ) {
        return Err(error);
    }
    let mut fetched = Fetched::new();
    for answer in response
        .responses
        .iter()
        .flat_map(|answer| &answer.partitions)
    {
        let subject = format!("partition {}-{}", topic.name, answer.partition_index);
        if let Some(error) = AdminError::from_code(&subject, answer.error_code, None) {
            return Err(error);
        }
        let decoded = match &answer.records {
            Some(bytes) => decode_batches(bytes).map_err(|reason| {
                AdminError::Cluster(format!(
                    "{subject}: the fetched records do not decode: {reason}"
                ))
            })?,
            None => (Vec::new(), None),
        };
        fetched.insert(answer.partition_index, decoded);
    }
    Ok(fetched)
}

/// Standard output, formatted as the flags say.
struct Output<'a, W: Write> {
    stdout: W,
    arguments: &'a Arguments,
    printed: u64,
}

impl<W: Write> Output<'_, W> {
    fn print(&mut self, partition: i32, record: &FetchedRecord) -> std::io::Result<()> {
        if self.arguments.offsets {
            write!(self.stdout, "{partition}\t{}\t", record.offset)?;
        }
        if self.arguments.keyed {
            self.stdout
                .write_all(record.key.as_deref().unwrap_or_default())?;
            self.stdout.write_all(b"\t")?;
        }
        self.stdout
            .write_all(record.value.as_deref().unwrap_or_default())?;
        self.stdout.write_all(b"\n")?;
        self.printed += 1;
        Ok(())
    }

    fn done(&self) -> bool {
        self.arguments
            .count
            .is_some_and(|count| self.printed >= count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_beginning_end_or_an_offset() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1").is_err());
        assert!(parse_start("start").is_err());
    }
}
