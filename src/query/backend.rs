//! Asking a backend's `/query` from a worker: an async HTTP/1.1 client on the
//! worker's monoio runtime, with a per-worker pool of kept-alive connections
//! ([`ConnectionPool`]; nothing shared between workers).
//!
//! [`open`] returns the answer's head and leaves the body on the connection,
//! so a single-backend answer can be streamed to the client as it arrives;
//! whoever reads the body to its end hands the connection back with
//! [`ConnectionPool::put`]. [`fetch`] reads the whole body, for answers that
//! are merged, and hands the connection back itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::chunked::ChunkedDecoder;
use crate::resolve::{self, Lookup};

/// Largest response head accepted from a backend.
const MAX_HEAD_BYTES: usize = 64 << 10;
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Idle connections kept per backend and worker; more are closed.
const MAX_IDLE_PER_BACKEND: usize = 8;

/// One worker's idle keep-alive connections to backends, by `host:port`.
#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: RefCell<HashMap<String, Vec<TcpStream>>>,
}

impl ConnectionPool {
    fn take(&self, authority: &str) -> Option<TcpStream> {
        self.idle.borrow_mut().get_mut(authority)?.pop()
    }

    /// Keeps a connection whose last answer was read to its end.
    pub fn put(&self, authority: &str, stream: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        let streams = idle.entry(authority.to_owned()).or_default();
        if streams.len() < MAX_IDLE_PER_BACKEND {
            streams.push(stream);
        }
    }
}

/// A `/query` request to send to one backend.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// `host:port` of the backend.
    pub authority: String,
    /// Path and query string, e.g. `/query?db=x&q=...`.
    pub target: String,
    pub authorization: Option<String>,
    /// `Accept` header to pass on (CSV answers).
    pub accept: Option<String>,
}

#[derive(Debug)]
pub enum FetchError {
    Connect(std::io::Error),
    Io(std::io::Error),
    Timeout,
    BadResponse(&'static str),
    TooLarge { limit: usize },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Connect(e) => write!(f, "connect: {e}"),
            FetchError::Io(e) => write!(f, "i/o: {e}"),
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::BadResponse(what) => write!(f, "bad response: {what}"),
            FetchError::TooLarge { limit } => write!(
                f,
                "answer larger than {limit} bytes (query.max_response_bytes)"
            ),
        }
    }
}

impl std::error::Error for FetchError {}

/// How the rest of an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// An answer whose body is still (partly) on the connection.
#[derive(Debug)]
pub struct OpenAnswer {
    /// The backend's `host:port`, to hand the connection back to the pool.
    pub authority: String,
    /// The backend lets the connection be reused once the body is read.
    pub reusable: bool,
    pub status: u16,
    pub content_type: Option<String>,
    pub framing: Framing,
    /// Body bytes already read with the head (raw: still chunk-encoded if chunked).
    pub buffered: Vec<u8>,
    pub stream: TcpStream,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Sends the request and reads the answer's head.
///
/// # Errors
/// Connection, timeout and protocol errors; any HTTP status is an answer.
pub async fn open(
    request: &QueryRequest,
    pool: &ConnectionPool,
    timeout: Duration,
) -> Result<OpenAnswer, FetchError> {
    match monoio::time::timeout(timeout, open_inner(request, pool)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout),
    }
}

async fn open_inner(
    request: &QueryRequest,
    pool: &ConnectionPool,
) -> Result<OpenAnswer, FetchError> {
    // A pooled connection the backend closed meanwhile fails before an
    // answer head; that failure is retried once on a fresh connection.
    if let Some(stream) = pool.take(&request.authority) {
        if let Ok(answer) = exchange(request, stream).await {
            return Ok(answer);
        }
    }
    let stream = connect(&request.authority)
        .await
        .map_err(FetchError::Connect)?;
    let _ = stream.set_nodelay(true);
    exchange(request, stream).await
}

/// How often a connect waiting for its host name to resolve looks again; the
/// caller's timeout bounds the wait.
const RESOLVE_POLL: Duration = Duration::from_millis(1);
/// How long one of a host name's several addresses gets to connect.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `authority` (`host:port`), trying its addresses in turn, with the
/// host name resolved off the worker (see [`resolve`]).
async fn connect(authority: &str) -> io::Result<TcpStream> {
    let addrs = loop {
        match resolve::lookup(authority) {
            Lookup::Ready(addrs) => break addrs,
            Lookup::Pending => monoio::time::sleep(RESOLVE_POLL).await,
            Lookup::Failed(reason) => return Err(io::Error::new(io::ErrorKind::NotFound, reason)),
        }
    };
    let mut last_error = None;
    for &addr in addrs.iter() {
        // With more addresses to try, one that drops packets must not use up
        // the whole query's time.
        let attempt = TcpStream::connect_addr(addr);
        let result = if addrs.len() > 1 {
            monoio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {addr}"),
                    ))
                })
        } else {
            attempt.await
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{authority} has no address"),
        )
    }))
}

async fn exchange(request: &QueryRequest, mut stream: TcpStream) -> Result<OpenAnswer, FetchError> {
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fluxgate/{}\r\n",
        request.target,
        request.authority,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(authorization) = &request.authorization {
        head.push_str("Authorization: ");
        head.push_str(authorization);
        head.push_str("\r\n");
    }
    if let Some(accept) = &request.accept {
        head.push_str("Accept: ");
        head.push_str(accept);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let (result, _) = stream.write_all(head.into_bytes()).await;
    result.map_err(FetchError::Io)?;

    let mut buf = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        buf = read_more(&mut stream, buf)
            .await?
            .ok_or(FetchError::BadResponse("closed before an answer"))?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.ok_or(FetchError::BadResponse("no status"))?;
                let mut content_type = None;
                let mut framing = Framing::Close;
                let mut reusable = response.version == Some(1);
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-type") {
                        content_type = Some(String::from_utf8_lossy(header.value).into_owned());
                    } else if header.name.eq_ignore_ascii_case("content-length") {
                        let length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or(FetchError::BadResponse("invalid Content-Length"))?;
                        framing = Framing::Length(length);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                        && header.value.eq_ignore_ascii_case(b"chunked")
                    {
                        framing = Framing::Chunked;
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        reusable = !header.value.eq_ignore_ascii_case(b"close");
                    }
                }
                if status == 204 || status == 304 {
                    framing = Framing::Length(0);
                }
                buf.drain(..head_len);
                return Ok(OpenAnswer {
                    authority: request.authority.clone(),
                    reusable: reusable && framing != Framing::Close,
                    status,
                    content_type,
                    framing,
                    buffered: buf,
                    stream,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Err(FetchError::BadResponse("answer head too large"))
            }
            Err(_) => return Err(FetchError::BadResponse("malformed answer head")),
        }
    }
}

/// Sends the request and reads the whole answer, at most `max_body` bytes of body.
///
/// # Errors
/// As [`open`], and `TooLarge`.
pub async fn fetch(
    request: &QueryRequest,
    pool: &ConnectionPool,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, FetchError> {
    let read = async {
        let mut answer = open_inner(request, pool).await?;
        let mut body = Vec::new();
        let mut sink = BodyReader::new(answer.framing);
        let mut pending = std::mem::take(&mut answer.buffered);
        loop {
            if sink.feed(&pending, &mut body, max_body)? {
                if answer.reusable {
                    pool.put(&answer.authority, answer.stream);
                }
                break;
            }
            pending.clear();
            match read_more(&mut answer.stream, pending).await? {
                Some(more) => pending = more,
                None if answer.framing == Framing::Close => break,
                None => return Err(FetchError::BadResponse("answer cut short")),
            }
        }
        Ok(Answer {
            status: answer.status,
            content_type: answer.content_type,
            body,
        })
    };
    match monoio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout),
    }
}

/// Tracks the end of a body as its bytes arrive, optionally keeping them decoded.
pub struct BodyReader {
    framing: Framing,
    /// Body bytes still expected (Length framing).
    remaining: usize,
    decoder: ChunkedDecoder,
}

impl BodyReader {
    pub fn new(framing: Framing) -> BodyReader {
        BodyReader {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::new(),
        }
    }

    /// Appends the decoded body bytes in `input` to `out`; true once the body is complete.
    ///
    /// # Errors
    /// A malformed chunked body, or more than `max` bytes.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<bool, FetchError> {
        match self.framing {
            Framing::Length(_) => {
                let take = input.len().min(self.remaining);
                if out.len() + take > max {
                    return Err(FetchError::TooLarge { limit: max });
                }
                out.extend_from_slice(&input[..take]);
                self.remaining -= take;
                Ok(self.remaining == 0)
            }
            Framing::Chunked => {
                self.decoder.decode(input, out, max).map_err(|e| match e {
                    crate::chunked::ChunkedError::TooLarge { limit } => {
                        FetchError::TooLarge { limit }
                    }
                    _ => FetchError::BadResponse("malformed chunked answer"),
                })?;
                Ok(self.decoder.is_done())
            }
            Framing::Close => {
                if out.len() + input.len() > max {
                    return Err(FetchError::TooLarge { limit: max });
                }
                out.extend_from_slice(input);
                Ok(false)
            }
        }
    }
}

/// Reads more bytes onto `buf`; `None` at end of stream.
pub async fn read_more(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
) -> Result<Option<Vec<u8>>, FetchError> {
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
        buf.reserve(READ_CHUNK_BYTES);
    }
    let len = buf.len();
    let (result, slice) = stream.read(buf.slice_mut(len..)).await;
    let buf = slice.into_inner();
    match result {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(buf)),
        Err(e) => Err(FetchError::Io(e)),
    }
}
