//! `/ping` (InfluxDB's liveness check) and `/health` (the proxy's own view of
//! its backends).

use crate::server::response::{Body, Response, INFLUXDB_VERSION};
use crate::server::worker::Worker;
use crate::urlencoded;

/// `GET|HEAD /ping`: 204, or with `verbose=true` a 200 with the version, as InfluxDB.
pub fn ping(query: &str) -> Response {
    let verbose = urlencoded::pairs(query).any(|(key, value)| key == "verbose" && value == "true");
    if !verbose {
        return Response::no_content();
    }
    Response {
        status: 200,
        body: Body::Json(format!("{{\"version\":\"{INFLUXDB_VERSION}\"}}\n")),
        retry_after: None,
        close: false,
    }
}

/// `GET /health`: InfluxDB 1.8's shape plus, when `detailed`, the state of
/// each backend (the same entries as `/status`).
pub fn health(worker: &Worker, detailed: bool) -> Response {
    let shared = &worker.shared;
    let generation = worker.generation();
    let mut json = serde_json::json!({
        "name": "fluxgate",
        "message": "ready for queries and writes",
        "status": "pass",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.started.elapsed().as_secs(),
    });
    if detailed {
        json["backends"] = (0..generation.backends.len())
            .map(|id| super::admin::backend_status(&generation, id))
            .collect();
    }
    Response {
        status: 200,
        body: Body::Json(format!("{json}\n")),
        retry_after: None,
        close: false,
    }
}
