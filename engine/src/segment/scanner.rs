//! The segment scanner: windows of direct-I/O reads over a segment file, which says why a batch
//! does not check out and where valid batches resume after damaged bytes; and `scan_and_note`,
//! the one function that indexes both appends and recovery scans, so both build identical
//! indexes. Its own room because every reader of segment bytes that must check them (reads,
//! timestamp search, recovery, repair, the cleaner) goes through it.

use glommio::io::{DmaFile, ReadResult};

use super::{align_up, Segment};
use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::LogError;

/// Reads a segment file through windows of direct-I/O reads, for scanning batch headers (reads,
/// timestamp search) or whole batches (recovery). Never reads at or past `limit_bytes`.
pub(crate) struct SegmentScanner<'a> {
    file: &'a DmaFile,
    limit_bytes: u64,
    window_bytes: usize,
    window: Option<(u64, ReadResult)>,
}

impl<'a> SegmentScanner<'a> {
    pub fn new(file: &'a DmaFile, limit_bytes: u64, window_bytes: usize) -> Self {
        SegmentScanner {
            file,
            limit_bytes,
            window_bytes,
            window: None,
        }
    }

    /// The `length` bytes at `position`, or `None` when they would run past the limit.
    pub async fn bytes_at(
        &mut self,
        position: u64,
        length: usize,
    ) -> Result<Option<&[u8]>, LogError> {
        let end = position + length as u64;
        if end > self.limit_bytes {
            return Ok(None);
        }
        let covered = matches!(&self.window, Some((start, data))
            if *start <= position && end <= *start + data.len() as u64);
        if !covered {
            let want = length.max(self.window_bytes) as u64;
            let read_length = want.min(self.limit_bytes - position) as usize;
            let data = self
                .file
                .read_at(position, read_length)
                .await
                .map_err(|error| LogError::glommio("reading a segment", error))?;
            if (data.len() as u64) < length as u64 {
                // The file is shorter than the caller believed: treat as the end.
                return Ok(None);
            }
            self.window = Some((position, data));
        }
        let (start, data) = self.window.as_ref().expect("window was just filled");
        let from = (position - start) as usize;
        Ok(Some(&data[from..from + length]))
    }

    /// Whether the bytes from `position` to the limit are only the zeros a direct write pads
    /// its last page with: fewer than a page, ending at the page's end, all zero. A scan of
    /// the last segment that stops there has reached the end of its data (zeros never read
    /// as a batch), not a torn write: see `recovery.rs` on why such a tail is left uncut.
    pub async fn only_padding_from(&mut self, position: u64) -> Result<bool, LogError> {
        let limit_bytes = self.limit_bytes;
        if position >= limit_bytes || limit_bytes != align_up(position) {
            return Ok(false);
        }
        let tail = self
            .bytes_at(position, (limit_bytes - position) as usize)
            .await?;
        Ok(tail.is_some_and(|bytes| crate::batch::is_last_page_padding(position, bytes)))
    }

    /// The header of the batch at `position`, if one plausibly starts there (enough bytes, a
    /// size at least a header, the whole batch within the limit). Does not check the CRC.
    pub async fn header_at(&mut self, position: u64) -> Result<Option<BatchHeader>, LogError> {
        let Some(bytes) = self.bytes_at(position, BATCH_HEADER_BYTES).await? else {
            return Ok(None);
        };
        let Some(header) = BatchHeader::parse(bytes) else {
            return Ok(None);
        };
        if (header.size_bytes as usize) < BATCH_HEADER_BYTES
            || position + u64::from(header.size_bytes) > self.limit_bytes
        {
            return Ok(None);
        }
        Ok(Some(header))
    }

    /// The whole batch at `position` if it is valid as stored (length, magic, CRC, count) and
    /// starts at `offset_min`, or after it when both lie below `gaps_end_offset` (where
    /// compaction may have removed records); otherwise what is wrong there. Above the
    /// compacted end a gap means damage: the base offset is outside the CRC.
    pub async fn check_batch_at(
        &mut self,
        position: u64,
        offset_min: u64,
        gaps_end_offset: u64,
        batch_bytes_max: usize,
    ) -> Result<BatchCheck, LogError> {
        let limit_bytes = self.limit_bytes;
        let Some(bytes) = self.bytes_at(position, BATCH_HEADER_BYTES).await? else {
            return Ok(BatchCheck::Invalid(format!(
                "{} bytes at the end, too few for a batch header",
                limit_bytes.saturating_sub(position)
            )));
        };
        let header = BatchHeader::parse(bytes).expect("a whole header parses");
        let size_bytes = u64::from(header.size_bytes);
        if size_bytes < BATCH_HEADER_BYTES as u64 {
            return Ok(BatchCheck::Invalid(
                "a batch length field that no batch can have".into(),
            ));
        }
        if position + size_bytes > limit_bytes {
            return Ok(BatchCheck::Invalid(format!(
                "a batch of {size_bytes} bytes running past the end of the data at byte \
                 {limit_bytes}"
            )));
        }
        let base_offset = header.base_offset;
        let follows = base_offset >= 0
            && (base_offset as u64 == offset_min
                || (base_offset as u64 > offset_min && base_offset as u64 <= gaps_end_offset));
        if !follows {
            return Ok(BatchCheck::Invalid(format!(
                "a batch at offset {base_offset} where offset {offset_min} was expected"
            )));
        }
        let Some(bytes) = self.bytes_at(position, size_bytes as usize).await? else {
            return Ok(BatchCheck::Invalid("the file ends inside a batch".into()));
        };
        Ok(match batch::validate_stored(bytes, batch_bytes_max) {
            Ok(header) => BatchCheck::Valid(header),
            Err(error) => BatchCheck::Invalid(error.to_string()),
        })
    }

    /// Where valid batches resume after the damaged one at `position` (expected to hold
    /// `offset`): the batch its length field points to, if that one checks out, else the first
    /// position after it where a valid batch starts. Such a batch must hold offsets after
    /// `offset` and, when given, before `offset_below` (the next segment's base).
    /// `Resume::End` when the damaged bytes run to the limit, `None` when nothing valid
    /// follows.
    pub async fn resume_after_damage(
        &mut self,
        position: u64,
        offset: u64,
        offset_below: Option<u64>,
        batch_bytes_max: usize,
    ) -> Result<Option<Resume>, LogError> {
        let resumes_at = |header: &BatchHeader| {
            let base_offset = header.base_offset;
            base_offset >= 0
                && base_offset as u64 > offset
                && offset_below.is_none_or(|below| (base_offset as u64) < below)
        };
        if let Some(damaged) = self.header_at(position).await? {
            let next = position + u64::from(damaged.size_bytes);
            if next == self.limit_bytes {
                return Ok(Some(Resume::End));
            }
            if let Some(header) = self.valid_batch_at(next, batch_bytes_max).await? {
                if resumes_at(&header) {
                    return Ok(Some(Resume::At(next, header)));
                }
            }
        }
        // The length field is damaged too: look for the next batch byte by byte. Candidates
        // are rare (a plausible header with offsets in range), so few CRCs are computed.
        let mut candidate = position + 1;
        while candidate + BATCH_HEADER_BYTES as u64 <= self.limit_bytes {
            // Most positions fail on the magic byte: a look at it before a parse.
            let magic = self
                .bytes_at(candidate + batch::OFFSET_MAGIC as u64, 1)
                .await?
                .map(|byte| byte[0] as i8);
            let plausible = if magic == Some(batch::MAGIC_V2) {
                self.header_at(candidate).await?
            } else {
                None
            };
            if let Some(header) = plausible {
                if resumes_at(&header) {
                    if let Some(header) = self.valid_batch_at(candidate, batch_bytes_max).await? {
                        return Ok(Some(Resume::At(candidate, header)));
                    }
                }
            }
            candidate += 1;
        }
        Ok(None)
    }

    /// The whole batch at `position` if it is valid as stored, wherever its offsets lie.
    async fn valid_batch_at(
        &mut self,
        position: u64,
        batch_bytes_max: usize,
    ) -> Result<Option<BatchHeader>, LogError> {
        let Some(header) = self.header_at(position).await? else {
            return Ok(None);
        };
        let Some(bytes) = self.bytes_at(position, header.size_bytes as usize).await? else {
            return Ok(None);
        };
        Ok(batch::validate_stored(bytes, batch_bytes_max).ok())
    }
}

/// What [`SegmentScanner::check_batch_at`] found.
pub(crate) enum BatchCheck {
    Valid(BatchHeader),
    /// Not a batch that may stand there, and why.
    Invalid(String),
}

/// Where valid batches resume after damaged bytes.
pub(crate) enum Resume {
    /// At this position, with this batch.
    At(u64, BatchHeader),
    /// The damaged bytes run to the end of the segment.
    End,
}

/// Re-notes every valid batch from `segment.appended_bytes` on, up to `limit_bytes`, checking
/// each one in full (offsets contiguous, except for gaps below `gaps_end_offset`, the end of
/// what compaction has rewritten), and shows each to `observe` with its position and bytes (recovery
/// rebuilds producer state from them, and fills the tail cache with the last segment's last
/// batches). Returns `None` when the scan reached `limit_bytes` exactly, else why it
/// stopped: a torn or corrupt batch, or one whose offsets go back, which the caller cuts off or
/// reports as damage.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan_and_note(
    segment: &mut Segment,
    scanner: &mut SegmentScanner<'_>,
    limit_bytes: u64,
    index_interval_bytes: u32,
    batch_bytes_max: usize,
    gaps_end_offset: u64,
    observe: &mut dyn FnMut(u64, &BatchHeader, &[u8]),
) -> Result<Option<String>, LogError> {
    loop {
        let position = segment.appended_bytes;
        if position == limit_bytes {
            return Ok(None);
        }
        match scanner
            .check_batch_at(
                position,
                segment.end_offset,
                gaps_end_offset,
                batch_bytes_max,
            )
            .await?
        {
            BatchCheck::Valid(header) => {
                segment.note_batch(position, &header, index_interval_bytes);
                // In the window the check just read.
                let bytes = scanner
                    .bytes_at(position, header.size_bytes as usize)
                    .await?
                    .ok_or_else(|| LogError::Corrupt("a segment shrank while scanned".into()))?;
                observe(position, &header, bytes);
            }
            BatchCheck::Invalid(reason) => return Ok(Some(reason)),
        }
    }
}
