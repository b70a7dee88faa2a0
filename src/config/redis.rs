//! The config from Redis, for fleets of proxies that share one config and
//! reload together (`fluxgate --redis redis://host:port/db`).
//!
//! Two key layouts are read:
//! - **fluxgate**: one string key [`CONFIG_KEY`] holding the same TOML as the
//!   config file (`redis-cli -x SET fluxgate:config < fluxgate.toml`). One key
//!   means one atomic read: a proxy never sees half an edit.
//! - **influx-proxy** (the ele.me original), so its users can migrate: hashes
//!   `b:<backend>` (`url`, `timeout`, `interval`, ...) and lists
//!   `m:<measurement-or-prefix>` of backend names, `m:_default_` the fallback.
//!   [`influx_proxy_to_toml`] converts them, with a warning for every setting
//!   that has no meaning or a different scope in fluxgate. These keys are read
//!   one by one (SCAN, then HGETALL / LRANGE), so an edit made during a fetch
//!   may be seen in part; the next reload sees all of it.
//!
//! If both are present the fluxgate key wins. Either way the result is merged
//! over an optional local TOML file: every top-level key from Redis replaces
//! the same key of the file, so Redis holds what the fleet shares and the file
//! what is per instance (`[server] listen`, `[spool] dir`). The caller
//! validates the merged text with `Config::from_toml`; nothing here does.
//!
//! A reload is announced with a PUBLISH on [`RELOAD_CHANNEL`];
//! [`RedisSource::watch`] turns each message into a callback.
//!
//! The password (from `--redis-password` or the URL) never appears in
//! `Debug`, [`RedisSource::describe`], errors or logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};

/// The fluxgate layout: one string key holding the config file's TOML text.
pub const CONFIG_KEY: &str = "fluxgate:config";
/// PUBLISH anything here to make every watching proxy reload.
pub const RELOAD_CHANNEL: &str = "fluxgate:reload";
/// influx-proxy's backend hashes: `b:<backend>`.
pub const BACKEND_PREFIX: &str = "b:";
/// influx-proxy's route lists: `m:<measurement-or-prefix>`.
pub const ROUTE_PREFIX: &str = "m:";
/// influx-proxy's per-node settings (listen address, ...): the hash
/// `default_node` and hashes `n:<node>`. fluxgate takes these from the local file.
const DEFAULT_NODE_KEY: &str = "default_node";
const NODE_PREFIX: &str = "n:";

/// A Redis that does not answer a connect within this is reported as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read and write timeout of every command; a hung Redis must not hang start-up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `watch` looks at its stop flag while waiting for a message.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// An idle subscription is PINGed this often, so a Redis host that vanished
/// without closing the connection is noticed and reconnected.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Reconnect back-off of `watch`: doubles from MIN up to MAX.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// SCAN's COUNT hint: keys looked at per round trip. A shared Redis may hold
/// millions of keys; larger means fewer round trips, each still short.
const SCAN_COUNT: usize = 1000;
/// Bad values are quoted in errors up to this many characters.
const MAX_QUOTED_CHARS: usize = 64;

/// Which key layout [`RedisSource::fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The string key [`CONFIG_KEY`] with TOML text.
    Toml,
    /// influx-proxy's `b:*` hashes and `m:*` lists.
    InfluxProxy,
}

/// A config read from Redis.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub layout: Layout,
    /// The merged config as TOML text, not yet validated.
    pub toml: String,
    /// Settings that were ignored or changed meaning; the caller logs them.
    pub warnings: Vec<String>,
}

/// Why the config could not be read from (or written to) Redis. `Display` is
/// written for an operator and never contains the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisConfigError {
    /// The `--redis` URL is not usable (`url` has its credentials removed).
    Url { url: String, reason: String },
    /// No connection: refused, unreachable, timed out, or SELECT refused.
    Connect { target: String, reason: String },
    /// Redis refused the password, or wants one and none was given.
    Auth {
        target: String,
        password_given: bool,
    },
    /// A command failed on an open connection.
    Command {
        target: String,
        command: String,
        reason: String,
    },
    /// Neither layout is present.
    NotFound { target: String },
    /// Text that is not TOML: the local file, the Redis key, or text to store.
    Toml { what: String, message: String },
    /// An influx-proxy value that cannot be converted.
    Value {
        key: String,
        field: String,
        value: String,
        reason: String,
    },
}

impl fmt::Display for RedisConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisConfigError::Url { url, reason } => write!(
                f,
                "invalid Redis URL {url:?}: {reason} (expected redis://host:port/db)"
            ),
            RedisConfigError::Connect { target, reason } => write!(
                f,
                "cannot connect to Redis at {target}: {reason}. Check that redis-server runs \
                 there and that --redis names it"
            ),
            RedisConfigError::Auth {
                target,
                password_given: true,
            } => write!(
                f,
                "Redis at {target} refused the password: check --redis-password (or the \
                 password in the --redis URL)"
            ),
            RedisConfigError::Auth {
                target,
                password_given: false,
            } => write!(
                f,
                "Redis at {target} requires a password: pass --redis-password"
            ),
            RedisConfigError::Command {
                target,
                command,
                reason,
            } => write!(f, "Redis at {target}: {command} failed: {reason}"),
            RedisConfigError::NotFound { target } => write!(
                f,
                "no fluxgate config in Redis at {target}: looked for the string key \
                 `{CONFIG_KEY}` (fluxgate layout) and for `{BACKEND_PREFIX}*` hashes and \
                 `{ROUTE_PREFIX}*` lists (influx-proxy layout). Store a config with \
                 `redis-cli -x SET {CONFIG_KEY} < fluxgate.toml`"
            ),
            RedisConfigError::Toml { what, message } => {
                write!(f, "{what} is not valid TOML: {message}")
            }
            RedisConfigError::Value {
                key,
                field,
                value,
                reason,
            } => write!(
                f,
                "influx-proxy key `{key}` field `{field}` = {:?}: {reason}",
                quote(value)
            ),
        }
    }
}

impl std::error::Error for RedisConfigError {}

/// A Redis server holding the fleet's config.
#[derive(Clone)]
pub struct RedisSource {
    client: redis::Client,
    /// `redis://host:port/db`, without credentials: safe to print.
    target: String,
    /// The password in effect, kept only to scrub it from error texts.
    password: Option<String>,
    /// Whether the leftover influx-proxy keys beside `fluxgate:config` were
    /// looked for: once, since SCAN walks the whole keyspace (shared by clones).
    leftovers_checked: Arc<AtomicBool>,
}

impl fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSource")
            .field("target", &self.target)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisSource {
    /// A source for `url` (`redis://[:password@]host:port/db`). `password`,
    /// when given and not empty, replaces one in the URL. Nothing connects yet.
    ///
    /// # Errors
    /// [`RedisConfigError::Url`] when the URL does not parse or needs a
    /// feature this build lacks (TLS).
    pub fn new(url: &str, password: Option<&str>) -> Result<RedisSource, RedisConfigError> {
        let url_error = |reason: String| RedisConfigError::Url {
            url: redact_url(url),
            reason,
        };
        let mut info: ConnectionInfo = url
            .into_connection_info()
            .map_err(|e| url_error(e.to_string()))?;
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let password = info.redis_settings().password().map(str::to_owned);
        let target = describe_info(&info);
        let client = redis::Client::open(info).map_err(|e| url_error(e.to_string()))?;
        Ok(RedisSource {
            client,
            target,
            password,
            leftovers_checked: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Where the config comes from, e.g. `redis://127.0.0.1:6379/0`; never
    /// shows the password.
    pub fn describe(&self) -> String {
        self.target.clone()
    }

    /// Reads the config and merges it over `base`, the text of the optional
    /// local TOML file (per-instance settings such as `[server] listen`).
    ///
    /// # Errors
    /// Connection, password and command failures; [`RedisConfigError::NotFound`]
    /// when neither layout is present; TOML and value errors in either input.
    pub fn fetch(&self, base: Option<&str>) -> Result<Fetched, RedisConfigError> {
        let mut conn = self.connect()?;
        let mut warnings = Vec::new();
        let text: Option<Vec<u8>> = redis::cmd("GET")
            .arg(CONFIG_KEY)
            .query(&mut conn)
            .map_err(|e| self.command_error(e, &format!("GET {CONFIG_KEY}")))?;

        if let Some(text) = text {
            let mut ignored = Vec::new();
            if !self.leftovers_checked.load(Ordering::Relaxed) {
                for prefix in [BACKEND_PREFIX, ROUTE_PREFIX] {
                    if self.any_key(&mut conn, prefix)? {
                        ignored.push(format!("`{prefix}*`"));
                    }
                }
                self.leftovers_checked.store(true, Ordering::Relaxed);
            }
            if !ignored.is_empty() {
                warnings.push(format!(
                    "both layouts are in Redis: using `{CONFIG_KEY}` and ignoring the \
                     influx-proxy keys ({}). Delete them once the migration is done",
                    ignored.join(", ")
                ));
            }
            let text = String::from_utf8(text).map_err(|_| RedisConfigError::Toml {
                what: format!("Redis key `{CONFIG_KEY}`"),
                message: "not UTF-8 text".into(),
            })?;
            let config = parse_table(&text, &format!("Redis key `{CONFIG_KEY}`"))?;
            let mut merged = parse_base(base)?;
            replace_keys(&mut merged, config, &mut warnings);
            return Ok(Fetched {
                layout: Layout::Toml,
                toml: serialize(&merged)?,
                warnings,
            });
        }
        let backend_keys = self.scan(&mut conn, BACKEND_PREFIX, &mut warnings)?;
        let route_keys = self.scan(&mut conn, ROUTE_PREFIX, &mut warnings)?;
        if backend_keys.is_empty() && route_keys.is_empty() {
            return Err(RedisConfigError::NotFound {
                target: self.target.clone(),
            });
        }

        let mut backends = BTreeMap::new();
        for name in backend_keys {
            let key = format!("{BACKEND_PREFIX}{name}");
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut conn)
                .map_err(|e| self.command_error(e, &format!("HGETALL {key}")))?;
            // Redis has no empty hashes: an empty answer means the key was
            // deleted since SCAN saw it.
            if !fields.is_empty() {
                backends.insert(name, fields);
            }
        }
        let mut routes = BTreeMap::new();
        for name in route_keys {
            let key = format!("{ROUTE_PREFIX}{name}");
            let names: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn)
                .map_err(|e| self.command_error(e, &format!("LRANGE {key} 0 -1")))?;
            if !names.is_empty() {
                routes.insert(name, names);
            }
        }
        self.warn_node_keys(&mut conn, &mut warnings)?;
        let (toml, more) = influx_proxy_to_toml(base, &backends, &routes)?;
        warnings.extend(more);
        Ok(Fetched {
            layout: Layout::InfluxProxy,
            toml,
            warnings,
        })
    }

    /// Writes `toml` as the fluxgate layout ([`CONFIG_KEY`]). Only its TOML
    /// syntax is checked; validate it with `Config::from_toml` first.
    ///
    /// # Errors
    /// [`RedisConfigError::Toml`] for text that is not TOML, else connection,
    /// password and command failures.
    pub fn store(&self, toml: &str) -> Result<(), RedisConfigError> {
        parse_table(toml, "the config to store")?;
        let mut conn = self.connect()?;
        redis::cmd("SET")
            .arg(CONFIG_KEY)
            .arg(toml)
            .query::<()>(&mut conn)
            .map_err(|e| self.command_error(e, &format!("SET {CONFIG_KEY}")))
    }

    /// Announces a reload on [`RELOAD_CHANNEL`]; returns how many subscribers
    /// (watching proxies) received it.
    ///
    /// # Errors
    /// Connection, password and command failures.
    pub fn publish_reload(&self) -> Result<usize, RedisConfigError> {
        let mut conn = self.connect()?;
        redis::cmd("PUBLISH")
            .arg(RELOAD_CHANNEL)
            .arg("reload")
            .query(&mut conn)
            .map_err(|e| self.command_error(e, &format!("PUBLISH {RELOAD_CHANNEL}")))
    }

    /// Subscribes to [`RELOAD_CHANNEL`] and calls `on_reload` once per
    /// message, until `stop` is true (looked at every 200 ms). Blocks.
    ///
    /// When Redis goes away it reconnects with back-off, logging one warning
    /// per outage. Pub/sub does not queue messages for absent subscribers, so
    /// after a reconnect `on_reload` is called once: a reload announced during
    /// the outage is not lost.
    pub fn watch(&self, stop: &AtomicBool, mut on_reload: impl FnMut()) {
        // Until the first subscription, a reload published after the caller
        // read its config would be missed: the first one reloads too.
        let mut outage: Option<Instant> = None;
        let mut subscribed_before = false;
        let mut backoff = BACKOFF_MIN;
        while !stop.load(Ordering::Relaxed) {
            let listened = self.listen(
                stop,
                &mut on_reload,
                (&mut outage, &mut subscribed_before),
                &mut backoff,
            );
            let Err(error) = listened else {
                return;
            };
            if outage.is_none() {
                tracing::warn!(
                    redis = %self.target,
                    %error,
                    "reload subscription lost; reconnecting with back-off"
                );
                outage = Some(Instant::now());
            }
            sleep_unless_stopped(stop, backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One subscription: `Ok` once `stop` is set, `Err` when the connection fails.
    fn listen(
        &self,
        stop: &AtomicBool,
        on_reload: &mut impl FnMut(),
        (outage, subscribed_before): (&mut Option<Instant>, &mut bool),
        backoff: &mut Duration,
    ) -> Result<(), RedisConfigError> {
        let subscribe = format!("SUBSCRIBE {RELOAD_CHANNEL}");
        let mut conn = self.connect()?;
        let mut pubsub = conn.as_pubsub();
        pubsub
            .subscribe(RELOAD_CHANNEL)
            .map_err(|e| self.command_error(e, &subscribe))?;
        if let Some(since) = outage.take() {
            tracing::info!(
                redis = %self.target,
                down_for = ?since.elapsed(),
                "reload subscription restored; reloading in case a reload was missed"
            );
            *backoff = BACKOFF_MIN;
            on_reload();
        } else if !*subscribed_before {
            on_reload();
        }
        *subscribed_before = true;
        pubsub
            .set_read_timeout(Some(STOP_POLL_INTERVAL))
            .map_err(|e| self.command_error(e, &subscribe))?;
        let mut last_heard = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(_) => {
                    last_heard = Instant::now();
                    on_reload();
                }
                Err(e) if e.is_timeout() => {
                    if last_heard.elapsed() >= HEALTH_CHECK_INTERVAL {
                        pubsub
                            .set_read_timeout(Some(COMMAND_TIMEOUT))
                            .and_then(|()| pubsub.ping::<()>())
                            .and_then(|()| pubsub.set_read_timeout(Some(STOP_POLL_INTERVAL)))
                            .map_err(|e| self.command_error(e, "PING"))?;
                        last_heard = Instant::now();
                    }
                }
                Err(e) => return Err(self.command_error(e, &subscribe)),
            }
        }
        Ok(())
    }

    /// A connection with command timeouts set.
    fn connect(&self) -> Result<redis::Connection, RedisConfigError> {
        let conn = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| self.connect_error(e))?;
        conn.set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(|e| self.connect_error(e))?;
        Ok(conn)
    }

    /// The names after `prefix` of every key matching `prefix*`, sorted.
    fn scan(
        &self,
        conn: &mut redis::Connection,
        prefix: &str,
        warnings: &mut Vec<String>,
    ) -> Result<BTreeSet<String>, RedisConfigError> {
        let pattern = format!("{prefix}*");
        let mut names = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_step(conn, &pattern, cursor)?;
            for key in keys {
                match String::from_utf8(key) {
                    // SCAN may return a key twice; the set keeps one.
                    Ok(key) => {
                        if let Some(name) = key.strip_prefix(prefix) {
                            names.insert(name.to_owned());
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "ignored Redis key {:?}: its name is not UTF-8",
                        String::from_utf8_lossy(e.as_bytes())
                    )),
                }
            }
            if next == 0 {
                return Ok(names);
            }
            cursor = next;
        }
    }

    /// Whether any key starts with `prefix`; stops at the first one found.
    fn any_key(
        &self,
        conn: &mut redis::Connection,
        prefix: &str,
    ) -> Result<bool, RedisConfigError> {
        let pattern = format!("{prefix}*");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_step(conn, &pattern, cursor)?;
            if !keys.is_empty() {
                return Ok(true);
            }
            if next == 0 {
                return Ok(false);
            }
            cursor = next;
        }
    }

    /// One SCAN round trip: the next cursor and a batch of keys.
    fn scan_step(
        &self,
        conn: &mut redis::Connection,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<Vec<u8>>), RedisConfigError> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(conn)
            .map_err(|e| self.command_error(e, &format!("SCAN MATCH {pattern}")))
    }

    /// influx-proxy's node keys are per instance; fluxgate takes those
    /// settings from the local file, so say they are ignored.
    fn warn_node_keys(
        &self,
        conn: &mut redis::Connection,
        warnings: &mut Vec<String>,
    ) -> Result<(), RedisConfigError> {
        let mut found: Vec<String> = Vec::new();
        let exists: bool = redis::cmd("EXISTS")
            .arg(DEFAULT_NODE_KEY)
            .query(conn)
            .map_err(|e| self.command_error(e, &format!("EXISTS {DEFAULT_NODE_KEY}")))?;
        if exists {
            found.push(DEFAULT_NODE_KEY.to_owned());
        }
        found.extend(
            self.scan(conn, NODE_PREFIX, warnings)?
                .into_iter()
                .map(|name| format!("{NODE_PREFIX}{name}")),
        );
        if !found.is_empty() {
            warnings.push(format!(
                "ignored influx-proxy node settings in {}: per-instance settings such as the \
                 listen address come from the local config file ([server] listen)",
                found.join(", ")
            ));
        }
        Ok(())
    }

    /// A failed connect (including AUTH and SELECT, sent while connecting).
    fn connect_error(&self, error: RedisError) -> RedisConfigError {
        self.auth_error(&error)
            .unwrap_or_else(|| RedisConfigError::Connect {
                target: self.target.clone(),
                reason: self.scrub(error.to_string()),
            })
    }

    /// A failed command on an open connection.
    fn command_error(&self, error: RedisError, command: &str) -> RedisConfigError {
        self.auth_error(&error)
            .unwrap_or_else(|| RedisConfigError::Command {
                target: self.target.clone(),
                command: command.to_owned(),
                reason: self.scrub(error.to_string()),
            })
    }

    /// Password trouble, which the operator fixes with `--redis-password`:
    /// AUTH refused while connecting, or NOAUTH on the first command when no
    /// password was sent.
    fn auth_error(&self, error: &RedisError) -> Option<RedisConfigError> {
        let code = error.code().unwrap_or_default();
        let password_given =
            if error.kind() == redis::ErrorKind::AuthenticationFailed || code == "WRONGPASS" {
                true
            } else if code == "NOAUTH" {
                self.password.is_some()
            } else {
                return None;
            };
        Some(RedisConfigError::Auth {
            target: self.target.clone(),
            password_given,
        })
    }

    /// Removes the password from a text we did not write (belt and braces:
    /// no redis error is known to quote it).
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(password) if text.contains(password.as_str()) => {
                text.replace(password.as_str(), "<password>")
            }
            _ => text,
        }
    }
}

/// `redis://host:port/db` for a connection, without credentials.
fn describe_info(info: &ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) if host.contains(':') => {
            format!("redis://[{host}]:{port}/{db}")
        }
        ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        other => format!("redis://{other}/{db}"),
    }
}

/// The URL with everything between `://` and the last `@` (the credentials)
/// replaced, for error messages about URLs that did not parse.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://<credentials>@{}", &rest[at + 1..]),
            None => url.to_owned(),
        },
        None if url.contains('@') => "<a URL with credentials>".to_owned(),
        None => url.to_owned(),
    }
}

/// A bad value as quoted in an error: at most `MAX_QUOTED_CHARS` characters.
fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(STOP_POLL_INTERVAL));
    }
}

fn parse_table(text: &str, what: &str) -> Result<toml::Table, RedisConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| RedisConfigError::Toml {
            what: what.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
}

fn parse_base(base: Option<&str>) -> Result<toml::Table, RedisConfigError> {
    base.map_or_else(
        || Ok(toml::Table::new()),
        |text| parse_table(text, "the local config file"),
    )
}

fn serialize(table: &toml::Table) -> Result<String, RedisConfigError> {
    toml::to_string(table).map_err(|e| RedisConfigError::Toml {
        what: "the merged config".into(),
        message: e.to_string(),
    })
}

/// Every top-level key of `from` replaces the same key of `into`; one warning
/// names the keys of the local file that were replaced.
fn replace_keys(into: &mut toml::Table, from: toml::Table, warnings: &mut Vec<String>) {
    let mut replaced = Vec::new();
    for (key, value) in from {
        if into.insert(key.clone(), value).is_some() {
            replaced.push(key);
        }
    }
    if !replaced.is_empty() {
        warnings.push(format!(
            "Redis replaces these top-level keys of the local config file: {}",
            replaced.join(", ")
        ));
    }
}

/// influx-proxy backend fields that fluxgate has no use for, with the reason.
const IGNORED_FIELDS: [(&str, &str); 4] = [
    ("db", "fluxgate writes to the database each request names"),
    (
        "maxrowlimit",
        "batches are bounded by write.max_batch_bytes instead",
    ),
    (
        "rewriteinterval",
        "the spool is replayed continuously once the backend answers /ping",
    ),
    (
        "zone",
        "fluxgate has no zones: queries go to any healthy replica of the backend set",
    ),
];

/// Fields converted per backend or into a global setting.
const USED_FIELDS: [&str; 6] = [
    "url",
    "timeout",
    "checkinterval",
    "writeonly",
    "interval",
    "timeoutquery",
];

/// The redis-cli commands that store `toml` as the fluxgate layout and, with
/// `reload`, tell every instance to reload: for `... | redis-cli`. Bytes
/// redis-cli would not take literally inside double quotes are escaped.
pub fn redis_cli_commands(toml: &str, reload: bool) -> String {
    use std::fmt::Write as _;
    let mut out = format!("SET {CONFIG_KEY} \"");
    for byte in toml.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push_str("\"\n");
    if reload {
        let _ = writeln!(out, "PUBLISH {RELOAD_CHANNEL} now");
    }
    out
}

/// Converts the influx-proxy layout into fluxgate TOML merged over `base`.
///
/// `backends` maps a backend name (the key without `b:`) to its hash,
/// `routes` a measurement or prefix (the key without `m:`) to its list.
/// Backends and routes replace those of `base`; `write.flush_interval` and
/// `query.timeout`, global in fluxgate, are set inside `base`'s `[write]` and
/// `[query]`, keeping their other keys. A `0` is influx-proxy's "default" and
/// is treated as not set. Routes naming unknown backends are kept for
/// `Config::validate` to report. Route keys keep their meaning: influx-proxy
/// also matched them as prefixes (the first match in Go's random map order),
/// fluxgate takes the longest matching prefix.
///
/// Returns the TOML text and the warnings, in a stable order.
///
/// # Errors
/// [`RedisConfigError::Toml`] for a `base` that is not TOML;
/// [`RedisConfigError::Value`] for a backend without `url`, a millisecond
/// value that is not a whole number, or `writeonly` other than `0`/`1`.
pub fn influx_proxy_to_toml(
    base: Option<&str>,
    backends: &BTreeMap<String, HashMap<String, String>>,
    routes: &BTreeMap<String, Vec<String>>,
) -> Result<(String, Vec<String>), RedisConfigError> {
    let mut merged = parse_base(base)?;
    let mut warnings = Vec::new();
    // Ignored field -> the backends that set it: one warning per field.
    let mut unused: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut flush_intervals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut query_timeouts: BTreeMap<&str, u64> = BTreeMap::new();

    let mut tables = Vec::with_capacity(backends.len());
    for (name, fields) in backends {
        let key = format!("{BACKEND_PREFIX}{name}");
        let mut backend = toml::Table::new();
        backend.insert("name".into(), name.clone().into());
        let Some(url) = fields.get("url") else {
            return Err(RedisConfigError::Value {
                key,
                field: "url".into(),
                value: String::new(),
                reason: "missing: every backend needs the URL of its InfluxDB".into(),
            });
        };
        backend.insert("url".into(), url.clone().into());
        if let Some(ms) = millis(&key, fields, "timeout")? {
            backend.insert("timeout".into(), format!("{ms}ms").into());
        }
        if let Some(ms) = millis(&key, fields, "checkinterval")? {
            backend.insert("check_interval".into(), format!("{ms}ms").into());
        }
        match fields.get("writeonly").map(|v| v.trim()) {
            None | Some("0") => {}
            Some("1") => {
                backend.insert("write_only".into(), true.into());
            }
            Some(other) => {
                return Err(RedisConfigError::Value {
                    key,
                    field: "writeonly".into(),
                    value: other.to_owned(),
                    reason: "expected 0 or 1".into(),
                })
            }
        }
        if let Some(ms) = millis(&key, fields, "interval")? {
            flush_intervals.insert(name, ms);
        }
        if let Some(ms) = millis(&key, fields, "timeoutquery")? {
            query_timeouts.insert(name, ms);
        }
        for field in fields.keys() {
            if !USED_FIELDS.contains(&field.as_str()) {
                unused.entry(field).or_default().insert(name);
            }
        }
        tables.push(toml::Value::Table(backend));
    }

    if let Some(ms) = pick_global(
        &flush_intervals,
        "interval",
        "write.flush_interval",
        Choice::Smallest,
        &mut warnings,
    ) {
        set_field(&mut merged, "write", "flush_interval", format!("{ms}ms"));
    }
    if let Some(ms) = pick_global(
        &query_timeouts,
        "timeoutquery",
        "query.timeout",
        Choice::Largest,
        &mut warnings,
    ) {
        set_field(&mut merged, "query", "timeout", format!("{ms}ms"));
    }
    for (field, names) in &unused {
        let reason = IGNORED_FIELDS
            .iter()
            .find(|(ignored, _)| ignored == field)
            .map_or(
                "it is not an influx-proxy setting fluxgate knows",
                |(_, why)| why,
            );
        warnings.push(format!(
            "ignored `{field}` of {}: {reason}",
            key_list(names.iter().copied())
        ));
    }

    let mut converted = toml::Table::new();
    if !tables.is_empty() {
        converted.insert("backends".into(), toml::Value::Array(tables));
    }
    if !routes.is_empty() {
        let table: toml::Table = routes
            .iter()
            .map(|(route, names)| {
                let names = names.iter().map(|n| toml::Value::from(n.clone())).collect();
                (route.clone(), toml::Value::Array(names))
            })
            .collect();
        converted.insert("routes".into(), toml::Value::Table(table));
    }
    replace_keys(&mut merged, converted, &mut warnings);
    Ok((serialize(&merged)?, warnings))
}

/// A millisecond field; `None` when absent or `0` (influx-proxy's default).
fn millis(
    key: &str,
    fields: &HashMap<String, String>,
    field: &str,
) -> Result<Option<u64>, RedisConfigError> {
    let Some(value) = fields.get(field) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) => Ok(Some(ms)),
        Err(_) => Err(RedisConfigError::Value {
            key: key.to_owned(),
            field: field.to_owned(),
            value: value.clone(),
            reason: "expected a whole number of milliseconds".into(),
        }),
    }
}

#[derive(Clone, Copy)]
enum Choice {
    Smallest,
    Largest,
}

/// One value for a setting that influx-proxy has per backend and fluxgate
/// once, with one warning that says which was chosen.
fn pick_global(
    values: &BTreeMap<&str, u64>,
    field: &str,
    setting: &str,
    choice: Choice,
    warnings: &mut Vec<String>,
) -> Option<u64> {
    let (picked, word) = match choice {
        Choice::Smallest => (values.values().min()?, "smallest"),
        Choice::Largest => (values.values().max()?, "largest"),
    };
    let set_by = values
        .iter()
        .map(|(name, ms)| format!("{BACKEND_PREFIX}{name} ({ms}ms)"))
        .collect::<Vec<_>>()
        .join(", ");
    warnings.push(format!(
        "`{field}` is per backend in influx-proxy but fluxgate has one {setting} for all \
         backends: using the {word}, {picked}ms (set by {set_by})"
    ));
    Some(*picked)
}

/// Sets `section.field`, keeping the section's other keys.
fn set_field(table: &mut toml::Table, section: &str, field: &str, value: String) {
    let entry = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        // Not a table in the local file: Config validation would reject it
        // anyway, and Redis's value is the one the fleet means.
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(section) = entry {
        section.insert(field.to_owned(), value.into());
    }
}

fn key_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|name| format!("{BACKEND_PREFIX}{name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn backends(list: &[(&str, Fields<'_>)]) -> BTreeMap<String, HashMap<String, String>> {
        list.iter()
            .map(|(name, fields)| {
                let fields = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                ((*name).to_owned(), fields)
            })
            .collect()
    }

    fn routes(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|(route, names)| {
                let names = names.iter().map(|n| (*n).to_owned()).collect();
                ((*route).to_owned(), names)
            })
            .collect()
    }

    /// The converted TOML text and warnings; converts twice to catch any
    /// dependence on HashMap order or leftover state.
    #[track_caller]
    fn convert(
        base: Option<&str>,
        b: &[(&str, Fields<'_>)],
        r: &[(&str, &[&str])],
    ) -> (String, Vec<String>) {
        let first = influx_proxy_to_toml(base, &backends(b), &routes(r)).unwrap();
        let again = influx_proxy_to_toml(base, &backends(b), &routes(r)).unwrap();
        assert_eq!(first, again, "conversion is not deterministic");
        first
    }

    #[track_caller]
    fn rejected(base: Option<&str>, b: &[(&str, Fields<'_>)], r: &[(&str, &[&str])]) -> String {
        match influx_proxy_to_toml(base, &backends(b), &routes(r)) {
            Ok((toml, _)) => panic!("conversion succeeded:\n{toml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn two_backends_convert_to_stable_toml_with_one_warning_per_field() {
        let (toml, warnings) = convert(
            None,
            &[
                (
                    "a",
                    &[
                        ("url", "http://10.0.0.1:8086"),
                        ("db", "telegraf"),
                        ("zone", "sh"),
                        ("interval", "500"),
                        ("timeout", "10000"),
                        ("timeoutquery", "30000"),
                        ("checkinterval", "100"),
                        ("maxrowlimit", "10000"),
                        ("rewriteinterval", "10000"),
                        ("writeonly", "0"),
                    ],
                ),
                (
                    "b",
                    &[
                        ("url", "http://10.0.0.2:8086"),
                        ("db", "telegraf"),
                        ("interval", "1000"),
                        ("timeoutquery", "600000"),
                        ("writeonly", "1"),
                        ("colour", "blue"),
                    ],
                ),
            ],
            &[("cpu", &["a"]), ("_default_", &["a", "b"])],
        );
        assert_eq!(
            toml,
            r#"[[backends]]
check_interval = "100ms"
name = "a"
timeout = "10000ms"
url = "http://10.0.0.1:8086"

[[backends]]
name = "b"
url = "http://10.0.0.2:8086"
write_only = true

[query]
timeout = "600000ms"

[routes]
_default_ = ["a", "b"]
cpu = ["a"]

[write]
flush_interval = "500ms"
"#
        );
        assert_eq!(
            warnings,
            [
                "`interval` is per backend in influx-proxy but fluxgate has one \
                 write.flush_interval for all backends: using the smallest, 500ms \
                 (set by b:a (500ms), b:b (1000ms))",
                "`timeoutquery` is per backend in influx-proxy but fluxgate has one \
                 query.timeout for all backends: using the largest, 600000ms \
                 (set by b:a (30000ms), b:b (600000ms))",
                "ignored `colour` of b:b: it is not an influx-proxy setting fluxgate knows",
                "ignored `db` of b:a, b:b: fluxgate writes to the database each request names",
                "ignored `maxrowlimit` of b:a: batches are bounded by write.max_batch_bytes instead",
                "ignored `rewriteinterval` of b:a: the spool is replayed continuously once the \
                 backend answers /ping",
                "ignored `zone` of b:a: fluxgate has no zones: queries go to any healthy \
                 replica of the backend set",
            ]
        );
    }

    #[test]
    fn bad_values_are_errors_naming_key_and_field() {
        #[track_caller]
        fn f(field: &str, value: &str, expected: &str) {
            let fields: Fields<'_> = &[("url", "http://h:1"), (field, value)];
            assert_eq!(rejected(None, &[("a", fields)], &[]), expected);
        }
        // Milliseconds with units, signs, fractions, nothing
        f(
            "timeout",
            "10s",
            "influx-proxy key `b:a` field `timeout` = \"10s\": expected a whole number of milliseconds",
        );
        f(
            "interval",
            "-1",
            "influx-proxy key `b:a` field `interval` = \"-1\": expected a whole number of milliseconds",
        );
        f(
            "timeoutquery",
            "1.5",
            "influx-proxy key `b:a` field `timeoutquery` = \"1.5\": expected a whole number of milliseconds",
        );
        f(
            "checkinterval",
            "",
            "influx-proxy key `b:a` field `checkinterval` = \"\": expected a whole number of milliseconds",
        );
        // Larger than u64
        f(
            "timeout",
            "18446744073709551616",
            "influx-proxy key `b:a` field `timeout` = \"18446744073709551616\": expected a whole number of milliseconds",
        );
        // writeonly is 0 or 1 only
        f(
            "writeonly",
            "true",
            "influx-proxy key `b:a` field `writeonly` = \"true\": expected 0 or 1",
        );
        f(
            "writeonly",
            "2",
            "influx-proxy key `b:a` field `writeonly` = \"2\": expected 0 or 1",
        );
        // A long bad value is quoted truncated
        let long = "9".repeat(40) + &"x".repeat(100);
        let message = rejected(
            None,
            &[("a", &[("url", "http://h:1"), ("timeout", &long)])],
            &[],
        );
        assert!(
            message.contains(&format!("\"{}...\"", &long[..MAX_QUOTED_CHARS])),
            "{message}"
        );
    }

    #[test]
    fn ignored_fields_are_not_checked() {
        // rewriteinterval is a number in influx-proxy, but fluxgate ignores it:
        // a bad value there must not stop the migration.
        let (_, warnings) = convert(
            None,
            &[("a", &[("url", "http://h:1"), ("rewriteinterval", "soon")])],
            &[],
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("ignored `rewriteinterval` of b:a"));
    }

    #[test]
    fn zero_is_influx_proxy_default_and_left_out() {
        let (toml, warnings) = convert(
            None,
            &[(
                "a",
                &[
                    ("url", "http://h:1"),
                    ("interval", "0"),
                    ("timeout", "0"),
                    ("timeoutquery", "0"),
                    ("checkinterval", " 0 "),
                    ("writeonly", "0"),
                ],
            )],
            &[("_default_", &["a"])],
        );
        assert_eq!(
            toml,
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n\n[routes]\n_default_ = [\"a\"]\n"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_backend_without_url_is_an_error() {
        // An empty hash (never stored by Redis, but possible here) and one with
        // only other fields.
        for fields in [&[][..], &[("timeout", "100")][..]] {
            assert_eq!(
                rejected(None, &[("a", fields)], &[]),
                "influx-proxy key `b:a` field `url` = \"\": missing: every backend needs the \
                 URL of its InfluxDB"
            );
        }
    }

    #[test]
    fn routes_naming_unknown_backends_are_kept_for_validation() {
        let (toml, _) = convert(
            None,
            &[("a", &[("url", "http://h:1")])],
            &[("cpu", &["a", "ghost"]), ("_default_", &[]), ("", &["a"])],
        );
        let table: toml::Table = toml.parse().unwrap();
        let routes = table["routes"].as_table().unwrap();
        assert_eq!(routes["cpu"], toml::Value::from(vec!["a", "ghost"]));
        assert_eq!(routes["_default_"], toml::Value::Array(Vec::new()));
        assert_eq!(routes[""], toml::Value::from(vec!["a"]));
    }

    #[test]
    fn only_routes_keep_the_base_backends() {
        let base = "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n";
        let (toml, warnings) = convert(Some(base), &[], &[("_default_", &["a"])]);
        let table: toml::Table = toml.parse().unwrap();
        assert_eq!(table["backends"][0]["name"].as_str(), Some("a"));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn base_sections_are_kept_or_replaced() {
        let base = r#"
            [server]
            listen = "0.0.0.0:8086"
            [spool]
            dir = "/var/lib/fluxgate"
            capacity = "1GiB"
            [write]
            ack = "accepted"
            flush_interval = "50ms"
            [query]
            allow_admin = true
            [[backends]]
            name = "old"
            url = "http://old:8086"
            [routes]
            "_default_" = ["old"]
        "#;
        let (toml, warnings) = convert(
            Some(base),
            &[(
                "a",
                &[
                    ("url", "http://h:1"),
                    ("interval", "200"),
                    ("timeoutquery", "5000"),
                ],
            )],
            &[("_default_", &["a"])],
        );
        let table: toml::Table = toml.parse().unwrap();
        // Per-instance sections stay
        assert_eq!(table["server"]["listen"].as_str(), Some("0.0.0.0:8086"));
        assert_eq!(table["spool"]["dir"].as_str(), Some("/var/lib/fluxgate"));
        // Global settings are set inside the local sections, keeping their other keys
        assert_eq!(table["write"]["ack"].as_str(), Some("accepted"));
        assert_eq!(table["write"]["flush_interval"].as_str(), Some("200ms"));
        assert_eq!(table["query"]["allow_admin"].as_bool(), Some(true));
        assert_eq!(table["query"]["timeout"].as_str(), Some("5000ms"));
        // Backends and routes come from Redis only
        let backends = table["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0]["name"].as_str(), Some("a"));
        assert_eq!(table["routes"]["_default_"], toml::Value::from(vec!["a"]));
        assert_eq!(
            warnings.last().map(String::as_str),
            Some("Redis replaces these top-level keys of the local config file: backends, routes")
        );
    }

    #[test]
    fn a_global_setting_replaces_a_base_value_that_is_not_a_table() {
        let (toml, _) = convert(
            Some("write = 5"),
            &[("a", &[("url", "http://h:1"), ("interval", "300")])],
            &[],
        );
        let table: toml::Table = toml.parse().unwrap();
        assert_eq!(table["write"]["flush_interval"].as_str(), Some("300ms"));
    }

    #[test]
    fn a_base_that_is_not_toml_is_an_error() {
        let message = rejected(Some("[server\nlisten = 1"), &[("a", &[("url", "u")])], &[]);
        assert!(
            message.starts_with("the local config file is not valid TOML: "),
            "{message}"
        );
    }

    #[test]
    fn nothing_in_redis_leaves_the_base_as_it_was() {
        let (toml, warnings) = convert(None, &[], &[]);
        assert_eq!(toml, "");
        assert!(warnings.is_empty());
        let (toml, _) = convert(Some("[server]\nworkers = 2\n"), &[], &[]);
        assert_eq!(toml, "[server]\nworkers = 2\n");
    }

    #[test]
    fn fluxgate_layout_keys_replace_whole_base_sections() {
        let mut merged = parse_base(Some(
            "[server]\nlisten = \"127.0.0.1:1\"\n[write]\nack = \"accepted\"\nqueue_batches = 4\n",
        ))
        .unwrap();
        let mut warnings = Vec::new();
        let from_redis = parse_table("[write]\nmax_batch_bytes = \"2MiB\"\n", "redis").unwrap();
        replace_keys(&mut merged, from_redis, &mut warnings);
        assert_eq!(
            serialize(&merged).unwrap(),
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[write]\nmax_batch_bytes = \"2MiB\"\n"
        );
        assert_eq!(
            warnings,
            ["Redis replaces these top-level keys of the local config file: write"]
        );
    }

    #[test]
    fn urls_and_debug_never_show_the_password() {
        let source = RedisSource::new("redis://:hunter2@127.0.0.1:6380/3", None).unwrap();
        assert_eq!(source.describe(), "redis://127.0.0.1:6380/3");
        let debug = format!("{source:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");

        let source = RedisSource::new("redis://[::1]", Some("hunter2")).unwrap();
        assert_eq!(source.describe(), "redis://[::1]:6379/0");
        assert!(!format!("{source:?}").contains("hunter2"));

        let source = RedisSource::new("redis://localhost/1", Some("")).unwrap();
        assert!(format!("{source:?}").contains("password: None"));

        for bad in [
            "redis://:hunter2@127.0.0.1:6380/not-a-db",
            "redis://user:hunter2@host:99999/0",
            "http://:hunter2@host:1/0",
            "hunter2@nowhere",
        ] {
            let message = RedisSource::new(bad, None).unwrap_err().to_string();
            assert!(message.starts_with("invalid Redis URL"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let message = RedisSource::new("rediss://h:1/0", None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("TLS"), "{message}");
    }

    #[test]
    fn errors_never_quote_the_password() {
        let source = RedisSource::new("redis://127.0.0.1:1/0", Some("hunter2")).unwrap();
        assert_eq!(
            source.scrub("oops hunter2 leaked".into()),
            "oops <password> leaked"
        );
    }

    #[test]
    fn quoted_values_are_truncated_on_char_boundaries() {
        assert_eq!(quote("short"), "short");
        let exact = "é".repeat(MAX_QUOTED_CHARS);
        assert_eq!(quote(&exact), exact);
        let over = "é".repeat(MAX_QUOTED_CHARS + 1);
        assert_eq!(quote(&over), format!("{exact}..."));
    }
}
