//! The end-of-run report of `loadgen write` and `loadgen query`: per-thread counts
//! merged into one [`Report`], printed as text or as one JSON object, and the
//! latency distribution in HdrHistogram's percentile text format (`.hgrm`,
//! readable by its plotter).
//!
//! The report counts *units*: points for writes, queries for queries. Rates use
//! the run's wall time; "MB" is 10^6 bytes of request heads and bodies as sent
//! (compressed when `--gzip`). Latency covers every HTTP response, errors
//! included; requests lost to connection errors have none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::send::{ConnStats, LATENCY_SIGFIG, MAX_LATENCY_US};

/// Latency percentiles in the report.
const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];
/// Histogram values are µs; reports are in ms.
const US_PER_MS: f64 = 1_000.0;
/// Steps per halving of the distance to 100% in the `.hgrm` output; 5 is
/// HdrHistogram's `outputPercentileDistribution` default.
const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The settings worth repeating next to the numbers.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub url: String,
    pub db: String,
    pub load: Load,
    pub connections: usize,
    pub rate: Option<f64>,
    /// Requests the open-loop schedule called for (`--rate` with a stop
    /// condition); more than were sent means the target fell behind.
    pub scheduled_requests: Option<u64>,
}

/// What was sent: the subcommand and its shape.
#[derive(Clone, Debug)]
pub enum Load {
    Write {
        hosts: u64,
        measurements: u64,
        sorted_tags: bool,
        batch_lines: usize,
        gzip: bool,
    },
    Query {
        /// Distinct query strings sent in turn.
        queries: usize,
    },
}

impl Load {
    /// What one unit is: "points" or "queries".
    pub fn unit(&self) -> &'static str {
        match self {
            Load::Write { .. } => "points",
            Load::Query { .. } => "queries",
        }
    }
}

/// Everything the run counted, merged over connections.
pub struct Report {
    pub info: RunInfo,
    pub elapsed: Duration,
    /// Points (write) or queries (query) in successful requests.
    pub units: u64,
    pub requests: u64,
    pub requests_ok: u64,
    pub bytes_sent: u64,
    pub status_errors: BTreeMap<u16, u64>,
    pub error_samples: BTreeMap<u16, String>,
    pub connection_errors: u64,
    pub connection_error_sample: Option<String>,
    /// Latency in µs.
    pub latency_us: Histogram<u64>,
}

impl Report {
    pub fn merge(info: RunInfo, threads: Vec<ConnStats>, elapsed: Duration) -> Report {
        let mut report = Report {
            info,
            elapsed,
            units: 0,
            requests: 0,
            requests_ok: 0,
            bytes_sent: 0,
            status_errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            connection_errors: 0,
            connection_error_sample: None,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_SIGFIG)
                .expect("valid histogram bounds"),
        };
        for t in threads {
            report.units += t.units_ok;
            report.requests += t.requests;
            report.requests_ok += t.requests_ok;
            report.bytes_sent += t.bytes_sent;
            for (status, n) in t.status_errors {
                *report.status_errors.entry(status).or_default() += n;
            }
            for (status, sample) in t.error_samples {
                report.error_samples.entry(status).or_insert(sample);
            }
            report.connection_errors += t.connection_errors;
            if report.connection_error_sample.is_none() {
                report.connection_error_sample = t.connection_error_sample;
            }
            report
                .latency_us
                .add(&t.latency_us)
                .expect("histograms share bounds");
        }
        report
    }

    /// Scheduled requests never started, when there were any.
    pub fn unsent_requests(&self) -> Option<u64> {
        let unsent = self.info.scheduled_requests?.saturating_sub(self.requests);
        (unsent > 0).then_some(unsent)
    }

    /// Requests that got any HTTP response.
    pub fn responses(&self) -> u64 {
        self.requests - self.connection_errors
    }

    fn per_second(&self, count: f64) -> f64 {
        count / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn latency_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_percentile(percentile) as f64 / US_PER_MS
    }

    fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / US_PER_MS
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let info = &self.info;
        let unit = info.load.unit();
        let mut out = String::new();
        let rate = info
            .rate
            .map_or("unlimited".to_owned(), |r| format!("{r} req/s"));
        match &info.load {
            Load::Write {
                hosts,
                measurements,
                sorted_tags,
                batch_lines,
                gzip,
            } => {
                let _ = writeln!(
                    out,
                    "loadgen write -> {} db={}: {hosts} hosts x {measurements} measurements{}, batch {batch_lines}, {} connections, gzip {}, rate {rate}",
                    info.url,
                    info.db,
                    if *sorted_tags { ", tags sorted" } else { "" },
                    info.connections,
                    if *gzip { "on" } else { "off" },
                );
            }
            Load::Query { queries } => {
                let _ = writeln!(
                    out,
                    "loadgen query -> {} db={}: {queries} distinct queries, {} connections, rate {rate}",
                    info.url, info.db, info.connections,
                );
            }
        }
        let _ = writeln!(out, "{:<12} {}", unit, self.units);
        let _ = writeln!(
            out,
            "requests     {} ({} ok, {} failed)",
            self.requests,
            self.requests_ok,
            self.requests - self.requests_ok
        );
        if let Some(unsent) = self.unsent_requests() {
            let _ = writeln!(
                out,
                "unsent       {unsent} scheduled requests not started by the end (target slower than --rate)"
            );
        }
        let _ = writeln!(out, "elapsed      {:.3} s", self.elapsed.as_secs_f64());
        let _ = writeln!(
            out,
            "{:<12} {:.0}",
            format!("{unit}/s"),
            self.per_second(self.units as f64)
        );
        let _ = writeln!(
            out,
            "requests/s   {:.1}",
            self.per_second(self.requests as f64)
        );
        let _ = writeln!(
            out,
            "MB/s sent    {:.2}",
            self.per_second(self.bytes_sent as f64) / 1e6
        );
        if self.status_errors.is_empty() && self.connection_errors == 0 {
            let _ = writeln!(out, "errors       none");
        } else {
            let _ = writeln!(out, "errors");
            for (status, n) in &self.status_errors {
                let sample = self.error_samples.get(status).map_or("", String::as_str);
                let _ = writeln!(out, "  HTTP {status}   {n}  {sample}");
            }
            if self.connection_errors > 0 {
                let sample = self.connection_error_sample.as_deref().unwrap_or("");
                let _ = writeln!(out, "  connection {}  {sample}", self.connection_errors);
            }
        }
        let _ = write!(out, "latency ms  ");
        for (name, p) in PERCENTILES {
            let _ = write!(out, " {name} {:.3}", self.latency_ms(p));
        }
        let _ = writeln!(
            out,
            " max {:.3}  ({} responses, from intended send time)",
            self.max_ms(),
            self.responses()
        );
        out
    }

    /// The same numbers as one JSON object on one line.
    pub fn to_json(&self) -> String {
        let info = &self.info;
        let unit = info.load.unit();
        let mut out = String::from("{");
        let _ = write!(
            out,
            "\"url\":{},\"db\":{}",
            json_string(&info.url),
            json_string(&info.db)
        );
        match &info.load {
            Load::Write {
                hosts,
                measurements,
                sorted_tags,
                batch_lines,
                gzip,
            } => {
                let _ = write!(
                    out,
                    ",\"hosts\":{hosts},\"measurements\":{measurements},\"sorted_tags\":{sorted_tags},\"batch_size\":{batch_lines},\"gzip\":{gzip}",
                );
            }
            Load::Query { queries } => {
                let _ = write!(out, ",\"distinct_queries\":{queries}");
            }
        }
        let _ = write!(out, ",\"connections\":{}", info.connections);
        let _ = write!(
            out,
            ",\"rate\":{}",
            info.rate.map_or("null".to_owned(), json_number)
        );
        let _ = write!(
            out,
            ",\"{unit}\":{},\"requests\":{},\"requests_ok\":{},\"requests_unsent\":{},\"elapsed_s\":{}",
            self.units,
            self.requests,
            self.requests_ok,
            self.unsent_requests().unwrap_or(0),
            json_number(self.elapsed.as_secs_f64())
        );
        let _ = write!(
            out,
            ",\"{unit}_per_s\":{},\"requests_per_s\":{},\"bytes_sent\":{},\"mb_per_s\":{}",
            json_number(self.per_second(self.units as f64)),
            json_number(self.per_second(self.requests as f64)),
            self.bytes_sent,
            json_number(self.per_second(self.bytes_sent as f64) / 1e6)
        );
        out.push_str(",\"errors\":{");
        let mut first = true;
        for (status, n) in &self.status_errors {
            let _ = write!(out, "{}\"{status}\":{n}", if first { "" } else { "," });
            first = false;
        }
        if self.connection_errors > 0 {
            let _ = write!(
                out,
                "{}\"connection\":{}",
                if first { "" } else { "," },
                self.connection_errors
            );
        }
        out.push_str("},\"error_samples\":{");
        let mut first = true;
        for (status, sample) in &self.error_samples {
            let _ = write!(
                out,
                "{}\"{status}\":{}",
                if first { "" } else { "," },
                json_string(sample)
            );
            first = false;
        }
        if let Some(sample) = &self.connection_error_sample {
            let _ = write!(
                out,
                "{}\"connection\":{}",
                if first { "" } else { "," },
                json_string(sample)
            );
        }
        out.push_str("},\"latency_ms\":{");
        for (name, p) in PERCENTILES {
            let _ = write!(out, "\"{name}\":{},", json_number(self.latency_ms(p)));
        }
        let _ = write!(out, "\"max\":{}}}", json_number(self.max_ms()));
        out.push('}');
        out
    }

    /// Writes the latency distribution in ms as HdrHistogram's
    /// `outputPercentileDistribution` does (Java `AbstractHistogram`).
    ///
    /// # Errors
    ///
    /// Whatever writing to `out` returns.
    pub fn write_hgrm(&self, out: &mut impl Write) -> io::Result<()> {
        let h = &self.latency_us;
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total = 0;
        if !h.is_empty() {
            for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
                total += v.count_since_last_iteration();
                let value = v.value_iterated_to() as f64 / US_PER_MS;
                let quantile = v.quantile_iterated_to();
                if quantile < 1.0 {
                    writeln!(
                        out,
                        "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                        1.0 / (1.0 - quantile)
                    )?;
                } else {
                    writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")?;
                }
            }
        }
        let mean = if !h.is_empty() {
            h.mean() / US_PER_MS
        } else {
            0.0
        };
        let stdev = if !h.is_empty() {
            h.stdev() / US_PER_MS
        } else {
            0.0
        };
        writeln!(
            out,
            "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
        )?;
        writeln!(
            out,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            self.max_ms(),
            h.len()
        )?;
        // HdrHistogram's sub-bucket count: 2 * 10^sigfig rounded up to a power of two.
        let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
            h.buckets()
        )
    }
}

/// Where the report goes: text or JSON on stdout, and an optional `.hgrm` file.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    pub json: bool,
    pub hgrm: Option<&'a Path>,
}

impl Report {
    /// Prints the report as `output` asks, then fails if no request got any
    /// answer (the target was down), so scripts notice.
    ///
    /// # Errors
    ///
    /// Writing the files or stdout, and a run without a single response.
    pub fn print(&self, output: Output<'_>) -> Result<()> {
        if let Some(file) = output.hgrm {
            let mut out = BufWriter::new(
                File::create(file).with_context(|| format!("creating {}", file.display()))?,
            );
            self.write_hgrm(&mut out)?;
            out.flush()?;
        }
        let mut stdout = io::stdout().lock();
        if output.json {
            writeln!(stdout, "{}", self.to_json())?;
        } else {
            if stdout.is_terminal() {
                writeln!(stdout)?;
            }
            write!(stdout, "{}", self.to_text())?;
        }
        if self.requests > 0 && self.responses() == 0 {
            bail!(
                "no request got an answer from {} ({})",
                self.info.url,
                self.connection_error_sample
                    .as_deref()
                    .unwrap_or("no error text")
            );
        }
        Ok(())
    }
}

/// A finite JSON number (JSON has no NaN or infinity).
pub fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".to_owned()
    }
}

/// A JSON string literal.
pub fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut latency = Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_SIGFIG).unwrap();
        for us in 1..=1000 {
            latency.record(us * 10).unwrap();
        }
        let thread = ConnStats {
            latency_us: latency,
            requests: 1002,
            requests_ok: 999,
            units_ok: 999 * 5000,
            bytes_sent: 1_000_000_000,
            status_errors: BTreeMap::from([(400, 1)]),
            error_samples: BTreeMap::from([(400, "{\"error\":\"bad \\\"line\\\"\"}".to_owned())]),
            connection_errors: 2,
            connection_error_sample: Some("refused\n".to_owned()),
        };
        let info = RunInfo {
            url: "http://127.0.0.1:8086".to_owned(),
            db: "loadgen".to_owned(),
            load: Load::Write {
                hosts: 100,
                measurements: 1,
                sorted_tags: false,
                batch_lines: 5000,
                gzip: false,
            },
            connections: 1,
            rate: None,
            scheduled_requests: None,
        };
        Report::merge(info, vec![thread], Duration::from_secs(10))
    }

    #[test]
    fn text_report_has_rates_errors_and_percentiles() {
        let text = report().to_text();
        for want in [
            "points       4995000\n",
            "requests     1002 (999 ok, 3 failed)\n",
            "points/s     499500\n",
            "MB/s sent    100.00\n",
            "HTTP 400   1",
            "connection 2  refused",
            "p50 5.003",
            "max 10.007",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn json_report_escapes_strings_and_names_every_number() {
        let json = report().to_json();
        for want in [
            "\"points\":4995000,",
            "\"errors\":{\"400\":1,\"connection\":2}",
            "\"400\":\"{\\\"error\\\":\\\"bad \\\\\\\"line\\\\\\\"\\\"}\"",
            "\"connection\":\"refused\\n\"",
            "\"rate\":null",
            "\"p99.9\":",
        ] {
            assert!(json.contains(want), "missing {want:?} in\n{json}");
        }
        assert!(json.starts_with('{') && json.ends_with("}}"));
    }

    #[test]
    fn query_report_counts_queries() {
        let mut report = report();
        report.info.load = Load::Query { queries: 6 };
        report.units = report.requests_ok;
        let text = report.to_text();
        for want in [
            "loadgen query -> http://127.0.0.1:8086 db=loadgen: 6 distinct queries",
            "queries      999\n",
            "queries/s    100\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let json = report.to_json();
        for want in [
            "\"distinct_queries\":6,",
            "\"queries\":999,",
            "\"queries_per_s\":99.900,",
        ] {
            assert!(json.contains(want), "missing {want:?} in\n{json}");
        }
        assert!(!json.contains("\"points\""), "{json}");
    }

    #[test]
    fn hgrm_output_follows_hdrhistogram_layout() {
        let mut out = Vec::new();
        report().write_hgrm(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        assert!(text.contains("#[Max     =       10.007, Total count    =         1000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
        let last_value = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(
            last_value.contains(" 1.000000000000       1000"),
            "{last_value}"
        );
    }
}
