//! Just enough HTTP/1.1 for a load client on loopback: the target URL, request
//! heads, and a response reader for keep-alive connections.
//!
//! The reader keeps one buffer per connection; bytes past the end of a response
//! (pipelined or early data) stay in it for the next call. Bodies may be framed by
//! `Content-Length`, `Transfer-Encoding: chunked`, or the end of the connection,
//! and 1xx, 204 and 304 responses have none. Parsing is a pure function of the
//! buffered bytes ([`parse_response`]) so it is tested without sockets.

use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

/// Headers read per response; InfluxDB sends about eight.
const MAX_HEADERS: usize = 32;
/// A response larger than this is treated as broken rather than buffered forever.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20; // 16 MiB
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
    out.clear();
    out.extend_from_slice(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fluxgate-loadgen\r\n\
             Content-Type: {content_type}\r\nContent-Length: {content_length}\r\n",
            target.authority
        )
        .as_bytes(),
    );
    if let Some(encoding) = content_encoding {
        out.extend_from_slice(format!("Content-Encoding: {encoding}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// One complete response; `body` is borrowed from the reader until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The server will close the connection: do not send another request on it.
    pub close: bool,
}

/// What [`parse_response`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub close: bool,
    /// Bytes of the buffer this response took.
    pub consumed: usize,
}

/// Reads responses from one connection, reusing its buffers.
pub struct ResponseReader {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`; always `start <= end <= buf.len()`.
    start: usize,
    end: usize,
    /// Decoded body of the last response.
    body: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new()
    }
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            buf: vec![0; INITIAL_BUFFER_BYTES],
            start: 0,
            end: 0,
            body: Vec::new(),
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
            // Re-parsing from the start after each read is quadratic only for large
            // responses, and write responses are tiny.
            let unread = &self.buf[self.start..self.end];
            if let Some(parsed) = parse_response(unread, eof, &mut self.body)? {
                self.start += parsed.consumed;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return Ok(Response {
                    status: parsed.status,
                    body: &self.body,
                    close: parsed.close || eof,
                });
            }
            if eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response",
                ));
            }
            self.make_room()?;
            let read = src.read(&mut self.buf[self.end..])?;
            self.end += read;
            eof = read == 0;
        }
    }

    /// Ensures free space after `end`: move unread bytes to the front, then grow.
    fn make_room(&mut self) -> io::Result<()> {
        if self.end < self.buf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        if self.buf.len() >= MAX_RESPONSE_BYTES {
            return Err(invalid(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        self.buf
            .resize((self.buf.len() * 2).min(MAX_RESPONSE_BYTES), 0);
        Ok(())
    }
}

/// Parses one response at the start of `buf` into `body` (cleared first).
/// `eof` says no more bytes will come, which completes a body framed by the
/// connection's end. Returns `Ok(None)` when more bytes are needed.
///
/// # Errors
///
/// `InvalidData` for malformed heads, lengths or chunk framing.
pub fn parse_response(buf: &[u8], eof: bool, body: &mut Vec<u8>) -> io::Result<Option<Parsed>> {
    body.clear();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("bad response head: {e}"))),
    };
    let status = head.code.unwrap_or(0);
    // HTTP/1.0 closes unless asked not to; 1.1 keeps alive unless told to close.
    let mut close = head.version == Some(0);
    let mut content_length = None;
    let mut chunked = false;
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
            content_length = Some(len);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    let rest = &buf[head_len..];
    let body_len = if matches!(status, 100..=199 | 204 | 304) {
        0
    } else if chunked {
        match decode_chunked(rest, body)? {
            Some(len) => {
                return Ok(Some(Parsed {
                    status,
                    close,
                    consumed: head_len + len,
                }))
            }
            None => return Ok(None),
        }
    } else if let Some(len) = content_length {
        if rest.len() < len {
            return Ok(None);
        }
        len
    } else if eof {
        // No framing: the body runs to the end of the connection.
        close = true;
        rest.len()
    } else {
        return Ok(None);
    };
    body.extend_from_slice(&rest[..body_len]);
    Ok(Some(Parsed {
        status,
        close,
        consumed: head_len + body_len,
    }))
}

/// Decodes a chunked body at the start of `buf` into `body`; returns the bytes it
/// took (through the trailer's empty line), or `None` if incomplete.
fn decode_chunked(buf: &[u8], body: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut pos = 0;
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
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| invalid(format!("chunk of {size} bytes")))?;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF".to_owned()));
        }
        pos += 2;
    }
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
