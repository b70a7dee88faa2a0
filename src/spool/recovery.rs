//! Opening a spool file: check that it is one, pick the newest valid header
//! slot, walk the records from its read position, skip corrupt regions, cut
//! off a torn tail, and make what was found durable.
//!
//! The walk ([`walk`]) is a pure function of the data area's bytes, so the
//! "never panics, never invents a record" properties are tested on buffers as
//! well as on files. The rules are in the [module doc of `spool`](super).

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::record::{self, Invalid, RecordHeader, ALIGN, HEADER_LEN, KIND_BATCH};
use super::ring::{self, Ring, Slot, StaticCheck, FILE_HEADER_LEN, MIN_DATA_CAPACITY, PAGE};
use super::{RecoveryReport, SpoolError, SpoolOptions};

/// What the walk over the data area found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Walk {
    /// Where replay starts: the header's read position, or past a corrupt
    /// region right at it.
    pub read: u64,
    /// Where the next record goes: after the last valid record.
    pub write: u64,
    pub records: u64,
    /// On-disk bytes of the valid batch records.
    pub record_bytes: u64,
    pub oldest_appended_at_ms: Option<u64>,
    /// Corrupt regions between `read` and `write`, `(from, to)` in logical
    /// positions, in order; replay jumps over them.
    pub skips: VecDeque<(u64, u64)>,
    pub skipped_bytes: u64,
    pub skipped_regions: u64,
    pub problems: Vec<String>,
}

/// Where a record at or after `position` can start: a tail of the data area
/// too short for a record header is skipped (the writer does the same).
pub(crate) fn record_start(position: u64, data_capacity: u64) -> u64 {
    let room = data_capacity - position % data_capacity;
    if room < HEADER_LEN as u64 {
        position + room
    } else {
        position
    }
}

/// Validates the record at logical `position`, which must end by `limit`.
/// `data` is what the file has of the data area (shorter when truncated).
pub(crate) fn check_at(
    data: &[u8],
    data_capacity: u64,
    position: u64,
    limit: u64,
) -> Result<RecordHeader, Invalid> {
    let physical = position % data_capacity;
    let room = (data_capacity - physical).min(limit.saturating_sub(position));
    let start = (physical as usize).min(data.len());
    let end = data.len().min(start.saturating_add(room as usize));
    record::check(&data[start..end], room, position)
}

/// The first valid record strictly after `from` and before `until`, in
/// 8-byte steps; `None` if there is none.
pub(crate) fn resync(
    data: &[u8],
    data_capacity: u64,
    from: u64,
    until: u64,
    limit: u64,
) -> Option<u64> {
    let mut candidate = from + ALIGN;
    while candidate < until {
        candidate = record_start(candidate, data_capacity);
        if candidate >= until {
            break;
        }
        if check_at(data, data_capacity, candidate, limit).is_ok() {
            return Some(candidate);
        }
        candidate += ALIGN;
    }
    None
}

/// Walks the records from `read`.
///
/// Before `synced_write` (covered by the header, so once valid) a bad record
/// is a damaged region: scan forward to the next valid record and carry on.
/// From `synced_write` on (appended after the last header write) the first bad
/// record, or one of another session, is the torn tail: stop there.
pub(crate) fn walk(
    data: &[u8],
    data_capacity: u64,
    read: u64,
    synced_write: u64,
    session: u32,
) -> Walk {
    // Saturating: positions come from a checked slot, but cost nothing to bound.
    let limit = read.saturating_add(data_capacity);
    let mut found = Walk {
        read,
        ..Walk::default()
    };
    let mut position = read;
    loop {
        let start = record_start(position, data_capacity);
        if start >= limit {
            break;
        }
        let invalid = match check_at(data, data_capacity, start, limit) {
            Ok(header) if start >= synced_write && header.session != session => {
                Invalid::Session(header.session)
            }
            Ok(header) => {
                if header.kind == KIND_BATCH {
                    found.records += 1;
                    found.record_bytes += header.total_len();
                    found
                        .oldest_appended_at_ms
                        .get_or_insert(header.appended_at_ms);
                }
                position = start + header.total_len();
                continue;
            }
            Err(invalid) => invalid,
        };
        if start >= synced_write {
            break;
        }
        let end = resync(data, data_capacity, start, synced_write, limit).unwrap_or(synced_write);
        let skipped = end - position;
        found.skipped_bytes += skipped;
        found.skipped_regions += 1;
        found.problems.push(format!(
            "record at {start}: {invalid}, skipped {skipped} bytes"
        ));
        if position == found.read {
            found.read = end;
        } else {
            found.skips.push_back((position, end));
        }
        position = end;
    }
    found.write = position;
    found
}

/// What [`open`] hands to `Spool`.
pub(crate) struct Opened {
    pub ring: Ring,
    /// The slot written at open: the durable state.
    pub slot: Slot,
    pub walk: Walk,
    pub report: RecoveryReport,
}

fn corrupt(path: &Path, what: &str) -> SpoolError {
    SpoolError::Corrupt(format!(
        "{}: {what}. Move the file out of the spool directory (fluxgate then starts \
         an empty spool in its place) and keep it for inspection; its batches are not replayed",
        path.display()
    ))
}

/// Opens or creates the spool file at `path`; see [`Spool::open`](super::Spool::open).
pub(crate) fn open(path: &Path, options: &SpoolOptions) -> Result<Opened, SpoolError> {
    let data_capacity = ring::data_capacity_for(options.capacity);
    if data_capacity < MIN_DATA_CAPACITY {
        return Err(SpoolError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "spool capacity {} bytes is below the minimum of {} bytes",
                options.capacity,
                FILE_HEADER_LEN + MIN_DATA_CAPACITY
            ),
        )));
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(corrupt(path, "not a regular file")),
        // An empty file holds nothing to lose (and cannot be ours: spool files
        // are created whole, under another name, then renamed).
        Ok(meta) if meta.len() == 0 => ring::Ring::create(path, options.capacity)?,
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            ring::Ring::create(path, options.capacity)?;
        }
        Err(err) => return Err(SpoolError::Io(err)),
    }
    let (file, map) = Ring::map(path)?;
    let len = map.len() as u64;
    match ring::check_static(&map[..map.len().min(PAGE as usize)]) {
        StaticCheck::Spool => {}
        StaticCheck::NotASpool => return Err(corrupt(path, "not a fluxgate spool file")),
        StaticCheck::Unsupported { version } => {
            return Err(corrupt(
                path,
                &format!(
                    "spool format version {version} (or a damaged file header); this fluxgate \
                     reads version {}",
                    ring::FORMAT_VERSION
                ),
            ))
        }
    }
    if len < FILE_HEADER_LEN {
        return Err(corrupt(
            path,
            &format!("truncated inside its header ({len} bytes)"),
        ));
    }
    let slot = [0, 1]
        .into_iter()
        .filter_map(|i| {
            let at = Slot::offset(i) as usize;
            Slot::decode(&map[at..]).filter(|slot| slot.sequence % 2 == i)
        })
        .max_by_key(|slot| slot.sequence)
        .ok_or_else(|| corrupt(path, "both header slots are damaged"))?;

    let expected_len = FILE_HEADER_LEN + slot.data_capacity;
    let data_end = len.min(expected_len) as usize;
    let found = walk(
        &map[FILE_HEADER_LEN as usize..data_end],
        slot.data_capacity,
        slot.read,
        slot.write,
        slot.session,
    );
    let mut report = RecoveryReport {
        records: found.records,
        bytes: found.record_bytes,
        skipped_bytes: found.skipped_bytes,
        skipped_records_or_regions: found.skipped_regions,
        problems: found.problems.clone(),
    };
    if len < expected_len {
        report.problems.push(format!(
            "file is {len} bytes, {expected_len} expected: truncated, extended back"
        ));
    }

    // Geometry: the configured capacity applies to an empty spool; a spool
    // with data keeps the capacity it was written with until it drains.
    let empty = found.read == found.write;
    let (data_capacity, file_len) = if slot.data_capacity == data_capacity || empty {
        (data_capacity, options.capacity)
    } else {
        report.problems.push(format!(
            "spool holds data written with a capacity of {expected_len} bytes, not the \
             configured {}: keeping {expected_len} until the spool is empty at an open",
            options.capacity
        ));
        (slot.data_capacity, expected_len)
    };
    let (file, map) = if len == file_len {
        (file, map)
    } else {
        Ring::resize(file, map, file_len)?
    };
    let mut ring = Ring::new(file, map, data_capacity);
    // Records found after the header's write position may still be only in
    // the page cache: make them durable before the header points past them.
    if data_capacity == slot.data_capacity {
        ring.flush_data(slot.write, found.write)?;
    }
    let (read, write, skips) = if empty {
        (found.write, found.write, VecDeque::new())
    } else {
        (found.read, found.write, found.skips.clone())
    };
    let new_slot = Slot {
        sequence: slot.sequence + 1,
        read,
        write,
        data_capacity,
        session: slot.session.wrapping_add(1),
    };
    ring.write_slot(&new_slot)?;

    if !report.problems.is_empty() {
        tracing::warn!(
            path = %path.display(),
            records = report.records,
            skipped_bytes = report.skipped_bytes,
            skipped_regions = report.skipped_records_or_regions,
            problems = ?report.problems,
            "spool recovered with problems"
        );
    } else if report.records > 0 {
        tracing::info!(
            path = %path.display(),
            records = report.records,
            bytes = report.bytes,
            "spool recovered"
        );
    }
    Ok(Opened {
        ring,
        slot: new_slot,
        walk: Walk {
            read,
            write,
            skips,
            ..found
        },
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::record::{align, seal, RecordHeader, KIND_PADDING};

    const CAP: u64 = 4096;

    /// Writes a padding-free "batch" record with an empty payload-shaped body:
    /// enough for the walk, which checks framing and payload.
    fn put(data: &mut [u8], position: u64, session: u32, body: &[u8]) -> u64 {
        let key = crate::batch::BatchKey {
            db: "db".into(),
            rp: None,
            precision: Default::default(),
            authorization: None,
        };
        let len = record::payload_len(&key, body.len());
        let total = align(HEADER_LEN as u64 + len);
        let at = (position % CAP) as usize;
        let header = RecordHeader {
            crc: 0,
            len: len as u32,
            position,
            appended_at_ms: position,
            session,
            kind: KIND_BATCH,
            flags: 0,
        };
        header.encode((&mut data[at..at + HEADER_LEN]).try_into().unwrap());
        record::write_payload(
            &mut data[at + HEADER_LEN..at + HEADER_LEN + len as usize],
            &key,
            1,
            body.len(),
            body,
        );
        seal(&mut data[at..at + total as usize]);
        position + total
    }

    fn pad(data: &mut [u8], position: u64, session: u32) -> u64 {
        let at = (position % CAP) as usize;
        let room = CAP - at as u64;
        let header = RecordHeader {
            crc: 0,
            len: (room - HEADER_LEN as u64) as u32,
            position,
            appended_at_ms: 0,
            session,
            kind: KIND_PADDING,
            flags: 0,
        };
        header.encode((&mut data[at..at + HEADER_LEN]).try_into().unwrap());
        seal(&mut data[at..]);
        position + room
    }

    #[test]
    fn walk_follows_padding_across_the_wrap() {
        let mut data = vec![0; CAP as usize];
        let mut p = 3000;
        p = put(&mut data, p, 1, &[b'a'; 500]);
        p = pad(&mut data, p, 1);
        assert_eq!(p, CAP);
        let end = put(&mut data, p, 1, b"b");
        let found = walk(&data, CAP, 3000, end, 1);
        assert_eq!((found.read, found.write, found.records), (3000, end, 2));
        assert!(found.problems.is_empty());
        // The same records found as an unsynced tail of the same session.
        assert_eq!(walk(&data, CAP, 3000, 3000, 1).write, end);
        // But not as the tail of another session: left over from before a crash.
        assert_eq!(walk(&data, CAP, 3000, 3000, 2).write, 3000);
    }

    #[test]
    fn walk_skips_short_tail_without_padding() {
        let mut data = vec![0; CAP as usize];
        let start = CAP - 24 - 512;
        let p = put(&mut data, start, 1, &[b'x'; 512 - 32 - 28 - 2]);
        assert_eq!(p, CAP - 24, "24 bytes left: too few for a padding record");
        let end = put(&mut data, CAP, 1, b"y");
        assert_eq!(walk(&data, CAP, start, start, 1).write, end);
    }

    #[test]
    fn walk_resyncs_inside_synced_region_only() {
        let mut data = vec![0; CAP as usize];
        let a = put(&mut data, 0, 1, b"a");
        let b = put(&mut data, a, 1, b"b");
        let c = put(&mut data, b, 1, b"c");
        data[a as usize + 40] ^= 1; // damage b's payload
        let found = walk(&data, CAP, 0, c, 1);
        assert_eq!(found.records, 2);
        assert_eq!(found.write, c);
        assert_eq!(found.skips, [(a, b)]);
        assert_eq!(
            found.problems,
            [format!(
                "record at {a}: checksum mismatch, skipped {} bytes",
                b - a
            )]
        );
        // Not synced: b is the torn tail and c is not trusted.
        let tail = walk(&data, CAP, 0, a, 1);
        assert_eq!((tail.records, tail.write), (1, a));
        assert!(tail.problems.is_empty());
        // Damage at the read position moves the read position.
        let found = walk(&data, CAP, a, c, 1);
        assert_eq!((found.read, found.write, found.records), (b, c, 1));
    }

    #[test]
    fn walk_never_reads_past_a_truncated_data_area() {
        let mut data = vec![0; CAP as usize];
        let mut ends = vec![0];
        while ends.len() < 13 {
            ends.push(put(&mut data, *ends.last().unwrap(), 1, &[b'z'; 100]));
        }
        let synced = *ends.last().unwrap();
        for cut in 0..data.len() {
            // A record is whole once its CRC-covered bytes are: 6 alignment bytes follow.
            let complete = ends[1..]
                .iter()
                .filter(|&&end| end - 6 <= cut as u64)
                .count();
            let found = walk(&data[..cut], CAP, 0, synced, 1);
            assert_eq!(found.records as usize, complete, "cut {cut}");
            assert_eq!(found.write, synced, "cut {cut}");
        }
    }
}
