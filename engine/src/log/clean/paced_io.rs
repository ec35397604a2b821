//! The cleaner's paced I/O: a cleaning's reads (the batches of an input segment, through the
//! segment scanner) and writes (the output segment, in chunks of direct I/O) held together to
//! `cleaner_io_bytes_per_second_max`. Kept apart from the cleaning's logic (what to keep, the
//! crash-safe swap) because this is what bounds its effect on produce latency.
//!
//! The bound is Kafka's `log.cleaner.io.max.bytes.per.second` (unlimited by default, as in Kafka).
//! Why pacing and not only the low-priority task queue: the cleaner's I/O queues beside the
//! appends' `fdatasync`s at the device, which the task queue does not order, so pacing, not
//! priority, is what keeps compaction out of produce latency.

use super::Input;
use crate::batch::{self, BatchHeader};
use crate::error::LogError;
use crate::log::flush::fill_dma_buffers;
use crate::segment::{align_up, SegmentFiles, SegmentScanner, RECOVERY_WINDOW_BYTES};

/// Holds one cleaning's reads and writes to `cleaner_io_bytes_per_second_max` together (Kafka's
/// `log.cleaner.io.max.bytes.per.second`): the cleaner's I/O queues beside the appends'
/// writes and `fdatasync`s at the device, which a low-priority task queue does not order, so
/// pacing it is what bounds its effect on produce latency.
pub(super) struct Pacer {
    bytes_per_second: Option<u64>,
    started: std::time::Instant,
    bytes: std::cell::Cell<u64>,
}

impl Pacer {
    pub(super) fn new(bytes_per_second: Option<u64>) -> Pacer {
        assert!(
            bytes_per_second != Some(0),
            "a rate of 0 would never finish"
        );
        Pacer {
            bytes_per_second,
            started: std::time::Instant::now(),
            bytes: std::cell::Cell::new(0),
        }
    }

    /// Counts `bytes` of I/O and sleeps until the cleaning is back within its rate.
    pub(super) async fn pace(&self, bytes: u64) {
        let Some(rate) = self.bytes_per_second else {
            return;
        };
        self.bytes.set(self.bytes.get() + bytes);
        let due = std::time::Duration::from_secs_f64(self.bytes.get() as f64 / rate as f64);
        let ahead = due.saturating_sub(self.started.elapsed());
        if !ahead.is_zero() {
            glommio::timer::sleep(ahead).await;
        }
    }
}

/// Every batch of a sealed segment, checked (length, magic, CRC) so that the cleaning never
/// launders a damaged batch into one with a fresh CRC.
pub(super) struct BatchWalk<'a> {
    input: &'a Input,
    scanner: SegmentScanner<'a>,
    position: u64,
    pacer: &'a Pacer,
}

impl<'a> BatchWalk<'a> {
    pub(super) fn new(
        input: &'a Input,
        files: &'a SegmentFiles,
        pacer: &'a Pacer,
    ) -> BatchWalk<'a> {
        BatchWalk {
            input,
            pacer,
            scanner: SegmentScanner::new(&files.dma, input.written_bytes, RECOVERY_WINDOW_BYTES),
            position: 0,
        }
    }

    pub(super) async fn next(&mut self) -> Result<Option<(BatchHeader, Vec<u8>)>, LogError> {
        // Decompressing and filtering is CPU work between I/Os: let other queues run.
        glommio::yield_if_needed().await;
        if self.position == self.input.written_bytes {
            return Ok(None);
        }
        let (base_offset, position) = (self.input.base_offset, self.position);
        let damaged = move || {
            LogError::Corrupt(format!(
                "segment {base_offset}: no valid batch at byte {position}"
            ))
        };
        let header = self
            .scanner
            .header_at(self.position)
            .await?
            .ok_or_else(damaged)?;
        let bytes = self
            .scanner
            .bytes_at(self.position, header.size_bytes as usize)
            .await?
            .ok_or_else(damaged)?
            .to_vec();
        batch::validate_stored(&bytes, usize::MAX).map_err(|_| damaged())?;
        self.position += u64::from(header.size_bytes);
        self.pacer.pace(u64::from(header.size_bytes)).await;
        Ok(Some((header, bytes)))
    }
}

/// Writes the cleaned segment with direct I/O in `chunk_bytes` pieces, then trims and syncs it.
pub(super) struct OutputWriter<'a> {
    files: &'a SegmentFiles,
    pacer: &'a Pacer,
    chunk_bytes: usize,
    pending: Vec<u8>,
    /// Bytes written so far (a multiple of the chunk size, so of the alignment).
    written_bytes: u64,
}

impl<'a> OutputWriter<'a> {
    pub(super) fn new(
        files: &'a SegmentFiles,
        chunk_bytes: usize,
        pacer: &'a Pacer,
    ) -> OutputWriter<'a> {
        OutputWriter {
            files,
            pacer,
            chunk_bytes,
            pending: Vec::with_capacity(chunk_bytes),
            written_bytes: 0,
        }
    }

    pub(super) async fn push(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.pending.extend_from_slice(bytes);
        let whole_chunks = self.pending.len() / self.chunk_bytes * self.chunk_bytes;
        if whole_chunks > 0 {
            self.write(whole_chunks).await?;
            self.pending.drain(..whole_chunks);
        }
        Ok(())
    }

    pub(super) async fn finish(mut self, total_bytes: u64) -> Result<(), LogError> {
        if !self.pending.is_empty() {
            self.write(self.pending.len()).await?;
        }
        assert_eq!(
            self.written_bytes,
            align_up(total_bytes),
            "every byte was written"
        );
        self.files
            .dma
            .truncate(total_bytes)
            .await
            .map_err(|error| LogError::glommio("trimming a cleaned segment", error))?;
        self.files
            .dma
            .fdatasync()
            .await
            .map_err(|error| LogError::glommio("syncing a cleaned segment", error))
    }

    /// Writes the first `length` pending bytes at the written end (the last buffer padded to
    /// the alignment when `length` is not a multiple of it).
    pub(super) async fn write(&mut self, length: usize) -> Result<(), LogError> {
        let start = self.written_bytes;
        let (buffers, _) = fill_dma_buffers(
            &self.files.dma,
            std::iter::once(&self.pending[..length]),
            start,
            start + length as u64,
            self.chunk_bytes,
        );
        let mut at = start;
        for buffer in buffers {
            let buffer_length = buffer.len();
            crate::dma::write_whole_at(
                &self.files.dma,
                buffer,
                at,
                crate::dma::WriteSync::Later,
                "writing a cleaned segment",
                "writing a cleaned segment (short write)",
            )
            .await?;
            at += buffer_length as u64;
            self.pacer.pace(buffer_length as u64).await;
        }
        self.written_bytes = at;
        Ok(())
    }
}
