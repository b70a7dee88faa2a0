//! Writing HTTP/1.1 responses, including InfluxDB's `{"error":"..."}` shape.

use std::io::Write;

use crate::query::backend::Framing;

/// The InfluxDB API version announced in `X-Influxdb-Version`, as InfluxDB does
/// on every response. Clients only check that it is a 1.x version.
pub const INFLUXDB_VERSION: &str = "1.8.10";

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Body,
    /// Seconds for a `Retry-After` header (503).
    pub retry_after: Option<u32>,
    /// Close the connection after this response (its request was not fully read).
    pub close: bool,
}

#[derive(Debug)]
pub enum Body {
    Empty,
    /// InfluxDB's error object: `{"error":"<message>"}`.
    Error(String),
    /// Ready-made JSON.
    Json(String),
    /// Plain text (`/metrics` and similar).
    Text(String),
    /// InfluxDB's CSV (`/query` with `Accept: application/csv`).
    Csv(String),
    /// A backend's answer, streamed to the client as it arrives (`conn.rs`
    /// writes the head from `encode`, then copies the body).
    Proxied(Box<crate::query::backend::OpenAnswer>),
}

impl Response {
    pub const fn no_content() -> Response {
        Response {
            status: 204,
            body: Body::Empty,
            retry_after: None,
            close: false,
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response {
            status,
            body: Body::Error(message.into()),
            retry_after: None,
            close: false,
        }
    }

    /// False when the body ends with the connection (a proxied answer without
    /// length or chunking), so the connection cannot be kept.
    pub fn keeps_connection(&self) -> bool {
        !self.close
            && !matches!(&self.body, Body::Proxied(answer) if answer.framing == Framing::Close)
    }

    /// Serializes the response into `out` (appending). `keep_alive` is the
    /// connection's state after this response; `head_only` answers a HEAD request.
    pub fn encode(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        let error_json;
        let body: &[u8] = match &self.body {
            Body::Empty => b"",
            Body::Error(message) => {
                let mut json = Vec::with_capacity(message.len() + 16);
                json.extend_from_slice(b"{\"error\":\"");
                escape_json_into(message, &mut json);
                json.extend_from_slice(b"\"}\n");
                error_json = json;
                &error_json
            }
            Body::Json(text) | Body::Text(text) | Body::Csv(text) => text.as_bytes(),
            Body::Proxied(_) => b"",
        };
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        let _ = write!(
            out,
            "X-Influxdb-Version: {INFLUXDB_VERSION}\r\nX-Influxdb-Build: OSS\r\n"
        );
        match &self.body {
            Body::Empty => {}
            Body::Error(_) | Body::Json(_) => {
                out.extend_from_slice(b"Content-Type: application/json\r\n")
            }
            Body::Text(_) => out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n"),
            Body::Csv(_) => out.extend_from_slice(b"Content-Type: application/csv\r\n"),
            Body::Proxied(answer) => {
                if let Some(content_type) = &answer.content_type {
                    let _ = write!(out, "Content-Type: {content_type}\r\n");
                }
            }
        }
        if self.status == 401 {
            // As InfluxDB: clients that only send credentials when asked do.
            let _ = write!(
                out,
                "WWW-Authenticate: {}\r\n",
                crate::auth::WWW_AUTHENTICATE
            );
        }
        if let Some(seconds) = self.retry_after {
            let _ = write!(out, "Retry-After: {seconds}\r\n");
        }
        match &self.body {
            Body::Proxied(answer) => match answer.framing {
                Framing::Length(length) => {
                    let _ = write!(out, "Content-Length: {length}\r\n");
                }
                Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                // Delimited by close: `keep_alive` is false for it (see `keeps_connection`).
                Framing::Close => {}
            },
            _ if self.status != 204 && !(100..200).contains(&self.status) => {
                let _ = write!(out, "Content-Length: {}\r\n", body.len());
            }
            _ => {}
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(body);
        }
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Escapes `text` as the inside of a JSON string.
pub fn escape_json_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(response: &Response, keep_alive: bool, head_only: bool) -> String {
        let mut out = Vec::new();
        response.encode(&mut out, keep_alive, head_only);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        assert_eq!(
            encoded(&Response::no_content(), true, false),
            "HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.8.10\r\nX-Influxdb-Build: OSS\r\n\r\n"
        );
    }

    #[test]
    fn errors_use_influxdb_shape_with_escapes() {
        let response = Response::error(400, "unable to parse 'a \"b\"\\':\nbad");
        let text = encoded(&response, false, false);
        let body = "{\"error\":\"unable to parse 'a \\\"b\\\"\\\\':\\nbad\"}\n";
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with(&format!("\r\n\r\n{body}")));
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["error"], "unable to parse 'a \"b\"\\':\nbad");
    }

    #[test]
    fn retry_after_and_head_only() {
        let mut response = Response::error(503, "busy");
        response.retry_after = Some(1);
        let text = encoded(&response, true, true);
        assert!(text.contains("Retry-After: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
