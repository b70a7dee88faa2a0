//! Record framing: the 32-byte record header, the batch payload, and the
//! checks that tell a valid current record from junk or a stale one.
//!
//! Pure functions on byte slices: nothing here touches the file, so the
//! framing is tested (and can be fuzzed) on plain buffers. The byte layout is
//! in the [module doc of `spool`](super).

use crate::batch::BatchKey;
use crate::lp::precision::Precision;

/// Bytes of a record header. Records start at multiples of [`ALIGN`].
pub(crate) const HEADER_LEN: usize = 32;
/// Every record starts (and so ends) at a multiple of this, so a resync scan
/// only looks at one offset in eight.
pub(crate) const ALIGN: u64 = 8;
/// Bytes of the fixed part of a batch payload, before db, rp and authorization.
pub(crate) const PAYLOAD_FIXED_LEN: usize = 28;

/// Record kinds. Zero is not a kind, so a zeroed region never validates.
pub(crate) const KIND_BATCH: u8 = 1;
pub(crate) const KIND_PADDING: u8 = 2;
/// Record flags: the body is raw deflate (libdeflate level 1).
pub(crate) const FLAG_DEFLATE: u8 = 1;

/// `rp_len` / `auth_len` value for "absent" (distinct from an empty string).
const ABSENT: u32 = u32::MAX;
/// A deflated body cannot expand more than about 1032:1; anything claiming
/// more is damaged, and would make `peek` allocate a lot for nothing.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// Record header as stored, little-endian.
///
/// Persisted: do not reorder or resize these fields; change
/// [`FORMAT_VERSION`](super::ring::FORMAT_VERSION) if the layout must change.
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 4 | CRC32 of bytes 4..32 and of the payload (padding: of bytes 4..32 only) |
/// | 4 | 4 | payload length (bytes after the header, before alignment) |
/// | 8 | 8 | logical position of this record |
/// | 16 | 8 | append time, unix milliseconds |
/// | 24 | 4 | session: the open() that wrote it |
/// | 28 | 1 | kind: 1 batch, 2 padding |
/// | 29 | 1 | flags: bit 0 deflated body |
/// | 30 | 2 | zero |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub position: u64,
    pub appended_at_ms: u64,
    pub session: u32,
    pub kind: u8,
    pub flags: u8,
}

impl RecordHeader {
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            crc: u32::from_le_bytes(sub(bytes, 0)),
            len: u32::from_le_bytes(sub(bytes, 4)),
            position: u64::from_le_bytes(sub(bytes, 8)),
            appended_at_ms: u64::from_le_bytes(sub(bytes, 16)),
            session: u32::from_le_bytes(sub(bytes, 24)),
            kind: bytes[28],
            flags: bytes[29],
        }
    }

    /// Writes every field, the CRC field as it is (see [`seal`]).
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&self.crc.to_le_bytes());
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..16].copy_from_slice(&self.position.to_le_bytes());
        out[16..24].copy_from_slice(&self.appended_at_ms.to_le_bytes());
        out[24..28].copy_from_slice(&self.session.to_le_bytes());
        out[28] = self.kind;
        out[29] = self.flags;
        out[30] = 0;
        out[31] = 0;
    }

    /// Bytes the record takes in the ring: header, payload, alignment.
    pub fn total_len(&self) -> u64 {
        align(HEADER_LEN as u64 + u64::from(self.len))
    }

    /// Bytes the CRC covers after the header: the payload of a batch, nothing
    /// of a padding record (its payload is never written).
    fn crc_payload_len(&self) -> usize {
        if self.kind == KIND_PADDING {
            0
        } else {
            self.len as usize
        }
    }
}

fn sub<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Rounds up to a multiple of [`ALIGN`].
pub(crate) const fn align(n: u64) -> u64 {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Computes and stores the CRC of the record at the start of `record` (header
/// already written with any CRC value, payload written after it).
pub(crate) fn seal(record: &mut [u8]) {
    let header = RecordHeader::decode(header_bytes(record));
    let end = HEADER_LEN + header.crc_payload_len();
    let crc = crc32fast::hash(&record[4..end]);
    record[0..4].copy_from_slice(&crc.to_le_bytes());
}

fn header_bytes(record: &[u8]) -> &[u8; HEADER_LEN] {
    record[..HEADER_LEN]
        .try_into()
        .expect("callers pass at least HEADER_LEN bytes")
}

/// Why the bytes at a position are not a valid current record. `Display` is
/// the reason quoted in [`RecoveryReport::problems`](super::RecoveryReport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The file ends before the record does (a truncated file).
    Truncated,
    /// The stored position is another one: junk, or a stale record of an earlier lap.
    Position {
        found: u64,
    },
    BadKind(u8),
    /// Longer than the room left before the physical end of the data area
    /// or than the ring can hold.
    Length(u64),
    Checksum,
    /// Valid CRC but a payload that does not parse: a bug, or a CRC collision.
    Payload(&'static str),
    /// Valid, but written by another session than the one whose tail is being
    /// recovered: left over from before a crash, not appended after the last sync.
    Session(u32),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated => f.write_str("truncated (the file ends inside it)"),
            Invalid::Position { found } => write!(f, "position mismatch (found {found})"),
            Invalid::BadKind(kind) => write!(f, "unknown record kind {kind}"),
            Invalid::Length(len) => write!(f, "impossible length {len}"),
            Invalid::Checksum => f.write_str("checksum mismatch"),
            Invalid::Payload(why) => write!(f, "bad payload ({why})"),
            Invalid::Session(session) => write!(f, "left over from session {session}"),
        }
    }
}

/// Validates the record that should start at `bytes[0]` at logical position `position`.
///
/// `room` is how many bytes the record may span: to the physical end of the
/// data area, and no further than the ring can hold. `bytes` is what the file
/// has of them (shorter than `room` when the file was truncated). Cheap checks
/// come first, so a resync scan spends a 32-byte read on most offsets.
pub(crate) fn check(bytes: &[u8], room: u64, position: u64) -> Result<RecordHeader, Invalid> {
    if bytes.len() < HEADER_LEN {
        return Err(if room < HEADER_LEN as u64 {
            Invalid::Length(HEADER_LEN as u64)
        } else {
            Invalid::Truncated
        });
    }
    let header = RecordHeader::decode(header_bytes(bytes));
    if header.position != position {
        return Err(Invalid::Position {
            found: header.position,
        });
    }
    match (header.kind, header.flags) {
        (KIND_BATCH, 0 | FLAG_DEFLATE) | (KIND_PADDING, 0) => {}
        (KIND_BATCH | KIND_PADDING, _) => return Err(Invalid::BadKind(header.kind)),
        (kind, _) => return Err(Invalid::BadKind(kind)),
    }
    let total = header.total_len();
    if total > room {
        return Err(Invalid::Length(total));
    }
    let crc_end = HEADER_LEN + header.crc_payload_len();
    if bytes.len() < crc_end {
        return Err(Invalid::Truncated);
    }
    if crc32fast::hash(&bytes[4..crc_end]) != header.crc {
        return Err(Invalid::Checksum);
    }
    if header.kind == KIND_BATCH {
        parse_payload(&bytes[HEADER_LEN..crc_end], header.flags).map_err(Invalid::Payload)?;
    }
    Ok(header)
}

/// A batch payload, borrowed from the ring.
///
/// Payload layout (persisted: do not reorder or resize), little-endian:
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 8 | line count |
/// | 8 | 4 | body length before compression |
/// | 12 | 4 | db length |
/// | 16 | 4 | rp length, `u32::MAX` when absent |
/// | 20 | 4 | authorization length, `u32::MAX` when absent |
/// | 24 | 1 | precision: 0 ns, 1 u, 2 ms, 3 s, 4 m, 5 h |
/// | 25 | 3 | zero |
/// | 28 | | db, rp, authorization (UTF-8), then the body (deflated if flagged) |
#[derive(Debug, Clone, Copy)]
pub(crate) struct Payload<'a> {
    pub lines: u64,
    pub body_len: u32,
    pub db: &'a str,
    pub rp: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub precision: Precision,
    pub stored_body: &'a [u8],
}

/// Persisted precision codes: do not renumber.
fn precision_code(precision: Precision) -> u8 {
    match precision {
        Precision::Nanoseconds => 0,
        Precision::Microseconds => 1,
        Precision::Milliseconds => 2,
        Precision::Seconds => 3,
        Precision::Minutes => 4,
        Precision::Hours => 5,
    }
}

fn precision_from_code(code: u8) -> Option<Precision> {
    Some(match code {
        0 => Precision::Nanoseconds,
        1 => Precision::Microseconds,
        2 => Precision::Milliseconds,
        3 => Precision::Seconds,
        4 => Precision::Minutes,
        5 => Precision::Hours,
        _ => return None,
    })
}

/// Payload bytes for `key` and a stored body of `stored_body_len` bytes.
pub(crate) fn payload_len(key: &BatchKey, stored_body_len: usize) -> u64 {
    let strings = key.db.len()
        + key.rp.as_deref().map_or(0, str::len)
        + key.authorization.as_deref().map_or(0, str::len);
    (PAYLOAD_FIXED_LEN + strings + stored_body_len) as u64
}

/// Writes a payload into `out`, which is exactly [`payload_len`] bytes.
///
/// The caller has checked that every length fits in a `u32` (the record
/// length does, and each part is shorter).
pub(crate) fn write_payload(
    out: &mut [u8],
    key: &BatchKey,
    lines: usize,
    body_len: usize,
    stored_body: &[u8],
) {
    fn len32(len: usize) -> [u8; 4] {
        (len as u32).to_le_bytes()
    }
    let optional = |s: Option<&str>| s.map_or(ABSENT.to_le_bytes(), |s| len32(s.len()));
    out[0..8].copy_from_slice(&(lines as u64).to_le_bytes());
    out[8..12].copy_from_slice(&len32(body_len));
    out[12..16].copy_from_slice(&len32(key.db.len()));
    out[16..20].copy_from_slice(&optional(key.rp.as_deref()));
    out[20..24].copy_from_slice(&optional(key.authorization.as_deref()));
    out[24] = precision_code(key.precision);
    out[25..28].fill(0);
    let mut at = PAYLOAD_FIXED_LEN;
    for part in [
        key.db.as_bytes(),
        key.rp.as_deref().unwrap_or("").as_bytes(),
        key.authorization.as_deref().unwrap_or("").as_bytes(),
        stored_body,
    ] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, out.len());
}

/// Parses a payload; never panics, whatever the bytes.
pub(crate) fn parse_payload(payload: &[u8], flags: u8) -> Result<Payload<'_>, &'static str> {
    if payload.len() < PAYLOAD_FIXED_LEN {
        return Err("shorter than its fixed part");
    }
    let u32_at = |at| u32::from_le_bytes(sub(payload, at));
    let lines = u64::from_le_bytes(sub(payload, 0));
    let body_len = u32_at(8);
    let precision = precision_from_code(payload[24]).ok_or("unknown precision")?;
    let mut rest = &payload[PAYLOAD_FIXED_LEN..];
    let mut take = |len: u32| -> Result<&[u8], &'static str> {
        let len = usize::try_from(len).map_err(|_| "string too long")?;
        if len > rest.len() {
            return Err("string longer than the payload");
        }
        let (head, tail) = rest.split_at(len);
        rest = tail;
        Ok(head)
    };
    let utf8 = |bytes| std::str::from_utf8(bytes).map_err(|_| "string not UTF-8");
    let db = utf8(take(u32_at(12))?)?;
    let mut optional = |len: u32| -> Result<Option<&[u8]>, &'static str> {
        if len == ABSENT {
            Ok(None)
        } else {
            take(len).map(Some)
        }
    };
    let rp = optional(u32_at(16))?;
    let authorization = optional(u32_at(20))?;
    let stored_body = rest;
    if flags & FLAG_DEFLATE == 0 {
        if stored_body.len() != body_len as usize {
            return Err("body length mismatch");
        }
    } else if u64::from(body_len) > (stored_body.len() as u64 + 1) * MAX_DEFLATE_RATIO {
        return Err("impossible compression ratio");
    }
    Ok(Payload {
        lines,
        body_len,
        db,
        rp: rp.map(utf8).transpose()?,
        authorization: authorization.map(utf8).transpose()?,
        precision,
        stored_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str, rp: Option<&str>, authorization: Option<&str>) -> BatchKey {
        BatchKey {
            db: db.into(),
            rp: rp.map(Into::into),
            precision: Precision::Seconds,
            authorization: authorization.map(Into::into),
        }
    }

    /// A sealed batch record at `position` in a buffer padded to alignment.
    fn record(position: u64, key: &BatchKey, body: &[u8]) -> Vec<u8> {
        let len = payload_len(key, body.len());
        let mut buf = vec![0; align(HEADER_LEN as u64 + len) as usize];
        let header = RecordHeader {
            crc: 0,
            len: len as u32,
            position,
            appended_at_ms: 1_700_000_000_000,
            session: 7,
            kind: KIND_BATCH,
            flags: 0,
        };
        header.encode((&mut buf[..HEADER_LEN]).try_into().unwrap());
        write_payload(
            &mut buf[HEADER_LEN..HEADER_LEN + len as usize],
            key,
            3,
            body.len(),
            body,
        );
        seal(&mut buf);
        buf
    }

    #[test]
    fn header_round_trips() {
        let header = RecordHeader {
            crc: 0xdead_beef,
            len: 12345,
            position: u64::MAX - 7,
            appended_at_ms: 42,
            session: 9,
            kind: KIND_BATCH,
            flags: FLAG_DEFLATE,
        };
        let mut bytes = [0; HEADER_LEN];
        header.encode(&mut bytes);
        assert_eq!(RecordHeader::decode(&bytes), header);
        assert_eq!(header.total_len(), align(32 + 12345));
        assert_eq!(header.total_len() % ALIGN, 0);
    }

    #[test]
    fn payload_round_trips_with_absent_and_empty_strings() {
        // Absent and empty are different keys; both must survive.
        for (rp, auth) in [
            (None, None),
            (Some(""), Some("")),
            (Some("autogen"), Some("Basic dTpw")),
        ] {
            let key = key("telegraf", rp, auth);
            let buf = record(64, &key, b"cpu v=1 1\n");
            let header = check(&buf, buf.len() as u64, 64).unwrap();
            let payload =
                parse_payload(&buf[HEADER_LEN..HEADER_LEN + header.len as usize], 0).unwrap();
            assert_eq!(payload.db, "telegraf");
            assert_eq!(payload.rp, rp);
            assert_eq!(payload.authorization, auth);
            assert_eq!(payload.precision, Precision::Seconds);
            assert_eq!(payload.lines, 3);
            assert_eq!(payload.stored_body, b"cpu v=1 1\n");
        }
    }

    #[test]
    fn check_rejects() {
        let key = key("db", None, None);
        let good = record(8, &key, b"m v=1 1\n");
        let room = good.len() as u64;
        #[track_caller]
        fn f(bytes: &[u8], room: u64, position: u64, want: Invalid) {
            assert_eq!(check(bytes, room, position), Err(want));
        }
        // Position: a stale record of an earlier lap, or any other offset.
        f(&good, room, 8 + 4096, Invalid::Position { found: 8 });
        // Truncated file, header or payload.
        f(&good[..20], room, 8, Invalid::Truncated);
        f(&good[..40], room, 8, Invalid::Truncated);
        // Room: the record would cross the physical end.
        f(&good, room - 8, 8, Invalid::Length(room));
        f(&good[..16], 16, 8, Invalid::Length(32));
        // Every bit of the header and payload is covered (alignment bytes are not).
        let covered = HEADER_LEN + payload_len(&key, 8) as usize;
        for byte in 0..covered {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(check(&bad, room, 8).is_err(), "byte {byte} bit {bit}");
            }
        }
        let mut bad = good.clone();
        bad[0] ^= 1;
        f(&bad, room, 8, Invalid::Checksum);
        // Kind and flags.
        let mut bad = good.clone();
        bad[28] = 0;
        f(&bad, room, 8, Invalid::BadKind(0));
        bad[28] = KIND_BATCH;
        bad[29] = 0x80;
        f(&bad, room, 8, Invalid::BadKind(KIND_BATCH));
        // Zeroed space is never a record.
        f(&[0; 64], 64, 0, Invalid::BadKind(0));
    }

    #[test]
    fn parse_payload_never_panics_on_short_or_lying_lengths() {
        let key = key("db", Some("rp"), Some("auth"));
        let buf = record(0, &key, b"body");
        let payload = &buf[HEADER_LEN..HEADER_LEN + payload_len(&key, 4) as usize];
        for cut in 0..payload.len() {
            assert!(parse_payload(&payload[..cut], 0).is_err(), "cut {cut}");
        }
        let mut lying = payload.to_vec();
        lying[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_payload(&lying, 0).unwrap_err(),
            "string longer than the payload"
        );
        assert_eq!(
            parse_payload(payload, FLAG_DEFLATE).map(|p| p.body_len),
            Ok(4)
        );
    }
}
