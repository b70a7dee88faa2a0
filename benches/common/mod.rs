//! Inputs shared by the benches (a folder, so cargo does not take it for a
//! bench of its own).

use std::time::SystemTime;

use fluxgate::api::early::Partial;
use fluxgate::api::write::IngestReport;
use fluxgate::batch::{Batcher, Target};
use fluxgate::config::Config;
use fluxgate::lp::precision::Precision;
use fluxgate::route::Router;

/// Where the benches write: database "bench", nanosecond timestamps.
pub const TARGET: Target<'static> = Target {
    db: "bench",
    rp: None,
    precision: Precision::Nanoseconds,
    authorization: None,
};

/// `body` ingested as a connection does when it arrives in four reads: three
/// quarters of it while it arrives (into batches of its own), the rest at the
/// end, into `batcher` (frozen batches are left in it).
pub fn ingest_early(
    router: &Router,
    batcher: &mut Batcher,
    scratch: &mut Vec<u8>,
    body: &[u8],
) -> IngestReport {
    // A batcher's longest line is its batch size.
    let mut partial = Partial::new(router.set_count(), batcher.max_line_bytes(), body.len());
    for quarter in 1..4 {
        partial.advance(router, &TARGET, &body[..body.len() * quarter / 4]);
    }
    let now = SystemTime::now();
    partial.commit_into(router, &TARGET, batcher, scratch, now, body, None)
}

/// Routes for two backends, every point replicated to both (`mem` to one).
pub fn replicated_router() -> Router {
    let config = Config::from_toml(
        "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\nmem = [\"a\"]",
    )
    .unwrap();
    Router::new(&config)
}

/// How the generated `cpu` lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Tags in the devops data set's order (not sorted), no escapes.
    Plain,
    /// As `Plain`, but the host tag holds an escaped space and comma.
    Escaped,
    /// Tags sorted by key, as Telegraf and the InfluxDB client libraries
    /// write them.
    SortedTags,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Plain => "plain",
            Shape::Escaped => "escaped",
            Shape::SortedTags => "sorted",
        }
    }
}

/// `lines` lines of the classic devops `cpu` shape (10 tags, 10 float
/// fields, about 386 bytes), with increasing timestamps, written as `shape`
/// says.
pub fn cpu_body(lines: usize, shape: Shape) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..lines {
        let host = if shape == Shape::Escaped {
            format!("host\\ {}\\,x", i % 100)
        } else {
            format!("host_{}", i % 100)
        };
        let tags = if shape == Shape::SortedTags {
            format!(
                "arch=x86,datacenter=eu-west-1a,hostname={host},os=Ubuntu16.10,rack=42,region=eu-west-1,\
                 service=18,service_environment=production,service_version=1,team=NYC"
            )
        } else {
            format!(
                "hostname={host},region=eu-west-1,datacenter=eu-west-1a,rack=42,os=Ubuntu16.10,arch=x86,\
                 team=NYC,service=18,service_version=1,service_environment=production"
            )
        };
        body.push_str(&format!(
            "cpu,{tags} \
             usage_user=58.1317,usage_system=2.6454,usage_idle=24.1239,usage_nice=61.0421,usage_iowait=22.9345,\
             usage_irq=63.6204,usage_softirq=6.6546,usage_steal=37.9463,usage_guest=36.5812,usage_guest_nice=4.9213 \
             {}\n",
            1_451_606_400_000_000_000_i64 + i as i64 * 1_000_000_000
        ));
    }
    body.into_bytes()
}
