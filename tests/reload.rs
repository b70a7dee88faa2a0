//! Hot reload from the config file: `POST /reload` and SIGHUP apply a new
//! config while clients keep writing, and a config that cannot be applied
//! leaves the running one serving.

use std::time::Duration;

use crate::harness::http;
use crate::harness::steady::{stored_values as timestamps, SteadyWriter};
use crate::harness::{backends, eventually, unique, Fluxgate, Influxd, TempDir};

const LANDING_TIMEOUT: Duration = Duration::from_secs(60);

fn backend(name: &str, port: u16) -> String {
    format!(
        "[[backends]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\ncheck_interval = \"100ms\"\ntimeout = \"2s\"\n"
    )
}

const WRITE: &str = "[write]\nflush_interval = \"20ms\"\nmax_retry_backoff = \"100ms\"\nshutdown_timeout = \"5s\"\n";

fn spool_section(dir: &TempDir) -> String {
    format!(
        "[spool]\ndir = \"{}\"\ncapacity = \"16MiB\"\n",
        dir.path().display()
    )
}

/// One request of points `mv v=n n` (seconds) for each n.
fn write_points(proxy: &Fluxgate, db: &str, numbers: std::ops::RangeInclusive<u64>) -> http::Reply {
    let body: String = numbers.map(|n| format!("mv v={n} {n}\n")).collect();
    http::post(
        &proxy.url(&format!("/write?db={db}&precision=s")),
        &[],
        body.as_bytes(),
    )
}

fn reload(proxy: &Fluxgate) -> http::Reply {
    http::post(&proxy.url("/reload"), &[], b"")
}

fn generation(proxy: &Fluxgate) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
    status["config"]["generation"]
        .as_u64()
        .expect("generation in /status")
}

#[test]
fn reloads_move_a_measurement_between_backends_while_a_client_writes() {
    // `accepted`: a 204 comes before the batch leaves, so batches still open
    // at a reload are in play too.
    const WRITE: &str =
        "[write]\nack = \"accepted\"\nflush_interval = \"50ms\"\nshutdown_timeout = \"5s\"\n";
    let servers = backends();
    let db = unique("reload_move");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    // Generation 1: only backend a.
    let proxy = Fluxgate::start(
        "workers = 2",
        &format!("{}[routes]\nmv = [\"a\"]\n{WRITE}", backend("a", a)),
    );
    let writer = SteadyWriter::start(proxy.url(&format!("/write?db={db}&precision=s")), 5);
    writer.wait_for_requests(20);

    // Generation 2, by POST /reload: backend b is added and mv moves to it.
    proxy.rewrite_config(
        "workers = 2",
        &format!(
            "{}{}[routes]\nmv = [\"b\"]\n{WRITE}",
            backend("a", a),
            backend("b", b)
        ),
    );
    let reply = reload(&proxy);
    assert_eq!(reply.status, 200, "{reply:?}");
    let applied: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(applied["generation"], 2, "{applied}");
    assert_eq!(applied["changed"], true, "{applied}");
    writer.wait_for_requests(20);

    // Generation 3, by SIGHUP: back to a alone; b is removed.
    proxy.rewrite_config(
        "workers = 2",
        &format!("{}[routes]\nmv = [\"a\"]\n{WRITE}", backend("a", a)),
    );
    proxy.signal(libc::SIGHUP);
    eventually(LANDING_TIMEOUT, "SIGHUP to apply generation 3", || {
        (generation(&proxy) == 3).then_some(())
    });
    writer.wait_for_requests(20);
    let mut acked = writer.finish();
    acked.sort_unstable();

    // Every acknowledged point is on exactly one backend, and each backend
    // holds contiguous runs: a, then b, then a again.
    let (on_a, on_b) = eventually(LANDING_TIMEOUT, "every acknowledged point to land", || {
        let (on_a, on_b) = (timestamps(&servers.a, &db), timestamps(&servers.b, &db));
        (on_a.len() + on_b.len() >= acked.len()).then_some((on_a, on_b))
    });
    let mut stored: Vec<u64> = on_a.iter().chain(&on_b).copied().collect();
    stored.sort_unstable();
    assert_eq!(
        stored, acked,
        "points stored (a then b) against points acknowledged"
    );
    assert!(!on_b.is_empty(), "nothing was written while mv routed to b");
    let (first_b, last_b) = (on_b[0], on_b[on_b.len() - 1]);
    assert_eq!(
        on_b.len() as u64,
        last_b - first_b + 1,
        "b holds one contiguous run"
    );
    assert!(
        on_a.iter().any(|&t| t < first_b),
        "a got the writes before the first reload"
    );
    assert!(
        on_a.iter().any(|&t| t > last_b),
        "a got the writes after the second reload"
    );

    // Unchanged config: nothing to apply, same generation.
    let reply = reload(&proxy);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("\"changed\":false"), "{}", reply.body);
    assert_eq!(generation(&proxy), 3);
    let log = proxy.log();
    assert!(log.contains("reload applied"), "{log}");
    assert!(log.contains("backend removed"), "{log}");
}

#[test]
fn a_config_that_cannot_be_applied_is_refused_and_the_old_one_keeps_serving() {
    let servers = backends();
    let db = unique("reload_refused");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    let good = format!(
        "{}{}[routes]\nmv = [\"a\"]\n{WRITE}",
        backend("a", a),
        backend("b", b)
    );
    let proxy = Fluxgate::start("", &good);
    let write = |n: u64| {
        http::post(
            &proxy.url(&format!("/write?db={db}&precision=s")),
            &[],
            format!("mv v={n} {n}\n").as_bytes(),
        )
    };
    assert_eq!(write(1).status, 204);

    let broken = [
        // Not TOML at all.
        ("", "[[backends]\nname = ".to_owned(), "invalid config"),
        // A route naming a backend that does not exist.
        (
            "",
            format!("{}[routes]\nmv = [\"nowhere\"]\n", backend("a", a)),
            "nowhere",
        ),
        // A section only a restart can change.
        ("workers = 7", good.clone(), "restart"),
    ];
    for (server_extra, config, reason) in broken {
        proxy.rewrite_config(server_extra, &config);
        let reply = reload(&proxy);
        assert_eq!(reply.status, 400, "{reply:?}");
        assert!(reply.error().contains("reload refused"), "{reply:?}");
        assert!(
            reply.error().contains(reason),
            "expected {reason:?} in {reply:?}"
        );
        assert_eq!(generation(&proxy), 1);
        assert_eq!(write(2).status, 204, "the old config still serves");
    }
    // SIGHUP with a broken config: logged, refused, still serving.
    proxy.rewrite_config("", "[routes]\nmv = [\"nowhere\"]\n");
    proxy.signal(libc::SIGHUP);
    eventually(LANDING_TIMEOUT, "the refusal to be logged", || {
        (proxy.log().matches("reload refused").count() >= 4).then_some(())
    });
    assert_eq!(generation(&proxy), 1);
    assert_eq!(write(3).status, 204);
    eventually(LANDING_TIMEOUT, "all points on a", || {
        (timestamps(&servers.a, &db) == [1, 2, 3]).then_some(())
    });
    assert_eq!(servers.b.count(&db, "mv"), 0);
    let reply = http::get(&proxy.url("/reload"));
    assert_eq!(reply.status, 405, "{reply:?}");
}

#[test]
fn a_removed_backend_keeps_its_spool_until_it_is_replayed() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("reload_retire");
    a.create_database(&db);
    b.create_database(&db);
    let spool = TempDir::new("spool");
    let spool_section = spool_section(&spool);
    let both = format!(
        "{}{}[routes]\nmv = [\"a\", \"b\"]\n{WRITE}{spool_section}",
        backend("a", a.http_port),
        backend("b", b.http_port)
    );
    let proxy = Fluxgate::start("", &both);
    b.stop();
    // Acknowledged while b is down: a has them, b's spool holds them.
    let reply = write_points(&proxy, &db, 1..=100);
    assert_eq!(reply.status, 204, "{reply:?}");
    let spool_file = spool.path().join("b.spool");
    assert!(spool_file.exists());

    // b is removed from the config while its spool still holds the points.
    proxy.rewrite_config(
        "",
        &format!(
            "{}[routes]\nmv = [\"a\"]\n{WRITE}{spool_section}",
            backend("a", a.http_port)
        ),
    );
    let reply = reload(&proxy);
    assert_eq!(reply.status, 200, "{reply:?}");
    let status: serde_json::Value =
        serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
    let names = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&status["backends"]), ["a"], "{status}");
    // Shown apart while it still has work, with what is left to replay.
    assert_eq!(names(&status["retiring"]), ["b"], "{status}");
    assert!(
        status["retiring"][0]["spool"]["records"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(
        spool_file.exists(),
        "the spool of a removed backend is kept"
    );

    // Once b is back, the retired backend's spool is replayed into it, and
    // the empty file is removed.
    b.restart();
    eventually(LANDING_TIMEOUT, "b's spooled points to be replayed", || {
        (b.count(&db, "mv") == 100).then_some(())
    });
    eventually(
        LANDING_TIMEOUT,
        "the drained spool file to be removed",
        || (!spool_file.exists()).then_some(()),
    );
    eventually(LANDING_TIMEOUT, "b to leave /status", || {
        let status: serde_json::Value =
            serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
        (status["retiring"] == serde_json::json!([])).then_some(())
    });
    assert_eq!(a.count(&db, "mv"), 100);
}

#[test]
fn a_reload_that_fails_half_way_leaves_the_running_backends_whole() {
    let mut a = Influxd::start();
    let db = unique("reload_half");
    a.create_database(&db);
    let spool = TempDir::new("spool");
    let spool_section = spool_section(&spool);
    let proxy = Fluxgate::start(
        "",
        &format!(
            "{}[routes]\nmv = [\"a\"]\n{WRITE}{spool_section}",
            backend("a", a.http_port)
        ),
    );
    // The reload changes a (a new incarnation takes over its spool) and adds
    // c, whose spool cannot be opened: another process (this test) holds it.
    let options = fluxgate::spool::SpoolOptions {
        capacity: 16 << 20,
        compress: true,
    };
    let _held = fluxgate::spool::Spool::open(&spool.path().join("c.spool"), options).unwrap();
    let changed_a = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\ncheck_interval = \"100ms\"\ntimeout = \"3s\"\n",
        a.http_port
    );
    proxy.rewrite_config(
        "",
        &format!(
            "{changed_a}{}[routes]\nmv = [\"a\"]\nother = [\"c\"]\n{WRITE}{spool_section}",
            backend("c", a.http_port)
        ),
    );
    let reply = reload(&proxy);
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.error().contains("c.spool"), "{reply:?}");
    assert_eq!(generation(&proxy), 1);

    // a still spools while it is down and replays once it is back.
    a.stop();
    let reply = write_points(&proxy, &db, 1..=50);
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(spool.path().join("a.spool").exists());
    a.restart();
    eventually(LANDING_TIMEOUT, "a's spooled points to be replayed", || {
        (a.count(&db, "mv") == 50).then_some(())
    });
    assert!(spool.path().join("a.spool").exists(), "a's spool is kept");
}

#[test]
fn removing_a_dead_backend_lets_writes_through_again() {
    let servers = backends();
    let db = unique("reload_dead");
    servers.create_database(&db);
    let dead = crate::harness::free_port();
    let write = "[write]\nack = \"accepted\"\nflush_interval = \"10ms\"\nqueue_batches = 1\nqueue_timeout = \"500ms\"\nmax_retry_backoff = \"100ms\"\nshutdown_timeout = \"1s\"\n";
    let proxy = Fluxgate::start(
        "workers = 1",
        &format!(
            "{}{}[routes]\nmv = [\"a\", \"b\"]\n{write}",
            backend("a", servers.a.http_port),
            backend("b", dead)
        ),
    );
    // Without a spool, b's queue fills and writes are pushed back.
    let post = |n: u64| {
        http::post(
            &proxy.url(&format!("/write?db={db}&precision=s")),
            &[],
            format!("mv v={n} {n}\n").as_bytes(),
        )
    };
    let mut n = 0;
    eventually(LANDING_TIMEOUT, "writes to be pushed back", || {
        n += 1;
        (post(n).status == 503).then_some(())
    });
    proxy.rewrite_config(
        "workers = 1",
        &format!(
            "{}[routes]\nmv = [\"a\"]\n{write}",
            backend("a", servers.a.http_port)
        ),
    );
    assert_eq!(reload(&proxy).status, 200);
    for m in 1..=5 {
        let reply = post(1000 + m);
        assert_eq!(reply.status, 204, "{reply:?}");
    }
}

#[test]
fn a_backend_removed_and_added_again_keeps_its_spool() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("reload_readd");
    a.create_database(&db);
    b.create_database(&db);
    let spool = TempDir::new("spool");
    let with_b = format!(
        "{}{}[routes]\nmv = [\"a\", \"b\"]\n{WRITE}{}",
        backend("a", a.http_port),
        backend("b", b.http_port),
        spool_section(&spool)
    );
    let without_b = format!(
        "{}[routes]\nmv = [\"a\"]\n{WRITE}{}",
        backend("a", a.http_port),
        spool_section(&spool)
    );
    let proxy = Fluxgate::start("", &with_b);
    b.stop();
    assert_eq!(write_points(&proxy, &db, 1..=40).status, 204);
    // Removed while its points wait in its spool, then added again: the new
    // b takes the spool over (one file, one replayer) and replays it.
    proxy.rewrite_config("", &without_b);
    assert_eq!(reload(&proxy).status, 200);
    proxy.rewrite_config("", &with_b);
    assert_eq!(reload(&proxy).status, 200);
    assert_eq!(write_points(&proxy, &db, 41..=60).status, 204);
    b.restart();
    eventually(LANDING_TIMEOUT, "b to get all 60 points", || {
        (b.count(&db, "mv") == 60).then_some(())
    });
    assert_eq!(a.count(&db, "mv"), 60);
    // Live again: its spool file stays, and it is not listed as retiring. A
    // check that something does not happen: give housekeeping (every 1 s)
    // the time to do it wrongly.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(spool.path().join("b.spool").exists());
    let status: serde_json::Value =
        serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
    assert_eq!(status["retiring"], serde_json::json!([]), "{status}");
}

#[test]
fn a_storm_of_reloads_loses_and_duplicates_nothing() {
    const WRITE: &str = "[write]\nack = \"accepted\"\nflush_interval = \"20ms\"\nqueue_batches = 2\nshutdown_timeout = \"5s\"\n";
    let servers = backends();
    let db = unique("reload_storm");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    let config = |to: &str| {
        format!(
            "{}{}[routes]\nmv = [\"{to}\"]\n{WRITE}",
            backend("a", a),
            backend("b", b)
        )
    };
    let proxy = Fluxgate::start("workers = 2", &config("a"));
    let writers: Vec<SteadyWriter> = (0..3)
        .map(|w| {
            SteadyWriter::start_at(
                proxy.url(&format!("/write?db={db}&precision=s")),
                20,
                1 + w * 1_000_000,
            )
        })
        .collect();
    // Twenty reloads, each moving mv to the other backend, while three
    // clients write.
    for round in 0..20 {
        proxy.rewrite_config(
            "workers = 2",
            &config(if round % 2 == 0 { "b" } else { "a" }),
        );
        let reply = reload(&proxy);
        assert_eq!(reply.status, 200, "{reply:?}");
        writers[0].wait_for_requests(2);
    }
    let mut acked: Vec<u64> = writers.into_iter().flat_map(SteadyWriter::finish).collect();
    acked.sort_unstable();
    // Each point on exactly one backend (a point on both would show up
    // twice here), and none missing.
    let stored = eventually(LANDING_TIMEOUT, "every acknowledged point to land", || {
        let mut stored = timestamps(&servers.a, &db);
        stored.extend(timestamps(&servers.b, &db));
        (stored.len() >= acked.len()).then_some(stored)
    });
    let mut stored = stored;
    stored.sort_unstable();
    assert_eq!(stored, acked);
    assert_eq!(generation(&proxy), 21);
}

#[test]
fn a_body_arriving_across_a_reload_is_routed_by_the_new_config() {
    let servers = backends();
    let db = unique("reload_early");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    // The new routes number their backend sets differently: a batch routed
    // by the old ones and queued by the new ones would land on a.
    let config = |routes: &str| {
        format!(
            "{}{}[routes]\n{routes}\n{WRITE}max_batch_bytes = \"256KiB\"\n",
            backend("a", a),
            backend("b", b)
        )
    };
    let proxy = Fluxgate::start("workers = 1", &config("mv = [\"a\"]"));
    // The first half of a large body arrives and is ingested by the routes
    // of generation 1 while the rest is on its way...
    let body: String = (1..=20_000u64).map(|n| format!("mv v={n} {n}\n")).collect();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut raw = http::Raw::connect(proxy.addr);
    raw.send(
        format!(
            "POST /write?db={db}&precision=s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for piece in first.chunks(first.len() / 4 + 1) {
        raw.send(piece);
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...then a reload sends mv to b before the body is complete: every
    // point of the body follows the routes the request is answered under.
    proxy.rewrite_config("workers = 1", &config("_default_ = [\"a\"]\nmv = [\"b\"]"));
    assert_eq!(reload(&proxy).status, 200);
    raw.send(rest);
    let reply = raw.read_response();
    assert_eq!(reply.status, 204, "{}", reply.body);
    eventually(LANDING_TIMEOUT, "the body to land on b", || {
        (servers.b.count(&db, "mv") == 20_000).then_some(())
    });
    assert_eq!(servers.a.count(&db, "mv"), 0);
}
