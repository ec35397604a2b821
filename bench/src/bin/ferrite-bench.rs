//! `ferrite-bench`: a Kafka client benchmark (librdkafka) that runs the same way against
//! Ferrite, Redpanda or Kafka, and `ferrite-bench compare` to put results side by side.
//! See bench/README.md for what is measured and how.
//!
//! Exit status: 0 for a clean run, 1 when the run finished but something was wrong (failed or
//! unacknowledged deliveries, messages missing or duplicated; the JSON says which), 2 when it
//! could not run (bad flags, broker unreachable, topic unusable, unreadable files).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use ferrite_bench::compare::compare_files;
use ferrite_bench::error::BenchError;
use ferrite_bench::flags::RunFlags;
use ferrite_bench::report::Report;
use ferrite_bench::workload;

#[derive(Parser)]
#[command(
    name = "ferrite-bench",
    about = "Produce/consume benchmark of a Kafka-compatible broker (librdkafka client)",
    args_conflicts_with_subcommands = true,
    // A flag given twice takes the last value: the command line's over the workload file's.
    args_override_self = true
)]
struct Command {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    flags: RunFlags,
}

#[derive(Subcommand)]
enum Action {
    /// Print results side by side, with each figure's ratio to the first file's.
    Compare {
        #[arg(required = true, value_name = "RESULT.json")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let arguments = match workload::expand(&Command::command(), std::env::args_os().collect()) {
        Ok(arguments) => arguments,
        Err(error) => {
            eprintln!("ferrite-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let command = Command::parse_from(arguments);
    let outcome = match command.action {
        Some(Action::Compare { files }) => compare_files(&files).map(|table| {
            print!("{table}");
            ExitCode::SUCCESS
        }),
        None => ferrite_bench::run::run(command.flags).and_then(|report| write(&report)),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("ferrite-bench: {error}");
        ExitCode::from(2)
    })
}

/// Writes the JSON result (to `--json` or stdout) and the summary to stderr.
fn write(report: &Report) -> Result<ExitCode, BenchError> {
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    match &report.flags.json {
        Some(path) => std::fs::write(path, json + "\n").map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?,
        None => println!("{json}"),
    }
    eprint!("{}", report.summary());
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
