//! `ferrite group list|describe|reset-offsets`: consumer-group administration over the Kafka
//! protocol (FindCoordinator, ListGroups, DescribeGroups, OffsetFetch, OffsetCommit, with
//! Metadata and ListOffsets for the partitions), so it works against any Kafka-compatible
//! broker. Modelled on Kafka's `kafka-consumer-groups.sh`.
//!
//! Text output is one line per fact, as `ferrite topic` prints; `--json` gives `list` and
//! `describe` a form scripts can parse without guessing at columns.

mod assignment;
mod describe;
pub(crate) mod requests;
mod reset;

use crate::admin::{AdminError, BrokerArguments, EXIT_CODES_HELP};
use crate::client::cluster::Cluster;

/// The end of `reset-offsets --help`: its refusal is an exit code of its own kind.
const RESET_EXIT_CODES_HELP: &str = "Exit codes: 0 success (the plan printed, or committed \
    with --execute); 1 the broker could not be reached or answered with an error, or the group \
    has active members (the message names them); 2 usage error (bad flags).";

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print every consumer group: its id, state and protocol type, one group per line,
    /// sorted by id.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        broker: BrokerArguments,
        /// Print one JSON array of {group, state, protocol_type}.
        #[arg(long)]
        json: bool,
    },
    /// Print each group's state and members, and for each partition it has committed or been
    /// assigned: the committed offset, the log end offset, the lag (log end minus committed;
    /// `-` without a commit) and the member that owns it.
    #[command(after_help = EXIT_CODES_HELP)]
    Describe {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The groups to describe.
        #[arg(required = true)]
        groups: Vec<String>,
        /// Print one JSON array with an object per group (absent values are null).
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets in one topic: print the plan, and commit it with
    /// --execute. Only while the group has no active members.
    #[command(after_help = RESET_EXIT_CODES_HELP)]
    ResetOffsets(reset::Arguments),
}

pub fn run(arguments: Arguments) -> std::process::ExitCode {
    let outcome = match arguments.command {
        Command::List { broker, json } => list(&broker, json),
        Command::Describe {
            broker,
            groups,
            json,
        } => Cluster::connect(&broker.bootstrap)
            .map_err(AdminError::from)
            .and_then(|mut cluster| describe::describe(&mut cluster, &groups, json)),
        Command::ResetOffsets(arguments) => reset::reset(&arguments),
    };
    crate::admin::exit("group", outcome)
}

/// One group as `list --json` prints it.
#[derive(serde::Serialize)]
struct ListedGroupJson<'a> {
    group: &'a str,
    state: &'a str,
    protocol_type: &'a str,
}

fn list(broker: &BrokerArguments, json: bool) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let groups = requests::list_groups(&mut cluster)?;
    if json {
        let listed: Vec<ListedGroupJson> = groups
            .iter()
            .map(|group| ListedGroupJson {
                group: &group.group_id,
                state: &group.state,
                protocol_type: &group.protocol_type,
            })
            .collect();
        return print_json(&listed);
    }
    for group in &groups {
        let protocol_type = if group.protocol_type.is_empty() {
            "-"
        } else {
            &group.protocol_type
        };
        println!(
            "group {} state {} protocol-type {protocol_type}",
            group.group_id, group.state
        );
    }
    Ok(())
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), AdminError> {
    let json = serde_json::to_string(value).map_err(|error| {
        AdminError::Stdout(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    })?;
    println!("{json}");
    Ok(())
}
