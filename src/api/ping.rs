//! `/ping` (InfluxDB's liveness check) and `/health` (the proxy's own view of
//! its backends).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::server::response::{escape_json_into, Body, Response, INFLUXDB_VERSION};
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

/// `GET /health`: InfluxDB 1.8's shape plus one entry per backend.
pub fn health(worker: &Worker) -> Response {
    let shared = &worker.shared;
    let mut json = String::with_capacity(256);
    let _ = write!(
        json,
        "{{\"name\":\"fluxgate\",\"message\":\"ready for queries and writes\",\"status\":\"pass\",\
         \"version\":\"{}\",\"uptime_seconds\":{},\"backends\":[",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs()
    );
    for (i, stats) in shared.backends.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let mut name = Vec::new();
        escape_json_into(&stats.name, &mut name);
        let _ = write!(
            json,
            "{{\"name\":\"{}\",\"up\":{},\"points_written\":{},\"points_rejected\":{},\"points_lost\":{},\"retries\":{}}}",
            String::from_utf8_lossy(&name),
            stats.up.load(Ordering::Relaxed),
            stats.points_written.load(Ordering::Relaxed),
            stats.points_rejected.load(Ordering::Relaxed),
            stats.points_lost.load(Ordering::Relaxed),
            stats.retries.load(Ordering::Relaxed),
        );
    }
    json.push_str("]}\n");
    Response {
        status: 200,
        body: Body::Json(json),
        retry_after: None,
        close: false,
    }
}
