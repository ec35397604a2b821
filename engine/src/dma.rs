//! Direct-I/O helpers shared by the segment, cleaner and journal writers: a whole-buffer write
//! that names a short write for what it is, and a work-around for glommio 0.9's detection of I/O
//! polling support.
//!
//! glommio decides, per thread and block device, whether direct-I/O reads and writes may go to
//! its I/O-polling ring, by reading 512 bytes at offset 0 of the first `DmaFile` opened there.
//! On a new, empty segment file the kernel answers that read without doing any I/O, glommio
//! concludes that polling works, and on devices without polling queues (virtio, most cloud and
//! SATA disks) every later read then fails with `EOPNOTSUPP`. Opening a file that holds real
//! data first makes the probe meaningful; its answer is cached for the thread's lifetime.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use glommio::io::{DmaBuffer, DmaFile};

use crate::error::LogError;

/// Whether a direct write is its own sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteSync {
    /// A plain write: its bytes are durable only after a later `fdatasync` of the file.
    Later,
    /// `RWF_DSYNC`: when the write succeeds its bytes are durable (the device's cache flushed
    /// after them) without an `fdatasync`: one operation and one completion instead of two, and
    /// no trip through io_uring's worker threads, where every `fdatasync` goes. Nothing is
    /// promised of bytes other writes left unsynced. On a file overwritten in place (no size or
    /// extent change) that is all an `fdatasync` would have made durable.
    Dsync,
}

/// Writes all of `buffer` at `position` of `file`, synced as `sync` says. Linux returns a short
/// direct write only when it ran out of room (ENOSPC, or the file size limit) part way, so that
/// is [`LogError::DiskFull`] naming `short_write`; an error of the write names `operation`.
pub(crate) async fn write_whole_at(
    file: &DmaFile,
    buffer: DmaBuffer,
    position: u64,
    sync: WriteSync,
    operation: &'static str,
    short_write: &'static str,
) -> Result<(), LogError> {
    let length = buffer.len();
    let written = match sync {
        WriteSync::Later => file.write_at(buffer, position).await,
        WriteSync::Dsync => file.write_at_dsync(buffer, position).await,
    };
    let written = written.map_err(|error| LogError::glommio(operation, error))?;
    if written < length {
        return Err(LogError::DiskFull {
            operation: short_write,
        });
    }
    Ok(())
}

const PROBE_FILE: &str = ".dma-probe";
const PROBE_BYTES: usize = 4096;

thread_local! {
    /// Devices (st_dev) whose polling support this thread has had probed with real data.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// Makes sure glommio's polling probe for the device holding `dir` ran on a file with data.
/// Cheap after the first call per thread and device.
pub(crate) async fn probe_device_with_real_data(dir: &Path) -> Result<(), LogError> {
    let device = std::fs::metadata(dir)
        .map_err(|error| LogError::io("inspecting the data directory", error))?
        .dev();
    if PROBED_DEVICES.with(|probed| probed.borrow().contains(&device)) {
        return Ok(());
    }
    let path = dir.join(PROBE_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    };
    write().map_err(|error| LogError::io("writing the direct-I/O probe file", error))?;
    let file = glommio::io::DmaFile::open(&path)
        .await
        .map_err(|error| LogError::glommio("opening the direct-I/O probe file", error))?;
    file.close()
        .await
        .map_err(|error| LogError::glommio("closing the direct-I/O probe file", error))?;
    std::fs::remove_file(&path)
        .map_err(|error| LogError::io("removing the direct-I/O probe file", error))?;
    PROBED_DEVICES.with(|probed| probed.borrow_mut().insert(device));
    Ok(())
}
