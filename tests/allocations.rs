//! Allocations per request do not grow with the number of lines: the write hot
//! path (`ingest`: scan, validate, route, batch) is measured with a counting
//! allocator, for a small and a large body of the same shape. Batch bodies
//! worth lending live in mappings of their own (`batch_body`), not in the
//! allocator: each one handed out counts as an allocation too. A body
//! ingested partly while it arrives (`api::early`), as a connection does for
//! a large plain write, is measured the same way, and so is one whose second
//! half another worker ingests (`api::share`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use fluxgate::api::early::Partial;
use fluxgate::api::share::{Helpers, Piece, Sharing};
use fluxgate::api::write::ingest;
use fluxgate::batch::{Batcher, Target};
use fluxgate::batch_body::BODY_COUNTS;
use fluxgate::config::Config;
use fluxgate::lp::precision::Precision;
use fluxgate::route::Router;

/// Counts allocations made by the current thread only, so tests running in
/// parallel do not disturb each other.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations of this thread, plus mapped batch bodies handed out anywhere
/// (this binary has no other test to take any).
fn allocations_during(f: impl FnOnce()) -> usize {
    let bodies = || {
        let (reused, mapped) = (&BODY_COUNTS.reused, &BODY_COUNTS.mapped);
        (reused.load(Ordering::Relaxed) + mapped.load(Ordering::Relaxed)) as usize
    };
    let before = ALLOCATIONS.with(Cell::get) + bodies();
    f();
    ALLOCATIONS.with(Cell::get) + bodies() - before
}

/// Helpers: one that takes every piece the moment it is offered, on this
/// thread, so that what ingesting it allocates is counted too.
struct Eager;

impl Helpers for Eager {
    fn idle_worker(&self) -> Option<usize> {
        Some(1)
    }
    fn offer(&self, _worker: usize, piece: Arc<Piece>) {
        piece.ingest();
    }
}

/// The request ingested by a fresh worker batcher, its second half shared;
/// every allocation it makes, the piece's own batches included.
fn ingested_shared(router: &Arc<Router>, target: &Target<'_>, body: &[u8], lines: usize) -> usize {
    let mut batcher = Batcher::new(router.set_count(), 64 << 20);
    let mut scratch = Vec::with_capacity(64);
    allocations_during(|| {
        let sharing = Sharing {
            router,
            helpers: &Eager,
            min_body_bytes: 0,
        };
        let now = SystemTime::now();
        let report = ingest(
            router,
            &mut batcher,
            &mut scratch,
            target,
            body,
            now,
            Some(sharing),
        );
        assert_eq!(report.accepted, lines);
        assert!(report.shared > 0, "the second half was shared");
    })
}

fn body(lines: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..lines {
        // Two measurements routed to different sets, escapes, and lines with
        // and without timestamps: every branch of the hot path.
        match i % 4 {
            0 => body.push_str(&format!(
                "cpu,host=h{} usage_user={i}.5,usage_system=1i {}\n",
                i % 10,
                1_000 + i
            )),
            1 => body.push_str(&format!("mem,host=h{} used={i}i,free=2.5\n", i % 10)),
            2 => body.push_str(&format!(
                "my\\ cpu,host=h\\,{} v=\"s\\\"q\" {}\n",
                i % 10,
                1_000 + i
            )),
            _ => body.push_str(&format!("disk,path=/var v=t {}\n", 1_000 + i)),
        }
    }
    body.into_bytes()
}

/// The same request, ingested in three reads while it arrives, then at the
/// end; every allocation it makes, its own batches' included. (Dropping
/// them, which returns mappings to the pool, is not part of the request.)
fn ingested_early(router: &Router, target: &Target<'_>, body: &[u8], lines: usize) -> usize {
    let mut batches = None;
    let allocations = allocations_during(|| {
        let mut partial = Partial::new(router.set_count(), 64 << 20, body.len());
        for read in [body.len() / 3, body.len() * 2 / 3] {
            partial.advance(router, target, &body[..read]);
        }
        let mut worker = Batcher::new(router.set_count(), 64 << 20);
        let mut scratch = Vec::with_capacity(64);
        let now = SystemTime::now();
        let report =
            partial.commit_into(router, target, &mut worker, &mut scratch, now, body, None);
        assert_eq!(report.accepted, lines);
        worker.flush_all();
        batches = Some(worker);
    });
    assert!(batches.unwrap().take_ready().count() >= 1);
    allocations
}

#[test]
fn allocations_per_request_do_not_grow_with_the_number_of_lines() {
    let config = Config::from_toml(
        "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
         [routes]\n_default_ = [\"a\", \"b\"]\nmem = [\"a\"]\n\"my cpu\" = [\"b\"]",
    )
    .unwrap();
    let router = Arc::new(Router::new(&config));
    let target = Target {
        db: "db",
        rp: None,
        precision: Precision::Nanoseconds,
        authorization: None,
    };
    // Batches large enough that neither body fills one: freezing a full batch
    // (one buffer per batch) is the one cost allowed to follow the volume.
    let mut batcher = Batcher::new(router.set_count(), 64 << 20);
    let mut scratch = Vec::with_capacity(64);
    let (small, large) = (body(100), body(20_000));
    let mut run = |body: &[u8], lines: usize| {
        allocations_during(|| {
            let report = ingest(
                &router,
                &mut batcher,
                &mut scratch,
                &target,
                body,
                SystemTime::now(),
                None,
            );
            assert_eq!(report.accepted, lines);
        })
    };
    // Warm up: the first request creates the open batches of each set.
    run(&small, 100);
    let for_small = run(&small, 100);
    let for_large = run(&large, 20_000);
    assert_eq!(
        for_small, for_large,
        "allocations grew with the body: {for_small} for 100 lines, {for_large} for 20000"
    );
    let early_small = ingested_early(&router, &target, &small, 100);
    let early_large = ingested_early(&router, &target, &large, 20_000);
    assert_eq!(
        early_small, early_large,
        "allocations grew with the body ingested early: {early_small} for 100 lines, {early_large} for 20000"
    );
    let shared_small = ingested_shared(&router, &target, &small, 100);
    let shared_large = ingested_shared(&router, &target, &large, 20_000);
    assert_eq!(
        shared_small, shared_large,
        "allocations grew with the body shared: {shared_small} for 100 lines, {shared_large} for 20000"
    );
    // What a warm request may allocate: one reservation per backend set it
    // writes to, sized for its whole body (so that small writes to many
    // databases do not each pin a whole max_batch_bytes), never per line.
    assert!(
        for_small <= router.set_count(),
        "{for_small} allocations for one request over {} backend sets",
        router.set_count()
    );
}
