//! The sink in-process on 127.0.0.1:0, driven by loadgen's own write client and
//! by raw requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::body::{Bodies, BodyPlan};
use crate::gen::{Generator, Shape};
use crate::http::{ResponseReader, Target};
use crate::send::{self, RunPlan};
use crate::write::{write_path, WriteLoad};

const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";

fn start(listeners: usize, faults: Faults, verify: bool) -> Sink {
    let addrs = vec![LOOPBACK_ANY_PORT.parse().unwrap(); listeners];
    Sink::start(&addrs, faults, verify).unwrap()
}

/// Sends one raw request on a new connection; returns status and body.
fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(raw).unwrap();
    let mut reader = ResponseReader::new();
    let response = reader.read_response(&mut stream).unwrap();
    (
        response.status,
        String::from_utf8_lossy(response.body).into_owned(),
    )
}

fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    request(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn post(addr: SocketAddr, target: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    request(addr, &[head.as_bytes(), body].concat())
}

/// Runs loadgen's write client: `requests` bodies of `batch` lines to `addr`.
fn write_with_client(
    addr: SocketAddr,
    generator: &Generator,
    requests: u64,
    batch: usize,
    gzip: bool,
) {
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let plan = BodyPlan {
        batch_lines: batch,
        requests_needed: Some(requests),
        last_request_lines: None,
        gzip,
    };
    let bodies = Bodies::build(generator, plan).unwrap();
    let load = WriteLoad {
        target: &target,
        path: write_path("loadgen", "ns"),
        generator,
        bodies: &bodies,
        gzip,
    };
    let run = RunPlan {
        connections: 2,
        max_requests: Some(requests),
        duration: None,
        rate: None,
    };
    let (threads, _) = send::run(&target, &load, run);
    let ok: u64 = threads.iter().map(|t| t.requests_ok).sum();
    assert_eq!(ok, requests, "every write answered 2xx");
}

#[track_caller]
fn assert_has(json: &str, wants: &[&str]) {
    for want in wants {
        assert!(json.contains(want), "missing {want} in\n{json}");
    }
}

/// The JSON object of one listener in a `/stats` document.
fn listener_json(stats: &str, addr: SocketAddr) -> String {
    let start = stats.find(&format!("\"{addr}\":")).unwrap();
    let end = stats[start..].find("}}").unwrap();
    stats[start..start + end + 2].to_owned()
}

#[test]
fn write_client_points_are_counted_per_listener_db_and_measurement() {
    let sink = start(2, Faults::none(), true);
    let [a, b] = sink.addrs()[..] else { panic!() };
    let target = Target::parse(&format!("http://{a}")).unwrap();
    send::check_reachable(&target).unwrap();
    send::create_database(&target, "loadgen").unwrap();
    let generator = Generator::new(Shape {
        hosts: 10,
        measurements: 2,
        seed: 5,
        ns_per_unit: 1,
        sorted_tags: false,
    });

    write_with_client(a, &generator, 6, 100, false);
    write_with_client(b, &generator, 3, 100, true);
    let stats = sink.stats_json();
    assert_has(
        &listener_json(&stats, a),
        &[
            "\"requests\":7,", // CREATE DATABASE and six writes
            "\"writes\":6,",
            "\"points\":600,",
            "\"duplicates\":0,",
            "\"points_by_db\":{\"loadgen\":{\"cpu\":300,\"cpu_1\":300}}",
        ],
    );
    assert_has(
        &listener_json(&stats, b),
        &["\"writes\":3,", "\"points\":300,", "\"duplicates\":0,"],
    );
    assert_has(
        &stats,
        &["\"total\":{\"port\":0,\"requests\":10,\"writes\":9,\"points\":900,"],
    );

    // The same six bodies again: every point is a duplicate.
    write_with_client(a, &generator, 6, 100, false);
    assert_has(
        &listener_json(&sink.stats_json(), a),
        &["\"points\":1200,", "\"duplicates\":600,"],
    );

    let last = sink.stop();
    assert_has(&last, &["\"points\":1200,"]);
}

#[test]
fn sink_answers_like_influxdb() {
    let sink = start(1, Faults::none(), false);
    let addr = sink.addrs()[0];

    // /ping carries the version header; HEAD too.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"HEAD /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 204 No Content\r\n"), "{raw}");
    assert!(raw.contains("X-Influxdb-Version: 1.8.10\r\n"), "{raw}");
    assert_eq!(get(addr, "/ping").0, 204);

    // Writes: missing db, plain, chunked gzip, broken gzip.
    assert_eq!(
        post(addr, "/write", "", b"cpu v=1 1\n"),
        (400, "{\"error\":\"database is required\"}".to_owned())
    );
    assert_eq!(
        post(
            addr,
            "/write?db=a&precision=s",
            "",
            b"cpu v=1 1\n# c\n\nmem v=2 2\n"
        )
        .0,
        204
    );
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let plain = b"disk,path=/ v=1 1\r\ndisk,path=/ v=2 2\r\n";
    let mut gz = vec![0; compressor.gzip_compress_bound(plain.len())];
    let len = compressor.gzip_compress(plain, &mut gz).unwrap();
    gz.truncate(len);
    let (first, rest) = gz.split_at(10);
    let chunked = [
        &b"POST /write?db=my%20db HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"[..],
        format!("{:x}\r\n", first.len()).as_bytes(),
        first,
        b"\r\n",
        format!("{:x}\r\n", rest.len()).as_bytes(),
        rest,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    assert_eq!(request(addr, &chunked).0, 204);
    let (status, body) = post(
        addr,
        "/write?db=a",
        "Content-Encoding: gzip\r\n",
        b"not gzip",
    );
    assert_eq!(status, 400, "{body}");

    // Queries: only CREATE DATABASE, from the URL or a form body.
    assert_eq!(
        get(addr, "/query?q=CREATE+DATABASE+x%3B+create+database+y"),
        (
            200,
            "{\"results\":[{\"statement_id\":0},{\"statement_id\":1}]}".to_owned()
        )
    );
    assert_eq!(
        post(
            addr,
            "/query",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            b"q=CREATE%20DATABASE%20z"
        )
        .0,
        200
    );
    assert_eq!(get(addr, "/query?q=SELECT+1").0, 404);
    assert_eq!(get(addr, "/query").0, 400);
    assert_eq!(get(addr, "/nope").0, 404);

    let stats = sink.stats_json();
    assert_has(
        &stats,
        &[
            "\"points\":4,",
            "\"points_by_db\":{\"a\":{\"cpu\":1,\"mem\":1},\"my db\":{\"disk\":2}}",
            "\"client_errors\":5,", // missing db, bad gzip, SELECT, no q, /nope
            "\"duplicates\":null,",
        ],
    );
    assert_eq!(post(addr, "/stats/reset", "", b"").0, 204);
    assert_has(
        &get(addr, "/stats").1,
        &["\"requests\":0,", "\"points\":0,", "\"points_by_db\":{}"],
    );
    sink.stop();
}

#[test]
fn injected_failures_are_answered_500_and_not_counted() {
    let faults = Faults {
        fail_ratio: 0.5,
        seed: 9,
        delay: Some(Duration::from_millis(1)),
        ..Faults::none()
    };
    let sink = start(1, faults, false);
    let addr = sink.addrs()[0];
    let statuses: Vec<u16> = (0..40)
        .map(|_| post(addr, "/write?db=a", "", b"cpu v=1\ncpu v=2\n").0)
        .collect();
    let expected: Vec<u16> = (0..40)
        .map(|n| if faults.fails(0, n) { 500 } else { 204 })
        .collect();
    assert_eq!(statuses, expected);
    let failed = expected.iter().filter(|&&s| s == 500).count();
    assert!(failed > 0 && failed < 40);
    assert_has(
        &sink.stop(),
        &[
            &format!("\"failures_injected\":{failed},"),
            &format!("\"points\":{},", 2 * (40 - failed)),
        ],
    );
}

#[test]
fn outage_answers_503_or_refuses_then_recovers() {
    let outage = |down_mode| Faults {
        down_for: Some(Duration::from_millis(300)),
        down_mode,
        ..Faults::none()
    };
    let sink = start(1, outage(DownMode::Unavailable), false);
    let addr = sink.addrs()[0];
    assert_eq!(get(addr, "/ping").0, 503);
    assert_eq!(get(addr, "/stats").0, 200, "stats stay readable");
    wait_for_ping(addr);
    let stats = sink.stop();
    assert!(!stats.contains("\"outage_rejected\":0,"), "{stats}");

    let sink = start(1, outage(DownMode::Close), false);
    let addr = sink.addrs()[0];
    // Refused, or accepted just before the socket closed and then dropped.
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.write_all(b"GET /ping HTTP/1.1\r\n\r\n");
        assert!(ResponseReader::new().read_response(&mut stream).is_err());
    }
    wait_for_ping(addr);
    sink.stop();
}

/// Polls `/ping` until it answers 204, for at most a few seconds.
fn wait_for_ping(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answered = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.write_all(b"GET /ping HTTP/1.1\r\n\r\n").ok()?;
            Some(ResponseReader::new().read_response(&mut s).ok()?.status)
        });
        if answered == Some(204) {
            return;
        }
        assert!(Instant::now() < deadline, "sink did not come back");
        thread::sleep(Duration::from_millis(20));
    }
}
