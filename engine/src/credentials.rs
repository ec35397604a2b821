//! The users' SCRAM credentials (RFC 5802), as Kafka keeps them: per user and mechanism a salt,
//! an iteration count, `StoredKey` and `ServerKey`, never the password. What they mean and how
//! they are checked is `net::sasl`'s; here they are data to keep and to publish.
//!
//! Every shard reads them on every authentication and a writer replaces them whole (an
//! AlterUserScramCredentials, the cluster's metadata log), so they are published through an
//! [`ArcSwap`], as the catalog's topics are: a read takes no lock. On a broker alone they live
//! in `credentials.json` in the data directory, replaced atomically and durably
//! (`durable_file`) before a change is published; in a cluster the metadata log is their home
//! and this table only follows it ([`Credentials::in_memory`], [`Credentials::replace_all`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::durable_file;

const CREDENTIALS_FILE: &str = "credentials.json";
const CREDENTIALS_FORMAT_VERSION: u32 = 1;

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

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a credentials file of this version: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// The credentials every shard authenticates against (shared by the shards, `Arc`).
pub struct Credentials {
    table: ArcSwap<CredentialTable>,
    /// The data directory whose file holds them (a broker alone); `None`: kept by someone else
    /// (the metadata log), in memory here.
    directory: Option<PathBuf>,
    /// Serializes writers: each change is a read, a file write and a publish.
    writing: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    version: u32,
    users: CredentialTable,
}

impl Credentials {
    /// The credentials of the broker alone whose data directory is `data_dir` (none if it has
    /// no credentials file yet).
    pub fn open(data_dir: &Path) -> Result<Credentials, CredentialsError> {
        let table = Self::read_file(data_dir)?;
        Ok(Credentials {
            table: ArcSwap::from_pointee(table),
            directory: Some(data_dir.to_owned()),
            writing: Mutex::new(()),
        })
    }

    /// Credentials kept elsewhere (a cluster's metadata log), starting with `table`.
    pub fn in_memory(table: CredentialTable) -> Credentials {
        Credentials {
            table: ArcSwap::from_pointee(table),
            directory: None,
            writing: Mutex::new(()),
        }
    }

    /// The credentials written in `data_dir` (empty if there are none).
    pub fn read_file(data_dir: &Path) -> Result<CredentialTable, CredentialsError> {
        let path = data_dir.join(CREDENTIALS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialTable::new())
            }
            Err(error) => return Err(CredentialsError::Io { path, error }),
        };
        let file: CredentialsFile =
            serde_json::from_slice(&bytes).map_err(|error| CredentialsError::Format {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if file.version != CREDENTIALS_FORMAT_VERSION {
            return Err(CredentialsError::Format {
                path,
                reason: format!("format version {}", file.version),
            });
        }
        Ok(file.users)
    }

    /// Every user's credentials as last published.
    pub fn table(&self) -> Arc<CredentialTable> {
        self.table.load_full()
    }

    /// `user`'s credential for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.table
            .load()
            .get(user)
            .and_then(|credentials| credentials.get(&mechanism))
            .cloned()
    }

    /// Applies `changes` in order (a delete of a credential that is not there changes nothing),
    /// durably on a broker alone, and publishes the result. The caller checks them first; a
    /// failed write publishes nothing.
    pub fn alter(&self, changes: &[CredentialChange]) -> Result<(), CredentialsError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut table = CredentialTable::clone(&self.table.load());
        apply(&mut table, changes);
        if let Some(directory) = &self.directory {
            write_file(directory, &table)?;
        }
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// Publishes `table` as every user's credentials (a cluster's image, replayed or changed).
    pub fn replace_all(&self, table: CredentialTable) {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.table.store(Arc::new(table));
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

/// Writes `table` as the credentials file of `data_dir`, atomically and durably (also the
/// offline `ferrite user set`, before a broker starts).
pub fn write_file(data_dir: &Path, table: &CredentialTable) -> Result<(), CredentialsError> {
    let file = CredentialsFile {
        version: CREDENTIALS_FORMAT_VERSION,
        users: table.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("credentials serialize to JSON");
    durable_file::replace_file_durably(data_dir, CREDENTIALS_FILE, &bytes).map_err(|error| {
        CredentialsError::Io {
            path: data_dir.join(CREDENTIALS_FILE),
            error,
        }
    })
}

/// Removes the credentials file of `data_dir` durably (a cluster's broker, once the metadata
/// log holds what `ferrite user set` wrote there before the first start).
pub fn remove_file(data_dir: &Path) -> Result<(), CredentialsError> {
    let io_error = |error| CredentialsError::Io {
        path: data_dir.join(CREDENTIALS_FILE),
        error,
    };
    std::fs::remove_file(data_dir.join(CREDENTIALS_FILE)).map_err(io_error)?;
    std::fs::File::open(data_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error)
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
        let text = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        assert!(text.contains("SCRAM-SHA-512"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), b"{\"version\":1,\"us").unwrap();
        assert!(matches!(
            Credentials::open(dir.path()),
            Err(CredentialsError::Format { .. })
        ));
    }
}
