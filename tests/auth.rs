//! Proxy users: each way InfluxDB clients pass credentials, accepted and
//! refused; admin-only endpoints and statements; fluxgate's own credentials
//! for a backend that requires them; no credential in the log.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use fluxgate::auth::{hash_secret_with_iterations, MIN_ITERATIONS};

use crate::harness::http::{self, Raw, Reply};
use crate::harness::{backends, eventually, unique, Fluxgate, Influxd};

const ALICE_PASSWORD: &str = "alice-pw-7f3a";
const ROOT_PASSWORD: &str = "root-pw-91c2";
const BOT_TOKEN: &str = "bot-token-5d8e0b1c";
const BACKEND_PASSWORD: &str = "backend-pw-4e6f";

/// Fast hashes: the debug build's PBKDF2 takes seconds at the default rounds.
fn users() -> String {
    let hash = |secret| hash_secret_with_iterations(secret, MIN_ITERATIONS).unwrap();
    format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n\
         [[users]]\nname = \"root\"\npassword_hash = \"{}\"\nadmin = true\n\
         [[users]]\nname = \"bot\"\ntoken_hash = \"{}\"\n",
        hash(ALICE_PASSWORD),
        hash(ROOT_PASSWORD),
        fluxgate::auth::hash_token(BOT_TOKEN)
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn write(proxy: &Fluxgate, db: &str, query: &str, header: Option<&str>, n: u64) -> Reply {
    let headers: Vec<(&str, &str)> = header.map(|h| ("Authorization", h)).into_iter().collect();
    http::post(
        &proxy.url(&format!("/write?db={db}&precision=s{query}")),
        &headers,
        format!("au v={n} {n}\n").as_bytes(),
    )
}

#[track_caller]
fn assert_unauthorized(reply: &Reply, message: &str) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.error(), message, "{reply:?}");
    assert_eq!(
        reply.header("WWW-Authenticate"),
        Some("Basic realm=\"InfluxDB\""),
        "{reply:?}"
    );
}

#[test]
fn each_way_of_passing_credentials_is_accepted_and_refused() {
    let servers = backends();
    let db = unique("auth_forms");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n\
             [query]\nallow_admin = true\n{}",
            servers.a.http_port,
            users()
        ),
    );
    let bad = "authorization failed";
    let unreadable = "unable to parse authentication credentials";

    // None at all.
    assert_unauthorized(&write(&proxy, &db, "", None, 1), unreadable);
    // u and p in the URL.
    let ok = format!("&u=alice&p={ALICE_PASSWORD}");
    assert_eq!(write(&proxy, &db, &ok, None, 1).status, 204);
    assert_unauthorized(&write(&proxy, &db, "&u=alice&p=nope", None, 2), bad);
    assert_unauthorized(&write(&proxy, &db, "&u=mallory&p=nope", None, 2), bad);
    // Basic.
    let header = basic("alice", ALICE_PASSWORD);
    assert_eq!(write(&proxy, &db, "", Some(&header), 2).status, 204);
    assert_unauthorized(
        &write(&proxy, &db, "", Some(&basic("alice", "nope")), 3),
        bad,
    );
    assert_unauthorized(
        &write(&proxy, &db, "", Some("Basic !!notbase64"), 3),
        unreadable,
    );
    // InfluxDB 1.8's `Token user:password`.
    let header = format!("Token alice:{ALICE_PASSWORD}");
    assert_eq!(write(&proxy, &db, "", Some(&header), 3).status, 204);
    assert_unauthorized(&write(&proxy, &db, "", Some("Token alice:nope"), 4), bad);
    // An API token.
    let header = format!("Token {BOT_TOKEN}");
    assert_eq!(write(&proxy, &db, "", Some(&header), 4).status, 204);
    assert_unauthorized(&write(&proxy, &db, "", Some("Token not-a-token"), 5), bad);
    // u/p win over the header, as in InfluxDB.
    let reply = write(
        &proxy,
        &db,
        "&u=alice&p=nope",
        Some(&format!("Token {BOT_TOKEN}")),
        5,
    );
    assert_unauthorized(&reply, bad);

    // Only accepted writes landed.
    eventually(
        std::time::Duration::from_secs(30),
        "the accepted points",
        || (servers.a.count(&db, "au") == 4).then_some(()),
    );

    // /ping and /health stay open; /status and /metrics need a user.
    assert_eq!(http::get(&proxy.url("/ping")).status, 204);
    assert_eq!(http::get(&proxy.url("/health")).status, 200);
    assert_unauthorized(&http::get(&proxy.url("/status")), unreadable);
    let alice = format!("u=alice&p={ALICE_PASSWORD}");
    let root = format!("u=root&p={ROOT_PASSWORD}");
    assert_eq!(
        http::get(&proxy.url(&format!("/status?{alice}"))).status,
        200
    );
    assert_eq!(
        http::get(&proxy.url(&format!("/metrics?{alice}"))).status,
        200
    );

    // Admin endpoints and statements need an admin.
    let reply = http::post(&proxy.url(&format!("/reload?{alice}")), &[], b"");
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        http::post(&proxy.url(&format!("/reload?{root}")), &[], b"").status,
        200
    );
    let reply = http::get(&proxy.url(&format!("/debug/latency?{alice}")));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        http::get(&proxy.url(&format!("/debug/latency?{root}"))).status,
        200
    );
    let drop_series = "DROP SERIES FROM \"nothing_here\"";
    let query = |who: &str, q: &str| {
        http::post_form(
            &proxy.url(&format!("/query?{who}")),
            &[("db", &db), ("q", q)],
        )
    };
    let reply = query(&alice, drop_series);
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        reply.error(),
        format!("error authorizing query: alice not authorized to execute statement '{drop_series}', requires admin privilege")
    );
    assert_eq!(query(&root, drop_series).status, 200);
    // SHOWs about the server need an admin too, even hidden behind a comment.
    for admin_only in [
        "SHOW USERS",
        "SHOW GRANTS FOR root",
        "SHOW/* queries */GRANTS FOR root",
    ] {
        let reply = query(&alice, admin_only);
        assert_eq!(reply.status, 403, "{admin_only}: {reply:?}");
    }
    assert_eq!(query(&alice, "SHOW QUERIES").status, 200);
    let reply = query(&alice, "SELECT count(v) FROM au");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("[0,4]") || reply.body.contains(",4]"),
        "{}",
        reply.body
    );
    assert_unauthorized(&query("u=alice&p=nope", "SELECT count(v) FROM au"), bad);

    // No secret in the log.
    let log = proxy.log();
    for secret in [
        ALICE_PASSWORD,
        ROOT_PASSWORD,
        BOT_TOKEN,
        &basic("alice", ALICE_PASSWORD)[6..],
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[test]
fn a_write_with_refused_credentials_is_refused_before_its_body_is_read() {
    let servers = backends();
    let db = unique("auth_before_body");
    servers.create_database(&db);
    let proxy = Fluxgate::start(
        "",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n{}",
            servers.a.http_port,
            users()
        ),
    );
    // Clients that ask before sending their bodies are answered 401 at once;
    // only the one with good credentials is asked for its body.
    let body = "early v=1 1\n";
    for (credentials, first_status) in [
        ("&u=alice&p=wrong".to_owned(), 401),
        (String::new(), 401),
        (format!("&u=alice&p={ALICE_PASSWORD}"), 100),
    ] {
        let mut raw = Raw::connect(proxy.addr);
        raw.send(
            format!(
                "POST /write?db={db}&precision=s{credentials} HTTP/1.1\r\nHost: x\r\n\
                 Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(raw.read_response().status, first_status, "{credentials:?}");
        if first_status == 100 {
            raw.send(body.as_bytes());
            assert_eq!(raw.read_response().status, 204);
        }
    }
    eventually(
        std::time::Duration::from_secs(30),
        "the point to land",
        || (servers.a.count(&db, "early") == 1).then_some(()),
    );
}

#[test]
fn fluxgate_uses_its_own_credentials_with_a_backend_that_requires_them() {
    let backend = Influxd::start_with_auth("fluxgate", BACKEND_PASSWORD);
    let db = unique("auth_backend");
    backend.create_database(&db);
    let config = |password: &str| {
        format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\nusername = \"fluxgate\"\npassword = \"{password}\"\n\
             [routes]\n_default_ = [\"a\"]\n{}",
            backend.http_port,
            users()
        )
    };
    let proxy = Fluxgate::start("", &config(BACKEND_PASSWORD));
    let header = basic("alice", ALICE_PASSWORD);
    assert_eq!(write(&proxy, &db, "", Some(&header), 1).status, 204);
    assert_eq!(
        backend.count(&db, "au"),
        1,
        "written with fluxgate's credentials"
    );
    let reply = http::post_form(
        &proxy.url(&format!("/query?u=alice&p={ALICE_PASSWORD}")),
        &[("db", &db), ("q", "SELECT v FROM au")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("[1,1]") || reply.body.contains(",1]"),
        "{}",
        reply.body
    );

    // With a wrong backend password the backend's refusal reaches the client
    // (durable ack), and the point is not written.
    proxy.rewrite_config("", &config("wrong"));
    let root = format!("u=root&p={ROOT_PASSWORD}");
    assert_eq!(
        http::post(&proxy.url(&format!("/reload?{root}")), &[], b"").status,
        200
    );
    let reply = write(&proxy, &db, "", Some(&header), 2);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(backend.count(&db, "au"), 1);

    let log = proxy.log();
    for secret in [
        ALICE_PASSWORD,
        BACKEND_PASSWORD,
        &basic("fluxgate", BACKEND_PASSWORD)[6..],
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[test]
fn hash_password_prints_a_hash_the_proxy_accepts() {
    let mut child = Command::new(Fluxgate::binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("pbkdf2-sha256$"), "{hash}");
    assert!(!hash.contains("correct horse"));

    let servers = backends();
    let proxy = Fluxgate::start(
        "",
        &format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n[routes]\n_default_ = [\"a\"]\n\
             [[users]]\nname = \"carol\"\npassword_hash = \"{hash}\"\n[auth]\nping = true\n",
            servers.a.http_port
        ),
    );
    // `[auth] ping = true`: even /ping needs credentials.
    assert_eq!(http::get(&proxy.url("/ping")).status, 401);
    let ping = proxy.url("/ping?u=carol&p=correct%20horse");
    assert_eq!(http::get(&ping).status, 204);
    // The second time comes from the cache.
    assert_eq!(http::get(&ping).status, 204);
}
