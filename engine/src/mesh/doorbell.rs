//! A shard's doorbell: how a peer shard, on another thread, wakes a task of this shard that is
//! waiting on a ring — even when this shard's reactor is asleep in the kernel.
//!
//! # Why a socket pair
//!
//! glommio 0.9 wakes a sleeping reactor from another thread with an eventfd that the reactor
//! watches (its `SleepNotifier`), but that type is crate-private, and glommio's public API reads
//! arbitrary descriptors only through its socket types (`glommio::net`) and files it opens
//! itself by path (`glommio::io`). Its socket read path tries a non-blocking `recv` and then
//! waits with an io_uring `POLL_ADD`, so an eventfd, on which `recv` fails with `ENOTSOCK`,
//! cannot stand in. A Unix stream socket pair can:
//!
//! * the read end becomes a `glommio::net::UnixStream` on the shard's thread, read by one
//!   listener task; while it waits, the reactor has a poll in flight in its io_uring and can
//!   sleep in `io_uring_enter` like for any other I/O;
//! * the write end stays a plain socket shared by every ring that can wake this shard; waking is
//!   one non-blocking one-byte `send` from the waker's thread, which completes the poll and
//!   wakes the reactor.
//!
//! One doorbell per shard, not per ring, keeps descriptors at two per shard rather than four per
//! ordered pair of shards, and lets one byte wake a shard however many rings woke it. The price
//! is that a ring wakes every task of the shard waiting on the mesh, and each looks again; there
//! is at most one such task per ring end, so the cost is bounded by the shard count.
//!
//! Bytes in the socket are a hint, never a count: the ring's sleep word ensures at most one byte
//! per declared sleep, a full socket buffer (`EAGAIN`) already means "wake up", and a stale byte
//! only causes one spurious look.

use super::ring::Notify;
use futures::AsyncReadExt;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::task::Waker;

/// Makes a doorbell: the ringer (shared by every ring that can wake the shard) and the socket
/// that [`ShardDoorbell::start`] listens on.
pub(crate) fn doorbell() -> io::Result<(DoorbellRinger, DoorbellSocket)> {
    let (write_end, read_end) = UnixStream::pair()?;
    Ok((
        DoorbellRinger { socket: write_end },
        DoorbellSocket { socket: read_end },
    ))
}

/// Wakes a shard from any thread. One non-blocking system call per ring.
#[derive(Debug)]
pub(crate) struct DoorbellRinger {
    socket: UnixStream,
}

impl Notify for DoorbellRinger {
    fn notify(&self) {
        let byte = 1_u8;
        loop {
            // SAFETY: the descriptor is owned by `self.socket` and open for `self`'s lifetime;
            // the buffer is one valid byte. `MSG_NOSIGNAL` turns a closed peer into `EPIPE`
            // instead of a process-wide `SIGPIPE`.
            let sent = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    std::ptr::from_ref(&byte).cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent == 1 {
                return;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Full: bytes are already waiting, so the shard will wake. Gone: the shard has
                // stopped listening and nobody is left to wake.
                Some(libc::EAGAIN | libc::EPIPE | libc::ECONNRESET) => return,
                _ => panic!("doorbell send failed on a socket this process owns: {error}"),
            }
        }
    }
}

/// The read end of a doorbell before its shard's executor starts. `Send`, unlike what it becomes.
#[derive(Debug)]
pub(crate) struct DoorbellSocket {
    socket: UnixStream,
}

/// The shard-local side of a doorbell: the waker of each task waiting on a ring end, and the
/// listener task that wakes them all when the bell rings. Lives on one shard's thread.
pub(crate) struct ShardDoorbell {
    wakers: Rc<WakerSlots>,
    /// Dropping the task cancels it, which closes the socket.
    _listener: glommio::Task<()>,
}

impl ShardDoorbell {
    /// Starts listening, with one waker slot for each index in `0..slot_count`.
    ///
    /// # Panics
    ///
    /// If not called on a glommio executor thread.
    pub(crate) fn start(socket: DoorbellSocket, slot_count: usize) -> Rc<Self> {
        // SAFETY: `into_raw_fd` gives up ownership of an open stream socket descriptor, which
        // the glommio stream now owns alone and closes on drop.
        let socket = unsafe { glommio::net::UnixStream::from_raw_fd(socket.socket.into_raw_fd()) };
        let wakers = Rc::new(WakerSlots {
            wakers: RefCell::new((0..slot_count).map(|_| None).collect()),
        });
        let listener = glommio::spawn_local(listen(socket, Rc::clone(&wakers)));
        Rc::new(Self {
            wakers,
            _listener: listener,
        })
    }

    /// Makes `waker` the one woken for `slot` at the next ring, replacing any earlier one.
    pub(crate) fn register(&self, slot: usize, waker: &Waker) {
        let mut wakers = self.wakers.wakers.borrow_mut();
        match &mut wakers[slot] {
            Some(registered) if registered.will_wake(waker) => {}
            entry => *entry = Some(waker.clone()),
        }
    }
}

/// Wakers of the tasks waiting on one shard's ring ends, one slot per ring end, so the memory is
/// fixed when the shard attaches.
struct WakerSlots {
    wakers: RefCell<Box<[Option<Waker>]>>,
}

impl WakerSlots {
    fn wake_all(&self) {
        let slot_count = self.wakers.borrow().len();
        for slot in 0..slot_count {
            // Released before waking, so a waker that runs code on this thread cannot find the
            // slots borrowed.
            let waker = self.wakers.borrow_mut()[slot].take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Bytes read per wake-up: enough to drain every ring end's byte at once in all but huge meshes.
const DRAIN_BYTES_MAX: usize = 64;

async fn listen(mut socket: glommio::net::UnixStream, wakers: Rc<WakerSlots>) {
    let mut buffer = [0_u8; DRAIN_BYTES_MAX];
    loop {
        match socket.read(&mut buffer).await {
            // Every ringer is gone, so no ring can ever wake this shard again.
            Ok(0) => return,
            Ok(_) => wakers.wake_all(),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // A read of a connected socket pair this process owns cannot fail short of a broken
            // invariant; carrying on would strand every waiting task.
            Err(error) => panic!("doorbell read failed: {error}"),
        }
    }
}
