//! The users' SCRAM credentials (RFC 5802), as Kafka keeps them: per user and mechanism a salt,
//! an iteration count, `StoredKey` and `ServerKey`, never the password. What they mean and how
//! they are checked is `net::sasl`'s; here they are data to keep and to publish.
//!
//! Every shard reads them on every authentication and a writer replaces them whole (an
//! AlterUserScramCredentials, the cluster's metadata log): a `crate::published_table`, kept in
//! `credentials.json` on a broker alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::published_table::{PublishedTable, TableKind};

/// The hash a SCRAM credential is made with, as Kafka names and numbers them
/// (`org.apache.kafka.clients.admin.ScramMechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        Self::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }

    /// Kafka's number of the mechanism on the wire (0 is UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(kafka_type: i8) -> Option<ScramMechanism> {
        Self::ALL
            .into_iter()
            .find(|mechanism| mechanism.kafka_type() == kafka_type)
    }
}

/// One user's credential for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "hex_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub server_key: Vec<u8>,
}

/// A user's credentials, one per mechanism it has.
pub type UserCredentials = BTreeMap<ScramMechanism, ScramCredential>;

/// Every user's credentials, by user name.
pub type CredentialTable = BTreeMap<String, UserCredentials>;

/// One change of [`Credentials::alter`].
#[derive(Debug, Clone)]
pub enum CredentialChange {
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

/// The credentials' table kind (`crate::published_table`): `credentials.json`.
pub struct CredentialsKind;

/// The credentials file's contents besides its version.
#[derive(Serialize, Deserialize)]
pub struct CredentialsFile {
    users: CredentialTable,
}

impl TableKind for CredentialsKind {
    type Table = CredentialTable;
    type Change = CredentialChange;
    type File = CredentialsFile;
    const FILE_NAME: &'static str = "credentials.json";
    const WHAT: &'static str = "a credentials";

    fn to_file(table: &CredentialTable) -> CredentialsFile {
        CredentialsFile {
            users: table.clone(),
        }
    }

    fn from_file(file: CredentialsFile) -> CredentialTable {
        file.users
    }

    fn apply(table: &mut CredentialTable, changes: &[CredentialChange]) {
        apply(table, changes)
    }
}

/// The credentials every shard authenticates against (shared by the shards, `Arc`).
pub type Credentials = PublishedTable<CredentialsKind>;

impl PublishedTable<CredentialsKind> {
    /// `user`'s credential for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.load()
            .get(user)
            .and_then(|credentials| credentials.get(&mechanism))
            .cloned()
    }
}

/// Applies `changes` to `table`, in order; users left without a credential go.
pub fn apply(table: &mut CredentialTable, changes: &[CredentialChange]) {
    for change in changes {
        match change {
            CredentialChange::Upsert {
                user,
                mechanism,
                credential,
            } => {
                table
                    .entry(user.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
            }
            CredentialChange::Delete { user, mechanism } => {
                if let Some(credentials) = table.get_mut(user) {
                    credentials.remove(mechanism);
                    if credentials.is_empty() {
                        table.remove(user);
                    }
                }
            }
        }
    }
}

/// Bytes as lower-case hexadecimal in the file.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        serializer.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(deserializer)?;
        if hex.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hexadecimal digits"));
        }
        (0..hex.len())
            .step_by(2)
            .map(|at| {
                hex.get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hexadecimal"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::published_table::TableFileError;

    fn credential(seed: u8) -> ScramCredential {
        ScramCredential {
            salt: vec![seed; 16],
            iterations: 4096,
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    #[test]
    fn changes_survive_a_reopen_and_a_user_without_credentials_goes() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials::open(dir.path()).unwrap();
        assert!(credentials.table().is_empty());
        credentials
            .alter(&[
                CredentialChange::Upsert {
                    user: "alice".into(),
                    mechanism: ScramMechanism::Sha256,
                    credential: credential(1),
                },
                CredentialChange::Upsert {
                    user: "alice".into(),
                    mechanism: ScramMechanism::Sha512,
                    credential: credential(2),
                },
                CredentialChange::Upsert {
                    user: "bob".into(),
                    mechanism: ScramMechanism::Sha256,
                    credential: credential(3),
                },
            ])
            .unwrap();
        credentials
            .alter(&[CredentialChange::Delete {
                user: "bob".into(),
                mechanism: ScramMechanism::Sha256,
            }])
            .unwrap();
        let reopened = Credentials::open(dir.path()).unwrap();
        assert_eq!(reopened.table(), credentials.table());
        assert_eq!(
            reopened.get("alice", ScramMechanism::Sha512),
            Some(credential(2))
        );
        assert!(!reopened.table().contains_key("bob"));
        let text = std::fs::read_to_string(dir.path().join(CredentialsKind::FILE_NAME)).unwrap();
        assert!(text.contains("SCRAM-SHA-512"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CredentialsKind::FILE_NAME),
            b"{\"version\":1,\"us",
        )
        .unwrap();
        assert!(matches!(
            Credentials::open(dir.path()),
            Err(TableFileError::Format { .. })
        ));
    }
}
