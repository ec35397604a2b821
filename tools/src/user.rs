//! `ferrite user set|delete|list`: the users SASL authenticates, as SCRAM credentials (Kafka's
//! `kafka-configs --alter --add-config SCRAM-SHA-256=[...] --entity-type users`).
//!
//! Online (`--bootstrap`) through AlterUserScramCredentials and DescribeUserScramCredentials,
//! so it works against any Kafka-compatible broker: the password never leaves this process,
//! only the salted password derived from it with a fresh salt (RFC 5802's `SaltedPassword`,
//! which the request carries). Offline (`set --data-dir`, the broker stopped) it writes the
//! credential into the data directory before the first start, as `kafka-storage format
//! --add-scram` does: a broker alone keeps it there; a cluster's broker proposes it to the
//! metadata log when it starts, then deletes the file.
//!
//! The one exception to the admin commands' rule of using nothing of the broker: the SCRAM
//! derivations come from `net::sasl::scram` (the client's half of SCRAM is the same pure
//! functions), and the offline file is `engine::credentials`'.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use engine::credentials::{CredentialChange, Credentials, ScramMechanism};
use engine::data_dir_lock::DataDirLock;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use net::sasl::scram;

use crate::admin::{AdminError, BrokerArguments, ADMIN_TIMEOUT, EXIT_CODES_HELP};
use crate::client::cluster::Cluster;

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add a user, or change its password, for one SCRAM mechanism (PLAIN checks passwords
    /// against the same credential). The password is read from standard input (its first
    /// line).
    #[command(after_help = EXIT_CODES_HELP)]
    Set {
        name: String,
        #[command(flatten)]
        broker: BrokerArguments,
        /// Write the credential into this (stopped) broker's data directory instead of asking
        /// a running broker; a cluster's broker proposes it to the metadata log at its start.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Read the password from standard input (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_name = "MECHANISM", default_value = "SCRAM-SHA-256")]
        mechanism: String,
        /// PBKDF2 iterations of the credential (4096 to 16384).
        #[arg(long, value_name = "N", default_value_t = scram::ITERATIONS_MIN)]
        iterations: u32,
    },
    /// Delete a user's credential of one mechanism, or (without --mechanism) all of them.
    #[command(after_help = EXIT_CODES_HELP)]
    Delete {
        name: String,
        #[command(flatten)]
        broker: BrokerArguments,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 [default: every mechanism the user has].
        #[arg(long, value_name = "MECHANISM")]
        mechanism: Option<String>,
    },
    /// Print every user (or those named) with its mechanisms and iterations, one line per
    /// credential: `user NAME mechanism M iterations N`.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        names: Vec<String>,
        #[command(flatten)]
        broker: BrokerArguments,
    },
}

pub fn run(arguments: Arguments) -> ExitCode {
    let outcome = match arguments.command {
        Command::Set {
            name,
            broker,
            data_dir,
            password_stdin: _,
            mechanism,
            iterations,
        } => read_password().and_then(|password| {
            let credential = new_credential(&name, &mechanism, iterations, &password)?;
            match data_dir {
                Some(data_dir) => set_offline(&data_dir, credential),
                None => set_online(&broker, credential),
            }
        }),
        Command::Delete {
            name,
            broker,
            mechanism,
        } => delete(&broker, &name, mechanism.as_deref()),
        Command::List { names, broker } => list(&broker, &names),
    };
    crate::admin::exit("user", outcome)
}

/// A credential about to be set, with what the online request carries.
struct NewCredential {
    user: String,
    mechanism: ScramMechanism,
    iterations: u32,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

fn parse_mechanism(name: &str) -> Result<ScramMechanism, AdminError> {
    ScramMechanism::from_name(name).ok_or_else(|| {
        AdminError::Usage(format!(
            "--mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512"
        ))
    })
}

fn new_credential(
    user: &str,
    mechanism: &str,
    iterations: u32,
    password: &str,
) -> Result<NewCredential, AdminError> {
    if user.is_empty() {
        return Err(AdminError::Usage("the user name is empty".into()));
    }
    if !(scram::ITERATIONS_MIN..=scram::ITERATIONS_MAX).contains(&iterations) {
        return Err(AdminError::Usage(format!(
            "--iterations must be {} to {}",
            scram::ITERATIONS_MIN,
            scram::ITERATIONS_MAX
        )));
    }
    let mechanism = parse_mechanism(mechanism)?;
    let salt = scram::new_salt()
        .map_err(|error| AdminError::Cluster(format!("no random salt: {error}")))?;
    let salted_password = scram::salted_password(mechanism, password.as_bytes(), &salt, iterations);
    Ok(NewCredential {
        user: user.to_owned(),
        mechanism,
        iterations,
        salt,
        salted_password,
    })
}

/// The password: the first line of standard input, without its line end.
fn read_password() -> Result<String, AdminError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(AdminError::Stdin)?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(AdminError::Usage(
            "--password-stdin: standard input holds no password".into(),
        ));
    }
    Ok(password.to_owned())
}

fn set_offline(data_dir: &Path, credential: NewCredential) -> Result<(), AdminError> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        AdminError::Cluster(format!("cannot create {}: {error}", data_dir.display()))
    })?;
    // The broker reads the file only at its start: one running there would never see it.
    let _lock = DataDirLock::take(data_dir).map_err(|error| {
        AdminError::Cluster(format!(
            "{error}; stop the broker, or set the user online with --bootstrap"
        ))
    })?;
    let stored =
        Credentials::open(data_dir).map_err(|error| AdminError::Cluster(error.to_string()))?;
    stored
        .alter(&[CredentialChange::Upsert {
            user: credential.user.clone(),
            mechanism: credential.mechanism,
            credential: scram::credential_from_salted_password(
                credential.mechanism,
                &credential.salt,
                credential.iterations,
                &credential.salted_password,
            ),
        }])
        .map_err(|error| AdminError::Cluster(error.to_string()))?;
    println!(
        "set user {} {} in {}",
        credential.user,
        credential.mechanism.name(),
        data_dir.display()
    );
    Ok(())
}

fn set_online(broker: &BrokerArguments, credential: NewCredential) -> Result<(), AdminError> {
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(credential.user.clone()))
            .with_mechanism(credential.mechanism.kafka_type())
            .with_iterations(credential.iterations as i32)
            .with_salt(credential.salt.into())
            .with_salted_password(credential.salted_password.into()),
    ]);
    alter(broker, request)?;
    println!(
        "set user {} {}",
        credential.user,
        credential.mechanism.name()
    );
    Ok(())
}

fn delete(broker: &BrokerArguments, user: &str, mechanism: Option<&str>) -> Result<(), AdminError> {
    let mechanisms = match mechanism {
        Some(name) => vec![parse_mechanism(name)?],
        None => describe(broker, &[user.to_owned()])?
            .into_iter()
            .map(|(_, mechanism, _)| mechanism)
            .collect(),
    };
    let request = AlterUserScramCredentialsRequest::default().with_deletions(
        mechanisms
            .iter()
            .map(|mechanism| {
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(user.to_owned()))
                    .with_mechanism(mechanism.kafka_type())
            })
            .collect(),
    );
    alter(broker, request)?;
    for mechanism in mechanisms {
        println!("deleted user {user} {}", mechanism.name());
    }
    Ok(())
}

fn alter(
    broker: &BrokerArguments,
    request: AlterUserScramCredentialsRequest,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<AlterUserScramCredentialsRequest>()?;
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    AdminError::all(
        response
            .results
            .iter()
            .filter_map(|result| {
                AdminError::from_code(
                    format!("user {}", result.user.as_str()),
                    result.error_code,
                    result.error_message.as_deref(),
                )
            })
            .collect(),
    )
}

/// Each credential of the users `names` (every user if none), sorted.
fn describe(
    broker: &BrokerArguments,
    names: &[String],
) -> Result<Vec<(String, ScramMechanism, i32)>, AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<DescribeUserScramCredentialsRequest>()?;
    let users = (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|name| UserName::default().with_name(StrBytes::from_string(name.clone())))
            .collect()
    });
    let request = DescribeUserScramCredentialsRequest::default().with_users(users);
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    if let Some(error) = AdminError::from_code(
        "DescribeUserScramCredentials",
        response.error_code,
        response.error_message.as_deref(),
    ) {
        return Err(error);
    }
    let mut failures = Vec::new();
    let mut described = Vec::new();
    for result in &response.results {
        let user = result.user.to_string();
        if let Some(error) = AdminError::from_code(
            format!("user {user}"),
            result.error_code,
            result.error_message.as_deref(),
        ) {
            failures.push(error);
            continue;
        }
        for info in &result.credential_infos {
            // A mechanism this tool does not know is left out.
            if let Some(mechanism) = ScramMechanism::from_kafka_type(info.mechanism) {
                described.push((user.clone(), mechanism, info.iterations));
            }
        }
    }
    AdminError::all(failures)?;
    described.sort();
    Ok(described)
}

fn list(broker: &BrokerArguments, names: &[String]) -> Result<(), AdminError> {
    for (user, mechanism, iterations) in describe(broker, names)? {
        println!(
            "user {user} mechanism {} iterations {iterations}",
            mechanism.name()
        );
    }
    Ok(())
}
