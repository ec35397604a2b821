//! Replacing a small file atomically and durably: a temporary written next to it and synced,
//! renamed over it, the directory synced. After a crash the file is the old one or the new one,
//! never a mix, and once the call returns the new one survives a power loss.
//!
//! Two forms of the one sequence. The blocking one ([`replace_file_durably`]) is for files
//! written rarely or before a shard runs: the catalog, a repair's rewritten segment, a
//! replica's state at its open, and the log's state files written in the turn that asks
//! (`log/state_files.rs`). The io_uring one ([`replace_file_durably_async`], built on
//! [`write_whole_file`]) is for a shard that must not block: a replica's Raft state and votes
//! while it runs; the log's close writes many files at once with [`write_whole_file`] and
//! syncs its directory once through the handle it keeps.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use glommio::io::DmaFile;

use crate::error::LogError;
use crate::segment::align_up;

/// Writes `name.tmp` in `dir` with `write`, syncs it and renames it over `name`. The rename is
/// durable only once the directory is synced (the caller's, or [`replace_durably_with`]).
pub fn write_synced_then_rename(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    write(&mut file)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))
}

/// [`write_synced_then_rename`], then the directory synced: the replacement is durable.
pub fn replace_durably_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_synced_then_rename(dir, name, write)?;
    File::open(dir)?.sync_all()
}

/// Replaces the file `name` in `dir` with `bytes` atomically and durably.
pub fn replace_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    replace_durably_with(dir, name, |file| file.write_all(bytes))
}

/// Writes a small file in full with direct I/O and syncs it (segment indexes, the log's state
/// files, a replica's state): through io_uring, so the writes of many files overlap.
pub async fn write_whole_file(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let file = DmaFile::create(path)
        .await
        .map_err(|error| LogError::glommio("creating an index or state file", error))?;
    if !bytes.is_empty() {
        let mut buffer = file.alloc_dma_buffer(align_up(bytes.len() as u64) as usize);
        let data = buffer.as_bytes_mut();
        data[..bytes.len()].copy_from_slice(bytes);
        data[bytes.len()..].fill(0);
        file.write_at(buffer, 0)
            .await
            .map_err(|error| LogError::glommio("writing an index or state file", error))?;
        file.truncate(bytes.len() as u64)
            .await
            .map_err(|error| LogError::glommio("trimming an index or state file", error))?;
    }
    file.fdatasync()
        .await
        .map_err(|error| LogError::glommio("syncing an index or state file", error))?;
    file.close()
        .await
        .map_err(|error| LogError::glommio("closing an index or state file", error))
}

/// [`replace_file_durably`] through io_uring, without blocking the shard: `name` in `dir`
/// replaced by `bytes`. One at a time per file (they share the temporary file).
pub async fn replace_file_durably_async(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), LogError> {
    let temporary = dir.join(format!("{name}.tmp"));
    write_whole_file(&temporary, bytes).await?;
    glommio::io::rename(&temporary, dir.join(name))
        .await
        .map_err(|error| LogError::glommio("renaming a state file", error))?;
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(|error| LogError::glommio("opening a state file's directory", error))?;
    let synced = directory.sync().await;
    directory
        .close()
        .await
        .map_err(|error| LogError::glommio("closing a state file's directory", error))?;
    synced.map_err(|error| LogError::glommio("syncing a state file's directory", error))
}
