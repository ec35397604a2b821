//! A table every shard reads on every request and a writer replaces whole: the users' SCRAM
//! credentials (`crate::credentials`), the ACLs (`crate::acls`), the client quotas
//! (`crate::quotas`). One shape for the three, since what differs is only the table and how a
//! change applies to it ([`TableKind`]).
//!
//! The table is published through an [`ArcSwap`], as the catalog's topics are: a read takes no
//! lock. On a broker alone it lives in a JSON file of the data directory (`{"version": 1, ...}`),
//! replaced atomically and durably (`durable_file`) before a change is published, so a client
//! told "done" finds it after a crash; in a cluster the metadata log is its home and the table
//! only follows it ([`PublishedTable::in_memory`], [`PublishedTable::replace_all`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::durable_file;

/// The version every table file is written with; a file of another is refused.
const FORMAT_VERSION: u32 = 1;

/// What one kind of published table is: its contents, its changes and its file.
pub trait TableKind {
    type Table: Clone + Default;
    type Change;
    /// The file's contents besides the version (a struct naming its one field, flattened into
    /// the file's object).
    type File: Serialize + DeserializeOwned;
    /// The file's name in the data directory.
    const FILE_NAME: &'static str;
    /// What the file holds, as error messages name it ("credentials", "ACL", "quotas").
    const WHAT: &'static str;

    fn to_file(table: &Self::Table) -> Self::File;
    fn from_file(file: Self::File) -> Self::Table;
    /// Applies `changes` to `table`, in order.
    fn apply(table: &mut Self::Table, changes: &[Self::Change]);
}

/// Why a table file cannot be read or written.
#[derive(Debug, Error)]
pub enum TableFileError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not {what} file of this version: {reason}")]
    Format {
        path: PathBuf,
        /// "a credentials", "an ACL", ...
        what: String,
        reason: String,
    },
}

/// A table of kind `K`, shared by the shards (`Arc`).
pub struct PublishedTable<K: TableKind> {
    table: ArcSwap<K::Table>,
    /// The data directory whose file holds it (a broker alone); `None`: kept by someone else
    /// (the metadata log), in memory here.
    directory: Option<PathBuf>,
    /// Serializes writers: each change is a read, a file write and a publish.
    writing: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct VersionedFile<F> {
    version: u32,
    #[serde(flatten)]
    contents: F,
}

impl<K: TableKind> PublishedTable<K> {
    /// The table of the broker alone whose data directory is `data_dir` (empty if it has no
    /// file yet).
    pub fn open(data_dir: &Path) -> Result<Self, TableFileError> {
        let table = read_file::<K>(data_dir)?;
        Ok(PublishedTable {
            table: ArcSwap::from_pointee(table),
            directory: Some(data_dir.to_owned()),
            writing: Mutex::new(()),
        })
    }

    /// A table kept elsewhere (a cluster's metadata log), starting with `table`.
    pub fn in_memory(table: K::Table) -> Self {
        PublishedTable {
            table: ArcSwap::from_pointee(table),
            directory: None,
            writing: Mutex::new(()),
        }
    }

    /// The table written in `data_dir` (empty if there is no file), without publishing it.
    pub fn read_file(data_dir: &Path) -> Result<K::Table, TableFileError> {
        read_file::<K>(data_dir)
    }

    /// The table as last published.
    pub fn table(&self) -> Arc<K::Table> {
        self.table.load_full()
    }

    /// The table as last published, for a read that keeps no reference.
    pub fn load(&self) -> Guard<Arc<K::Table>> {
        self.table.load()
    }

    /// Applies `changes` in order, durably on a broker alone, and publishes the result. The
    /// caller checks them first; a failed write publishes nothing.
    pub fn alter(&self, changes: &[K::Change]) -> Result<(), TableFileError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut table = K::Table::clone(&self.table.load());
        K::apply(&mut table, changes);
        if let Some(directory) = &self.directory {
            write_file::<K>(directory, &table)?;
        }
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// Publishes `table` whole (a cluster's image, replayed or changed).
    pub fn replace_all(&self, table: K::Table) {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.table.store(Arc::new(table));
    }
}

fn file_path<K: TableKind>(data_dir: &Path) -> PathBuf {
    data_dir.join(K::FILE_NAME)
}

/// The table written in `data_dir` (empty if there is no file).
fn read_file<K: TableKind>(data_dir: &Path) -> Result<K::Table, TableFileError> {
    let path = file_path::<K>(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(K::Table::default())
        }
        Err(error) => return Err(TableFileError::Io { path, error }),
    };
    let format_error = |path: PathBuf, reason: String| TableFileError::Format {
        path,
        what: K::WHAT.to_owned(),
        reason,
    };
    let file: VersionedFile<K::File> = serde_json::from_slice(&bytes)
        .map_err(|error| format_error(path.clone(), error.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(format_error(
            path,
            format!("format version {}", file.version),
        ));
    }
    Ok(K::from_file(file.contents))
}

/// Writes `table` as the file of `data_dir`, atomically and durably (also the offline `ferrite
/// user set`, before a broker starts).
pub fn write_file<K: TableKind>(data_dir: &Path, table: &K::Table) -> Result<(), TableFileError> {
    let file = VersionedFile {
        version: FORMAT_VERSION,
        contents: K::to_file(table),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("a table serializes to JSON");
    durable_file::replace_file_durably(data_dir, K::FILE_NAME, &bytes).map_err(|error| {
        TableFileError::Io {
            path: file_path::<K>(data_dir),
            error,
        }
    })
}

/// Removes the file of `data_dir` durably (a cluster's broker, once the metadata log holds what
/// was written there before the first start).
pub fn remove_file<K: TableKind>(data_dir: &Path) -> Result<(), TableFileError> {
    let path = file_path::<K>(data_dir);
    let io_error = |error| TableFileError::Io {
        path: path.clone(),
        error,
    };
    std::fs::remove_file(&path).map_err(io_error)?;
    std::fs::File::open(data_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error)
}
