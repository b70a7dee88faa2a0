//! `loadgen sink`: a fast stand-in for InfluxDB 1.x backends, for measuring the
//! proxy alone (a real InfluxDB is slower than the proxy). It is the project's
//! one mock, so it answers like InfluxDB where the proxy can tell, and counts
//! exactly what it accepted:
//!
//! - `GET|HEAD /ping` -> 204 with `X-Influxdb-Version: 1.8.10`;
//! - `POST /write?db=..` -> 204 once the whole body (Content-Length or chunked,
//!   gzip or not) is read and its points counted; no db -> 400
//!   `{"error":"database is required"}`;
//! - `GET|POST /query` with only `CREATE DATABASE` statements -> 200
//!   `{"results":[{"statement_id":0}]}`; anything else -> 404.
//!
//! Every listen address is one simulated backend with its own counters (requests,
//! points per db and measurement, bytes, injected failures, and with `--verify`
//! duplicate points), read with `GET /stats` on any of them and zeroed with
//! `POST /stats/reset`. Lines are counted, not validated (`sink/lines.rs`).
//!
//! Threads: one accept loop per address, one thread per connection with blocking
//! reads; the proxy keeps few keep-alive connections per backend, so this is
//! simpler than an event loop and fast enough. SIGINT or SIGTERM set a flag the
//! loops poll; the sink then prints its final stats as JSON on stdout.
//!
//! Capacity (release build, loadgen write on the same 2 shared, busy cores, 5000
//! lines a body, 4 connections, 10 s, three runs each): plain bodies 1.0-2.0M
//! points/s (up to 790 MB/s), the sink spending one CPU-second per 2.7-3.4M
//! points, two thirds of it in the kernel's socket copy; gzip bodies 1.4-2.0M
//! points/s, one sink CPU-second per 1.7-1.9M points (libdeflate). `--verify`
//! adds about 0.5 µs of user time per point (its hash set). Measured with
//! `loadgen sink --listen 127.0.0.1:0` and
//! `loadgen write --url http://ADDR --batch-size 5000 --connections 4 --duration 10s [--gzip]`,
//! CPU from utime + stime in `/proc/PID/stat`.

mod conn;
mod fault;
mod lines;
mod stats;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::args::parse_duration;
pub use fault::{DownMode, Faults};
use stats::ListenerStats;

/// How long an idle accept loop sleeps between polls of its non-blocking
/// listener: the delay a new connection may see, and the stop latency.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// How long shutdown waits for open connections to notice the stop flag.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on, one per simulated backend: repeat the flag or list
    /// several (space- or comma-separated). Port 0 picks a free port; the
    /// "listening on" lines on stderr give the real ones.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "127.0.0.1:18086")]
    pub listen: Vec<SocketAddr>,

    /// Also remember a 64-bit hash of every accepted point (series key and
    /// timestamp, per db and precision) per listener, so /stats reports
    /// `duplicates`. Costs about 16 bytes of memory per point.
    #[arg(long)]
    pub verify: bool,

    /// Share of /write requests answered 500 (their points not counted), chosen
    /// by --seed and the write's ordinal on its listener.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub fail_ratio: f64,

    /// Seed for --fail-ratio: the same seed fails the same write ordinals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Wait this long before answering each /write, e.g. 5ms.
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Simulate an outage of this length (see --down-after, --down-mode).
    #[arg(long, value_parser = parse_duration)]
    pub down_for: Option<Duration>,

    /// Start the outage this long after the sink starts (default: at once).
    #[arg(long, value_parser = parse_duration, requires = "down_for")]
    pub down_after: Option<Duration>,

    /// During the outage: `close` drops the listening socket (connections are
    /// refused) and closes open connections without answering; `503` keeps
    /// connections and answers every request but /stats with 503.
    #[arg(long, value_enum, default_value = "close")]
    pub down_mode: DownMode,
}

/// One listen address and its counters.
struct Listener {
    /// The bound address (with the real port when 0 was asked).
    addr: SocketAddr,
    stats: Mutex<ListenerStats>,
    /// `/write` requests received so far, the failure dice's ordinal; not reset
    /// by `/stats/reset`.
    writes_seen: AtomicU64,
}

impl Listener {
    fn lock_stats(&self) -> MutexGuard<'_, ListenerStats> {
        // A connection thread that panicked mid-update leaves counts that are
        // still worth reporting.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// State shared by the accept loops and connections.
struct Shared {
    listeners: Vec<Listener>,
    faults: Faults,
    verify: bool,
    started: Instant,
    stop: Arc<AtomicBool>,
    open_connections: AtomicUsize,
}

impl Shared {
    fn stats_json(&self) -> String {
        let guards: Vec<_> = self.listeners.iter().map(Listener::lock_stats).collect();
        stats::stats_json(
            self.listeners
                .iter()
                .zip(&guards)
                .map(|(l, s)| (l.addr, &**s)),
        )
    }

    fn reset_stats(&self) {
        for listener in &self.listeners {
            listener.lock_stats().reset();
        }
    }

    fn is_down(&self) -> bool {
        self.faults.is_down(self.started.elapsed())
    }

    fn is_down_closed(&self) -> bool {
        self.faults.is_down_closed(self.started.elapsed())
    }
}

/// A running sink: its accept loops and shared counters.
pub struct Sink {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

impl Sink {
    /// Binds every address, prints `loadgen sink listening on ADDR` for each on
    /// stderr, and starts accepting.
    ///
    /// # Errors
    ///
    /// If an address cannot be bound.
    pub fn start(addrs: &[SocketAddr], faults: Faults, verify: bool) -> Result<Sink> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let socket = bind(*addr).with_context(|| format!("listening on {addr}"))?;
            sockets.push(socket);
        }
        let listeners = sockets
            .iter()
            .map(|s| {
                Ok(Listener {
                    addr: s.local_addr()?,
                    stats: Mutex::new(ListenerStats::new(verify)),
                    writes_seen: AtomicU64::new(0),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            listeners,
            faults,
            verify,
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            open_connections: AtomicUsize::new(0),
        });
        let mut acceptors = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            eprintln!("loadgen sink listening on {}", shared.listeners[index].addr);
            let shared = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("loadgen-sink-accept-{index}"))
                .spawn(move || accept_loop(socket, index, &shared))
                .context("spawning an accept thread")?;
            acceptors.push(handle);
        }
        Ok(Sink { shared, acceptors })
    }

    /// The bound addresses, in `--listen` order.
    #[cfg(test)]
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.shared.listeners.iter().map(|l| l.addr).collect()
    }

    /// The `/stats` document.
    #[cfg(test)]
    pub fn stats_json(&self) -> String {
        self.shared.stats_json()
    }

    /// Stops accepting, gives open connections [`DRAIN_TIMEOUT`] to notice, and
    /// returns the final `/stats` document.
    pub fn stop(self) -> String {
        self.shared.stop.store(true, Ordering::Relaxed);
        for handle in self.acceptors {
            let _ = handle.join();
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.shared.open_connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline
        {
            thread::sleep(ACCEPT_POLL);
        }
        self.shared.stats_json()
    }
}

/// Runs `loadgen sink` until SIGINT or SIGTERM.
///
/// # Errors
///
/// If an address cannot be bound or the signal handlers cannot be installed.
pub fn run(args: &SinkArgs) -> Result<()> {
    let faults = Faults {
        fail_ratio: args.fail_ratio,
        seed: args.seed,
        delay: args.delay,
        down_after: args.down_after.unwrap_or(Duration::ZERO),
        down_for: args.down_for,
        down_mode: args.down_mode,
    };
    let sink = Sink::start(&args.listen, faults, args.verify)?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&sink.shared.stop))
            .context("installing the signal handler")?;
    }
    while !sink.shared.stop.load(Ordering::Relaxed) {
        thread::sleep(conn::POLL_INTERVAL);
    }
    eprintln!("loadgen sink: stopping");
    println!("{}", sink.stop());
    Ok(())
}

fn parse_ratio(text: &str) -> Result<f64> {
    let ratio: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&ratio) {
        bail!("ratio must be between 0 and 1, got {text:?}");
    }
    Ok(ratio)
}

/// Binds a non-blocking listener: the accept loop polls it so it can notice
/// the stop flag and the outage window.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Accepts connections on listener `index`, one thread each, until stopped.
/// In a `close`-mode outage the socket is dropped, so connecting is refused,
/// and bound again (same address; std sets SO_REUSEADDR) when it ends.
fn accept_loop(socket: TcpListener, index: usize, shared: &Arc<Shared>) {
    let addr = shared.listeners[index].addr;
    let mut socket = Some(socket);
    let mut rebind_failed = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.is_down_closed() {
            socket = None;
            thread::sleep(ACCEPT_POLL);
            continue;
        }
        let Some(listener) = &socket else {
            match bind(addr) {
                Ok(s) => {
                    socket = Some(s);
                    rebind_failed = false;
                }
                Err(e) => {
                    if !rebind_failed {
                        eprintln!("loadgen sink: cannot listen on {addr} again after the outage: {e}; retrying");
                        rebind_failed = true;
                    }
                    thread::sleep(ACCEPT_POLL);
                }
            }
            continue;
        };
        match listener.accept() {
            Ok((stream, _)) => {
                shared.open_connections.fetch_add(1, Ordering::Relaxed);
                let conn_shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name(format!("loadgen-sink-conn-{}", addr.port()))
                    .spawn(move || {
                        conn::serve(stream, index, &conn_shared);
                        conn_shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = spawned {
                    shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                    eprintln!("loadgen sink: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                eprintln!("loadgen sink: accept on {addr}: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests;
