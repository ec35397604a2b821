//! `ferrite dump-log`: a read-only view of segment files, for operators checking what a crash
//! left behind and for anyone learning the on-disk format.
//!
//! It reads segment files without recovering them (nothing is written) and reports each batch
//! (CRC checked) and each damaged range with the offsets it held, stepping over it as recovery
//! does; the last segment's zero padding is its end, by the rule recovery uses
//! (`batch::is_last_page_padding`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use engine::batch::{self, BatchHeader, BATCH_HEADER_BYTES};

#[derive(clap::Args)]
pub struct Arguments {
    /// A partition directory (every `.log` in it, in offset order) or one `.log` file.
    path: PathBuf,
    /// Print only the summary line of each segment.
    #[arg(long)]
    summary: bool,
}

/// Exit codes: 0 every batch checked out; 1 a segment holds bytes that are not valid batches
/// (damaged bytes between batches, or a tail recovery would cut off); 2 the path could not be
/// read.
pub fn run(arguments: &Arguments) -> ExitCode {
    let files = match segment_files(&arguments.path) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("ferrite dump-log: {message}");
            return ExitCode::from(2);
        }
    };
    let mut all_valid = true;
    let base_offsets: Vec<Option<i64>> = files.iter().map(|file| base_offset_of(file)).collect();
    for (index, file) in files.iter().enumerate() {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("ferrite dump-log: cannot read {}: {error}", file.display());
                return ExitCode::from(2);
            }
        };
        // The file name is the segment's base offset: where its first batch should start; the
        // next segment's is where its offsets end.
        let base_offset = base_offsets[index].unwrap_or(0);
        let next_base_offset = base_offsets.get(index + 1).copied().flatten();
        let outcome = dump_segment(&bytes, base_offset, next_base_offset, !arguments.summary);
        let damaged_bytes: usize = outcome.damaged.iter().map(|d| d.to - d.from).sum();
        println!(
            "segment {}: {} batches, offsets {}, {} valid bytes of {}{}{}",
            file.display(),
            outcome.batches,
            outcome
                .offsets
                .map_or("none".to_string(), |(first, last)| format!(
                    "{first}..={last}"
                )),
            outcome.valid_bytes,
            bytes.len(),
            match outcome.damaged.len() {
                0 => String::new(),
                ranges => format!(", {ranges} damaged range(s) of {damaged_bytes} bytes"),
            },
            match &outcome.stopped_because {
                Some(reason) => format!(", then {reason}"),
                None => String::new(),
            }
        );
        all_valid &= outcome.stopped_because.is_none() && outcome.damaged.is_empty();
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

struct SegmentOutcome {
    batches: u64,
    offsets: Option<(i64, i64)>,
    valid_bytes: usize,
    /// Bytes between valid batches that are not valid batches themselves.
    damaged: Vec<Damaged>,
    /// Why the bytes after the last valid batch are not batches, if any are left.
    stopped_because: Option<String>,
}

/// Damaged bytes `from..to` where offsets `first_offset..next_offset` should be.
struct Damaged {
    from: usize,
    to: usize,
    first_offset: i64,
    next_offset: i64,
}

/// The base offset a segment file's name gives.
fn base_offset_of(file: &Path) -> Option<i64> {
    file.file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse::<i64>().ok())
}

/// Walks the batches of one segment file, `base_offset` being where its first batch starts:
/// each one's length, magic, CRC-32C and record count, and that offsets do not go back. Bytes
/// that fail are damage when valid batches follow (the damaged batch's own length leads to
/// one, or one is found further on), or when a later segment (at `next_base_offset`) does, as
/// the broker's recovery sees it.
fn dump_segment(
    bytes: &[u8],
    base_offset: i64,
    next_base_offset: Option<i64>,
    each_batch: bool,
) -> SegmentOutcome {
    let mut outcome = SegmentOutcome {
        batches: 0,
        offsets: None,
        valid_bytes: 0,
        damaged: Vec::new(),
        stopped_because: None,
    };
    let mut position = 0usize;
    let mut next_offset = base_offset;
    while position < bytes.len() {
        let header = match check_batch(&bytes[position..], next_offset) {
            Ok(header) => header,
            // The last segment of a log closed (or crashed) after a direct write ends in its
            // last page's zeros, which the broker takes for the end of the data.
            Err(_)
                if next_base_offset.is_none()
                    && batch::is_last_page_padding(position as u64, &bytes[position..]) =>
            {
                break;
            }
            Err(reason) => match resume_after(bytes, position, next_offset)
                .or_else(|| next_base_offset.map(|next_base| (bytes.len(), next_base)))
            {
                Some((resumed_at, resumed_offset)) => {
                    let damaged = Damaged {
                        from: position,
                        to: resumed_at,
                        first_offset: next_offset,
                        next_offset: resumed_offset,
                    };
                    if each_batch {
                        println!(
                            "damaged bytes {}..{} (offsets {}..{}): {reason}",
                            damaged.from, damaged.to, damaged.first_offset, damaged.next_offset
                        );
                    }
                    outcome.damaged.push(damaged);
                    position = resumed_at;
                    next_offset = resumed_offset;
                    continue;
                }
                None => {
                    outcome.stopped_because = Some(format!(
                        "{} bytes from byte {position} that are not record batches ({reason}): \
                         a torn tail if this is the last segment and the broker crashed, \
                         damaged data otherwise",
                        bytes.len() - position
                    ));
                    break;
                }
            },
        };
        let size = header.size_bytes as usize;
        if each_batch {
            println!(
                "offset {}..={} position {position} size {size} epoch {} records {} \
                 timestamps {}..{} compression {} producer {}/{} sequence {}{}",
                header.base_offset,
                header.last_offset(),
                header.leader_epoch,
                header.records_count,
                header.base_timestamp,
                header.max_timestamp,
                header.compression(),
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                if header.is_control() { " control" } else { "" },
            );
        }
        outcome.batches += 1;
        outcome.offsets = Some((
            outcome
                .offsets
                .map_or(header.base_offset, |(first, _)| first),
            header.last_offset(),
        ));
        position += size;
        next_offset = header.last_offset() + 1;
        outcome.valid_bytes += size;
    }
    outcome
}

/// The batch at the start of `rest`, if it is valid as stored and starts at `offset_min` or
/// later (compaction leaves gaps); else what is wrong with it.
fn check_batch(rest: &[u8], offset_min: i64) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(rest)
        .ok_or_else(|| format!("{} bytes, too few for a batch header", rest.len()))?;
    let size = header.size_bytes as usize;
    if size < BATCH_HEADER_BYTES || size > rest.len() {
        return Err(format!(
            "a batch header claiming {size} bytes (torn or padding)"
        ));
    }
    if header.base_offset < offset_min {
        return Err(format!(
            "a batch at offset {} where offset {offset_min} or later was expected",
            header.base_offset
        ));
    }
    // Stored batches: compaction may have left fewer records than the offset range.
    batch::validate_stored(&rest[..size], usize::MAX)
        .map_err(|error| format!("an invalid batch: {error}"))
}

/// Where valid batches resume after the damaged one at `position` (expected to hold
/// `offset`): its length's end, if a valid batch starts there, else the first position after
/// it where one starts; with that batch's base offset. `None` when none follows.
fn resume_after(bytes: &[u8], position: usize, offset: i64) -> Option<(usize, i64)> {
    let valid_at = |at: usize| {
        check_batch(&bytes[at..], offset + 1)
            .ok()
            .map(|header| (at, header.base_offset))
    };
    let by_length = BatchHeader::parse(&bytes[position..])
        .map(|header| position + header.size_bytes as usize)
        .filter(|next| *next > position + BATCH_HEADER_BYTES && *next < bytes.len());
    by_length
        .and_then(valid_at)
        .or_else(|| (position + 1..bytes.len()).find_map(valid_at))
}

fn segment_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|error| format!("cannot list {}: {error}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|file| file.extension().is_some_and(|extension| extension == "log"))
        .collect();
    if files.is_empty() {
        return Err(format!("no .log segment files in {}", path.display()));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::batch::build;

    #[test]
    fn a_segment_of_valid_batches_then_garbage_reports_where_it_stops() {
        let mut bytes = Vec::new();
        for offset in [0i64, 3] {
            let mut batch = build::batch_of(3, 10, 1_000);
            batch::assign_offset_and_epoch(&mut batch, offset, 1);
            bytes.extend_from_slice(&batch);
        }
        let valid = bytes.len();
        let outcome = dump_segment(&bytes, 0, None, false);
        assert_eq!((outcome.batches, outcome.offsets), (2, Some((0, 5))));
        assert!(outcome.stopped_because.is_none());
        bytes.extend_from_slice(&[0u8; 100]);
        let outcome = dump_segment(&bytes, 0, None, false);
        assert_eq!(outcome.valid_bytes, valid);
        assert!(outcome.stopped_because.unwrap().contains("torn or padding"));
    }

    #[test]
    fn the_last_segments_page_padding_is_its_end_and_zeros_past_the_page_are_not() {
        let mut bytes = build::batch_of(3, 10, 1_000);
        batch::assign_offset_and_epoch(&mut bytes, 0, 1);
        let valid = bytes.len();
        bytes.resize(4096, 0);
        let outcome = dump_segment(&bytes, 0, None, false);
        assert_eq!((outcome.batches, outcome.valid_bytes), (1, valid));
        assert!(outcome.stopped_because.is_none());
        // Before a later segment the same zeros are damage (sealed segments are trimmed).
        let outcome = dump_segment(&bytes, 0, Some(3), false);
        assert_eq!(outcome.damaged.len(), 1);
        // A file grown past the page (a torn write) is not padding.
        bytes.resize(8192, 0);
        let outcome = dump_segment(&bytes, 0, None, false);
        assert!(outcome.stopped_because.unwrap().contains("torn or padding"));
    }

    #[test]
    fn a_bad_tail_before_a_later_segment_is_damage_up_to_its_base() {
        let mut bytes = build::batch_of(3, 10, 1_000);
        batch::assign_offset_and_epoch(&mut bytes, 10, 1);
        let last = bytes.len() - 5;
        bytes[last] ^= 0x5a;
        let outcome = dump_segment(&bytes, 10, Some(13), false);
        assert!(outcome.stopped_because.is_none());
        assert_eq!(outcome.damaged.len(), 1);
        assert_eq!(
            (
                outcome.damaged[0].first_offset,
                outcome.damaged[0].next_offset
            ),
            (10, 13)
        );
    }

    #[test]
    fn damaged_bytes_between_valid_batches_are_reported_and_the_walk_goes_on() {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for offset in [10i64, 13, 16, 19] {
            starts.push(bytes.len());
            let mut batch = build::batch_of(3, 10, 1_000);
            batch::assign_offset_and_epoch(&mut batch, offset, 1);
            bytes.extend_from_slice(&batch);
        }
        // A record of the second batch, then the third batch's length field.
        for (flipped, damaged_batch) in [(starts[1] + 70, 1), (starts[2] + 9, 2)] {
            let mut damaged = bytes.clone();
            damaged[flipped] ^= 0x5a;
            let outcome = dump_segment(&damaged, 10, None, false);
            assert_eq!(outcome.batches, 3);
            assert!(outcome.stopped_because.is_none());
            let [range] = &outcome.damaged[..] else {
                panic!("one damaged range");
            };
            assert_eq!(
                (range.from, range.to, range.first_offset, range.next_offset),
                (
                    starts[damaged_batch],
                    starts[damaged_batch + 1],
                    10 + 3 * damaged_batch as i64,
                    13 + 3 * damaged_batch as i64
                )
            );
        }
    }
}
