//! `/query` through a real fluxgate in front of real InfluxDB servers, with
//! hand-made requests, the `influx` CLI and the Python `influxdb` client.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::harness::http;
use crate::harness::{backends, eventually, unique, Fluxgate, Influxd};

/// cpu lives on a only, mem on b only, everything else on both.
fn config(a: u16, b: u16, extra: &str) -> String {
    format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\ncheck_interval = \"100ms\"\ntimeout = \"2s\"\n\
         [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\ncheck_interval = \"100ms\"\ntimeout = \"2s\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\ncpu = [\"a\"]\nmem = [\"b\"]\n{extra}\n"
    )
}

/// GET /query with `params`; status and body.
fn query(proxy: &Fluxgate, params: &[(&str, &str)], headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = ureq::get(&proxy.url("/query")).timeout(Duration::from_secs(30));
    for (key, value) in params {
        request = request.query(key, value);
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.call() {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(e) => panic!("query failed: {e}"),
    }
}

fn json_query(proxy: &Fluxgate, db: &str, q: &str) -> Value {
    let (status, body) = query(proxy, &[("db", db), ("q", q)], &[]);
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: not JSON ({e}): {body}"))
}

/// Writes `cpu`, `mem` and `disk` points (10 each, v = 0..9, at t = 1..10 s).
fn write_fixture(proxy: &Fluxgate, db: &str) {
    let mut body = String::new();
    for i in 0..10 {
        for (m, host) in [("cpu", "h1"), ("mem", "h2"), ("disk", "h3")] {
            body.push_str(&format!("{m},host={host} v={i} {}\n", i + 1));
        }
    }
    let reply = http::post(
        &proxy.url(&format!("/write?db={db}&precision=s")),
        &[],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
}

fn series_names(result: &Value) -> Vec<String> {
    result["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn statements_are_routed_fanned_out_and_merged() {
    let servers = backends();
    let db = unique("query");
    let proxy = Fluxgate::start(
        "workers = 2",
        &config(servers.a.http_port, servers.b.http_port, ""),
    );
    // CREATE DATABASE goes to every backend.
    let created = json_query(&proxy, "", &format!("CREATE DATABASE \"{db}\""));
    assert_eq!(created, json!({"results": [{"statement_id": 0}]}));
    assert!(servers
        .a
        .query("", "SHOW DATABASES")
        .to_string()
        .contains(&db));
    assert!(servers
        .b
        .query("", "SHOW DATABASES")
        .to_string()
        .contains(&db));
    write_fixture(&proxy, &db);

    // One set: the whole answer comes from the one backend that has the data.
    let one = json_query(&proxy, &db, "SELECT count(v) FROM cpu");
    assert_eq!(one["results"][0]["series"][0]["values"][0][1], 10, "{one}");
    let one = json_query(&proxy, &db, "SELECT sum(v) FROM mem");
    assert_eq!(
        one["results"][0]["series"][0]["values"][0][1], 45.0,
        "{one}"
    );
    // Several sets: fanned out, merged, series sorted by name.
    let both = json_query(&proxy, &db, "SELECT count(v) FROM cpu, mem");
    assert_eq!(series_names(&both["results"][0]), ["cpu", "mem"], "{both}");
    let regex = json_query(&proxy, &db, "SELECT count(v) FROM /.*/");
    assert_eq!(
        series_names(&regex["results"][0]),
        ["cpu", "disk", "mem"],
        "{regex}"
    );
    for series in regex["results"][0]["series"].as_array().unwrap() {
        assert_eq!(series["values"][0][1], 10, "{regex}");
    }
    // SHOW statements: unioned and de-duplicated.
    let measurements = json_query(&proxy, &db, "SHOW MEASUREMENTS");
    assert_eq!(
        measurements["results"][0]["series"][0]["values"],
        json!([["cpu"], ["disk"], ["mem"]]),
        "{measurements}"
    );
    let tag_keys = json_query(&proxy, &db, "SHOW TAG KEYS");
    assert_eq!(
        series_names(&tag_keys["results"][0]),
        ["cpu", "disk", "mem"],
        "{tag_keys}"
    );
    let databases = json_query(&proxy, &db, "SHOW DATABASES");
    let names = databases["results"][0]["series"][0]["values"].to_string();
    assert_eq!(
        names.matches(&format!("\"{db}\"")).count(),
        1,
        "{databases}"
    );
    // Several statements, numbered, each routed on its own.
    let multi = json_query(
        &proxy,
        &db,
        "SELECT count(v) FROM cpu; SELECT count(v) FROM mem; SHOW MEASUREMENTS",
    );
    let results = multi["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["statement_id"], i, "{multi}");
    }
    assert_eq!(series_names(&results[0]), ["cpu"]);
    assert_eq!(series_names(&results[1]), ["mem"]);
    // Errors in InfluxDB's shape.
    let (status, body) = query(&proxy, &[("db", &db), ("q", "SELEC nonsense")], &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("error parsing query"), "{body}");
    let (status, body) = query(&proxy, &[("db", &db)], &[]);
    assert_eq!(
        (status, body.trim()),
        (400, "{\"error\":\"missing required parameter \\\"q\\\"\"}")
    );
    // Strings and comments never route: 'mem' is a value here, not a measurement.
    let tricky = json_query(
        &proxy,
        &db,
        "SELECT count(v) FROM cpu WHERE host != 'mem' -- FROM mem",
    );
    assert_eq!(series_names(&tricky["results"][0]), ["cpu"], "{tricky}");
}

#[test]
fn epoch_csv_chunked_and_post_forms_are_answered_like_influxdb() {
    let servers = backends();
    let db = unique("formats");
    servers.create_database(&db);
    let proxy = Fluxgate::start("", &config(servers.a.http_port, servers.b.http_port, ""));
    write_fixture(&proxy, &db);

    let (status, body) = query(
        &proxy,
        &[
            ("db", &db),
            ("q", "SELECT v FROM cpu LIMIT 2"),
            ("epoch", "s"),
        ],
        &[],
    );
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["results"][0]["series"][0]["values"],
        json!([[1, 0], [2, 1]]),
        "{body}"
    );
    // Without epoch: RFC3339, as InfluxDB.
    let rfc = json_query(&proxy, &db, "SELECT v FROM cpu LIMIT 1");
    assert_eq!(
        rfc["results"][0]["series"][0]["values"][0][0],
        "1970-01-01T00:00:01Z"
    );

    // CSV, straight from one backend and merged across two.
    let csv = [("Accept", "application/csv")];
    let (status, body) = query(
        &proxy,
        &[
            ("db", &db),
            ("q", "SELECT v FROM cpu LIMIT 2"),
            ("epoch", "s"),
        ],
        &csv,
    );
    assert_eq!(status, 200);
    assert_eq!(body, "name,tags,time,v\ncpu,,1,0\ncpu,,2,1\n");
    let (status, body) = query(
        &proxy,
        &[("db", &db), ("q", "SELECT count(v) FROM cpu, mem")],
        &csv,
    );
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "name,tags,time,count\ncpu,,1970-01-01T00:00:00Z,10\nmem,,1970-01-01T00:00:00Z,10\n"
    );

    // Chunked: one JSON object per chunk.
    let (status, body) = query(
        &proxy,
        &[
            ("db", &db),
            ("q", "SELECT v FROM disk"),
            ("chunked", "true"),
            ("chunk_size", "4"),
        ],
        &[],
    );
    assert_eq!(status, 200);
    let chunks: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3, "{body}");
    let rows: usize = chunks
        .iter()
        .map(|c| {
            c["results"][0]["series"][0]["values"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(rows, 10);

    // POST with a form body, as some clients send.
    let reply = http::post_form(
        &proxy.url("/query"),
        &[("db", &db), ("q", "SELECT count(v) FROM mem")],
    );
    assert_eq!(reply.status, 200);
    let json: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["results"][0]["series"][0]["values"][0][1], 10);
}

#[test]
fn admin_statements_are_refused_unless_allowed() {
    let servers = backends();
    let db = unique("admin");
    servers.create_database(&db);
    let proxy = Fluxgate::start("", &config(servers.a.http_port, servers.b.http_port, ""));
    write_fixture(&proxy, &db);
    for q in [
        "DROP MEASUREMENT disk",
        "DELETE FROM cpu",
        "DROP DATABASE x",
        "GRANT ALL TO joe",
        "SELECT * INTO copy FROM cpu",
    ] {
        let (status, body) = query(&proxy, &[("db", &db), ("q", q)], &[]);
        assert_eq!(status, 403, "{q}: {body}");
        assert!(body.contains("set query.allow_admin = true"), "{body}");
    }
    assert_eq!(servers.a.count(&db, "disk"), 10);

    let admin = Fluxgate::start(
        "",
        &config(
            servers.a.http_port,
            servers.b.http_port,
            "[query]\nallow_admin = true",
        ),
    );
    let dropped = json_query(&admin, &db, "DROP MEASUREMENT disk");
    assert_eq!(dropped, json!({"results": [{"statement_id": 0}]}));
    assert_eq!(servers.a.count(&db, "disk"), 0);
    assert_eq!(servers.b.count(&db, "disk"), 0);
}

#[test]
fn queries_are_answered_from_the_replica_while_a_backend_is_down() {
    let a = Influxd::start();
    let mut b = Influxd::start();
    let db = unique("failover");
    a.create_database(&db);
    b.create_database(&db);
    let proxy = Fluxgate::start("", &config(a.http_port, b.http_port, ""));
    write_fixture(&proxy, &db);
    let before = json_query(&proxy, &db, "SELECT sum(v) FROM disk");
    b.stop();
    // Before the proxy notices, and after: the replica on a answers.
    for _ in 0..5 {
        let during = json_query(&proxy, &db, "SELECT sum(v) FROM disk");
        assert_eq!(during, before);
    }
    let status: Value = eventually(Duration::from_secs(30), "b marked down", || {
        let status: Value = serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap();
        (status["backends"][1]["up"] == false).then_some(status)
    });
    assert_eq!(status["backends"][0]["up"], true);
    // Data only b holds: 503 with an error naming the backends, not a hang.
    let (status, body) = query(&proxy, &[("db", &db), ("q", "SELECT sum(v) FROM mem")], &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("b (down)"), "{body}");
    // A fanned-out statement with one set unreachable: the statement's error.
    let measurements = json_query(&proxy, &db, "SHOW MEASUREMENTS");
    assert!(
        measurements["results"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("b (down)"),
        "{measurements}"
    );
    assert_eq!(json_query(&proxy, &db, "SELECT sum(v) FROM disk"), before);
}

#[test]
fn backends_named_by_host_name_are_written_and_queried() {
    // Workers resolve host names on the resolver thread; writers themselves.
    let a = Influxd::start();
    let b = Influxd::start();
    let db = unique("hostnames");
    a.create_database(&db);
    b.create_database(&db);
    let config = config(a.http_port, b.http_port, "").replace("127.0.0.1", "localhost");
    assert!(config.contains("http://localhost:"), "{config}");
    let proxy = Fluxgate::start("", &config);
    write_fixture(&proxy, &db);
    // One backend, streamed; then statements across both.
    let cpu = json_query(&proxy, &db, "SELECT sum(v) FROM cpu");
    assert_eq!(cpu["results"][0]["series"][0]["values"][0][1], 45, "{cpu}");
    let measurements = json_query(&proxy, &db, "SHOW MEASUREMENTS");
    assert_eq!(
        measurements["results"][0]["series"][0]["values"],
        json!([["cpu"], ["disk"], ["mem"]]),
        "{measurements}"
    );
}

#[test]
fn timeshift_moves_the_window_back_and_the_answer_forward() {
    let servers = backends();
    let db = unique("shift");
    servers.create_database(&db);
    let proxy = Fluxgate::start("", &config(servers.a.http_port, servers.b.http_port, ""));
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Yesterday: v = 100 + minute; today: v = minute, one point a minute over the last hour.
    let mut body = String::new();
    for minute in 0..60 {
        let t = now_s - 3600 + minute * 60;
        body.push_str(&format!("load v={} {}\n", minute, t));
        body.push_str(&format!("load v={} {}\n", 100 + minute, t - 86_400));
    }
    let reply = http::post(
        &proxy.url(&format!("/write?db={db}&precision=s")),
        &[],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 204, "{}", reply.body);

    let window = format!("time >= {}s AND time < {}s", now_s - 3600, now_s);
    let shifted = json_query(
        &proxy,
        &db,
        &format!("SELECT mean(v) AS \"shift_1d\" FROM load WHERE {window} GROUP BY time(10m)"),
    );
    let yesterday = json_query(
        &proxy,
        &db,
        &format!(
            "SELECT mean(v) FROM load WHERE time >= {}s AND time < {}s GROUP BY time(10m)",
            now_s - 3600 - 86_400,
            now_s - 86_400
        ),
    );
    let today = json_query(
        &proxy,
        &db,
        &format!("SELECT mean(v) FROM load WHERE {window} GROUP BY time(10m)"),
    );
    let shifted_rows = shifted["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("{shifted}"))
        .clone();
    let yesterday_rows = yesterday["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .clone();
    let today_rows = today["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        shifted["results"][0]["series"][0]["columns"],
        json!(["time", "shift_1d"])
    );
    assert_eq!(shifted_rows.len(), yesterday_rows.len());
    for ((s, y), t) in shifted_rows.iter().zip(&yesterday_rows).zip(&today_rows) {
        // Yesterday's numbers, on today's time axis.
        assert_eq!(s[1], y[1], "{shifted}\n{yesterday}");
        assert_eq!(s[0], t[0], "{shifted}\n{today}");
    }
    assert!(shifted_rows
        .iter()
        .any(|row| row[1].as_f64().is_some_and(|v| v >= 100.0)));
}

#[test]
fn the_influx_cli_works_through_the_proxy() {
    let servers = backends();
    let db = unique("cli");
    let proxy = Fluxgate::start("", &config(servers.a.http_port, servers.b.http_port, ""));
    let influx = |args: &[&str]| -> String {
        let output = Command::new("influx")
            .args([
                "-host",
                "127.0.0.1",
                "-port",
                &proxy.addr.port().to_string(),
            ])
            .args(args)
            .output()
            .expect("influx CLI (Debian's influxdb-client; scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "influx {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    influx(&["-execute", &format!("CREATE DATABASE {db}")]);
    influx(&["-database", &db, "-execute", "INSERT cpu,host=cli v=42"]);
    influx(&["-database", &db, "-execute", "INSERT disk,host=cli v=7"]);
    let answer = influx(&[
        "-database",
        &db,
        "-format",
        "json",
        "-execute",
        "SELECT v FROM cpu; SHOW MEASUREMENTS",
    ]);
    let json: Value =
        serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(
        json["results"][0]["series"][0]["values"][0][1], 42,
        "{json}"
    );
    assert_eq!(
        json["results"][1]["series"][0]["values"],
        json!([["cpu"], ["disk"]]),
        "{json}"
    );
    let csv = influx(&[
        "-database",
        &db,
        "-format",
        "csv",
        "-execute",
        "SELECT v FROM disk",
    ]);
    assert!(csv.starts_with("name,time,v\ndisk,"), "{csv}");
    // The CLI's point went only where cpu routes.
    assert_eq!(servers.a.count(&db, "cpu"), 1);
    assert_eq!(servers.b.count(&db, "cpu"), 0);
}

#[test]
fn the_python_influxdb_client_works_through_the_proxy() {
    let servers = backends();
    let db = unique("python");
    let proxy = Fluxgate::start("", &config(servers.a.http_port, servers.b.http_port, ""));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_client.py"
    );
    let output = Command::new("python3")
        .args([script, "127.0.0.1", &proxy.addr.port().to_string(), &db])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ping"], "1.8.10");
    assert_eq!(report["cpu_points"], 100);
    assert_eq!(report["mem_sum"], 4950.0);
    assert_eq!(report["measurements"], json!(["cpu", "mem"]));
    assert_eq!(servers.a.count(&db, "cpu"), 100);
    assert_eq!(servers.b.count(&db, "mem"), 100);
}
