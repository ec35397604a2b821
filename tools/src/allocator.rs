//! The binary's allocator: mimalloc, with freed memory kept for a while before it goes back to
//! the kernel.
//!
//! Why mimalloc: the broker allocates and frees a buffer or two per batch on every shard;
//! glibc's malloc spent ~15 % of a shard's time at 16 partitions (bins, consolidation, trims).
//! mimalloc keeps thread-local free lists (each shard is one thread) and is a well-kept crate.
//!
//! Why the longer purge delay: mimalloc gives memory freed for `purge_delay` (1 s by default)
//! back to the kernel (`MADV_DONTNEED`), and the next allocation there faults it in again,
//! zeroed, as a 2 MiB transparent huge page where mimalloc asked for them. A broker's buffers
//! come and go in cycles of seconds (journal files, fetch responses over thousands of
//! partitions), so at 4 096 partitions the broker took ~6 700 page faults in 8 s and
//! `clear_page_erms` under those faults was ~10 % of its samples; with 10 s, ~900 faults
//! (none with no purging at all, which would keep a burst's peak for good).
//! `MIMALLOC_PURGE_DELAY` in the environment still decides, as mimalloc documents.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` of the bundled mimalloc
/// (`libmimalloc-sys` does not name it); the test below checks it against the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it to the kernel.
const PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

/// Sets the purge delay (see the module documentation) unless the environment sets it.
pub fn keep_freed_memory_for_a_while() {
    let set_by_the_environment = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !set_by_the_environment {
        // SAFETY: mimalloc's options are plain integers it reads atomically; setting one is
        // safe at any time, from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some())
        {
            return;
        }
        // SAFETY: as above; reading an option is always safe.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {MI_OPTION_PURGE_DELAY} should be mimalloc's purge_delay (1 000 ms by \
             default): a new mimalloc moved its options"
        );
        keep_freed_memory_for_a_while();
        // SAFETY: as above.
        let set = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(set, PURGE_DELAY_MS);
    }
}
