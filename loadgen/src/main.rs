//! `loadgen`: capacity tests for fluxgate and InfluxDB 1.x.
//!
//! `loadgen write` sends the tsbs devops `cpu` line shape to `/write` from several
//! keep-alive connections and reports throughput and latency. This file only reads
//! flags and wires the parts together: `gen.rs` makes lines, `body.rs` builds
//! request bodies before the clock starts, `send.rs` runs the connections, and
//! `report.rs` prints the result.

mod body;
mod gen;
mod http;
mod report;
mod send;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::body::{Bodies, BodyPlan};
use crate::gen::{Generator, Shape};
use crate::http::Target;
use crate::report::{Report, RunInfo};
use crate::send::RunPlan;

/// Run length when neither `--points` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Capacity-test tool for fluxgate and InfluxDB 1.x"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send line-protocol write load (the tsbs devops `cpu` shape) to /write and
    /// report points/s, MB/s, errors by status and latency percentiles.
    ///
    /// Request bodies are generated (and gzipped) before the timed run. The run
    /// stops after --points or --duration, whichever comes first (10s if neither
    /// is given). The exit status is non-zero only if the target could not be
    /// reached at all; failed requests are reported, not fatal.
    Write(WriteArgs),
}

#[derive(Args)]
struct WriteArgs {
    /// Target base URL: InfluxDB or the proxy. Plain http://host:port only.
    #[arg(long, default_value = "http://127.0.0.1:7076")]
    url: String,

    /// Database, sent as the `db` query parameter.
    #[arg(long, default_value = "loadgen")]
    db: String,

    /// Timestamp precision, sent as the `precision` query parameter; generated
    /// timestamps use the same unit.
    #[arg(long, default_value = "ns", value_parser = ["n", "ns", "u", "ms", "s", "m", "h"])]
    precision: String,

    /// First POST `q=CREATE DATABASE "<db>"` to /query.
    #[arg(long)]
    create_db: bool,

    /// Distinct hostnames (series per measurement).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    hosts: u64,

    /// Measurements per host: `cpu`, then `cpu_1`, `cpu_2`, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    measurements: u64,

    /// Seed for tags and field values; the same seed sends the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Lines (points) per request.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_size: u64,

    /// Concurrent keep-alive connections, one thread each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,

    /// Gzip each body (once, before the run) and send `Content-Encoding: gzip`.
    #[arg(long)]
    gzip: bool,

    /// Stop after sending this many points.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    points: Option<u64>,

    /// Stop after this long, e.g. 500ms, 10s, 2m, 1h (a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Requests per second over all connections, open loop: each request has an
    /// intended send time and latency counts from it, so a slow server shows up
    /// as latency. Without it, each connection sends as soon as it is answered.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,

    /// Also write the latency distribution (ms) in HdrHistogram's percentile text
    /// format to FILE.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Write(args) => write(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write(args: &WriteArgs) -> Result<()> {
    let target = Target::parse(&args.url)?;
    send::check_reachable(&target)?;
    if args.create_db {
        send::create_database(&target, &args.db)?;
    }

    let batch_lines = args.batch_size as usize;
    let duration = match (args.points, args.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, duration) => duration,
    };
    let max_requests = args.points.map(|p| p.div_ceil(args.batch_size));
    let requests_needed = max_requests.or_else(|| {
        let (rate, duration) = (args.rate?, duration?);
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
    });
    let bodies = Bodies::build(&generator, plan)?;
    eprintln!(
        "loadgen: {} distinct bodies of {batch_lines} lines ({:.1} MB{}), sending to {}",
        bodies.len(),
        bodies.bytes() as f64 / 1e6,
        if args.gzip { " gzipped" } else { "" },
        args.url,
    );

    let path = send::write_path(&args.db, &args.precision);
    let run = RunPlan {
        connections: args.connections as usize,
        max_requests,
        duration,
        rate: args.rate,
        gzip: args.gzip,
    };
    let (threads, elapsed) = send::run(&target, &path, &generator, &bodies, run);
    let info = RunInfo {
        url: args.url.clone(),
        db: args.db.clone(),
        hosts: args.hosts,
        measurements: args.measurements,
        batch_lines,
        connections: run.connections,
        gzip: args.gzip,
        rate: args.rate,
        scheduled_requests: args.rate.and(requests_needed),
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
    if let Some(file) = &args.hgrm {
        let mut out = BufWriter::new(
            File::create(file).with_context(|| format!("creating {}", file.display()))?,
        );
        report.write_hgrm(&mut out)?;
        out.flush()?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", report.to_json())?;
    } else {
        if stdout.is_terminal() {
            writeln!(stdout)?;
        }
        write!(stdout, "{}", report.to_text())?;
    }
    if report.requests > 0 && report.responses() == 0 {
        bail!(
            "no request got an answer from {} ({})",
            args.url,
            report
                .connection_error_sample
                .as_deref()
                .unwrap_or("no error text")
        );
    }
    Ok(())
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 10s, 500ms, 2m"))?;
    if !(value.is_finite() && value > 0.0) {
        bail!("duration must be positive, got {text:?}");
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn parse_rate(text: &str) -> Result<f64> {
    let rate: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("rate must be positive, got {text:?}");
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "-1s", "0", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
