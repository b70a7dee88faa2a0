//! The config from Redis (`fluxgate::config::redis`) against a real
//! redis-server: both key layouts, merging over a local file, passwords,
//! an unreachable server, and reloads announced over pub/sub.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fluxgate::config::redis::{Layout, RedisSource};
use fluxgate::config::{AckMode, ByteSize, Config};

use crate::harness::redis::RedisServer;
use crate::harness::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// What each instance keeps in its own file.
const LOCAL: &str = r#"
[server]
listen = "127.0.0.1:7999"
[spool]
dir = "/var/lib/fluxgate/spool"
capacity = "64MiB"
[write]
ack = "accepted"
"#;

/// Runs one command on `conn`, panicking with the command on failure.
#[track_caller]
fn run(conn: &mut redis::Connection, args: &[&str]) {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    if let Err(e) = command.query::<redis::Value>(conn) {
        panic!("{args:?} failed: {e}");
    }
}

fn source(server: &RedisServer) -> RedisSource {
    RedisSource::new(&server.url(), None).expect("the harness URL parses")
}

#[test]
fn fluxgate_layout_round_trips_merged_over_the_local_file() {
    let server = RedisServer::start();
    let source = source(&server);
    let shared = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8086\"\n\
                  [routes]\n_default_ = [\"a\"]\n\
                  [write]\nmax_batch_bytes = \"2MiB\"\n";
    source.store(shared).unwrap();
    let stored: String = redis::cmd("GET")
        .arg("fluxgate:config")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored, shared, "stored verbatim, as the file would be");

    let fetched = source.fetch(Some(LOCAL)).unwrap();
    assert_eq!(fetched.layout, Layout::Toml);
    assert_eq!(
        fetched.warnings,
        ["Redis replaces these top-level keys of the local config file: write"]
    );
    let config = Config::from_toml(&fetched.toml).unwrap();
    // Per instance, from the local file
    assert_eq!(config.server.listen, "127.0.0.1:7999");
    assert_eq!(
        config.spool.as_ref().map(|s| s.dir.as_path()),
        Some(Path::new("/var/lib/fluxgate/spool"))
    );
    // Shared, from Redis: [write] is replaced whole, so `ack` is back to its default
    assert_eq!(config.write.max_batch_bytes, ByteSize(2 << 20));
    assert_eq!(config.write.ack, AckMode::Durable);
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.backends[0].url, "http://127.0.0.1:8086");

    // Without a local file, Redis's text is the whole config.
    let fetched = source.fetch(None).unwrap();
    assert!(fetched.warnings.is_empty(), "{:?}", fetched.warnings);
    assert!(Config::from_toml(&fetched.toml).is_ok());

    // Text that is not TOML is refused before it can reach the fleet.
    let message = source
        .store("[[backends]\nname = 1")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("the config to store is not valid TOML"),
        "{message}"
    );
}

#[test]
fn influx_proxy_layout_converts_with_one_warning_per_field() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    #[rustfmt::skip]
    let setup: &[&[&str]] = &[
        &["HSET", "b:a", "url", "http://127.0.0.1:8086", "db", "telegraf", "zone", "sh",
          "interval", "500", "timeout", "5000", "timeoutquery", "30000",
          "checkinterval", "200", "maxrowlimit", "10000", "writeonly", "0"],
        &["HSET", "b:b", "url", "http://127.0.0.1:8087", "db", "telegraf",
          "interval", "1000", "timeoutquery", "600000", "writeonly", "1"],
        &["RPUSH", "m:cpu", "a"],
        &["RPUSH", "m:_default_", "a", "b"],
        &["HSET", "default_node", "listenaddr", ":6666"],
        // Neighbours on a shared Redis that match no pattern
        &["SET", "bench:last", "x"],
        &["SET", "mem", "x"],
    ];
    for args in setup {
        run(&mut conn, args);
    }

    let fetched = source(&server).fetch(Some(LOCAL)).unwrap();
    assert_eq!(fetched.layout, Layout::InfluxProxy);
    assert_eq!(
        fetched.warnings,
        [
            "ignored influx-proxy node settings in default_node: per-instance settings such as \
             the listen address come from the local config file ([server] listen)",
            "`interval` is per backend in influx-proxy but fluxgate has one write.flush_interval \
             for all backends: using the smallest, 500ms (set by b:a (500ms), b:b (1000ms))",
            "`timeoutquery` is per backend in influx-proxy but fluxgate has one query.timeout \
             for all backends: using the largest, 600000ms (set by b:a (30000ms), b:b (600000ms))",
            "ignored `db` of b:a, b:b: fluxgate writes to the database each request names",
            "ignored `maxrowlimit` of b:a: batches are bounded by write.max_batch_bytes instead",
            "ignored `zone` of b:a: fluxgate has no zones: queries go to any healthy replica of \
             the backend set",
        ]
    );

    let table: toml::Table = fetched.toml.parse().unwrap();
    assert_eq!(table["backends"][0].get("write_only"), None);
    assert_eq!(table["backends"][1]["write_only"].as_bool(), Some(true));

    let config =
        Config::from_toml(&fetched.toml).unwrap_or_else(|e| panic!("{e}\n{}", fetched.toml));
    assert_eq!(config.server.listen, "127.0.0.1:7999");
    assert_eq!(config.write.ack, AckMode::Accepted, "local [write] kept");
    assert_eq!(config.write.flush_interval, Duration::from_millis(500));
    assert_eq!(config.query.timeout, Duration::from_secs(600));
    let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(config.backends[0].timeout, Duration::from_secs(5));
    assert_eq!(
        config.backends[0].check_interval,
        Duration::from_millis(200)
    );
    assert_eq!(config.routes["cpu"], ["a"]);
    assert_eq!(config.routes["_default_"], ["a", "b"]);
}

#[test]
fn influx_proxy_route_to_an_unknown_backend_fails_validation_clearly() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    run(&mut conn, &["HSET", "b:a", "url", "http://127.0.0.1:8086"]);
    run(&mut conn, &["RPUSH", "m:_default_", "a"]);
    run(&mut conn, &["RPUSH", "m:mem", "a", "ghost"]);
    let fetched = source(&server).fetch(None).unwrap();
    let message = Config::from_toml(&fetched.toml).unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid config key `routes.\"mem\"`: unknown backend \"ghost\""
    );
}

#[test]
fn influx_proxy_bad_values_and_wrong_key_types_name_the_key() {
    let server = RedisServer::start();
    let source = source(&server);
    let mut conn = server.connection();
    run(
        &mut conn,
        &["HSET", "b:a", "url", "http://h:1", "timeout", "10s"],
    );
    assert_eq!(
        source.fetch(None).unwrap_err().to_string(),
        "influx-proxy key `b:a` field `timeout` = \"10s\": expected a whole number of milliseconds"
    );
    run(&mut conn, &["DEL", "b:a"]);
    run(&mut conn, &["SET", "b:a", "not a hash"]);
    let message = source.fetch(None).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("Redis at {}: HGETALL b:a failed: ", server.url())),
        "{message}"
    );
    assert!(message.contains("WRONGTYPE"), "{message}");
}

#[test]
fn fluxgate_key_wins_when_both_layouts_are_present() {
    let server = RedisServer::start();
    let source = source(&server);
    let mut conn = server.connection();
    run(&mut conn, &["HSET", "b:old", "url", "http://127.0.0.1:9"]);
    run(&mut conn, &["RPUSH", "m:_default_", "old"]);
    source
        .store("[[backends]]\nname = \"new\"\nurl = \"http://127.0.0.1:8086\"\n[routes]\n_default_ = [\"new\"]\n")
        .unwrap();
    let fetched = source.fetch(None).unwrap();
    assert_eq!(fetched.layout, Layout::Toml);
    assert_eq!(
        fetched.warnings,
        [
            "both layouts are in Redis: using `fluxgate:config` and ignoring the influx-proxy \
             keys (`b:*`, `m:*`). Delete them once the migration is done"
        ]
    );
    let config = Config::from_toml(&fetched.toml).unwrap();
    assert_eq!(config.backends[0].name, "new");
}

#[test]
fn an_empty_redis_is_an_error_naming_the_keys_looked_for() {
    let server = RedisServer::start();
    run(&mut server.connection(), &["SET", "unrelated", "x"]);
    assert_eq!(
        source(&server).fetch(Some(LOCAL)).unwrap_err().to_string(),
        format!(
            "no fluxgate config in Redis at {}: looked for the string key `fluxgate:config` \
             (fluxgate layout) and for `b:*` hashes and `m:*` lists (influx-proxy layout). \
             Store a config with `redis-cli -x SET fluxgate:config < fluxgate.toml`",
            server.url()
        )
    );
}

#[test]
fn a_wrong_or_missing_password_is_a_clear_error_without_the_password() {
    let server = RedisServer::start_with_password("correct-horse");
    let url = server.url();
    let refused = format!(
        "Redis at {url} refused the password: check --redis-password (or the password in the \
         --redis URL)"
    );

    let wrong = RedisSource::new(&url, Some("wrong-battery")).unwrap();
    let in_url = RedisSource::new(
        &format!("redis://:wrong-battery@127.0.0.1:{}/0", server.port),
        None,
    )
    .unwrap();
    for source in [&wrong, &in_url] {
        assert_eq!(source.describe(), url);
        assert!(!format!("{source:?}").contains("wrong-battery"));
        for error in [
            source.fetch(None).unwrap_err(),
            source.store("").unwrap_err(),
            source.publish_reload().unwrap_err(),
        ] {
            assert_eq!(error.to_string(), refused);
            assert!(!format!("{error:?}").contains("wrong-battery"));
        }
    }

    let missing = RedisSource::new(&url, None).unwrap();
    assert_eq!(
        missing.fetch(None).unwrap_err().to_string(),
        format!("Redis at {url} requires a password: pass --redis-password")
    );

    // A password for a Redis that has none is refused too, not silently dropped.
    let plain = RedisServer::start();
    let needless = RedisSource::new(&plain.url(), Some("correct-horse")).unwrap();
    assert_eq!(
        needless.fetch(None).unwrap_err().to_string(),
        format!(
            "Redis at {} refused the password: check --redis-password (or the password in the \
             --redis URL)",
            plain.url()
        )
    );

    let right = RedisSource::new(&url, Some("correct-horse")).unwrap();
    right
        .store("[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8086\"\n[routes]\n_default_ = [\"a\"]\n")
        .unwrap();
    assert_eq!(right.fetch(None).unwrap().layout, Layout::Toml);
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // Nothing listens on a port that was free a moment ago.
    let port = free_port();
    let source = RedisSource::new(&format!("redis://:s3cret@127.0.0.1:{port}/0"), None).unwrap();
    for error in [
        source.fetch(None).unwrap_err(),
        source.publish_reload().unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot connect to Redis at redis://127.0.0.1:{port}/0: "
            )),
            "{message}"
        );
        assert!(
            message.ends_with("Check that redis-server runs there and that --redis names it"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
}

/// `RedisSource::watch` on its own thread, counting reloads.
struct Watcher {
    stop: Arc<AtomicBool>,
    reloads: Arc<AtomicUsize>,
    done: mpsc::Receiver<()>,
}

impl Watcher {
    fn start(source: RedisSource) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let reloads = Arc::new(AtomicUsize::new(0));
        let (tx, done) = mpsc::channel();
        let (thread_stop, thread_reloads) = (stop.clone(), reloads.clone());
        std::thread::spawn(move || {
            source.watch(&thread_stop, || {
                thread_reloads.fetch_add(1, Ordering::SeqCst);
            });
            let _ = tx.send(());
        });
        Watcher {
            stop,
            reloads,
            done,
        }
    }

    fn reloads(&self) -> usize {
        self.reloads.load(Ordering::SeqCst)
    }

    #[track_caller]
    fn wait_for_reloads(&self, expected: usize) {
        eventually(WAIT, &format!("{expected} reload callbacks"), || {
            (self.reloads() == expected).then_some(())
        });
    }

    /// Sets the stop flag, checks that `watch` returns soon after, and
    /// returns the number of reloads.
    #[track_caller]
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.done
            .recv_timeout(Duration::from_secs(10))
            .expect("watch did not return within 10 s of its stop flag");
        self.reloads()
    }
}

/// Publishes until a subscriber receives it: PUBLISH answers with the number
/// of receivers, so this also waits for the watcher's SUBSCRIBE.
#[track_caller]
fn publish_until_received(publisher: &RedisSource) {
    eventually(WAIT, "a subscriber to receive a reload", || {
        (publisher.publish_reload().ok()? == 1).then_some(())
    });
}

#[test]
fn watch_calls_back_once_per_published_reload() {
    let server = RedisServer::start();
    let watcher = Watcher::start(source(&server));
    let publisher = source(&server);
    // Once subscribed, one reload for whatever was published before (the
    // caller read its config before the subscription existed), then one per message.
    publish_until_received(&publisher);
    watcher.wait_for_reloads(2);
    assert_eq!(publisher.publish_reload().unwrap(), 1);
    assert_eq!(publisher.publish_reload().unwrap(), 1);
    watcher.wait_for_reloads(4);
    assert_eq!(watcher.stop(), 4);
    assert_eq!(
        publisher.publish_reload().unwrap(),
        0,
        "unsubscribed once stopped"
    );
}

#[test]
fn watch_reconnects_after_a_redis_restart_and_reloads_once() {
    let mut server = RedisServer::start();
    let watcher = Watcher::start(source(&server));
    let publisher = source(&server);
    publish_until_received(&publisher);
    // The first subscription's catch-up reload, then the published one.
    watcher.wait_for_reloads(2);

    server.stop();
    server.restart();
    // One catch-up reload for whatever was published while it was away, then
    // the published one.
    publish_until_received(&publisher);
    watcher.wait_for_reloads(4);

    // Stopping works in the middle of an outage too (watch is backing off).
    server.stop();
    assert!(publisher.publish_reload().is_err());
    assert_eq!(
        watcher.stop(),
        4,
        "no reload for an outage it never recovered from"
    );
}
