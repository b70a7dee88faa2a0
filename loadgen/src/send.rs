//! The load clients shared by `loadgen write` and `loadgen query`: one thread per
//! connection, each a blocking keep-alive HTTP/1.1 client sending the requests a
//! [`Workload`] builds (pre-built `/write` bodies, or `/query` GETs).
//!
//! Threads take request indexes from one shared counter, so together they send
//! requests `0, 1, 2, ...` in order whatever their speed. With `--rate` each index
//! has an intended send time (`start + index / rate`) and latency is measured from
//! it, not from when a busy connection got round to sending: a stalled server shows
//! up as latency rather than as fewer, faster requests (coordinated omission).
//! Without a rate, each thread sends as soon as its previous response arrives.
//!
//! Nothing is shared per request but the index counter and three progress counters;
//! each thread keeps its own histogram and error counts, merged by `report.rs`.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::http::{push_percent_encoded, write_request_head, ResponseReader, Target};

/// Longest wait for connect, send or response before the request counts as a
/// connection error. Generous: a loaded InfluxDB may take seconds per batch.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed connect, so a down target is not hammered in a loop.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Highest latency the histograms hold (values above are clamped), in µs.
pub const MAX_LATENCY_US: u64 = 3_600_000_000; // 1 hour
/// Significant digits kept by the latency histograms.
pub const LATENCY_SIGFIG: u8 = 3;
/// Progress line period.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Error response bodies kept for the report, per status.
const ERROR_SAMPLE_BYTES: usize = 200;

/// How long and how hard to send.
#[derive(Clone, Copy, Debug)]
pub struct RunPlan {
    pub connections: usize,
    /// Stop after this many requests (from `--points`).
    pub max_requests: Option<u64>,
    /// Send nothing intended to start after this long (from `--duration`).
    pub duration: Option<Duration>,
    /// Requests per second over all connections; `None` sends as fast as answered.
    pub rate: Option<f64>,
}

/// What the connections send: request `index` and how to judge its answer.
/// Implementations do the expensive work before the run, so that building a
/// request costs next to nothing against the target.
pub trait Workload: Sync {
    /// What one request carries, for the report and the progress line
    /// ("points", "queries").
    fn unit(&self) -> &'static str;

    /// Writes the head of request `index` to `head` (cleared first) and returns
    /// its body, borrowed from the workload or built in `scratch`.
    fn request<'a>(
        &'a self,
        index: u64,
        head: &mut Vec<u8>,
        scratch: &'a mut Vec<u8>,
    ) -> Payload<'a>;

    /// Whether an answer counts as a success. The default takes any 2xx.
    fn succeeded(&self, status: u16, _body: &[u8]) -> bool {
        (200..300).contains(&status)
    }
}

/// One request's body and how many units (points, queries) it carries.
pub struct Payload<'a> {
    pub body: &'a [u8],
    pub units: u64,
}

/// What one connection thread counted.
pub struct ConnStats {
    /// Request-to-response latency in µs, for every HTTP response of any status.
    pub latency_us: Histogram<u64>,
    pub requests: u64,
    /// Requests the workload judged successful (2xx for writes).
    pub requests_ok: u64,
    /// Units (points, queries) in successful requests.
    pub units_ok: u64,
    /// Request heads and bodies written.
    pub bytes_sent: u64,
    /// Failed requests by HTTP status (a query's 200 with an `"error"` counts
    /// under 200).
    pub status_errors: BTreeMap<u16, u64>,
    /// First error body seen per status, truncated.
    pub error_samples: BTreeMap<u16, String>,
    /// Requests lost to connect, send or receive failures.
    pub connection_errors: u64,
    /// First connection error message.
    pub connection_error_sample: Option<String>,
}

/// Counters read by the progress line.
#[derive(Default)]
struct Progress {
    units_ok: AtomicU64,
    errors: AtomicU64,
}

/// Opens one connection to check the target is up before building bodies.
///
/// # Errors
///
/// If the connection is refused or times out.
pub fn check_reachable(target: &Target) -> Result<()> {
    let stream = TcpStream::connect_timeout(&target.addr, IO_TIMEOUT)
        .with_context(|| format!("cannot reach {} ({})", target.authority, target.addr))?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// Sends `CREATE DATABASE` through `/query`, as InfluxDB and the proxy accept it.
///
/// # Errors
///
/// If the request fails or the answer is not a 200 without an `"error"`.
pub fn create_database(target: &Target, db: &str) -> Result<()> {
    let statement = format!(
        "CREATE DATABASE \"{}\"",
        db.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut form = String::from("q=");
    push_percent_encoded(&mut form, &statement);
    let mut conn = Connection::open(target)?;
    let mut head = Vec::new();
    write_request_head(
        &mut head,
        "POST",
        "/query",
        target,
        "application/x-www-form-urlencoded",
        None,
        form.len(),
    );
    write_request(&mut conn.stream, &head, form.as_bytes())?;
    let response = conn.reader.read_response(&mut conn.stream)?;
    let body = String::from_utf8_lossy(response.body);
    // InfluxDB reports statement errors inside a 200: {"results":[{"error":...}]}.
    if response.status != 200 || body.contains("\"error\"") {
        bail!("{statement} answered {}: {body}", response.status);
    }
    Ok(())
}

/// Runs the connection threads to the end of the plan, printing progress to stderr
/// once a second. Returns each thread's counts and the run's wall time.
pub fn run(target: &Target, workload: &dyn Workload, plan: RunPlan) -> (Vec<ConnStats>, Duration) {
    let next_index = AtomicU64::new(0);
    let progress = Progress::default();
    let start = Instant::now();
    let stats = thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.connections)
            .map(|id| {
                let client = Client {
                    target,
                    workload,
                    plan,
                    next_index: &next_index,
                    progress: &progress,
                    start,
                };
                thread::Builder::new()
                    .name(format!("loadgen-conn-{id}"))
                    .spawn_scoped(scope, move || client.run())
                    .expect("spawning a connection thread")
            })
            .collect();
        report_progress(&progress, start, workload.unit(), || {
            handles.iter().all(|h| h.is_finished())
        });
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread panicked"))
            .collect()
    });
    (stats, start.elapsed())
}

/// Prints a progress line every [`PROGRESS_INTERVAL`] until `done()`.
fn report_progress(progress: &Progress, start: Instant, unit: &str, done: impl Fn() -> bool) {
    let mut last_units = 0;
    let mut next_tick = start + PROGRESS_INTERVAL;
    // Sleep in short steps so the run's end is noticed promptly.
    let poll = Duration::from_millis(20);
    while !done() {
        let now = Instant::now();
        if now < next_tick {
            thread::sleep(poll.min(next_tick - now));
            continue;
        }
        let units = progress.units_ok.load(Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        eprintln!(
            "[{elapsed:5.1}s] {units} {unit}, {} {unit}/s last second, {:.0} {unit}/s so far, {} errors",
            units - last_units,
            units as f64 / elapsed,
            progress.errors.load(Ordering::Relaxed),
        );
        last_units = units;
        next_tick += PROGRESS_INTERVAL;
    }
}

/// One connection thread's view of the run.
struct Client<'a> {
    target: &'a Target,
    workload: &'a dyn Workload,
    plan: RunPlan,
    next_index: &'a AtomicU64,
    progress: &'a Progress,
    start: Instant,
}

/// A keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    reader: ResponseReader,
}

impl Connection {
    fn open(target: &Target) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&target.addr, IO_TIMEOUT)?;
        // The head and the body's last segment must not wait for an ACK (Nagle
        // against delayed ACK costs up to 40 ms a request).
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            stream,
            reader: ResponseReader::new(),
        })
    }
}

impl Client<'_> {
    fn run(self) -> ConnStats {
        let mut stats = ConnStats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_SIGFIG)
                .expect("valid histogram bounds"),
            requests: 0,
            requests_ok: 0,
            units_ok: 0,
            bytes_sent: 0,
            status_errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            connection_errors: 0,
            connection_error_sample: None,
        };
        let deadline = self.plan.duration.map(|d| self.start + d);
        let mut connection: Option<Connection> = None;
        let mut scratch = Vec::new();
        let mut head = Vec::new();
        loop {
            let index = self.next_index.fetch_add(1, Ordering::Relaxed);
            if self.plan.max_requests.is_some_and(|max| index >= max) {
                break;
            }
            let intended = match self.plan.rate {
                Some(rate) => self.start + Duration::from_secs_f64(index as f64 / rate),
                None => Instant::now(),
            };
            // Past the deadline nothing new starts, even if a slow target left
            // requests scheduled earlier unsent (the report counts those).
            if deadline.is_some_and(|d| intended >= d || Instant::now() >= d) {
                break;
            }
            let now = Instant::now();
            if intended > now {
                thread::sleep(intended - now);
            }
            let payload = self.workload.request(index, &mut head, &mut scratch);
            stats.requests += 1;
            match send(
                &mut connection,
                self.target,
                &head,
                payload.body,
                self.workload,
            ) {
                Ok((status, close, error_body)) => {
                    let latency = intended.elapsed().as_micros() as u64;
                    stats.latency_us.saturating_record(latency.max(1));
                    stats.bytes_sent += (head.len() + payload.body.len()) as u64;
                    if let Some(error_body) = error_body {
                        *stats.status_errors.entry(status).or_default() += 1;
                        stats.error_samples.entry(status).or_insert(error_body);
                        self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.requests_ok += 1;
                        stats.units_ok += payload.units;
                        self.progress
                            .units_ok
                            .fetch_add(payload.units, Ordering::Relaxed);
                    }
                    if close {
                        connection = None;
                    }
                }
                Err(e) => {
                    connection = None;
                    stats.connection_errors += 1;
                    stats
                        .connection_error_sample
                        .get_or_insert_with(|| e.to_string());
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(RECONNECT_DELAY);
                }
            }
        }
        stats
    }
}

/// Sends one request on `connection` (opening it if needed) and reads the answer:
/// status, whether the server closes, and the (truncated) body if the workload
/// judged it a failure.
fn send(
    connection: &mut Option<Connection>,
    target: &Target,
    head: &[u8],
    body: &[u8],
    workload: &dyn Workload,
) -> io::Result<(u16, bool, Option<String>)> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(Connection::open(target)?),
    };
    write_request(&mut conn.stream, head, body)?;
    let response = conn.reader.read_response(&mut conn.stream)?;
    let error_body = if workload.succeeded(response.status, response.body) {
        None
    } else {
        let end = response.body.len().min(ERROR_SAMPLE_BYTES);
        Some(
            String::from_utf8_lossy(&response.body[..end])
                .trim()
                .to_owned(),
        )
    };
    Ok((response.status, response.close, error_body))
}

/// Writes a request's head and body with one `writev` where the socket takes
/// them whole, so the head does not leave in a segment of its own (the
/// socket is `TCP_NODELAY`). Go's net/http, Telegraf's client, does the same
/// through its write buffer: the head leaves with the body's first bytes.
fn write_request(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(head), IoSlice::new(body)];
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut left, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_request_written_at_once_arrives_whole_and_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let head = b"POST /write HTTP/1.1\r\nContent-Length: 4000000\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = [head.as_slice(), &body].concat();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        });
        let mut client = TcpStream::connect(addr).unwrap();
        write_request(&mut client, &head, &body).unwrap();
        drop(client);
        assert!(server.join().unwrap() == expected, "bytes differ");
    }
}
