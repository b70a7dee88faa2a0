//! `loadgen query`: InfluxQL query load against InfluxDB or the proxy. Each
//! request is `GET /query?db=..&q=..`, the queries taken in turn; the load
//! clients (`send.rs`) and the report (`report.rs`) are the ones `write` uses,
//! with queries in place of points.
//!
//! InfluxDB answers a failed statement with `200 {"results":[{"error":...}]}`, so
//! a 200 whose body holds an `"error"` key counts as a failure (reported under
//! HTTP 200), not as a served query.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::args::LoadArgs;
use crate::http::{push_percent_encoded, write_bodyless_head, Target};
use crate::report::{Load, Output, Report, RunInfo};
use crate::send::{self, Payload, RunPlan, Workload};

/// Run length when neither `--requests` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The first hour of the data `loadgen write` generates: it starts at
/// [`crate::gen::START_NS`] (2016-01-01, tsbs's start), not at `now()`, so
/// `now() - 1h` ranges would find nothing to read.
const FIRST_HOUR: &str = "time >= '2016-01-01T00:00:00Z' AND time < '2016-01-01T01:00:00Z'";

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// InfluxQL query; repeat for several, sent in turn. Default: six
    /// Grafana-style queries over the `cpu` measurement `loadgen write` makes, in
    /// its first hour (2016-01-01T00:00Z, where write's timestamps start, not
    /// now()): mean GROUP BY time(1m); max for host_1 GROUP BY time(1m); mean
    /// GROUP BY time(5m), hostname; last() for host_1; SHOW MEASUREMENTS; SHOW
    /// TAG VALUES WITH KEY = "hostname".
    #[arg(long = "query", value_name = "Q")]
    pub queries: Vec<String>,

    /// Stop after this many queries (or at --duration, whichever is first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
}

/// The default query set: what a dashboard over `loadgen write`'s data sends.
pub fn default_queries() -> Vec<String> {
    vec![
        format!("SELECT mean(usage_user) FROM cpu WHERE {FIRST_HOUR} GROUP BY time(1m)"),
        format!(
            "SELECT max(usage_system) FROM cpu WHERE hostname = 'host_1' AND {FIRST_HOUR} \
             GROUP BY time(1m)"
        ),
        format!("SELECT mean(usage_idle) FROM cpu WHERE {FIRST_HOUR} GROUP BY time(5m), hostname"),
        "SELECT last(usage_idle) FROM cpu WHERE hostname = 'host_1'".to_owned(),
        "SHOW MEASUREMENTS".to_owned(),
        "SHOW TAG VALUES FROM cpu WITH KEY = \"hostname\"".to_owned(),
    ]
}

/// The query requests: one pre-built head per query string.
pub struct QueryLoad {
    heads: Vec<Vec<u8>>,
}

impl QueryLoad {
    pub fn new(target: &Target, db: &str, queries: &[String]) -> QueryLoad {
        let heads = queries
            .iter()
            .map(|q| {
                let mut path = String::from("/query?db=");
                push_percent_encoded(&mut path, db);
                path.push_str("&q=");
                push_percent_encoded(&mut path, q);
                let mut head = Vec::new();
                write_bodyless_head(&mut head, "GET", &path, target);
                head
            })
            .collect();
        QueryLoad { heads }
    }
}

impl Workload for QueryLoad {
    fn unit(&self) -> &'static str {
        "queries"
    }

    fn request<'a>(
        &'a self,
        index: u64,
        head: &mut Vec<u8>,
        _scratch: &'a mut Vec<u8>,
    ) -> Payload<'a> {
        head.clear();
        head.extend_from_slice(&self.heads[(index % self.heads.len() as u64) as usize]);
        Payload {
            body: &[],
            units: 1,
        }
    }

    fn succeeded(&self, status: u16, body: &[u8]) -> bool {
        (200..300).contains(&status) && memchr::memmem::find(body, b"\"error\"").is_none()
    }
}

/// Runs `loadgen query`.
///
/// # Errors
///
/// If the target cannot be reached or no request got an answer; failed queries
/// are reported, not errors.
pub fn run(args: &QueryArgs) -> Result<()> {
    let load = &args.load;
    let target = Target::parse(&load.url)?;
    send::check_reachable(&target)?;
    let queries = if args.queries.is_empty() {
        default_queries()
    } else {
        args.queries.clone()
    };
    let workload = QueryLoad::new(&target, &load.db, &queries);
    let duration = match (args.requests, load.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, duration) => duration,
    };
    eprintln!(
        "loadgen: {} distinct queries, sending to {}",
        queries.len(),
        load.url
    );
    let plan = RunPlan {
        connections: load.connections as usize,
        max_requests: args.requests,
        duration,
        rate: load.rate,
    };
    let (threads, elapsed) = send::run(&target, &workload, plan);
    let scheduled = args.requests.or_else(|| {
        let (rate, duration) = (load.rate?, duration?);
        Some((rate * duration.as_secs_f64()).ceil() as u64)
    });
    let info = RunInfo {
        url: load.url.clone(),
        db: load.db.clone(),
        load: Load::Query {
            queries: queries.len(),
        },
        connections: plan.connections,
        rate: load.rate,
        scheduled_requests: load.rate.and(scheduled),
    };
    Report::merge(info, threads, elapsed).print(Output {
        json: load.json,
        hgrm: load.hgrm.as_deref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_is_where_write_puts_its_data() {
        // 2016-01-01T00:00:00Z as Unix seconds.
        assert_eq!(crate::gen::START_NS / 1_000_000_000, 1_451_606_400);
        assert!(default_queries()[0].contains(FIRST_HOUR));
    }

    #[test]
    fn queries_are_sent_in_turn_as_url_encoded_gets() {
        let target = Target::parse("http://127.0.0.1:8086").unwrap();
        let queries = [
            "SHOW MEASUREMENTS".to_owned(),
            "SELECT \"a\" FROM b".to_owned(),
        ];
        let load = QueryLoad::new(&target, "my db", &queries);
        let (mut head, mut scratch) = (Vec::new(), Vec::new());
        let mut first_lines = Vec::new();
        for index in 0..3 {
            let payload = load.request(index, &mut head, &mut scratch);
            assert_eq!((payload.body.len(), payload.units), (0, 1));
            let text = String::from_utf8(head.clone()).unwrap();
            assert!(text.ends_with("\r\n\r\n") && !text.contains("Content-Length"));
            first_lines.push(text.lines().next().unwrap().to_owned());
        }
        assert_eq!(
            first_lines,
            [
                "GET /query?db=my%20db&q=SHOW%20MEASUREMENTS HTTP/1.1",
                "GET /query?db=my%20db&q=SELECT%20%22a%22%20FROM%20b HTTP/1.1",
                "GET /query?db=my%20db&q=SHOW%20MEASUREMENTS HTTP/1.1",
            ]
        );
    }

    #[test]
    fn a_statement_error_inside_a_200_is_a_failure() {
        let load = QueryLoad { heads: Vec::new() };
        assert!(load.succeeded(200, br#"{"results":[{"statement_id":0}]}"#));
        assert!(!load.succeeded(
            200,
            br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#
        ));
        assert!(!load.succeeded(400, br#"{"error":"missing parameter"}"#));
    }
}
