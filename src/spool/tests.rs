//! Spool tests on real files: API behaviour, wrap-around and limits, damage
//! (torn writes at every offset, flipped bits, truncation, junk), crash
//! recovery, and the model-based property test.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::record::{HEADER_LEN, PAYLOAD_FIXED_LEN};
use super::ring::{FILE_HEADER_LEN, PAGE};
use super::*;
use crate::lp::precision::Precision;

/// A fresh directory, removed on drop unless the test failed (kept for a look).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fluxgate-spool-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("backend-a.spool")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// 16 KiB of data area: a few records, so laps come quickly.
const SMALL: u64 = FILE_HEADER_LEN + 16 * 1024;
const SMALL_DATA: u64 = 16 * 1024;

fn key() -> BatchKey {
    BatchKey {
        db: "telegraf".into(),
        rp: Some("autogen".into()),
        precision: Precision::Milliseconds,
        authorization: Some("Basic c2VjcmV0OnB3".into()),
    }
}

fn options(capacity: u64, compress: bool) -> SpoolOptions {
    SpoolOptions { capacity, compress }
}

#[track_caller]
fn open(path: &Path, capacity: u64) -> (Spool, RecoveryReport) {
    Spool::open(path, options(capacity, false)).unwrap()
}

/// On-disk size of a batch record with `key()` and an uncompressed body.
fn record_size(body_len: usize) -> u64 {
    let strings = "telegraf".len() + "autogen".len() + "Basic c2VjcmV0OnB3".len();
    record::align((HEADER_LEN + PAYLOAD_FIXED_LEN + strings + body_len) as u64)
}

/// A distinct body of `len` bytes: an id, then line-protocol-ish filler.
fn body(id: usize, len: usize) -> Vec<u8> {
    let mut body = format!("{id:08} ").into_bytes();
    let mut i = 0u32;
    while body.len() < len {
        body.push(b'a' + (i.wrapping_mul(2_654_435_761).rotate_left(7) % 26) as u8);
        i += 1;
    }
    body.truncate(len);
    body
}

/// Every pending batch's body, in order, without acking.
fn bodies(spool: &mut Spool) -> Vec<Vec<u8>> {
    spool.pending().into_iter().map(|b| b.body).collect()
}

/// Peeks and acks one batch; returns its body.
#[track_caller]
fn pop(spool: &mut Spool) -> Vec<u8> {
    let batch = spool.peek().unwrap().expect("a batch");
    spool.ack(batch.position).unwrap();
    batch.body
}

// ---------------------------------------------------------------- basics

#[test]
fn appends_replay_in_order_byte_for_byte() {
    for compress in [false, true] {
        let dir = TempDir::new();
        let (mut spool, report) = Spool::open(&dir.file(), options(SMALL, compress)).unwrap();
        assert_eq!(report, RecoveryReport::default());
        assert!(spool.is_empty());
        assert_eq!(spool.peek().unwrap(), None);
        let lp = b"cpu,host=a usage=1 1\n".repeat(40);
        let p0 = spool.try_append(&key(), 40, &lp).unwrap();
        let p1 = spool.try_append(&key(), 1, b"x").unwrap();
        assert_eq!(p0, 0);
        assert!(p1 > p0 && p1 % 8 == 0);
        assert_eq!(spool.records(), 2);
        assert!(spool.oldest_appended_at_ms().is_some());
        if compress {
            assert!(
                p1 < record_size(lp.len()),
                "compressible body stored deflated"
            );
        } else {
            assert_eq!(p1, record_size(lp.len()));
        }

        // Twice, to catch state leaking between peeks.
        for _ in 0..2 {
            let batch = spool.peek().unwrap().unwrap();
            assert_eq!(batch.position, p0);
            assert_eq!(batch.key, key());
            assert_eq!((batch.lines, &batch.body), (40, &lp));
        }
        spool.ack(p0).unwrap();
        spool.ack(p0).unwrap(); // a duplicate ack of a replayed batch changes nothing
        assert_eq!(spool.records(), 1);
        let batch = spool.peek().unwrap().unwrap();
        assert_eq!(
            (batch.position, batch.lines, &batch.body[..]),
            (p1, 1, &b"x"[..])
        );
        spool.ack(p1).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);
        assert_eq!(spool.oldest_appended_at_ms(), None);
        assert_eq!(spool.peek().unwrap(), None);
    }
}

/// `len` bytes no compressor can shrink.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn an_encoder_deflates_only_what_shrinks_and_only_when_asked() {
    let lp = b"cpu,host=a usage=1 1\n".repeat(40);
    let noise = incompressible(600);
    for compress in [false, true] {
        let dir = TempDir::new();
        let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, compress)).unwrap();
        assert_eq!(spool.compresses(), compress);
        let mut encoder = Encoder::new(compress);
        let mut at = Vec::new();
        for (lines, payload) in [(40, &lp[..]), (1, &noise[..]), (0, &b""[..])] {
            let encoded = encoder.encode(payload);
            at.push(spool.try_append_encoded(&key(), lines, &encoded).unwrap());
        }
        // Record sizes: line protocol deflated only with `compress`; noise
        // and the empty body stored as they are either way.
        let lp_record = at[1] - at[0];
        if compress {
            assert!(lp_record < record_size(lp.len()) / 4, "{lp_record}");
        } else {
            assert_eq!(lp_record, record_size(lp.len()));
        }
        assert_eq!(at[2] - at[1], record_size(noise.len()));
        assert_eq!(spool.used_bytes() - at[2], record_size(0));
        assert_eq!(bodies(&mut spool), vec![lp.clone(), noise.clone(), vec![]]);
        let lines: Vec<usize> = spool.pending().into_iter().map(|b| b.lines).collect();
        assert_eq!(lines, [40, 1, 0]);
    }
}

#[test]
fn a_deflated_record_reads_back_from_a_spool_that_does_not_compress() {
    let dir = TempDir::new();
    let lp = b"cpu,host=a usage=1 1\n".repeat(40);
    let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, false)).unwrap();
    // Records are flagged one by one.
    let mut encoder = Encoder::new(true);
    let at = spool
        .try_append_encoded(&key(), 40, &encoder.encode(&lp))
        .unwrap();
    assert_eq!(at, 0);
    assert!(spool.used_bytes() < record_size(lp.len()));
    assert_eq!(bodies(&mut spool), vec![lp.clone()]);
    // And after a reopen.
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, false)).unwrap();
    assert_eq!(bodies(&mut spool), vec![lp]);
}

#[test]
fn a_spool_file_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // Records keep clients' `Authorization` headers.
    let dir = TempDir::new();
    let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, false)).unwrap();
    spool.try_append(&key(), 1, b"x").unwrap();
    let mode = fs::metadata(dir.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // One an earlier release left readable by all is made so on opening.
    drop(spool);
    fs::set_permissions(dir.file(), fs::Permissions::from_mode(0o644)).unwrap();
    let (spool, _) = Spool::open(&dir.file(), options(SMALL, false)).unwrap();
    assert_eq!(spool.records(), 1);
    let mode = fs::metadata(dir.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn keys_round_trip_absent_and_empty() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let keys = [
        BatchKey {
            db: "".into(),
            rp: None,
            precision: Precision::Nanoseconds,
            authorization: None,
        },
        BatchKey {
            db: "d\u{e9}j\u{e0}".into(),
            rp: Some("".into()),
            precision: Precision::Hours,
            authorization: Some("".into()),
        },
    ];
    for key in &keys {
        spool.try_append(key, 0, b"").unwrap();
    }
    for key in &keys {
        let batch = spool.peek().unwrap().unwrap();
        assert_eq!(&batch.key, key);
        assert!(batch.body.is_empty());
        spool.ack(batch.position).unwrap();
    }
}

#[test]
fn ack_of_another_position_is_refused() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let err = spool.ack(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ack of spool position 0, but the oldest record is at None (a bug)"
    );
    let p0 = spool.try_append(&key(), 1, b"a").unwrap();
    let p1 = spool.try_append(&key(), 1, b"b").unwrap();
    assert!(matches!(
        spool.ack(p1),
        Err(SpoolError::BadAck { position, oldest: Some(0) }) if position == p1
    ));
    // Ack without peek is fine when it names the oldest record.
    spool.ack(p0).unwrap();
    assert_eq!(pop(&mut spool), b"b");
}

#[test]
fn spool_can_be_shared_behind_a_mutex() {
    fn send<T: Send>() {}
    send::<Spool>();
}

#[test]
fn debug_never_prints_credentials() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    spool.try_append(&key(), 1, b"cpu v=1 1\n").unwrap();
    let batch = spool.peek().unwrap().unwrap();
    let shown = format!("{batch:?} {spool:?}");
    assert!(!shown.contains("c2VjcmV0OnB3"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn error_messages() {
    #[track_caller]
    fn f(err: SpoolError, want: &str) {
        assert_eq!(err.to_string(), want);
    }
    f(
        SpoolError::Full {
            needed: 100,
            free: 40,
        },
        "spool full: the batch needs 100 bytes, 40 are free; the backend has been failing long \
         enough to fill it. Possible solutions: bring the backend back (the spool drains by \
         itself), raise spool.capacity",
    );
    f(
        SpoolError::TooLarge {
            needed: 100,
            capacity: 40,
        },
        "batch of 100 bytes (encoded) can never fit in a spool of 40 data bytes; raise \
         spool.capacity or lower the batch size",
    );
    assert!(SpoolError::Full { needed: 1, free: 0 }.is_full());
}

#[test]
fn capacity_below_minimum_is_refused() {
    let dir = TempDir::new();
    let err = Spool::open(&dir.file(), options(FILE_HEADER_LEN + 4095, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spool I/O error: spool capacity 16383 bytes is below the minimum of 16384 bytes; check \
         the spool directory (free space, permissions, no other fluxgate using it)"
    );
    assert!(!dir.file().exists());
    open(&dir.file(), FILE_HEADER_LEN + 4096);
}

#[test]
fn second_open_of_the_same_file_is_refused() {
    let dir = TempDir::new();
    let (_spool, _) = open(&dir.file(), SMALL);
    let err = Spool::open(&dir.file(), options(SMALL, true)).unwrap_err();
    assert!(
        matches!(&err, SpoolError::Io(io) if io.kind() == io::ErrorKind::WouldBlock),
        "{err}"
    );
}

// ------------------------------------------------------- wrap-around, limits

#[test]
fn wraps_around_for_many_laps() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let mut expected = VecDeque::new();
    let mut last = 0;
    for id in 0..600 {
        // Sizes that do not divide the capacity, so padding and short tails occur.
        let b = body(id, 200 + id * 37 % 1500);
        let position = loop {
            match spool.try_append(&key(), 1, &b) {
                Ok(position) => break position,
                Err(SpoolError::Full { .. }) => {
                    assert_eq!(pop(&mut spool), expected.pop_front().unwrap());
                }
                Err(err) => panic!("{err}"),
            }
        };
        assert!(position > last || id == 0, "positions only grow");
        last = position;
        expected.push_back(b);
        assert!(spool.used_bytes() <= SMALL_DATA);
        if id % 7 == 0 {
            spool.sync().unwrap();
        }
    }
    assert!(last > 20 * SMALL_DATA, "many laps: {last}");
    assert_eq!(bodies(&mut spool), Vec::from(expected.clone()));
    // And the same after a reopen (every lap's padding is found again).
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, report) = open(&dir.file(), SMALL);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, expected.len() as u64);
    assert_eq!(bodies(&mut spool), Vec::from(expected));
}

#[test]
fn record_larger_than_the_rest_of_the_lap_goes_to_the_next_lap() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    // First record leaves 1000 bytes before the physical end.
    let first = body(1, (SMALL_DATA - 1000 - record_size(0)) as usize);
    assert_eq!(record_size(first.len()), SMALL_DATA - 1000);
    spool.try_append(&key(), 1, &first).unwrap();
    pop(&mut spool);
    let big = body(2, 2000);
    let position = spool.try_append(&key(), 1, &big).unwrap();
    assert_eq!(
        position, SMALL_DATA,
        "starts the next lap: padding in between"
    );
    assert_eq!(spool.used_bytes(), 1000 + record_size(2000));
    assert_eq!(spool.records(), 1);
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, report) = open(&dir.file(), SMALL);
    assert_eq!((report.records, report.problems.len()), (1, 0));
    assert_eq!(pop(&mut spool), big);
}

#[test]
fn tail_shorter_than_a_record_header_is_skipped() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let first = body(1, (SMALL_DATA - 24 - record_size(0)) as usize);
    assert_eq!(record_size(first.len()), SMALL_DATA - 24);
    spool.try_append(&key(), 1, &first).unwrap();
    pop(&mut spool);
    assert_eq!(spool.try_append(&key(), 1, b"x").unwrap(), SMALL_DATA);
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, _) = open(&dir.file(), SMALL);
    assert_eq!(pop(&mut spool), b"x");
}

#[test]
fn record_of_exactly_the_capacity_fits_and_one_more_is_too_large() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    // No alignment bytes: one more body byte needs 8 more bytes.
    let exact = body(
        1,
        SMALL_DATA as usize - (HEADER_LEN + PAYLOAD_FIXED_LEN + 33),
    );
    assert_eq!(record_size(exact.len()), SMALL_DATA);
    assert_eq!(spool.try_append(&key(), 1, &exact).unwrap(), 0);
    assert_eq!(spool.used_bytes(), SMALL_DATA);
    // The spool is full now: even one byte is Full, not TooLarge.
    assert!(matches!(
        spool.try_append(&key(), 1, b"x"),
        Err(SpoolError::Full { free: 0, .. })
    ));
    assert_eq!(pop(&mut spool), exact);

    let over = body(2, exact.len() + 1);
    let err = spool.try_append(&key(), 1, &over).unwrap_err();
    assert!(
        matches!(err, SpoolError::TooLarge { needed, capacity: SMALL_DATA } if needed == SMALL_DATA + 8),
        "{err:?}"
    );
    // Compression can make a large body fit.
    let (mut compressed, _) = Spool::open(&TempDir::new().file(), options(SMALL, true)).unwrap();
    compressed
        .try_append(&key(), 1, &b"cpu v=1 1\n".repeat(10_000))
        .unwrap();
}

#[test]
fn full_never_overwrites_unread_data() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let mut expected = Vec::new();
    let err = loop {
        let b = body(expected.len(), 1000);
        match spool.try_append(&key(), 1, &b) {
            Ok(_) => expected.push(b),
            Err(err) => break err,
        }
    };
    let SpoolError::Full { needed, free } = err else {
        panic!("{err}")
    };
    // The record does not fit before the physical end: it needs the padding too.
    let to_lap_end = SMALL_DATA - spool.used_bytes();
    assert_eq!(needed, to_lap_end + record_size(1000));
    assert_eq!(free, to_lap_end);
    assert!(free < needed);
    assert_eq!(bodies(&mut spool), expected, "all intact");
    // Room again after one ack (durable or not).
    pop(&mut spool);
    spool.try_append(&key(), 1, &body(99, 1000)).unwrap();
    assert!(spool.try_append(&key(), 1, &body(100, 1000)).is_err());
}

#[test]
fn space_of_unsynced_acks_is_reused_only_after_the_header_says_so() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    while spool.used_bytes() + record_size(1000) <= SMALL_DATA {
        let b = body(expected.len(), 1000);
        spool.try_append(&key(), 1, &b).unwrap();
        expected.push_back(b);
    }
    spool.sync().unwrap();
    pop(&mut spool);
    expected.pop_front();
    // Not synced, but the append needs the acked space: the header is written first.
    let b = body(500, 1000);
    spool.try_append(&key(), 1, &b).unwrap();
    expected.push_back(b);
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, report) = open(&dir.file(), SMALL);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(bodies(&mut spool), Vec::from(expected));
}

// ------------------------------------------------------------ crash recovery

#[test]
fn synced_appends_and_acks_survive_a_reopen() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    for id in 0..5 {
        spool.try_append(&key(), id, &body(id, 300)).unwrap();
    }
    pop(&mut spool);
    spool.sync().unwrap();
    pop(&mut spool); // not synced: replays again
    let oldest = spool.oldest_appended_at_ms();
    drop(spool);
    let (mut spool, report) = open(&dir.file(), SMALL);
    assert_eq!(report.records, 4);
    assert_eq!(report.bytes, 4 * record_size(300));
    assert!(report.problems.is_empty());
    assert!(spool.oldest_appended_at_ms() <= oldest);
    let got = spool.pending();
    assert_eq!(
        got.iter().map(|b| b.body.clone()).collect::<Vec<_>>(),
        (1..5).map(|id| body(id, 300)).collect::<Vec<_>>()
    );
    assert_eq!(
        got.iter().map(|b| b.lines).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[test]
fn unsynced_appends_survive_a_process_crash() {
    let dir = TempDir::new();
    let (mut spool, _) = open(&dir.file(), SMALL);
    spool.try_append(&key(), 1, b"synced").unwrap();
    spool.sync().unwrap();
    spool.try_append(&key(), 1, b"in the page cache").unwrap();
    drop(spool); // no sync: a killed process; the kernel still has the pages
    let (mut spool, report) = open(&dir.file(), SMALL);
    assert_eq!(report.records, 2);
    assert_eq!(bodies(&mut spool), [&b"synced"[..], b"in the page cache"]);
}

#[test]
fn records_left_over_from_before_a_crash_are_not_resurrected() {
    let dir = TempDir::new();
    let path = dir.file();
    let (mut spool, _) = open(&path, SMALL);
    spool.try_append(&key(), 1, &body(0, 100)).unwrap();
    spool.sync().unwrap();
    let lost = spool.try_append(&key(), 1, &body(1, 100)).unwrap();
    spool.try_append(&key(), 1, &body(2, 100)).unwrap();
    drop(spool);
    // Power cut: the second record's page never reached the disk, the third's did.
    let mut bytes = fs::read(&path).unwrap();
    let at = (FILE_HEADER_LEN + lost) as usize;
    bytes[at..at + record_size(100) as usize].fill(0);
    fs::write(&path, &bytes).unwrap();
    let (mut spool, _) = open(&path, SMALL);
    assert_eq!(bodies(&mut spool), [body(0, 100)]);
    // A new record of the same size lands where the lost one was; the third
    // record, from the previous session, lines up after it but is not taken.
    assert_eq!(spool.try_append(&key(), 1, &body(3, 100)).unwrap(), lost);
    drop(spool);
    let (mut spool, _) = open(&path, SMALL);
    assert_eq!(bodies(&mut spool), [body(0, 100), body(3, 100)]);
}

/// Appends `n` synced records of `len` bytes after one of 100; returns the
/// file image, the positions and the bodies.
fn synced_spool(path: &Path, n: usize, len: usize) -> (Vec<u64>, Vec<Vec<u8>>) {
    let (mut spool, _) = open(path, SMALL);
    let mut positions = Vec::new();
    let mut bodies = Vec::new();
    for id in 0..n {
        let b = body(id, len);
        positions.push(spool.try_append(&key(), 1, &b).unwrap());
        bodies.push(b);
    }
    spool.sync().unwrap();
    (positions, bodies)
}

#[test]
fn write_torn_at_every_byte_offset() {
    let dir = TempDir::new();
    let path = dir.file();
    let (mut spool, _) = open(&path, SMALL);
    let before: Vec<_> = (0..3).map(|id| body(id, 150)).collect();
    for b in &before {
        spool.try_append(&key(), 1, b).unwrap();
    }
    spool.sync().unwrap();
    let old = fs::read(&path).unwrap();
    let torn = body(3, 150);
    let position = spool.try_append(&key(), 1, &torn).unwrap();
    drop(spool);
    let new = fs::read(&path).unwrap();
    let start = (FILE_HEADER_LEN + position) as usize;
    let total = record_size(150) as usize;
    let covered = HEADER_LEN + PAYLOAD_FIXED_LEN + 33 + 150;

    for cut in 0..=total {
        for damage in ["old", "junk", "truncated"] {
            let mut bytes = old.clone();
            bytes[start..start + cut].copy_from_slice(&new[start..start + cut]);
            match damage {
                "junk" => {
                    for (i, byte) in bytes[start + cut..start + total].iter_mut().enumerate() {
                        *byte = (i as u8).wrapping_mul(151) ^ 0x5a;
                    }
                }
                "truncated" => bytes.truncate(start + cut),
                _ => {}
            }
            fs::write(&path, &bytes).unwrap();
            let (mut spool, report) = open(&path, SMALL);
            let got = bodies(&mut spool);
            let mut want = before.clone();
            if cut >= covered {
                want.push(torn.clone());
            }
            assert_eq!(got, want, "cut {cut} {damage}");
            assert_eq!(report.skipped_bytes, 0, "a torn tail is not damage");
            assert_eq!(fs::metadata(&path).unwrap().len(), SMALL);
            // Appending goes on from the last valid record.
            spool.try_append(&key(), 1, b"next").unwrap();
            drop(spool);
            let (mut spool, _) = open(&path, SMALL);
            assert_eq!(bodies(&mut spool).last().unwrap(), b"next");
        }
    }
}

// ------------------------------------------------------------ damaged files

#[test]
fn flipped_crc_bit_skips_that_record_only() {
    let dir = TempDir::new();
    let path = dir.file();
    let (positions, expected) = synced_spool(&path, 5, 200);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(FILE_HEADER_LEN + positions[2]) as usize] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (mut spool, report) = open(&path, SMALL);
    assert_eq!(
        report,
        RecoveryReport {
            records: 4,
            bytes: 4 * record_size(200),
            skipped_bytes: record_size(200),
            skipped_records_or_regions: 1,
            problems: vec![format!(
                "record at {}: checksum mismatch, skipped {} bytes",
                positions[2],
                record_size(200)
            )],
        }
    );
    assert_eq!(spool.records(), 4);
    let mut want = expected;
    want.remove(2);
    assert_eq!(bodies(&mut spool), want);
    for b in &want {
        assert_eq!(&pop(&mut spool), b);
    }
    assert!(spool.is_empty());
}

#[test]
fn damage_at_the_read_position_moves_it() {
    let dir = TempDir::new();
    let path = dir.file();
    let (positions, expected) = synced_spool(&path, 3, 200);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(FILE_HEADER_LEN + positions[0]) as usize + 100] ^= 0x80;
    fs::write(&path, &bytes).unwrap();
    let (mut spool, report) = open(&path, SMALL);
    assert_eq!(report.skipped_records_or_regions, 1);
    assert_eq!(spool.used_bytes(), 2 * record_size(200));
    assert_eq!(bodies(&mut spool), expected[1..]);
}

#[test]
fn file_truncated_mid_record() {
    let dir = TempDir::new();
    let path = dir.file();
    let (positions, expected) = synced_spool(&path, 6, 500);
    let cut = FILE_HEADER_LEN + positions[3] + 100;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (mut spool, report) = open(&path, SMALL);
    assert_eq!(report.records, 3);
    assert_eq!(report.skipped_records_or_regions, 1);
    assert_eq!(
        report.problems,
        [
            format!(
                "record at {}: truncated (the file ends inside it), skipped {} bytes",
                positions[3],
                3 * record_size(500)
            ),
            format!("file is {cut} bytes, {SMALL} expected: truncated, extended back"),
        ]
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), SMALL);
    assert_eq!(bodies(&mut spool), expected[..3]);
    spool.try_append(&key(), 1, b"after").unwrap();
    spool.sync().unwrap();
    drop(spool);
    // The damage is still ahead of replay: reported again, same records.
    let (mut spool, again) = open(&path, SMALL);
    assert_eq!(again.problems.len(), 1);
    assert_eq!(again.skipped_bytes, report.skipped_bytes);
    let mut want = expected[..3].to_vec();
    want.push(b"after".to_vec());
    assert_eq!(bodies(&mut spool), want);
}

#[test]
fn junk_bytes_in_the_middle() {
    let dir = TempDir::new();
    let path = dir.file();
    let (positions, expected) = synced_spool(&path, 8, 300);
    let mut bytes = fs::read(&path).unwrap();
    // From inside record 2 to inside record 4.
    let from = (FILE_HEADER_LEN + positions[2] + 40) as usize;
    let to = (FILE_HEADER_LEN + positions[4] + 10) as usize;
    for (i, byte) in bytes[from..to].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    fs::write(&path, &bytes).unwrap();
    let (mut spool, report) = open(&path, SMALL);
    assert_eq!(report.skipped_records_or_regions, 1);
    assert_eq!(report.skipped_bytes, 3 * record_size(300));
    let mut want = expected;
    want.drain(2..5);
    assert_eq!(bodies(&mut spool), want);
}

#[test]
fn damaged_newest_header_slot_falls_back_to_the_other() {
    let dir = TempDir::new();
    let path = dir.file();
    let (mut spool, _) = open(&path, SMALL);
    spool.try_append(&key(), 1, b"a").unwrap();
    spool.sync().unwrap();
    spool.try_append(&key(), 1, b"b").unwrap();
    spool.sync().unwrap();
    pop(&mut spool);
    spool.sync().unwrap();
    drop(spool);
    // Slot writes alternate; tear whichever is newest (highest sequence).
    let mut bytes = fs::read(&path).unwrap();
    let seq = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let newest = if seq(PAGE as usize) > seq(2 * PAGE as usize) {
        PAGE
    } else {
        2 * PAGE
    } as usize;
    bytes[newest + 9] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (mut spool, _) = open(&path, SMALL);
    // The older slot has the ack not yet made: at least once, never lost.
    assert_eq!(bodies(&mut spool), [&b"a"[..], b"b"]);
}

#[test]
fn both_header_slots_damaged_is_corrupt() {
    let dir = TempDir::new();
    let path = dir.file();
    synced_spool(&path, 1, 10);
    let mut bytes = fs::read(&path).unwrap();
    bytes[PAGE as usize + 3] ^= 1;
    bytes[2 * PAGE as usize + 3] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = Spool::open(&path, options(SMALL, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: both header slots are damaged. Move the file out of the spool directory \
             (fluxgate then starts an empty spool in its place) and keep it for inspection; \
             its batches are not replayed",
            path.display()
        )
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");
}

#[test]
fn a_file_that_is_not_a_spool_is_never_touched() {
    let dir = TempDir::new();
    let path = dir.file();
    for content in [
        &b"cpu,host=a v=1 1\n"[..],
        b"FGSPOOL",
        b"FGSPOOL\n\x02\0\0\0",
        &[0; 20_000],
    ] {
        fs::write(&path, content).unwrap();
        let err = Spool::open(&path, options(SMALL, true)).unwrap_err();
        let SpoolError::Corrupt(message) = &err else {
            panic!("{err}")
        };
        assert!(
            message.contains("Move the file out of the spool directory"),
            "{message}"
        );
        assert_eq!(fs::read(&path).unwrap(), content);
    }
    fs::write(&path, b"cpu v=1").unwrap();
    assert_eq!(
        Spool::open(&path, options(SMALL, true))
            .unwrap_err()
            .to_string(),
        format!(
            "{}: not a fluxgate spool file. Move the file out of the spool directory (fluxgate \
             then starts an empty spool in its place) and keep it for inspection; its batches \
             are not replayed",
            path.display()
        )
    );
    // A directory in its place.
    let sub = dir.0.join("sub.spool");
    fs::create_dir(&sub).unwrap();
    assert!(matches!(
        Spool::open(&sub, options(SMALL, true)),
        Err(SpoolError::Corrupt(_))
    ));
}

#[test]
fn junk_files_in_the_directory_do_not_matter() {
    let dir = TempDir::new();
    let path = dir.file();
    fs::write(dir.0.join("backend-b.spool"), b"junk").unwrap();
    fs::write(dir.0.join("backend-a.spool.creating"), [0xff; 100]).unwrap();
    fs::write(dir.0.join(".hidden"), b"").unwrap();
    fs::create_dir(dir.0.join("backend-c.spool")).unwrap();
    let (positions, expected) = synced_spool(&path, 2, 10);
    assert_eq!(positions[0], 0);
    let (mut spool, report) = open(&path, SMALL);
    assert!(report.problems.is_empty());
    assert_eq!(bodies(&mut spool), expected);
    assert_eq!(fs::read(dir.0.join("backend-b.spool")).unwrap(), b"junk");
}

#[test]
fn an_empty_file_becomes_a_new_spool() {
    let dir = TempDir::new();
    fs::write(dir.file(), b"").unwrap();
    let (spool, _) = open(&dir.file(), SMALL);
    assert!(spool.is_empty());
    assert_eq!(fs::metadata(dir.file()).unwrap().len(), SMALL);
}

#[test]
fn other_capacity_keeps_the_data_until_empty() {
    let dir = TempDir::new();
    let path = dir.file();
    let (_, expected) = synced_spool(&path, 3, 100);
    let larger = SMALL + 8192;
    let (mut spool, report) = open(&path, larger);
    assert_eq!(
        report.problems,
        [format!(
            "spool holds data written with a capacity of {SMALL} bytes, not the configured \
             {larger}: keeping {SMALL} until the spool is empty at an open"
        )]
    );
    assert_eq!(spool.capacity(), SMALL_DATA);
    assert_eq!(bodies(&mut spool), expected);
    while !spool.is_empty() {
        pop(&mut spool);
    }
    spool.sync().unwrap();
    drop(spool);
    for capacity in [larger, SMALL - 4096] {
        let (mut spool, report) = open(&path, capacity);
        assert!(report.problems.is_empty());
        assert_eq!(fs::metadata(&path).unwrap().len(), capacity);
        assert_eq!(spool.capacity(), capacity - FILE_HEADER_LEN);
        spool.try_append(&key(), 1, b"z").unwrap();
        spool.sync().unwrap();
        drop(spool);
        let (mut spool, _) = open(&path, capacity);
        assert_eq!(pop(&mut spool), b"z");
        spool.sync().unwrap();
    }
}

// ------------------------------------------------------------ properties

/// `cases` per property; `PROPTEST_CASES=n` overrides it for a longer run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn any_key() -> impl Strategy<Value = BatchKey> {
    let precision = prop_oneof![
        Just(Precision::Nanoseconds),
        Just(Precision::Microseconds),
        Just(Precision::Milliseconds),
        Just(Precision::Seconds),
        Just(Precision::Minutes),
        Just(Precision::Hours),
    ];
    (
        ".{0,20}",
        proptest::option::of(".{0,10}"),
        precision,
        proptest::option::of(".{0,40}"),
    )
        .prop_map(|(db, rp, precision, authorization)| BatchKey {
            db: db.into(),
            rp: rp.map(Into::into),
            precision,
            authorization: authorization.map(Into::into),
        })
}

/// A spool file with records over a wrap, for the damage property.
fn sample_file() -> &'static [u8] {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = TempDir::new();
        let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, true)).unwrap();
        for id in 0..60 {
            let b = if id % 2 == 0 {
                body(id, 900)
            } else {
                b"cpu,host=a v=1 1\n".repeat(id)
            };
            while spool.try_append(&key(), id, &b).is_err() {
                pop(&mut spool);
            }
            if id % 5 == 0 {
                spool.sync().unwrap();
            }
        }
        drop(spool); // last few unsynced: a tail to recover
        fs::read(dir.file()).unwrap()
    })
}

/// Opens `bytes` as a spool: must not panic; if it opens, everything in it
/// must replay and the spool must take new batches.
fn open_whatever(bytes: &[u8], capacity: u64) {
    let dir = TempDir::new();
    fs::write(dir.file(), bytes).unwrap();
    let Ok((mut spool, report)) = Spool::open(&dir.file(), options(capacity, true)) else {
        return;
    };
    let mut replayed = 0;
    while let Some(batch) = spool.peek().unwrap() {
        spool.ack(batch.position).unwrap();
        replayed += 1;
    }
    assert!(replayed <= report.records);
    assert!(spool.is_empty());
    spool.try_append(&key(), 1, b"after").unwrap();
    spool.sync().unwrap();
    drop(spool);
    let (mut spool, _) = Spool::open(&dir.file(), options(capacity, true)).unwrap();
    assert_eq!(bodies(&mut spool), [b"after"]);
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn any_batch_round_trips(
        key in any_key(),
        lines in 0usize..100_000,
        body in proptest::collection::vec(any::<u8>(), 0..5000),
        repeat in 1usize..4,
        compress: bool,
    ) {
        let dir = TempDir::new();
        let (mut spool, _) = Spool::open(&dir.file(), options(SMALL, compress)).unwrap();
        let body = body.repeat(repeat);
        let position = spool.try_append(&key, lines, &body).unwrap();
        spool.sync().unwrap();
        for reopen in [false, true] {
            if reopen {
                drop(spool);
                spool = Spool::open(&dir.file(), options(SMALL, !compress)).unwrap().0;
            }
            let batch = spool.peek().unwrap().unwrap();
            prop_assert_eq!(batch.position, position);
            prop_assert_eq!(&batch.key, &key);
            prop_assert_eq!(batch.lines, lines);
            prop_assert_eq!(&batch.body, &body);
        }
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
        magic: bool,
    ) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 20 {
            bytes[..20].copy_from_slice(&sample_file()[..20]);
        }
        open_whatever(&bytes, SMALL);
    }

    #[test]
    fn damaged_spool_never_panics(
        writes in proptest::collection::vec((0usize..SMALL as usize, any::<u8>()), 0..40),
        header_writes in proptest::collection::vec((0usize..FILE_HEADER_LEN as usize, any::<u8>()), 0..2),
        truncate in proptest::option::of(0usize..SMALL as usize),
        capacity in prop_oneof![Just(SMALL), Just(SMALL + 4096), Just(SMALL - 4096)],
    ) {
        let mut bytes = sample_file().to_vec();
        for (at, byte) in writes {
            let at = FILE_HEADER_LEN as usize + at % SMALL_DATA as usize;
            bytes[at] = byte;
        }
        for (at, byte) in header_writes {
            bytes[at] = byte;
        }
        if let Some(len) = truncate {
            bytes.truncate(len);
        }
        open_whatever(&bytes, capacity);
    }
}

// ------------------------------------------------------------ model test

#[derive(Debug, Clone)]
enum Op {
    Append {
        len: usize,
        compressible: bool,
    },
    Peek,
    Ack,
    Sync,
    /// The process dies: pages written to the map stay in the page cache.
    Crash,
    /// The machine loses power: of the data written since the last msync,
    /// each 512-byte sector independently did or did not reach the disk.
    PowerCut {
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..3000, any::<bool>()).prop_map(|(len, compressible)| Op::Append { len, compressible }),
        3 => Just(Op::Peek),
        5 => Just(Op::Ack),
        3 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
    ]
}

/// What the spool must hold, and what a crash may take back.
///
/// `log` is every batch from the durable read position on, in append order:
/// `log[..acked]` acked in memory, `log[..synced]` covered by the durable
/// write position. After a crash the spool must hold exactly `log[k..synced + j]`
/// for some `k <= acked` (acks not synced may be forgotten, all or a prefix of
/// them if some were made durable to reuse their space; at least once) and
/// `j <= log.len() - synced` (appends not synced may vanish, but only from the
/// end: order is kept). A process crash loses no append (`j` is all of them).
/// Nothing else: no record invented, none reordered, none changed.
struct Model {
    log: VecDeque<Vec<u8>>,
    acked: usize,
    synced: usize,
}

impl Model {
    fn check_recovered(&self, got: &[Vec<u8>], process_crash: bool) -> Result<(), TestCaseError> {
        let log: Vec<_> = self.log.iter().cloned().collect();
        let unsynced = log.len() - self.synced;
        let ok = (0..=self.acked).any(|k| {
            (0..=unsynced)
                .filter(|&j| !process_crash || j == unsynced)
                .any(|j| k <= self.synced + j && got == &log[k..self.synced + j])
        });
        prop_assert!(
            ok,
            "recovered {} batches (ids {:?}); log ids {:?}, acked {}, synced {}",
            got.len(),
            got.iter()
                .map(|b| String::from_utf8_lossy(&b[..8]).into_owned())
                .collect::<Vec<_>>(),
            log.iter()
                .map(|b| String::from_utf8_lossy(&b[..8]).into_owned())
                .collect::<Vec<_>>(),
            self.acked,
            self.synced
        );
        Ok(())
    }
}

/// A tiny deterministic generator for the power-cut mix (xorshift).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn model_body(id: usize, len: usize, compressible: bool) -> Vec<u8> {
    if compressible {
        let mut b = format!("{id:08} ").into_bytes();
        while b.len() < len.max(9) {
            b.extend_from_slice(b"cpu,host=server01 usage=0.5 1700000000\n");
        }
        b.truncate(len.max(9));
        b
    } else {
        body(id, len.max(9))
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn model(ops in proptest::collection::vec(op(), 1..80), compress: bool) {
        let dir = TempDir::new();
        let path = dir.file();
        let (mut spool, _) = Spool::open(&path, options(SMALL, compress)).unwrap();
        let mut durable_image = fs::read(&path).unwrap();
        let mut model = Model { log: VecDeque::new(), acked: 0, synced: 0 };
        let mut next_id = 0;
        for op in ops {
            match op {
                Op::Append { len, compressible } => {
                    let b = model_body(next_id, len, compressible);
                    next_id += 1;
                    match spool.try_append(&key(), 1, &b) {
                        Ok(_) => model.log.push_back(b),
                        Err(SpoolError::Full { needed, free }) => {
                            prop_assert!(free < needed);
                            prop_assert_eq!(free, SMALL_DATA - spool.used_bytes());
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                Op::Peek => {
                    let want = model.log.get(model.acked);
                    for _ in 0..2 {
                        let got = spool.peek().unwrap().map(|b| b.body);
                        prop_assert_eq!(got.as_ref(), want);
                    }
                }
                Op::Ack => {
                    if let Some(batch) = spool.peek().unwrap() {
                        prop_assert_eq!(Some(&batch.body), model.log.get(model.acked));
                        spool.ack(batch.position).unwrap();
                        model.acked += 1;
                    } else {
                        prop_assert_eq!(model.acked, model.log.len());
                    }
                }
                Op::Sync => {
                    spool.sync().unwrap();
                    model.log.drain(..model.acked);
                    model.acked = 0;
                    model.synced = model.log.len();
                    durable_image = fs::read(&path).unwrap();
                }
                Op::Crash | Op::PowerCut { .. } => {
                    drop(spool);
                    if let Op::PowerCut { seed } = op {
                        let current = fs::read(&path).unwrap();
                        let mut mixed = current.clone();
                        let mut state = seed | 1;
                        let data = FILE_HEADER_LEN as usize;
                        for sector in (data..current.len()).step_by(512) {
                            if next_random(&mut state) & 1 == 0 {
                                mixed[sector..sector + 512]
                                    .copy_from_slice(&durable_image[sector..sector + 512]);
                            }
                        }
                        fs::write(&path, &mixed).unwrap();
                    }
                    let (reopened, report) = Spool::open(&path, options(SMALL, compress)).unwrap();
                    spool = reopened;
                    prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
                    let got = bodies(&mut spool);
                    model.check_recovered(&got, matches!(op, Op::Crash))?;
                    prop_assert_eq!(spool.records(), got.len() as u64);
                    model.log = got.into();
                    model.acked = 0;
                    model.synced = model.log.len();
                    durable_image = fs::read(&path).unwrap();
                }
            }
            prop_assert_eq!(spool.records(), (model.log.len() - model.acked) as u64);
            prop_assert_eq!(spool.is_empty(), model.log.len() == model.acked);
            prop_assert!(spool.used_bytes() <= SMALL_DATA);
        }
    }
}
