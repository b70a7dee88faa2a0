//! The write hot path, stage by stage and whole: scan + validate, gunzip,
//! routing, batch building, and `ingest` (scan, validate, route, batch) from a
//! request body to batch buffers.
//!
//! Inputs are the classic devops `cpu` lines (10 tags, 10 float fields, ~386
//! bytes), generated once. Every benchmark checks its answer (lines counted).
//! Run: `cargo bench --bench write_path`.

mod common;

use std::fmt;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fluxgate::api::write::ingest;
use fluxgate::batch::Batcher;
use fluxgate::config::Config;
use fluxgate::lp::gzip::Gunzip;
use fluxgate::lp::line::parse_line;
use fluxgate::lp::scan::scan_lines;
use fluxgate::route::Router;

use common::Shape;

/// A request body shape; its `Display` is the benchmark id.
#[derive(Clone, Copy)]
struct Scenario {
    lines: usize,
    shape: Shape,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_lines_cpu_{}", self.lines, self.shape.name())
    }
}

impl Scenario {
    fn body(self) -> Vec<u8> {
        common::cpu_body(self.lines, self.shape)
    }
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        lines: 5000,
        shape: Shape::Plain,
    },
    Scenario {
        lines: 5000,
        shape: Shape::Escaped,
    },
    Scenario {
        lines: 5000,
        shape: Shape::SortedTags,
    },
];

fn scan_and_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_validate");
    for scenario in SCENARIOS {
        let body = scenario.body();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(scenario), &body, |b, body| {
            b.iter(|| {
                let valid = scan_lines(body)
                    .filter(|(_, line)| parse_line(line).is_ok())
                    .count();
                assert_eq!(valid, scenario.lines);
            });
        });
    }
    group.finish();
}

fn gunzip(c: &mut Criterion) {
    let mut group = c.benchmark_group("gunzip");
    let scenario = SCENARIOS[0];
    let body = scenario.body();
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut compressed = vec![0; compressor.gzip_compress_bound(body.len())];
    let len = compressor.gzip_compress(&body, &mut compressed).unwrap();
    compressed.truncate(len);
    let mut gunzip = Gunzip::new();
    let mut out = Vec::new();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(BenchmarkId::from_parameter(scenario), |b| {
        b.iter(|| {
            gunzip.decompress(&compressed, &mut out, 1 << 30).unwrap();
            assert_eq!(out.len(), body.len());
        });
    });
    group.finish();
}

/// Routes for four backends as a sharded deployment writes them: some
/// measurements by name, some by prefix, the rest by `_default_`.
fn sharded_router() -> Router {
    let config = Config::from_toml(
        "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
         [[backends]]\nname = \"c\"\nurl = \"http://h:3\"\n[[backends]]\nname = \"d\"\nurl = \"http://h:4\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\ncpu = [\"c\", \"d\"]\nmem = [\"c\", \"d\"]\n\
         disk = [\"a\", \"c\"]\nnet = [\"b\", \"d\"]\nnginx = [\"a\", \"d\"]\nproc = [\"b\", \"c\"]",
    )
    .unwrap();
    Router::new(&config)
}

/// Measurement names a router with exact, prefix and default routes meets:
/// one of each kind of hit, with the set each must land in.
fn routing(c: &mut Criterion) {
    let router = sharded_router();
    // Each name with the backends it must reach (a = 0 ... d = 3): exact
    // routes, prefixes of longer names, and the default.
    let names: [(&[u8], [usize; 2]); 8] = [
        (b"cpu", [2, 3]),
        (b"mem", [2, 3]),
        (b"diskio", [0, 2]),
        (b"disk", [0, 2]),
        (b"net", [1, 3]),
        (b"nginx_requests", [0, 3]),
        (b"kernel", [0, 1]),
        (b"procstat_lookup", [1, 2]),
    ];
    let expected: Vec<(&[u8], _)> = names
        .iter()
        .map(|&(name, backends)| {
            let set = router.route(name).expect("every name has a route");
            assert_eq!(
                router.backends(set),
                backends,
                "{}",
                String::from_utf8_lossy(name)
            );
            (name, Some(set))
        })
        .collect();
    // One route lookup per point: this many per 5000-line body.
    let lookups: Vec<_> = expected.iter().cycle().take(5000).collect();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(lookups.len() as u64));
    group.bench_function("exact_prefix_default", |b| {
        b.iter(|| {
            let right = lookups
                .iter()
                .filter(|(name, set)| router.route(std::hint::black_box(name)) == *set)
                .count();
            assert_eq!(right, lookups.len());
        });
    });
    group.finish();
}

/// Copying validated lines into batches, and freezing them, without the scan
/// and validation in front.
fn batch_building(c: &mut Criterion) {
    let router = common::replicated_router();
    let set = router.route(b"cpu").expect("the default route");
    let mut group = c.benchmark_group("batch");
    for scenario in SCENARIOS {
        let body = scenario.body();
        let lines: Vec<&[u8]> = scan_lines(&body).map(|(_, line)| line).collect();
        assert_eq!(lines.len(), scenario.lines);
        let mut batcher = Batcher::new(router.set_count(), 1 << 20);
        group.throughput(Throughput::Elements(scenario.lines as u64));
        group.bench_with_input(BenchmarkId::from_parameter(scenario), &lines, |b, lines| {
            b.iter(|| {
                let now = Instant::now();
                batcher.begin_request();
                batcher.expect_bytes(body.len());
                for line in lines {
                    batcher.append(set, &common::TARGET, line, b"", now);
                }
                batcher.flush_all();
                let batched: usize = batcher.take_ready().map(|(_, batch)| batch.lines).sum();
                assert_eq!(batched, scenario.lines);
            });
        });
    }
    group.finish();
}

fn whole_ingest(c: &mut Criterion) {
    let router = common::replicated_router();
    let target = common::TARGET;
    let mut group = c.benchmark_group("ingest");
    for scenario in SCENARIOS {
        let body = scenario.body();
        let mut batcher = Batcher::new(router.set_count(), 1 << 20);
        let mut scratch = Vec::new();
        group.throughput(Throughput::Elements(scenario.lines as u64));
        group.bench_with_input(BenchmarkId::from_parameter(scenario), &body, |b, body| {
            b.iter(|| {
                let report = ingest(
                    &router,
                    &mut batcher,
                    &mut scratch,
                    &target,
                    body,
                    SystemTime::now(),
                    None,
                );
                assert_eq!(report.accepted, scenario.lines);
                batcher.flush_all();
                assert!(batcher.take_ready().count() >= 1);
            });
        });
        // The same body, three quarters of it ingested in three reads while
        // it arrives (into batches of its own), the rest at the end.
        let id = BenchmarkId::new("early", scenario);
        group.bench_with_input(id, &body, |b, body| {
            b.iter(|| {
                let report = common::ingest_early(&router, &mut batcher, &mut scratch, body);
                assert_eq!(report.accepted, scenario.lines);
                batcher.flush_all();
                assert!(batcher.take_ready().count() >= 1);
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    scan_and_validate,
    gunzip,
    routing,
    batch_building,
    whole_ingest
);
criterion_main!(benches);
