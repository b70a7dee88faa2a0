//! Request heads: parsing with httparse into offsets of the connection buffer,
//! framing of the body (Content-Length or chunked), and the size caps.
//!
//! Pure: `conn.rs` does the reading and hands the bytes it has so far.

use std::ops::Range;

use crate::error::ApiError;

/// Headers beyond this count make the head malformed; real clients send ~10.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    Length(usize),
    Chunked,
}

/// A parsed request head. Ranges index the buffer it was parsed from, which
/// keeps the head bytes until the request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub path: Range<usize>,
    /// The query string without '?', possibly empty.
    pub query: Range<usize>,
    pub framing: Framing,
    pub expect_continue: bool,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The `Authorization` header's value.
    pub authorization: Option<Range<usize>>,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// `Content-Type: application/x-www-form-urlencoded` (a `/query` form body).
    pub form_body: bool,
    /// `Accept: application/csv` (or `text/csv`): the client wants CSV answers.
    pub accept_csv: bool,
    /// Length of the head in bytes; the body starts here.
    pub len: usize,
}

impl Head {
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b str {
        // httparse only accepts visible ASCII in the target, so this is UTF-8.
        std::str::from_utf8(&buf[self.path.clone()]).unwrap_or("")
    }

    pub fn query<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.query.clone()]).unwrap_or("")
    }

    pub fn authorization<'b>(&self, buf: &'b [u8]) -> Option<&'b str> {
        self.authorization
            .clone()
            .and_then(|range| std::str::from_utf8(&buf[range]).ok())
    }
}

/// The path of the request line at the start of `buf`, for a head refused
/// before it parsed: `""` when there is none.
pub fn refused_path(buf: &[u8]) -> &str {
    let mut parts = buf.splitn(3, |&b| b == b' ');
    let target = parts.nth(1).unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    std::str::from_utf8(path).unwrap_or("")
}

/// Parses the head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and still within
/// `max_header_bytes`.
///
/// # Errors
/// Malformed heads, heads over the limit, unsupported encodings, and a
/// Content-Length over `max_body_bytes` (refused before reading the body).
pub fn parse_head(
    buf: &[u8],
    max_header_bytes: usize,
    max_body_bytes: usize,
) -> Result<Option<Head>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max_header_bytes => {
            return Err(ApiError::HeadTooLarge {
                limit: max_header_bytes,
            })
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_header_bytes => {
            return Err(ApiError::HeadTooLarge {
                limit: max_header_bytes,
            })
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::MalformedRequest("too many headers"))
        }
        Err(_) => return Err(ApiError::MalformedRequest("invalid request line or header")),
    };
    let offset_of = |part: &[u8]| part.as_ptr() as usize - buf.as_ptr() as usize;
    let method = match request.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let target = request.path.unwrap_or("/");
    let target_start = offset_of(target.as_bytes());
    let (path, query) = match target.find('?') {
        Some(q) => (
            target_start..target_start + q,
            target_start + q + 1..target_start + target.len(),
        ),
        None => (target_start..target_start + target.len(), 0..0),
    };
    let http_1_1 = request.version == Some(1);
    let mut keep_alive = http_1_1;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut gzip = false;
    let mut authorization = None;
    let mut form_body = false;
    let mut accept_csv = false;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ApiError::MalformedRequest("invalid Content-Length"))?;
            let parsed = usize::try_from(parsed).unwrap_or(usize::MAX);
            if content_length.is_some_and(|previous| previous != parsed) {
                return Err(ApiError::MalformedRequest(
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ApiError::UnsupportedEncoding(
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-encoding") {
            let value = value.trim_ascii();
            if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
                gzip = true;
            } else if !value.eq_ignore_ascii_case(b"identity") && !value.is_empty() {
                return Err(ApiError::UnsupportedEncoding(
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("content-type") {
            form_body = value
                .to_ascii_lowercase()
                .starts_with(b"application/x-www-form-urlencoded");
        } else if name.eq_ignore_ascii_case("accept") {
            let value = value.to_ascii_lowercase();
            accept_csv = value.starts_with(b"application/csv") || value.starts_with(b"text/csv");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(offset_of(value)..offset_of(value) + value.len());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = match (chunked, content_length) {
        // A message with both is a request-smuggling vector (RFC 9112 §6.3): refuse it.
        (true, Some(_)) => {
            return Err(ApiError::MalformedRequest(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, Some(length)) if length > max_body_bytes => {
            return Err(ApiError::BodyTooLarge {
                limit: max_body_bytes,
            })
        }
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(length)) => Framing::Length(length),
    };
    Ok(Some(Head {
        method,
        path,
        query,
        framing,
        expect_continue,
        gzip,
        authorization,
        keep_alive,
        form_body,
        accept_csv,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_heads_name_their_path_if_they_have_one() {
        assert_eq!(refused_path(b"POST /write?db=x HTTP/1.1\r\n"), "/write");
        assert_eq!(refused_path(b"GET /query HTTP/1.1\r\n"), "/query");
        assert_eq!(refused_path(b"HELLO\r\n\r\n"), "");
        assert_eq!(refused_path(b""), "");
        assert_eq!(refused_path(b"GET /\xff HTTP/1.1"), "");
    }

    #[track_caller]
    fn parse(raw: &str) -> Head {
        parse_head(raw.as_bytes(), 1024, 100)
            .unwrap()
            .expect("complete head")
    }

    #[track_caller]
    fn refused(raw: &str) -> ApiError {
        parse_head(raw.as_bytes(), 1024, 100).unwrap_err()
    }

    #[test]
    fn a_write_request_head() {
        let raw = "POST /write?db=x&precision=s HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\
                   Content-Encoding: gzip\r\nAuthorization: Basic eDp5\r\nExpect: 100-continue\r\n\r\nbody";
        let head = parse(raw);
        let buf = raw.as_bytes();
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path(buf), "/write");
        assert_eq!(head.query(buf), "db=x&precision=s");
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.gzip && head.expect_continue && head.keep_alive);
        assert_eq!(head.authorization(buf), Some("Basic eDp5"));
        assert_eq!(&raw[head.len..], "body");
    }

    #[test]
    fn connection_persistence() {
        assert!(!parse("GET /ping HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse("GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!parse("GET /ping HTTP/1.1\r\nConnection: TE, close\r\n\r\n").keep_alive);
        assert_eq!(parse("GET /ping HTTP/1.1\r\n\r\n").query, 0..0);
    }

    #[test]
    fn framing() {
        assert_eq!(parse("POST /write HTTP/1.1\r\n\r\n").framing, Framing::None);
        assert_eq!(
            parse("POST /write HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::None
        );
        assert_eq!(
            parse("POST /write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        // The limit and the limit + 1.
        assert_eq!(
            parse("POST /write HTTP/1.1\r\nContent-Length: 100\r\n\r\n").framing,
            Framing::Length(100)
        );
        assert_eq!(
            refused("POST /write HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            ApiError::BodyTooLarge { limit: 100 }
        );
    }

    #[test]
    fn ugly_heads_are_refused() {
        assert!(matches!(
            refused("POST /write HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            ApiError::MalformedRequest(_)
        ));
        assert!(matches!(
            refused("POST /write HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            ApiError::MalformedRequest(_)
        ));
        assert!(matches!(
            refused(
                "POST /write HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            ApiError::MalformedRequest(_)
        ));
        assert_eq!(
            refused("POST /write HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            ApiError::UnsupportedEncoding("gzip, chunked".into())
        );
        assert_eq!(
            refused("POST /write HTTP/1.1\r\nContent-Encoding: br\r\n\r\n"),
            ApiError::UnsupportedEncoding("br".into())
        );
        assert!(matches!(
            refused("\x16\x03\x01\x02\x00\r\n\r\n"),
            ApiError::MalformedRequest(_)
        ));
        let huge = format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(refused(&huge), ApiError::HeadTooLarge { limit: 1024 });
        // Incomplete but within the limit: wait for more.
        assert_eq!(
            parse_head(b"GET /ping HTTP/1.1\r\nHost:", 1024, 100),
            Ok(None)
        );
        assert_eq!(
            parse_head(
                format!("GET /ping HTTP/1.1\r\nX: {}", "a".repeat(2000)).as_bytes(),
                1024,
                100
            )
            .unwrap_err(),
            ApiError::HeadTooLarge { limit: 1024 }
        );
    }
}
