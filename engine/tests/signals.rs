//! Shutdown by signal: the first SIGTERM drains, flushes and closes every partition and the
//! runtime ends cleanly; a second signal ends the process at once.
//!
//! Signal handlers are process-wide, so these tests live in a binary of their own; the
//! second-signal test runs a child copy of this binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use engine::shard::{Durability, PartitionId, Runtime, RuntimeConfig};
use engine::PartitionLog;

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: 2,
        cpus: None,
        data_dir: dir.to_path_buf(),
        log_config: small_config(),
        resources: Default::default(),
        topic_log_config: None,
        mesh_ring_capacity: 64,
        outbound_queue_capacity: 64,
        retention_check_interval: std::time::Duration::from_secs(300),
        cleaner_check_interval: std::time::Duration::from_secs(300),
        replicated_partitions: None,
        journal: Some(small_journal()),
        record_rewrite: None,
    }
}

#[test]
fn sigterm_flushes_and_closes_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    for partition in 0..4 {
        PartitionId::new("telemetry", partition)
            .create_directory(dir.path())
            .unwrap();
    }
    let (ready, readiness) = mpsc::channel::<usize>();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let ready = ready.clone();
        async move {
            for partition in 0..4 {
                let id = PartitionId::new("telemetry", partition);
                for sequence in 0..25 {
                    // Offsets only: nothing waited for the write, so only the shutdown's flush
                    // puts these on disk.
                    let batch = tagged_batch(sequence, 1, 20, 0);
                    context
                        .append(id.clone(), batch, Durability::Assigned)
                        .await
                        .expect("append");
                }
            }
            ready.send(context.shard_id()).unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    runtime.shutdown_handle().install_signal_handlers().unwrap();
    for _ in 0..2 {
        readiness.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    // SAFETY: raising a signal this process handles.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    runtime.join().unwrap();
    for partition in 0..4 {
        let partition_dir = dir
            .path()
            .join(PartitionId::new("telemetry", partition).directory_name());
        assert!(partition_dir.join("clean-shutdown").exists());
        let count = run(async move {
            let log = PartitionLog::open(&partition_dir, small_config(), system_clock())
                .await
                .unwrap();
            read_all(&log, 0, 1 << 20).await.len()
        });
        assert_eq!(
            count,
            2 * 25,
            "both shards' appends to partition {partition}"
        );
    }
}

/// The child of `a_second_signal_exits_at_once`: a shard that never finishes its shutdown.
#[test]
#[ignore = "run only as the child process of a_second_signal_exits_at_once"]
fn child_that_hangs_in_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(
        RuntimeConfig {
            shard_count: 1,
            ..config(dir.path())
        },
        |context| async move {
            println!("child: running");
            context.shutdown_requested().await;
            println!("child: shutdown requested");
            // Never returns: only a second signal ends this process.
            std::future::pending::<()>().await;
        },
    )
    .unwrap();
    runtime.shutdown_handle().install_signal_handlers().unwrap();
    let _ = runtime.join();
    unreachable!("the process exits on the second signal");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_that_hangs_in_shutdown",
            "--ignored",
            "--nocapture",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |wanted: &str| loop {
        let line = lines
            .next()
            .expect("the child printed what it was doing")
            .unwrap();
        if line.contains(wanted) {
            return;
        }
    };
    wait_for("child: running");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for("child: shutdown requested");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the child ignored the second signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130));
}
