//! `/metrics` and `/debug/latency` on a real fluxgate writing to real InfluxDB.

use std::time::Duration;

use crate::harness::http::{self, Raw};
use crate::harness::{backends, eventually, metric, unique, Fluxgate};

#[test]
fn metrics_count_requests_lines_and_backend_writes() {
    let servers = backends();
    let db = unique("metrics");
    servers.create_database(&db);
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{}\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\nsolo = [\"a\"]\n[write]\nflush_interval = \"10ms\"\n",
        servers.a.http_port, servers.b.http_port
    );
    let proxy = Fluxgate::start("workers = 2", &config);
    let write = |body: &str| {
        http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes()).status
    };
    assert_eq!(write("m v=1 1\nm v=2 2\nsolo v=1 1\n"), 204);
    assert_eq!(write("m v=3 3\nbroken\n"), 400);
    eventually(
        Duration::from_secs(30),
        "points written to both backends",
        || {
            let metrics = http::get(&proxy.url("/metrics")).body;
            let a = metric(
                &metrics,
                "fluxgate_backend_points_written_total{backend=\"a\"}",
            )?;
            let b = metric(
                &metrics,
                "fluxgate_backend_points_written_total{backend=\"b\"}",
            )?;
            (a == 4.0 && b == 3.0).then_some(())
        },
    );
    let reply = http::get(&proxy.url("/metrics"));
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    let metrics = reply.body;
    for (prefix, expected) in [
        (
            "fluxgate_http_requests_total{endpoint=\"write\",status=\"204\"}",
            1.0,
        ),
        (
            "fluxgate_http_requests_total{endpoint=\"write\",status=\"400\"}",
            1.0,
        ),
        ("fluxgate_lines_received_total", 5.0),
        ("fluxgate_lines_invalid_total", 1.0),
        ("fluxgate_backend_up{backend=\"a\"}", 1.0),
        ("fluxgate_backend_points_rejected_total{backend=\"b\"}", 0.0),
        ("fluxgate_backend_queue_batches{backend=\"a\"}", 0.0),
    ] {
        assert_eq!(
            metric(&metrics, prefix),
            Some(expected),
            "{prefix} in\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE fluxgate_backend_retries_total counter"));
    // Batch sizes: every batch (of at most 3 points here) in the buckets up
    // from le="10", and as many as the batches counted, their points summed.
    assert!(metrics.contains("# TYPE fluxgate_backend_batch_points histogram"));
    for (backend, points) in [("a", 4.0), ("b", 3.0)] {
        let read = |name: &str| {
            let prefix = format!("fluxgate_backend_{name}");
            metric(&metrics, &prefix).unwrap_or_else(|| panic!("{prefix} in\n{metrics}"))
        };
        let batches = read(&format!("batches_written_total{{backend=\"{backend}\"}}"));
        assert!(batches >= 1.0, "{metrics}");
        for (name, expected) in [
            (format!("batch_points_sum{{backend=\"{backend}\"}}"), points),
            (
                format!("batch_points_count{{backend=\"{backend}\"}}"),
                batches,
            ),
            (
                format!("batch_points_bucket{{backend=\"{backend}\",le=\"+Inf\"}}"),
                batches,
            ),
            (
                format!("batch_points_bucket{{backend=\"{backend}\",le=\"10\"}}"),
                batches,
            ),
        ] {
            assert_eq!(read(&name), expected, "{name} in\n{metrics}");
        }
        // le="1" holds the one-point batches: all of them only when there
        // are as many batches as points.
        let single = read(&format!(
            "batch_points_bucket{{backend=\"{backend}\",le=\"1\"}}"
        ));
        assert_eq!(single == batches, points == batches, "{metrics}");
    }

    // A client holding its answer finds the request counted, whichever worker
    // answers the scrape.
    for expected in 2..=40 {
        assert_eq!(write("broken\n"), 400);
        let metrics = http::get(&proxy.url("/metrics")).body;
        assert_eq!(
            metric(
                &metrics,
                "fluxgate_http_requests_total{endpoint=\"write\",status=\"400\"}"
            ),
            Some(f64::from(expected)),
            "{metrics}"
        );
    }

    // Requests refused before their handler are counted too: by the path
    // their request line names, or as "other" when it names none.
    for (request, status) in [
        (
            format!("POST /write?db={db} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
            413,
        ),
        (
            format!("POST /write?db={db} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400,
        ),
        ("HELLO\r\n\r\n".to_owned(), 400),
    ] {
        let mut raw = Raw::connect(proxy.addr);
        raw.send(request.as_bytes());
        assert_eq!(raw.read_response().status, status, "{request:?}");
    }
    let metrics = http::get(&proxy.url("/metrics")).body;
    for (prefix, expected) in [
        (
            "fluxgate_http_requests_total{endpoint=\"write\",status=\"413\"}",
            1.0,
        ),
        (
            "fluxgate_http_requests_total{endpoint=\"write\",status=\"400\"}",
            41.0,
        ),
        (
            "fluxgate_http_requests_total{endpoint=\"other\",status=\"400\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            metric(&metrics, prefix),
            Some(expected),
            "{prefix} in\n{metrics}"
        );
    }
}

#[test]
fn latency_endpoint_reports_percentiles_hgrm_and_resets() {
    let servers = backends();
    let db = unique("latency");
    servers.create_database(&db);
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n[write]\nflush_interval = \"10ms\"\n",
        servers.a.http_port
    );
    let proxy = Fluxgate::start("workers = 2", &config);
    for i in 0..20 {
        let reply = http::post(
            &proxy.url(&format!("/write?db={db}")),
            &[],
            format!("lat v={i} {i}\n").as_bytes(),
        );
        assert_eq!(reply.status, 204);
    }
    let report = eventually(
        Duration::from_secs(30),
        "a backend round trip to be recorded",
        || {
            let reply = http::get(&proxy.url("/debug/latency"));
            let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            (json["backends"]["a"]["count"].as_u64() > Some(0)).then_some(json)
        },
    );
    assert_eq!(report["unit"], "us");
    let write = &report["endpoints"]["write"];
    assert_eq!(write["count"], 20, "{report}");
    let (p50, p99, max) = (
        write["p50"].as_u64().unwrap(),
        write["p99"].as_u64().unwrap(),
        write["max"].as_u64().unwrap(),
    );
    assert!(p50 >= 1 && p50 <= p99 && p99 <= max, "{write}");

    let hgrm = http::get(&proxy.url("/debug/latency?format=hgrm")).body;
    assert!(hgrm.contains("# endpoint write (microseconds)"), "{hgrm}");
    assert!(hgrm.contains("Percentile"));
    assert!(hgrm.contains("Total count    =           20]"), "{hgrm}");

    let before_reset = http::get(&proxy.url("/debug/latency?reset=true")).body;
    assert!(
        before_reset.contains("\"write\":{\"count\":20,"),
        "{before_reset}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&http::get(&proxy.url("/debug/latency")).body).unwrap();
    assert_eq!(after["endpoints"]["write"]["count"], 0, "{after}");
}

#[test]
fn status_shows_each_backend_as_json_and_as_a_table() {
    let servers = backends();
    let nothing_listens = crate::harness::free_port();
    let config = format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[[backends]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{nothing_listens}\"\n\
         check_interval = \"50ms\"\n[routes]\n_default_ = [\"a\"]\n",
        servers.a.http_port
    );
    let proxy = Fluxgate::start("", &config);
    let status: serde_json::Value = eventually(
        Duration::from_secs(30),
        "the dead backend to be marked down",
        || {
            let status: serde_json::Value =
                serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
            (status["backends"][1]["up"] == false).then_some(status)
        },
    );
    assert_eq!(status["backends"][0]["name"], "a");
    assert_eq!(status["backends"][0]["up"], true);
    assert_eq!(status["config"]["ack"], "durable");
    assert!(
        status["backends"][1]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{status}"
    );

    let output = std::process::Command::new(Fluxgate::binary())
        .args(["status", "--url", &proxy.url("")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("BACKEND") && table.contains("LAST ERROR"),
        "{table}"
    );
    let gone = table
        .lines()
        .find(|l| l.starts_with("gone"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(gone.contains("DOWN") && gone.contains("refused"), "{table}");
    // A proxy that is not there: a clear error, exit 1.
    let (exit, stderr) = Fluxgate::run(&[
        "status",
        "--url",
        &format!("http://127.0.0.1:{nothing_listens}"),
    ]);
    assert!(!exit.success());
    assert!(stderr.contains("cannot reach fluxgate"), "{stderr}");
}
