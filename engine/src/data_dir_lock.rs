//! One process at a time on a data directory.
//!
//! Two brokers (or a broker and `ferrite repair-log`) on the same data directory would write
//! the same segments, journals and catalog and destroy each other's data; nothing else stops an
//! operator who starts a second broker with another port, or a supervisor that starts a new
//! process while the old one still shuts down. As Kafka's `.lock` in each log directory: an
//! exclusive `flock` on a file in the directory, held for the life of the process, released
//! by the kernel when the process ends however it ends (so a kill -9 leaves nothing to clean).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file's name in a data directory.
pub const LOCK_FILE: &str = ".lock";

/// The data directory is this process's while this lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    #[error(
        "{0} is in use by another process (a broker or `ferrite repair-log`): its {LOCK_FILE} is locked"
    )]
    InUse(String),
    #[error("cannot lock {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist) without waiting.
    pub fn take(data_dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |error| DataDirLockError::Io {
            path: path.display().to_string(),
            error,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => {
                Err(DataDirLockError::InUse(data_dir.display().to_string()))
            }
            Err(TryLockError::Error(error)) => Err(io(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_the_same_directory_is_refused_until_the_first_is_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let first = DataDirLock::take(directory.path()).unwrap();
        assert!(matches!(
            DataDirLock::take(directory.path()),
            Err(DataDirLockError::InUse(_))
        ));
        drop(first);
        DataDirLock::take(directory.path()).unwrap();
    }
}
