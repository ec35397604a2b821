//! What the admin commands (`topic`, `produce`, `consume`, `group`) share: the `--bootstrap` flag, one
//! error type, and the one place that turns an outcome into a message and an exit code.
//!
//! Exit codes, which scripts may rely on:
//! - 0: success;
//! - 1: the broker could not be reached, broke the protocol, or answered with a Kafka error
//!   code (the message names the topic or partition, the code's name, and what to do);
//! - 2: usage errors: bad flags (clap's own), or input that does not match them (a line
//!   without a TAB under `produce --keyed`).

use std::process::ExitCode;

use kafka_protocol::error::ResponseError;

use crate::client::ClientError;

/// How long an admin change may take the broker (in a cluster, the controller's commit).
pub const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The end of every admin command's `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 success; 1 the broker could not be reached or \
    answered with an error (the message names the topic or partition, Kafka's name for the \
    error code, and what to do); 2 usage error (bad flags or input).";

/// The flag every admin command takes.
#[derive(clap::Args)]
pub struct BrokerArguments {
    /// Address of any broker of the cluster; the others are found through it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The broker answered with a Kafka error code about `subject` (a topic or partition).
    #[error(
        "{subject}: {} (Kafka error {}){} — {}",
        kafka_error_name(*error),
        error.code(),
        message.as_ref().map_or(String::new(), |message| format!(": {message}")),
        kafka_error_hint(*error)
    )]
    Kafka {
        subject: String,
        error: ResponseError,
        message: Option<String>,
    },
    /// The cluster's state does not allow the command (a partition that does not exist, a
    /// partition without a leader, a broker missing from the metadata).
    #[error("{0}")]
    Cluster(String),
    /// The input does not match the flags.
    #[error("{0}")]
    Usage(String),
    #[error("cannot read standard input: {0}")]
    Stdin(std::io::Error),
    #[error("cannot write standard output: {0}")]
    Stdout(std::io::Error),
    /// Independent failures of one command (one per topic it was given), each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<AdminError>),
}

impl AdminError {
    /// An error for a non-zero Kafka error code, or `None` for 0 (no error).
    pub fn from_code(subject: impl Into<String>, code: i16, message: Option<&str>) -> Option<Self> {
        ResponseError::try_from_code(code).map(|error| AdminError::Kafka {
            subject: subject.into(),
            error,
            message: message
                .filter(|message| !message.is_empty())
                .map(str::to_string),
        })
    }

    /// `Ok` if nothing failed, else all the failures.
    pub fn all(failures: Vec<AdminError>) -> Result<(), AdminError> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AdminError::Several(failures))
        }
    }

    /// Whether running the request again may succeed: the broker said every failure is
    /// transient (a coordinator loading or moving, a leader election).
    pub fn is_retriable(&self) -> bool {
        match self {
            AdminError::Kafka { error, .. } => error.is_retriable(),
            AdminError::Several(failures) => {
                !failures.is_empty() && failures.iter().all(AdminError::is_retriable)
            }
            _ => false,
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::Several(failures) => failures
                .iter()
                .map(AdminError::exit_code)
                .max()
                .unwrap_or(1),
            AdminError::Client(_)
            | AdminError::Kafka { .. }
            | AdminError::Cluster(_)
            | AdminError::Stdin(_)
            | AdminError::Stdout(_) => 1,
        }
    }
}

/// Prints a failure as `ferrite COMMAND: message` on stderr and maps it to the exit code.
pub fn exit(command: &str, outcome: Result<(), AdminError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                AdminError::Several(failures) => {
                    for failure in failures {
                        eprintln!("ferrite {command}: {failure}");
                    }
                }
                _ => eprintln!("ferrite {command}: {error}"),
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Kafka's own name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), as its documentation and
/// every other client print it.
pub fn kafka_error_name(error: ResponseError) -> String {
    if let ResponseError::Unknown(_) = error {
        return "UNKNOWN_ERROR_CODE".to_string();
    }
    // The crate names the variants after Kafka's constants in CamelCase.
    let camel = error.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// What the user can do about an error code.
fn kafka_error_hint(error: ResponseError) -> &'static str {
    match error {
        ResponseError::UnknownTopicOrPartition => {
            "no such topic or partition: check the name with `ferrite topic list`, or create it \
             with `ferrite topic create`"
        }
        ResponseError::TopicAlreadyExists => {
            "the topic exists already: `ferrite topic describe` shows it"
        }
        ResponseError::InvalidTopicException => {
            "topic names are 1 to 249 characters among ASCII letters, digits, '.', '_' and '-'"
        }
        ResponseError::InvalidPartitions => "give --partitions a count of at least 1",
        ResponseError::InvalidReplicationFactor => {
            "give --replication-factor between 1 and the number of brokers"
        }
        ResponseError::InvalidConfig => {
            "check the settings' names and values (`ferrite topic describe TOPIC --all-configs` \
             lists every setting)"
        }
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
            "the batch is larger than the broker accepts: lower --batch-bytes, or shorten the \
             message"
        }
        ResponseError::OffsetOutOfRange => {
            "the offset is outside the partition's log: `ferrite topic describe` shows its log \
             start and high-water offsets; or use --from beginning or --from end"
        }
        ResponseError::UnsupportedCompressionType => {
            "the broker does not accept this codec: choose another --compression"
        }
        ResponseError::TopicDeletionDisabled => "the broker is configured to refuse deletions",
        ResponseError::GroupIdNotFound => {
            "no such group: `ferrite group list` lists the groups"
        }
        ResponseError::InvalidGroupId => "a group id is a non-empty string",
        // What a coordinator answers a commit from outside a group that has members.
        ResponseError::UnknownMemberId
        | ResponseError::IllegalGeneration
        | ResponseError::NonEmptyGroup => {
            "the group has active members: stop its consumers, then run the command again              (`ferrite group describe` names them)"
        }
        _ if error.is_retriable() => {
            "the broker says this is transient (leadership moving, broker busy): run the command \
             again"
        }
        _ => "the broker's log may say more",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_kafka_names_them() {
        assert_eq!(
            kafka_error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            kafka_error_name(ResponseError::NotLeaderOrFollower),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(
            kafka_error_name(ResponseError::UnknownServerError),
            "UNKNOWN_SERVER_ERROR"
        );
        assert_eq!(
            kafka_error_name(ResponseError::Unknown(999)),
            "UNKNOWN_ERROR_CODE"
        );
    }

    #[test]
    fn a_kafka_error_names_its_subject_code_and_remedy() {
        assert!(AdminError::from_code("topic orders", 0, None).is_none());
        let error = AdminError::from_code("partition orders-2", 3, Some("")).unwrap();
        let message = error.to_string();
        assert!(
            message
                .starts_with("partition orders-2: UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3) — "),
            "{message}"
        );
        assert!(message.contains("ferrite topic create"), "{message}");
        assert_eq!(error.exit_code(), 1);
        let with_message = AdminError::from_code("topic x", 36, Some("exists")).unwrap();
        assert!(with_message
            .to_string()
            .starts_with("topic x: TOPIC_ALREADY_EXISTS (Kafka error 36): exists — "));
    }
}
