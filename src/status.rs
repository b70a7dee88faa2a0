//! `fluxgate status --url ...`: a running proxy's `/status`, as a table for
//! the terminal.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use crate::config::BackendUrl;
use crate::writer::client::BackendClient;

/// How long `fluxgate status` waits for the proxy.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `<url>/status` and renders it.
///
/// # Errors
/// A URL that is not `http://host:port`, a proxy that does not answer, or an
/// answer that is not fluxgate's status JSON.
pub fn fetch_and_render(url: &str, authorization: Option<String>) -> Result<String, String> {
    let url = BackendUrl::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    let authority = url.authority.clone();
    let mut client = BackendClient::new(url, TIMEOUT, authorization);
    let response = client
        .get("/status")
        .map_err(|e| format!("cannot reach fluxgate at {authority}: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "{authority} answered /status with HTTP {}: {}",
            response.status,
            response.body_text()
        ));
    }
    let status: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("{authority}/status is not fluxgate's status JSON: {e}"))?;
    Ok(render(&status))
}

/// The status JSON as a header and one table row per backend.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fluxgate {}  up {}  config: {} (generation {})  ack: {}  workers: {}",
        status["version"].as_str().unwrap_or("?"),
        human_duration(status["uptime_seconds"].as_u64().unwrap_or(0)),
        status["config"]["source"].as_str().unwrap_or("?"),
        status["config"]["generation"],
        status["config"]["ack"].as_str().unwrap_or("?"),
        status["workers"],
    );
    let _ = writeln!(
        out,
        "points received {}, invalid {}\n",
        status["points_received"], status["points_invalid"]
    );
    let header = [
        "BACKEND",
        "STATE",
        "QUEUE",
        "SPOOL",
        "OLDEST",
        "WRITTEN",
        "SPOOLED",
        "REPLAYED",
        "REFUSED",
        "LOST",
        "LAST ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    let live = status["backends"].as_array().into_iter().flatten();
    let retiring = status["retiring"].as_array().into_iter().flatten();
    for (b, retired) in live.map(|b| (b, false)).chain(retiring.map(|b| (b, true))) {
        let spool = &b["spool"];
        let (spool_text, oldest) = if spool.is_null() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!(
                    "{} / {} rec",
                    human_bytes(spool["bytes"].as_u64().unwrap_or(0)),
                    spool["records"]
                ),
                match spool["oldest_age_seconds"].as_f64().unwrap_or(0.0) {
                    age if age > 0.0 => human_duration(age as u64),
                    _ => "-".to_owned(),
                },
            )
        };
        let state = match (b["up"].as_bool(), spool["records"].as_u64()) {
            _ if retired => "removed, draining",
            (Some(false), _) => "DOWN",
            (_, Some(n)) if n > 0 => "replaying",
            _ if b["write_only"] == true => "up (write-only)",
            _ => "up",
        };
        let last_error = b["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        rows.push(vec![
            b["name"].as_str().unwrap_or("?").to_owned(),
            state.to_owned(),
            b.get("queue_batches")
                .map_or("-".to_owned(), ToString::to_string),
            spool_text,
            oldest,
            b["points_written"].to_string(),
            b["points_spooled"].to_string(),
            b["points_replayed"].to_string(),
            b["points_rejected"].to_string(),
            b["points_lost"].to_string(),
            last_error,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_row_per_backend() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 3700, "workers": 2,
            "config": {"source": "file f.toml", "generation": 3, "ack": "durable"},
            "points_received": 10, "points_invalid": 1,
            "backends": [
                {"name": "a", "up": true, "queue_batches": 0, "points_written": 9, "points_spooled": 0,
                 "points_replayed": 0, "points_rejected": 0, "points_lost": 0, "last_error": null,
                 "spool": {"bytes": 0, "records": 0, "oldest_age_seconds": 0.0}},
                {"name": "b", "up": false, "queue_batches": 3, "points_written": 0, "points_spooled": 9,
                 "points_replayed": 0, "points_rejected": 0, "points_lost": 0,
                 "last_error": {"at_unix": 1, "message": "connect: Connection refused"},
                 "spool": {"bytes": 3_145_728, "records": 2, "oldest_age_seconds": 75.0}}
            ]
        });
        let table = render(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "fluxgate 0.1.0  up 1h1m  config: file f.toml (generation 3)  ack: durable  workers: 2"
        );
        assert!(
            lines[3].starts_with("BACKEND  STATE  QUEUE  SPOOL"),
            "{table}"
        );
        assert!(
            lines[4].starts_with("a        up     0      0 B / 0 rec"),
            "{table}"
        );
        assert!(
            lines[5].starts_with("b        DOWN   3      3.0 MiB / 2 rec  1m15s"),
            "{table}"
        );
        assert!(lines[5].ends_with("connect: Connection refused"), "{table}");
    }
}
