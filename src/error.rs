//! `ApiError`: every way a request can fail, and the one place where those
//! failures become HTTP statuses (see the table in STYLE.md §4).

use std::fmt;

use crate::batch::Refusal;
use crate::chunked::ChunkedError;
use crate::lp::gzip::GzipError;
use crate::server::response::Response;

/// Seconds a client is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request head could not be parsed.
    MalformedRequest(&'static str),
    HeadTooLarge {
        limit: usize,
    },
    BodyTooLarge {
        limit: usize,
    },
    /// A `Content-Encoding` or `Transfer-Encoding` we do not decode.
    UnsupportedEncoding(String),
    Chunked(ChunkedError),
    Gzip(GzipError),
    /// The client stopped sending in the middle of a request.
    ReadTimeout,
    /// A missing or invalid query parameter, with InfluxDB's message.
    BadParameter(String),
    /// Some or all lines were rejected; the message is InfluxDB's
    /// ("partial write: ... dropped=N" or "unable to parse ...").
    LinesRejected(String),
    /// Backend queues stayed full for `write.queue_timeout`.
    QueueFull {
        backends: String,
    },
    /// `ack = "durable"`: the points were not written or spooled within `write.ack_timeout`.
    NotDurable {
        timeout: std::time::Duration,
    },
    /// `ack = "durable"`: a backend refused the points (its status and message).
    BackendRefused(Refusal),
    /// `POST /reload`: the new config is invalid or changes what needs a restart.
    ReloadRefused(String),
    /// `POST /reload`: the config is valid but could not be applied (a spool
    /// that cannot be opened); the running config stays.
    ReloadFailed(String),
    /// Shutting down, a reload still running, too many logins at once.
    Unavailable(String),
    /// No, unreadable or wrong credentials; InfluxDB's text.
    Unauthorized(crate::auth::AuthError),
    /// Authenticated, but not allowed (not an admin).
    Forbidden(String),
    NotFound,
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::MalformedRequest(_)
            | ApiError::Chunked(
                ChunkedError::InvalidSize | ChunkedError::MissingCrlf | ChunkedError::LineTooLong,
            )
            | ApiError::Gzip(GzipError::Corrupt)
            | ApiError::BadParameter(_)
            | ApiError::LinesRejected(_)
            | ApiError::ReloadRefused(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::ReadTimeout => 408,
            ApiError::BodyTooLarge { .. }
            | ApiError::Chunked(ChunkedError::TooLarge { .. })
            | ApiError::Gzip(GzipError::TooLarge { .. }) => 413,
            ApiError::UnsupportedEncoding(_) => 415,
            ApiError::HeadTooLarge { .. } => 431,
            ApiError::ReloadFailed(_) => 500,
            ApiError::QueueFull { .. } | ApiError::NotDurable { .. } | ApiError::Unavailable(_) => {
                503
            }
            // The backend's own 4xx (a missing database is its 404); anything
            // else it says is a gateway problem.
            ApiError::BackendRefused(refusal) if (400..500).contains(&refusal.status) => {
                refusal.status
            }
            ApiError::BackendRefused(_) => 502,
        }
    }

    /// True when the request body may not have been read to its end, so the
    /// connection cannot be reused for another request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::MalformedRequest(_)
                | ApiError::HeadTooLarge { .. }
                | ApiError::BodyTooLarge { .. }
                | ApiError::UnsupportedEncoding(_)
                | ApiError::Chunked(_)
                | ApiError::ReadTimeout
        )
    }

    pub fn response(&self) -> Response {
        let mut response = Response::error(self.status(), self.to_string());
        response.close = self.closes_connection();
        if let ApiError::QueueFull { .. } | ApiError::NotDurable { .. } = self {
            response.retry_after = Some(RETRY_AFTER_SECONDS);
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::MalformedRequest(what) => write!(f, "malformed request: {what}"),
            ApiError::HeadTooLarge { limit } => {
                write!(f, "request head exceeds {limit} bytes (server.max_header_bytes)")
            }
            ApiError::BodyTooLarge { limit } | ApiError::Chunked(ChunkedError::TooLarge { limit }) => write!(
                f,
                "request body exceeds {limit} bytes (server.max_body_bytes): send smaller batches"
            ),
            ApiError::UnsupportedEncoding(encoding) => {
                write!(f, "unsupported encoding {encoding:?}: send plain or gzip bodies")
            }
            ApiError::Chunked(e) => write!(f, "malformed chunked body: {e}"),
            ApiError::Gzip(GzipError::TooLarge { limit }) => write!(
                f,
                "decompressed body exceeds {limit} bytes (server.max_decompressed_bytes): send smaller batches"
            ),
            ApiError::Gzip(e) => write!(f, "{e}"),
            ApiError::ReadTimeout => f.write_str("timed out reading the request"),
            ApiError::BadParameter(message) | ApiError::LinesRejected(message) => f.write_str(message),
            ApiError::QueueFull { backends } => write!(
                f,
                "backend queue full for {backends}: the backend is slow or down; retry later"
            ),
            ApiError::NotDurable { timeout } => write!(
                f,
                "points not yet written or spooled after {timeout:?} (write.ack_timeout): a backend is slow or down; \
                 retry later (points of this request may already be stored: retries are safe, InfluxDB overwrites identical points)"
            ),
            ApiError::BackendRefused(refusal) => write!(
                f,
                "backend {} refused the points (HTTP {}): {}",
                refusal.backend, refusal.status, refusal.message
            ),
            ApiError::ReloadRefused(reason) => write!(f, "reload refused: {reason}"),
            ApiError::ReloadFailed(reason) => write!(f, "reload failed: {reason}"),
            ApiError::Unavailable(reason) | ApiError::Forbidden(reason) => f.write_str(reason),
            ApiError::Unauthorized(e) => f.write_str(e.message()),
            ApiError::NotFound => f.write_str("not found"),
            ApiError::MethodNotAllowed => f.write_str("method not allowed"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<ChunkedError> for ApiError {
    fn from(e: ChunkedError) -> Self {
        ApiError::Chunked(e)
    }
}

impl From<GzipError> for ApiError {
    fn from(e: GzipError) -> Self {
        ApiError::Gzip(e)
    }
}
