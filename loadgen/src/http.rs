//! Just enough HTTP/1.1 for loadgen on loopback: the target URL, request heads,
//! and the two readers of keep-alive connections, [`ResponseReader`] for the load
//! clients and [`RequestReader`] for `loadgen sink`.
//!
//! Both readers keep one buffer per connection; bytes past the end of a message
//! (pipelined or early data) stay in it for the next call. Bodies may be framed by
//! `Content-Length`, `Transfer-Encoding: chunked`, or (responses only) the end of
//! the connection; 1xx, 204 and 304 responses have none. A `Content-Length` body is
//! handed out in place, without a copy; a chunked body is decoded once it is
//! complete, so a large body arriving in many reads is copied once. Parsing is a
//! pure function of the buffered bytes ([`parse_response`], [`parse_request`]) so
//! it is tested without sockets.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;

use anyhow::{bail, Context, Result};

/// Headers read per message; InfluxDB sends about eight, clients a few more.
const MAX_HEADERS: usize = 32;
/// A response larger than this is treated as broken rather than buffered forever.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20; // 16 MiB
/// Room for a request or response head on top of the body limit.
pub const MAX_HEAD_BYTES: usize = 64 << 10; // 64 KiB
/// First read buffer size: a whole InfluxDB write response fits.
const INITIAL_BUFFER_BYTES: usize = 8 << 10; // 8 KiB

/// Where to send requests: a plain `http://host:port` URL.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub authority: String,
}

impl Target {
    /// Parses and resolves `http://host[:port][/]`.
    ///
    /// # Errors
    ///
    /// For other schemes, paths, or names that do not resolve.
    pub fn parse(url: &str) -> Result<Target> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--url {url:?}: only plain http://host:port URLs are supported");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            bail!("--url {url:?}: expected http://host:port with no path");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolved to no address"))?;
        Ok(Target {
            addr,
            authority: authority.to_owned(),
        })
    }
}

/// Appends `value` percent-encoded for a query string or form body.
pub fn push_percent_encoded(out: &mut String, value: &str) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Decodes a query-string or form value: `%XX` escapes and `+` for space. A `%`
/// not followed by two hex digits is kept as is, as lenient servers do.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(|h| hex_pair(h[0], h[1])) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    Some(digit(high)? << 4 | digit(low)?)
}

/// Iterates the decoded `(name, value)` pairs of a query string or form body.
pub fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

/// Writes a request head with a `Content-Length` body.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    target: &Target,
    content_type: &str,
    content_encoding: Option<&str>,
    content_length: usize,
) {
    write_head_start(out, method, path, target);
    out.extend_from_slice(
        format!("Content-Type: {content_type}\r\nContent-Length: {content_length}\r\n").as_bytes(),
    );
    if let Some(encoding) = content_encoding {
        out.extend_from_slice(format!("Content-Encoding: {encoding}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the head of a request without a body, such as `GET /query?...`.
pub fn write_bodyless_head(out: &mut Vec<u8>, method: &str, path: &str, target: &Target) {
    write_head_start(out, method, path, target);
    out.extend_from_slice(b"\r\n");
}

fn write_head_start(out: &mut Vec<u8>, method: &str, path: &str, target: &Target) {
    out.clear();
    out.extend_from_slice(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fluxgate-loadgen\r\n",
            target.authority
        )
        .as_bytes(),
    );
}

/// One complete response; `body` is borrowed from the reader until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The server will close the connection: do not send another request on it.
    pub close: bool,
}

/// Where a parsed message's body is.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyAt {
    /// In place in the parsed buffer (`Content-Length` or read-to-close).
    Buffer(Range<usize>),
    /// Decoded into the `decoded` vector passed to the parser (chunked).
    Decoded,
}

/// What [`parse_response`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub close: bool,
    pub body: BodyAt,
    /// Bytes of the buffer this response took.
    pub consumed: usize,
}

/// The result of parsing a buffer that may hold only part of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Partial<T> {
    Complete(T),
    /// More bytes are needed; if the total the message will take is known (a
    /// `Content-Length` body), it is given so the buffer can grow once.
    Incomplete {
        total_bytes: Option<usize>,
    },
}

/// The body is over the reader's limit: a request to answer with 413.
#[derive(Debug)]
pub struct TooLarge {
    pub limit_bytes: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body larger than {} bytes", self.limit_bytes)
    }
}

impl std::error::Error for TooLarge {}

/// Whether `e` is a [`TooLarge`].
pub fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

/// Unread bytes of one connection, kept between messages.
struct InputBuffer {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`; always `start <= end <= buf.len()`.
    start: usize,
    end: usize,
    /// The buffer never grows past this.
    max_bytes: usize,
}

impl InputBuffer {
    fn new(max_bytes: usize) -> InputBuffer {
        InputBuffer {
            buf: vec![0; INITIAL_BUFFER_BYTES],
            start: 0,
            end: 0,
            max_bytes,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` unread bytes as read. The bytes stay valid until the next read.
    fn consume(&mut self, n: usize) -> usize {
        let at = self.start;
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        at
    }

    /// Reads once from `src` into free space, first making room for at least
    /// `total_bytes` unread bytes when that is known. Returns the bytes read.
    fn fill<R: Read>(&mut self, src: &mut R, total_bytes: Option<usize>) -> io::Result<usize> {
        let want = total_bytes.unwrap_or(0).max(self.end - self.start + 1);
        if self.start > 0 && self.start + want > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if want > self.buf.len() || self.end == self.buf.len() {
            if self.buf.len() >= self.max_bytes {
                return Err(too_large(self.max_bytes - MAX_HEAD_BYTES));
            }
            let grown = want.max(self.buf.len() * 2).min(self.max_bytes);
            self.buf.resize(grown, 0);
        }
        let read = src.read(&mut self.buf[self.end..])?;
        self.end += read;
        Ok(read)
    }
}

/// Reads responses from one connection, reusing its buffers.
pub struct ResponseReader {
    input: InputBuffer,
    /// Decoded body of the last chunked response.
    decoded: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new()
    }
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            input: InputBuffer::new(MAX_RESPONSE_BYTES + MAX_HEAD_BYTES),
            decoded: Vec::new(),
        }
    }

    /// Reads until one whole response is buffered and returns it.
    ///
    /// # Errors
    ///
    /// I/O errors, malformed responses, responses over [`MAX_RESPONSE_BYTES`], and
    /// `UnexpectedEof` if the connection ends mid-response (or before one starts).
    pub fn read_response<R: Read>(&mut self, src: &mut R) -> io::Result<Response<'_>> {
        let mut eof = false;
        loop {
            match parse_response(self.input.unread(), eof, &mut self.decoded)? {
                Partial::Complete(parsed) => {
                    let at = self.input.consume(parsed.consumed);
                    let body = match parsed.body {
                        BodyAt::Buffer(range) => &self.input.buf[at + range.start..at + range.end],
                        BodyAt::Decoded => &self.decoded[..],
                    };
                    return Ok(Response {
                        status: parsed.status,
                        body,
                        close: parsed.close || eof,
                    });
                }
                Partial::Incomplete { total_bytes } => {
                    if eof {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before a complete response",
                        ));
                    }
                    eof = self.input.fill(src, total_bytes)? == 0;
                }
            }
        }
    }
}

/// Parses one response at the start of `buf`. `eof` says no more bytes will come,
/// which completes a body framed by the connection's end. A chunked body is
/// decoded into `decoded` (cleared first).
///
/// # Errors
///
/// `InvalidData` for malformed heads, lengths or chunk framing.
pub fn parse_response(buf: &[u8], eof: bool, decoded: &mut Vec<u8>) -> io::Result<Partial<Parsed>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Partial::Incomplete { total_bytes: None }),
        Err(e) => return Err(invalid(format!("bad response head: {e}"))),
    };
    let status = head.code.unwrap_or(0);
    let fields = HeadFields::read(head.version, head.headers)?;
    let mut close = fields.close;
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else if fields.chunked {
        Framing::Chunked
    } else if let Some(len) = fields.content_length {
        Framing::Length(len)
    } else {
        // No framing: the body runs to the end of the connection.
        close = true;
        Framing::ToEof
    };
    let body = locate_body(buf, head_len, framing, eof, MAX_RESPONSE_BYTES, decoded)?;
    Ok(match body {
        Partial::Complete((body, consumed)) => Partial::Complete(Parsed {
            status,
            close,
            body,
            consumed,
        }),
        Partial::Incomplete { total_bytes } => Partial::Incomplete { total_bytes },
    })
}

/// Request methods the sink tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// One complete request; borrowed from the reader until the next call.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// Path and query string, as sent.
    pub target: &'a str,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The client asked to close after this request (or spoke HTTP/1.0).
    pub close: bool,
    /// The body as framed (still compressed with `gzip`).
    pub body: &'a [u8],
}

/// What [`parse_request`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    pub method: Method,
    /// `target` is `buf[target]`.
    pub target: Range<usize>,
    pub gzip: bool,
    pub close: bool,
    pub body: BodyAt,
    pub consumed: usize,
}

/// Reads requests from one connection, reusing its buffers; the server side of
/// [`ResponseReader`].
pub struct RequestReader {
    input: InputBuffer,
    decoded: Vec<u8>,
    max_body_bytes: usize,
    /// `100 Continue` went out for the request being read.
    continue_sent: bool,
}

impl RequestReader {
    pub fn new(max_body_bytes: usize) -> RequestReader {
        RequestReader {
            input: InputBuffer::new(max_body_bytes + MAX_HEAD_BYTES),
            decoded: Vec::new(),
            max_body_bytes,
            continue_sent: false,
        }
    }

    /// Reads until one whole request is buffered and returns it. Answers
    /// `Expect: 100-continue` on `stream` once the head is in, as curl waits for it.
    ///
    /// A read timeout on `stream` surfaces as `WouldBlock` or `TimedOut`; the
    /// partial request stays buffered and the next call goes on with it.
    ///
    /// # Errors
    ///
    /// I/O errors, `InvalidData` for malformed requests (a [`TooLarge`] inside
    /// for bodies over the limit), and `UnexpectedEof` when the client closes,
    /// between requests or in the middle of one.
    pub fn read_request<S: Read + Write>(&mut self, stream: &mut S) -> io::Result<Request<'_>> {
        loop {
            match parse_request(self.input.unread(), self.max_body_bytes, &mut self.decoded)? {
                Partial::Complete(parsed) => {
                    self.continue_sent = false;
                    let at = self.input.consume(parsed.consumed);
                    let buf = &self.input.buf;
                    let target =
                        std::str::from_utf8(&buf[at + parsed.target.start..at + parsed.target.end])
                            .map_err(|_| invalid("request target is not UTF-8".to_owned()))?;
                    let body = match parsed.body {
                        BodyAt::Buffer(range) => &buf[at + range.start..at + range.end],
                        BodyAt::Decoded => &self.decoded[..],
                    };
                    return Ok(Request {
                        method: parsed.method,
                        target,
                        gzip: parsed.gzip,
                        close: parsed.close,
                        body,
                    });
                }
                Partial::Incomplete { total_bytes } => {
                    if !self.continue_sent && expects_continue(self.input.unread()) {
                        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                        self.continue_sent = true;
                    }
                    if self.input.fill(stream, total_bytes)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "client closed the connection",
                        ));
                    }
                }
            }
        }
    }
}

/// Whether the complete head at the start of `buf` carries `Expect: 100-continue`.
fn expects_continue(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    matches!(head.parse(buf), Ok(httparse::Status::Complete(_)))
        && head.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
        })
}

/// Parses one request at the start of `buf`; a chunked body is decoded into
/// `decoded`. A request without `Content-Length` or chunking has no body.
///
/// # Errors
///
/// `InvalidData` for malformed heads or framing, with a [`TooLarge`] inside when
/// the body is over `max_body_bytes`.
pub fn parse_request(
    buf: &[u8],
    max_body_bytes: usize,
    decoded: &mut Vec<u8>,
) -> io::Result<Partial<ParsedRequest>> {
    let head = match parse_request_head(buf)? {
        Partial::Complete(head) => head,
        Partial::Incomplete { total_bytes } => return Ok(Partial::Incomplete { total_bytes }),
    };
    let framing = if head.fields.chunked {
        Framing::Chunked
    } else {
        Framing::Length(head.fields.content_length.unwrap_or(0))
    };
    let body = locate_body(buf, head.len, framing, false, max_body_bytes, decoded)?;
    Ok(match body {
        Partial::Complete((body, consumed)) => Partial::Complete(ParsedRequest {
            method: head.method,
            target: head.target,
            gzip: head.fields.gzip,
            close: head.fields.close,
            body,
            consumed,
        }),
        Partial::Incomplete { total_bytes } => Partial::Incomplete { total_bytes },
    })
}

/// A request head at the start of a buffer, without its body.
pub struct RequestHead {
    pub method: Method,
    /// `target` is `buf[target]`.
    pub target: Range<usize>,
    /// Bytes the head takes, its blank line included.
    pub len: usize,
    pub fields: HeadFields,
}

/// Parses the request head at the start of `buf`, for [`parse_request`] and
/// for servers that do not keep the body (`loadgen floor`).
///
/// `InvalidData` for a malformed head or one over 64 KiB.
pub fn parse_request_head(buf: &[u8]) -> io::Result<Partial<RequestHead>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(invalid(format!("request head over {MAX_HEAD_BYTES} bytes")))
        }
        Ok(httparse::Status::Partial) => return Ok(Partial::Incomplete { total_bytes: None }),
        Err(e) => return Err(invalid(format!("bad request head: {e}"))),
    };
    let method = match head.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let path = head.path.unwrap_or("/");
    // httparse hands out slices of `buf`, so the offset is a subtraction.
    let target_start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let target = target_start..target_start + path.len();
    let fields = HeadFields::read(head.version, head.headers)?;
    Ok(Partial::Complete(RequestHead {
        method,
        target,
        len,
        fields,
    }))
}

/// The header fields that matter for framing and connection reuse.
pub struct HeadFields {
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub gzip: bool,
    pub close: bool,
}

impl HeadFields {
    fn read(version: Option<u8>, headers: &[httparse::Header<'_>]) -> io::Result<HeadFields> {
        // HTTP/1.0 closes unless asked not to; 1.1 keeps alive unless told to close.
        let mut fields = HeadFields {
            content_length: None,
            chunked: false,
            gzip: false,
            close: version == Some(0),
        };
        for header in headers {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            if header.name.eq_ignore_ascii_case("content-length") {
                let len: usize = value
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
                fields.content_length = Some(len);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                fields.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if header.name.eq_ignore_ascii_case("content-encoding") {
                fields.gzip = value.eq_ignore_ascii_case("gzip");
            } else if header.name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    fields.close = true;
                } else if value.contains("keep-alive") {
                    fields.close = false;
                }
            }
        }
        Ok(fields)
    }
}

/// How a message's body ends.
#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    /// Runs to the end of the connection (responses without framing).
    ToEof,
}

/// Finds the body after a `head_len`-byte head; returns where it is and the bytes
/// the whole message took.
fn locate_body(
    buf: &[u8],
    head_len: usize,
    framing: Framing,
    eof: bool,
    max_body_bytes: usize,
    decoded: &mut Vec<u8>,
) -> io::Result<Partial<(BodyAt, usize)>> {
    let rest = &buf[head_len..];
    let body_len = match framing {
        Framing::Length(len) if len > max_body_bytes => return Err(too_large(max_body_bytes)),
        Framing::Length(len) if rest.len() < len => {
            return Ok(Partial::Incomplete {
                total_bytes: Some(head_len + len),
            })
        }
        Framing::Length(len) => len,
        Framing::ToEof if eof => rest.len(),
        Framing::ToEof => return Ok(Partial::Incomplete { total_bytes: None }),
        Framing::Chunked => {
            // Walk the chunk sizes first and copy only once the body is all here.
            let Some(len) = chunked_len(rest, max_body_bytes)? else {
                return Ok(Partial::Incomplete { total_bytes: None });
            };
            decode_chunked(&rest[..len], decoded);
            return Ok(Partial::Complete((BodyAt::Decoded, head_len + len)));
        }
    };
    Ok(Partial::Complete((
        BodyAt::Buffer(head_len..head_len + body_len),
        head_len + body_len,
    )))
}

/// The bytes a chunked body at the start of `buf` takes (through the trailer's
/// empty line), or `None` if incomplete. Copies nothing.
fn chunked_len(buf: &[u8], max_body_bytes: usize) -> io::Result<Option<usize>> {
    let mut pos = 0;
    let mut body_bytes = 0usize;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("bad chunk size line".to_owned())),
        };
        pos += size_len;
        if size == 0 {
            // Trailer fields, if any, then an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        body_bytes = usize::try_from(size)
            .ok()
            .and_then(|s| body_bytes.checked_add(s))
            .filter(|&total| total <= max_body_bytes)
            .ok_or_else(|| too_large(max_body_bytes))?;
        let size = size as usize;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF".to_owned()));
        }
        pos += 2;
    }
}

/// Copies the data of a complete chunked body, already checked by [`chunked_len`].
fn decode_chunked(mut buf: &[u8], body: &mut Vec<u8>) {
    body.clear();
    while let Ok(httparse::Status::Complete((size_len, size))) = httparse::parse_chunk_size(buf) {
        if size == 0 {
            return;
        }
        let start = size_len;
        let end = start + size as usize;
        body.extend_from_slice(&buf[start..end]);
        buf = &buf[end + 2..];
    }
}

fn too_large(limit_bytes: usize) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TooLarge { limit_bytes })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, to exercise partial responses.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A client side for [`RequestReader`]: reads from a [`Trickle`], keeps what
    /// the server writes back.
    struct Duplex<'a> {
        input: Trickle<'a>,
        written: Vec<u8>,
    }

    impl Read for Duplex<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.input.read(out)
        }
    }

    impl Write for Duplex<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Reads every request from `wire` with several read sizes, checks all give
    /// the same (method, target, gzip, close, body) list.
    #[track_caller]
    fn read_requests(
        wire: &[u8],
        max_body_bytes: usize,
    ) -> Vec<(Method, String, bool, bool, String)> {
        let mut first = None;
        for step in [1, 3, 64, 5000, wire.len().max(1)] {
            let mut stream = Duplex {
                input: Trickle { data: wire, step },
                written: Vec::new(),
            };
            let mut reader = RequestReader::new(max_body_bytes);
            let mut got = Vec::new();
            loop {
                match reader.read_request(&mut stream) {
                    Ok(r) => got.push((
                        r.method,
                        r.target.to_owned(),
                        r.gzip,
                        r.close,
                        String::from_utf8_lossy(r.body).into_owned(),
                    )),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "step {step}"),
            }
        }
        first.unwrap()
    }

    /// Reads every response from `wire` with each read size from 1 byte up, and
    /// checks all give the same (status, body, close) list.
    #[track_caller]
    fn read_all(wire: &[u8]) -> Vec<(u16, String, bool)> {
        let mut first = None;
        for step in [1, 2, 7, 64, wire.len().max(1)] {
            let mut src = Trickle { data: wire, step };
            let mut reader = ResponseReader::new();
            let mut got = Vec::new();
            loop {
                match reader.read_response(&mut src) {
                    Ok(r) => {
                        let close = r.close;
                        got.push((
                            r.status,
                            String::from_utf8_lossy(r.body).into_owned(),
                            close,
                        ));
                        if close {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "step {step}"),
            }
        }
        first.unwrap()
    }

    #[test]
    fn content_length_body_is_read_exactly() {
        let wire = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
                     Content-Length: 20\r\n\r\n{\"error\":\"bad line\"}";
        assert_eq!(
            read_all(wire),
            [(400, "{\"error\":\"bad line\"}".to_owned(), false)]
        );
    }

    #[test]
    fn chunked_body_is_decoded_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(read_all(wire), [(200, "hello, world".to_owned(), false)]);
    }

    #[test]
    fn keep_alive_reads_two_responses_from_one_buffer() {
        let wire = b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.6.7\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                     HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(
            read_all(wire),
            [
                (204, String::new(), false),
                (200, "ok".to_owned(), false),
                (200, "hi".to_owned(), false),
            ]
        );
    }

    #[test]
    fn two_responses_in_one_read_leave_the_second_buffered() {
        let wire: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\
                            Content-Length: 4\r\nConnection: close\r\n\r\nbusy";
        let mut src = wire;
        let mut reader = ResponseReader::new();
        let first = reader.read_response(&mut src).unwrap();
        assert_eq!((first.status, first.close), (204, false));
        assert!(src.is_empty(), "both responses came in the first read");
        let second = reader.read_response(&mut src).unwrap();
        assert_eq!(
            second,
            Response {
                status: 503,
                body: b"busy",
                close: true
            }
        );
    }

    #[test]
    fn body_without_framing_runs_to_connection_end() {
        let wire = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(read_all(wire), [(200, "all of it".to_owned(), true)]);
    }

    #[test]
    fn truncated_response_is_an_unexpected_eof() {
        let mut src: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        let err = ResponseReader::new().read_response(&mut src).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn malformed_framing_is_invalid_data() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let err = parse_response(wire, false, &mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{wire:?}");
        }
    }

    #[test]
    fn requests_with_length_chunked_and_no_body_are_read_in_turn() {
        let first = b"POST /write?db=a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\
                      Content-Encoding: gzip\r\n\r\ncpu v=1 1\n\n";
        let second = b"POST /write?db=b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\ncpu \r\n6;x=y\r\nv=2 2\n\r\n0\r\n\r\n";
        let third = b"GET /ping HTTP/1.0\r\n\r\n";
        let wire = [&first[..], second, third].concat();
        assert_eq!(
            read_requests(&wire, 1 << 20),
            [
                (
                    Method::Post,
                    "/write?db=a".to_owned(),
                    true,
                    false,
                    "cpu v=1 1\n\n".to_owned()
                ),
                (
                    Method::Post,
                    "/write?db=b".to_owned(),
                    false,
                    false,
                    "cpu v=2 2\n".to_owned()
                ),
                (Method::Get, "/ping".to_owned(), false, true, String::new()),
            ]
        );
    }

    #[test]
    fn expect_continue_is_answered_once_before_the_body() {
        let wire = b"POST /write?db=a HTTP/1.1\r\nExpect: 100-continue\r\n\
                     Content-Length: 3\r\n\r\nabc";
        let mut stream = Duplex {
            input: Trickle {
                data: wire,
                step: 10,
            },
            written: Vec::new(),
        };
        let mut reader = RequestReader::new(100);
        assert_eq!(reader.read_request(&mut stream).unwrap().body, b"abc");
        assert_eq!(stream.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn request_bodies_over_the_limit_are_too_large() {
        for (wire, limit) in [
            (&b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"[..], 10),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n",
                10,
            ),
        ] {
            let err = parse_request(wire, limit, &mut Vec::new()).unwrap_err();
            assert!(is_too_large(&err), "{err}");
        }
        let at_limit = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
        assert!(matches!(
            parse_request(at_limit, 10, &mut Vec::new()).unwrap(),
            Partial::Complete(_)
        ));
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let pairs: Vec<_> =
            form_pairs("db=my%20db&q=CREATE+DATABASE+%22x%22&bad=%zz&&flag").collect();
        assert_eq!(
            pairs,
            [
                ("db".to_owned(), "my db".to_owned()),
                ("q".to_owned(), "CREATE DATABASE \"x\"".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn target_accepts_host_port_and_rejects_other_urls() {
        let target = Target::parse("http://127.0.0.1:8086/").unwrap();
        assert_eq!(target.addr, "127.0.0.1:8086".parse().unwrap());
        assert_eq!(target.authority, "127.0.0.1:8086");
        for bad in [
            "https://127.0.0.1:8086",
            "127.0.0.1:8086",
            "http://127.0.0.1:8086/write",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_encoding_keeps_unreserved_bytes() {
        let mut out = String::new();
        push_percent_encoded(&mut out, "my db&x=\"1\"");
        assert_eq!(out, "my%20db%26x%3D%221%22");
    }
}
