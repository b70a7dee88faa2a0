//! Test harness: real `influxd` and `fluxgate` processes on free loopback ports,
//! each in its own temp dir, stopped in `Drop`. A failed test keeps its temp
//! dirs (their paths are printed) so the logs can be read.

pub mod fluxgate;
pub mod http;
pub mod influxd;
pub mod redis;
pub mod steady;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use fluxgate::Fluxgate;
pub use influxd::{backends, Influxd};

/// A port that was free a moment ago. Binding 127.0.0.1:0 and releasing it
/// leaves a small race with other processes; the harness retries start-ups.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Start-ups retried when a port was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// Starts `server` with `try_start`, which returns the server's log when it
/// exits during start-up. A port taken by another process between
/// `free_port` and the server's bind (tests run in parallel) is retried after
/// `new_ports` picks others.
pub fn start_on_free_ports<T>(
    what: &str,
    server: &mut T,
    try_start: fn(&mut T) -> Result<(), String>,
    new_ports: fn(&mut T),
) {
    for _ in 0..START_ATTEMPTS {
        match try_start(server) {
            Ok(()) => return,
            Err(log) if log.to_ascii_lowercase().contains("address already in use") => {
                new_ports(server);
            }
            Err(log) => panic!("{what} exited during start-up:\n{log}"),
        }
    }
    panic!("{what} found no free ports in {START_ATTEMPTS} attempts");
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A unique name for databases and the like, so parallel tests never collide.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed on drop unless the thread is panicking.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(&format!("fluxgate-test-{prefix}")));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Sends `signal` (libc::SIGHUP, ...) to a running child the harness started.
pub fn signal_child(child: &std::process::Child, signal: i32) {
    assert!(send_signal(child, signal), "kill({}, {signal})", child.id());
}

/// kill(2) on a child the harness started: false if it failed.
fn send_signal(child: &std::process::Child, signal: i32) -> bool {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped
    // (`Child` reaps only in wait, and then is not signalled again).
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Sends SIGTERM and waits up to `timeout` for the child to exit, then SIGKILL.
/// A frozen child (SIGSTOP) is woken first, so that it can act on SIGTERM.
pub fn terminate(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    send_signal(child, libc::SIGCONT);
    send_signal(child, libc::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The value of the `/metrics` sample whose line starts with `prefix` (name
/// and labels).
pub fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix) && line[prefix.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
