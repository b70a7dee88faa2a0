//! Prometheus text exposition format (version 0.0.4): metric families with
//! HELP and TYPE lines, samples with escaped label values.

use std::fmt::Write;

use super::sizes::Cumulative;

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(4096),
        }
    }

    /// Starts a family; its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; `labels` are (name, value) pairs, values escaped here.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The samples of one histogram of a `Kind::Histogram` family: a
    /// `_bucket` per bound (`le`, counts cumulative), the `+Inf` bucket,
    /// `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], read: &Cumulative) {
        let bucket = format!("{name}_bucket");
        let bounds: Vec<(String, u64)> = read
            .buckets()
            .map(|(bound, count)| (bound.to_string(), count))
            .chain([("+Inf".to_owned(), read.count)])
            .collect();
        for (bound, count) in &bounds {
            let mut with_le = labels.to_vec();
            with_le.push(("le", bound));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, read.sum);
        self.sample(&format!("{name}_count"), labels, read.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::sizes::BatchSizes;

    #[test]
    fn renders_families_and_escaped_labels() {
        let mut exposition = Exposition::new();
        exposition.family(
            "fluxgate_backend_up",
            Kind::Gauge,
            "1 while the backend answers.",
        );
        exposition.sample("fluxgate_backend_up", &[("backend", "a\"b\\c\nd")], 1);
        exposition.family(
            "fluxgate_uptime_seconds",
            Kind::Counter,
            "Seconds since start.",
        );
        exposition.sample("fluxgate_uptime_seconds", &[], 42);
        assert_eq!(
            exposition.finish(),
            "# HELP fluxgate_backend_up 1 while the backend answers.\n# TYPE fluxgate_backend_up gauge\n\
             fluxgate_backend_up{backend=\"a\\\"b\\\\c\\nd\"} 1\n\
             # HELP fluxgate_uptime_seconds Seconds since start.\n# TYPE fluxgate_uptime_seconds counter\n\
             fluxgate_uptime_seconds 42\n"
        );
    }

    #[test]
    fn renders_a_histogram_cumulatively_with_sum_and_count() {
        let sizes = BatchSizes::default();
        for points in [1, 7, 7, 4000, 200_000] {
            sizes.record(points);
        }
        let mut exposition = Exposition::new();
        exposition.family("b", Kind::Histogram, "Points per batch.");
        exposition.histogram("b", &[("backend", "a")], &sizes.cumulative());
        let text = exposition.finish();
        let expected = "# HELP b Points per batch.\n# TYPE b histogram\n\
             b_bucket{backend=\"a\",le=\"1\"} 1\n\
             b_bucket{backend=\"a\",le=\"10\"} 3\n\
             b_bucket{backend=\"a\",le=\"100\"} 3\n\
             b_bucket{backend=\"a\",le=\"500\"} 3\n\
             b_bucket{backend=\"a\",le=\"1000\"} 3\n\
             b_bucket{backend=\"a\",le=\"2500\"} 3\n\
             b_bucket{backend=\"a\",le=\"5000\"} 4\n\
             b_bucket{backend=\"a\",le=\"10000\"} 4\n\
             b_bucket{backend=\"a\",le=\"25000\"} 4\n\
             b_bucket{backend=\"a\",le=\"100000\"} 4\n\
             b_bucket{backend=\"a\",le=\"+Inf\"} 5\n\
             b_sum{backend=\"a\"} 204015\n\
             b_count{backend=\"a\"} 5\n";
        assert_eq!(text, expected);
    }
}
