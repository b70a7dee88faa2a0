//! The HTTP endpoints: InfluxDB 1.x's (`/write`, `/ping`, `/query`) and the
//! proxy's own (`/health`, `/metrics`, `/debug/latency`). Handlers return responses; errors become statuses
//! in one place, `ApiError::response`.

pub mod admin;
pub mod auth;
pub mod early;
pub mod ping;
pub mod query;
pub mod share;
pub mod write;

use crate::error::ApiError;
use crate::server::admission::BodyPass;
use crate::server::request::{Head, Method};
use crate::server::response::Response;
use crate::server::worker::Worker;
use auth::Access;
use early::EarlyIngest;

/// The `Authorization` header to send to backends for a client: its own
/// header (Basic or Token) as is, or Basic built from its `u` and `p`
/// parameters, so a backend authenticates the client as if it were direct.
pub fn backend_authorization(
    header: Option<&str>,
    user: Option<String>,
    password: Option<String>,
) -> Option<String> {
    match (header, user) {
        (Some(header), _) => Some(header.to_owned()),
        (None, Some(user)) => Some(crate::auth::basic_authorization(
            &user,
            &password.unwrap_or_default(),
        )),
        (None, None) => None,
    }
}

/// Routes one request to its handler. `buf` holds the head; `body` is the
/// request body as received (still compressed if it was sent gzip); a write
/// holds `pass` until its body is ingested (see [`write::admit_body`]).
pub async fn handle(
    worker: &Worker,
    head: &Head,
    buf: &[u8],
    body: &[u8],
    early: &mut EarlyIngest,
    pass: Option<BodyPass<'_>>,
) -> Response {
    // Requests that start after a reload see its config.
    worker.follow_reloads();
    let path = head.path(buf);
    let generation = worker.generation();
    let access = match path {
        "/ping" | "/health" if !generation.config.auth.ping => Access::Open,
        "/ping" | "/health" | "/write" | "/query" | "/status" | "/metrics" => Access::User,
        "/reload" | "/debug/latency" => Access::Admin,
        _ => Access::Open,
    };
    let identity = match auth::authorize(&generation, head, buf, access).await {
        Ok(identity) => identity,
        Err(e) => return e.response(),
    };
    match (head.method, path) {
        (Method::Get | Method::Head, "/ping") => ping::ping(head.query(buf)),
        (Method::Post, "/write") => {
            write::write(worker, &generation, head, buf, body, early, pass).await
        }
        // Without credentials only pass or fail: backend details are for users.
        (Method::Get | Method::Head, "/health") => {
            ping::health(worker, !generation.users.is_enabled() || identity.is_some())
        }
        (Method::Get | Method::Head, "/metrics") => admin::metrics(worker),
        (Method::Get | Method::Head, "/status") => admin::status(worker),
        (Method::Get | Method::Head, "/debug/latency") => admin::latency(worker, head.query(buf)),
        (Method::Get | Method::Post, "/query") => {
            query::query(worker, &generation, head, buf, body, identity.as_ref()).await
        }
        (Method::Post, "/reload") => admin::reload(worker).await,
        (
            _,
            "/ping" | "/write" | "/health" | "/query" | "/metrics" | "/status" | "/debug/latency"
            | "/reload",
        ) => ApiError::MethodNotAllowed.response(),
        _ => ApiError::NotFound.response(),
    }
}
