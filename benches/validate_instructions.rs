//! Instructions per line of scan + validate, counted by callgrind: a figure
//! that does not move with the machine's load, unlike the timings of the
//! criterion benches. Run by `scripts/validator-instructions.sh`; on its own,
//! `validate_instructions <plain|escaped> <rounds>` scans 5000 `cpu` lines
//! `rounds` times and checks every line is accepted.

use fluxgate::lp::line::parse_line;
use fluxgate::lp::scan::scan_lines;

fn body(escapes: bool) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..5000 {
        let host = if escapes {
            format!("host\\ {}\\,x", i % 100)
        } else {
            format!("host_{}", i % 100)
        };
        body.push_str(&format!(
            "cpu,hostname={host},region=eu-west-1,datacenter=eu-west-1a,rack=42,os=Ubuntu16.10,arch=x86,\
             team=NYC,service=18,service_version=1,service_environment=production \
             usage_user=58.1317,usage_system=2.6454,usage_idle=24.1239,usage_nice=61.0421,usage_iowait=22.9345,\
             usage_irq=63.6204,usage_softirq=6.6546,usage_steal=37.9463,usage_guest=36.5812,usage_guest_nice=4.9213 \
             {}\n",
            1_451_606_400_000_000_000_i64 + i64::from(i) * 1_000_000_000
        ));
    }
    body.into_bytes()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let escapes = args.next().as_deref() == Some("escaped");
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    let body = body(escapes);
    let mut valid = 0;
    for _ in 0..rounds {
        valid += scan_lines(std::hint::black_box(&body))
            .filter(|(_, line)| parse_line(line).is_ok())
            .count();
    }
    assert_eq!(valid, 5000 * rounds);
}
