//! AlterClientQuotas (v0-1): sets and removes client quotas, checked as Kafka's controller
//! checks them (`ClientQuotaControlManager`): entities of users and client ids (named or
//! default, alone or together), keys `producer_byte_rate` and `consumer_byte_rate` (whole
//! bytes per second) and `request_percentage`, each value above zero. Each entry is answered on
//! its own; the valid ones are applied together (durable in the data directory before the
//! answer on a broker alone, committed in the metadata log and applied here in a cluster), or
//! only checked with `validate_only`.

use engine::quotas::{EntityName, QuotaChange, QuotaEntity, QuotaKey};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData};
use kafka_protocol::messages::alter_client_quotas_response;
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;

/// Kafka's entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// Why an entry is refused: a Kafka code and its message.
type Refusal = (ResponseError, String);

fn invalid(message: impl Into<String>) -> Refusal {
    (ResponseError::InvalidRequest, message.into())
}

pub async fn handle(
    broker: &Broker,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let checked: Vec<Result<Vec<QuotaChange>, Refusal>> =
        request.entries.iter().map(check_entry).collect();
    let changes: Vec<QuotaChange> = checked
        .iter()
        .filter_map(|checked| checked.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let applied_failed = match request.validate_only || changes.is_empty() {
        true => None,
        false => alter(broker, changes).await.err(),
    };
    let entries = request
        .entries
        .iter()
        .zip(checked)
        .map(|(entry, checked)| {
            let answered = alter_client_quotas_response::EntryData::default().with_entity(
                entry
                    .entity
                    .iter()
                    .map(|entity| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(entity.entity_type.clone())
                            .with_entity_name(entity.entity_name.clone())
                    })
                    .collect(),
            );
            match checked.err().or_else(|| applied_failed.clone()) {
                None => answered,
                Some((code, message)) => answered
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// Makes `changes` to the client quotas: durably in the data directory on a broker alone,
/// through the controller in a cluster; resolves once this broker enforces them.
async fn alter(broker: &Broker, changes: Vec<QuotaChange>) -> Result<(), Refusal> {
    match &broker.cluster {
        Some(cluster) => cluster.alter_client_quotas(changes).await.map_err(|error| {
            (
                ResponseError::try_from_code(error.code)
                    .unwrap_or(ResponseError::UnknownServerError),
                error.message,
            )
        }),
        None => broker.quotas.quotas.alter(&changes).map_err(|error| {
            engine::log_rate_limited!("ferrite: altering client quotas: {error}");
            (
                ResponseError::UnknownServerError,
                format!("the broker could not write its quotas: {error}"),
            )
        }),
    }
}

/// The entity an entry names, checked.
pub fn check_entity(entity: &[EntityData]) -> Result<QuotaEntity, Refusal> {
    if entity.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    let mut checked = QuotaEntity {
        user: None,
        client_id: None,
    };
    let mut ip = false;
    for part in entity {
        let name = EntityName::from_wire(part.entity_name.as_deref());
        let slot = match part.entity_type.as_str() {
            USER => &mut checked.user,
            CLIENT_ID => &mut checked.client_id,
            IP => {
                ip = true;
                continue;
            }
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )))
            }
        };
        if slot.replace(name).is_some() {
            return Err(invalid(format!(
                "Invalid duplicate client quota entity type: {}",
                part.entity_type.as_str()
            )));
        }
    }
    if ip && (checked.user.is_some() || checked.client_id.is_some()) {
        return Err(invalid(
            "Invalid quota entity combination, IP entity should not be combined with User or ClientId",
        ));
    }
    if ip {
        return Err(invalid(
            "IP quotas (connection_creation_rate) are not supported by this broker",
        ));
    }
    Ok(checked)
}

fn check_entry(entry: &EntryData) -> Result<Vec<QuotaChange>, Refusal> {
    let entity = check_entity(&entry.entity)?;
    let mut changes: Vec<QuotaChange> = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let name = op.key.as_str();
        let Some(key) = QuotaKey::from_name(name) else {
            return Err(invalid(format!("Invalid configuration key {name}")));
        };
        if changes.iter().any(|change| change.key == key) {
            return Err(invalid(format!("Duplicate quota key {name}")));
        }
        let value = match op.remove {
            true => None,
            false => {
                if !op.value.is_finite() || op.value <= 0.0 {
                    return Err(invalid(format!("Quota {name} must be greater than 0")));
                }
                if key.is_whole_number() && op.value.fract() != 0.0 {
                    return Err(invalid(format!(
                        "Configuration {name} must be a Long value"
                    )));
                }
                Some(op.value)
            }
        };
        changes.push(QuotaChange {
            entity: entity.clone(),
            key,
            value,
        });
    }
    Ok(changes)
}
