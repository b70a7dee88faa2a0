//! Instructions per line of scan + validate, counted by callgrind: a figure
//! that does not move with the machine's load, unlike the timings of the
//! criterion benches. Run by `scripts/validator-instructions.sh`; on its own,
//! `validate_instructions <plain|escaped> <rounds>` scans 5000 `cpu` lines
//! `rounds` times and checks every line is accepted.

mod common;

use fluxgate::lp::line::parse_line;
use fluxgate::lp::scan::scan_lines;

fn main() {
    let mut args = std::env::args().skip(1);
    let escapes = args.next().as_deref() == Some("escaped");
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    let body = common::cpu_body(5000, escapes);
    let mut valid = 0;
    for _ in 0..rounds {
        valid += scan_lines(std::hint::black_box(&body))
            .filter(|(_, line)| parse_line(line).is_ok())
            .count();
    }
    assert_eq!(valid, 5000 * rounds);
}
