//! The spool: append (plain and deflated), append + sync per batch, replay
//! (peek + ack), and recovery (open) of a full spool file.
//!
//! Batches are line protocol (the devops `cpu` lines, varied values),
//! generated once. One iteration is one batch, so batches/s is 1 / the time
//! criterion reports, and MB/s is its throughput line. Every benchmark checks
//! its answer (records counted, bodies compared byte for byte, outside the
//! timed part). The spool is a 256 MiB file in a temp dir under
//! `$FLUXGATE_BENCH_DIR` (default: the system temp dir; put it on the disk
//! you care about, msync costs depend on it), removed in `Drop`.
//!
//! Run: `cargo bench --bench spool`.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fluxgate::batch::BatchKey;
use fluxgate::lp::precision::Precision;
use fluxgate::spool::{Spool, SpoolError, SpoolOptions};

/// File size: small enough to create quickly, large enough for many batches.
const CAPACITY: u64 = 256 << 20;

/// A batch shape; its `Display` is the benchmark id.
#[derive(Clone, Copy)]
struct Scenario {
    batch_bytes: usize,
    compress: bool,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = if self.batch_bytes >= 1 << 20 {
            format!("{}MiB", self.batch_bytes >> 20)
        } else {
            format!("{}KiB", self.batch_bytes >> 10)
        };
        let kind = if self.compress { "deflate" } else { "plain" };
        write!(f, "{size}_lp_{kind}")
    }
}

const MIB_PLAIN: Scenario = Scenario {
    batch_bytes: 1 << 20,
    compress: false,
};
const MIB_DEFLATE: Scenario = Scenario {
    batch_bytes: 1 << 20,
    compress: true,
};
const SMALL_PLAIN: Scenario = Scenario {
    batch_bytes: 16 << 10,
    compress: false,
};

/// A batch body of whole lines, at most `batch_bytes` long, and its line count.
struct Batch {
    body: Vec<u8>,
    lines: usize,
}

impl Scenario {
    fn batch(self) -> Batch {
        let mut body = Vec::with_capacity(self.batch_bytes);
        let mut lines = 0;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        loop {
            let r = next();
            let line = format!(
                "cpu,hostname=host_{},region=eu-west-1,datacenter=eu-west-1a,rack={},os=Ubuntu16.10,\
                 arch=x86,team=NYC,service={},service_version=1,service_environment=production \
                 usage_user={}.{},usage_system={}.{},usage_idle={}.{},usage_iowait={} {}\n",
                r % 1000,
                r % 97,
                r % 19,
                r % 100,
                (r >> 8) % 10_000,
                (r >> 20) % 100,
                (r >> 28) % 10_000,
                (r >> 36) % 100,
                (r >> 44) % 10_000,
                (r >> 50) % 100,
                1_451_606_400_000_000_000_u64 + lines as u64 * 10_000_000_000
            );
            if body.len() + line.len() > self.batch_bytes {
                break;
            }
            body.extend_from_slice(line.as_bytes());
            lines += 1;
        }
        Batch { body, lines }
    }

    fn options(self) -> SpoolOptions {
        SpoolOptions {
            capacity: CAPACITY,
            compress: self.compress,
        }
    }
}

fn key() -> BatchKey {
    BatchKey {
        db: "telegraf".into(),
        rp: Some("autogen".into()),
        precision: Precision::Nanoseconds,
        authorization: Some("Basic dXNlcjpwYXNz".into()),
    }
}

/// A temp dir for one spool file, removed on drop.
struct BenchDir(PathBuf);

impl BenchDir {
    fn new(name: &str) -> BenchDir {
        let base =
            std::env::var_os("FLUXGATE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!(
            "fluxgate-bench-spool-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        BenchDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("backend.spool")
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path, scenario: Scenario) -> Spool {
    let (spool, _) = Spool::open(path, scenario.options()).expect("open spool");
    spool
}

/// Checks that the oldest pending batch is `batch`, byte for byte.
fn check_oldest(spool: &mut Spool, batch: &Batch) {
    let oldest = spool.peek().expect("peek").expect("a batch");
    assert_eq!(oldest.lines, batch.lines);
    assert!(oldest.body == batch.body, "spooled body differs");
}

/// Acks everything (untimed: makes room when the spool is full).
fn drain(spool: &mut Spool, positions: &mut VecDeque<u64>) {
    while let Some(position) = positions.pop_front() {
        spool.ack(position).expect("ack");
    }
    spool.sync().expect("sync");
}

/// Appends one batch per iteration (with `sync` after each when `sync`),
/// draining untimed whenever the spool is full.
fn bench_append(c: &mut Criterion, group_name: &str, sync: bool) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(20);
    for scenario in [MIB_PLAIN, MIB_DEFLATE] {
        let batch = scenario.batch();
        let dir = BenchDir::new(&format!("{group_name}-{scenario}"));
        let mut spool = open(&dir.file(), scenario);
        let mut positions = VecDeque::new();
        let mut appended = 0u64;
        group.throughput(Throughput::Bytes(batch.body.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(scenario), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    loop {
                        let start = Instant::now();
                        let result = spool.try_append(&key(), batch.lines, &batch.body);
                        if let Ok(position) = result {
                            if sync {
                                spool.sync().expect("sync");
                            }
                            timed += start.elapsed();
                            positions.push_back(position);
                            appended += 1;
                            break;
                        }
                        match result {
                            Err(SpoolError::Full { .. }) => drain(&mut spool, &mut positions),
                            Err(err) => panic!("{err}"),
                            Ok(_) => unreachable!(),
                        }
                    }
                }
                timed
            });
        });
        // Checked when it ran (a filter on the command line may skip it).
        if appended > 0 {
            assert_eq!(spool.records(), positions.len() as u64);
            check_oldest(&mut spool, &batch);
        }
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    bench_append(c, "spool_append", false);
}

fn append_sync(c: &mut Criterion) {
    bench_append(c, "spool_append_sync", true);
}

/// Peek + ack of one batch per iteration. The spool is filled once; when it
/// is empty, it is reopened (untimed): acks are never synced here, so reopening
/// replays everything again (at-least-once), without re-appending.
fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool_replay");
    group.sample_size(20);
    for scenario in [MIB_PLAIN, MIB_DEFLATE] {
        let batch = scenario.batch();
        let dir = BenchDir::new(&format!("replay-{scenario}"));
        let path = dir.file();
        let mut spool = open(&path, scenario);
        while spool.try_append(&key(), batch.lines, &batch.body).is_ok() {}
        spool.sync().expect("sync");
        let filled = spool.records();
        // An Option, so that the old spool (and its file lock) is gone before the reopen.
        let mut spool = Some(spool);
        let mut replayed = 0u64;
        group.throughput(Throughput::Bytes(batch.body.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(scenario), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    if spool.as_ref().is_some_and(Spool::is_empty) {
                        spool = None;
                        let (reopened, report) =
                            Spool::open(&path, scenario.options()).expect("reopen");
                        assert_eq!(report.records, filled);
                        spool = Some(reopened);
                    }
                    let spool = spool.as_mut().expect("open");
                    let start = Instant::now();
                    let got = spool.peek().expect("peek").expect("a batch");
                    spool.ack(got.position).expect("ack");
                    timed += start.elapsed();
                    assert_eq!(got.lines, batch.lines);
                    assert!(got.body == batch.body, "replayed body differs");
                    replayed += 1;
                }
                timed
            });
        });
    }
    group.finish();
}

/// Opens a spool file full of records: the recovery walk checks every record's CRC.
fn recover(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool_recover");
    group.sample_size(10);
    for scenario in [MIB_PLAIN, SMALL_PLAIN] {
        let batch = scenario.batch();
        let dir = BenchDir::new(&format!("recover-{scenario}"));
        let path = dir.file();
        let (records, used) = {
            let mut spool = open(&path, scenario);
            while spool.try_append(&key(), batch.lines, &batch.body).is_ok() {}
            spool.sync().expect("sync");
            (spool.records(), spool.used_bytes())
        };
        group.throughput(Throughput::Bytes(used));
        group.bench_function(
            BenchmarkId::from_parameter(format!("full_256MiB_{scenario}")),
            |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let (spool, report) = Spool::open(&path, scenario.options()).expect("open");
                        timed += start.elapsed();
                        assert_eq!(report.records, records);
                        assert!(report.problems.is_empty(), "{:?}", report.problems);
                        drop(spool);
                    }
                    timed
                });
            },
        );
        let mut spool = open(&path, scenario);
        check_oldest(&mut spool, &batch);
    }
    group.finish();
}

criterion_group!(benches, append, append_sync, replay, recover);
criterion_main!(benches);
