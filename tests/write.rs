//! `/write` through a real fluxgate into two real InfluxDB servers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::http::{self, Raw};
use crate::harness::{backends, eventually, metric, unique, Fluxgate};

/// Long enough for a batch to be flushed and written on a loaded CI machine.
const LANDING_TIMEOUT: Duration = Duration::from_secs(30);

fn two_backend_config(a: u16, b: u16, routes: &str) -> String {
    format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\n\
         [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\n\
         [routes]\n{routes}\n[write]\nflush_interval = \"20ms\"\n"
    )
}

fn write_url(proxy: &Fluxgate, db: &str, extra: &str) -> String {
    proxy.url(&format!("/write?db={db}{extra}"))
}

/// Waits until `count()` reaches `expected`, then checks it stays there a moment
/// (a point written twice would push it past).
#[track_caller]
fn assert_count(what: &str, expected: u64, count: impl Fn() -> u64) {
    eventually(
        LANDING_TIMEOUT,
        &format!("{what} to reach {expected} points"),
        || {
            let n = count();
            assert!(
                n <= expected,
                "{what}: {n} points, more than the {expected} written"
            );
            (n == expected).then_some(())
        },
    );
}

#[test]
fn ping_answers_204_with_the_influxdb_version() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    let reply = http::get(&proxy.url("/ping"));
    assert_eq!(reply.status, 204);
    assert!(
        reply
            .header("X-Influxdb-Version")
            .is_some_and(|v| v.starts_with("1.")),
        "{reply:?}"
    );
    let reply = http::get(&proxy.url("/ping?verbose=true"));
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("\"version\""));
    assert_eq!(http::get(&proxy.url("/nowhere")).status, 404);
}

#[test]
fn points_land_on_exactly_the_backends_their_measurement_routes_to() {
    let servers = backends();
    let db = unique("routing");
    servers.create_database(&db);
    let routes = "_default_ = [\"a\", \"b\"]\ncpu = [\"a\"]\nmem = [\"b\"]\n\"net_\" = [\"b\"]";
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(servers.a.http_port, servers.b.http_port, routes),
    );

    // cpu: exact -> a; cpu_load: prefix "cpu" -> a; mem: exact -> b;
    // net_io: prefix "net_" -> b; disk: _default_ -> a and b.
    let mut plain = String::new();
    let mut gzipped = String::new();
    for i in 0..50 {
        for measurement in ["cpu", "cpu_load", "mem", "net_io", "disk"] {
            plain.push_str(&format!("{measurement},host=h{i} v={i} {}\n", 1_000 + i));
            gzipped.push_str(&format!("{measurement},host=h{i} v={i} {}\n", 2_000 + i));
        }
    }
    let reply = http::post(&write_url(&proxy, &db, ""), &[], plain.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.body);
    let reply = http::post(
        &write_url(&proxy, &db, ""),
        &[("Content-Encoding", "gzip")],
        &http::gzip(gzipped.as_bytes()),
    );
    assert_eq!(reply.status, 204, "{}", reply.body);

    let (a, b) = (&servers.a, &servers.b);
    for (measurement, on_a, on_b) in [
        ("cpu", 100, 0),
        ("cpu_load", 100, 0),
        ("mem", 0, 100),
        ("net_io", 0, 100),
        ("disk", 100, 100),
    ] {
        assert_count(&format!("{measurement} on a"), on_a, || {
            a.count(&db, measurement)
        });
        assert_count(&format!("{measurement} on b"), on_b, || {
            b.count(&db, measurement)
        });
    }
    // Nothing arrived late where it does not belong.
    assert_eq!(b.count(&db, "cpu"), 0);
    assert_eq!(a.count(&db, "mem"), 0);
}

#[test]
fn precision_is_honoured() {
    let servers = backends();
    let db = unique("precision");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    for (precision, measurement, timestamp, expected_ns) in [
        (
            "s",
            "in_s",
            1_600_000_000_i64,
            1_600_000_000_000_000_000_i64,
        ),
        ("ms", "in_ms", 1_600_000_000_123, 1_600_000_000_123_000_000),
        (
            "ns",
            "in_ns",
            1_600_000_000_123_456_789,
            1_600_000_000_123_456_789,
        ),
        (
            "u",
            "in_u",
            1_600_000_000_123_456,
            1_600_000_000_123_456_000,
        ),
        ("h", "in_h", 444_444, 444_444 * 3_600_000_000_000),
    ] {
        let body = format!("{measurement} v=1 {timestamp}\n");
        let reply = http::post(
            &write_url(&proxy, &db, &format!("&precision={precision}")),
            &[],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 204, "{}", reply.body);
        let points = eventually(LANDING_TIMEOUT, measurement, || {
            let points = servers.a.points(&db, measurement);
            (!points.is_empty()).then_some(points)
        });
        assert_eq!(points, vec![(expected_ns, 1.0)], "precision {precision}");
    }
}

#[test]
fn lines_without_timestamps_carry_the_same_timestamp_on_both_replicas() {
    let servers = backends();
    let db = unique("nots");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\", \"b\"]",
        ),
    );
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let body: String = (0..20).map(|i| format!("nots,n={i} v={i}\n")).collect();
    for precision in ["ns", "ms"] {
        let reply = http::post(
            &write_url(&proxy, &db, &format!("&precision={precision}")),
            &[],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // Each (tag set, timestamp) is one point: 20 series x 2 requests.
    let query = "SELECT \"v\", \"n\" FROM \"nots\" GROUP BY *";
    let times = |server: &crate::harness::Influxd| -> Vec<String> {
        let answer = server.query(&db, query);
        let mut rows: Vec<String> = answer["results"][0]["series"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .flat_map(|s| s["values"].as_array().unwrap().clone())
                    .map(|v| v.to_string())
                    .collect()
            })
            .unwrap_or_default();
        rows.sort();
        rows
    };
    let on_a = eventually(LANDING_TIMEOUT, "40 points on a", || {
        Some(times(&servers.a)).filter(|r| r.len() == 40)
    });
    let on_b = eventually(LANDING_TIMEOUT, "40 points on b", || {
        Some(times(&servers.b)).filter(|r| r.len() == 40)
    });
    assert_eq!(on_a, on_b, "replicas differ");
    for row in &on_a {
        let time: i64 = row
            .trim_start_matches('[')
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            time >= before - 1_000_000 && time <= after,
            "timestamp {time} is not the receive time (between {before} and {after})"
        );
    }
}

#[test]
fn a_body_of_100k_lines_arrives_complete() {
    let servers = backends();
    let db = unique("big");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\", \"b\"]",
        ),
    );
    let mut body = String::with_capacity(100_000 * 40);
    for i in 0..100_000 {
        body.push_str(&format!("big,host=h{} v={i} {}\n", i % 100, 1_000_000 + i));
    }
    let reply = http::post(&write_url(&proxy, &db, ""), &[], body.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_count("big on a", 100_000, || servers.a.count(&db, "big"));
    assert_count("big on b", 100_000, || servers.b.count(&db, "big"));
    // The 1 MiB batches reached the backends from their own pages (lent, not
    // copied), and the points carry the values they were sent with.
    let metrics = http::get(&proxy.url("/metrics")).body;
    let lent = metric(&metrics, "fluxgate_batch_bodies_lent_total").unwrap();
    assert!(lent >= 6.0, "{lent} bodies lent for 4 MB to two backends");
    assert_eq!(
        metric(&metrics, "fluxgate_batch_bodies_held_back_total"),
        Some(0.0)
    );
    for server in [&servers.a, &servers.b] {
        let points = server.points(&db, "big");
        assert_eq!(points.len(), 100_000);
        for (i, (time, v)) in points.iter().enumerate() {
            assert_eq!((*time, *v), (1_000_000 + i as i64, i as f64));
        }
    }
}

#[test]
fn a_large_body_cut_short_writes_nothing() {
    let servers = backends();
    let db = unique("cut");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\", \"b\"]",
        ),
    );
    // Thousands of whole lines arrive, but the body never completes: none of
    // them may be written.
    let body: String = (0..20_000)
        .map(|i| format!("cut,host=h{} v={i} {}\n", i % 100, 1_000_000 + i))
        .collect();
    let mut raw = Raw::connect(proxy.addr);
    raw.send(
        format!(
            "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    raw.send(&body.as_bytes()[..body.len() * 3 / 4]);
    raw.finish_sending();
    assert!(
        raw.is_closed(),
        "the proxy ends the connection, answering nothing"
    );
    // A write after it, answered once written everywhere (ack = durable).
    let reply = http::post(&write_url(&proxy, &db, ""), &[], b"after v=1 1\n");
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_count("after on a", 1, || servers.a.count(&db, "after"));
    for server in [&servers.a, &servers.b] {
        assert_eq!(server.count(&db, "cut"), 0);
    }
    let metrics = http::get(&proxy.url("/metrics")).body;
    assert_eq!(metric(&metrics, "fluxgate_lines_received_total"), Some(1.0));
}

#[test]
fn a_body_arriving_in_pieces_is_ingested_as_it_comes_and_written_as_sent() {
    let servers = backends();
    let db = unique("pieces");
    servers.create_database(&db);
    // Bodies of half a batch or more are ingested as they arrive.
    let proxy = Fluxgate::start(
        "",
        &format!(
            "{}max_batch_bytes = \"64KiB\"\n",
            two_backend_config(
                servers.a.http_port,
                servers.b.http_port,
                "cpu = [\"a\"]\nmem = [\"b\"]\n_default_ = [\"a\", \"b\"]",
            )
        ),
    );
    // Runs of timestamped lines, of lines without a timestamp, a bad line,
    // then more lines: sent in pieces, as a slow link delivers them.
    let mut body = String::new();
    for i in 0..3000 {
        body.push_str(&format!("cpu,host=h{} v={i} {}\n", i % 10, 1_000_000 + i));
    }
    for i in 0..2000 {
        body.push_str(&format!("mem,n={i} v={i}i\n"));
    }
    body.push_str("mem v=oops 5\n");
    for i in 0..1000 {
        body.push_str(&format!("disk v={i} {}\n", 1_000_000 + i));
    }
    let mut raw = Raw::connect(proxy.addr);
    raw.post_in_pieces(&format!("/write?db={db}"), body.as_bytes(), 8);
    let reply = raw.read_response();
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.error(),
        "partial write: unable to parse 'mem v=oops 5': invalid boolean (line 5001) dropped=1"
    );
    assert_count("cpu on a", 3000, || servers.a.count(&db, "cpu"));
    assert_count("mem on b", 2000, || servers.b.count(&db, "mem"));
    for server in [&servers.a, &servers.b] {
        assert_count("disk", 1000, || server.count(&db, "disk"));
        let points = server.points(&db, "disk");
        for (i, (time, v)) in points.iter().enumerate() {
            assert_eq!((*time, *v), (1_000_000 + i as i64, i as f64));
        }
    }
    assert_eq!(servers.b.count(&db, "cpu"), 0);
    assert_eq!(servers.a.count(&db, "mem"), 0);
    let cpu = servers.a.points(&db, "cpu");
    assert_eq!(cpu.len(), 3000);
    let mut values: Vec<f64> = cpu.iter().map(|&(_, v)| v).collect();
    values.sort_by(f64::total_cmp);
    assert!(values.iter().enumerate().all(|(i, &v)| v == i as f64));
    // Lines were ingested while the body arrived, up to the first one
    // without a timestamp, which waits for the receive time.
    let metrics = http::get(&proxy.url("/metrics")).body;
    let early = metric(&metrics, "fluxgate_lines_ingested_early_total").unwrap();
    assert!(
        early > 0.0 && early <= 3000.0,
        "{early} lines ingested early"
    );
}

#[test]
fn a_body_ingested_early_lands_after_the_writes_before_it() {
    let servers = backends();
    let db = unique("early_order");
    servers.create_database(&db);
    // `accepted` and a slow flush: the first write waits in an open batch
    // while the second one's body arrives.
    let proxy = Fluxgate::start(
        "workers = 1",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n\
             [routes]\n_default_ = [\"a\"]\n[write]\nack = \"accepted\"\nflush_interval = \"300ms\"\n\
             max_batch_bytes = \"256KiB\"\n",
            servers.a.http_port
        ),
    );
    let first = http::post(&write_url(&proxy, &db, ""), &[], b"ord v=1 5\n");
    assert_eq!(first.status, 204, "{}", first.body);
    // The same point again, inside a large body that arrives in pieces.
    let mut body: String = (0..20_000)
        .map(|i| format!("pad v={i} {}\n", 10 + i))
        .collect();
    body.push_str("ord v=2 5\n");
    body.push_str("pad v=0 1\n");
    let mut raw = Raw::connect(proxy.addr);
    raw.post_in_pieces(&format!("/write?db={db}"), body.as_bytes(), 4);
    assert_eq!(raw.read_response().status, 204);
    // The later write wins, as it does against InfluxDB directly; it would
    // not if the first write's batch left after the second's.
    let value = || servers.a.points(&db, "ord").first().map(|p| p.1);
    eventually(LANDING_TIMEOUT, "ord to hold the second value", || {
        (value() == Some(2.0)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(600)); // past the flush interval
    assert_eq!(value(), Some(2.0));
    let metrics = http::get(&proxy.url("/metrics")).body;
    assert!(metric(&metrics, "fluxgate_lines_ingested_early_total").unwrap() > 0.0);
}

#[test]
fn a_large_body_shared_with_an_idle_worker_lands_whole_and_in_order() {
    let servers = backends();
    let db = unique("shared");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "workers = 2",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\", \"b\"]",
        ),
    );
    // The same points twice, the second time with another value: the
    // second half of the body (about where the shared piece starts) must
    // win everywhere, as it does against InfluxDB directly. It would not if
    // the piece's batches left before the first half's.
    const POINTS: usize = 15_000;
    let body = |measurement: &str| -> String {
        let half = |v: u32| -> String {
            (0..POINTS)
                .map(|i| format!("{measurement},host=h{} v={v} {}\n", i % 20, i + 1))
                .collect()
        };
        half(1) + &half(2)
    };
    assert!(
        body("shared0").len() > 512 << 10,
        "a body large enough to be shared"
    );
    let shared = || {
        let metrics = http::get(&proxy.url("/metrics")).body;
        metric(&metrics, "fluxgate_lines_shared_total").expect("fluxgate_lines_shared_total")
    };
    // The other worker takes the piece if it wakes before the first half is
    // done; a body or two more where it did not, each to a measurement of
    // its own.
    let measurement = (0..20)
        .map(|n| format!("shared{n}"))
        .find(|measurement| {
            let reply = http::post(
                &write_url(&proxy, &db, ""),
                &[],
                body(measurement).as_bytes(),
            );
            assert_eq!(reply.status, 204, "{}", reply.body);
            shared() > 0.0
        })
        .expect("a piece shared in 20 writes");
    // Acks are durable (the default): once answered, every point is on
    // both backends, the shared piece's included.
    for server in [&servers.a, &servers.b] {
        assert_eq!(server.count(&db, &measurement), POINTS as u64);
        let points = server.points(&db, &measurement);
        let first_values = points.iter().filter(|(_, v)| *v != 2.0).count();
        assert_eq!(first_values, 0, "points holding the first half's value");
    }
}

#[test]
fn chunked_and_expect_continue_requests_work() {
    let servers = backends();
    let db = unique("framing");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    let mut raw = Raw::connect(proxy.addr);

    // Chunked, split across several chunks mid-line.
    let lines = "chunked v=1 1\nchunked v=2 2\nchunked v=3 3\n";
    let (one, two) = lines.split_at(17);
    raw.send(
        format!(
            "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\n\r\n",
            one.len(),
            two.len()
        )
        .as_bytes(),
    );
    let reply = raw.read_response();
    assert_eq!(reply.status, 204, "{}", reply.body);

    // Expect: 100-continue on the same kept-alive connection.
    let body = "continued v=1 1\ncontinued v=2 2\n";
    raw.send(
        format!(
            "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(raw.read_response().status, 100);
    raw.send(body.as_bytes());
    assert_eq!(raw.read_response().status, 204);

    // Two pipelined requests in one send.
    let one = "piped v=1 1\n";
    let request = format!(
        "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{one}",
        one.len()
    );
    raw.send(format!("{request}{request}").as_bytes());
    assert_eq!(raw.read_response().status, 204);
    assert_eq!(raw.read_response().status, 204);

    assert_count("chunked", 3, || servers.a.count(&db, "chunked"));
    assert_count("continued", 2, || servers.a.count(&db, "continued"));
    assert_count("piped", 1, || servers.a.count(&db, "piped"));
}

#[test]
fn malformed_lines_are_rejected_while_the_good_lines_land() {
    let servers = backends();
    let db = unique("partial");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\", \"b\"]",
        ),
    );
    let body = "good v=1 1\ngood v= 2\n# a comment\ngood v=3 3\ngood,tag v=4 4\ngood v=5 5\n";
    let reply = http::post(&write_url(&proxy, &db, ""), &[], body.as_bytes());
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(
        reply.error(),
        "partial write: unable to parse 'good v= 2': missing field value (line 2)\n\
         unable to parse 'good,tag v=4 4': missing tag value (line 5) dropped=2"
    );
    assert_count("good on a", 3, || servers.a.count(&db, "good"));
    assert_count("good on b", 3, || servers.b.count(&db, "good"));

    // Every line bad: InfluxDB's plain "unable to parse", nothing written.
    let reply = http::post(&write_url(&proxy, &db, ""), &[], b"bad\n");
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.error(),
        "unable to parse 'bad': missing fields (line 1)"
    );
}

#[test]
fn bad_requests_get_clear_errors() {
    let servers = backends();
    let db = unique("bad");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "max_body_bytes = \"64KiB\"\nmax_decompressed_bytes = \"128KiB\"",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );

    // Missing db.
    let reply = http::post(&proxy.url("/write"), &[], b"m v=1 1\n");
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "database is required")
    );
    // Bad precision.
    let reply = http::post(
        &write_url(&proxy, &db, "&precision=fortnight"),
        &[],
        b"m v=1 1\n",
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().starts_with("invalid precision"),
        "{}",
        reply.body
    );
    // Broken gzip.
    let mut broken = http::gzip(b"m v=1 1\n");
    let middle = broken.len() / 2;
    broken[middle] ^= 0xff;
    let reply = http::post(
        &write_url(&proxy, &db, ""),
        &[("Content-Encoding", "gzip")],
        &broken,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.error().contains("gzip"), "{}", reply.body);
    // Not gzip at all.
    let reply = http::post(
        &write_url(&proxy, &db, ""),
        &[("Content-Encoding", "gzip")],
        b"m v=1 1\n",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    // Body over the limit, and exactly at it.
    let line = "m v=1 1\n";
    let at_limit = line.repeat(64 * 1024 / line.len());
    let reply = http::post(&write_url(&proxy, &db, ""), &[], at_limit.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.body);
    let over = "x".repeat(64 * 1024 + 1);
    let reply = http::post(&write_url(&proxy, &db, ""), &[], over.as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.body);
    // A gzip bomb: small on the wire, over max_decompressed_bytes inflated.
    let bomb = http::gzip(line.repeat(200 * 1024 / line.len()).as_bytes());
    assert!(bomb.len() < 64 * 1024);
    let reply = http::post(
        &write_url(&proxy, &db, ""),
        &[("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    // Unsupported encoding.
    let reply = http::post(
        &write_url(&proxy, &db, ""),
        &[("Content-Encoding", "br")],
        b"m v=1 1\n",
    );
    assert_eq!(reply.status, 415, "{}", reply.body);
    // Wrong method.
    assert_eq!(http::get(&write_url(&proxy, &db, "")).status, 405);

    // Only the at-limit body was written, once.
    assert_count("m", 1, || servers.a.count(&db, "m"));
    // And the proxy still serves.
    assert_eq!(http::get(&proxy.url("/ping")).status, 204);
}

#[test]
fn a_stalled_client_is_timed_out() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "read_timeout = \"300ms\"",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    let mut raw = Raw::connect(proxy.addr);
    raw.send(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial");
    let reply = raw.read_response();
    assert_eq!(reply.status, 408);
    assert!(raw.is_closed());
}

#[test]
fn a_client_trickling_bytes_is_timed_out_by_the_request_deadline() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "read_timeout = \"5s\"\nrequest_timeout = \"1s\"",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .write_all(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    // A byte every 200 ms never trips the 5 s read timeout, but the whole
    // request is due 1 s after it started.
    let mut trickle = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..50 {
            if trickle.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    drop(stream);
    sender.join().unwrap();
}

#[test]
fn both_io_drivers_serve_plain_gzip_and_chunked_writes() {
    let servers = backends();
    let db = unique("drivers");
    servers.create_database(&db);
    for driver in ["epoll", "io_uring"] {
        let proxy = Fluxgate::start(
            &format!("driver = \"{driver}\"\nworkers = 2"),
            &two_backend_config(
                servers.a.http_port,
                servers.b.http_port,
                "_default_ = [\"a\", \"b\"]",
            ),
        );
        assert!(
            proxy.log().contains(&format!("driver=\"{driver}\"")),
            "{}",
            proxy.log()
        );
        let measurement = format!("on_{driver}");
        let line = |i: usize| format!("{measurement} v={i} {i}\n");
        let reply = http::post(
            &write_url(&proxy, &db, ""),
            &[],
            (0..10).map(line).collect::<String>().as_bytes(),
        );
        assert_eq!(reply.status, 204, "{driver}: {}", reply.body);
        let gzipped = http::gzip((10..20).map(line).collect::<String>().as_bytes());
        let reply = http::post(
            &write_url(&proxy, &db, ""),
            &[("Content-Encoding", "gzip")],
            &gzipped,
        );
        assert_eq!(reply.status, 204, "{driver}: {}", reply.body);
        let mut raw = Raw::connect(proxy.addr);
        let body: String = (20..30).map(line).collect();
        raw.send(
            format!(
                "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(raw.read_response().status, 204, "{driver}");
        assert_count(&format!("{measurement} on a"), 30, || {
            servers.a.count(&db, &measurement)
        });
        assert_count(&format!("{measurement} on b"), 30, || {
            servers.b.count(&db, &measurement)
        });
    }
}

#[test]
fn clients_beyond_max_connections_wait_until_one_leaves() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "workers = 1\nmax_connections = 2",
        &two_backend_config(
            servers.a.http_port,
            servers.b.http_port,
            "_default_ = [\"a\"]",
        ),
    );
    let ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = Raw::connect(proxy.addr);
    first.send(ping);
    assert_eq!(first.read_response().status, 204);
    let mut second = Raw::connect(proxy.addr);
    second.send(ping);
    assert_eq!(second.read_response().status, 204);
    // The third connects (the kernel's backlog) but is not served...
    let mut third = std::net::TcpStream::connect(proxy.addr).unwrap();
    std::io::Write::write_all(&mut third, ping).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = std::io::Read::read(&mut third, &mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served beyond max_connections: {waited:?}"
    );
    // ...until one of the first two leaves.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = std::io::Read::read(&mut third, &mut byte).unwrap();
    assert_eq!((n, byte[0]), (1, b'H'));
}

/// A database on a stopped server, and a proxy in front of it whose queue
/// fills at once: one line per batch, one batch of queue.
fn proxy_of_a_stopped_backend(db_prefix: &str) -> (crate::harness::Influxd, String, Fluxgate) {
    let mut server = crate::harness::Influxd::start();
    let db = unique(db_prefix);
    server.create_database(&db);
    let proxy = Fluxgate::start(
        "workers = 1",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n\
             [write]\nack = \"accepted\"\nflush_interval = \"10ms\"\nmax_batch_bytes = 24\nqueue_batches = 1\n\
             queue_timeout = \"25s\"\nmax_retry_backoff = \"100ms\"\n",
            server.http_port
        ),
    );
    server.stop();
    (server, db, proxy)
}

/// Writes waiting in line for room in the writer queues.
fn writes_waiting(proxy: &Fluxgate) -> u64 {
    let metrics = http::get(&proxy.url("/metrics")).body;
    metric(&metrics, "fluxgate_writes_waiting").expect("writes_waiting in /metrics") as u64
}

/// Writes points of `measurement`, each from a client of its own, until one
/// waits in line. `lines_before` is what the proxy received before. The
/// clients return their statuses.
fn write_until_one_waits(
    proxy: &Fluxgate,
    db: &str,
    measurement: &str,
    lines_before: u64,
) -> Vec<std::thread::JoinHandle<u16>> {
    let url = proxy.url(&format!("/write?db={db}&precision=s"));
    let mut clients = Vec::new();
    for n in 1.. {
        let (url, line) = (url.clone(), format!("{measurement} v={n} {n}\n"));
        clients.push(std::thread::spawn(move || {
            http::post(&url, &[], line.as_bytes()).status
        }));
        // Each write is taken in (answered, or waiting for its acks) or waits in line.
        let someone_waits = eventually(LANDING_TIMEOUT, "the write to be taken or to wait", || {
            let waiting = writes_waiting(proxy);
            (lines_received(proxy) + waiting == lines_before + n).then_some(waiting > 0)
        });
        if someone_waits {
            return clients;
        }
    }
    unreachable!("the loop returns")
}

fn lines_received(proxy: &Fluxgate) -> u64 {
    let metrics = http::get(&proxy.url("/metrics")).body;
    metric(&metrics, "fluxgate_lines_received_total").expect("lines_received in /metrics") as u64
}

/// Sends the head of a write with `Expect: 100-continue`, keeping its body.
fn ask_to_write(proxy: &Fluxgate, db: &str, body: &str) -> Raw {
    let mut raw = Raw::connect(proxy.addr);
    raw.send(
        format!(
            "POST /write?db={db}&precision=s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    raw
}

#[test]
fn writes_pushed_back_by_a_full_queue_wait_without_their_bodies_and_land_once_it_drains() {
    let (mut server, db, proxy) = proxy_of_a_stopped_backend("pushed_back");
    let metrics = || http::get(&proxy.url("/metrics")).body;
    let waiting = || writes_waiting(&proxy);
    let body = |n: u64| format!("pushed v={n} {n}\n");
    const CLIENTS: u64 = 30;
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let url = proxy.url(&format!("/write?db={db}&precision=s"));
    let mut clients = Vec::new();
    for n in 1..=CLIENTS {
        let (url, answers) = (url.clone(), answered.clone());
        clients.push(std::thread::spawn(move || {
            let reply = http::post(&url, &[], body(n).as_bytes());
            answers.lock().unwrap().push((n, reply.status));
        }));
        // Each client is answered or waits in line before the next comes.
        eventually(
            LANDING_TIMEOUT,
            "the write to be answered or to wait",
            || (answered.lock().unwrap().len() as u64 + waiting() == n).then_some(()),
        );
    }
    let in_line = waiting();
    let answers = answered.lock().unwrap().clone();
    assert!(
        in_line >= CLIENTS / 2,
        "{in_line} of {CLIENTS} writes wait; answered {answers:?}"
    );
    assert!(answers.iter().all(|&(_, status)| status == 204));
    // The waiting writes' bodies are not read: only the answered ones' were...
    let answered_bytes: usize = answers.iter().map(|&(n, _)| body(n).len()).sum();
    assert_eq!(
        metric(&metrics(), "fluxgate_bytes_received_total"),
        Some(answered_bytes as f64)
    );
    // ...and a client that asks before sending its body is not asked for it yet.
    let late = body(CLIENTS + 1);
    let mut asking = ask_to_write(&proxy, &db, &late);
    eventually(LANDING_TIMEOUT, "the asking write to wait in line", || {
        (waiting() == in_line + 1).then_some(())
    });
    assert!(
        asking.has_nothing_to_read(),
        "100 Continue sent while the queues are full"
    );

    // Once the backend is back, every waiting write gets its turn.
    server.restart();
    assert_eq!(asking.read_response().status, 100);
    asking.send(late.as_bytes());
    assert_eq!(asking.read_response().status, 204);
    for client in clients {
        client.join().unwrap();
    }
    let statuses: Vec<u16> = answered.lock().unwrap().iter().map(|&(_, s)| s).collect();
    assert_eq!(statuses, vec![204; CLIENTS as usize]);
    assert_eq!(waiting(), 0);
    assert_count("every write's point", CLIENTS + 1, || {
        server.count(&db, "pushed")
    });
}

#[test]
fn the_line_lets_in_four_bodies_at_a_time() {
    let (mut server, db, proxy) = proxy_of_a_stopped_backend("four_at_a_time");
    let fillers = write_until_one_waits(&proxy, &db, "filler", 0);
    let fillers_waiting = writes_waiting(&proxy);
    // Six clients that ask before sending their bodies join the line.
    let mut asking: Vec<Raw> = (0..6)
        .map(|i| {
            let raw = ask_to_write(&proxy, &db, &format!("asked v={i} {i}\n"));
            eventually(LANDING_TIMEOUT, "the asking write to wait", || {
                (writes_waiting(&proxy) == fillers_waiting + i + 1).then_some(())
            });
            raw
        })
        .collect();

    // With room again, the fillers land, then four asking writes are let in:
    // they hold their bodies back, and the other two wait for one of them.
    server.restart();
    for raw in &mut asking[..4] {
        assert_eq!(raw.read_response().status, 100);
    }
    eventually(LANDING_TIMEOUT, "the fillers to be answered", || {
        fillers.iter().all(|f| f.is_finished()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(writes_waiting(&proxy), 2);
    assert!(asking[4].has_nothing_to_read() && asking[5].has_nothing_to_read());
    for (i, raw) in asking.iter_mut().enumerate() {
        if i >= 4 {
            assert_eq!(raw.read_response().status, 100, "asking write {i}");
        }
        raw.send(format!("asked v={i} {i}\n").as_bytes());
        assert_eq!(raw.read_response().status, 204, "asking write {i}");
    }
    for filler in fillers {
        assert_eq!(filler.join().unwrap(), 204);
    }
    assert_count("asked", 6, || server.count(&db, "asked"));
}

#[test]
fn durable_writes_waiting_for_acks_do_not_hold_the_line_back() {
    let (slow, fast) = (
        crate::harness::Influxd::start(),
        crate::harness::Influxd::start(),
    );
    let mut fast = fast;
    let db = unique("acks_and_line");
    slow.create_database(&db);
    fast.create_database(&db);
    let proxy = Fluxgate::start(
        "workers = 1",
        &format!(
            "[[backends]]\nname = \"slow\"\nurl = \"http://127.0.0.1:{}\"\ntimeout = \"2s\"\n\
             [[backends]]\nname = \"fast\"\nurl = \"http://127.0.0.1:{}\"\n\
             [routes]\nslow = [\"slow\"]\nfast = [\"fast\"]\n\
             [write]\nack = \"durable\"\nflush_interval = \"10ms\"\nmax_batch_bytes = 24\nqueue_batches = 3\n\
             queue_timeout = \"20s\"\nack_timeout = \"60s\"\nmax_retry_backoff = \"100ms\"\n",
            slow.http_port, fast.http_port
        ),
    );
    // Four durable writes to a server that hangs: taken in, waiting for acks
    // (its queue has room for them).
    slow.freeze();
    let url = proxy.url(&format!("/write?db={db}&precision=s"));
    let stuck: Vec<_> = (1..=4)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                http::post(&url, &[], format!("slow v={n} {n}\n").as_bytes()).status
            })
        })
        .collect();
    eventually(LANDING_TIMEOUT, "the hanging writes to be taken in", || {
        (lines_received(&proxy) == 4).then_some(())
    });
    // The other backend down fills its queue until writes wait in line.
    fast.stop();
    let fillers = write_until_one_waits(&proxy, &db, "fast", 4);
    // Back up, it takes every write in line, while the four still wait for acks.
    fast.restart();
    for filler in fillers {
        assert_eq!(filler.join().unwrap(), 204);
    }
    assert!(stuck.iter().all(|s| !s.is_finished()));
    slow.thaw();
    for write in stuck {
        assert_eq!(write.join().unwrap(), 204);
    }
    assert_count("slow", 4, || slow.count(&db, "slow"));
}

#[test]
fn writes_waiting_in_line_when_shutdown_starts_are_answered_at_once() {
    // Its queue timeout (25 s) outlasts the grace period (15 s): without an
    // answer on shutdown, a waiting write would be cut off unanswered.
    let (mut server, db, mut proxy) = proxy_of_a_stopped_backend("shutdown_line");
    let fillers = write_until_one_waits(&proxy, &db, "filler", 0);
    let fillers_waiting = writes_waiting(&proxy);
    let mut asking = ask_to_write(&proxy, &db, "asked v=1 1\n");
    eventually(LANDING_TIMEOUT, "the asking write to wait", || {
        (writes_waiting(&proxy) == fillers_waiting + 1).then_some(())
    });

    proxy.signal(libc::SIGTERM);
    let refused = asking.read_response();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("shutting down"), "{}", refused.body);
    let statuses: Vec<u16> = fillers.into_iter().map(|f| f.join().unwrap()).collect();
    let taken = statuses.iter().filter(|&&s| s == 204).count() as u64;
    assert_eq!(
        statuses[taken as usize..],
        vec![503; fillers_waiting as usize],
        "taken in, then waiting: {statuses:?}"
    );

    // What was taken in still lands in the grace period, and nothing else.
    server.restart();
    let status = proxy.stop().expect("fluxgate did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", proxy.log());
    assert_count("the points taken in", taken, || server.count(&db, "filler"));
    assert_eq!(server.count(&db, "asked"), 0);
}
