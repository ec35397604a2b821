//! The broker's catalog: which topics exist (name, id, partition count, configuration
//! overrides) and the producer-id allocator, persisted in one file of the data directory.
//!
//! Topics change rarely and are read on every request, so the catalog is the one piece of state
//! the shards share: writers take a mutex, write the file (temporary file, `fsync`, rename,
//! `fsync` of the directory) and publish a new immutable [`TopicTable`] through an [`ArcSwap`];
//! readers ([`Catalog::topics`], from every shard) load it without a lock, so the request path never
//! waits for a writer.
//!
//! Producer ids are handed out from blocks: the file records the end of the last reserved
//! block, so ids stay unique across restarts (a restart skips what was left of the block).
//! This allocator serves a broker alone; in a cluster the controller hands out the blocks
//! (`replication::controller`), of the same size.
//!
//! File writes happen on the calling shard's thread; they are admin operations (create, delete,
//! a new producer-id block per [`PRODUCER_ID_BLOCK`] producers), never the data path.
//!
//! A topic's overrides are altered ([`Catalog::alter_topic_configs`]) by a function of the current
//! ones run under the catalog's mutex, so concurrent alterations of one topic serialize and none is
//! lost.
//!
//! The catalog is the only creator of partition directories: it makes them (empty, clearing
//! anything a deleted topic of the same name left) before it publishes a topic or its new
//! partitions, and makes missing ones again when it opens (the data directory listed once, not a
//! `mkdir` of each). A shard opens a partition's log only if its directory exists, so a request
//! racing a topic's deletion gets UNKNOWN_TOPIC_OR_PARTITION instead of bringing the partition
//! back. Removing a partition closes its log even while another task (a long poll) still holds it
//! (`PartitionLog::close_while_held`): its writes finish and the journal forgets it before the
//! directory goes, so no queued segment write reopens a file unlinked under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::durable_file;

/// Producer ids reserved (and persisted) at a time: Kafka's block size (KIP-730).
pub const PRODUCER_ID_BLOCK: u32 = 1000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have here.
pub const PARTITIONS_MAX: u32 = 10_000;

const CATALOG_FILE: &str = "catalog.json";
const CATALOG_FORMAT_VERSION: u32 = 1;

/// The internal topic that holds the consumer groups' state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The settings [`OFFSETS_TOPIC`] is made with (Kafka's): compacted, so the log keeps each
/// group's and each committed offset's latest record (and its tombstone for a while), which is
/// all a coordinator's load needs; compaction alone, so retention never deletes the groups'
/// state; segments of Kafka's `offsets.topic.segment.bytes`. By `net`'s groups on a broker
/// alone, through the controller in a cluster.
const OFFSETS_TOPIC_CONFIGS: [(&str, &str); 2] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "104857600"),
];

/// The configuration overrides [`OFFSETS_TOPIC`] is created with ([`OFFSETS_TOPIC_CONFIGS`]).
pub fn offsets_topic_configs() -> BTreeMap<String, String> {
    OFFSETS_TOPIC_CONFIGS
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The internal topic that holds the transaction coordinators' state (`net::transactions`).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The configuration overrides [`TRANSACTION_STATE_TOPIC`] is created with: compacted (each
/// transactional id's latest record is all a load needs), Kafka's
/// `transaction.state.log.segment.bytes`.
pub fn transaction_state_topic_configs() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// The cluster's metadata log (one partition, 0): a directory beside the partitions', but the
/// controller's own log, not one of the shards' partitions (no retention, no cleaner, no
/// clients).
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Whether `name` is one of the broker's own topics, which clients may read but not write,
/// delete, trim or grow.
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// A partition's directory under the data directory, as Kafka names it: `<topic>-<partition>`.
pub fn partition_directory_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// The names of the directories in `dir` (none if it does not exist), symbolic links to one
/// included: from the listing's entry types, with a `stat` only of links. Start-up looks up
/// every partition's directory in it instead of asking the file system about each.
pub(crate) fn directory_names(dir: &Path) -> std::io::Result<std::collections::HashSet<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(error) => return Err(error),
    };
    let mut names = std::collections::HashSet::new();
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() || (kind.is_symlink() && entry.path().is_dir()) {
            names.extend(entry.file_name().into_string().ok());
        }
    }
    Ok(names)
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    /// Kafka's topic id (a UUID), fixed at creation.
    pub id: [u8; 16],
    pub partitions: u32,
    /// Topic-level configuration overrides (`retention.ms`, ...), as given at creation or
    /// last altered.
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// Whether `partition` (as a request names it, possibly negative) is one of the topic's.
    pub fn has_partition(&self, partition: i32) -> bool {
        u32::try_from(partition).is_ok_and(|partition| partition < self.partitions)
    }
}

/// An immutable snapshot of every topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicTable {
    topics: BTreeMap<String, Arc<Topic>>,
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&Arc<Topic>> {
        self.topics.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Topic>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn by_id(&self, id: &[u8; 16]) -> Option<&Arc<Topic>> {
        self.topics.values().find(|topic| &topic.id == id)
    }
}

/// Why a catalog change was refused. The network layer maps each to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid partition count {count}: {reason}")]
    InvalidPartitions { count: i64, reason: String },
    #[error("cannot write the catalog {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("the catalog {path} is unreadable: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("topic '{0}' is internal to the broker")]
    InternalTopic(String),
    /// Topic configuration overrides that are refused; the message says which and why.
    #[error("{0}")]
    InvalidConfig(String),
}

impl CatalogError {
    /// Turns a failed file operation on `path` into [`CatalogError::Io`].
    fn io(path: &Path) -> impl Fn(std::io::Error) -> CatalogError + '_ {
        move |error| CatalogError::Io {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    format_version: u32,
    topics: Vec<Topic>,
    /// One past the last producer id ever reserved.
    producer_id_reserved_end: i64,
}

/// What writers change under the catalog's mutex besides the published table (which they
/// replace only while holding it, so changes never interleave).
struct CatalogState {
    producer_id_next: i64,
    producer_id_reserved_end: i64,
}

fn topic_named(table: &TopicTable, name: &str) -> Result<Arc<Topic>, CatalogError> {
    table
        .topics
        .get(name)
        .cloned()
        .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))
}

/// The shared catalog. `Send + Sync`; every shard holds an `Arc` of it.
pub struct Catalog {
    data_dir: PathBuf,
    path: PathBuf,
    state: Mutex<CatalogState>,
    /// The topics as they are now; replaced whole, with `state` locked.
    table: ArcSwap<TopicTable>,
}

impl Catalog {
    /// Opens the catalog of `data_dir`, creating an empty one if there is none.
    pub fn open(data_dir: &Path) -> Result<Catalog, CatalogError> {
        let path = data_dir.join(CATALOG_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CatalogFile =
                    serde_json::from_slice(&bytes).map_err(|error| CatalogError::Corrupt {
                        path: path.clone(),
                        message: error.to_string(),
                    })?;
                if file.format_version != CATALOG_FORMAT_VERSION {
                    return Err(CatalogError::Corrupt {
                        path,
                        message: format!("unknown format version {}", file.format_version),
                    });
                }
                file
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => CatalogFile {
                format_version: CATALOG_FORMAT_VERSION,
                topics: Vec::new(),
                producer_id_reserved_end: 0,
            },
            Err(error) => {
                return Err(CatalogError::Corrupt {
                    path,
                    message: error.to_string(),
                })
            }
        };
        let topics: BTreeMap<String, Arc<Topic>> = file
            .topics
            .into_iter()
            .map(|topic| (topic.name.clone(), Arc::new(topic)))
            .collect();
        let io_error = CatalogError::io(data_dir);
        // A partition directory deleted by hand (or never made) is made again, empty: the
        // catalog says the partition exists. The directory is listed once, and only missing
        // ones are made: a `mkdir` of each that failed with EEXIST (and the `stat` after it)
        // was 20 000 system calls at every start with 10 000 partitions.
        let existing = directory_names(data_dir).map_err(&io_error)?;
        for topic in topics.values() {
            for partition in 0..topic.partitions {
                let name = partition_directory_name(&topic.name, partition);
                if !existing.contains(&name) {
                    std::fs::create_dir_all(data_dir.join(name)).map_err(&io_error)?;
                }
            }
        }
        Ok(Catalog {
            data_dir: data_dir.to_path_buf(),
            path,
            state: Mutex::new(CatalogState {
                // Whatever was left of the last block before a restart is skipped.
                producer_id_next: file.producer_id_reserved_end,
                producer_id_reserved_end: file.producer_id_reserved_end,
            }),
            table: ArcSwap::from_pointee(TopicTable { topics }),
        })
    }

    /// The current topics.
    pub fn topics(&self) -> Arc<TopicTable> {
        self.table.load_full()
    }

    /// Creates a topic; returns it. `validate_only` checks without creating (CreateTopics'
    /// flag).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i64,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CatalogError> {
        self.create_topic_as(name, new_topic_id(name), partitions, configs, validate_only)
    }

    /// Creates a topic with the id another broker gave it (a cluster's brokers mirror the
    /// topics of the metadata log, ids included).
    pub fn create_topic_as(
        &self,
        name: &str,
        id: [u8; 16],
        partitions: i64,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CatalogError> {
        validate_topic_name(name)?;
        let partitions = validate_partition_count(partitions)?;
        let mut state = self.lock();
        if self.table.load().topics.contains_key(name) {
            return Err(CatalogError::TopicExists(name.to_owned()));
        }
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            id,
            partitions,
            configs,
        });
        if validate_only {
            return Ok(topic);
        }
        self.create_partition_directories(name, 0..partitions)?;
        let mut table = (**self.table.load()).clone();
        table.topics.insert(name.to_owned(), topic.clone());
        self.publish(&mut state, table)?;
        Ok(topic)
    }

    /// Makes the partitions' directories, empty: whatever a directory of that name held
    /// belonged to a deleted topic (a crash between the catalog change and the removal).
    fn create_partition_directories(
        &self,
        topic: &str,
        partitions: std::ops::Range<u32>,
    ) -> Result<(), CatalogError> {
        let io_error = CatalogError::io(&self.data_dir);
        for partition in partitions {
            let dir = self
                .data_dir
                .join(partition_directory_name(topic, partition));
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => eprintln!(
                    "ferrite: removed {}, left over from a deleted topic",
                    dir.display()
                ),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
            std::fs::create_dir_all(&dir).map_err(&io_error)?;
        }
        Ok(())
    }

    /// Makes the directory of a partition of `topic` again, empty, if it is missing: in a
    /// cluster a broker removes its copy of a partition moved away from it, and makes it again
    /// when the partition moves back.
    pub fn restore_partition_directory(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(), CatalogError> {
        topic_named(&self.table.load(), topic)?;
        let dir = self
            .data_dir
            .join(partition_directory_name(topic, partition));
        std::fs::create_dir_all(dir).map_err(CatalogError::io(&self.data_dir))
    }

    /// Removes a topic from the catalog and returns it; the caller removes its partitions.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<Topic>, CatalogError> {
        refuse_internal(name)?;
        let mut state = self.lock();
        let mut table = (**self.table.load()).clone();
        let topic = table
            .topics
            .remove(name)
            .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))?;
        self.publish(&mut state, table)?;
        Ok(topic)
    }

    /// Grows a topic to `partitions` partitions (Kafka never shrinks one).
    pub fn add_partitions(
        &self,
        name: &str,
        partitions: i64,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CatalogError> {
        refuse_internal(name)?;
        let mut state = self.lock();
        let current = topic_named(&self.table.load(), name)?;
        let count = validate_partition_count(partitions)?;
        if count <= current.partitions {
            return Err(CatalogError::InvalidPartitions {
                count: partitions,
                reason: format!(
                    "topic '{name}' already has {} partitions; the count can only grow",
                    current.partitions
                ),
            });
        }
        let grown = Arc::new(Topic {
            partitions: count,
            ..(*current).clone()
        });
        if validate_only {
            return Ok(grown);
        }
        self.create_partition_directories(name, current.partitions..count)?;
        let mut table = (**self.table.load()).clone();
        table.topics.insert(name.to_owned(), grown.clone());
        self.publish(&mut state, table)?;
        Ok(grown)
    }

    /// Replaces a topic's configuration overrides with what `change` makes of the current
    /// ones, and returns the topic as it is then; `change` says why not with `Err` (returned as
    /// [`CatalogError::InvalidConfig`]). It runs under the catalog's lock, so concurrent
    /// alterations of one topic apply one after the other and none is lost. `validate_only`
    /// checks without changing anything (AlterConfigs' flag). The caller brings the open logs
    /// up to date.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    ) -> Result<Arc<Topic>, CatalogError> {
        refuse_internal(name)?;
        self.alter_configs(name, validate_only, change)
    }

    /// The broker's own change to an internal topic's overrides, which clients may not
    /// alter: brings a topic made by an older version up to the settings this one gives it.
    pub fn alter_internal_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    ) -> Result<Arc<Topic>, CatalogError> {
        assert!(is_internal_topic(name), "only for internal topics");
        self.alter_configs(name, false, change)
    }

    fn alter_configs(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    ) -> Result<Arc<Topic>, CatalogError> {
        let mut state = self.lock();
        let current = topic_named(&self.table.load(), name)?;
        let altered = Arc::new(Topic {
            configs: change(&current.configs).map_err(CatalogError::InvalidConfig)?,
            ..(*current).clone()
        });
        if validate_only || altered.configs == current.configs {
            return Ok(altered);
        }
        let mut table = (**self.table.load()).clone();
        table.topics.insert(name.to_owned(), altered.clone());
        self.publish(&mut state, table)?;
        Ok(altered)
    }

    /// A producer id never handed out before, on this broker, across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64, CatalogError> {
        let mut state = self.lock();
        if state.producer_id_next == state.producer_id_reserved_end {
            let reserved_end = state.producer_id_reserved_end + i64::from(PRODUCER_ID_BLOCK);
            self.write_file(&self.table.load(), reserved_end)?;
            state.producer_id_reserved_end = reserved_end;
        }
        let id = state.producer_id_next;
        state.producer_id_next += 1;
        Ok(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CatalogState> {
        // A panic while holding the lock cannot leave a half-made change: the table is
        // replaced whole, after the file was written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: &mut CatalogState, table: TopicTable) -> Result<(), CatalogError> {
        self.write_file(&table, state.producer_id_reserved_end)?;
        self.table.store(Arc::new(table));
        Ok(())
    }

    fn write_file(
        &self,
        table: &TopicTable,
        producer_id_reserved_end: i64,
    ) -> Result<(), CatalogError> {
        let file = CatalogFile {
            format_version: CATALOG_FORMAT_VERSION,
            topics: table
                .topics
                .values()
                .map(|topic| (**topic).clone())
                .collect(),
            producer_id_reserved_end,
        };
        let io_error = CatalogError::io(&self.path);
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|error| io_error(std::io::Error::from(error)))?;
        let directory = self.path.parent().unwrap_or(Path::new("."));
        durable_file::replace_file_durably(directory, CATALOG_FILE, &bytes).map_err(&io_error)
    }
}

/// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), CatalogError> {
    let invalid = |reason| CatalogError::InvalidTopicName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid("it is longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

pub fn refuse_internal(name: &str) -> Result<(), CatalogError> {
    if is_internal_topic(name) {
        return Err(CatalogError::InternalTopic(name.to_owned()));
    }
    Ok(())
}

/// A topic's partition count as requested: 1 to [`PARTITIONS_MAX`]. Also the metadata
/// controller's check (`replication::metadata`), so both refuse the same counts.
pub fn validate_partition_count(count: i64) -> Result<u32, CatalogError> {
    if count < 1 || count > i64::from(PARTITIONS_MAX) {
        return Err(CatalogError::InvalidPartitions {
            count,
            reason: format!("must be between 1 and {PARTITIONS_MAX}"),
        });
    }
    Ok(count as u32)
}

/// A version-4-shaped UUID from the clock, the process, a counter and the name: unique enough
/// for telling a re-created topic from its predecessor, which is all Kafka uses it for.
fn new_topic_id(name: &str) -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut high = nanos ^ (u64::from(std::process::id()) << 32);
    let mut low = COUNTER.fetch_add(1, Ordering::Relaxed);
    for byte in name.bytes() {
        low = (low ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    high = high.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_producer_ids_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let orders = catalog
            .create_topic("orders", 3, BTreeMap::new(), false)
            .unwrap();
        catalog
            .create_topic("dry-run", 1, BTreeMap::new(), true)
            .unwrap();
        let first_id = catalog.allocate_producer_id().unwrap();
        assert_eq!(catalog.allocate_producer_id().unwrap(), first_id + 1);
        assert_eq!(
            catalog.create_topic("orders", 1, BTreeMap::new(), false),
            Err(CatalogError::TopicExists("orders".into()))
        );
        drop(catalog);

        for partition in 0..3 {
            assert!(dir.path().join(format!("orders-{partition}")).is_dir());
        }
        assert!(
            !dir.path().join("dry-run-0").exists(),
            "validate-only made nothing"
        );
        std::fs::remove_dir_all(dir.path().join("orders-1")).unwrap();
        let reopened = Catalog::open(dir.path()).unwrap();
        assert!(dir.path().join("orders-1").is_dir(), "made again on open");
        let topics = reopened.topics();
        assert_eq!(topics.len(), 1, "validate-only created nothing");
        assert_eq!(**topics.get("orders").unwrap(), *orders);
        assert!(
            reopened.allocate_producer_id().unwrap() > first_id + 1,
            "ids are never reused across restarts"
        );
    }

    #[test]
    fn views_see_changes_and_partitions_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(dir.path()).unwrap());
        let view = catalog.clone();
        assert!(view.topics().is_empty());
        catalog
            .create_topic("t", 2, BTreeMap::new(), false)
            .unwrap();
        assert_eq!(view.topics().get("t").unwrap().partitions, 2);
        assert!(matches!(
            catalog.add_partitions("t", 2, false),
            Err(CatalogError::InvalidPartitions { .. })
        ));
        catalog.add_partitions("t", 5, false).unwrap();
        assert_eq!(view.topics().get("t").unwrap().partitions, 5);
        let id = view.topics().get("t").unwrap().id;
        assert_eq!(view.topics().by_id(&id).unwrap().name, "t");
        catalog.delete_topic("t").unwrap();
        assert!(view.topics().get("t").is_none());
        assert_eq!(
            catalog.delete_topic("t"),
            Err(CatalogError::UnknownTopic("t".into()))
        );
    }

    #[test]
    fn altered_configs_are_published_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(dir.path()).unwrap());
        let view = catalog.clone();
        let initial: BTreeMap<String, String> =
            [("retention.ms".to_owned(), "1000".to_owned())].into();
        catalog
            .create_topic("t", 1, initial.clone(), false)
            .unwrap();
        let with_segment_ms = |configs: &BTreeMap<String, String>| {
            let mut configs = configs.clone();
            configs.insert("segment.ms".into(), "5000".into());
            Ok(configs)
        };
        let checked = catalog
            .alter_topic_configs("t", true, with_segment_ms)
            .unwrap();
        assert_eq!(checked.configs.len(), 2, "what it would become");
        assert_eq!(
            view.topics().get("t").unwrap().configs,
            initial,
            "unchanged"
        );
        catalog
            .alter_topic_configs("t", false, with_segment_ms)
            .unwrap();
        assert_eq!(
            view.topics().get("t").unwrap().configs["segment.ms"],
            "5000"
        );
        assert_eq!(
            catalog.alter_topic_configs("t", false, |_| Err("no".into())),
            Err(CatalogError::InvalidConfig("no".into()))
        );
        assert_eq!(
            catalog.alter_topic_configs("missing", false, |configs| Ok(configs.clone())),
            Err(CatalogError::UnknownTopic("missing".into()))
        );
        assert_eq!(
            catalog.alter_topic_configs(OFFSETS_TOPIC, false, |configs| Ok(configs.clone())),
            Err(CatalogError::InternalTopic(OFFSETS_TOPIC.into()))
        );
        drop((view, catalog));
        let reopened = Catalog::open(dir.path()).unwrap();
        let topics = reopened.topics();
        let configs = &topics.get("t").unwrap().configs;
        assert_eq!(
            (
                configs["retention.ms"].as_str(),
                configs["segment.ms"].as_str()
            ),
            ("1000", "5000")
        );
    }

    #[test]
    fn names_and_counts_follow_kafkas_rules() {
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "orders.v2", "A_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good:?}");
        }
        assert!(validate_partition_count(0).is_err());
        assert!(validate_partition_count(-1).is_err());
        assert!(validate_partition_count(10_001).is_err());
        assert_eq!(validate_partition_count(7), Ok(7));
    }

    #[test]
    fn a_garbled_catalog_is_an_error_not_an_empty_broker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CATALOG_FILE), b"{not json").unwrap();
        assert!(matches!(
            Catalog::open(dir.path()),
            Err(CatalogError::Corrupt { .. })
        ));
    }
}
