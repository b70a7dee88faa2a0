//! A fleet's shared config in a real Redis: fluxgate starts from either key
//! layout, reloads on a pub/sub message while clients write, and the CLI
//! moves configs between files and Redis.

use std::time::Duration;

use crate::harness::redis::RedisServer;
use crate::harness::steady::{stored_values, SteadyWriter};
use crate::harness::{backends, eventually, http, unique, Fluxgate, TempDir};

const LANDING_TIMEOUT: Duration = Duration::from_secs(60);

/// What each instance keeps in its own file: where it listens.
const LOCAL: &str = "[server]\nlisten = \"127.0.0.1:0\"\n";

fn shared_config(a: u16, b: u16, mv: &str) -> String {
    format!(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\n\
         [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\n\
         [routes]\n_default_ = [\"a\"]\nmv = [\"{mv}\"]\n\
         [write]\nack = \"accepted\"\nflush_interval = \"50ms\"\nshutdown_timeout = \"5s\"\n"
    )
}

fn set(redis: &RedisServer, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis.connection())
        .unwrap();
}

/// Waits until `n` fluxgate instances listen on the reload channel, so a
/// message published now reaches them all.
fn wait_for_subscribers(redis: &RedisServer, n: i64) {
    eventually(
        LANDING_TIMEOUT,
        "fluxgate to subscribe to fluxgate:reload",
        || {
            let counts: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("fluxgate:reload")
                .query(&mut redis.connection())
                .unwrap();
            (counts.1 >= n).then_some(())
        },
    );
}

fn status(proxy: &Fluxgate) -> serde_json::Value {
    serde_json::from_str(&http::get(&proxy.url("/status")).body).unwrap()
}

#[test]
fn two_instances_share_a_redis_config_and_reload_on_a_published_change() {
    let servers = backends();
    let db = unique("fleet_move");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    let redis = RedisServer::start();
    set(&redis, "fluxgate:config", &shared_config(a, b, "a"));
    let url = redis.url();
    let one = Fluxgate::launch(&["--redis", &url], Some(LOCAL));
    let two = Fluxgate::launch(&["--redis", &url], Some(LOCAL));
    let source = status(&one)["config"]["source"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(source.starts_with(&format!("redis {url}")), "{source}");
    wait_for_subscribers(&redis, 2);

    // Both instances write while the shared config moves mv from a to b.
    let writers = [(&one, 1), (&two, 1_000_000)].map(|(proxy, first)| {
        SteadyWriter::start_at(proxy.url(&format!("/write?db={db}&precision=s")), 5, first)
    });
    for writer in &writers {
        writer.wait_for_requests(20);
    }
    // The change, as an operator makes it: a file, exported and published.
    let dir = TempDir::new("fleet");
    let new_config = dir.path().join("shared.toml");
    std::fs::write(&new_config, shared_config(a, b, "b")).unwrap();
    let path = new_config.to_str().unwrap();
    let (exit, stderr) = Fluxgate::run(&["config", "export", "--config", path, "--redis", &url]);
    assert!(exit.success(), "{stderr}");
    assert!(
        stderr.contains("reload published to 2 subscriber(s)"),
        "{stderr}"
    );
    for proxy in [&one, &two] {
        eventually(LANDING_TIMEOUT, "the published reload to apply", || {
            (status(proxy)["config"]["generation"] == 2).then_some(())
        });
    }
    for writer in &writers {
        writer.wait_for_requests(20);
    }
    let acked: Vec<Vec<u64>> = writers.map(SteadyWriter::finish).into_iter().collect();

    // Every acknowledged point landed once, on a before the reload and on b
    // after it: for each writer, its points on a come before those on b.
    let total: usize = acked.iter().map(Vec::len).sum();
    let (on_a, on_b) = eventually(LANDING_TIMEOUT, "every acknowledged point to land", || {
        let (on_a, on_b) = (
            stored_values(&servers.a, &db),
            stored_values(&servers.b, &db),
        );
        (on_a.len() + on_b.len() >= total).then_some((on_a, on_b))
    });
    let mut stored: Vec<u64> = on_a.iter().chain(&on_b).copied().collect();
    stored.sort_unstable();
    let mut expected = acked.concat();
    expected.sort_unstable();
    assert_eq!(
        stored, expected,
        "points stored (a then b) against points acknowledged"
    );
    for points in &acked {
        let last_on_a = points.iter().filter(|n| on_a.contains(n)).max();
        let first_on_b = points.iter().filter(|n| on_b.contains(n)).min();
        match (last_on_a, first_on_b) {
            (Some(last_a), Some(first_b)) => {
                assert!(last_a < first_b, "{last_a} on a after {first_b} on b")
            }
            other => panic!("a writer's points did not move from a to b: {other:?}"),
        }
    }
    for proxy in [&one, &two] {
        assert!(proxy.log().contains("reload applied"), "{}", proxy.log());
    }
}

#[test]
fn the_influx_proxy_layout_starts_fluxgate_and_imports_as_toml() {
    let servers = backends();
    let db = unique("fleet_legacy");
    servers.create_database(&db);
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    for (name, port) in [("a", servers.a.http_port), ("b", servers.b.http_port)] {
        let _: () = redis::cmd("HSET")
            .arg(format!("b:{name}"))
            .arg("url")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("timeout")
            .arg("5000")
            .arg("zone")
            .arg("east")
            .arg("writeonly")
            .arg(if name == "b" { "1" } else { "0" })
            .query(&mut conn)
            .unwrap();
    }
    let _: () = redis::cmd("RPUSH")
        .arg("m:_default_")
        .arg("a")
        .arg("b")
        .query(&mut conn)
        .unwrap();
    let url = redis.url();
    let proxy = Fluxgate::launch(&["--redis", &url], Some(LOCAL));

    // Writes replicate to both; queries go to a only (b is write-only).
    let reply = http::post(
        &proxy.url(&format!("/write?db={db}&precision=s")),
        &[],
        b"legacy v=1 1\nlegacy v=2 2\n",
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(servers.a.count(&db, "legacy"), 2);
    assert_eq!(servers.b.count(&db, "legacy"), 2);
    let status = status(&proxy);
    let backends = status["backends"].as_array().unwrap();
    assert_eq!(backends[1]["write_only"], true, "{status}");
    // `zone` has no meaning in fluxgate: one warning naming it.
    let log = proxy.log();
    assert_eq!(log.matches("`zone`").count(), 1, "{log}");

    // import-redis prints a TOML file that loads on its own.
    let output = std::process::Command::new(Fluxgate::binary())
        .args(["config", "import-redis", "--redis", &url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let toml = String::from_utf8(output.stdout).unwrap();
    assert!(toml.contains("write_only = true"), "{toml}");
    let dir = TempDir::new("import");
    let file = dir.path().join("imported.toml");
    std::fs::write(&file, &toml).unwrap();
    let (exit, stderr) = Fluxgate::run(&["--check", "--config", file.to_str().unwrap()]);
    assert!(exit.success(), "{stderr}\n{toml}");
}

#[test]
fn a_broken_config_published_in_redis_is_refused_and_the_old_one_serves() {
    let servers = backends();
    let db = unique("fleet_broken");
    servers.create_database(&db);
    let (a, b) = (servers.a.http_port, servers.b.http_port);
    let redis = RedisServer::start_with_password("fleet-secret-3c1d");
    let url = redis.url();
    let mut conn = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("fluxgate:config")
        .arg(shared_config(a, b, "a"))
        .query(&mut conn)
        .unwrap();
    let proxy = Fluxgate::launch(
        &["--redis", &url, "--redis-password", "fleet-secret-3c1d"],
        Some(LOCAL),
    );
    wait_for_subscribers(&redis, 1);
    let _: () = redis::cmd("SET")
        .arg("fluxgate:config")
        .arg("[routes]\nmv = [\"nowhere\"]\n")
        .query(&mut conn)
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("fluxgate:reload")
        .arg("now")
        .query(&mut conn)
        .unwrap();
    eventually(LANDING_TIMEOUT, "the refusal to be logged", || {
        proxy.log().contains("reload refused").then_some(())
    });
    assert_eq!(status(&proxy)["config"]["generation"], 1);
    let reply = http::post(
        &proxy.url(&format!("/write?db={db}&precision=s")),
        &[],
        b"mv v=1 1\n",
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    eventually(LANDING_TIMEOUT, "the point on a", || {
        (servers.a.count(&db, "mv") == 1).then_some(())
    });
    assert!(!proxy.log().contains("fleet-secret-3c1d"));
}

#[test]
fn export_without_redis_prints_commands_redis_cli_applies() {
    let servers = backends();
    let redis = RedisServer::start();
    let dir = TempDir::new("export");
    let file = dir.path().join("shared.toml");
    // Quotes, backslashes, tabs and non-ASCII survive the trip.
    let config = format!(
        "# fleet config \"v2\" \\ with\ttabs and é\n{}",
        shared_config(servers.a.http_port, servers.b.http_port, "b")
    );
    std::fs::write(&file, &config).unwrap();
    let output = std::process::Command::new(Fluxgate::binary())
        .args(["config", "export", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let commands = String::from_utf8(output.stdout).unwrap();
    assert!(
        commands.ends_with("PUBLISH fluxgate:reload now\n"),
        "{commands}"
    );
    let mut cli = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
    std::io::Write::write_all(&mut cli.stdin.take().unwrap(), commands.as_bytes()).unwrap();
    let answer = cli.wait_with_output().unwrap();
    assert!(answer.status.success(), "{answer:?}");
    let stored: String = redis::cmd("GET")
        .arg("fluxgate:config")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(stored, config);
}
