//! Authorization, Kafka's way: with `--authorizer acl` every API checks what Kafka's `KafkaApis`
//! checks (WRITE on a topic to produce to it, READ on a group to join it, ALTER on the cluster
//! to create ACLs, ...) against the ACLs (`engine::acls`) and answers Kafka's
//! *_AUTHORIZATION_FAILED codes; without it everything is allowed, as Kafka without an
//! authorizer. Super users (`--super-users`) are allowed everything; a resource without any ACL
//! is allowed to everyone only with `--allow-everyone-if-no-acl-found`.
//!
//! The handlers ask [`Broker::authorized`] with the request's [`Client`]: the connection's
//! principal (`crate::listener`, set by TLS or SASL) and its peer's address.

use engine::acls::{AccessRequest, AclChange, Operation, ResourceType, CLUSTER_NAME};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::Failure;
use crate::handlers::config_entries::RESOURCE_TOPIC;

/// Kafka's principal type of users.
const USER_PRINCIPAL_PREFIX: &str = "User:";

/// How requests are authorized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `--authorizer acl`: check the ACLs; otherwise allow everything.
    pub enabled: bool,
    /// Principals (`User:NAME`) allowed everything.
    pub super_users: Vec<String>,
    /// Allow everyone on a resource no ACL names (Kafka's allow.everyone.if.no.acl.found).
    pub allow_everyone_if_no_acl_found: bool,
}

/// Whether `principal` is a principal as Kafka writes them: `TYPE:NAME`, both non-empty (only
/// `User` principals are ever authenticated).
pub fn is_principal(principal: &str) -> bool {
    principal
        .split_once(':')
        .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
}

/// Parses `--super-users`: principals separated by commas (Kafka separates them with `;`, which
/// is taken too).
pub fn parse_super_users(list: &str) -> Result<Vec<String>, String> {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|principal| !principal.is_empty())
        .map(|principal| match is_principal(principal) {
            true => Ok(principal.to_owned()),
            false => Err(format!(
                "--super-users: '{principal}' is not a principal ({USER_PRINCIPAL_PREFIX}NAME)"
            )),
        })
        .collect()
}

impl Broker {
    /// Whether `client` may do `operation` on the resource `name` of `resource_type`.
    pub fn authorized(
        &self,
        client: &Client,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let config = &self.config.authorizer;
        if !config.enabled || config.super_users.contains(&client.security.principal) {
            return true;
        }
        self.acls.authorize(
            &AccessRequest {
                principal: &client.security.principal,
                host: client.host.trim_start_matches('/'),
                operation,
                resource_type,
                resource_name: name,
            },
            config.allow_everyone_if_no_acl_found,
        )
    }

    /// Makes `changes` to the ACLs: durably in the data directory on a broker alone, through
    /// the controller (the metadata log) in a cluster; resolves once this broker authorizes
    /// with them. `Err`: the Kafka error to answer every ACL concerned.
    pub async fn alter_acls(&self, changes: Vec<AclChange>) -> Result<(), (ResponseError, String)> {
        if let Some(cluster) = &self.cluster {
            return cluster.alter_acls(changes).await.map_err(|error| {
                (
                    ResponseError::try_from_code(error.code)
                        .unwrap_or(ResponseError::UnknownServerError),
                    error.message,
                )
            });
        }
        self.acls.alter(&changes).map_err(|error| {
            engine::log_rate_limited!("ferrite: altering ACLs: {error}");
            (
                ResponseError::UnknownServerError,
                format!("the broker could not write its ACLs: {error}"),
            )
        })
    }

    /// The refusal of `operation` (DESCRIBE_CONFIGS, ALTER_CONFIGS) on the config resource
    /// `name` of Kafka's `resource_type` (a topic, or a broker: the cluster), if refused.
    pub fn config_refusal(
        &self,
        client: &Client,
        operation: Operation,
        resource_type: i8,
        name: &str,
    ) -> Option<Failure> {
        let (authorized, error) = match resource_type {
            RESOURCE_TOPIC => (
                self.authorized_on_topic(client, operation, name),
                ResponseError::TopicAuthorizationFailed,
            ),
            _ => (
                self.authorized_on_cluster(client, operation),
                ResponseError::ClusterAuthorizationFailed,
            ),
        };
        (!authorized).then(|| {
            Failure::new(
                error.code(),
                format!(
                    "{} may not {} {name}",
                    client.security.principal,
                    operation.name()
                ),
            )
        })
    }

    /// Whether `client` may do `operation` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`: InitProducerId without a transactional id needs WRITE on
    /// some topic, if not IDEMPOTENT_WRITE on the cluster).
    pub fn authorized_by_resource_type(
        &self,
        client: &Client,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        // As Kafka: a resource no ACL names first, which lets super users and the no-ACL
        // fallback through whatever the DENY ACLs say.
        self.authorized(client, operation, resource_type, "hardcode")
            || self.acls.authorize_by_resource_type(
                &client.security.principal,
                client.host.trim_start_matches('/'),
                operation,
                resource_type,
            )
    }

    /// Whether `client` may do `operation` on the cluster.
    pub fn authorized_on_cluster(&self, client: &Client, operation: Operation) -> bool {
        self.authorized(client, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether `client` may do `operation` on the topic `name`.
    pub fn authorized_on_topic(&self, client: &Client, operation: Operation, name: &str) -> bool {
        self.authorized(client, operation, ResourceType::Topic, name)
    }

    /// Whether `client` may do `operation` on the group `name`.
    pub fn authorized_on_group(&self, client: &Client, operation: Operation, name: &str) -> bool {
        self.authorized(client, operation, ResourceType::Group, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_users_are_principals() {
        assert_eq!(
            parse_super_users("User:admin, User:ops;User:CN=x").unwrap(),
            ["User:admin", "User:ops", "User:CN=x"]
        );
        assert!(parse_super_users("admin").is_err());
        assert!(parse_super_users("User:").is_err());
        assert!(parse_super_users("").unwrap().is_empty());
    }
}
