//! `loadgen`: capacity tests for fluxgate and InfluxDB 1.x.
//!
//! - `loadgen write` sends the tsbs devops `cpu` line shape to `/write`
//!   (`write.rs`: `gen.rs` makes lines, `body.rs` builds bodies before the clock
//!   starts);
//! - `loadgen query` sends InfluxQL `GET /query` load (`query.rs`);
//! - `loadgen sink` stands in for InfluxDB backends and counts what arrives
//!   (`sink.rs`);
//! - `loadgen floor` reads writes and drops them, the least a server can
//!   spend on one (`floor.rs`).
//!
//! `write` and `query` share the keep-alive clients (`send.rs`), the HTTP pieces
//! (`http.rs`, also the sink's request reader), the common flags (`args.rs`) and
//! the report (`report.rs`). This file only parses the command line and
//! dispatches.

mod args;
mod body;
mod floor;
mod gen;
mod http;
mod query;
mod report;
mod send;
mod sink;
mod write;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Write(write::WriteArgs),

    /// Send InfluxQL query load (`GET /query?db=..&q=..`) and report queries/s,
    /// errors by status and latency percentiles.
    ///
    /// Queries are sent in turn, by default a Grafana-style set over the data
    /// `loadgen write` generates. A 200 whose body carries an "error" (a failed
    /// statement) counts as a failure. The run stops after --requests or
    /// --duration, whichever comes first (10s if neither is given).
    Query(query::QueryArgs),

    /// Stand in for InfluxDB 1.x backends: answer /ping, /write and
    /// CREATE DATABASE like InfluxDB, count points per listen address, db and
    /// measurement, and serve the counts at GET /stats.
    ///
    /// Prints "loadgen sink listening on ADDR" per address on stderr, runs until
    /// SIGINT or SIGTERM, then prints the final stats as JSON on stdout.
    /// POST /stats/reset zeroes the counters. Failure injection: --fail-ratio,
    /// --delay, --down-for/--down-after/--down-mode.
    Sink(sink::SinkArgs),

    /// Read every request on one monoio worker and drop its body unread,
    /// answering 204: the least any server can spend on a write. Its CPU per
    /// point, under the same load as a proxy, is the floor under the proxy's.
    ///
    /// Prints "loadgen floor listening on ADDR" on stderr and runs until
    /// killed. Bodies must carry Content-Length (chunked gets 411).
    Floor(floor::FloorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Write(args) => write::run(&args),
        Command::Query(args) => query::run(&args),
        Command::Sink(args) => sink::run(&args),
        Command::Floor(args) => floor::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
