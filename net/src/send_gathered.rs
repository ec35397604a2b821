//! Sending many memory buffers to a socket with one system call.
//!
//! A reply is a list of parts: a fetch answer alternates a few bytes of partition header with
//! each partition's batches, dozens of parts for a fetch of many partitions. glommio's `write`
//! is one `send` per buffer, and with `TCP_NODELAY` (which the broker sets, as Kafka does) one
//! packet per buffer, so the consumer's kernel and librdkafka handled a packet per batch. Here a
//! run of buffers goes out in one `sendmsg` of up to `IOV_MAX` buffers, with `MSG_DONTWAIT` so
//! the shard's thread never blocks (glommio's sockets are blocking-mode; it does the same in its
//! own `send`). What the socket does not take at once is written through glommio, which waits
//! for room without blocking, and then the rest is tried in one call again.

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use futures::{AsyncWrite, AsyncWriteExt};

/// Buffers per `sendmsg`: Linux's `IOV_MAX`.
const BUFFERS_PER_CALL_MAX: usize = 1024;

/// Sends `buffers`, in order, to the socket `socket_fd` (whose glommio stream is `socket`,
/// used to wait for room). `io_vectors` is scratch space, kept by the caller so that a
/// connection allocates it once.
pub async fn send_all<W: AsyncWrite + Unpin>(
    socket_fd: RawFd,
    socket: &mut W,
    buffers: &[Bytes],
    io_vectors: &mut Vec<libc::iovec>,
) -> io::Result<()> {
    let mut index = 0;
    // Bytes of `buffers[index]` already sent.
    let mut offset = 0;
    while index < buffers.len() {
        if buffers[index].len() == offset {
            index += 1;
            offset = 0;
            continue;
        }
        match send_now(socket_fd, &buffers[index..], offset, io_vectors) {
            Ok(mut sent) => {
                // Move past what went out.
                while sent > 0 {
                    let left = buffers[index].len() - offset;
                    if sent < left {
                        offset += sent;
                        sent = 0;
                    } else {
                        sent -= left;
                        index += 1;
                        offset = 0;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // The socket is full: wait for room while writing the current buffer's rest.
                socket.write_all(&buffers[index][offset..]).await?;
                index += 1;
                offset = 0;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One non-blocking `sendmsg` of `buffers` (the first from `offset`); how many bytes the
/// socket took, or `WouldBlock` when it took none.
fn send_now(
    socket_fd: RawFd,
    buffers: &[Bytes],
    offset: usize,
    io_vectors: &mut Vec<libc::iovec>,
) -> io::Result<usize> {
    io_vectors.clear();
    for (position, buffer) in buffers.iter().take(BUFFERS_PER_CALL_MAX).enumerate() {
        let bytes = if position == 0 {
            &buffer[offset..]
        } else {
            &buffer[..]
        };
        if !bytes.is_empty() {
            io_vectors.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
        }
    }
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = io_vectors.as_mut_ptr();
    message.msg_iovlen = io_vectors.len() as _;
    loop {
        // SAFETY: every iovec points into a live `Bytes` of `buffers`, within its length, for
        // the duration of the call; the kernel only reads them.
        let sent =
            unsafe { libc::sendmsg(socket_fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// More buffers than one call takes, some empty, sent to a socket whose buffer is far
    /// smaller than the total: everything arrives once, in order.
    #[test]
    fn every_byte_arrives_in_order_across_calls_and_a_full_socket() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let buffers: Vec<Bytes> = (0..3000u32)
            .map(|index| {
                let length = if index % 7 == 0 {
                    0
                } else {
                    index as usize % 300
                };
                Bytes::from(vec![(index % 251) as u8; length])
            })
            .collect();
        let expected: Vec<u8> = buffers.iter().flat_map(|buffer| buffer.to_vec()).collect();
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            theirs.read_to_end(&mut received).unwrap();
            received
        });
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let fd = ours.as_raw_fd();
                // SAFETY: the descriptor is handed over to glommio, which owns it from here.
                let mut socket = unsafe {
                    <glommio::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(
                        std::os::fd::IntoRawFd::into_raw_fd(ours),
                    )
                };
                let mut io_vectors = Vec::new();
                send_all(fd, &mut socket, &buffers, &mut io_vectors)
                    .await
                    .unwrap();
                socket.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(reader.join().unwrap(), expected);
    }
}
