//! Kafka's access control lists: the model (principal, host, resource pattern, operation,
//! ALLOW/DENY), the filters of DescribeAcls and DeleteAcls, the decision Kafka's
//! `StandardAuthorizer` makes for one request on one resource, and their storage.
//!
//! Numbers are Kafka's on-the-wire codes (`ResourceType`, `PatternType`, `AclOperation`,
//! `AclPermissionType` in Kafka's clients), so the protocol layer maps nothing. The decision
//! ([`AclTable::authorize`]) follows `StandardAuthorizerData`: an ACL applies to a resource if
//! it is LITERAL with the resource's name or `*`, or PREFIXED with a prefix of the name; to a
//! principal if it names it or `User:*`; to a host if it names it or `*`. A DENY that applies
//! wins over every ALLOW; an ALLOW of ALL allows everything, and one of READ, WRITE, DELETE or
//! ALTER also allows DESCRIBE, one of ALTER_CONFIGS also DESCRIBE_CONFIGS. Without any ACL on
//! the resource the caller's `allow_if_no_acl` decides.
//!
//! Every request of every shard reads them and a writer replaces them whole (CreateAcls,
//! DeleteAcls, the cluster's metadata log): a `crate::published_table`, as the credentials are,
//! kept in `acls.json` on a broker alone. A check scans the ACLs of the resource's type: a
//! broker holds a few hundred ACLs, not millions, and the scan allocates nothing.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::published_table::{PublishedTable, TableKind};

/// The principal every ACL naming it applies to (Kafka's `User:*`).
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host or resource name every ACL naming it applies to.
pub const WILDCARD: &str = "*";
/// The one name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)*
        }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's code on the wire.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            pub fn from_code(code: i8) -> Option<$name> {
                Self::ALL_VALUES.iter().copied().find(|value| value.code() == code)
            }

            /// Kafka's name (`TOPIC`, `PREFIXED`, `DESCRIBE_CONFIGS`, `ALLOW`).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The value of Kafka's name, in any case (`topic`, `Prefixed`).
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL_VALUES
                    .iter()
                    .copied()
                    .find(|value| value.name().eq_ignore_ascii_case(name))
            }
        }
    };
}

kafka_enum!(
    /// What an ACL is about (DELEGATION_TOKEN and USER are not kept).
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How an ACL's resource name is matched.
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// What an ACL allows or denies.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// Whether an ACL allows or denies.
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// Kafka's code of "any value" in a filter (`ANY` of each enum).
pub const ANY_CODE: i8 = 1;
/// Kafka's code of the MATCH pattern filter.
pub const MATCH_CODE: i8 = 2;

impl Operation {
    /// Whether an ALLOW of `self` allows `requested` (Kafka's implied operations).
    fn allows(self, requested: Operation) -> bool {
        self == requested
            || self == Operation::All
            || (requested == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (requested == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

/// One ACL: Kafka's `AclBinding`, a resource pattern and an access control entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// An IP address or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Whether the binding's pattern covers the resource `name` of its type.
    fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            }
    }
}

/// How a filter matches resource patterns (Kafka's `PatternType` in a filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Every pattern type; a name given must be the pattern's name.
    Any,
    /// The patterns that would apply to the resource named: LITERAL of the name or `*`,
    /// PREFIXED of a prefix of it.
    Match,
    /// Patterns of this type; a name given must be the pattern's name.
    Exactly(PatternType),
}

impl PatternFilter {
    pub fn from_code(code: i8) -> Option<PatternFilter> {
        match code {
            ANY_CODE => Some(PatternFilter::Any),
            MATCH_CODE => Some(PatternFilter::Match),
            code => PatternType::from_code(code).map(PatternFilter::Exactly),
        }
    }
}

/// Kafka's `AclBindingFilter`: `None` is "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let equal_or_any = |filter: &Option<String>, value: &str| {
            filter.as_deref().is_none_or(|filter| filter == value)
        };
        let pattern_matches = match (&self.pattern, &self.resource_name) {
            (PatternFilter::Exactly(pattern), _) if *pattern != binding.pattern_type => false,
            (_, None) => true,
            (PatternFilter::Match, Some(name)) => match binding.pattern_type {
                PatternType::Literal => {
                    binding.resource_name == *name || binding.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
            },
            (_, Some(name)) => binding.resource_name == *name,
        };
        self.resource_type
            .is_none_or(|resource_type| resource_type == binding.resource_type)
            && pattern_matches
            && equal_or_any(&self.principal, &binding.principal)
            && equal_or_any(&self.host, &binding.host)
            && self
                .operation
                .is_none_or(|operation| operation == binding.operation)
            && self
                .permission
                .is_none_or(|permission| permission == binding.permission)
    }
}

/// Every ACL of the broker or cluster.
pub type AclTable = BTreeSet<AclBinding>;

/// Who asks, from where, to do what on which resource.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// `User:NAME`.
    pub principal: &'a str,
    /// The client's IP address, as text.
    pub host: &'a str,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub resource_name: &'a str,
}

/// Kafka's decision for `request` under `table` (see the module doc); super users are the
/// caller's.
pub fn authorize(table: &AclTable, request: &AccessRequest, allow_if_no_acl: bool) -> bool {
    let mut any_acl = false;
    let mut allowed = false;
    for binding in table
        .iter()
        .filter(|binding| binding.covers(request.resource_type, request.resource_name))
    {
        any_acl = true;
        let applies = (binding.principal == request.principal
            || binding.principal == WILDCARD_PRINCIPAL)
            && (binding.host == request.host || binding.host == WILDCARD);
        if !applies {
            continue;
        }
        match binding.permission {
            Permission::Deny
                if binding.operation == request.operation
                    || binding.operation == Operation::All =>
            {
                return false
            }
            Permission::Deny => {}
            Permission::Allow => allowed |= binding.operation.allows(request.operation),
        }
    }
    allowed || (!any_acl && allow_if_no_acl)
}

/// Kafka's `authorizeByResourceType` past its first step (the caller's: the request on a
/// resource of the type no ACL names, which lets super users and the no-ACL fallback through):
/// whether some resource of `resource_type` would allow `principal` from `host` to do
/// `operation`, that is an ALLOW of it (or of ALL) not cancelled by a DENY of a wildcard, of the
/// same literal name, or of a prefix of the allowed name. Implied operations do not count here,
/// as in Kafka.
pub fn authorize_by_resource_type(
    table: &AclTable,
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
) -> bool {
    let applying = table.iter().filter(|binding| {
        binding.resource_type == resource_type
            && (binding.host == host || binding.host == WILDCARD)
            && (binding.principal == principal || binding.principal == WILDCARD_PRINCIPAL)
            && (binding.operation == operation || binding.operation == Operation::All)
    });
    let mut denied: BTreeSet<(PatternType, &str)> = BTreeSet::new();
    let mut allowed: Vec<&AclBinding> = Vec::new();
    for binding in applying {
        match binding.permission {
            Permission::Deny
                if binding.pattern_type == PatternType::Literal
                    && binding.resource_name == WILDCARD =>
            {
                return false
            }
            Permission::Deny => {
                denied.insert((binding.pattern_type, binding.resource_name.as_str()));
            }
            Permission::Allow => allowed.push(binding),
        }
    }
    allowed.iter().any(|binding| {
        let name = binding.resource_name.as_str();
        if binding.pattern_type == PatternType::Literal && name == WILDCARD {
            return true;
        }
        let literal_denied = binding.pattern_type == PatternType::Literal
            && denied.contains(&(PatternType::Literal, name));
        let prefix_denied = name
            .char_indices()
            .map(|(at, character)| &name[..at + character.len_utf8()])
            .any(|prefix| denied.contains(&(PatternType::Prefixed, prefix)));
        !literal_denied && !prefix_denied
    })
}

/// One change of [`Acls::alter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclChange {
    Create(AclBinding),
    Delete(AclBinding),
}

/// The ACLs' table kind (`crate::published_table`): `acls.json`.
pub struct AclsKind;

/// The ACL file's contents besides its version.
#[derive(Serialize, Deserialize)]
pub struct AclsFile {
    acls: AclTable,
}

impl TableKind for AclsKind {
    type Table = AclTable;
    type Change = AclChange;
    type File = AclsFile;
    const FILE_NAME: &'static str = "acls.json";
    const WHAT: &'static str = "an ACL";

    fn to_file(table: &AclTable) -> AclsFile {
        AclsFile {
            acls: table.clone(),
        }
    }

    fn from_file(file: AclsFile) -> AclTable {
        file.acls
    }

    fn apply(table: &mut AclTable, changes: &[AclChange]) {
        apply(table, changes)
    }
}

/// The ACLs every shard authorizes against (shared by the shards, `Arc`).
pub type Acls = PublishedTable<AclsKind>;

impl PublishedTable<AclsKind> {
    /// See [`authorize_by_resource_type`].
    pub fn authorize_by_resource_type(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        authorize_by_resource_type(&self.load(), principal, host, operation, resource_type)
    }

    /// Kafka's decision for `request` (see [`authorize`]).
    pub fn authorize(&self, request: &AccessRequest, allow_if_no_acl: bool) -> bool {
        authorize(&self.load(), request, allow_if_no_acl)
    }
}

/// Applies `changes` to `table`, in order.
pub fn apply(table: &mut AclTable, changes: &[AclChange]) {
    for change in changes {
        match change {
            AclChange::Create(binding) => {
                table.insert(binding.clone());
            }
            AclChange::Delete(binding) => {
                table.remove(binding);
            }
        }
    }
}

#[cfg(test)]
mod tests;
