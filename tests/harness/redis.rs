//! Real Redis servers (`redis-server` from Debian's `redis-server` package),
//! for the config-from-Redis tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, start_on_free_ports, terminate, TempDir};

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a redis-server without a password on a free port and waits
    /// until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_inner(None)
    }

    /// Starts a redis-server that requires `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            password,
            dir: TempDir::new("redis"),
        };
        start_on_free_ports("redis-server", &mut server, Self::try_restart, |server| {
            server.port = free_port();
        });
        server
    }

    /// Starts (again) on the same port. Nothing is persisted, so the data is gone.
    pub fn restart(&mut self) {
        if let Err(log) = self.try_restart() {
            panic!("redis-server exited during start-up:\n{log}");
        }
    }

    /// Starts redis-server; `Err` with its log when it exits before answering PING.
    fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let log_path = self.dir.path().join("redis.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            // Only loopback and a fresh instance: protected mode adds nothing.
            .args(["--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis.log"))
            .stderr(log);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let mut child = command.spawn().expect(
            "redis-server not found: install Debian's `redis-server` package (scripts/test.sh does)",
        );
        let url = self.url_with_password();
        let exited = eventually(START_TIMEOUT, "redis-server to answer PING", || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(true);
            }
            ping(&url).then_some(false)
        });
        if exited {
            return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// `redis://127.0.0.1:<port>/0`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn url_with_password(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => self.url(),
        }
    }

    /// A connection for setting up and checking keys, authenticated if needed.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url_with_password())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("connect to redis-server on port {}: {e}", self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return false;
    };
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .is_ok_and(|pong| pong == "PONG")
}
