//! A real fluxgate process, started from the binary cargo built for this test run.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{eventually, signal_child, terminate, TempDir};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Fluxgate {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Fluxgate {
    /// The binary under test.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_fluxgate")
    }

    /// Starts fluxgate with `config` (TOML without `[server] listen`, which the
    /// harness sets to 127.0.0.1:0; `server_extra` goes into `[server]`).
    pub fn start(server_extra: &str, config: &str) -> Fluxgate {
        Self::launch(&[], Some(&Self::config_text(server_extra, config)))
    }

    /// Starts fluxgate with extra `args` (such as `--redis URL`) and, when
    /// given, `file` (whole TOML text) as its `--config` file.
    pub fn launch(args: &[&str], file: Option<&str>) -> Fluxgate {
        let dir = TempDir::new("fluxgate");
        let config_path = dir.path().join("fluxgate.toml");
        let log_path = dir.path().join("fluxgate.log");
        let log = std::fs::File::create(&log_path).expect("fluxgate.log");
        let mut command = Command::new(Self::binary());
        if let Some(file) = file {
            std::fs::write(&config_path, file).expect("write fluxgate.toml");
            command.arg("--config").arg(&config_path);
        }
        command
            .args(args)
            .env("FLUXGATE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = command.spawn().expect("start fluxgate");
        // fluxgate logs "fluxgate listening on <addr>" once every worker is up.
        let addr = eventually(START_TIMEOUT, "fluxgate to log its address", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "fluxgate exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            let log = std::fs::read_to_string(&log_path).ok()?;
            let rest = log.split("fluxgate listening on ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        });
        Fluxgate {
            child: Some(child),
            addr,
            dir,
        }
    }

    /// The config file `start` writes: `[server]` listening on 127.0.0.1:0.
    pub fn config_text(server_extra: &str, config: &str) -> String {
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{config}")
    }

    /// Replaces the config file (for a reload to read).
    pub fn rewrite_config(&self, server_extra: &str, config: &str) {
        std::fs::write(
            self.dir.path().join("fluxgate.toml"),
            Self::config_text(server_extra, config),
        )
        .expect("rewrite fluxgate.toml");
    }

    /// The process id of the running proxy.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (libc::SIGHUP, ...) to the process.
    pub fn signal(&self, signal: i32) {
        signal_child(self.child.as_ref().expect("running"), signal);
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fluxgate.log")).unwrap_or_default()
    }

    /// SIGKILL: no draining, no flushing, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status once it has drained (None if it had to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, STOP_TIMEOUT)
    }

    /// Runs the binary with `args` and returns (exit status, stderr).
    pub fn run(args: &[&str]) -> (ExitStatus, String) {
        let output = Command::new(Self::binary())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run fluxgate");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Fluxgate {
    fn drop(&mut self) {
        self.stop();
    }
}
