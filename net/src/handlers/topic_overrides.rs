//! Changing a topic's configuration overrides: the one path AlterConfigs and
//! IncrementalAlterConfigs share once each has said what the new set is.
//!
//! The new overrides are worked out under the catalog's lock, checked with
//! `engine::topic_config` (INVALID_CONFIG with the reason), persisted in the catalog, and then
//! every open log of the topic is brought up to date on its owning shard before the answer:
//! once a client has its answer, the new settings are in effect. Reading the catalog on the
//! owner, instead of sending it a configuration, means concurrent alterations cannot leave an
//! older one in effect. In a cluster the controller decides, after the same check here.
//!
//! Only topics can be altered (a BROKER resource is refused with INVALID_REQUEST). The broker's own
//! settings are fixed at start-up (`ferrite serve` flags), and internal topics keep the settings
//! the broker gave them.

use std::collections::{BTreeMap, BTreeSet};

use engine::shard::PartitionId;
use engine::topic_config;
use kafka_protocol::ResponseError;

use super::config_entries::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::errors::{code, log_error_code, Failure};

/// Changes the overrides of topic `name` to what `change` makes of them (after checking the
/// resource and the keys named), checks the result, persists it and applies it to the
/// topic's open logs. `validate_only` stops after the check.
pub(super) async fn alter_topic(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    names: &[&str],
    validate_only: bool,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
) -> Result<(), Failure> {
    let invalid_request =
        |message: String| Failure::new(code(ResponseError::InvalidRequest), message);
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(invalid_request(
                "broker settings cannot be altered while the broker runs: set them with \
                 `ferrite serve` flags (or its --config file) and restart"
                    .into(),
            ))
        }
        other => {
            return Err(invalid_request(format!(
                "resource type {other} cannot be altered on this broker; only topics (2) can"
            )))
        }
    }
    let mut seen = BTreeSet::new();
    if let Some(duplicate) = names.iter().find(|name| !seen.insert(**name)) {
        return Err(invalid_request(format!(
            "topic config '{duplicate}' is named more than once"
        )));
    }
    let log = &broker.config.log;
    if let Some(cluster) = &broker.cluster {
        // The controller decides; the result is checked here first so a bad value is refused
        // at once with the same message as on a single broker.
        engine::catalog::refuse_internal(name)?;
        let current = broker.catalog.topics().get(name).cloned().ok_or_else(|| {
            Failure::from(engine::catalog::CatalogError::UnknownTopic(name.to_owned()))
        })?;
        let configs = change(&current.configs)
            .and_then(|configs| topic_config::validate(log, &configs).map(|()| configs))
            .map_err(|message| Failure::new(code(ResponseError::InvalidConfig), message))?;
        if validate_only {
            return Ok(());
        }
        return Ok(cluster
            .alter_topic_configs(name.to_owned(), configs)
            .await?);
    }
    let topic = broker
        .catalog
        .alter_topic_configs(name, validate_only, |current| {
            let configs = change(current)?;
            topic_config::validate(log, &configs)?;
            Ok(configs)
        })?;
    if validate_only {
        return Ok(());
    }
    let reloads = (0..topic.partitions).map(|partition| {
        broker
            .context
            .reload_log_config(PartitionId::new(name, partition))
    });
    let failed = futures::future::join_all(reloads)
        .await
        .into_iter()
        .find_map(Result::err);
    match failed {
        None => Ok(()),
        Some(error) => Err(Failure::new(
            log_error_code(&error),
            format!(
                "the new configs of topic '{name}' are saved, but not yet in effect on every \
                 partition ({error}); they will be when the partition is next opened"
            ),
        )),
    }
}
