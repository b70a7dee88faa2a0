//! The HTTP endpoints: InfluxDB 1.x's (`/write`, `/ping`, `/query`) and the
//! proxy's own (`/health`, `/metrics`, `/debug/latency`). Handlers return responses; errors become statuses
//! in one place, `ApiError::response`.

pub mod admin;
pub mod ping;
pub mod write;

use crate::error::ApiError;
use crate::server::request::{Head, Method};
use crate::server::response::Response;
use crate::server::worker::Worker;

/// Routes one request to its handler. `buf` holds the head; `body` is the
/// request body as received (still compressed if it was sent gzip).
pub async fn handle(worker: &Worker, head: &Head, buf: &[u8], body: &[u8]) -> Response {
    let path = head.path(buf);
    match (head.method, path) {
        (Method::Get | Method::Head, "/ping") => ping::ping(head.query(buf)),
        (Method::Post, "/write") => write::write(worker, head, buf, body).await,
        (Method::Get | Method::Head, "/health") => ping::health(worker),
        (Method::Get | Method::Head, "/metrics") => admin::metrics(worker),
        (Method::Get | Method::Head, "/status") => admin::status(worker),
        (Method::Get | Method::Head, "/debug/latency") => admin::latency(worker, head.query(buf)),
        (Method::Get | Method::Post, "/query") => ApiError::NotImplemented("/query").response(),
        (
            _,
            "/ping" | "/write" | "/health" | "/query" | "/metrics" | "/status" | "/debug/latency",
        ) => ApiError::MethodNotAllowed.response(),
        _ => ApiError::NotFound.response(),
    }
}
