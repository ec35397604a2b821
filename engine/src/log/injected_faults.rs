//! Disk faults on request, for tests: a segment write or `fdatasync` that reports an error, as a
//! failing or full device does, without a device-mapper target (dm-flakey) to make one.
//!
//! Built only with the `fault-injection` feature, which refuses to compile without
//! `debug_assertions`: a release build cannot carry it by accident. Without the feature,
//! [`injected`] is an inline `None` and the file below is never looked at.
//!
//! A test arms a fault at run time by writing the file [`FAULT_FILE`] into a partition's
//! directory (in-process or in a real broker's data directory): one line
//! `<operation> <errno> <count>`, where the operation is `write` (a segment write) or `sync` (a
//! segment's `fdatasync`), the errno `EIO` or `ENOSPC`, and the count how many of those
//! operations fail, or `always` (until the test deletes the file). The real operation is done
//! first and its result replaced, so a "failed" write may have reached the file, as a real one
//! may. Each use costs a `stat` of the file, which only test builds pay. Once the count is used
//! up the file is deleted, which is how a test sees that its fault fired.

#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!(
    "the `fault-injection` feature makes disk I/O fail on request: build it only for tests \
     (a debug build), never for release"
);

use std::io;
use std::path::Path;

/// The file in a partition directory that arms a fault (see the module documentation).
pub const FAULT_FILE: &str = "inject-io-fault";

/// The file operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOperation {
    /// A direct write of segment data.
    Write,
    /// An `fdatasync` of a segment file.
    Sync,
}

#[cfg(feature = "fault-injection")]
impl IoOperation {
    /// The name the fault file uses.
    pub fn name(self) -> &'static str {
        match self {
            IoOperation::Write => "write",
            IoOperation::Sync => "sync",
        }
    }
}

/// The error an operation shared by several partitions' directories reports (a journal write
/// or sync): every directory is asked, so each armed fault counts down, and the last answer is
/// kept. Without the feature the directories are not even walked: the commit cycle's hot path
/// pays nothing for them.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn injected_in_any<'a>(
    _dirs: impl Iterator<Item = &'a Path>,
    _operation: IoOperation,
) -> Option<io::Error> {
    None
}

/// The error an operation shared by several partitions' directories reports (a journal write
/// or sync): every directory is asked, so each armed fault counts down, and the last answer is
/// kept.
#[cfg(feature = "fault-injection")]
pub(crate) fn injected_in_any<'a>(
    dirs: impl Iterator<Item = &'a Path>,
    operation: IoOperation,
) -> Option<io::Error> {
    dirs.filter_map(|dir| injected(dir, operation))
        .reduce(|_, error| error)
}

/// The error a fault armed in `dir` for `operation` makes that operation report, if one is
/// armed (and uses up one of its count).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn injected(_dir: &Path, _operation: IoOperation) -> Option<io::Error> {
    None
}

/// The error a fault armed in `dir` for `operation` makes that operation report, if one is
/// armed (and uses up one of its count).
#[cfg(feature = "fault-injection")]
pub(crate) fn injected(dir: &Path, operation: IoOperation) -> Option<io::Error> {
    let path = dir.join(FAULT_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let Some((armed, errno, count)) = parse(&text) else {
        // Left in place: the test waiting for it to be used up times out and says so.
        eprintln!(
            "ferrite: ignoring the malformed fault file {}",
            path.display()
        );
        return None;
    };
    if armed != operation {
        return None;
    }
    match count {
        Some(1) => {
            let _ = std::fs::remove_file(&path);
        }
        Some(left) => {
            let _ = std::fs::write(&path, describe(operation, errno, Some(left - 1)));
        }
        None => {}
    }
    Some(io::Error::from_raw_os_error(errno))
}

/// Arms a fault in the partition directory `dir`: the next `count` `operation`s there fail
/// with `errno` (every one until the file is deleted, when `count` is `None`).
#[cfg(feature = "fault-injection")]
pub fn arm(dir: &Path, operation: IoOperation, errno: i32, count: Option<u32>) -> io::Result<()> {
    std::fs::write(dir.join(FAULT_FILE), describe(operation, errno, count))
}

/// Whether a fault is still armed in `dir` (a counted one is disarmed once used up).
#[cfg(feature = "fault-injection")]
pub fn armed(dir: &Path) -> bool {
    dir.join(FAULT_FILE).exists()
}

#[cfg(feature = "fault-injection")]
fn describe(operation: IoOperation, errno: i32, count: Option<u32>) -> String {
    let errno = match errno {
        libc::ENOSPC => "ENOSPC",
        _ => "EIO",
    };
    let count = count.map_or_else(|| "always".to_owned(), |count| count.to_string());
    format!("{} {errno} {count}\n", operation.name())
}

#[cfg(feature = "fault-injection")]
fn parse(text: &str) -> Option<(IoOperation, i32, Option<u32>)> {
    let mut words = text.split_whitespace();
    let operation = match words.next()? {
        "write" => IoOperation::Write,
        "sync" => IoOperation::Sync,
        _ => return None,
    };
    let errno = match words.next()? {
        "EIO" => libc::EIO,
        "ENOSPC" => libc::ENOSPC,
        _ => return None,
    };
    let count = match words.next()? {
        "always" => None,
        count => Some(count.parse::<u32>().ok().filter(|count| *count > 0)?),
    };
    words.next().is_none().then_some((operation, errno, count))
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    #[test]
    fn a_counted_fault_fires_that_many_times_for_its_operation_only() {
        let dir = tempfile::tempdir().unwrap();
        arm(dir.path(), IoOperation::Sync, libc::EIO, Some(2)).unwrap();
        assert!(injected(dir.path(), IoOperation::Write).is_none());
        for _ in 0..2 {
            let error = injected(dir.path(), IoOperation::Sync).unwrap();
            assert_eq!(error.raw_os_error(), Some(libc::EIO));
        }
        assert!(!armed(dir.path()), "used up");
        assert!(injected(dir.path(), IoOperation::Sync).is_none());
        arm(dir.path(), IoOperation::Write, libc::ENOSPC, None).unwrap();
        for _ in 0..3 {
            let error = injected(dir.path(), IoOperation::Write).unwrap();
            assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
        }
        assert!(armed(dir.path()), "`always` stays until deleted");
        assert_eq!(parse("write EIO 0"), None);
        assert_eq!(parse("write EIO 1 extra"), None);
        assert_eq!(parse("flush EIO 1"), None);
    }
}
