//! `ferrite acl add|remove|list`: the ACLs `--authorizer acl` checks (Kafka's `kafka-acls`),
//! through CreateAcls, DeleteAcls and DescribeAcls, so it works against any Kafka-compatible
//! broker. `add` takes one resource, one principal and host, and one or more operations (an
//! ACL each); `remove` and `list` take the same flags as a filter, a flag left out matching
//! anything, and print each ACL removed or found on a line of its own:
//! `acl TYPE NAME pattern PATTERN principal P host H operation O permission ALLOW|DENY`.
//!
//! It connects as the PLAINTEXT listener's `User:ANONYMOUS` (the admin client has no TLS or SASL
//! yet): with the authorizer on, that principal must be allowed to ALTER and DESCRIBE the
//! cluster (an ACL, or `--super-users`), or use a Kafka client that authenticates.

use std::process::ExitCode;

use engine::acls::{
    AclBinding, Operation, PatternType, Permission, ResourceType, ANY_CODE, CLUSTER_NAME,
    MATCH_CODE,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{AdminError, BrokerArguments, ADMIN_TIMEOUT, EXIT_CODES_HELP};
use crate::client::cluster::Cluster;

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add ACLs: one per operation, on one resource, for one principal and host.
    #[command(after_help = EXIT_CODES_HELP)]
    Add {
        #[command(flatten)]
        broker: BrokerArguments,
        #[command(flatten)]
        acl: AclArguments,
    },
    /// Remove every ACL the flags match (a flag left out matches anything).
    #[command(after_help = EXIT_CODES_HELP)]
    Remove {
        #[command(flatten)]
        broker: BrokerArguments,
        #[command(flatten)]
        acl: AclArguments,
    },
    /// Print every ACL the flags match (a flag left out matches anything).
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        broker: BrokerArguments,
        #[command(flatten)]
        acl: AclArguments,
    },
}

#[derive(clap::Args)]
struct AclArguments {
    /// The topic (a name, `*` for every topic, or a prefix with --pattern prefixed).
    #[arg(long, value_name = "NAME", group = "resource")]
    topic: Option<String>,
    /// The consumer group.
    #[arg(long, value_name = "NAME", group = "resource")]
    group: Option<String>,
    /// The transactional id.
    #[arg(long, value_name = "ID", group = "resource")]
    transactional_id: Option<String>,
    /// The cluster (creating topics, managing ACLs and users, idempotent producers).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// How the resource name is matched: literal or prefixed (and, for remove and list, match:
    /// every pattern that applies to the name, or any) [default: literal for add, any
    /// otherwise].
    #[arg(long, value_name = "PATTERN")]
    pattern: Option<String>,
    /// `User:NAME`, or `User:*` for everyone.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
    /// The client address the ACL applies to [default for add: `*`, any address].
    #[arg(long, value_name = "IP")]
    host: Option<String>,
    /// Operations, of ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
    #[arg(long, value_name = "OPERATIONS", value_delimiter = ',')]
    operation: Vec<String>,
    /// Allow (the default for add).
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Deny, which wins over any ALLOW.
    #[arg(long)]
    deny: bool,
}

pub fn run(arguments: Arguments) -> ExitCode {
    let outcome = match arguments.command {
        Command::Add { broker, acl } => bindings(&acl).and_then(|bindings| add(&broker, bindings)),
        Command::Remove { broker, acl } => filter(&acl).and_then(|filter| remove(&broker, filter)),
        Command::List { broker, acl } => filter(&acl).and_then(|filter| list(&broker, filter)),
    };
    crate::admin::exit("acl", outcome)
}

/// The resource the flags name, if any.
fn resource(acl: &AclArguments) -> Option<(ResourceType, String)> {
    let named = |resource_type, name: &Option<String>| {
        name.as_ref().map(|name| (resource_type, name.clone()))
    };
    named(ResourceType::Topic, &acl.topic)
        .or_else(|| named(ResourceType::Group, &acl.group))
        .or_else(|| named(ResourceType::TransactionalId, &acl.transactional_id))
        .or_else(|| {
            acl.cluster
                .then(|| (ResourceType::Cluster, CLUSTER_NAME.to_owned()))
        })
}

fn operations(acl: &AclArguments) -> Result<Vec<Operation>, AdminError> {
    acl.operation
        .iter()
        .map(|name| {
            Operation::from_name(name.trim()).ok_or_else(|| {
                AdminError::Usage(format!("--operation {name}: not one of Kafka's operations"))
            })
        })
        .collect()
}

fn permission(acl: &AclArguments) -> Option<Permission> {
    match (acl.allow, acl.deny) {
        (true, _) => Some(Permission::Allow),
        (_, true) => Some(Permission::Deny),
        _ => None,
    }
}

/// The ACLs `add` creates.
fn bindings(acl: &AclArguments) -> Result<Vec<AclBinding>, AdminError> {
    let Some((resource_type, resource_name)) = resource(acl) else {
        return Err(AdminError::Usage(
            "name the resource: --topic, --group, --transactional-id or --cluster".into(),
        ));
    };
    let pattern_type = match acl.pattern.as_deref() {
        None => PatternType::Literal,
        Some(name) => PatternType::from_name(name)
            .ok_or_else(|| AdminError::Usage(format!("--pattern {name}: literal or prefixed")))?,
    };
    let Some(principal) = acl.principal.clone() else {
        return Err(AdminError::Usage("--principal User:NAME is needed".into()));
    };
    let operations = operations(acl)?;
    if operations.is_empty() {
        return Err(AdminError::Usage("--operation is needed".into()));
    }
    let permission = permission(acl).unwrap_or(Permission::Allow);
    let host = acl.host.clone().unwrap_or_else(|| "*".to_owned());
    Ok(operations
        .into_iter()
        .map(|operation| AclBinding {
            resource_type,
            resource_name: resource_name.clone(),
            pattern_type,
            principal: principal.clone(),
            host: host.clone(),
            operation,
            permission,
        })
        .collect())
}

/// A filter in DeleteAcls' form (DescribeAcls has the same fields).
fn filter(acl: &AclArguments) -> Result<Vec<DeleteAclsFilter>, AdminError> {
    let resource = resource(acl);
    let pattern_type = match acl
        .pattern
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("any") => ANY_CODE,
        Some("match") => MATCH_CODE,
        Some(name) => PatternType::from_name(name)
            .ok_or_else(|| {
                AdminError::Usage(format!("--pattern {name}: literal, prefixed, match or any"))
            })?
            .code(),
    };
    let operations = operations(acl)?;
    let operations: Vec<i8> = match operations.is_empty() {
        true => vec![ANY_CODE],
        false => operations.into_iter().map(Operation::code).collect(),
    };
    Ok(operations
        .into_iter()
        .map(|operation| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(
                    resource
                        .as_ref()
                        .map_or(ANY_CODE, |(resource_type, _)| resource_type.code()),
                )
                .with_resource_name_filter(
                    resource
                        .as_ref()
                        .map(|(_, name)| StrBytes::from_string(name.clone())),
                )
                .with_pattern_type_filter(pattern_type)
                .with_principal_filter(acl.principal.clone().map(StrBytes::from_string))
                .with_host_filter(acl.host.clone().map(StrBytes::from_string))
                .with_operation(operation)
                .with_permission_type(permission(acl).map_or(ANY_CODE, Permission::code))
        })
        .collect())
}

/// An ACL's line: `acl TYPE NAME pattern P principal P host H operation O permission P`, in
/// Kafka's codes as the broker sent them (a code this tool does not know as its number).
#[allow(clippy::too_many_arguments)]
fn line(
    resource_type: i8,
    name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> String {
    let resource_type = ResourceType::from_code(resource_type)
        .map_or(resource_type.to_string(), |known| known.name().to_owned());
    let pattern_type = PatternType::from_code(pattern_type)
        .map_or(pattern_type.to_string(), |known| known.name().to_owned());
    let operation = Operation::from_code(operation)
        .map_or(operation.to_string(), |known| known.name().to_owned());
    let permission = Permission::from_code(permission)
        .map_or(permission.to_string(), |known| known.name().to_owned());
    format!(
        "acl {resource_type} {name} pattern {pattern_type} principal {principal} host {host} \
         operation {operation} permission {permission}"
    )
}

fn add(broker: &BrokerArguments, bindings: Vec<AclBinding>) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<CreateAclsRequest>()?;
    let request = CreateAclsRequest::default().with_creations(
        bindings
            .iter()
            .map(|binding| {
                AclCreation::default()
                    .with_resource_type(binding.resource_type.code())
                    .with_resource_name(StrBytes::from_string(binding.resource_name.clone()))
                    .with_resource_pattern_type(binding.pattern_type.code())
                    .with_principal(StrBytes::from_string(binding.principal.clone()))
                    .with_host(StrBytes::from_string(binding.host.clone()))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code())
            })
            .collect(),
    );
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    let mut failures = Vec::new();
    for (binding, result) in bindings.iter().zip(&response.results) {
        let shown = line(
            binding.resource_type.code(),
            &binding.resource_name,
            binding.pattern_type.code(),
            &binding.principal,
            &binding.host,
            binding.operation.code(),
            binding.permission.code(),
        );
        match AdminError::from_code(
            shown.clone(),
            result.error_code,
            result.error_message.as_deref(),
        ) {
            Some(error) => failures.push(error),
            None => println!("added {shown}"),
        }
    }
    AdminError::all(failures)
}

fn remove(broker: &BrokerArguments, filters: Vec<DeleteAclsFilter>) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<DeleteAclsRequest>()?;
    let request = DeleteAclsRequest::default().with_filters(filters);
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    let mut failures = Vec::new();
    for result in &response.filter_results {
        if let Some(error) = AdminError::from_code(
            "DeleteAcls",
            result.error_code,
            result.error_message.as_deref(),
        ) {
            failures.push(error);
            continue;
        }
        for acl in &result.matching_acls {
            println!(
                "removed {}",
                line(
                    acl.resource_type,
                    &acl.resource_name,
                    acl.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                )
            );
        }
    }
    AdminError::all(failures)
}

fn list(broker: &BrokerArguments, filters: Vec<DeleteAclsFilter>) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<DescribeAclsRequest>()?;
    let mut lines = Vec::new();
    for filter in filters {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(filter.resource_type_filter)
            .with_resource_name_filter(filter.resource_name_filter)
            .with_pattern_type_filter(filter.pattern_type_filter)
            .with_principal_filter(filter.principal_filter)
            .with_host_filter(filter.host_filter)
            .with_operation(filter.operation)
            .with_permission_type(filter.permission_type);
        let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
        if let Some(error) = AdminError::from_code(
            "DescribeAcls",
            response.error_code,
            response.error_message.as_deref(),
        ) {
            return Err(error);
        }
        for resource in &response.resources {
            lines.extend(resource.acls.iter().map(|acl| {
                line(
                    resource.resource_type,
                    &resource.resource_name,
                    resource.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                )
            }));
        }
    }
    lines.sort();
    lines.dedup();
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
