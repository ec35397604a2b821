//! File descriptors: `ferrite serve` raises its soft `RLIMIT_NOFILE` to the hard limit at
//! start-up (distributions start processes at 1024, far below what a broker with thousands of
//! connections or segments needs, while the hard limit is usually 524288 or more), derives the
//! default `max.connections` from it, and estimates what the broker needs so the start-up line
//! can say when the limit is too low.
//!
//! What a broker holds open: per client connection its socket and, once it fetches from a
//! segment file, the two ends of the pipe it splices through; its data files (segment files,
//! one descriptor each and a second once a read sends from one, and partition directories), at most `--open-files-max` over all
//! shards whatever the partition count (each shard's file cache closes the least recently used
//! beyond its share; files in use by reads in flight may exceed it briefly); each shard's
//! journal files, open for the broker's life and outside that bound; and per shard its
//! io_uring rings, eventfds, listeners and doorbell sockets.

/// Descriptors one client connection can hold: its socket and a splice pipe's two ends.
pub const PER_CONNECTION: u64 = 3;
/// A shard's own: 3 io_uring rings, an eventfd, listeners, doorbell and shutdown sockets, the
/// inter-broker connections of a small cluster.
const PER_SHARD: u64 = 32;
/// The process's own: standard streams, the metrics listener and its connections, the catalog.
const PER_PROCESS: u64 = 64;

/// Raises the soft descriptor limit to the hard one; returns the soft limit in force after.
pub fn raise_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An "unlimited" hard limit is refused by setrlimit for descriptors; the kernel's ceiling
    // is fs.nr_open.
    let hard = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(limit.rlim_cur)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(hard);
        }
    }
    Ok(limit.rlim_cur)
}

/// The default `max.connections` under a descriptor limit of `limit`: a quarter of it, so that
/// connections alone, at three descriptors each at most, can never take the descriptors the
/// partitions' files need. Kafka's default is unlimited; but a broker out of descriptors can no
/// longer open a segment file, so the connection limit is where a flood of clients must stop.
pub fn default_connections_max(limit: u64) -> usize {
    usize::try_from(limit / 4).unwrap_or(usize::MAX).max(1)
}

/// What the broker's data and runtime take in descriptors: bounded by the settings, not by the
/// partitions or segments on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// `--open-files-max`: the data files of every shard together.
    pub open_files_max: u64,
    /// The journal files of every shard together (0 without a journal).
    pub journal_files: u64,
    pub shards: u64,
}

impl Estimate {
    /// Descriptors for the data and the runtime, without connections.
    pub fn files(&self) -> u64 {
        self.open_files_max + self.journal_files + self.shards * PER_SHARD + PER_PROCESS
    }

    /// Descriptors for the data, the runtime and `connections_max` connections.
    pub fn needed(&self, connections_max: usize) -> u64 {
        self.files()
            .saturating_add((connections_max as u64).saturating_mul(PER_CONNECTION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_open_files_bound_and_the_runtime_not_the_data_on_disk() {
        let estimate = Estimate {
            open_files_max: 4000,
            journal_files: 8,
            shards: 2,
        };
        assert_eq!(estimate.files(), 4000 + 8 + 2 * PER_SHARD + PER_PROCESS);
        assert_eq!(estimate.needed(10), estimate.files() + 30);
    }

    #[test]
    fn connections_get_a_quarter_of_the_descriptors() {
        assert_eq!(default_connections_max(1024), 256);
        assert_eq!(default_connections_max(524_288), 131_072);
        assert_eq!(default_connections_max(2), 1, "never zero");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain system call on a local struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, raised);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }
}
