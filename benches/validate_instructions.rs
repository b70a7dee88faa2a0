//! Instructions per line of the write path, counted by callgrind: a figure
//! that does not move with the machine's load, unlike the timings of the
//! criterion benches. Run by `scripts/validator-instructions.sh`; on its own,
//! `validate_instructions <kind> <rounds>` takes 5000 `cpu` lines `rounds`
//! times through one of:
//!
//! - `plain`, `escaped`, `sorted`: scan + validate, plain lines, lines with
//!   escapes, or plain lines with their tags sorted by key;
//! - `ingest`: scan, validate, route and copy into batches (plain lines);
//! - `early-ingest`: the same, three quarters of it ingested in three
//!   reads while it arrives (`api::early`), the rest at the end.
//!
//! and checks every line is accepted. With `--time` after the rounds it also
//! times each round and prints nanoseconds per line: the minimum, tenth
//! percentile and median. On a shared machine the minimum of many short
//! rounds is the steadiest figure to compare two builds by.

mod common;

use common::Shape;

use std::time::{Instant, SystemTime};

use fluxgate::api::write::ingest;
use fluxgate::batch::Batcher;
use fluxgate::lp::line::parse_line;
use fluxgate::lp::scan::scan_lines;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    let timed = args.next().as_deref() == Some("--time");
    // The scan kinds are named after their body's shape; the ingest kinds
    // take plain lines.
    let shape = [Shape::Escaped, Shape::SortedTags]
        .into_iter()
        .find(|shape| shape.name() == kind)
        .unwrap_or(Shape::Plain);
    let body = common::cpu_body(LINES, shape);
    let mut round: Box<dyn FnMut() -> usize> = match kind.as_str() {
        "ingest" => ingest_round(&body, false),
        "early-ingest" => ingest_round(&body, true),
        _ => Box::new(|| {
            scan_lines(std::hint::black_box(&body))
                .filter(|(_, line)| parse_line(line).is_ok())
                .count()
        }),
    };
    let mut nanos_per_line = Vec::with_capacity(rounds);
    let mut valid = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        valid += round();
        nanos_per_line.push(start.elapsed().as_nanos() as f64 / LINES as f64);
    }
    assert_eq!(valid, LINES * rounds);
    if timed {
        nanos_per_line.sort_by(f64::total_cmp);
        let at = |share: f64| nanos_per_line[(share * (rounds - 1) as f64) as usize];
        println!(
            "{kind}: ns per line min {:.1} p10 {:.1} median {:.1} ({rounds} rounds)",
            at(0.0),
            at(0.1),
            at(0.5)
        );
    }
}

/// Lines per body.
const LINES: usize = 5000;

/// A round: one ingest of `body` into two replicated backends' batches (1 MiB,
/// as configured by default), returning the lines accepted.
fn ingest_round(body: &[u8], early: bool) -> Box<dyn FnMut() -> usize + '_> {
    let router = common::replicated_router();
    let target = common::TARGET;
    let mut batcher = Batcher::new(router.set_count(), 1 << 20);
    let mut scratch = Vec::new();
    Box::new(move || {
        let body = std::hint::black_box(body);
        let report = if early {
            common::ingest_early(&router, &mut batcher, &mut scratch, body)
        } else {
            let now = SystemTime::now();
            ingest(
                &router,
                &mut batcher,
                &mut scratch,
                &target,
                body,
                now,
                None,
            )
        };
        batcher.flush_all();
        batcher.take_ready().for_each(drop);
        report.accepted
    })
}
