//! DescribeClientQuotas (v0-1): the quotas of the entities a filter matches, as Kafka's
//! `ClientQuotasImage.describe` matches them. Each component names an entity type and matches
//! an exact name (0), the default (1) or any name but the default (2); an entity matches when
//! every component does, and with `strict` only if it has no other type besides.

use engine::quotas::{EntityName, QuotaEntity};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handlers::alter_client_quotas::{CLIENT_ID, IP, USER};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// What one component asks of its entity type's part.
#[derive(Debug, Clone, PartialEq)]
enum Matching {
    Exact(String),
    Default,
    Specified,
}

impl Matching {
    fn matches(&self, name: &EntityName) -> bool {
        match (self, name) {
            (Matching::Exact(wanted), EntityName::Named(name)) => wanted == name,
            (Matching::Default, EntityName::Default) => true,
            (Matching::Specified, EntityName::Named(_)) => true,
            _ => false,
        }
    }
}

/// The filter: what the user and the client id parts must be (`None`: anything).
struct Filter {
    user: Option<Matching>,
    client_id: Option<Matching>,
    strict: bool,
}

impl Filter {
    fn matches(&self, entity: &QuotaEntity) -> bool {
        let part = |wanted: &Option<Matching>, name: &Option<EntityName>| match (wanted, name) {
            (Some(wanted), Some(name)) => wanted.matches(name),
            (Some(_), None) => false,
            (None, Some(_)) => !self.strict,
            (None, None) => true,
        };
        part(&self.user, &entity.user) && part(&self.client_id, &entity.client_id)
    }
}

pub fn handle(
    broker: &Broker,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let filter = match check_filter(&request.components, request.strict) {
        Ok(filter) => filter,
        Err(message) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(message)))
        }
    };
    let table = broker.quotas.quotas.table();
    let entries = table
        .iter()
        .filter(|(entity, _)| filter.matches(entity))
        .map(|(entity, values)| {
            let parts = [(USER, &entity.user), (CLIENT_ID, &entity.client_id)];
            EntryData::default()
                .with_entity(
                    parts
                        .into_iter()
                        .filter_map(|(entity_type, name)| {
                            let name = name.as_ref()?;
                            Some(
                                EntityData::default()
                                    .with_entity_type(StrBytes::from_static_str(entity_type))
                                    .with_entity_name(
                                        name.to_wire()
                                            .map(|name| StrBytes::from_string(name.to_owned())),
                                    ),
                            )
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(key, value)| {
                            ValueData::default()
                                .with_key(StrBytes::from_static_str(key.name()))
                                .with_value(*value)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

fn check_filter(components: &[ComponentData], strict: bool) -> Result<Filter, String> {
    let mut filter = Filter {
        user: None,
        client_id: None,
        strict,
    };
    let mut ip = false;
    for component in components {
        let matching = match (component.match_type, component._match.as_deref()) {
            (MATCH_EXACT, Some(name)) => Matching::Exact(name.to_owned()),
            (MATCH_EXACT, None) => {
                return Err("Component with exact match type must have a match string".to_owned())
            }
            (MATCH_DEFAULT, _) => Matching::Default,
            (MATCH_SPECIFIED, _) => Matching::Specified,
            (other, _) => return Err(format!("Unknown match type: {other}")),
        };
        let slot = match component.entity_type.as_str() {
            USER => &mut filter.user,
            CLIENT_ID => &mut filter.client_id,
            IP => {
                ip = true;
                continue;
            }
            other => return Err(format!("Custom entity type {other} not supported")),
        };
        if slot.replace(matching).is_some() {
            return Err(format!(
                "Duplicate entity type {}",
                component.entity_type.as_str()
            ));
        }
    }
    if ip && (filter.user.is_some() || filter.client_id.is_some()) {
        return Err(
            "Invalid entity filter component combination, IP filter component should not be used with user or clientId filter component."
                .to_owned(),
        );
    }
    Ok(filter)
}
