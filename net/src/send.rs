//! Writing a response frame's parts to its socket with as few system calls as possible.
//!
//! Contract: [`write_parts`] writes every byte of `parts`, in order, or fails. While the socket
//! takes data it sends up to `WRITE_PARTS_PER_CALL` parts per call (`sendmsg` over an iovec,
//! non-blocking, so the shard's thread never blocks); when the socket is full, one write
//! through glommio's stream (which waits until the socket is writable) makes progress, and
//! vectored sends resume. The parts are the `Bytes` the storage read returned (slices of cached
//! chunks), so payload bytes are copied once, by the kernel into the socket. Zero-copy send
//! (`MSG_ZEROCOPY`, io_uring `send_zc`) is not used: over loopback the kernel copies anyway, and
//! its completion notifications would add a round trip per frame.

use bytes::Bytes;
use futures::io::{AsyncWriteExt, WriteHalf};
use glommio::net::TcpStream;
use sluice_core::limits::WRITE_PARTS_PER_CALL;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};

/// Writes all of `parts` to the socket `fd`, whose write half is `writer`.
pub async fn write_parts(writer: &mut WriteHalf<TcpStream>, fd: RawFd, parts: &[Bytes]) -> io::Result<()> {
    let mut cursor = Cursor { parts, index: 0, offset: 0 };
    while !cursor.done() {
        match send_vectored(fd, &cursor) {
            Ok(n) => cursor.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Full: glommio's write waits until the socket is writable, then writes some.
                let n = writer.write(cursor.current()).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                cursor.advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One non-blocking `sendmsg` of the next parts from `cursor`.
fn send_vectored(fd: RawFd, cursor: &Cursor<'_>) -> io::Result<usize> {
    let mut slices: [IoSlice<'_>; WRITE_PARTS_PER_CALL] = [IoSlice::new(&[]); WRITE_PARTS_PER_CALL];
    let n = cursor.fill(&mut slices);
    // SAFETY: `fd` is the socket of the stream whose write half the caller holds, so it stays
    // open for the duration of this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    socket.send_vectored_with_flags(&slices[..n], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// A position in a list of parts.
struct Cursor<'a> {
    parts: &'a [Bytes],
    index: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.index >= self.parts.len()
    }

    /// The rest of the current part.
    fn current(&self) -> &'a [u8] {
        &self.parts[self.index][self.offset..]
    }

    /// Fills `slices` with the next non-empty parts; returns how many.
    fn fill<'s>(&self, slices: &mut [IoSlice<'s>]) -> usize
    where
        'a: 's,
    {
        let mut n = 0;
        let mut offset = self.offset;
        for part in &self.parts[self.index..] {
            if n == slices.len() {
                break;
            }
            let rest = &part[offset..];
            offset = 0;
            if !rest.is_empty() {
                slices[n] = IoSlice::new(rest);
                n += 1;
            }
        }
        n
    }

    /// Moves past `n` bytes written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 || (!self.done() && self.parts[self.index].len() == self.offset) {
            let Some(part) = self.parts.get(self.index) else {
                debug_assert_eq!(n, 0, "more bytes written than given");
                return;
            };
            let take = (part.len() - self.offset).min(n);
            self.offset += take;
            n -= take;
            if self.offset == part.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_walks_parts_across_partial_writes() {
        let parts: Vec<Bytes> =
            vec![Bytes::from_static(b"abc"), Bytes::new(), Bytes::from_static(b"defgh"), Bytes::from_static(b"i")];
        let mut c = Cursor { parts: &parts, index: 0, offset: 0 };
        let mut out = Vec::new();
        // Writes of 2 bytes at a time, collected through `fill` as a sendmsg would see them.
        for _ in 0..20 {
            if c.done() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); 4];
            let n = c.fill(&mut slices);
            let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let w = flat.len().min(2);
            out.extend_from_slice(&flat[..w]);
            c.advance(w);
        }
        assert!(c.done());
        assert_eq!(out, b"abcdefghi");
        // At most as many slices as given, empty parts skipped.
        let c = Cursor { parts: &parts, index: 0, offset: 1 };
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(c.fill(&mut two), 2);
        assert_eq!(&*two[0], b"bc");
        assert_eq!(&*two[1], b"defgh");
    }
}
