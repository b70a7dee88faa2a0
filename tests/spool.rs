//! The spool: no acknowledged point is lost while a backend is down, across a
//! crash of fluxgate, when the spool fills, or when its file is damaged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::http;
use crate::harness::{eventually, unique, Fluxgate, Influxd, TempDir};

const LANDING_TIMEOUT: Duration = Duration::from_secs(60);

fn config(a: u16, b: u16, spool_dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\ncheck_interval = \"100ms\"\ntimeout = \"2s\"\n\
         [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\ncheck_interval = \"100ms\"\ntimeout = \"2s\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\n\
         [spool]\ndir = \"{}\"\ncapacity = \"64MiB\"\n\
         [write]\nack = \"durable\"\nflush_interval = \"20ms\"\nmax_retry_backoff = \"100ms\"\nshutdown_timeout = \"2s\"\n{extra}\n",
        spool_dir.display()
    )
}

/// A tag value that makes each line about 300 bytes, so spools fill quickly.
fn pad() -> String {
    "p".repeat(270)
}

/// Writes numbered points (`sp v=<n> <n>`) in requests of `per_request` until
/// `stop` is set; counts those acknowledged with 204 in `acked`. Every point
/// is distinct, so a backend's count is the number of points it has.
fn writer(
    proxy_url: String,
    db: String,
    per_request: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut next = 0u64;
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            let body: String = (next..next + per_request)
                .map(|n| format!("sp v={n} {}\n", n + 1))
                .collect();
            let reply = ureq::post(&format!("{proxy_url}/write?db={db}"))
                .timeout(Duration::from_secs(30))
                .send_string(&body);
            if matches!(reply, Ok(ref r) if r.status() == 204) {
                acked.fetch_add(per_request, Ordering::Relaxed);
                next += per_request;
            }
            sent += 1;
        }
        sent
    })
}

#[test]
fn a_backend_down_for_a_while_gets_every_acknowledged_point() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("spool_outage");
    a.create_database(&db);
    b.create_database(&db);
    let spool = TempDir::new("spool");
    let proxy = Fluxgate::start(
        "workers = 2",
        &config(a.http_port, b.http_port, spool.path(), ""),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = writer(proxy.url(""), db.clone(), 200, stop.clone(), acked.clone());

    eventually(LANDING_TIMEOUT, "some points before the outage", || {
        (acked.load(Ordering::Relaxed) >= 2_000).then_some(())
    });
    b.stop();
    let at_outage = acked.load(Ordering::Relaxed);
    // The outage ("minutes", scaled down): writes keep being acknowledged.
    eventually(
        LANDING_TIMEOUT,
        "writes acknowledged during the outage",
        || (acked.load(Ordering::Relaxed) >= at_outage + 4_000).then_some(()),
    );
    let status = http::get(&proxy.url("/status")).body;
    assert!(status.contains("\"up\": false"), "{status}");
    b.restart();
    let at_restart = acked.load(Ordering::Relaxed);
    eventually(LANDING_TIMEOUT, "writes after the restart", || {
        (acked.load(Ordering::Relaxed) >= at_restart + 2_000).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let total = acked.load(Ordering::Relaxed);

    // Durable acks: a had every point when it was acknowledged.
    assert_eq!(a.count(&db, "sp"), total);
    eventually(LANDING_TIMEOUT, "b to catch up from the spool", || {
        (b.count(&db, "sp") == total).then_some(())
    });
    // The last replayed record is removed just after b answered for it.
    let metrics = eventually(LANDING_TIMEOUT, "b's spool to be empty", || {
        let metrics = http::get(&proxy.url("/metrics")).body;
        metrics
            .contains("fluxgate_backend_spool_records{backend=\"b\"} 0\n")
            .then_some(metrics)
    });
    assert!(
        !metrics.contains("fluxgate_backend_points_spooled_total{backend=\"b\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("fluxgate_backend_points_replayed_total{backend=\"b\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn a_crash_with_a_backend_down_loses_no_acknowledged_point() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("spool_crash");
    a.create_database(&db);
    b.create_database(&db);
    b.stop();
    let spool = TempDir::new("spool");
    let config = config(a.http_port, b.http_port, spool.path(), "");
    let mut proxy = Fluxgate::start("workers = 2", &config);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = writer(proxy.url(""), db.clone(), 100, stop.clone(), acked.clone());
    eventually(
        LANDING_TIMEOUT,
        "points spooled for the down backend",
        || (acked.load(Ordering::Relaxed) >= 3_000).then_some(()),
    );
    // kill -9 in the middle of the load.
    proxy.kill();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let total = acked.load(Ordering::Relaxed);
    assert!(total >= 3_000);

    b.restart();
    let _proxy = Fluxgate::start("workers = 2", &config);
    // The request in flight at the kill may have reached a without its 204
    // reaching the client: at least once, never more than one request's worth.
    let in_flight = 100;
    let on_a = a.count(&db, "sp");
    assert!(
        (total..=total + in_flight).contains(&on_a),
        "a has {on_a} of {total} acknowledged points"
    );
    eventually(
        LANDING_TIMEOUT,
        "b to get every acknowledged point from the spool",
        || {
            // Every point is distinct, so a duplicate delivery does not count twice.
            let n = b.count(&db, "sp");
            assert!(
                n <= total + in_flight,
                "b has {n} points, more than were written"
            );
            (n >= total).then_some(())
        },
    );
}

#[test]
fn a_full_spool_answers_503_and_loses_nothing_acknowledged() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("spool_full");
    a.create_database(&db);
    b.create_database(&db);
    b.stop();
    let spool = TempDir::new("spool");
    // The smallest spool, uncompressed, and small batches: it fills in seconds.
    let config = config(
        a.http_port,
        b.http_port,
        spool.path(),
        "max_batch_bytes = \"256KiB\"\nqueue_timeout = \"500ms\"\nack_timeout = \"2s\"",
    )
    .replace(
        "capacity = \"64MiB\"",
        "capacity = \"16MiB\"\ncompress = false",
    );
    let proxy = Fluxgate::start("", &config);
    let mut acked = 0u64;
    let mut next = 0u64;
    let mut saw_503 = None;
    for _ in 0..400 {
        let body: String = (next..next + 1000)
            .map(|n| format!("sp,pad={} v={n} {}\n", pad(), n + 1))
            .collect();
        let reply = http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes());
        match reply.status {
            204 => acked += 1000,
            503 => {
                saw_503 = Some(reply);
                break;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
        next += 1000;
    }
    let reply = saw_503.expect("the spool never filled");
    assert_eq!(reply.header("Retry-After"), Some("1"));
    assert!(
        acked > 10_000,
        "only {acked} points before the spool filled"
    );
    let metrics = http::get(&proxy.url("/metrics")).body;
    assert!(
        !metrics.contains("fluxgate_backend_spool_full_total{backend=\"b\"} 0\n"),
        "{metrics}"
    );

    b.restart();
    eventually(LANDING_TIMEOUT, "b to get every acknowledged point", || {
        (b.count(&db, "sp") >= acked).then_some(())
    });
    assert!(a.count(&db, "sp") >= acked);
}

#[test]
fn a_damaged_spool_file_is_reported_and_the_proxy_keeps_working() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("spool_damage");
    a.create_database(&db);
    b.create_database(&db);
    b.stop();
    let spool = TempDir::new("spool");
    let config = config(a.http_port, b.http_port, spool.path(), "").replace(
        "capacity = \"64MiB\"",
        "capacity = \"16MiB\"\ncompress = false",
    );
    let mut proxy = Fluxgate::start("", &config);
    for round in 0..20u64 {
        let body: String = (0..500)
            .map(|i| format!("sp,pad={} v={i} {}\n", pad(), round * 1000 + i + 1))
            .collect();
        assert_eq!(
            http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes()).status,
            204
        );
    }
    assert_eq!(
        proxy.stop().map(|s| s.success()),
        Some(true),
        "{}",
        proxy.log()
    );

    // Garble a stretch in the middle of the spooled records, and cut the file short.
    let path = spool.path().join("b.spool");
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() >= 16 << 20);
    for byte in &mut bytes[1_000_000..1_000_100] {
        *byte ^= 0x5a;
    }
    bytes.truncate(2_000_017);
    std::fs::write(&path, &bytes).unwrap();
    // Junk beside it must not matter.
    std::fs::write(spool.path().join("junk.spool.tmp"), b"not a spool").unwrap();

    let proxy = Fluxgate::start("", &config);
    let log = proxy.log();
    assert!(log.contains("spool recovered with damage"), "{log}");
    let status: serde_json::Value =
        serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
    let skipped = status["backends"][1]["spool"]["skipped_bytes_at_open"]
        .as_u64()
        .unwrap();
    assert!(skipped >= 100, "{status}");
    let skipped_records = status["backends"][1]["spool"]["skipped_records_at_open"]
        .as_u64()
        .unwrap();
    assert!(skipped_records >= 1, "{status}");
    let metrics = http::get(&proxy.url("/metrics")).body;
    assert!(
        metrics.contains(&format!(
            "fluxgate_backend_spool_skipped_records{{backend=\"b\"}} {skipped_records}\n"
        )),
        "{metrics}"
    );

    // Still working: new writes are acknowledged and the undamaged records replay.
    b.restart();
    let body: String = (0..100)
        .map(|i| format!("after v={i} {}\n", i + 1))
        .collect();
    assert_eq!(
        http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes()).status,
        204
    );
    eventually(LANDING_TIMEOUT, "new points on b", || {
        (b.count(&db, "after") == 100).then_some(())
    });
    let replayed = b.count(&db, "sp");
    assert!(
        replayed > 0 && replayed < 10_000,
        "replayed {replayed} of 10000 spooled points"
    );
}

#[test]
fn a_file_that_is_not_a_spool_is_moved_aside() {
    let a = Influxd::start();
    let spool = TempDir::new("spool");
    std::fs::write(spool.path().join("a.spool"), vec![0x42; 100_000]).unwrap();
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n[spool]\ndir = \"{}\"\ncapacity = \"16MiB\"\n",
        a.http_port,
        spool.path().display()
    );
    let proxy = Fluxgate::start("", &config);
    assert!(proxy.log().contains("moved aside"), "{}", proxy.log());
    let moved: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("a.spool.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        std::fs::read(spool.path().join(&moved[0])).unwrap(),
        vec![0x42; 100_000]
    );
    let db = unique("aside");
    a.create_database(&db);
    assert_eq!(
        http::post(&proxy.url(&format!("/write?db={db}")), &[], b"m v=1 1\n").status,
        204
    );
}
