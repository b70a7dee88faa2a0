//! One client connection of the sink: a keep-alive loop of read request, answer
//! as InfluxDB 1.x would, count.
//!
//! The socket has a short read timeout so the loop notices shutdown and the
//! outage window while idle; a request cut by the timeout stays buffered in the
//! reader. A write's points are counted on this thread into its own [`Tally`],
//! then merged under the listener's lock once, before the answer goes out: a
//! client that got its 204 finds its points in `/stats`.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use libdeflater::{DecompressionError, Decompressor};

use super::lines::{count_points, hash_bytes, Tally};
use super::Shared;
use crate::http::{form_pairs, is_too_large, Method, Request, RequestReader};

/// How often an idle connection looks at the stop flag and the outage window.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a response write may block before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body accepted, before and after gunzip. InfluxDB's own default
/// `max-body-size` is 25 MB; the sink allows more so it is never the limit.
pub const MAX_BODY_BYTES: usize = 256 << 20; // 256 MiB
/// The version the sink claims, in `X-Influxdb-Version`.
const INFLUXDB_VERSION: &str = "1.8.10";

/// An answer: status, JSON (or text) body, whether to close after it.
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    close: bool,
}

impl Reply {
    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
            content_type: "application/json",
            close: false,
        }
    }

    fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            body: body.into(),
            ..Reply::empty(status)
        }
    }

    /// InfluxDB's error shape, `{"error":"..."}`.
    fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            format!("{{\"error\":{}}}", crate::report::json_string(message)),
        )
    }
}

/// Per-connection buffers, apart from the request reader so a request borrowed
/// from the reader can be handled with them.
struct Handler<'a> {
    shared: &'a Shared,
    listener: usize,
    tally: Tally,
    hashes: Vec<u64>,
    decompressor: Decompressor,
    /// Gunzipped body; grows to the largest body seen, then is reused.
    plain: Vec<u8>,
}

/// Serves `stream` until the client closes, the sink stops, or the outage
/// window (in close mode) begins.
pub(super) fn serve(mut stream: TcpStream, listener: usize, shared: &Shared) {
    // Accepted sockets must block (with a timeout), whatever the listener does.
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(POLL_INTERVAL)))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let mut reader = RequestReader::new(MAX_BODY_BYTES);
    let mut handler = Handler {
        shared,
        listener,
        tally: Tally::default(),
        hashes: Vec::new(),
        decompressor: Decompressor::new(),
        plain: Vec::new(),
    };
    let mut out = Vec::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) || shared.is_down_closed() {
            break;
        }
        let (reply, head_only) = match reader.read_request(&mut stream) {
            Ok(request) => {
                // A backend that goes down mid-request never answers it.
                if shared.is_down_closed() {
                    break;
                }
                (handler.handle(&request), request.method == Method::Head)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let status = if is_too_large(&e) { 413 } else { 400 };
                handler.count_request(|s| s.client_errors += 1);
                let reply = Reply {
                    close: true,
                    ..Reply::error(status, &e.to_string())
                };
                (reply, false)
            }
            Err(_) => break,
        };
        write_reply(&mut out, &reply, head_only);
        if stream.write_all(&out).is_err() || reply.close {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

impl Handler<'_> {
    fn handle(&mut self, request: &Request<'_>) -> Reply {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target, ""));
        let mut reply = match (request.method, path) {
            // Not part of the InfluxDB face: answered even during an outage, and
            // not counted as requests.
            (Method::Get, "/stats") => Reply::json(200, self.shared.stats_json()),
            (Method::Post, "/stats/reset") => {
                self.shared.reset_stats();
                Reply::empty(204)
            }
            _ if self.shared.is_down() => {
                self.count_request(|s| s.outage_rejected += 1);
                Reply::error(503, "loadgen sink: simulated outage (--down-for)")
            }
            (Method::Get | Method::Head, "/ping") => {
                self.count_request(|_| {});
                Reply::empty(204)
            }
            (Method::Post, "/write") => self.write(query, request),
            (Method::Get | Method::Post, "/query") => self.query(query, request),
            _ => {
                self.count_request(|s| s.client_errors += 1);
                Reply {
                    content_type: "text/plain; charset=utf-8",
                    ..Reply::json(404, "404 page not found\n")
                }
            }
        };
        reply.close |= request.close;
        reply
    }

    /// Counts a request that carries no points, and whatever else `f` adds.
    fn count_request(&self, f: impl FnOnce(&mut super::stats::ListenerStats)) {
        let mut stats = self.shared.listeners[self.listener].lock_stats();
        stats.requests += 1;
        f(&mut stats);
    }

    fn write(&mut self, query: &str, request: &Request<'_>) -> Reply {
        let (mut db, mut precision) = (String::new(), String::new());
        for (name, value) in form_pairs(query) {
            match name.as_str() {
                "db" => db = value,
                "precision" => precision = value,
                _ => {}
            }
        }
        if db.is_empty() {
            self.count_request(|s| s.client_errors += 1);
            return Reply::error(400, "database is required");
        }
        let body = if request.gzip {
            match gunzip(&mut self.decompressor, request.body, &mut self.plain) {
                Ok(len) => &self.plain[..len],
                Err(reply) => {
                    self.count_request(|s| s.client_errors += 1);
                    return reply;
                }
            }
        } else {
            request.body
        };
        self.hashes.clear();
        // Same series and time in another db or precision is another point.
        let seed = hash_bytes(hash_bytes(0, db.as_bytes()), precision.as_bytes());
        let hashes = self.shared.verify.then_some(&mut self.hashes);
        let points = count_points(body, &mut self.tally, hashes, seed);

        let listener = &self.shared.listeners[self.listener];
        let ordinal = listener.writes_seen.fetch_add(1, Ordering::Relaxed);
        let failed = self.shared.faults.fails(self.listener, ordinal);
        {
            let mut stats = listener.lock_stats();
            stats.requests += 1;
            stats.bytes += request.body.len() as u64;
            stats.bytes_decoded += body.len() as u64;
            if failed {
                stats.failures_injected += 1;
            } else {
                stats.writes += 1;
                stats.points += points;
                stats.add_points(&db, &mut self.tally, &self.hashes);
            }
        }
        if failed {
            self.tally.drain(|_, _| {});
        }
        if let Some(delay) = self.shared.faults.delay {
            thread::sleep(delay);
        }
        if failed {
            Reply::error(500, "loadgen sink: injected failure (--fail-ratio)")
        } else {
            Reply::empty(204)
        }
    }

    /// Answers `CREATE DATABASE` statements (from the URL or a form body); any
    /// other statement is beyond the sink.
    fn query(&mut self, query: &str, request: &Request<'_>) -> Reply {
        let mut q = form_pairs(query)
            .find(|(name, _)| name == "q")
            .map(|(_, v)| v);
        if q.is_none() && request.method == Method::Post {
            let form = String::from_utf8_lossy(request.body);
            q = form_pairs(&form)
                .find(|(name, _)| name == "q")
                .map(|(_, v)| v);
        }
        let Some(q) = q else {
            self.count_request(|s| s.client_errors += 1);
            return Reply::error(400, "missing required parameter \"q\"");
        };
        let statements: Vec<&str> = q
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let all_create = !statements.is_empty()
            && statements.iter().all(|s| {
                s.get(..15)
                    .is_some_and(|start| start.eq_ignore_ascii_case("CREATE DATABASE"))
            });
        if !all_create {
            self.count_request(|s| s.client_errors += 1);
            return Reply::error(404, "loadgen sink answers only CREATE DATABASE on /query");
        }
        self.count_request(|_| {});
        let results: Vec<String> = (0..statements.len())
            .map(|i| format!("{{\"statement_id\":{i}}}"))
            .collect();
        Reply::json(200, format!("{{\"results\":[{}]}}", results.join(",")))
    }
}

/// Gunzips `input` into `out` (grown as needed, up to [`MAX_BODY_BYTES`]) and
/// returns the plain length, or the reply for a broken or oversized body.
fn gunzip(
    decompressor: &mut Decompressor,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, Reply> {
    // The gzip trailer's last four bytes are the plain size mod 2^32: a good
    // first guess for single-member bodies under 4 GiB.
    let hinted = input.len().checked_sub(4).map_or(0, |at| {
        u32::from_le_bytes(input[at..].try_into().expect("4 bytes")) as usize
    });
    let mut size = hinted.max(input.len() * 4).clamp(1, MAX_BODY_BYTES);
    loop {
        if out.len() < size {
            out.resize(size, 0);
        }
        match decompressor.gzip_decompress(input, &mut out[..size]) {
            Ok(len) => return Ok(len),
            Err(DecompressionError::InsufficientSpace) if size < MAX_BODY_BYTES => {
                size = (size * 2).min(MAX_BODY_BYTES);
            }
            Err(DecompressionError::InsufficientSpace) => {
                return Err(Reply::error(
                    413,
                    &format!("gzip body over {MAX_BODY_BYTES} bytes when decompressed"),
                ))
            }
            Err(DecompressionError::BadData) => {
                return Err(Reply::error(
                    400,
                    "bad gzip body: not one valid gzip member",
                ))
            }
        }
    }
}

/// Writes `reply` into `out` (cleared first) as InfluxDB 1.x does: version
/// headers on every answer, no body on 204.
fn write_reply(out: &mut Vec<u8>, reply: &Reply, head_only: bool) {
    out.clear();
    let reason = match reply.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\nX-Influxdb-Build: OSS\r\nX-Influxdb-Version: {INFLUXDB_VERSION}\r\n",
        reply.status
    );
    if reply.status != 204 {
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            reply.content_type,
            reply.body.len()
        );
    }
    if reply.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && reply.status != 204 {
        out.extend_from_slice(reply.body.as_bytes());
    }
}
