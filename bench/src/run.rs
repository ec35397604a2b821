//! One benchmark run, in order: set the topic up and position the consumers, by assignment or
//! by settled consumer groups (before the clock starts), then produce on the timetable while the
//! consumer threads receive, then let the consumers drain, then build the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::client::{self, Diagnostics, PlainContext};
use crate::consumer::{consume, ConsumeShared, ConsumeTally, EXPECTED_UNKNOWN};
use crate::error::BenchError;
use crate::flags::RunFlags;
use crate::group;
use crate::machine::{unix_time_s, Machine};
use crate::producer::produce;
use crate::progress::{report_every_second, RunCounters};
use crate::report::{Report, RunContext};
use crate::topic;
use crate::window::Window;
use engine::random::mix64;

pub fn run(flags: RunFlags) -> Result<Report, BenchError> {
    flags.check()?;
    let started_unix_s = unix_time_s();
    let setup_timeout = Duration::from_secs_f64(flags.setup_timeout_s);
    let setup_deadline = Instant::now() + setup_timeout;

    let topic_created = topic::create_if_missing(&flags, setup_timeout)?;
    let run_id = run_id();
    let group_names = group::names(&flags);
    // The consumers by group; without --consumer-group, the explicitly assigned consumers are
    // the one group there is.
    let mut groups = Vec::new();
    for group in 0..group_names.len().max(1) {
        let mut settings = match group_names.get(group) {
            Some(name) => group::member_settings(name, flags.assignment_strategy),
            None => assigned_settings(run_id),
        };
        settings.push((
            "isolation.level".to_string(),
            flags.isolation_level.config_value().to_string(),
        ));
        settings.extend(flags.consumer_config.iter().cloned());
        let members = (0..flags.consumers)
            .map(|_| {
                client::config(&flags, &settings)
                    .create_with_context(PlainContext(Diagnostics::new("consumer")))
                    .map_err(BenchError::kafka("cannot create the consumer"))
            })
            .collect::<Result<Vec<BaseConsumer<PlainContext>>, _>>()?;
        groups.push(members);
    }
    let first = &groups[0][0];
    topic::wait_for_leaders(first, &flags.topic, flags.partitions, setup_deadline)?;
    let start_offsets = topic::end_offsets(first, &flags.topic, flags.partitions, setup_deadline)?;
    let window = Window::after_warmup(flags.warmup_s, flags.duration_s);
    let mut consume_tally = ConsumeTally::new(run_id, window, groups.len());
    let group_settle = if group_names.is_empty() {
        for (consumer, part) in groups[0]
            .iter()
            .zip(topic::split_assignment(&start_offsets, flags.consumers)?)
        {
            consumer
                .assign(&part)
                .map_err(BenchError::kafka("cannot assign the partitions"))?;
        }
        None
    } else {
        for (members, name) in groups.iter().zip(&group_names) {
            group::commit_start(&members[0], name, &start_offsets)?;
        }
        Some(group::settle(
            &groups,
            &group_names,
            &flags.topic,
            flags.partitions,
            Instant::now() + setup_timeout,
            &mut consume_tally,
        )?)
    };

    let start = Instant::now();
    let counters = Arc::new(RunCounters::default());
    let published = AtomicU64::new(0);
    let expected = AtomicU64::new(EXPECTED_UNKNOWN);
    let consume_tally = Mutex::new(consume_tally);
    let shared = ConsumeShared {
        start,
        tally: &consume_tally,
        counters: &counters,
        published: &published,
        expected: &expected,
        drain_timeout: Duration::from_secs_f64(flags.drain_timeout_s),
    };
    // Dropped when the run is over, which stops the progress lines.
    let (stop_progress, progress_stopped) = mpsc::channel::<()>();
    let (produced, consumer_client_errors) = std::thread::scope(|scope| {
        scope.spawn(|| {
            report_every_second(
                &counters,
                start,
                flags.warmup_s,
                flags.message_bytes,
                progress_stopped,
            )
        });
        let shared = &shared;
        let receivers: Vec<_> = groups
            .into_iter()
            .enumerate()
            .flat_map(|(group, members)| {
                members
                    .into_iter()
                    .map(move |consumer| scope.spawn(move || consume(consumer, group, shared)))
            })
            .collect();
        let produced = produce(
            &flags,
            run_id,
            start,
            window,
            &counters,
            &published,
            setup_timeout,
        );
        let acked = produced.as_ref().map_or(0, |outcome| outcome.tally.acked);
        expected.store(acked, Ordering::Release);
        let consumer_client_errors: u64 = receivers
            .into_iter()
            .map(|receiver| {
                receiver
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .sum();
        drop(stop_progress);
        (produced, consumer_client_errors)
    });
    let consumed = consume_tally
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if flags.delete_topic {
        // The result stands without it; the disk space is the user's to reclaim by hand.
        if let Err(error) = topic::delete(&flags, setup_timeout) {
            eprintln!("ferrite-bench: could not delete the topic: {error}");
        }
    }
    let context = RunContext {
        librdkafka_version: rdkafka::util::get_rdkafka_version().1,
        started_unix_s,
        machine: Machine::current(),
        topic_created,
        window,
        group_settle,
    };
    Ok(Report::new(
        context,
        flags,
        &produced?,
        &consumed,
        consumer_client_errors,
    ))
}

/// The settings of an explicitly assigned consumer: librdkafka's assign() needs a group id,
/// though the group is never joined (a fresh one per run).
fn assigned_settings(run_id: u64) -> Vec<(String, String)> {
    [
        ("group.id", format!("ferrite-bench-{run_id:016x}")),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("enable.partition.eof", "false".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// Tells this run's messages from any other run's on the same topic: the wall-clock time in
/// nanoseconds mixed with the process id.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    mix64(nanos ^ (u64::from(std::process::id()) << 32))
}
