//! The fluxgate process: start-up config errors, retries while a backend is
//! down, refused batches, draining on SIGTERM, connections spread over workers.

use std::time::Duration;

use crate::harness::http::{self, Raw};
use crate::harness::{backends, eventually, metric, unique, Fluxgate, Influxd, TempDir};

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let dir = TempDir::new("config");
    for (config, expected) in [
        (
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[routes]\ncpu = [\"a\", \"nope\"]",
            "invalid config key `routes.\"cpu\"`: unknown backend \"nope\"",
        ),
        (
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"\n[routes]\n_default_ = [\"a\"]",
            "invalid config key `backends[1].name`: duplicate backend name \"a\"",
        ),
        (
            "[[backends]]\nname = \"a\"\nurl = \"127.0.0.1:8086\"\n[routes]\n_default_ = [\"a\"]",
            "invalid config key `backends[0].url`",
        ),
        ("[[backends]\n", "invalid config: line 1, column"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let (status, stderr) = Fluxgate::run(&["--config", path.to_str().unwrap()]);
        assert!(!status.success(), "accepted:\n{config}");
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    let (status, stderr) = Fluxgate::run(&["--config", "/nonexistent/fluxgate.toml"]);
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read config file /nonexistent/fluxgate.toml"),
        "{stderr}"
    );
}

#[test]
fn sigterm_flushes_every_accepted_point_before_exit() {
    let servers = backends();
    let db = unique("drain");
    servers.create_database(&db);
    // Batches that would never flush on their own within the test.
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{}\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\n[write]\nack = \"accepted\"\nflush_interval = \"1h\"\nmax_batch_bytes = \"64MiB\"\n",
        servers.a.http_port, servers.b.http_port
    );
    let mut proxy = Fluxgate::start("", &config);
    let body: String = (0..1000)
        .map(|i| format!("drain v={i} {}\n", 1 + i))
        .collect();
    let reply = http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes());
    assert_eq!(reply.status, 204);
    // Still held in the worker's open batch.
    assert_eq!(servers.a.count(&db, "drain"), 0);
    let status = proxy.stop().expect("fluxgate did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", proxy.log());
    assert_eq!(servers.a.count(&db, "drain"), 1000);
    assert_eq!(servers.b.count(&db, "drain"), 1000);
}

#[test]
fn writer_and_recovery_threads_give_way_to_the_workers() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "workers = 1",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n",
            servers.a.http_port
        ),
    );
    // The nice value of each thread whose name starts with `prefix` (the
    // kernel keeps 15 bytes of a name), from /proc/PID/task/*/stat.
    let nice_of = |prefix: &str| -> Vec<i64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", proxy.pid())).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
            .filter_map(|stat| {
                let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
                // After the name: state is field 3, nice field 19.
                let nice = rest.split(' ').nth(16)?.parse().ok()?;
                name.starts_with(prefix).then_some(nice)
            })
            .collect()
    };
    let worker = nice_of("fluxgate-worker");
    assert_eq!(worker.len(), 1, "one worker thread");
    assert!(
        worker[0] <= 9,
        "the tests run at nice {}: writers could not be told apart from workers",
        worker[0]
    );
    let lower = worker[0] + 10;
    // Each thread lowers its own priority as it starts.
    eventually(
        Duration::from_secs(10),
        "writers and recovery niced",
        || {
            let (writers, recovery) = (nice_of("fluxgate-writer"), nice_of("fluxgate-recove"));
            let niced = !writers.is_empty()
                && recovery.len() == 1
                && writers.iter().chain(&recovery).all(|&nice| nice == lower);
            niced.then_some(())
        },
    );
}

#[test]
fn a_down_backend_gets_its_points_once_it_is_back() {
    let mut server = Influxd::start();
    let db = unique("retry");
    server.create_database(&db);
    server.stop();
    let config = format!(
        "[[backends]]\nname = \"flaky\"\nurl = \"http://127.0.0.1:{}\"\ntimeout = \"2s\"\n\
         [routes]\n_default_ = [\"flaky\"]\n[write]\nack = \"accepted\"\nflush_interval = \"10ms\"\nmax_retry_backoff = \"200ms\"\n",
        server.http_port
    );
    let proxy = Fluxgate::start("", &config);
    let body: String = (0..500)
        .map(|i| format!("retry v={i} {}\n", 1 + i))
        .collect();
    let reply = http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes());
    assert_eq!(reply.status, 204);
    eventually(
        Duration::from_secs(30),
        "the proxy to notice the backend is down",
        || {
            let health = http::get(&proxy.url("/health"));
            health.body.contains("\"up\":false").then_some(())
        },
    );
    server.restart();
    eventually(
        Duration::from_secs(30),
        "500 points after the restart",
        || (server.count(&db, "retry") == 500).then_some(()),
    );
    // The backend stores the points just before the writer reads its 204.
    eventually(
        Duration::from_secs(30),
        "the backend to be counted up again",
        || {
            let health = http::get(&proxy.url("/health")).body;
            (health.contains("\"up\":true") && health.contains("\"points_written\":500"))
                .then_some(())
        },
    );
    assert!(proxy.log().contains("backend is up again"));
}

#[test]
fn batches_refused_by_a_backend_are_counted_not_retried() {
    let servers = backends();
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n\
         [write]\nack = \"accepted\"\nflush_interval = \"10ms\"\n",
        servers.a.http_port
    );
    let proxy = Fluxgate::start("", &config);
    // The database does not exist: InfluxDB answers 404 "database not found".
    let missing = unique("missing");
    let reply = http::post(
        &proxy.url(&format!("/write?db={missing}")),
        &[],
        b"m v=1 1\nm v=2 2\n",
    );
    assert_eq!(reply.status, 204);
    eventually(Duration::from_secs(30), "the refusal to be counted", || {
        http::get(&proxy.url("/health"))
            .body
            .contains("\"points_rejected\":2")
            .then_some(())
    });
    // The counter is visible a moment before the log line is written.
    eventually(Duration::from_secs(10), "the refusal to be logged", || {
        let log = proxy.log();
        (log.contains("backend refused a batch") && log.contains("database not found"))
            .then_some(())
    });
    let health = http::get(&proxy.url("/health")).body;
    assert!(health.contains("\"retries\":0"), "{health}");
}

#[test]
fn points_that_cannot_be_delivered_by_shutdown_are_counted_and_fail_the_exit() {
    let nothing_listens = crate::harness::free_port();
    // No spool, a down backend, one-batch queues and small batches: the
    // accepted points wait in the writer (retrying), its queue and possibly
    // the worker's overflow when SIGTERM arrives.
    let config = format!(
        "[[backends]]\nname = \"down\"\nurl = \"http://127.0.0.1:{nothing_listens}\"\n[routes]\n_default_ = [\"down\"]\n\
         [write]\nack = \"accepted\"\nmax_batch_bytes = \"1KiB\"\nqueue_batches = 1\nshutdown_timeout = \"300ms\"\n\
         max_retry_backoff = \"50ms\"\n"
    );
    let mut proxy = Fluxgate::start("workers = 1", &config);
    let body: String = (0..200)
        .map(|i| format!("lost v={i} {}\n", i + 1))
        .collect();
    let reply = http::post(&proxy.url("/write?db=x"), &[], body.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.body);
    let status = proxy.stop().expect("fluxgate did not exit after SIGTERM");
    assert!(
        !status.success(),
        "lost points must fail the exit:\n{}",
        proxy.log()
    );
    // Every accepted point is accounted for, wherever it waited (writer,
    // queue or the worker's overflow): none is dropped silently.
    let log = proxy.log();
    assert!(
        log.contains("200 points could not be delivered before the shutdown grace period ended"),
        "{log}"
    );
}

#[test]
fn connections_are_spread_evenly_over_the_workers() {
    let servers = backends();
    for driver in ["auto", "epoll"] {
        let db = unique("spread");
        servers.create_database(&db);
        let proxy = Fluxgate::start(
            &format!("workers = 2\ndriver = \"{driver}\""),
            &format!(
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n",
                servers.a.http_port
            ),
        );
        // Keep-alive clients, each answered before the next connects. The
        // kernel picks a worker for each by a hash of its addresses: left to
        // that, 16 connections split 8:8 one time in five.
        const CLIENTS: usize = 16;
        let mut clients: Vec<Raw> = (0..CLIENTS)
            .map(|n| {
                let mut client = Raw::connect(proxy.addr);
                let line = format!("spread,client={n} v={n} {}\n", n + 1);
                client.send(
                    format!(
                        "POST /write?db={db}&precision=s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{line}",
                        line.len()
                    )
                    .as_bytes(),
                );
                assert_eq!(client.read_response().status, 204, "{driver}: client {n}");
                client
            })
            .collect();
        clients[0].send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let metrics = clients[0].read_response().body;
        let open = |worker: usize| {
            metric(
                &metrics,
                &format!("fluxgate_connections{{worker=\"{worker}\"}}"),
            )
            .expect("fluxgate_connections in /metrics")
        };
        assert_eq!(open(0) + open(1), CLIENTS as f64, "{driver}\n{metrics}");
        assert_eq!(open(0), open(1), "{driver}\n{metrics}");
        // Every connection, handed over or not, was served.
        eventually(Duration::from_secs(30), "every client's point", || {
            (servers.a.count(&db, "spread") == CLIENTS as u64).then_some(())
        });
    }
}
