//! Sending a body without copying it: `vmsplice` puts references to the body's
//! pages in a pipe, `splice` moves them from the pipe to the socket. The kernel
//! then reads the pages when it transmits, so the caller must keep them unwritten
//! until the peer has the bytes (see `batch_body`).

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Bodies shorter than this are copied: below a pipe's default capacity, the
/// two extra system calls and the page references cost as much as the copy.
pub const MIN_SPLICE_BYTES: usize = 64 << 10;

/// The pipe's capacity, when the system allows it (`fs.pipe-max-size`, 1 MiB
/// by default): a 1 MiB batch then takes one `vmsplice` and one `splice`.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// A pipe kept between sends. It is empty between calls; after a failure it is
/// closed, so that it holds no page of a failed send.
#[derive(Default)]
pub struct Splicer {
    pipe: Option<Pipe>,
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Splicer {
    /// Sends all of `body` on `stream`, honouring its write timeout.
    ///
    /// # Errors
    /// The system call's error; a timeout is `WouldBlock`, as for `write`.
    pub fn send(&mut self, stream: &TcpStream, body: &[u8]) -> io::Result<()> {
        let result = self.try_send(stream, body);
        if result.is_err() {
            self.pipe = None;
        }
        result
    }

    fn try_send(&mut self, stream: &TcpStream, body: &[u8]) -> io::Result<()> {
        let pipe = match &mut self.pipe {
            Some(pipe) => pipe,
            empty => empty.insert(Pipe::new()?),
        };
        let mut sent = 0;
        while sent < body.len() {
            let rest = &body[sent..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            // SAFETY: `iov` describes `rest`, which outlives the call; the pipe
            // is empty here, so this returns once some pages are in it.
            let in_pipe = unsafe { libc::vmsplice(pipe.write.as_raw_fd(), &iov, 1, 0) };
            let mut in_pipe = usize::try_from(in_pipe).map_err(|_| io::Error::last_os_error())?;
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
                match usize::try_from(moved) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(moved) => in_pipe -= moved,
                    Err(_) => {
                        let error = io::Error::last_os_error();
                        if error.kind() != io::ErrorKind::Interrupted {
                            return Err(error);
                        }
                    }
                }
            }
        }
        Ok(())
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
        splicer.send(&client, &body).unwrap();
        splicer.send(&client, b"and more").unwrap();
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
        let error = splicer.send(&client, &body).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert!(splicer.pipe.is_none());
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (client, server) = connected();
        drop(server);
        let mut splicer = Splicer::default();
        let body = vec![b'x'; 8 << 20];
        assert!(splicer.send(&client, &body).is_err());
        assert!(splicer.pipe.is_none());
    }
}
