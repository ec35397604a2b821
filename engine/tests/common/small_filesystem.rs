//! A small tmpfs for the full-disk tests (here and in `net`, which includes this file), so a
//! log meets ENOSPC after a few hundred kilobytes. Mounting needs root (CAP_SYS_ADMIN), as the
//! CI runner and the README's test command have.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A small tmpfs, unmounted (lazily) when dropped.
pub struct SmallFilesystem {
    mount_point: tempfile::TempDir,
}

impl SmallFilesystem {
    pub fn mount(size_bytes: u64) -> SmallFilesystem {
        let mount_point = tempfile::tempdir().unwrap();
        let target = CString::new(mount_point.path().as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size_bytes}")).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let result = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            result,
            0,
            "mounting a test tmpfs failed ({}); this test needs root",
            std::io::Error::last_os_error()
        );
        SmallFilesystem { mount_point }
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let target = CString::new(self.mount_point.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
