//! Sending a body without copying it: `vmsplice` puts references to the body's
//! pages in a pipe, `splice` moves them from the pipe to the socket. The kernel
//! then reads the pages when it transmits, so the caller must keep them unwritten
//! until the peer has the bytes (see `batch_body`).
//!
//! `splice` to a socket the peer has reset raises SIGPIPE (there is no
//! `MSG_NOSIGNAL` for it). Rust's runtime ignores SIGPIPE before `main`, and
//! fluxgate leaves it so: the call then fails with `EPIPE` like any write.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The pipe's capacity when the system allows it: a 1 MiB batch (the default
/// size) then takes one `vmsplice` and one `splice`. With 256 KiB pipes a
/// build did 15 % fewer points per CPU-second side by side. Pipes count
/// against the user's `fs.pipe-user-pages-soft` (64 MiB by default); past it,
/// a smaller pipe only means more rounds.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// A pipe kept between sends. It is empty between calls; after a failure it is
/// closed, so that it holds no page of a failed send.
#[derive(Default)]
pub struct Splicer {
    pipe: Option<Pipe>,
    /// Making a pipe failed once (logged): the owner copies instead.
    broken: bool,
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Splicer {
    /// Whether [`Splicer::send`] can be used: the pipe exists or could be made.
    /// A failure to make one (out of descriptors, say) is the proxy's own
    /// problem, not the backend's, so the caller copies instead.
    pub fn is_ready(&mut self) -> bool {
        if self.pipe.is_none() && !self.broken {
            match Pipe::new() {
                Ok(pipe) => self.pipe = Some(pipe),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make a pipe: batches to this backend are copied, not lent");
                    self.broken = true;
                }
            }
        }
        self.pipe.is_some()
    }

    /// Sends all of `body` on `stream`, honouring its write timeout. After an
    /// error the pipe is closed and made again by the next [`Splicer::is_ready`].
    ///
    /// # Safety
    /// The kernel reads `body`'s pages after this returns, until the peer has
    /// the bytes: they must not be written (nor freed to be reused) before then.
    ///
    /// # Errors
    /// The system call's error (a timeout is `WouldBlock`, as for `write`), or
    /// `NotConnected` without a pipe ([`Splicer::is_ready`] was false).
    pub unsafe fn send(&mut self, stream: &TcpStream, body: &[u8]) -> io::Result<()> {
        let result = self.try_send(stream, body);
        if result.is_err() {
            self.pipe = None;
        }
        result
    }

    fn try_send(&mut self, stream: &TcpStream, body: &[u8]) -> io::Result<()> {
        let Some(pipe) = &self.pipe else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut sent = 0;
        while sent < body.len() {
            let rest = &body[sent..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            // SAFETY: `iov` describes `rest`, which is valid for the call (what
            // happens to its pages after is the caller's contract); the pipe
            // is empty here, so this returns once some pages are in it.
            let in_pipe = unsafe { libc::vmsplice(pipe.write.as_raw_fd(), &iov, 1, 0) };
            let Some(mut in_pipe) = bytes_moved(in_pipe)? else {
                continue;
            };
            sent += in_pipe;
            while in_pipe > 0 {
                // SAFETY: plain file descriptors; null offsets mean "the pipe's
                // and the socket's own position".
                let moved = unsafe {
                    libc::splice(
                        pipe.read.as_raw_fd(),
                        std::ptr::null_mut(),
                        stream.as_raw_fd(),
                        std::ptr::null_mut(),
                        in_pipe,
                        libc::SPLICE_F_MOVE,
                    )
                };
                in_pipe -= bytes_moved(moved)?.unwrap_or(0);
            }
        }
        Ok(())
    }
}

/// What a `vmsplice`, `splice` or `send` call returned: the bytes it moved,
/// `None` when a signal interrupted it (call again), an error for a failure or
/// for no progress at all.
pub(super) fn bytes_moved(returned: isize) -> io::Result<Option<usize>> {
    match usize::try_from(returned) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(moved) => Ok(Some(moved)),
        Err(_) => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe (the limit is lower, or the user's pipe quota is used up)
        // only means more rounds.
        // SAFETY: F_SETPIPE_SZ on our own pipe.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(Pipe { read, write })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn sends_every_byte_in_order_across_many_pipe_loads() {
        let (client, mut server) = connected();
        let body: Vec<u8> = (0..5 * PIPE_BYTES as usize + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            got
        });
        let mut splicer = Splicer::default();
        assert!(splicer.is_ready());
        // SAFETY: neither buffer is written again.
        unsafe {
            splicer.send(&client, &body).unwrap();
            splicer.send(&client, b"and more").unwrap();
        }
        drop(client);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), body.len() + 8);
        assert!(got[..body.len()] == body[..], "bytes differ");
        assert_eq!(&got[body.len()..], b"and more");
    }

    #[test]
    fn a_peer_that_reads_nothing_times_the_send_out_and_the_pipe_is_dropped() {
        let (client, _server) = connected();
        client
            .set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // More than the socket buffers on both sides can take.
        let body = vec![b'x'; 64 << 20];
        let mut splicer = Splicer::default();
        assert!(splicer.is_ready());
        // SAFETY: `body` is leaked below, never written or freed.
        let error = unsafe { splicer.send(&client, &body) }.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert!(splicer.pipe.is_none());
        assert!(splicer.is_ready(), "a new pipe for the next send");
        std::mem::forget(body);
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (client, server) = connected();
        drop(server);
        let mut splicer = Splicer::default();
        let body = vec![b'x'; 8 << 20];
        assert!(splicer.is_ready());
        // SAFETY: `body` is leaked below, never written or freed.
        assert!(unsafe { splicer.send(&client, &body) }.is_err());
        assert!(splicer.pipe.is_none());
        std::mem::forget(body);
    }
}
