//! A small blocking HTTP/1.1 client for one backend, over one keep-alive connection.
//!
//! Writer threads are plain threads (they block on the queue and on the backend),
//! so this client is synchronous: std `TcpStream`, read/write timeouts, a reused
//! response buffer. It speaks just what InfluxDB's `/write` and `/ping` need.
//! A large batch body is lent to the kernel instead of copied (see `batch_body`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::batch::{Batch, BatchKey};
use crate::batch_body::{BODY_COUNTS, MIN_LENT_BYTES};
use crate::chunked::{ChunkedDecoder, ChunkedError};
use crate::config::BackendUrl;
use crate::urlencoded;

use super::splice::{bytes_moved, Splicer};

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;
/// Largest response body kept; InfluxDB's write errors are a few hundred bytes,
/// and an error body is only logged.
const MAX_RESPONSE_BODY_BYTES: usize = 1 << 20;
const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub enum ClientError {
    Connect(io::Error),
    /// Sending or receiving failed, including timeouts.
    Io(io::Error),
    /// The backend answered something that is not HTTP/1.x we understand.
    BadResponse(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Io(e) if is_timeout(e) => f.write_str("timed out"),
            ClientError::Io(e) => write!(f, "i/o: {e}"),
            ClientError::BadResponse(what) => write!(f, "bad response: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A backend's answer: status and (bounded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text for logs, lossy.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

pub struct BackendClient {
    url: BackendUrl,
    timeout: Duration,
    /// The backend's own credentials (`[[backends]] username`), sent instead
    /// of any that came with a batch.
    authorization: Option<String>,
    stream: Option<TcpStream>,
    /// Request head being written, reused.
    head: String,
    /// Bytes read from the backend, reused.
    read_buf: Vec<u8>,
    splicer: Splicer,
    /// The current exchange has lent pages of its body to the socket.
    lent_pages: bool,
    /// The last request lent pages on an exchange that may have left them in a
    /// socket's queue (see [`BackendClient::request`]).
    lent_pages_at_risk: bool,
    /// Pages were lent to an exchange answered with another status than 2xx
    /// on a connection kept alive: safe once a request after it is answered
    /// on that connection ([`BackendClient::confirm_taken`]).
    lent_pages_unconfirmed: bool,
}

impl BackendClient {
    pub fn new(url: BackendUrl, timeout: Duration, authorization: Option<String>) -> BackendClient {
        BackendClient {
            url,
            timeout,
            authorization,
            stream: None,
            head: String::with_capacity(512),
            read_buf: Vec::with_capacity(4096),
            splicer: Splicer::default(),
            lent_pages: false,
            lent_pages_at_risk: false,
            lent_pages_unconfirmed: false,
        }
    }

    /// POSTs a batch to the backend's `/write`, gzipped (once per batch) if
    /// `gzip`. A large plain body is lent to the socket, not copied; unless the
    /// backend is then seen to take every byte, the batch is kept from reusing
    /// the body's memory ([`Batch::keep_pages_from_reuse`]).
    ///
    /// # Errors
    /// Connection, I/O and protocol errors; any HTTP status is an `Ok`.
    pub fn post_batch(&mut self, batch: &Batch, gzip: bool) -> Result<Response, ClientError> {
        self.write_head(&batch.key, gzip);
        if gzip {
            return self.request(batch.gzipped(), Send::Copy);
        }
        let body = &batch.body[..];
        if !batch.body.is_lendable() || body.len() < MIN_LENT_BYTES {
            return self.request(body, Send::Copy);
        }
        // Armed before the first page is lent, so that even unwinding leaves
        // the pages alone.
        let at_risk = PagesAtRisk(batch);
        let result = self.request(body, Send::Lend);
        // A refusal (say a field type conflict) keeps the body from reuse
        // only if the backend may not have read it all.
        if self.lent_pages_unconfirmed && !self.lent_pages_at_risk && !self.confirm_taken() {
            self.lent_pages_at_risk = true;
        }
        if !self.lent_pages_at_risk {
            std::mem::forget(at_risk);
        }
        result
    }

    fn write_head(&mut self, key: &BatchKey, gzip: bool) {
        self.head.clear();
        self.head.push_str("POST ");
        self.head.push_str(&self.url.path_prefix);
        self.head.push_str("/write?db=");
        urlencoded::encode_into(&key.db, &mut self.head);
        if let Some(rp) = &key.rp {
            self.head.push_str("&rp=");
            urlencoded::encode_into(rp, &mut self.head);
        }
        self.head.push_str("&precision=");
        self.head.push_str(key.precision.as_param());
        self.head
            .push_str(" HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\n");
        if gzip {
            self.head.push_str("Content-Encoding: gzip\r\n");
        }
        if let Some(authorization) = self
            .authorization
            .as_deref()
            .or(key.authorization.as_deref())
        {
            self.head.push_str("Authorization: ");
            self.head.push_str(authorization);
            self.head.push_str("\r\n");
        }
    }

    /// GETs `/ping`, the health probe.
    ///
    /// # Errors
    /// As [`BackendClient::post_write`].
    pub fn ping(&mut self) -> Result<Response, ClientError> {
        self.get("/ping")
    }

    /// GETs `path_and_query` (below the URL's path prefix).
    ///
    /// # Errors
    /// As [`BackendClient::post_write`].
    pub fn get(&mut self, path_and_query: &str) -> Result<Response, ClientError> {
        self.write_get_head(path_and_query);
        self.request(b"", Send::Copy)
    }

    /// Whether a `/ping` on the connection kept after a lent body's refusal is
    /// answered on it. A backend reads a connection's requests in order, so it
    /// then read the refused one whole: no page of the body is left in a
    /// socket queue (on a network, its acknowledgement came before the answer;
    /// on loopback, the backend's reading released them). As with a 2xx, this
    /// trusts that whatever answers is what read the body, not a relay on the
    /// same host that splices bodies on and answers `/ping` itself.
    fn confirm_taken(&mut self) -> bool {
        if self.stream.is_none() {
            return false;
        }
        self.write_get_head("/ping");
        self.finish_head(0);
        let confirmed = self.try_exchange(b"", Send::Copy).is_ok();
        if !confirmed {
            self.stream = None;
        }
        confirmed
    }

    /// Starts `self.head` as a GET of `path_and_query` (below the URL's path
    /// prefix).
    fn write_get_head(&mut self, path_and_query: &str) {
        self.head.clear();
        self.head.push_str("GET ");
        self.head.push_str(&self.url.path_prefix);
        self.head.push_str(path_and_query);
        self.head.push_str(" HTTP/1.1\r\n");
        if let Some(authorization) = &self.authorization {
            self.head.push_str("Authorization: ");
            self.head.push_str(authorization);
            self.head.push_str("\r\n");
        }
    }

    /// Finishes the head in `self.head` and sends it with `body`. A kept-alive
    /// connection that the backend closed meanwhile fails on first use; that one
    /// failure is retried on a fresh connection before it counts.
    ///
    /// With `Send::Lend`, `lent_pages_at_risk` says afterwards whether the
    /// kernel may still read `body`'s pages: some exchange lent them and ended
    /// in an error, a timeout, a status other than 2xx with the connection
    /// closed, or a retry after any of those. A 2xx means the backend read
    /// every byte; another status on a kept connection leaves them
    /// `lent_pages_unconfirmed`.
    fn request(&mut self, body: &[u8], send: Send) -> Result<Response, ClientError> {
        self.finish_head(body.len());
        self.lent_pages_at_risk = false;
        self.lent_pages_unconfirmed = false;
        let reused = self.stream.is_some();
        match self.exchange(body, send) {
            Err(ClientError::Io(_)) if reused => {
                self.stream = None;
                self.exchange(body, send)
            }
            result => result,
        }
    }

    /// Ends the head in `self.head` for a body of `len` bytes.
    fn finish_head(&mut self, len: usize) {
        use std::fmt::Write as _;
        let _ = write!(
            self.head,
            "Host: {}\r\nUser-Agent: fluxgate/{}\r\nContent-Length: {len}\r\n\r\n",
            self.url.authority,
            env!("CARGO_PKG_VERSION"),
        );
    }

    fn exchange(&mut self, body: &[u8], send: Send) -> Result<Response, ClientError> {
        self.lent_pages = false;
        let result = self.try_exchange(body, send);
        if result.is_err() {
            self.stream = None;
        }
        let answered_2xx = matches!(&result, Ok(response) if (200..300).contains(&response.status));
        if self.lent_pages && !answered_2xx {
            if result.is_ok() && self.stream.is_some() {
                self.lent_pages_unconfirmed = true;
            } else {
                self.lent_pages_at_risk = true;
            }
        }
        result
    }

    fn try_exchange(&mut self, body: &[u8], send: Send) -> Result<Response, ClientError> {
        if self.stream.is_none() {
            self.stream = Some(self.connect()?);
        }
        let stream = self.stream.as_mut().expect("connected above");
        send_head(stream, self.head.as_bytes(), !body.is_empty()).map_err(ClientError::Io)?;
        if send == Send::Lend && self.splicer.is_ready() {
            self.lent_pages = true;
            BODY_COUNTS.lent.fetch_add(1, Ordering::Relaxed);
            // SAFETY: only `post_batch` lends, and only a mapped batch body,
            // whose memory is reused only if `PagesAtRisk` was disarmed: after
            // every exchange that lent it ended in a 2xx, or in another answer
            // on a connection where a later answer showed it was read whole.
            unsafe { self.splicer.send(stream, body) }.map_err(ClientError::Io)?;
        } else {
            stream.write_all(body).map_err(ClientError::Io)?;
        }
        let (response, keep_alive) = read_response(stream, &mut self.read_buf)?;
        if !keep_alive {
            self.stream = None;
        }
        Ok(response)
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let addrs = self
            .url
            .authority
            .to_socket_addrs()
            .map_err(ClientError::Connect)?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(ClientError::Connect)?;
                    stream
                        .set_read_timeout(Some(self.timeout))
                        .map_err(ClientError::Connect)?;
                    stream
                        .set_write_timeout(Some(self.timeout))
                        .map_err(ClientError::Connect)?;
                    return Ok(stream);
                }
                Err(e) => last_error = e,
            }
        }
        Err(ClientError::Connect(last_error))
    }
}

/// Sends `head` whole. With `body_follows`, the kernel holds it back until the
/// body's first bytes join it (`MSG_MORE`; the socket is `TCP_NODELAY`), so
/// that head and body leave in one segment and the backend wakes once for
/// both instead of once for the head alone.
fn send_head(stream: &TcpStream, head: &[u8], body_follows: bool) -> io::Result<()> {
    if !body_follows {
        return (&*stream).write_all(head);
    }
    let mut sent = 0;
    while sent < head.len() {
        let rest = &head[sent..];
        // SAFETY: the pointer and length describe `rest`, valid for the call.
        let written = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        sent += bytes_moved(written)?.unwrap_or(0);
    }
    Ok(())
}

/// How a request body reaches the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    Copy,
    /// Lent with `splice` (or copied, when the client has no pipe).
    Lend,
}

/// Keeps a batch's body from reuse when dropped: `post_batch` forgets it once
/// the backend has taken every lent byte.
struct PagesAtRisk<'a>(&'a Batch);

impl Drop for PagesAtRisk<'_> {
    fn drop(&mut self) {
        self.0.keep_pages_from_reuse();
    }
}

/// Reads one response from `stream`. Returns it and whether the connection may
/// be reused. `buf` is scratch space.
fn read_response(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(Response, bool), ClientError> {
    buf.clear();
    let head_len;
    let status;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive;
    loop {
        read_some(stream, buf)?;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                head_len = len;
                status = response
                    .code
                    .ok_or(ClientError::BadResponse("no status code"))?;
                // Never asked for (no `Expect`): taken as the answer, a 1xx
                // would shift every later answer on the connection by one.
                if status < 200 {
                    return Err(ClientError::BadResponse("unexpected interim (1xx) answer"));
                }
                keep_alive = response.version == Some(1);
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        let value = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok());
                        content_length =
                            Some(value.ok_or(ClientError::BadResponse("invalid Content-Length"))?);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = header.value.eq_ignore_ascii_case(b"chunked");
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !header.value.eq_ignore_ascii_case(b"close");
                    }
                }
                break;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ClientError::BadResponse("response head too large"))
            }
            Err(_) => return Err(ClientError::BadResponse("malformed response head")),
        }
    }
    let mut body = Vec::new();
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        // Nothing to read.
    } else if chunked {
        let mut decoder = ChunkedDecoder::new();
        let mut offset = head_len;
        loop {
            decoder
                .decode(&buf[offset..], &mut body, MAX_RESPONSE_BODY_BYTES)
                .map_err(|e| match e {
                    ChunkedError::TooLarge { .. } => {
                        ClientError::BadResponse("response body too large")
                    }
                    _ => ClientError::BadResponse("malformed chunked body"),
                })?;
            if decoder.is_done() {
                break;
            }
            buf.truncate(head_len);
            offset = head_len;
            read_some(stream, buf)?;
        }
    } else if let Some(length) = content_length {
        if length > MAX_RESPONSE_BODY_BYTES {
            return Err(ClientError::BadResponse("response body too large"));
        }
        while buf.len() < head_len + length {
            read_some(stream, buf)?;
        }
        body.extend_from_slice(&buf[head_len..head_len + length]);
    } else {
        // Delimited by close: read to EOF, bounded.
        keep_alive = false;
        body.extend_from_slice(&buf[head_len..]);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).map_err(ClientError::Io)?;
            if n == 0 {
                break;
            }
            if body.len() + n > MAX_RESPONSE_BODY_BYTES {
                return Err(ClientError::BadResponse("response body too large"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((Response { status, body }, keep_alive))
}

/// Appends at least one byte from `stream` to `buf`; EOF is an error here.
fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), ClientError> {
    let start = buf.len();
    buf.resize(start + 4096, 0);
    let n = match stream.read(&mut buf[start..]) {
        Ok(n) => n,
        Err(e) => {
            buf.truncate(start);
            return Err(ClientError::Io(e));
        }
    };
    buf.truncate(start + n);
    if n == 0 {
        return Err(ClientError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the connection",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_body::{tests::own_pool, BatchBody, Pool};
    use std::sync::Arc;

    fn parse(raw: &[u8]) -> Result<(Response, bool), ClientError> {
        let mut cursor = io::Cursor::new(raw.to_vec());
        read_response(&mut cursor, &mut Vec::new())
    }

    #[test]
    fn reads_no_content_and_keeps_alive() {
        let (response, keep_alive) =
            parse(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.6.7\r\n\r\n").unwrap();
        assert_eq!(response.status, 204);
        assert!(response.body.is_empty());
        assert!(keep_alive);
    }

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let (response, _) =
            parse(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 28\r\n\r\n{\"error\":\"database is req\"}\n").unwrap();
        assert_eq!(response.status, 400);
        assert_eq!(response.body_text(), "{\"error\":\"database is req\"}");
        let (response, _) =
            parse(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn connection_close_and_http_1_0_are_not_reused() {
        let (_, keep_alive) =
            parse(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!keep_alive);
        let (response, keep_alive) = parse(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(response.body, b"hello");
        assert!(!keep_alive);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ClientError::BadResponse(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            Err(ClientError::Io(_))
        ));
        assert!(matches!(parse(b"HTTP/1.1 204"), Err(ClientError::Io(_))));
    }

    /// What the scripted backend does with a request it has read whole.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16),
        /// Answers with `Connection: close`, then closes.
        Closing(u16),
        /// `100 Continue`, then the status.
        Interim(u16),
        /// Closes the connection without answering.
        Close,
    }

    /// Reads one request (head and Content-Length body) from `stream`, with
    /// `buf` holding bytes read past the previous one. `None` at the end of
    /// the connection.
    fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = request.parse(buf) {
                let length: usize = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                let mut body = buf.split_off(head_len);
                let mut rest = vec![0; length.saturating_sub(body.len())];
                stream.read_exact(&mut rest).unwrap();
                body.extend_from_slice(&rest);
                *buf = body.split_off(length);
                return Some(body);
            }
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).unwrap() {
                0 => return None,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A backend on loopback that reads each request (head and Content-Length
    /// body) and answers it with the next of `answers`, then stops. Returns its
    /// URL and, when joined, the bodies it read.
    fn backend(answers: Vec<Answer>) -> (BackendUrl, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = BackendUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            let mut answers = answers.into_iter();
            'connections: loop {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                while let Some(body) = read_request(&mut stream, &mut buf) {
                    bodies.push(body);
                    match answers.next() {
                        Some(Answer::Status(status)) => {
                            let answer =
                                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                            stream.write_all(answer.as_bytes()).unwrap();
                        }
                        Some(Answer::Interim(status)) => {
                            let answer = format!(
                                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n"
                            );
                            stream.write_all(answer.as_bytes()).unwrap();
                        }
                        Some(Answer::Closing(status)) => {
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            stream.write_all(answer.as_bytes()).unwrap();
                            if answers.len() == 0 {
                                return bodies;
                            }
                            continue 'connections;
                        }
                        // Closed; the last answer ends the backend too.
                        Some(Answer::Close) if answers.len() == 0 => return bodies,
                        Some(Answer::Close) => continue 'connections,
                        None => return bodies,
                    }
                    if answers.len() == 0 {
                        return bodies;
                    }
                }
            }
        });
        (url, server)
    }

    const BATCH_BYTES: usize = 1 << 20;

    /// A batch of `lines` lines, in a mapping from `pool` when that many are
    /// worth lending. Returns it and its bytes.
    fn batch(pool: &'static Pool, lines: usize) -> (Batch, Vec<u8>) {
        let text: String = (0..lines).map(|i| format!("m v={i} {i}\n")).collect();
        let mut body = BatchBody::for_batch_from(pool, text.len(), BATCH_BYTES);
        for line in text.lines() {
            body.push_line(line.as_bytes(), b"");
        }
        let key = BatchKey {
            db: "db".into(),
            rp: None,
            precision: crate::lp::precision::Precision::Nanoseconds,
            authorization: None,
        };
        (Batch::new(Arc::new(key), body, lines), text.into_bytes())
    }

    /// Lines enough for a body to be lent (about 250 KiB).
    const LENT: usize = 20_000;

    /// Whether dropping `batch` gave its body back to `pool` for reuse (the
    /// pool also holds the bodies carved with it, never used).
    fn reused(pool: &'static Pool, batch: Batch) -> bool {
        assert!(batch.body.is_lendable());
        let address = batch.body.as_ptr();
        drop(batch);
        std::iter::from_fn(|| pool.take(BATCH_BYTES)).any(|map| map.as_ptr() == address)
    }

    #[test]
    fn a_lent_body_answered_2xx_arrives_whole_and_is_reused() {
        let (url, server) = backend(vec![Answer::Status(204), Answer::Status(204)]);
        let mut client = BackendClient::new(url, Duration::from_secs(10), None);
        let pool = own_pool();
        let (batch, bytes) = batch(pool, LENT);
        for _ in 0..2 {
            let response = client.post_batch(&batch, false).unwrap();
            assert_eq!(response.status, 204);
        }
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 2);
        assert!(bodies.iter().all(|got| *got == bytes), "bodies differ");
        assert!(reused(pool, batch));
    }

    #[test]
    fn a_lent_body_refused_on_a_kept_connection_is_reused_once_a_ping_is_answered() {
        // A refusal, then the `/ping` that shows the backend read the body.
        for status in [400, 500] {
            let (url, server) = backend(vec![Answer::Status(status), Answer::Status(204)]);
            let mut client = BackendClient::new(url, Duration::from_secs(10), None);
            let pool = own_pool();
            let (batch, bytes) = batch(pool, LENT);
            assert_eq!(client.post_batch(&batch, false).unwrap().status, status);
            assert!(reused(pool, batch), "after {status}");
            let bodies = server.join().unwrap();
            assert_eq!(bodies, [bytes, Vec::new()], "the body, then the ping");
        }
    }

    #[test]
    fn a_lent_body_is_not_reused_after_any_other_ending() {
        // A refusal and a server error whose connection closes before the
        // ping is answered; then a connection closed without an answer, which
        // makes the client retry on a new connection: that answer is a 2xx, but
        // the first connection may still hold the pages.
        for (answer, after, status) in [
            (Answer::Status(400), Some(Answer::Close), 400),
            (Answer::Status(500), Some(Answer::Close), 500),
            (Answer::Close, Some(Answer::Status(204)), 204),
            // A refusal that closes the connection: no ping can follow.
            (Answer::Closing(400), None, 400),
        ] {
            let (url, server) = backend(
                [Some(Answer::Status(204)), Some(answer), after]
                    .into_iter()
                    .flatten()
                    .collect(),
            );
            let mut client = BackendClient::new(url, Duration::from_secs(10), None);
            let pool = own_pool();
            let (batch, _) = batch(pool, LENT);
            assert_eq!(client.post_batch(&batch, false).unwrap().status, 204);
            assert_eq!(client.post_batch(&batch, false).unwrap().status, status);
            server.join().unwrap();
            assert!(!reused(pool, batch), "after {status}");
        }
    }

    #[test]
    fn an_interim_answer_is_an_error_not_the_answer() {
        let (url, server) = backend(vec![Answer::Interim(204)]);
        let mut client = BackendClient::new(url, Duration::from_secs(10), None);
        let pool = own_pool();
        let (batch, _) = batch(pool, LENT);
        let result = client.post_batch(&batch, false);
        assert!(
            matches!(result, Err(ClientError::BadResponse(_))),
            "{result:?}"
        );
        server.join().unwrap();
        assert!(!reused(pool, batch));
    }

    #[test]
    fn a_body_a_stalled_backend_reads_late_is_not_overwritten() {
        // The backend takes the connection but reads nothing until told to: the
        // client times out while the body's pages sit in the sockets' queues.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = BackendUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            wait.recv().unwrap();
            read_request(&mut stream, &mut Vec::new()).unwrap()
        });
        let mut client = BackendClient::new(url, Duration::from_millis(200), None);
        let pool = own_pool();
        let (batch, bytes) = batch(pool, LENT);
        assert!(client.post_batch(&batch, false).is_err());
        drop(batch);
        // The next batches get other memory, written all over (were the body
        // reused, they would overwrite what the backend is about to read).
        let later: Vec<_> = (0..4)
            .map(|_| {
                let mut body = BatchBody::for_batch_from(pool, BATCH_BYTES, BATCH_BYTES);
                while body.len() < bytes.len() {
                    body.push_line(&[b'x'; 999], b"");
                }
                body
            })
            .collect();
        go.send(()).unwrap();
        let got = server.join().unwrap();
        assert!(
            got == bytes,
            "the backend read bytes the batch did not send"
        );
        drop(later);
    }

    #[test]
    fn a_backend_never_reached_was_lent_nothing() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = BackendUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let mut client = BackendClient::new(url, Duration::from_secs(1), None);
        let pool = own_pool();
        let (batch, _) = batch(pool, LENT);
        let result = client.post_batch(&batch, false);
        assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
        assert!(reused(pool, batch));
    }

    /// Segments the peer of `stream` has sent it so far, the handshake's
    /// SYN and ACK included.
    fn segments_received(stream: &TcpStream) -> u32 {
        // SAFETY: `tcp_info` is plain integers, for which all zeros is a value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` and `len` describe a buffer of the option's size.
        let done = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0, "{}", io::Error::last_os_error());
        info.tcpi_segs_in
    }

    #[test]
    fn head_and_body_leave_in_one_segment() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = BackendUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let body = read_request(&mut stream, &mut Vec::new()).unwrap();
            let segments = segments_received(&stream);
            stream
                .write_all(b"HTTP/1.1 204 X\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            (body, segments)
        });
        let mut client = BackendClient::new(url, Duration::from_secs(10), None);
        let (small, bytes) = batch(own_pool(), 10);
        assert_eq!(client.post_batch(&small, false).unwrap().status, 204);
        let (body, segments) = server.join().unwrap();
        assert_eq!(body, bytes);
        // The client has sent nothing but the handshake and the request.
        assert_eq!(segments, 3, "SYN, ACK and one segment of head and body");
    }

    #[test]
    fn small_and_gzipped_bodies_are_copied() {
        let (url, server) = backend(vec![Answer::Status(500), Answer::Status(500)]);
        let mut client = BackendClient::new(url, Duration::from_secs(10), None);
        let pool = own_pool();
        // Mapped (the request was large) but short: copied, so reusable after a 500.
        let mut body = BatchBody::for_batch_from(pool, BATCH_BYTES, BATCH_BYTES);
        body.push_line(b"m v=1", b"");
        let small = Batch::new(batch(pool, 1).0.key.clone(), body, 1);
        assert_eq!(client.post_batch(&small, false).unwrap().status, 500);
        assert!(reused(pool, small));
        let (large, _) = batch(pool, LENT);
        assert_eq!(client.post_batch(&large, true).unwrap().status, 500);
        assert!(reused(pool, large), "a gzipped body is sent from its copy");
        server.join().unwrap();
    }
}
