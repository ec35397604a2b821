//! `ferrite`: the command-line entry point. Each sub-command lives in its own module.
//!
//! The admin commands (`topic`, `produce`, `consume`, `group`) speak the Kafka protocol to a
//! running broker (any Kafka-compatible one) at `--bootstrap HOST:PORT` (127.0.0.1:9092 by
//! default).
//! Their exit codes: 0 success; 1 the broker could not be reached or answered with an error
//! (the message names the topic or partition, Kafka's name for the error code, and what to
//! do); 2 usage errors (bad flags, or input lines that do not match `produce --keyed`).
//!
//! Invariant: the admin commands are Kafka clients and nothing else: they use only the wire
//! protocol, never `net` nor any of the broker's state (of `engine` only `engine::batch`, the
//! record batch format's header layout), so they work against any Kafka-compatible broker and
//! test Ferrite as a client would. One exception: `user` derives SCRAM credentials with
//! `net::sasl::scram` (pure functions, the client's half of SCRAM as much as the broker's), and
//! `user set --data-dir` writes `engine::credentials`' file of a stopped broker.

mod acl;
mod admin;
mod allocator;
mod client;
mod consume;
mod descriptors;
mod dump_log;
mod group;
mod metrics;
mod partitioner;
mod produce;
mod quota;
mod records;
mod repair_log;
mod serve;
mod topic;
mod transactions;
mod user;

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
    Serve(Box<serve::Arguments>),
    /// Print the record batches of a partition directory or segment file, checking each CRC.
    /// Reads the files as they are: it never recovers or changes them.
    DumpLog(dump_log::Arguments),
    /// Drop the damaged ranges of a stopped broker's partition directory for good (the broker
    /// refuses them with CORRUPT_MESSAGE until then); consumers then skip their offsets.
    RepairLog(repair_log::Arguments),
    /// Create, list, describe, alter or delete topics on a running broker.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Topic(topic::Arguments),
    /// Write each line of standard input to a topic as a message (KEY<TAB>VALUE with --keyed).
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Produce(produce::Arguments),
    /// Print a topic's messages on standard output, one per line.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Consume(consume::Arguments),
    /// List and describe consumer groups (committed offsets, lag, members), and reset their
    /// offsets.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Group(group::Arguments),
    /// List and describe transactions (transactional ids, their producers, states and
    /// partitions).
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Transactions(transactions::Arguments),
    /// Set, delete and list client quotas (producer and consumer byte rates, request
    /// percentage) per user and client id, on a running broker.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Quota(quota::Arguments),
    /// Set, delete and list the users SASL authenticates (SCRAM credentials), online or (set)
    /// in a stopped broker's data directory.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    User(user::Arguments),
    /// Add, remove and list the ACLs `--authorizer acl` checks.
    #[command(after_help = admin::EXIT_CODES_HELP)]
    Acl(acl::Arguments),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(arguments) => {
            allocator::keep_freed_memory_for_a_while();
            serve::run(*arguments)
        }
        Command::DumpLog(arguments) => {
            end_quietly_on_a_closed_pipe();
            dump_log::run(&arguments)
        }
        Command::RepairLog(arguments) => {
            end_quietly_on_a_closed_pipe();
            repair_log::run(&arguments)
        }
        Command::Topic(arguments) => {
            end_quietly_on_a_closed_pipe();
            topic::run(arguments)
        }
        Command::Produce(arguments) => produce::run(arguments),
        Command::Consume(arguments) => consume::run(arguments),
        Command::Group(arguments) => {
            end_quietly_on_a_closed_pipe();
            group::run(arguments)
        }
        Command::Transactions(arguments) => {
            end_quietly_on_a_closed_pipe();
            transactions::run(arguments)
        }
        Command::Quota(arguments) => {
            end_quietly_on_a_closed_pipe();
            quota::run(arguments)
        }
        Command::User(arguments) => {
            end_quietly_on_a_closed_pipe();
            user::run(arguments)
        }
        Command::Acl(arguments) => {
            end_quietly_on_a_closed_pipe();
            acl::run(arguments)
        }
    }
}

/// The commands that print with `println!` end as other Unix tools do when their reader goes
/// away (`ferrite dump-log DIR | head`): by SIGPIPE, silently, instead of `println!`'s panic on
/// the EPIPE that Rust's ignored SIGPIPE turns it into. Not for `serve`, whose sockets must
/// not kill it, nor `consume`, which stops cleanly on EPIPE itself.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
