//! `ack = "durable"`: a 204 means every target backend has the points.

use crate::harness::http;
use crate::harness::{backends, free_port, unique, Fluxgate};

fn durable_config(a: u16, b: u16, extra_write: &str) -> String {
    format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\n[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\n[write]\nack = \"durable\"\nflush_interval = \"1h\"\n{extra_write}\n"
    )
}

#[test]
fn a_durable_204_means_the_points_are_already_on_every_backend() {
    let servers = backends();
    let db = unique("durable");
    servers.create_database(&db);
    // flush_interval = 1h: only the durable ack path can have sent these batches.
    let proxy = Fluxgate::start(
        "workers = 2",
        &durable_config(servers.a.http_port, servers.b.http_port, ""),
    );
    for round in 0..5 {
        let body: String = (0..100)
            .map(|i| format!("dur v={i} {}\n", round * 1000 + i))
            .collect();
        let reply = http::post(&proxy.url(&format!("/write?db={db}")), &[], body.as_bytes());
        assert_eq!(reply.status, 204, "{}", reply.body);
        // No waiting: the answer came after both backends answered.
        let expected = (round + 1) * 100;
        assert_eq!(servers.a.count(&db, "dur"), expected);
        assert_eq!(servers.b.count(&db, "dur"), expected);
    }
}

#[test]
fn a_durable_write_reports_the_backends_refusal() {
    let servers = backends();
    let proxy = Fluxgate::start(
        "",
        &durable_config(servers.a.http_port, servers.b.http_port, ""),
    );
    let missing = unique("missing");
    let reply = http::post(
        &proxy.url(&format!("/write?db={missing}")),
        &[],
        b"m v=1 1\n",
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    let error = reply.error();
    assert!(
        error.starts_with("backend a refused the points (HTTP 404)")
            || error.starts_with("backend b refused the points (HTTP 404)"),
        "{error}"
    );
    assert!(error.contains("database not found"), "{error}");
}

#[test]
fn a_durable_write_to_a_down_backend_times_out_with_503() {
    let servers = backends();
    let db = unique("durable_down");
    servers.create_database(&db);
    let nothing_listens = free_port();
    let proxy = Fluxgate::start(
        "",
        &durable_config(
            servers.a.http_port,
            nothing_listens,
            "ack_timeout = \"300ms\"\nmax_retry_backoff = \"50ms\"\nshutdown_timeout = \"500ms\"",
        ),
    );
    let reply = http::post(&proxy.url(&format!("/write?db={db}")), &[], b"down v=1 1\n");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("Retry-After"), Some("1"));
    assert!(
        reply
            .error()
            .starts_with("points not yet written or spooled after 300ms"),
        "{}",
        reply.body
    );
    // The healthy replica has them; the other keeps being retried.
    assert_eq!(servers.a.count(&db, "down"), 1);
}
