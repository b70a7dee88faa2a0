//! The configuration file: TOML types, defaults and validation.
//!
//! The keys are the contract with operators (see DESIGN.md): add to them, never
//! rename them. Every type denies unknown keys, so a typo is an error at start-up
//! instead of a silently ignored setting. [`Config::load`] returns a config that
//! has passed [`Config::validate`]: every later stage may rely on unique backend
//! names, parseable URLs and routes that only name known backends.

pub mod redis;
pub mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The route key that catches every measurement no other route matches.
pub const DEFAULT_ROUTE: &str = "_default_";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Measurement name or prefix -> names of the backends that store it.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub write: WriteConfig,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
    /// Proxy users. None: fluxgate checks no credentials and passes the
    /// client's on to the backends.
    #[serde(default)]
    pub users: Vec<crate::auth::UserConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
}

/// What needs credentials once there are `[[users]]`: `/write`, `/query`,
/// `/status` and `/metrics` need a user; `/reload`, `/debug/*` and admin
/// statements an admin user.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `/ping` and `/health` need a user too (load balancers' health checks
    /// usually send none, so they are open by default).
    pub ping: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Which monoio driver runs the workers.
    pub driver: Driver,
    /// Largest request head (request line and headers) accepted; larger is 431.
    pub max_header_bytes: ByteSize,
    /// Largest request body as received (compressed or not); larger is 413.
    pub max_body_bytes: ByteSize,
    /// Largest body after gunzip; larger is 413. Bounds what a gzip bomb can cost.
    pub max_decompressed_bytes: ByteSize,
    /// Open client connections, over all workers; more wait in the kernel's
    /// accept backlog. Bounds the memory clients can hold in buffers.
    pub max_connections: usize,
    /// Longest wait for the next bytes of a request that has started; then 408.
    #[serde(deserialize_with = "deserialize_duration")]
    pub read_timeout: Duration,
    /// Longest a whole request (head and body) may take to arrive, however
    /// steadily its bytes trickle in; then 408.
    #[serde(deserialize_with = "deserialize_duration")]
    pub request_timeout: Duration,
    /// Longest wait for a new request on a kept-alive connection; then it is closed.
    #[serde(deserialize_with = "deserialize_duration")]
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7076".to_owned(),
            workers: 0,
            driver: Driver::Auto,
            // nginx's large_client_header_buffers is 4 x 8 KiB; InfluxDB's Go server allows 1 MiB.
            max_header_bytes: ByteSize(64 << 10),
            // InfluxDB's own max-body-size defaults to 25 MB; a proxy in front of
            // several servers sees bigger batches from aggregating agents.
            max_body_bytes: ByteSize(64 << 20),
            max_decompressed_bytes: ByteSize(256 << 20),
            max_connections: 10_000,
            read_timeout: Duration::from_secs(30),
            // A 64 MiB body at 250 KB/s.
            request_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The I/O driver of the worker runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring or fail at start-up.
    IoUring,
    /// epoll (monoio's legacy driver), for kernels or sandboxes without io_uring.
    Epoll,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub url: String,
    /// Gzip batches sent to this backend (compressed once per batch, shared by replicas).
    #[serde(default)]
    pub gzip: bool,
    /// Writer threads for this backend, each with its own keep-alive connection.
    #[serde(default = "default_writers")]
    pub writers: usize,
    /// How often a backend marked down is pinged to see whether it is back.
    #[serde(
        default = "default_check_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub check_interval: Duration,
    /// Connect, send and answer timeout of one POST to the backend.
    #[serde(
        default = "default_backend_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
    /// Takes writes but never serves queries (a replica still catching up,
    /// or one kept for backups).
    #[serde(default)]
    pub write_only: bool,
    /// Credentials fluxgate uses with this backend. Without them, writes and
    /// queries carry the client's own credentials (when fluxgate has no
    /// `[[users]]` of its own) or none.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

impl BackendConfig {
    /// The `Authorization` header for this backend's own credentials.
    pub fn authorization(&self) -> Option<String> {
        let user = self.username.as_deref()?;
        let password = self.password.as_ref().map_or("", |p| p.0.as_str());
        Some(crate::auth::basic_authorization(user, password))
    }
}

/// A value that must not appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_writers() -> usize {
    1
}

fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_backend_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteConfig {
    pub ack: AckMode,
    /// A batch is handed to the writers once it holds this many bytes.
    pub max_batch_bytes: ByteSize,
    /// ... or once its oldest line is this old.
    #[serde(deserialize_with = "deserialize_duration")]
    pub flush_interval: Duration,
    /// Batches queued per backend between the workers and its writers.
    pub queue_batches: usize,
    /// How long a write waits for a full backend queue before answering 503.
    #[serde(deserialize_with = "deserialize_duration")]
    pub queue_timeout: Duration,
    /// Upper bound of the exponential back-off between retries of a failed batch.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_retry_backoff: Duration,
    /// With `ack = "durable"`, how long a write waits for its points to be
    /// written or spooled before it is answered 503.
    #[serde(deserialize_with = "deserialize_duration")]
    pub ack_timeout: Duration,
    /// On SIGINT/SIGTERM, how long to keep delivering queued batches before exiting.
    #[serde(deserialize_with = "deserialize_duration")]
    pub shutdown_timeout: Duration,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            ack: AckMode::Durable,
            // About 2700 points of the classic 386-byte `cpu` line: InfluxDB's own
            // guidance is batches of 5000-10000 points; smaller keeps added latency low.
            max_batch_bytes: ByteSize(1 << 20),
            flush_interval: Duration::from_millis(100),
            queue_batches: 16,
            queue_timeout: Duration::from_secs(10),
            max_retry_backoff: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Send DROP, DELETE, GRANT, REVOKE, ALTER, SELECT INTO, ... to every
    /// backend instead of refusing them.
    pub allow_admin: bool,
    /// Longest wait for a backend's answer to a query.
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Largest answer fluxgate reads from a backend to merge (answers streamed
    /// straight through are not limited).
    pub max_response_bytes: ByteSize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            allow_admin: false,
            timeout: Duration::from_secs(60),
            max_response_bytes: ByteSize(256 << 20),
        }
    }
}

/// When the client gets its 204.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// Once the points are queued in memory for every target backend.
    Accepted,
    /// Once every target backend has the points or they are synced to its spool.
    Durable,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// One ring file per backend, `<dir>/<backend>.spool`.
    pub dir: PathBuf,
    /// Size of each backend's ring file.
    pub capacity: ByteSize,
    /// When spooled batches reach the disk.
    #[serde(default)]
    pub sync: SpoolSync,
    /// With `sync = "interval"`, how often.
    #[serde(
        default = "default_sync_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub sync_interval: Duration,
    /// Deflate spooled batches (about 8x less disk for line protocol).
    #[serde(default = "default_true")]
    pub compress: bool,
}

/// When the spool calls msync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolSync {
    /// Before a spooled batch counts as settled (its clients' `durable` acks wait for it).
    #[default]
    Batch,
    /// Every `sync_interval`; a power cut may lose that much spooled data.
    Interval,
    /// Never explicitly; the kernel writes back when it likes.
    None,
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(100)
}

fn default_true() -> bool {
    true
}

/// Smallest spool accepted: room for a few maximum-size batches.
pub const MIN_SPOOL_CAPACITY: u64 = 16 << 20;

/// A size in bytes, written as an integer or as a string with a unit ("64MiB", "1GB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses "123", "64KiB", "64MiB", "1GiB", "10KB", "10MB", "1GB" (case-insensitive units).
    pub fn parse(text: &str) -> Option<ByteSize> {
        let (number, unit) = number_and_unit(text)?;
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(multiplier).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid size {text:?}: expected bytes as a number or with a unit such as \"64MiB\""
                ))
            }),
        }
    }
}

/// "64 MiB" -> (64, "MiB"): the leading digits and the (trimmed) rest.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses "250ms", "10s", "5m", "1h", or a plain number of milliseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = number_and_unit(text)?;
    match unit {
        "" | "ms" => Some(Duration::from_millis(number)),
        "us" => Some(Duration::from_micros(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        "h" => number.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn deserialize_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => parse_duration(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid duration {text:?}: expected a number with a unit such as \"100ms\", \"10s\" or \"5m\""
            ))
        }),
    }
}

/// Where a backend's InfluxDB HTTP API lives, from a `http://host:port[/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `host:port`, as used for connecting and for the `Host` header.
    pub authority: String,
    /// Path prefix without a trailing slash ("" for most servers).
    pub path_prefix: String,
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<BackendUrl, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(
                "https is not supported yet: put a TLS terminator next to the backend or use http"
                    .into(),
            ),
            Some((scheme, _)) => {
                return Err(format!("unsupported scheme {scheme:?}: expected http"))
            }
            None => return Err("expected http://host:port".into()),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(
                "expected http://host:port (credentials belong in the request, not the URL)".into(),
            );
        }
        let authority = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("invalid host:port {authority:?}"));
                }
                authority.to_owned()
            }
            _ => format!("{authority}:80"),
        };
        if path.contains(['?', '#']) {
            return Err("a backend URL takes no query string or fragment".into());
        }
        Ok(BackendUrl {
            authority,
            path_prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// A configuration that cannot be used, with the key an operator must fix.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        message: String,
    },
    Invalid {
        key: String,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Parse { message } => write!(f, "invalid config: {message}"),
            ConfigError::Invalid { key, reason } => {
                write!(f, "invalid config key `{key}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// toml's message and where it happened, without the quoted source line
/// toml's `Display` adds, nor a value serde quotes in "invalid type: integer
/// `123`": either may be a password.
fn parse_error_without_source(error: &toml::de::Error, text: &str) -> String {
    let mut message = error.message().trim_end().to_owned();
    for prefix in ["invalid type:", "invalid value:"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "invalid type: string \"s3cret\", expected ..." -> "invalid type: <value>, expected ..."
            let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
            message = format!("{prefix} <value>{expected}");
            break;
        }
    }
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the TOML syntax error, or the offending key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_file(path)?)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: parse_error_without_source(&e, text),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, URLs, references between sections, limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen",
                format!("{:?} is not an ip:port address", self.server.listen),
            ));
        }
        for (key, value) in [
            ("server.max_header_bytes", self.server.max_header_bytes),
            ("server.max_body_bytes", self.server.max_body_bytes),
            (
                "server.max_decompressed_bytes",
                self.server.max_decompressed_bytes,
            ),
            ("write.max_batch_bytes", self.write.max_batch_bytes),
        ] {
            if value.0 == 0 {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.write.queue_batches == 0 {
            return Err(invalid("write.queue_batches", "must be at least 1"));
        }
        for (key, value) in [
            ("server.read_timeout", self.server.read_timeout),
            ("server.request_timeout", self.server.request_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.write.flush_interval.is_zero() {
            return Err(invalid("write.flush_interval", "must be greater than zero"));
        }
        if self.backends.is_empty() {
            return Err(invalid(
                "backends",
                "at least one [[backends]] entry is needed",
            ));
        }
        for (i, backend) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if backend.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if self.backends[..i].iter().any(|b| b.name == backend.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate backend name {:?}", backend.name),
                ));
            }
            BackendUrl::parse(&backend.url).map_err(|reason| {
                // A URL with credentials in it is refused without being quoted.
                let shown = if backend.url.contains('@') {
                    "<url with credentials>"
                } else {
                    &backend.url
                };
                invalid(format!("{key}.url"), format!("{shown:?}: {reason}"))
            })?;
            if !backend
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                || backend.name.starts_with('.')
            {
                return Err(invalid(
                    format!("{key}.name"),
                    format!(
                        "{:?}: use letters, digits, '-', '_' and '.' (it names the backend's spool file)",
                        backend.name
                    ),
                ));
            }
            if backend.writers == 0 {
                return Err(invalid(format!("{key}.writers"), "must be at least 1"));
            }
            if backend.password.is_some() && backend.username.is_none() {
                return Err(invalid(
                    format!("{key}.password"),
                    "a password needs a username",
                ));
            }
        }
        crate::auth::Users::new(&self.users).map_err(|e| invalid(e.key, e.reason))?;
        if let Some(spool) = &self.spool {
            let needed = MIN_SPOOL_CAPACITY.max(4 * self.write.max_batch_bytes.0);
            if spool.capacity.0 < needed {
                return Err(invalid(
                    "spool.capacity",
                    format!("{} bytes is too small: at least {needed} (4 x write.max_batch_bytes, and 16 MiB)", spool.capacity.0),
                ));
            }
        }
        if self.routes.is_empty() {
            return Err(invalid(
                "routes",
                "no routes: add `\"_default_\" = [\"<backend>\", ...]` to send every measurement somewhere",
            ));
        }
        for (route, names) in &self.routes {
            let key = format!("routes.{route:?}");
            if route.is_empty() {
                return Err(invalid(
                    key,
                    "an empty measurement prefix would match everything; use _default_",
                ));
            }
            if names.is_empty() {
                return Err(invalid(key, "names no backend"));
            }
            for name in names {
                if !self.backends.iter().any(|b| &b.name == name) {
                    return Err(invalid(key, format!("unknown backend {name:?}")));
                }
            }
        }
        Ok(())
    }

    /// Each worker's share of `server.max_connections` (at least one).
    pub fn max_connections_per_worker(&self) -> usize {
        self.server.max_connections.div_ceil(self.worker_count())
    }

    /// The worker count with `0` resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[backends]]
        name = "a"
        url = "http://127.0.0.1:8086"
        [routes]
        "_default_" = ["a"]
    "#;

    #[track_caller]
    fn rejected(toml: &str) -> String {
        match Config::from_toml(toml) {
            Ok(_) => panic!("config was accepted:\n{toml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:7076");
        assert_eq!(config.write.ack, AckMode::Durable);
        assert_eq!(config.write.max_batch_bytes, ByteSize(1 << 20));
        assert_eq!(config.backends[0].writers, 1);
        assert!(!config.backends[0].gzip);
    }

    #[test]
    fn design_example_parses() {
        let config = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:7076"
            workers = 0
            [[backends]]
            name = "a"
            url = "http://127.0.0.1:8086"
            [[backends]]
            name = "b"
            url = "http://127.0.0.1:8087"
            [routes]
            "_default_" = ["a", "b"]
            "cpu" = ["a"]
            [spool]
            dir = "spool"
            capacity = "1GiB"
            [write]
            ack = "durable"
            "#,
        )
        .unwrap();
        assert_eq!(config.spool.unwrap().capacity, ByteSize(1 << 30));
        assert_eq!(config.write.ack, AckMode::Durable);
    }

    #[test]
    fn errors_name_the_offending_key() {
        let two = |extra: &str| {
            format!(
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                 [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\n{extra}"
            )
        };
        // Unknown backend in a route
        assert_eq!(
            rejected(&two("[routes]\ncpu = [\"a\", \"c\"]")),
            "invalid config key `routes.\"cpu\"`: unknown backend \"c\""
        );
        // Duplicate names
        assert_eq!(
            rejected("[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"a\"\nurl = \"http://h:2\"\n[routes]\n_default_ = [\"a\"]"),
            "invalid config key `backends[1].name`: duplicate backend name \"a\""
        );
        // Bad URL
        assert!(rejected(
            "[[backends]]\nname = \"a\"\nurl = \"ftp://h:1\"\n[routes]\n_default_ = [\"a\"]"
        )
        .starts_with("invalid config key `backends[0].url`"));
        assert!(rejected(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:99999\"\n[routes]\n_default_ = [\"a\"]"
        )
        .starts_with("invalid config key `backends[0].url`"));
        // Empty route list, no routes, no backends
        assert_eq!(
            rejected(&two("[routes]\ncpu = []")),
            "invalid config key `routes.\"cpu\"`: names no backend"
        );
        assert!(rejected(&two("")).starts_with("invalid config key `routes`"));
        assert!(
            rejected("[routes]\n_default_ = [\"a\"]").starts_with("invalid config key `backends`")
        );
        // Typos are errors, not ignored settings
        assert!(
            rejected(&format!("{MINIMAL}\n[write]\nflush_intervall = \"1s\""))
                .contains("flush_intervall")
        );
        assert!(
            rejected(&format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}"))
                .contains("server.listen")
        );
        assert!(rejected(&format!(
            "{MINIMAL}\n[write]\nmax_batch_bytes = \"12 parsecs\""
        ))
        .contains("invalid size"));
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(ByteSize::parse("64MiB"), Some(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("10 KB"), Some(ByteSize(10_000)));
        assert_eq!(ByteSize::parse("123"), Some(ByteSize(123)));
        assert_eq!(ByteSize::parse("1 parsec"), None);
        assert_eq!(ByteSize::parse("99999999999999999999GiB"), None);
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5 days"), None);
    }

    #[test]
    fn backend_urls_parse() {
        let url = BackendUrl::parse("http://influx-a:8086/").unwrap();
        assert_eq!(url.authority, "influx-a:8086");
        assert_eq!(url.path_prefix, "");
        let url = BackendUrl::parse("http://10.0.0.1/influx").unwrap();
        assert_eq!(url.authority, "10.0.0.1:80");
        assert_eq!(url.path_prefix, "/influx");
        assert!(BackendUrl::parse("http://[::1]:8086").is_ok());
        assert!(BackendUrl::parse("http://user:pw@h:1").is_err());
        assert!(BackendUrl::parse("h:8086").is_err());
    }

    #[test]
    fn syntax_errors_name_the_place_but_never_quote_the_line() {
        for text in [
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\npassword = 12345678\n",
            "[[backends]]\nname = \"a\"\npassword = \"s3cret-pw\n",
            "[[backends]]\nname = \"a\"\npasword = \"s3cret-pw\"\n",
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\nwriters = \"s3cret-pw\"\n",
        ] {
            let message = Config::from_toml(text).unwrap_err().to_string();
            assert!(
                !message.contains("s3cret") && !message.contains("12345678"),
                "{message}"
            );
            assert!(message.contains("line "), "{message}");
        }
    }
}
