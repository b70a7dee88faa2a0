//! One HTTP/1.1 connection: the keep-alive loop, reading heads and bodies into
//! the connection's reused buffers, timeouts, and writing the answers.
//!
//! `buf` holds the request head followed by a Content-Length body, so such a
//! body is never copied before the line scanner reads it; chunked bodies are
//! decoded into `body`. Bytes of a pipelined next request stay at the front of
//! `buf` for the next round.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::request::{parse_head, refused_path, Framing, Head, Method};
use super::response::{Body, CONTINUE};
use super::worker::Worker;
use crate::api;
use crate::api::early::EarlyIngest;
use crate::chunked::ChunkedDecoder;
use crate::error::ApiError;
use crate::query::backend::{BodyReader, ConnectionPool, Framing as AnswerFraming, OpenAnswer};
use crate::stats::Endpoint;

/// Initial read buffer: a request head and a small body fit in one read.
const INITIAL_BUFFER_BYTES: usize = 16 << 10;
/// Buffers grown past this by a large body are released after the request, so
/// idle keep-alive connections do not pin big bodies' memory.
const RETAINED_BUFFER_BYTES: usize = 1 << 20;
/// How long, and how much, a refused request's remaining body is read and
/// discarded before closing, so the client gets to read our answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 256 << 20;
/// Smallest growth of a full buffer.
const MIN_READ_BYTES: usize = 4096;

enum ReadEnd {
    Eof,
    TimedOut,
    Stopping,
    Failed,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    body: Vec<u8>,
    /// What a write body in `buf` had ingested while the rest of it arrived.
    early: EarlyIngest,
    out: Vec<u8>,
    /// Longest wait for the client to take bytes we write (`server.read_timeout`):
    /// a client that stops reading cannot pin the connection.
    write_timeout: Duration,
}

/// Serves requests on `stream` until the client closes it, a timeout, an error
/// that leaves the stream unusable, or shutdown.
pub async fn serve(stream: TcpStream, worker: &Worker) {
    // `[server]` cannot change on reload: the connection keeps these.
    let server = worker.generation().config.server.clone();
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(INITIAL_BUFFER_BYTES),
        body: Vec::new(),
        early: EarlyIngest::default(),
        out: Vec::with_capacity(1024),
        write_timeout: server.read_timeout,
    };
    let max_header_bytes = server.max_header_bytes.as_usize();
    let max_body_bytes = server.max_body_bytes.as_usize();
    loop {
        // The head: idle timeout (and shutdown) until its first byte, read timeout after;
        // the whole request is due `request_timeout` after its first byte.
        let mut deadline = (!conn.buf.is_empty()).then(|| Instant::now() + server.request_timeout);
        let head = loop {
            match parse_head(&conn.buf, max_header_bytes, max_body_bytes) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => return conn.refuse(worker, &e).await,
            }
            let idle = conn.buf.is_empty();
            let (wait, stop_on_shutdown) = match deadline {
                None => (server.idle_timeout, Some(worker)),
                Some(deadline) => (until(deadline, server.read_timeout), None),
            };
            if let Err(end) = conn.read_more(wait, stop_on_shutdown).await {
                if let (ReadEnd::TimedOut, false) = (end, idle) {
                    conn.refuse(worker, &ApiError::ReadTimeout).await;
                }
                return;
            }
            deadline.get_or_insert_with(|| Instant::now() + server.request_timeout);
        };
        let deadline = deadline.expect("a head was read");

        // Latency is measured from a complete head to the answer ready to send
        // (to its last byte sent, for an answer streamed from a backend).
        let started = Instant::now();
        let endpoint = Endpoint::from_path(head.path(&conn.buf));
        let record = |status: u16| {
            worker
                .stats
                .record_request(endpoint, status, started.elapsed())
        };
        // A write waits for room in the writer queues before its body is read.
        // Refused with the body unread: counted, and the connection closed.
        let body_pass = match api::write::admit_body(worker, &head, &conn.buf).await {
            Ok(pass) => pass,
            Err(e) => {
                record(e.status());
                return conn.fail(&e).await;
            }
        };
        // Time spent waiting for room is not the client's.
        let deadline = deadline + started.elapsed();
        let body_end = match conn
            .read_body(worker, &head, server.read_timeout, deadline, max_body_bytes)
            .await
        {
            Ok(end) => end,
            Err(Some(e)) => {
                record(e.status());
                return conn.fail(&e).await;
            }
            Err(None) => return,
        };

        let body: &[u8] = match head.framing {
            Framing::Chunked => &conn.body,
            _ => &conn.buf[head.len..body_end],
        };
        let response =
            api::handle(worker, &head, &conn.buf, body, &mut conn.early, body_pass).await;
        // A request answered without its early batches (refused, failed) leaves them unsent.
        conn.early.clear();

        let keep_alive =
            head.keep_alive && response.keeps_connection() && !worker.stopping.is_fired();
        conn.out.clear();
        let head_only = head.method == Method::Head;
        response.encode(&mut conn.out, keep_alive, head_only);
        // An answer made here is counted before it goes out, so a client holding
        // it finds it in `/metrics`; a proxied one once the backend's body is through.
        let streamed = matches!(response.body, Body::Proxied(_)) && !head_only;
        if !streamed {
            record(response.status);
        }
        let mut written = conn.write_out().await;
        if let (Body::Proxied(answer), Ok(()), false) = (response.body, &written, head_only) {
            written = conn
                .stream_answer(
                    *answer,
                    &worker.query_connections,
                    worker.generation().config.query.timeout,
                )
                .await;
        }
        if streamed {
            record(response.status);
        }
        if written.is_err() || !keep_alive {
            return;
        }
        conn.consume(body_end);
    }
}

/// How long to wait for the next bytes: `read_timeout`, or less when the
/// request's deadline comes first (zero once it has passed: the read times out).
fn until(deadline: Instant, read_timeout: Duration) -> Duration {
    read_timeout.min(deadline.saturating_duration_since(Instant::now()))
}

impl Conn {
    /// Reads more bytes onto the end of `buf`, waiting at most `wait`.
    /// With `stop_on_shutdown`, gives up as soon as the worker is stopping.
    async fn read_more(
        &mut self,
        wait: Duration,
        stop_on_shutdown: Option<&Worker>,
    ) -> Result<usize, ReadEnd> {
        // A Content-Length body has its exact space reserved already; grow
        // (geometrically) only when no space is left at all, so the end of a
        // large body never doubles the buffer.
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(self.buf.capacity().max(MIN_READ_BYTES));
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let read = monoio::time::timeout(wait, self.stream.read(buf.slice_mut(len..)));
        let result = match stop_on_shutdown {
            Some(worker) => monoio::select! {
                result = read => result,
                _ = worker.stopping.wait() => return Err(ReadEnd::Stopping),
            },
            None => read.await,
        };
        // On timeout or shutdown the buffer went down with the cancelled read;
        // the connection ends here, so nothing needs it.
        let Ok((result, slice)) = result else {
            return Err(ReadEnd::TimedOut);
        };
        self.buf = slice.into_inner();
        match result {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(n) => Ok(n),
            Err(_) => Err(ReadEnd::Failed),
        }
    }

    /// Reads the body announced by `head`. Returns the end of the request in
    /// `buf` (head plus Content-Length body; only the head for chunked bodies,
    /// whose decoded bytes are in `self.body`). A plain write body's points are
    /// ingested between reads, while the rest is on its way (`early`).
    /// `Err(None)` means the connection ended without anything left to answer.
    async fn read_body(
        &mut self,
        worker: &Worker,
        head: &Head,
        wait: Duration,
        deadline: Instant,
        max_body_bytes: usize,
    ) -> Result<usize, Option<ApiError>> {
        let sent_continue =
            head.expect_continue && head.framing != Framing::None && self.buf.len() == head.len;
        if sent_continue {
            self.out.clear();
            self.out.extend_from_slice(CONTINUE);
            self.write_out().await.map_err(|_| None)?;
        }
        match head.framing {
            Framing::None => Ok(head.len),
            Framing::Length(length) => {
                let end = head.len + length;
                // Allocate only for bytes that are coming: the length was checked
                // against max_body_bytes when the head was parsed.
                self.buf.reserve(end.saturating_sub(self.buf.len()));
                if self.buf.len() < end {
                    self.early.begin(worker, head, &self.buf, length);
                }
                while self.buf.len() < end {
                    if self.early.is_active() {
                        // Bytes already here are taken first, while the kernel's
                        // copy of them is warm; the wait for the next ones is
                        // what early ingestion fills.
                        if self.read_ready().map_err(|()| None)? {
                            continue;
                        }
                        self.early.advance(worker, &self.buf[head.len..]);
                    }
                    self.read_body_bytes(until(deadline, wait)).await?;
                }
                Ok(end)
            }
            Framing::Chunked => {
                self.body.clear();
                let mut decoder = ChunkedDecoder::new();
                let mut pos = head.len;
                loop {
                    pos += decoder
                        .decode(&self.buf[pos..], &mut self.body, max_body_bytes)
                        .map_err(|e| Some(e.into()))?;
                    if decoder.is_done() {
                        break;
                    }
                    // Everything after the head was decoded: reuse that space.
                    self.buf.truncate(head.len);
                    pos = head.len;
                    self.read_body_bytes(until(deadline, wait)).await?;
                }
                // Keep a pipelined next request right after the head.
                self.buf.drain(head.len..pos);
                Ok(head.len)
            }
        }
    }

    /// Reads what the socket holds right now into `buf`'s spare room, without
    /// waiting: whether there was anything. `Err` at the end of the stream or
    /// on an error.
    fn read_ready(&mut self) -> Result<bool, ()> {
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`,
        // memory `buf` owns; only the bytes it reports written are used.
        let read = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match read {
            0 => Err(()),
            n if n > 0 => {
                // SAFETY: the kernel initialised these `n` bytes.
                unsafe { self.buf.set_len(self.buf.len() + n as usize) };
                Ok(true)
            }
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
                _ => Err(()),
            },
        }
    }

    async fn read_body_bytes(&mut self, wait: Duration) -> Result<(), Option<ApiError>> {
        match self.read_more(wait, None).await {
            Ok(_) => Ok(()),
            Err(ReadEnd::TimedOut) => Err(Some(ApiError::ReadTimeout)),
            Err(_) => Err(None),
        }
    }

    /// Drops the answered request from `buf`, keeping pipelined bytes.
    fn consume(&mut self, end: usize) {
        if self.buf.capacity() > RETAINED_BUFFER_BYTES {
            let mut fresh = Vec::with_capacity(INITIAL_BUFFER_BYTES.max(self.buf.len() - end));
            fresh.extend_from_slice(&self.buf[end..]);
            self.buf = fresh;
        } else {
            self.buf.drain(..end);
        }
        if self.body.capacity() > RETAINED_BUFFER_BYTES {
            self.body = Vec::new();
        }
    }

    /// Copies a backend's answer body to the client as it arrives, as the
    /// backend framed it (chunk encoding is passed through; the decoder only
    /// finds where the body ends).
    /// `read_timeout` bounds each wait for the backend's next bytes.
    async fn stream_answer(
        &mut self,
        answer: OpenAnswer,
        pool: &ConnectionPool,
        read_timeout: Duration,
    ) -> io::Result<()> {
        let OpenAnswer {
            authority,
            reusable,
            framing,
            buffered,
            mut stream,
            ..
        } = answer;
        let mut tracker = BodyReader::new(framing);
        let mut scratch = Vec::new();
        let mut pending = buffered;
        loop {
            scratch.clear();
            let done = match framing {
                // Only the end matters: decoded bytes are dropped.
                AnswerFraming::Chunked | AnswerFraming::Length(_) => tracker
                    .feed(&pending, &mut scratch, usize::MAX)
                    .map_err(|e| io::Error::other(e.to_string()))?,
                AnswerFraming::Close => false,
            };
            let to_send = match framing {
                // Never send bytes past the announced length.
                AnswerFraming::Length(_) => pending.len().min(scratch.len()),
                _ => pending.len(),
            };
            if to_send > 0 {
                pending.truncate(to_send);
                pending = self.write_all(pending).await?;
            }
            if done {
                if reusable {
                    pool.put(&authority, stream);
                }
                return Ok(());
            }
            pending.clear();
            let read = crate::query::backend::read_more(&mut stream, pending);
            let Ok(read) = monoio::time::timeout(read_timeout, read).await else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "backend stalled mid-answer",
                ));
            };
            match read {
                Ok(Some(more)) => pending = more,
                Ok(None) if framing == AnswerFraming::Close => return Ok(()),
                Ok(None) => return Err(io::Error::other("backend closed its answer early")),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }

    async fn write_out(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let out = self.write_all(out).await?;
        self.out = out;
        Ok(())
    }

    /// Writes all of `bytes` within `write_timeout`; gives the buffer back.
    async fn write_all(&mut self, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        match monoio::time::timeout(self.write_timeout, self.stream.write_all(bytes)).await {
            Ok((Ok(_), bytes)) => Ok(bytes),
            Ok((Err(e), _)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
    }

    /// [`Conn::fail`] for a request whose head was not complete or did not
    /// parse, counted by the path its request line names.
    async fn refuse(&mut self, worker: &Worker, error: &ApiError) {
        let endpoint = Endpoint::from_path(refused_path(&self.buf));
        worker.stats.count_request(endpoint, error.status());
        self.fail(error).await;
    }

    /// Answers with an error and ends the connection.
    ///
    /// The client may still be sending a body we refused; closing with unread
    /// bytes makes the kernel reset the connection, and the client would see
    /// the reset instead of our answer. So: answer, half-close, and discard what
    /// still arrives for a bounded time and size (a "lingering close").
    async fn fail(&mut self, error: &ApiError) {
        self.out.clear();
        error.response().encode(&mut self.out, false, false);
        if self.write_out().await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        let deadline = std::time::Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            let Some(wait) = deadline.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            self.buf.clear();
            match self.read_more(wait, None).await {
                Ok(n) => discarded += n,
                Err(_) => break,
            }
        }
    }
}
