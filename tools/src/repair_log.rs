//! `ferrite repair-log`: the operator's decision that a partition's damaged ranges are lost.
//!
//! A broker keeps a partition whose log has damaged bytes in service, refusing only the
//! damaged offsets (CORRUPT_MESSAGE), and never decides on its own that acknowledged data is
//! gone. Kafka leaves the same decision to its operators (its own recovery truncates at the
//! first bad batch, losing everything after it; `kafka-delete-records` moves the log start,
//! losing everything before). This command drops exactly the damaged ranges, which then read
//! as compaction's gaps do: consumers are given the next offset after them. The engine does
//! the work (`engine::log::repair`), finding the damage as the broker does; the broker must be
//! stopped, since both would change the same files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use engine::data_dir_lock::DataDirLock;
use engine::{LogConfig, SystemClock};

#[derive(clap::Args)]
pub struct Arguments {
    /// A partition directory (`DATA_DIR/TOPIC-PARTITION`) of a broker that is not running.
    path: PathBuf,
}

/// The largest batch the repair takes for a valid one: any a broker may have accepted (a batch
/// larger than the bound it is checked against would be taken for damage and dropped).
const BATCH_BYTES_MAX: usize = 1 << 30;

/// Exit codes: 0 the log has no damage left (the dropped ranges are listed); 1 the repair
/// failed (the log is as it was, or each segment either repaired or untouched: run it again),
/// or a broker runs on the data directory; 2 the path is not a partition directory.
pub fn run(arguments: &Arguments) -> ExitCode {
    if !arguments.path.is_dir() {
        eprintln!(
            "ferrite repair-log: {} is not a partition directory",
            arguments.path.display()
        );
        return ExitCode::from(2);
    }
    // The broker holds its data directory's lock while it runs (and this command holds it
    // while it repairs, so no broker starts on the files meanwhile).
    let data_dir = arguments.path.parent().unwrap_or(Path::new("."));
    let _data_dir_lock = match DataDirLock::take(data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("ferrite repair-log: {error}; stop the broker first");
            return ExitCode::from(1);
        }
    };
    let path = arguments.path.clone();
    let config = LogConfig {
        batch_bytes_max: BATCH_BYTES_MAX,
        unflushed_bytes_max: BATCH_BYTES_MAX,
        ..LogConfig::default()
    };
    // Little registered I/O memory: the default locked-memory limit must do.
    let repaired = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .map_err(|error| format!("cannot start an executor: {error}"))
        .and_then(|executor| {
            executor
                .run(engine::log::repair(&path, config, Rc::new(SystemClock)))
                .map_err(|error| error.to_string())
        });
    match repaired {
        Ok(dropped) if dropped.is_empty() => {
            println!(
                "{}: no damaged data, nothing to do",
                arguments.path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(dropped) => {
            for range in &dropped {
                println!("dropped {range}");
            }
            let offsets: u64 = dropped.iter().map(|range| range.offsets()).sum();
            println!(
                "{}: {} damaged range(s), {offsets} offset(s), dropped; consumers skip them",
                arguments.path.display(),
                dropped.len()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!(
                "ferrite repair-log: {}: {message}",
                arguments.path.display()
            );
            ExitCode::from(1)
        }
    }
}
