//! Replacing a small file atomically and durably with blocking calls: a temporary written next
//! to it and synced, renamed over it, the directory synced. After a crash the file is the old
//! one or the new one, never a mix, and once the call returns the new one survives a power
//! loss. The one copy of this sequence for every small file the broker keeps outside its
//! shards' I/O (the catalog, a repair's rewritten segment, a replica's Raft state and votes),
//! and for the log's state files written in the turn that asks (`log/state_files.rs`, whose
//! io_uring variant writes many logs' files at once). Blocking: for files written rarely.

use std::fs::File;
use std::io::Write;
use std::path::Path;

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
