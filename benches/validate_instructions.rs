//! Instructions per line of the write path, counted by callgrind: a figure
//! that does not move with the machine's load, unlike the timings of the
//! criterion benches. Run by `scripts/validator-instructions.sh`; on its own,
//! `validate_instructions <kind> <rounds>` takes 5000 `cpu` lines `rounds`
//! times through one of:
//!
//! - `plain`, `escaped`: scan + validate, plain or escaped lines;
//! - `ingest`: scan, validate, route and copy into batches (plain lines);
//! - `early-ingest`: the same, three quarters of it ingested in three
//!   reads while it arrives (`api::early`), the rest at the end.
//!
//! and checks every line is accepted.

mod common;

use std::time::SystemTime;

use fluxgate::api::write::ingest;
use fluxgate::batch::Batcher;
use fluxgate::lp::line::parse_point;
use fluxgate::lp::scan::scan_lines;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    let body = common::cpu_body(5000, kind == "escaped");
    let valid = match kind.as_str() {
        "ingest" => ingest_rounds(&body, rounds, false),
        "early-ingest" => ingest_rounds(&body, rounds, true),
        _ => (0..rounds)
            .map(|_| {
                scan_lines(std::hint::black_box(&body))
                    .filter(|point| parse_point(point).is_ok())
                    .count()
            })
            .sum(),
    };
    assert_eq!(valid, 5000 * rounds);
}

/// Lines accepted over `rounds` ingests of `body` into two replicated
/// backends' batches (1 MiB, as configured by default).
fn ingest_rounds(body: &[u8], rounds: usize, early: bool) -> usize {
    let router = common::replicated_router();
    let target = common::TARGET;
    let mut batcher = Batcher::new(router.set_count(), 1 << 20);
    let mut scratch = Vec::new();
    let mut accepted = 0;
    for _ in 0..rounds {
        let body = std::hint::black_box(body);
        let report = if early {
            common::ingest_early(&router, &mut batcher, &mut scratch, body)
        } else {
            let now = SystemTime::now();
            ingest(&router, &mut batcher, &mut scratch, &target, body, now)
        };
        accepted += report.accepted;
        batcher.flush_all();
        batcher.take_ready().for_each(drop);
    }
    accepted
}
