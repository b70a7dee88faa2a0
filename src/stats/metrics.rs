//! Prometheus text exposition format (version 0.0.4): metric families with
//! HELP and TYPE lines, samples with escaped label values.

use std::fmt::Write;

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
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

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
