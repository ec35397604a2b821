//! `ferrite`: the command-line entry point. Each sub-command lives in its own module.

mod dump_log;
mod metrics;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferrite",
    version,
    about = "Ferrite: a Kafka-compatible streaming log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: one shard per core, the Kafka listener on every shard. Embedded
    /// defaults; no configuration file needed. SIGINT/SIGTERM shuts down cleanly (a second one
    /// exits at once).
    Serve(serve::Arguments),
    /// Print the record batches of a partition directory or segment file, checking each CRC.
    /// Reads the files as they are: it never recovers or changes them.
    DumpLog(dump_log::Arguments),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(arguments) => serve::run(arguments),
        Command::DumpLog(arguments) => dump_log::run(&arguments),
    }
}
