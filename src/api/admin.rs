//! The proxy's own endpoints for operators: `/metrics` (Prometheus) and
//! `/debug/latency` (percentiles from the per-thread histograms, merged here).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::generation::Generation;
use crate::server::response::{escape_json_into, Body, Response};
use crate::server::worker::Worker;
use crate::stats::latency::{self, LatencyHistogram};
use crate::stats::metrics::{Exposition, Kind};
use crate::stats::{BackendStats, Endpoint};
use crate::urlencoded;

/// `GET /metrics`: counters and gauges in Prometheus text format.
pub fn metrics(worker: &Worker) -> Response {
    let shared = &worker.shared;
    let generation = worker.generation();
    let backends: Vec<&BackendStats> = generation.backends.iter().map(|b| &*b.stats).collect();
    let mut m = Exposition::new();

    m.family(
        "fluxgate_http_requests_total",
        Kind::Counter,
        "Requests answered, by endpoint and status (status 0: any other).",
    );
    for endpoint in Endpoint::ALL {
        let mut by_status: Vec<(u16, u64)> = Vec::new();
        for stats in &shared.workers {
            for (status, count) in stats.requests(endpoint) {
                match by_status.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, total)) => *total += count,
                    None => by_status.push((status, count)),
                }
            }
        }
        by_status.sort_unstable();
        for (status, count) in by_status {
            m.sample(
                "fluxgate_http_requests_total",
                &[
                    ("endpoint", endpoint.name()),
                    ("status", &status.to_string()),
                ],
                count,
            );
        }
    }
    let bodies = &crate::batch_body::BODY_COUNTS;
    let worker_sum = |read: fn(&crate::stats::WorkerStats) -> u64| -> u64 {
        shared.workers.iter().map(|w| read(w)).sum()
    };
    for (name, help, value) in [
        (
            "fluxgate_lines_received_total",
            "Lines (points) received in write bodies, valid or not.",
            worker_sum(|w| w.lines_received.load(Ordering::Relaxed)),
        ),
        (
            "fluxgate_lines_invalid_total",
            "Lines refused: malformed, or matching no route.",
            worker_sum(|w| w.lines_invalid.load(Ordering::Relaxed)),
        ),
        (
            "fluxgate_lines_ingested_early_total",
            "Lines of plain write bodies taken (validated, and batched if valid) while the rest of the body was still arriving.",
            worker_sum(|w| w.lines_ingested_early.load(Ordering::Relaxed)),
        ),
        (
            "fluxgate_lines_shared_total",
            "Lines of large write bodies ingested by an idle worker while the worker that read the body ingested the rest.",
            worker_sum(|w| w.lines_shared.load(Ordering::Relaxed)),
        ),
        (
            "fluxgate_batch_bodies_lent_total",
            "Batch bodies sent to a backend from their own pages (vmsplice + splice), once per backend and attempt.",
            bodies.lent.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_batch_bodies_held_back_total",
            "Batch bodies unmapped instead of reused because a backend did not take them whole (an error, timeout, refusal or retry).",
            bodies.held_back.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_bytes_received_total",
            "Write body bytes as received (compressed when sent gzip).",
            worker_sum(|w| w.bytes_received.load(Ordering::Relaxed)),
        ),
    ] {
        m.family(name, Kind::Counter, help);
        m.sample(name, &[], value);
    }
    m.family(
        "fluxgate_batch_bodies_total",
        Kind::Counter,
        "Batch bodies of 64 KiB and more (sent without a copy), by where their memory came from: \
         reused from the pool, or newly mapped (page faults).",
    );
    m.sample(
        "fluxgate_batch_bodies_total",
        &[("memory", "reused")],
        bodies.reused.load(Ordering::Relaxed),
    );
    m.sample(
        "fluxgate_batch_bodies_total",
        &[("memory", "mapped")],
        bodies.mapped.load(Ordering::Relaxed),
    );

    m.family(
        "fluxgate_writes_waiting",
        Kind::Gauge,
        "Writes waiting for room in full backend queues (pushed back; answered 503 after write.queue_timeout).",
    );
    m.sample(
        "fluxgate_writes_waiting",
        &[],
        worker_sum(|w| w.writes_waiting.load(Ordering::Relaxed)),
    );
    m.family(
        "fluxgate_connections",
        Kind::Gauge,
        "Open client connections, by worker.",
    );
    for (id, stats) in shared.workers.iter().enumerate() {
        m.sample(
            "fluxgate_connections",
            &[("worker", &id.to_string())],
            stats.connections.load(Ordering::Relaxed),
        );
    }
    m.family(
        "fluxgate_connections_handed_over_total",
        Kind::Counter,
        "Connections a worker accepted and handed to one holding fewer.",
    );
    m.sample(
        "fluxgate_connections_handed_over_total",
        &[],
        worker_sum(|w| w.connections_handed_over.load(Ordering::Relaxed)),
    );
    m.family(
        "fluxgate_backend_up",
        Kind::Gauge,
        "1 while the backend's last write succeeded.",
    );
    for b in &backends {
        m.sample(
            "fluxgate_backend_up",
            &[("backend", &b.name)],
            u8::from(b.up.load(Ordering::Relaxed)),
        );
    }
    m.family(
        "fluxgate_backend_queue_batches",
        Kind::Gauge,
        "Batches waiting in the backend's writer queue.",
    );
    for b in &generation.backends {
        m.sample(
            "fluxgate_backend_queue_batches",
            &[("backend", &b.stats.name)],
            b.queue.len(),
        );
    }
    let counters: [Family; 6] = [
        (
            "fluxgate_backend_points_written_total",
            Kind::Counter,
            "Points the backend accepted.",
            |b| b.points_written.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_batches_written_total",
            Kind::Counter,
            "Batches the backend accepted (points / batches = mean batch size).",
            |b| b.batches_written.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_bytes_written_total",
            Kind::Counter,
            "Uncompressed batch bytes the backend accepted.",
            |b| b.bytes_written.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_points_rejected_total",
            Kind::Counter,
            "Points the backend refused with a 4xx (not retried).",
            |b| b.points_rejected.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_points_lost_total",
            Kind::Counter,
            "Points given up at shutdown because the backend stayed unreachable.",
            |b| b.points_lost.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_retries_total",
            Kind::Counter,
            "Failed attempts (5xx, timeout, connection error).",
            |b| b.retries.load(Ordering::Relaxed),
        ),
    ];
    per_backend(&mut m, &backends, &counters);
    m.family(
        "fluxgate_backend_batch_points",
        Kind::Histogram,
        "Points per batch the backend accepted (live or replayed).",
    );
    for b in &backends {
        m.histogram(
            "fluxgate_backend_batch_points",
            &[("backend", &b.name)],
            &b.batch_points.cumulative(),
        );
    }
    if generation.config.spool.is_some() {
        spool_metrics(&mut m, &backends);
    }
    m.family(
        "fluxgate_config_generation",
        Kind::Gauge,
        "The applied config's generation: 1 at start-up, one more per applied reload.",
    );
    m.sample("fluxgate_config_generation", &[], generation.id);
    m.family(
        "fluxgate_uptime_seconds",
        Kind::Gauge,
        "Seconds since fluxgate started.",
    );
    m.sample(
        "fluxgate_uptime_seconds",
        &[],
        shared.started.elapsed().as_secs(),
    );
    Response {
        status: 200,
        body: Body::Text(m.finish()),
        retry_after: None,
        close: false,
    }
}

/// A per-backend metric family: name, kind, help, and how to read its value.
type Family = (&'static str, Kind, &'static str, fn(&BackendStats) -> u64);

/// Writes each family with one sample per backend.
fn per_backend(m: &mut Exposition, backends: &[&BackendStats], families: &[Family]) {
    for &(name, kind, help, read) in families {
        m.family(name, kind, help);
        for b in backends {
            m.sample(name, &[("backend", &b.name)], read(b));
        }
    }
}

/// The spool families of `/metrics`, for a proxy with a `[spool]`.
fn spool_metrics(m: &mut Exposition, backends: &[&BackendStats]) {
    let now_ms = unix_millis();
    let families: [Family; 7] = [
        (
            "fluxgate_backend_spool_bytes",
            Kind::Gauge,
            "Bytes in the backend's spool.",
            |b| b.spool_bytes.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_spool_records",
            Kind::Gauge,
            "Batches in the backend's spool.",
            |b| b.spool_records.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_spool_skipped_bytes",
            Kind::Gauge,
            "Bytes skipped as torn or corrupt when the spool was opened.",
            |b| b.spool_skipped_bytes.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_spool_skipped_records",
            Kind::Gauge,
            "Records (or damaged regions) skipped when the spool was opened.",
            |b| b.spool_skipped_records.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_points_spooled_total",
            Kind::Counter,
            "Points appended to the backend's spool.",
            |b| b.points_spooled.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_points_replayed_total",
            Kind::Counter,
            "Points written to the backend from its spool.",
            |b| b.points_replayed.load(Ordering::Relaxed),
        ),
        (
            "fluxgate_backend_spool_full_total",
            Kind::Counter,
            "Times the spool was full and writes were held back.",
            |b| b.spool_full.load(Ordering::Relaxed),
        ),
    ];
    per_backend(m, backends, &families);
    m.family(
        "fluxgate_backend_spool_oldest_age_seconds",
        Kind::Gauge,
        "Age of the oldest spooled batch (0 when the spool is empty).",
    );
    for b in backends {
        m.sample(
            "fluxgate_backend_spool_oldest_age_seconds",
            &[("backend", &b.name)],
            spool_age_seconds(b, now_ms),
        );
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Age of the oldest spooled batch in seconds (0 when the spool is empty).
fn spool_age_seconds(b: &crate::stats::BackendStats, now_ms: u64) -> f64 {
    match b.spool_oldest_ms.load(Ordering::Relaxed) {
        0 => 0.0,
        oldest => now_ms.saturating_sub(oldest) as f64 / 1000.0,
    }
}

/// The state of one backend, for `/status` and `/health`.
pub fn backend_status(generation: &Generation, id: usize) -> serde_json::Value {
    let mut status = backend_counters(
        &generation.backends[id].stats,
        &generation.config.backends[id].url,
        generation.config.spool.is_some(),
    );
    status["write_only"] = generation.config.backends[id].write_only.into();
    status["queue_batches"] = generation.backends[id].queue.len().into();
    status
}

/// A backend's counters and state, whether live or retiring.
fn backend_counters(b: &BackendStats, url: &str, spooled: bool) -> serde_json::Value {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let spool = spooled.then(|| {
        serde_json::json!({
            "bytes": load(&b.spool_bytes),
            "records": load(&b.spool_records),
            "oldest_age_seconds": spool_age_seconds(b, unix_millis()),
            "skipped_bytes_at_open": load(&b.spool_skipped_bytes),
            "skipped_records_at_open": load(&b.spool_skipped_records),
            "full_total": load(&b.spool_full),
        })
    });
    serde_json::json!({
        "name": b.name,
        "url": url,
        "up": b.up.load(Ordering::Relaxed),
        "points_written": load(&b.points_written),
        "points_rejected": load(&b.points_rejected),
        "points_lost": load(&b.points_lost),
        "points_spooled": load(&b.points_spooled),
        "points_replayed": load(&b.points_replayed),
        "retries": load(&b.retries),
        "spool": spool,
        "last_error": b.last_error().map(|(at, message)| serde_json::json!({"at_unix": at, "message": message})),
    })
}

/// `GET /status`: a summary for humans and scripts.
pub fn status(worker: &Worker) -> Response {
    let shared = &worker.shared;
    let generation = worker.generation();
    let received: u64 = shared
        .workers
        .iter()
        .map(|w| w.lines_received.load(Ordering::Relaxed))
        .sum();
    let invalid: u64 = shared
        .workers
        .iter()
        .map(|w| w.lines_invalid.load(Ordering::Relaxed))
        .sum();
    let json = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.started.elapsed().as_secs(),
        "config": {
            "source": generation.source,
            "generation": generation.id,
            "applied_at_unix": generation.applied_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "ack": format!("{:?}", generation.config.write.ack).to_lowercase(),
        },
        "workers": shared.workers.len(),
        "points_received": received,
        "points_invalid": invalid,
        "backends": (0..generation.backends.len()).map(|id| backend_status(&generation, id)).collect::<Vec<_>>(),
        // Removed by a reload, still finishing their queue or replaying their spool.
        "retiring": shared.current.retiring().iter()
            .map(|r| backend_counters(&r.stats, &r.url, generation.config.spool.is_some()))
            .collect::<Vec<_>>(),
    });
    Response {
        status: 200,
        body: Body::Json(format!("{json:#}\n")),
        retry_after: None,
        close: false,
    }
}

/// `GET /debug/latency`: per endpoint and per backend (write round trip),
/// percentiles in microseconds. `format=hgrm` gives HdrHistogram's percentile
/// distribution text instead; `reset=true` starts a new interval after reading.
pub fn latency(worker: &Worker, query: &str) -> Response {
    let mut hgrm = false;
    let mut reset = false;
    for (key, value) in urlencoded::pairs(query) {
        match (key, value) {
            ("format", "hgrm") => hgrm = true,
            ("reset", "true") => reset = true,
            _ => {}
        }
    }
    let shared = &worker.shared;
    let endpoints: Vec<_> = [Endpoint::Write, Endpoint::Query, Endpoint::Ping]
        .into_iter()
        .map(|endpoint| {
            (
                endpoint.name(),
                merge(shared.workers.iter().map(|w| w.latency(endpoint)), reset),
            )
        })
        .collect();
    let generation = worker.generation();
    let backends: Vec<_> = generation
        .backends
        .iter()
        .map(|b| {
            (
                b.stats.name.as_str(),
                merge(std::iter::once(&b.stats.flush_latency), reset),
            )
        })
        .collect();

    let mut out = String::with_capacity(2048);
    if hgrm {
        for (kind, entries) in [("endpoint", &endpoints), ("backend", &backends)] {
            for (name, histogram) in entries {
                let _ = writeln!(out, "# {kind} {name} (microseconds)");
                latency::hgrm_text(histogram, &mut out);
                out.push('\n');
            }
        }
        return Response {
            status: 200,
            body: Body::Text(out),
            retry_after: None,
            close: false,
        };
    }
    out.push_str("{\"unit\":\"us\",\"endpoints\":{");
    write_entries(&mut out, &endpoints);
    out.push_str("},\"backends\":{");
    write_entries(&mut out, &backends);
    out.push_str("}}\n");
    Response {
        status: 200,
        body: Body::Json(out),
        retry_after: None,
        close: false,
    }
}

/// One histogram holding the counts of `parts` (each reset afterwards with `reset`).
fn merge<'a>(
    parts: impl Iterator<Item = &'a LatencyHistogram>,
    reset: bool,
) -> hdrhistogram::Histogram<u64> {
    let mut histogram = latency::empty();
    for part in parts {
        part.merge_into(&mut histogram, reset);
    }
    histogram
}

fn write_entries(out: &mut String, entries: &[(&str, hdrhistogram::Histogram<u64>)]) {
    for (i, (name, histogram)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut escaped = Vec::new();
        escape_json_into(name, &mut escaped);
        let _ = write!(out, "\"{}\":", String::from_utf8_lossy(&escaped));
        latency::summary_json(histogram, out);
    }
}

/// How long `POST /reload` waits for the control thread (opening a new
/// backend's spool can take a while) before answering 503.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// `POST /reload`: reads the config source again and applies it. Answers once
/// the new generation is published (or refused, with the reason).
pub async fn reload(worker: &Worker) -> Response {
    use crate::control::{Origin, ReloadError};
    use crate::error::ApiError;
    let outcome = worker.shared.reloads.request(Origin::Http);
    let started = std::time::Instant::now();
    let result = loop {
        match outcome.try_recv() {
            Ok(result) => break result,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return ApiError::Unavailable("fluxgate is shutting down".into()).response()
            }
            Err(crossbeam_channel::TryRecvError::Empty) if started.elapsed() >= RELOAD_WAIT => {
                return ApiError::Unavailable(format!(
                    "reload still running after {}s; see the log for its outcome",
                    RELOAD_WAIT.as_secs()
                ))
                .response()
            }
            Err(crossbeam_channel::TryRecvError::Empty) => monoio::time::sleep(RELOAD_POLL).await,
        }
    };
    match result {
        Ok(applied) => {
            // This worker serves with the new generation from now on.
            worker.follow_reloads();
            let json = serde_json::json!({
                "generation": applied.generation,
                "changed": applied.changed,
                "source": worker.generation().source,
            });
            Response {
                status: 200,
                body: Body::Json(format!("{json}\n")),
                retry_after: None,
                close: false,
            }
        }
        Err(e) => match &*e {
            ReloadError::Load(_) | ReloadError::NeedsRestart(_) => {
                ApiError::ReloadRefused(e.to_string()).response()
            }
            ReloadError::Start(_) => ApiError::ReloadFailed(e.to_string()).response(),
            ReloadError::Stopping => ApiError::Unavailable(e.to_string()).response(),
        },
    }
}
