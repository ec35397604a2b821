//! `ferrite dump-log`: a read-only view of segment files, for operators checking what a crash
//! left behind and for anyone learning the on-disk format.

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

/// Exit codes: 0 every batch checked out; 1 a segment ends in bytes that are not a valid batch
/// (what recovery would cut off); 2 the path could not be read.
pub fn run(arguments: &Arguments) -> ExitCode {
    let files = match segment_files(&arguments.path) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("ferrite dump-log: {message}");
            return ExitCode::from(2);
        }
    };
    let mut all_valid = true;
    for file in files {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("ferrite dump-log: cannot read {}: {error}", file.display());
                return ExitCode::from(2);
            }
        };
        let outcome = dump_segment(&bytes, !arguments.summary);
        println!(
            "segment {}: {} batches, offsets {}, {} valid bytes of {}{}",
            file.display(),
            outcome.batches,
            outcome
                .offsets
                .map_or("none".to_string(), |(first, last)| format!(
                    "{first}..={last}"
                )),
            outcome.valid_bytes,
            bytes.len(),
            match &outcome.stopped_because {
                Some(reason) => format!(", then {reason}"),
                None => String::new(),
            }
        );
        all_valid &= outcome.stopped_because.is_none();
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
    stopped_because: Option<String>,
}

fn dump_segment(bytes: &[u8], each_batch: bool) -> SegmentOutcome {
    let mut outcome = SegmentOutcome {
        batches: 0,
        offsets: None,
        valid_bytes: 0,
        stopped_because: None,
    };
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let Some(header) = BatchHeader::parse(rest) else {
            outcome.stopped_because = Some(format!("{} trailing bytes", rest.len()));
            break;
        };
        let size = header.size_bytes as usize;
        if size < BATCH_HEADER_BYTES || size > rest.len() {
            outcome.stopped_because = Some(format!(
                "at byte {position} a batch header claiming {size} bytes (torn or padding)"
            ));
            break;
        }
        // Stored batches: compaction may have left fewer records than the offset range.
        if let Err(error) = batch::validate_stored(&rest[..size], usize::MAX) {
            outcome.stopped_because = Some(format!("at byte {position} an invalid batch: {error}"));
            break;
        }
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
        outcome.valid_bytes = position;
    }
    outcome
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
        let outcome = dump_segment(&bytes, false);
        assert_eq!((outcome.batches, outcome.offsets), (2, Some((0, 5))));
        assert!(outcome.stopped_because.is_none());
        bytes.extend_from_slice(&[0u8; 100]);
        let outcome = dump_segment(&bytes, false);
        assert_eq!(outcome.valid_bytes, valid);
        assert!(outcome.stopped_because.unwrap().contains("torn or padding"));
    }
}
