//! The cluster's id: drawn once for the life of a cluster, kept in every broker's data
//! directory (`cluster.id`, as Kafka keeps it in `meta.properties`), said in every inter-broker
//! hello (a broker of another cluster is refused) and answered in Metadata.
//!
//! How the brokers of a new cluster agree on it: none draws one on its own. The first
//! controller leader finds no id in the metadata image and proposes one
//! ([`MetadataRecord::ClusterId`](crate::metadata::MetadataRecord)); the first such record
//! committed wins (applying a second changes nothing), and each broker adopts the id the log
//! holds and stores it here. Until then a broker's hellos carry no id, which its peers accept
//! (when a cluster secret is configured, only from a peer that proved it holds the secret). A
//! data directory from before cluster ids has no file either and adopts the same way; one whose
//! stored id differs from the log's keeps its own, and its peers refuse it.
//!
//! A broker alone draws its id at its first start.
//!
//! The id is Kafka's form: a random (version 4) UUID in URL-safe base64 without padding, 22
//! characters.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The file in the data directory.
const CLUSTER_ID_FILE: &str = "cluster.id";

/// Characters of an id.
pub const CLUSTER_ID_CHARS: usize = 22;

#[derive(Debug, thiserror::Error)]
pub enum ClusterIdError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds {found:?}, not a cluster id (22 characters of URL-safe base64)")]
    Invalid { path: PathBuf, found: String },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no randomness for a cluster id: {0}")]
    Random(getrandom::Error),
}

/// A new random id.
pub fn generate() -> Result<String, ClusterIdError> {
    let mut uuid = [0u8; 16];
    getrandom::getrandom(&mut uuid).map_err(ClusterIdError::Random)?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // variant 1
    Ok(URL_SAFE_NO_PAD.encode(uuid))
}

/// Whether `id` has the form of an id (what a record or a file may be trusted to hold).
pub fn is_valid(id: &str) -> bool {
    id.len() == CLUSTER_ID_CHARS
        && URL_SAFE_NO_PAD
            .decode(id)
            .is_ok_and(|bytes| bytes.len() == 16)
}

/// The id stored in `data_dir`, if one is.
pub fn read_stored(data_dir: &Path) -> Result<Option<String>, ClusterIdError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ClusterIdError::Read { path, error }),
    };
    let id = text.trim();
    if !is_valid(id) {
        return Err(ClusterIdError::Invalid {
            path,
            found: id.chars().take(64).collect(),
        });
    }
    Ok(Some(id.to_string()))
}

/// Stores `id` in `data_dir`, durably (written aside, synced, renamed into place).
pub fn store(data_dir: &Path, id: &str) -> Result<(), ClusterIdError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let written = (|| {
        let aside = data_dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    })();
    written.map_err(|error| ClusterIdError::Write { path, error })
}

/// The id of a broker alone: the stored one, else one drawn now and stored.
pub fn stored_or_new(data_dir: &Path) -> Result<String, ClusterIdError> {
    if let Some(id) = read_stored(data_dir)? {
        return Ok(id);
    }
    let id = generate()?;
    store(data_dir, &id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_drawn_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_stored(dir.path()).unwrap(), None);
        let id = stored_or_new(dir.path()).unwrap();
        assert!(is_valid(&id), "{id}");
        assert_eq!(stored_or_new(dir.path()).unwrap(), id);
        assert_ne!(generate().unwrap(), id);
        std::fs::write(dir.path().join(CLUSTER_ID_FILE), "ferrite\n").unwrap();
        assert!(matches!(
            read_stored(dir.path()),
            Err(ClusterIdError::Invalid { .. })
        ));
    }
}
