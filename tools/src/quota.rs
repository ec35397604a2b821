//! `ferrite quota set|delete|list`: client quotas per user and client id (Kafka's
//! `kafka-configs --alter --add-config producer_byte_rate=N --entity-type users
//! --entity-name NAME`), through AlterClientQuotas and DescribeClientQuotas, so it works
//! against any Kafka-compatible broker.
//!
//! An entity is a user (`--user NAME` or `--default-user`), a client id (`--client-id ID` or
//! `--default-client-id`), or one of each; `list` takes the same options as a filter (none:
//! every entity).

use std::process::ExitCode;

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{AdminError, BrokerArguments, ADMIN_TIMEOUT, EXIT_CODES_HELP};
use crate::client::cluster::Cluster;

/// Kafka's quota keys, in the order `list` prints them.
const KEYS: [&str; 3] = [
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
];

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

/// The entity a quota is for.
#[derive(clap::Args, Clone)]
struct EntityArguments {
    /// A user (the principal's name, after `User:`).
    #[arg(long, value_name = "NAME", conflicts_with = "default_user")]
    user: Option<String>,
    /// Every user without a quota of its own.
    #[arg(long)]
    default_user: bool,
    /// A client id.
    #[arg(long, value_name = "ID", conflicts_with = "default_client_id")]
    client_id: Option<String>,
    /// Every client id without a quota of its own.
    #[arg(long)]
    default_client_id: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Set one or more quotas of an entity.
    #[command(after_help = EXIT_CODES_HELP)]
    Set {
        #[command(flatten)]
        entity: EntityArguments,
        #[command(flatten)]
        broker: BrokerArguments,
        /// Bytes per second the entity may produce (per broker).
        #[arg(long, value_name = "BYTES")]
        producer_byte_rate: Option<u64>,
        /// Bytes per second the entity may fetch (per broker).
        #[arg(long, value_name = "BYTES")]
        consumer_byte_rate: Option<u64>,
        /// Percentage of one shard's time the entity's requests may take (per broker).
        #[arg(long, value_name = "PERCENT")]
        request_percentage: Option<f64>,
    },
    /// Delete quotas of an entity: those named with --key, or every one it has.
    #[command(after_help = EXIT_CODES_HELP)]
    Delete {
        #[command(flatten)]
        entity: EntityArguments,
        #[command(flatten)]
        broker: BrokerArguments,
        /// producer_byte_rate, consumer_byte_rate or request_percentage (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print the quotas of every entity the options match (all without options), one line per
    /// entity: `user NAME client-id ID producer_byte_rate N ...`, `<default>` for a default.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        entity: EntityArguments,
        #[command(flatten)]
        broker: BrokerArguments,
    },
}

pub fn run(arguments: Arguments) -> ExitCode {
    let outcome = match arguments.command {
        Command::Set {
            entity,
            broker,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let values = [
                producer_byte_rate.map(|rate| rate as f64),
                consumer_byte_rate.map(|rate| rate as f64),
                request_percentage,
            ];
            let ops: Vec<OpData> = KEYS
                .iter()
                .zip(values)
                .filter_map(|(key, value)| {
                    Some(
                        OpData::default()
                            .with_key(StrBytes::from_static_str(key))
                            .with_value(value?),
                    )
                })
                .collect();
            set(&broker, &entity, ops)
        }
        Command::Delete {
            entity,
            broker,
            keys,
        } => delete(&broker, &entity, keys),
        Command::List { entity, broker } => list(&broker, &entity),
    };
    crate::admin::exit("quota", outcome)
}

/// The entity's parts as the requests carry them: (type, name; `None` for the default).
fn entity_parts(entity: &EntityArguments) -> Vec<(&'static str, Option<String>)> {
    let mut parts = Vec::new();
    if entity.user.is_some() || entity.default_user {
        parts.push(("user", entity.user.clone()));
    }
    if entity.client_id.is_some() || entity.default_client_id {
        parts.push(("client-id", entity.client_id.clone()));
    }
    parts
}

fn entity_data(entity: &EntityArguments) -> Result<Vec<EntityData>, AdminError> {
    let parts = entity_parts(entity);
    if parts.is_empty() {
        return Err(AdminError::Usage(
            "name an entity: --user NAME, --default-user, --client-id ID or --default-client-id"
                .into(),
        ));
    }
    Ok(parts
        .into_iter()
        .map(|(entity_type, name)| {
            EntityData::default()
                .with_entity_type(StrBytes::from_static_str(entity_type))
                .with_entity_name(name.map(StrBytes::from_string))
        })
        .collect())
}

fn describe_entity(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(entity_type, name)| {
            format!("{entity_type} {}", name.as_deref().unwrap_or("<default>"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn set(
    broker: &BrokerArguments,
    entity: &EntityArguments,
    ops: Vec<OpData>,
) -> Result<(), AdminError> {
    if ops.is_empty() {
        return Err(AdminError::Usage(
            "set at least one of --producer-byte-rate, --consumer-byte-rate, --request-percentage"
                .into(),
        ));
    }
    let described = ops
        .iter()
        .map(|op| format!("{}={}", op.key.as_str(), op.value))
        .collect::<Vec<_>>()
        .join(" ");
    alter(broker, entity, ops)?;
    println!("set {} {described}", entity_text(entity));
    Ok(())
}

fn entity_text(entity: &EntityArguments) -> String {
    let parts: Vec<(String, Option<String>)> = entity_parts(entity)
        .into_iter()
        .map(|(entity_type, name)| (entity_type.to_owned(), name))
        .collect();
    describe_entity(&parts)
}

fn delete(
    broker: &BrokerArguments,
    entity: &EntityArguments,
    keys: Vec<String>,
) -> Result<(), AdminError> {
    let keys = match keys.is_empty() {
        false => keys,
        true => {
            let wanted = entity_parts(entity);
            describe(broker, entity, true)?
                .into_iter()
                .filter(|(parts, _)| {
                    parts.len() == wanted.len()
                        && parts.iter().zip(&wanted).all(
                            |((entity_type, name), (wanted_type, wanted_name))| {
                                entity_type == wanted_type && name == wanted_name
                            },
                        )
                })
                .flat_map(|(_, values)| values.into_iter().map(|(key, _)| key))
                .collect()
        }
    };
    if keys.is_empty() {
        return Err(AdminError::Usage(format!(
            "{} has no quota to delete",
            entity_text(entity)
        )));
    }
    let ops = keys
        .iter()
        .map(|key| {
            OpData::default()
                .with_key(StrBytes::from_string(key.clone()))
                .with_remove(true)
        })
        .collect();
    alter(broker, entity, ops)?;
    println!("deleted {} {}", entity_text(entity), keys.join(" "));
    Ok(())
}

fn alter(
    broker: &BrokerArguments,
    entity: &EntityArguments,
    ops: Vec<OpData>,
) -> Result<(), AdminError> {
    let request = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(entity_data(entity)?)
        .with_ops(ops)]);
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<AlterClientQuotasRequest>()?;
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    AdminError::all(
        response
            .entries
            .iter()
            .filter_map(|entry| {
                AdminError::from_code(
                    entity_text(entity),
                    entry.error_code,
                    entry.error_message.as_deref(),
                )
            })
            .collect(),
    )
}

/// An entity's parts and its quotas, as described.
type Described = (Vec<(String, Option<String>)>, Vec<(String, f64)>);

/// The quotas of the entities `entity` matches (`strict`: no other entity type besides).
fn describe(
    broker: &BrokerArguments,
    entity: &EntityArguments,
    strict: bool,
) -> Result<Vec<Described>, AdminError> {
    let components = entity_parts(entity)
        .into_iter()
        .map(|(entity_type, name)| {
            let component =
                ComponentData::default().with_entity_type(StrBytes::from_static_str(entity_type));
            match name {
                Some(name) => component
                    .with_match_type(0)
                    .with_match(Some(StrBytes::from_string(name))),
                None => component.with_match_type(1),
            }
        })
        .collect();
    let request = DescribeClientQuotasRequest::default()
        .with_components(components)
        .with_strict(strict);
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<DescribeClientQuotasRequest>()?;
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    if let Some(error) = AdminError::from_code(
        "DescribeClientQuotas",
        response.error_code,
        response.error_message.as_deref(),
    ) {
        return Err(error);
    }
    let mut described: Vec<Described> = response
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            let parts = entry
                .entity
                .iter()
                .map(|part| {
                    (
                        part.entity_type.to_string(),
                        part.entity_name.as_ref().map(|name| name.to_string()),
                    )
                })
                .collect();
            let values = entry
                .values
                .iter()
                .map(|value| (value.key.to_string(), value.value))
                .collect();
            (parts, values)
        })
        .collect();
    described.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(described)
}

fn list(broker: &BrokerArguments, entity: &EntityArguments) -> Result<(), AdminError> {
    for (parts, mut values) in describe(broker, entity, false)? {
        values.sort_by_key(|(key, _)| {
            KEYS.iter()
                .position(|known| known == key)
                .unwrap_or(KEYS.len())
        });
        let values = values
            .iter()
            .map(|(key, value)| format!("{key} {value}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!("{} {values}", describe_entity(&parts));
    }
    Ok(())
}
