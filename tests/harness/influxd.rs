//! Real InfluxDB 1.x servers (`influxd` from Debian's `influxdb` package).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{eventually, free_port, http, signal_child, start_on_free_ports, terminate, TempDir};

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Influxd {
    child: Option<Child>,
    pub http_port: u16,
    rpc_port: u16,
    dir: TempDir,
    /// With `[http] auth-enabled`: the admin user the harness queries as.
    admin: Option<(String, String)>,
}

impl Influxd {
    /// Starts an influxd on free ports and waits until `/ping` answers.
    /// A port taken by another process between `free_port` and influxd's bind
    /// (tests run in parallel) is retried with new ports.
    pub fn start() -> Influxd {
        Self::start_inner(None)
    }

    /// Starts an influxd that requires credentials, with `user` as its admin.
    pub fn start_with_auth(user: &str, password: &str) -> Influxd {
        let influxd = Self::start_inner(Some((user.to_owned(), password.to_owned())));
        // With no users yet, InfluxDB lets anyone create the first admin.
        let reply = http::post_form(
            &influxd.url("/query"),
            &[(
                "q",
                &format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"),
            )],
        );
        assert_eq!(reply.status, 200, "create admin: {}", reply.body);
        influxd
    }

    fn start_inner(admin: Option<(String, String)>) -> Influxd {
        let dir = TempDir::new("influxd");
        let mut influxd = Influxd {
            child: None,
            http_port: free_port(),
            rpc_port: free_port(),
            dir,
            admin,
        };
        start_on_free_ports("influxd", &mut influxd, Self::try_restart, |influxd| {
            influxd.http_port = free_port();
            influxd.rpc_port = free_port();
        });
        influxd
    }

    /// Starts (again) on the same ports and data directory.
    pub fn restart(&mut self) {
        if let Err(log) = self.try_restart() {
            panic!("influxd exited during start-up:\n{log}");
        }
    }

    /// Starts influxd; `Err` with its log when it exits before answering `/ping`.
    fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "influxd is already running");
        let path = self.dir.path();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  auth-enabled = {auth}
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#,
            rpc = self.rpc_port,
            http = self.http_port,
            dir = path.display(),
            auth = self.admin.is_some()
        );
        let config_path = path.join("influxd.conf");
        std::fs::write(&config_path, config).expect("write influxd.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.join("influxd.log"))
            .expect("influxd.log");
        let mut command = Command::new("influxd");
        command
            .arg("-config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = command.spawn().expect(
            "influxd not found: install Debian's `influxdb` package (scripts/test.sh does)",
        );
        let url = self.url("/ping");
        let log_path = self.dir.path().join("influxd.log");
        let exited = eventually(START_TIMEOUT, "influxd to answer /ping", || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(true);
            }
            let ok = ureq::get(&url)
                .timeout(Duration::from_secs(1))
                .call()
                .is_ok_and(|r| r.status() == 204);
            ok.then_some(false)
        });
        if exited {
            return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts connections,
    /// and nothing answers them, as from a server that hangs.
    pub fn freeze(&self) {
        signal_child(self.child.as_ref().expect("running"), libc::SIGSTOP);
    }

    /// Wakes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        signal_child(self.child.as_ref().expect("running"), libc::SIGCONT);
    }

    /// Stops the server (SIGTERM, then SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Runs InfluxQL and returns the JSON answer, times in `epoch` ns.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        // InfluxDB reads u and p from the URL only (test names need no escaping).
        let path = match &self.admin {
            Some((user, password)) => format!("/query?u={user}&p={password}"),
            None => "/query".to_owned(),
        };
        let reply = http::post_form(&self.url(&path), &[("db", db), ("q", q), ("epoch", "ns")]);
        assert_eq!(reply.status, 200, "query {q:?} failed: {}", reply.body);
        serde_json::from_str(&reply.body).expect("JSON answer")
    }

    pub fn create_database(&self, db: &str) {
        let answer = self.query(db, &format!("CREATE DATABASE \"{db}\""));
        assert!(answer["results"][0]["error"].is_null(), "{answer}");
    }

    /// Number of points of `measurement` (counted on its field `v`).
    pub fn count(&self, db: &str, measurement: &str) -> u64 {
        let answer = self.query(db, &format!("SELECT count(\"v\") FROM \"{measurement}\""));
        answer["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    }

    /// (time in ns, v) of every point of `measurement`, in time order.
    pub fn points(&self, db: &str, measurement: &str) -> Vec<(i64, f64)> {
        let answer = self.query(db, &format!("SELECT \"v\" FROM \"{measurement}\""));
        let Some(values) = answer["results"][0]["series"][0]["values"].as_array() else {
            return Vec::new();
        };
        values
            .iter()
            .map(|row| (row[0].as_i64().unwrap(), row[1].as_f64().unwrap()))
            .collect()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two InfluxDB servers shared by the tests that run at the same time; they
/// stop when the last test holding them finishes. Tests keep apart by using
/// their own database names (`harness::unique`).
pub struct Backends {
    pub a: Influxd,
    pub b: Influxd,
}

pub fn backends() -> Arc<Backends> {
    static SHARED: Mutex<Weak<Backends>> = Mutex::new(Weak::new());
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(backends) = shared.upgrade() {
        return backends;
    }
    let b = std::thread::spawn(Influxd::start);
    let a = Influxd::start();
    let b = b.join().expect("second influxd failed to start");
    let backends = Arc::new(Backends { a, b });
    *shared = Arc::downgrade(&backends);
    backends
}

impl Backends {
    /// Creates `db` on both servers.
    pub fn create_database(&self, db: &str) {
        self.a.create_database(db);
        self.b.create_database(db);
    }
}
