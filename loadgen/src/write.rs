//! `loadgen write`: line-protocol write load. Builds the bodies before the clock
//! starts (`body.rs`), then lets the load clients (`send.rs`) post them to
//! `/write` and prints the report (`report.rs`).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::args::LoadArgs;
use crate::body::{Bodies, BodyPlan};
use crate::gen::{self, Generator, Shape};
use crate::http::{push_percent_encoded, write_request_head, Target};
use crate::report::{Load, Output, Report, RunInfo};
use crate::send::{self, Payload, RunPlan, Workload};

/// Run length when neither `--points` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct WriteArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// Timestamp precision, sent as the `precision` query parameter; generated
    /// timestamps use the same unit.
    #[arg(long, default_value = "ns", value_parser = ["n", "ns", "u", "ms", "s", "m", "h"])]
    pub precision: String,

    /// First POST `q=CREATE DATABASE "<db>"` to /query.
    #[arg(long)]
    pub create_db: bool,

    /// Distinct hostnames (series per measurement).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub hosts: u64,

    /// Write each line's tags sorted by key, as Telegraf and the InfluxDB
    /// client libraries do (the devops data set's own order is not sorted).
    #[arg(long)]
    pub sorted_tags: bool,

    /// Measurements per host: `cpu`, then `cpu_1`, `cpu_2`, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub measurements: u64,

    /// Seed for tags and field values; the same seed sends the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Lines (points) per request.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_size: u64,

    /// Gzip each body (once, before the run) and send `Content-Encoding: gzip`.
    #[arg(long)]
    pub gzip: bool,

    /// Stop after sending this many points (or at --duration, whichever is first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub points: Option<u64>,
}

/// The write requests: pre-built bodies posted to one `/write` path.
pub struct WriteLoad<'a> {
    pub target: &'a Target,
    /// `/write?db=..&precision=..`
    pub path: String,
    pub generator: &'a Generator,
    pub bodies: &'a Bodies,
    pub gzip: bool,
}

impl Workload for WriteLoad<'_> {
    fn unit(&self) -> &'static str {
        "points"
    }

    fn request<'a>(
        &'a self,
        index: u64,
        head: &mut Vec<u8>,
        scratch: &'a mut Vec<u8>,
    ) -> Payload<'a> {
        let body = self.bodies.request_body(self.generator, index, scratch);
        write_request_head(
            head,
            "POST",
            &self.path,
            self.target,
            "text/plain; charset=utf-8",
            self.gzip.then_some("gzip"),
            body.bytes.len(),
        );
        Payload {
            body: body.bytes,
            units: body.lines as u64,
        }
    }
}

/// The `/write` path with its query string.
pub fn write_path(db: &str, precision: &str) -> String {
    let mut path = String::from("/write?db=");
    push_percent_encoded(&mut path, db);
    path.push_str("&precision=");
    push_percent_encoded(&mut path, precision);
    path
}

/// Runs `loadgen write`.
///
/// # Errors
///
/// If the target cannot be reached, `--create-db` fails, or no request got an
/// answer; failed requests are reported, not errors.
pub fn run(args: &WriteArgs) -> Result<()> {
    let load = &args.load;
    let target = Target::parse(&load.url)?;
    send::check_reachable(&target)?;
    if args.create_db {
        send::create_database(&target, &load.db)?;
    }

    let batch_lines = args.batch_size as usize;
    let duration = match (args.points, load.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, duration) => duration,
    };
    let max_requests = args.points.map(|p| p.div_ceil(args.batch_size));
    let requests_needed = max_requests.or_else(|| {
        let (rate, duration) = (load.rate?, duration?);
        Some((rate * duration.as_secs_f64()).ceil() as u64)
    });
    let plan = BodyPlan {
        batch_lines,
        requests_needed,
        last_request_lines: args
            .points
            .map(|p| (p - (p.div_ceil(args.batch_size) - 1) * args.batch_size) as usize),
        gzip: args.gzip,
    };

    let ns_per_unit = gen::ns_per_unit(&args.precision).context("unknown precision")?;
    let generator = Generator::new(Shape {
        hosts: args.hosts,
        measurements: args.measurements,
        seed: args.seed,
        ns_per_unit,
        sorted_tags: args.sorted_tags,
    });
    let bodies = Bodies::build(&generator, plan)?;
    eprintln!(
        "loadgen: {} distinct bodies of {batch_lines} lines ({:.1} MB{}), sending to {}",
        bodies.len(),
        bodies.bytes() as f64 / 1e6,
        if args.gzip { " gzipped" } else { "" },
        load.url,
    );

    let workload = WriteLoad {
        target: &target,
        path: write_path(&load.db, &args.precision),
        generator: &generator,
        bodies: &bodies,
        gzip: args.gzip,
    };
    let run = RunPlan {
        connections: load.connections as usize,
        max_requests,
        duration,
        rate: load.rate,
    };
    let (threads, elapsed) = send::run(&target, &workload, run);
    let info = RunInfo {
        url: load.url.clone(),
        db: load.db.clone(),
        load: Load::Write {
            hosts: args.hosts,
            measurements: args.measurements,
            sorted_tags: args.sorted_tags,
            batch_lines,
            gzip: args.gzip,
        },
        connections: run.connections,
        rate: load.rate,
        scheduled_requests: load.rate.and(requests_needed),
    };
    let report = Report::merge(info, threads, elapsed);

    if bodies.repeats_points(report.requests) {
        eprintln!(
            "loadgen: note: {} requests over {} gzip bodies; gzip bodies cannot be \
             re-timed, so later rounds rewrote earlier points",
            report.requests,
            bodies.len()
        );
    }
    report.print(Output {
        json: load.json,
        hgrm: load.hgrm.as_deref(),
    })
}
