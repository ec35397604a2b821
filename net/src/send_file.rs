//! Sending a range of a segment file to a socket without copying it through user space.
//!
//! The bytes go from the file into a pipe and from the pipe into the socket with `splice(2)`.
//! The socket side must never block the shard's thread (a slow consumer would stall every
//! connection on the shard), so the socket is switched to non-blocking just for that call, as
//! glommio itself does around `accept`; nothing else runs on the thread meanwhile. Whatever the
//! socket would not take at once is read back out of the pipe and written through glommio,
//! which waits for the socket without blocking. A consumer that keeps up gets every byte
//! zero-copy; one that falls behind costs one copy of what did not fit.
//!
//! Reading the file into the pipe may wait for the disk when the range is not in the page
//! cache (the tail cache holds the recent batches, so this is a catching-up consumer).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use futures::{AsyncWrite, AsyncWriteExt};

/// The pipe size asked for (the kernel may grant less; 1 MiB is its default ceiling).
const PIPE_BYTES_WANTED: i32 = 1 << 20;

/// A pipe to splice through, one per connection that sends file ranges.
pub struct Splicer {
    read_end: OwnedFd,
    write_end: OwnedFd,
    capacity: usize,
    /// Holds what the socket did not take at once.
    overflow: Vec<u8>,
}

impl Splicer {
    pub fn new() -> io::Result<Splicer> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that we now own.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        let granted = unsafe {
            libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES_WANTED);
            libc::fcntl(write_end.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if granted <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Splicer {
            read_end,
            write_end,
            capacity: granted as usize,
            overflow: Vec::new(),
        })
    }

    /// Sends `length` bytes of `file` from `position` to the socket `socket` (whose
    /// descriptor is `socket_fd`; writes that must wait go through `socket`).
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        socket_fd: RawFd,
        socket: &mut W,
        file: &impl AsRawFd,
        position: u64,
        length: u64,
    ) -> io::Result<()> {
        let mut file_offset = i64::try_from(position)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "position beyond i64"))?;
        let mut remaining = length;
        while remaining > 0 {
            let chunk = remaining.min(self.capacity as u64) as usize;
            // SAFETY: valid descriptors; `file_offset` is a live i64 the kernel advances.
            let filled = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    &mut file_offset,
                    self.write_end.as_raw_fd(),
                    std::ptr::null_mut(),
                    chunk,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            if filled < 0 {
                return Err(io::Error::last_os_error());
            }
            if filled == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended inside a range being sent",
                ));
            }
            let filled = filled as usize;
            let sent = splice_to_socket_now(self.read_end.as_raw_fd(), socket_fd, filled)?;
            if sent < filled {
                self.write_pipe_contents(socket, filled - sent).await?;
            }
            remaining -= filled as u64;
        }
        Ok(())
    }

    /// Moves `count` bytes still in the pipe to the socket through a buffer, waiting for the
    /// socket as long as it takes.
    async fn write_pipe_contents<W: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut W,
        count: usize,
    ) -> io::Result<()> {
        self.overflow.resize(count, 0);
        let mut read = 0;
        while read < count {
            // SAFETY: reading into our own buffer, within its length.
            let got = unsafe {
                libc::read(
                    self.read_end.as_raw_fd(),
                    self.overflow[read..].as_mut_ptr().cast(),
                    count - read,
                )
            };
            if got <= 0 {
                return Err(io::Error::last_os_error());
            }
            read += got as usize;
        }
        socket.write_all(&self.overflow[..count]).await
    }
}

/// Splices up to `count` bytes from the pipe to the socket without blocking; returns how many
/// the socket took (0 when its buffer is full).
fn splice_to_socket_now(pipe: RawFd, socket_fd: RawFd, count: usize) -> io::Result<usize> {
    let _nonblocking = NonBlocking::set(socket_fd)?;
    let mut sent = 0;
    while sent < count {
        // SAFETY: valid descriptors, no offsets (pipe and socket have none).
        let moved = unsafe {
            libc::splice(
                pipe,
                std::ptr::null_mut(),
                socket_fd,
                std::ptr::null_mut(),
                count - sent,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if moved > 0 {
            sent += moved as usize;
            continue;
        }
        if moved == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the socket took no bytes",
            ));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::WouldBlock => return Ok(sent),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(error),
        }
    }
    Ok(sent)
}

/// O_NONBLOCK on a descriptor while it lives.
struct NonBlocking {
    fd: RawFd,
    flags: i32,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a descriptor the caller keeps open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking { fd, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        // SAFETY: restores the flags read in `set` on the same open descriptor.
        unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
    }
}
