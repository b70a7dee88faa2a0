//! `loadgen floor`: the least a server can spend on a write. One monoio worker
//! reads each request and drops its body unread, answering 204: no parsing,
//! no copy, nothing kept. Under the same load as fluxgate, its CPU per point is
//! what receiving the bytes alone costs on this machine at that moment, the
//! floor under any proxy's figure (`scripts/capacity.sh` measures both in one
//! run; tuning.md compares them).
//!
//! Bodies must be framed by `Content-Length` (what `loadgen write` and InfluxDB
//! clients send); a chunked request gets 411 and a malformed head 400, and
//! either closes the connection.

use std::io;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::{self, Partial, MAX_HEAD_BYTES};

/// Bytes read at once per connection.
const READ_BYTES: usize = 1 << 20;

const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

#[derive(Args, Debug)]
pub struct FloorArgs {
    /// Address to listen on. Port 0 picks a free port; the "listening on" line
    /// on stderr gives the real one.
    #[arg(long, default_value = "127.0.0.1:18087")]
    pub listen: SocketAddr,
}

/// Serves until the process is killed.
///
/// # Errors
///
/// If the address cannot be bound or the runtime cannot start.
pub fn run(args: &FloorArgs) -> Result<()> {
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!("loadgen floor listening on {}", listener.local_addr()?);
    serve(listener)
}

/// Serves `listener` on the calling thread, one monoio task per connection
/// (io_uring where the kernel has it, epoll elsewhere).
fn serve(listener: std::net::TcpListener) -> Result<()> {
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .build()
        .context("starting the monoio runtime")?;
    runtime.block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener)?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(serve_connection(stream));
                }
                // Out of descriptors, say: the connections already open go on.
                Err(e) => eprintln!("loadgen floor: accept: {e}"),
            }
        }
    })
}

async fn serve_connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(READ_BYTES);
    let mut discard = Discard::default();
    let mut answers = Vec::new();
    loop {
        let (read, returned) = stream.read(buf).await;
        buf = returned;
        let Ok(1..) = read else { return };
        answers.clear();
        let result = discard.take(&buf, &mut answers);
        if let Err(refusal) = &result {
            answers.extend_from_slice(&refusal.answer());
        }
        if !answers.is_empty() {
            let (written, returned) = stream.write_all(answers).await;
            answers = returned;
            if written.is_err() {
                return;
            }
        }
        if result.is_err() || discard.closing {
            return;
        }
    }
}

/// What the floor does with the bytes of one connection as they arrive: finds
/// each request's head and skips its body.
#[derive(Default)]
struct Discard {
    /// The start of a head that has not ended yet (at most 64 KiB and a byte).
    head: Vec<u8>,
    /// Body bytes of the current request still to skip.
    body_left: usize,
    /// A head was read and its answer is owed once its body is skipped.
    answer_due: bool,
    /// The request answered last asked to close the connection.
    closing: bool,
}

/// Why a connection is answered with an error and closed.
#[derive(Debug)]
enum Refusal {
    BadHead(io::Error),
    Chunked,
}

impl Refusal {
    fn answer(&self) -> Vec<u8> {
        let (status, text) = match self {
            Refusal::BadHead(e) => ("400 Bad Request", e.to_string()),
            Refusal::Chunked => (
                "411 Length Required",
                "loadgen floor reads Content-Length bodies only".to_string(),
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .into_bytes()
    }
}

impl Discard {
    /// Takes the next `bytes` of the connection, appending to `answers` a 204
    /// for each request whose body has now been skipped. A refusal ends the
    /// connection: the caller answers it and closes.
    fn take(&mut self, mut bytes: &[u8], answers: &mut Vec<u8>) -> Result<(), Refusal> {
        loop {
            let skipped = self.body_left.min(bytes.len());
            self.body_left -= skipped;
            bytes = &bytes[skipped..];
            if self.body_left > 0 {
                return Ok(());
            }
            if self.answer_due {
                self.answer_due = false;
                answers.extend_from_slice(NO_CONTENT);
                if self.closing {
                    return Ok(());
                }
            }
            if bytes.is_empty() {
                return Ok(());
            }
            let Some(fields) = self.take_head(&mut bytes)? else {
                return Ok(());
            };
            if fields.chunked {
                return Err(Refusal::Chunked);
            }
            self.body_left = fields.content_length.unwrap_or(0);
            self.answer_due = true;
            self.closing = fields.close;
        }
    }

    /// Reads a head from the start of `bytes` (after the part of it kept from
    /// earlier reads) and advances `bytes` past it; `None` when it has not
    /// ended yet, all of `bytes` then kept.
    fn take_head(&mut self, bytes: &mut &[u8]) -> Result<Option<http::HeadFields>, Refusal> {
        let before = self.head.len();
        let parsed = if before == 0 {
            http::parse_request_head(bytes)
        } else {
            // One byte past the limit is enough to refuse a head that long.
            let room = (MAX_HEAD_BYTES + 1 - before).min(bytes.len());
            self.head.extend_from_slice(&bytes[..room]);
            http::parse_request_head(&self.head)
        };
        match parsed.map_err(Refusal::BadHead)? {
            Partial::Complete(head) => {
                *bytes = &bytes[head.len - before..];
                self.head.clear();
                Ok(Some(head.fields))
            }
            Partial::Incomplete { .. } => {
                // Unless all of `bytes` fit, the head is over the limit and
                // was refused above.
                if before == 0 {
                    self.head.extend_from_slice(bytes);
                }
                *bytes = &[];
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const WRITE: &[u8] =
        b"POST /write?db=x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nm f=1 123\n";

    /// Feeds `wire` to a fresh [`Discard`] in pieces of `step` bytes; returns
    /// the answers and how the connection ended.
    fn feed(wire: &[u8], step: usize) -> (String, Result<(), String>, Discard) {
        let mut discard = Discard::default();
        let mut answers = Vec::new();
        for piece in wire.chunks(step) {
            if let Err(refusal) = discard.take(piece, &mut answers) {
                let text = String::from_utf8(answers).unwrap();
                return (text, Err(format!("{refusal:?}")), discard);
            }
        }
        (String::from_utf8(answers).unwrap(), Ok(()), discard)
    }

    fn no_content(times: usize) -> String {
        std::str::from_utf8(NO_CONTENT).unwrap().repeat(times)
    }

    #[test]
    fn answers_each_request_once_its_body_is_skipped_whatever_the_pieces() {
        let ping = b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n";
        let wire = [ping.as_slice(), WRITE, WRITE, ping].concat();
        for step in [1, 2, 7, 30, 64, wire.len()] {
            let (answers, end, discard) = feed(&wire, step);
            assert_eq!(answers, no_content(4), "step {step}");
            assert!(end.is_ok());
            assert!(discard.head.is_empty() && discard.body_left == 0 && !discard.answer_due);
        }
        // A body cut short is not answered.
        let (answers, _, discard) = feed(&WRITE[..WRITE.len() - 1], 5);
        assert_eq!(answers, "");
        assert_eq!(discard.body_left, 1);
    }

    #[test]
    fn a_large_body_is_skipped_without_being_kept() {
        let mut wire = b"POST /write HTTP/1.1\r\nContent-Length: 3000000\r\n\r\n".to_vec();
        wire.resize(wire.len() + 3_000_000, b'x');
        let (answers, end, discard) = feed(&wire, 65_536);
        assert_eq!(answers, no_content(1));
        assert!(end.is_ok());
        assert!(discard.head.capacity() < 65_536, "only the head was kept");
    }

    #[test]
    fn bad_heads_and_chunked_bodies_are_refused() {
        let (answers, end, _) = feed(b"NOT HTTP\r\n\r\n", 3);
        assert_eq!(answers, "");
        assert!(end.unwrap_err().contains("BadHead"));
        let chunked =
            b"POST /write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nm f=1\r\n0\r\n\r\n";
        let (_, end, _) = feed(chunked, 1000);
        assert_eq!(end.unwrap_err(), "Chunked");
        // A head that never ends is refused past 64 KiB, whatever the pieces.
        let endless = [b"GET /ping HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 70_000]].concat();
        for step in [100, 65_536, endless.len()] {
            let (_, end, discard) = feed(&endless, step);
            assert!(end.unwrap_err().contains("over 65536 bytes"), "step {step}");
            assert!(discard.head.len() <= MAX_HEAD_BYTES + 1);
        }
        assert!(Refusal::Chunked.answer().starts_with(b"HTTP/1.1 411 "));
    }

    #[test]
    fn a_request_that_asks_to_close_is_answered_then_closed() {
        let closing = b"POST /write HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
        let wire = [closing.as_slice(), WRITE].concat();
        let (answers, end, discard) = feed(&wire, wire.len());
        assert_eq!(answers, no_content(1), "nothing read after it");
        assert!(end.is_ok() && discard.closing);
    }

    #[test]
    fn serves_writes_over_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The runtime lives on its own thread until the test process ends.
        std::thread::spawn(move || serve(listener).unwrap());
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut body = b"POST /write?db=x HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n".to_vec();
        body.resize(body.len() + 2_000_000, b'y');
        client.write_all(&body).unwrap();
        client.write_all(WRITE).unwrap();
        let mut answers = vec![0; 2 * NO_CONTENT.len()];
        client.read_exact(&mut answers).unwrap();
        assert_eq!(String::from_utf8(answers).unwrap(), no_content(2));
        client.write_all(b"BAD\r\n\r\n").unwrap();
        let mut refusal = String::new();
        client.read_to_string(&mut refusal).unwrap();
        assert!(refusal.starts_with("HTTP/1.1 400 "), "{refusal}");
        assert!(refusal.contains("Connection: close"), "{refusal}");
    }
}
