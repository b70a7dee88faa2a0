//! The write hot path, stage by stage and whole: scan + validate, gunzip, and
//! `ingest` (scan, validate, route, batch) from a request body to batch buffers.
//!
//! Inputs are the classic devops `cpu` lines (10 tags, 10 float fields, ~386
//! bytes), generated once. Every benchmark checks its answer (lines counted).
//! Run: `cargo bench --bench write_path`.

mod common;

use std::fmt;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fluxgate::api::write::ingest;
use fluxgate::batch::Batcher;
use fluxgate::lp::gzip::Gunzip;
use fluxgate::lp::line::parse_line;
use fluxgate::lp::scan::scan_lines;

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

criterion_group!(benches, scan_and_validate, gunzip, whole_ingest);
criterion_main!(benches);
