//! A partition directory listed once when its log opens, and the reads of the small files the
//! listing has (the producer snapshot, the offset files). Kept apart from recovery because it
//! is the one place the open touches the directory by name: at 10 000 partitions after a
//! crash, trying each file by name was five or six failed opens per partition.
//!
//! # Files in a partition directory
//! `<base offset, 20 digits>.log` / `.index` / `.timeindex` per segment; `log-start-offset`;
//! `compacted-end-offset` (once cleaned or repaired); `recovery-point`; `clean-shutdown` (from a
//! clean close until the files next change); `producer-state`; `leader-epochs`; `*.tmp` leftovers
//! of an interrupted atomic replace; a cleaning's `<base>.log.cleaned` (deleted on open) or
//! `<base>.<end>.log.swap` (its swap finished on open); and a replica's `raft-state.json`. In a
//! cluster, `<data-dir>/raft-votes/` holds the shards' vote logs (`base`, `shard-N`; see
//! `replication::votes`).

use std::path::Path;

use super::producers::{ProducerLimits, ProducerTable};
use super::recovery::segment_base_offset_of;
use super::PRODUCER_STATE_FILE;
use crate::error::LogError;

/// The names in a partition directory, listed once when its log opens: which of its small
/// files (clean-shutdown marker, log start, compacted end, recovery point, producer snapshot,
/// leader epochs, segment indexes) exist. The open reads those that do, instead of trying
/// each by name: at 10 000 partitions opened after a crash, the failed opens by name were
/// five or six per partition. Nothing else works in the directory while its log opens.
pub(super) struct Listing {
    names: std::collections::BTreeSet<String>,
}

impl Listing {
    /// Lists `dir`, creating it (with its parents) if it does not exist.
    pub(super) fn of_creating(dir: &Path) -> Result<Listing, LogError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)
                    .map_err(|error| LogError::io("creating the partition directory", error))?;
                std::fs::read_dir(dir)
                    .map_err(|error| LogError::io("listing a partition", error))?
            }
            Err(error) => return Err(LogError::io("listing a partition", error)),
        };
        let mut names = std::collections::BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|error| LogError::io("listing a partition", error))?;
            // A name that is not UTF-8 is none of the log's files.
            if let Ok(name) = entry.file_name().into_string() {
                names.insert(name);
            }
        }
        Ok(Listing { names })
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub(super) fn has_path(&self, path: &Path) -> bool {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| self.names.contains(name))
    }

    /// The contents of the file `name` in `dir`, if the listing has it.
    pub(super) fn read(
        &self,
        dir: &Path,
        name: &str,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>, LogError> {
        if !self.names.contains(name) {
            return Ok(None);
        }
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(LogError::io(what, error)),
        }
    }

    /// [`Listing::read`] as text.
    pub(super) fn read_to_string(
        &self,
        dir: &Path,
        name: &str,
        what: &'static str,
    ) -> Result<Option<String>, LogError> {
        self.read(dir, name, what)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    LogError::io(
                        what,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{name} is not UTF-8 text"),
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// Base offsets of the `.log` files of the `listing` of `dir`, sorted; removes leftovers that
/// belong to no segment (indexes without a log, temporary files).
pub(super) fn segment_base_offsets(dir: &Path, listing: &Listing) -> Result<Vec<u64>, LogError> {
    let mut logs = Vec::new();
    let mut others = Vec::new();
    for name in listing.names() {
        if name.ends_with(".log") {
            logs.extend(segment_base_offset_of(name));
        } else if let Some(stem) = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
        {
            if let Ok(base_offset) = stem.parse::<u64>() {
                others.push((base_offset, dir.join(name)));
            }
        } else if name.ends_with(".tmp") {
            others.push((u64::MAX, dir.join(name)));
        }
    }
    logs.sort_unstable();
    for (base_offset, path) in others {
        if logs.binary_search(&base_offset).is_err() {
            std::fs::remove_file(&path)
                .map_err(|error| LogError::io("removing a leftover file", error))?;
        }
    }
    Ok(logs)
}

/// A producer snapshot file as read: the table and the log end it covers, or why it does not
/// check out.
pub(super) type SnapshotRead = Result<(ProducerTable, u64), String>;

/// The producer snapshot if the file exists (recovery rebuilds the table by a replay of the
/// log from its start when it does not check out).
pub(super) fn read_producer_snapshot(
    dir: &Path,
    listing: &Listing,
    limits: ProducerLimits,
) -> Result<Option<SnapshotRead>, LogError> {
    let bytes = listing.read(
        dir,
        PRODUCER_STATE_FILE,
        "reading the producer state snapshot",
    )?;
    Ok(bytes.map(|bytes| ProducerTable::decode(&bytes, limits)))
}

/// The offset kept as decimal text in the file `name`, if it exists.
pub(super) fn read_offset_file(
    dir: &Path,
    listing: &Listing,
    name: &str,
) -> Result<Option<u64>, LogError> {
    let Some(text) = listing.read_to_string(dir, name, "reading an offset file")? else {
        return Ok(None);
    };
    text.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| LogError::Corrupt(format!("{name} holds {text:?}, not an offset")))
}
