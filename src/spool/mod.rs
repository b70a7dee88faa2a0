//! The spool: one mmap'ed ring file per backend, holding the batches that
//! backend could not take, replayed in order once it answers again.
//!
//! A writer thread appends a batch it could not deliver ([`Spool::try_append`]),
//! makes it durable ([`Spool::sync`], before a 2xx in the `durable` ack mode),
//! and replays with [`Spool::peek`] / [`Spool::ack`]. One `Spool` per backend,
//! under a `Mutex` shared by that backend's writer threads.
//!
//! # Guarantees
//!
//! - **Order.** Batches replay in append order, also across crashes.
//! - **Durability.** After `sync` returns, every batch appended before it is on
//!   disk, and every ack before it is too. A crash (process or power) loses at
//!   most what was appended since the last sync, always a suffix: an earlier
//!   batch is never lost while a later one survives. Acks not synced may be
//!   forgotten: those batches replay again (at least once, never zero times).
//!   A process crash loses nothing that was appended: the pages are in the
//!   kernel's cache and recovery finds them.
//! - **Back-pressure, never overwrite.** A batch that does not fit is refused
//!   with [`SpoolError::Full`]; unread data is never overwritten.
//! - **No input panics.** Any file content, any truncation, gives either a spool
//!   (with what could be recovered, and a [`RecoveryReport`] saying what was
//!   not) or [`SpoolError::Corrupt`]. A file that is not a spool is never
//!   written to.
//!
//! # File layout
//!
//! All integers little-endian. Persisted structures: do not reorder or resize
//! their fields; any change bumps `FORMAT_VERSION` (in `ring.rs`).
//!
//! ```text
//! offset 0      page 0: magic "FGSPOOL\n" (8), format version u32 = 1,
//!               header length u32 = 12288, CRC32 of the previous 16 bytes.
//!               Written once, when the file is created.
//! offset 4096   page 1: header slot for even sequence numbers
//! offset 8192   page 2: header slot for odd sequence numbers
//!               slot: sequence u64, read position u64, write position u64,
//!                     data capacity u64, session u32, CRC32 of the 36 bytes before
//! offset 12288  data area: `data capacity` bytes (file length - 12288, rounded
//!               down to 8), a ring of records
//! ```
//!
//! Record (at a multiple of 8; the next one starts after alignment padding):
//!
//! ```text
//! +0   crc u32         CRC32 of bytes +4..+32 and of the payload
//! +4   len u32         payload length
//! +8   position u64    logical position of this record
//! +16  appended_at u64 unix milliseconds
//! +24  session u32     the open() that wrote it
//! +28  kind u8         1 batch, 2 padding (0 is never valid: zeroed space is no record)
//! +29  flags u8        bit 0: body is raw deflate
//! +30  zero u16
//! +32  payload         batch: lines u64, body length u32, db / rp / authorization
//!                      lengths u32 (u32::MAX = absent), precision u8, 3 zero bytes,
//!                      the three strings, the body. Padding: not written.
//! ```
//!
//! # Why this shape
//!
//! - **Logical positions only grow.** The physical offset of position `p` is
//!   `12288 + p % data capacity`. A record carries its own position, so a stale
//!   record of an earlier lap (valid CRC, wrong position) is never taken for
//!   a current one, and "read", "write" and "used" are plain subtractions.
//! - **Records are never split.** One that does not fit before the physical end
//!   of the data area goes to the start of the next lap; the gap gets a padding
//!   record (kind 2, its length reaching the end), or, when fewer than 32 bytes
//!   are left, nothing: writer and reader both skip a tail shorter than a
//!   record header. Positions count the gap, so a record is one contiguous
//!   slice of the map: replay copies straight out of it.
//! - **8-byte alignment** makes a resync scan look at one offset in eight.
//! - **Two header slots, written alternately**, each with a sequence number and
//!   a CRC, each on its own page: a power cut during a header write can only
//!   tear the slot being written, and open takes the valid slot with the
//!   higher sequence, which is the previous durable state at worst.
//! - **Sessions.** Every open writes a new session number to the header and
//!   every record carries the session that wrote it. After a crash the write
//!   position falls back to the last valid record and new records overwrite
//!   the lost ones; should a lost record's successor survive on disk (pages are
//!   written back in any order), it would line up with the new records. The
//!   session tells it apart: past the header's write position only records of
//!   the header's session are recovered.
//! - **Durability by msync.** Appends write into the map; `sync` msyncs the
//!   bytes appended since the previous sync, then writes and msyncs the next
//!   header slot. The header's write position therefore never points at
//!   data that is not on disk. Appends only use space freed by acks that are
//!   durable: if the only way to fit a batch is space freed by unsynced acks,
//!   `try_append` writes the header first (one page msync), so a crash can
//!   never find the header's read position pointing at overwritten data.
//! - **Compression** (`compress`): raw deflate, libdeflate level 1, kept only
//!   when smaller; flagged per record, so a spool written with either setting
//!   reads with both. Line protocol shrinks several times at several hundred
//!   MB/s, so a full spool holds several times the outage. Writers compress
//!   with an [`Encoder`] of their own before they take the spool's lock
//!   ([`Spool::try_append_encoded`]): a 1 MiB batch takes milliseconds to
//!   deflate, which the replay and the other writers need not wait for, and a
//!   batch retried while the spool is full is compressed once.
//! - **Credentials** (the `Authorization` header) are stored, since replay must
//!   authenticate as the client did, but never printed: `SpooledBatch`'s
//!   `Debug` redacts them and no error message quotes a payload.
//!
//! # Recovery
//!
//! [`Spool::open`] starts at the header's read position and walks records.
//! Before the header's write position (all of it was valid at the last sync)
//! a bad record is damage: it scans forward in 8-byte steps for the next
//! record whose position, length and CRC are valid, skips what is between,
//! and reports it. From the header's write position on, records appended
//! after the last sync are recovered while they validate (and carry the
//! header's session); the first one that does not is the torn tail, and
//! the write position goes there. Then the recovered state is made durable
//! with a new header slot (and a new session).
//!
//! An existing file whose size differs from the configured capacity keeps
//! its data: while it holds records, it keeps the capacity it was written
//! with (reported in `problems`); an empty one is resized to the configured
//! capacity at open. A truncated file is recovered as far as it goes, then
//! extended back to its size. Files other than `path` in the directory are
//! never looked at.

mod record;
mod recovery;
mod ring;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use libdeflater::{CompressionLvl, Compressor, Decompressor};

use crate::batch::BatchKey;
use record::{Invalid, RecordHeader, FLAG_DEFLATE, HEADER_LEN, KIND_BATCH, KIND_PADDING};
use recovery::record_start;
use ring::{Ring, Slot};

/// How a spool file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Size of the file in bytes, header (12 KiB) included; at least 16 KiB.
    pub capacity: u64,
    /// Deflate bodies (per record, only when it makes them smaller).
    pub compress: bool,
}

impl SpoolOptions {
    /// `capacity` bytes, compressed.
    pub const fn new(capacity: u64) -> SpoolOptions {
        SpoolOptions {
            capacity,
            compress: true,
        }
    }
}

/// A batch read back from the spool.
#[derive(Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    /// Its logical position: pass it to [`Spool::ack`].
    pub position: u64,
    pub key: BatchKey,
    pub lines: usize,
    /// The body as appended (decompressed).
    pub body: Vec<u8>,
    pub appended_at_ms: u64,
}

impl fmt::Debug for SpooledBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `key`'s own Debug: it would print the credentials.
        f.debug_struct("SpooledBatch")
            .field("position", &self.position)
            .field("db", &self.key.db)
            .field("rp", &self.key.rp)
            .field("precision", &self.key.precision)
            .field(
                "authorization",
                &self.key.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("lines", &self.lines)
            .field("body_len", &self.body.len())
            .field("appended_at_ms", &self.appended_at_ms)
            .finish()
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Batches recovered, ready for replay.
    pub records: u64,
    /// On-disk bytes of those batches.
    pub bytes: u64,
    /// Bytes skipped over in damaged regions.
    pub skipped_bytes: u64,
    /// Damaged regions skipped (each one record or more).
    pub skipped_records_or_regions: u64,
    /// One line per finding, for the log ("record at 123: checksum mismatch,
    /// skipped 4096 bytes").
    pub problems: Vec<String>,
}

/// Everything a spool operation can fail with.
#[derive(Debug)]
pub enum SpoolError {
    /// The file system refused (permissions, disk, lock held by another process).
    Io(io::Error),
    /// The batch does not fit in the space not yet replayed: back-pressure.
    Full { needed: u64, free: u64 },
    /// The batch can never fit, even in an empty spool.
    TooLarge { needed: u64, capacity: u64 },
    /// The file is not a spool, or not one this version reads; the message
    /// says what to do.
    Corrupt(String),
    /// `ack` of a position that is not the oldest record (a caller bug).
    BadAck { position: u64, oldest: Option<u64> },
}

impl SpoolError {
    /// True for [`SpoolError::Full`]: retry after replay frees space.
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. })
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io(err) => write!(
                f,
                "spool I/O error: {err}; check the spool directory (free space, permissions, \
                 no other fluxgate using it)"
            ),
            SpoolError::Full { needed, free } => write!(
                f,
                "spool full: the batch needs {needed} bytes, {free} are free; the backend has \
                 been failing long enough to fill it. Possible solutions: bring the backend \
                 back (the spool drains by itself), raise spool.capacity"
            ),
            SpoolError::TooLarge { needed, capacity } => write!(
                f,
                "batch of {needed} bytes (encoded) can never fit in a spool of {capacity} data \
                 bytes; raise spool.capacity or lower the batch size"
            ),
            SpoolError::Corrupt(what) => f.write_str(what),
            SpoolError::BadAck { position, oldest } => write!(
                f,
                "ack of spool position {position}, but the oldest record is at {oldest:?} (a bug)"
            ),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpoolError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for SpoolError {
    fn from(err: io::Error) -> SpoolError {
        SpoolError::Io(err)
    }
}

/// One backend's spool. See the [module doc](self) for the guarantees.
///
/// Invariants: `read <= write`, `write - read <= data capacity`, and
/// `durable.read <= read`, `durable.write <= write`.
pub struct Spool {
    path: PathBuf,
    ring: Ring,
    /// Logical position of the oldest unacknowledged record, or of padding, a
    /// skipped region or a short tail before it.
    read: u64,
    /// Logical position where the next record (or its padding) goes.
    write: u64,
    /// The header slot last written and msync'ed.
    durable: Slot,
    /// Batch records in `read..write`.
    records: u64,
    oldest_appended_at_ms: Option<u64>,
    /// Damaged regions in `read..write` found at open, in order.
    skips: VecDeque<(u64, u64)>,
    /// The batch record at `read` whose CRC was checked by the last `peek`.
    checked: Option<RecordHeader>,
    /// Whether [`Spool::try_append`] deflates (kept apart from `encoder`,
    /// which is moved out while it works).
    compress: bool,
    /// For [`Spool::try_append`]; writers bring their own.
    encoder: Encoder,
    decompressor: Decompressor,
}

/// Turns batch bodies into the form a spool stores: deflated when the spool
/// compresses and that makes them smaller, else as they are. One per thread
/// that appends, used outside the spool's lock.
#[derive(Default)]
pub struct Encoder {
    compress: bool,
    /// Made on first use: a writer whose backend never fails needs none.
    compressor: Option<Compressor>,
    /// Deflate output, reused: the only allocation of an append, and only
    /// when a body is larger than any before.
    scratch: Vec<u8>,
}

/// A batch body as [`Encoder::encode`] made it, for
/// [`Spool::try_append_encoded`].
pub struct Encoded<'a> {
    /// The bytes to store.
    stored: &'a [u8],
    /// `FLAG_DEFLATE` when `stored` is deflated, else 0.
    flags: u8,
    /// The body's own length.
    body_len: usize,
}

impl Encoder {
    /// An encoder for a spool opened with `compress` (see [`Spool::compresses`]).
    pub fn new(compress: bool) -> Encoder {
        Encoder {
            compress,
            ..Encoder::default()
        }
    }

    /// `body` as the spool stores it.
    pub fn encode<'a>(&'a mut self, body: &'a [u8]) -> Encoded<'a> {
        let raw = Encoded {
            stored: body,
            flags: 0,
            body_len: body.len(),
        };
        if !self.compress || body.is_empty() {
            return raw;
        }
        let compressor = self.compressor.get_or_insert_with(|| {
            Compressor::new(CompressionLvl::new(1).expect("1 is a valid level"))
        });
        let bound = compressor.deflate_compress_bound(body.len());
        if self.scratch.len() < bound {
            self.scratch.resize(bound, 0);
        }
        match compressor.deflate_compress(body, &mut self.scratch) {
            Ok(len) if len < body.len() => Encoded {
                stored: &self.scratch[..len],
                flags: FLAG_DEFLATE,
                body_len: body.len(),
            },
            _ => raw,
        }
    }
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("read", &self.read)
            .field("write", &self.write)
            .field("records", &self.records)
            .field("data_capacity", &self.ring.data_capacity)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Spool {
    /// Opens the spool file at `path`, or creates it (`capacity` bytes,
    /// preallocated; the directory must exist) if it does not exist or is
    /// empty, and recovers what it holds from the header's read position (see
    /// "Recovery" in the [module doc](self)).
    ///
    /// An existing file of another size keeps its data: a non-empty one keeps
    /// the capacity it was written with until it is empty at an open (noted in
    /// the report); an empty one is resized to `capacity`. The file is locked
    /// (`flock`) while the `Spool` lives.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Corrupt`] when the file is not a spool (bad magic), is of
    /// another format version, or has no valid header slot: nothing is written
    /// to it; the message tells the operator to move it away.
    /// [`SpoolError::Io`] when the file cannot be created, locked (another
    /// process has it), mapped or synced, or `capacity` is below 16 KiB.
    pub fn open(path: &Path, options: SpoolOptions) -> Result<(Spool, RecoveryReport), SpoolError> {
        let opened = recovery::open(path, &options)?;
        let walk = opened.walk;
        let spool = Spool {
            path: path.to_owned(),
            ring: opened.ring,
            read: walk.read,
            write: walk.write,
            durable: opened.slot,
            records: walk.records,
            oldest_appended_at_ms: walk.oldest_appended_at_ms,
            skips: walk.skips,
            checked: None,
            compress: options.compress,
            encoder: Encoder::new(options.compress),
            decompressor: Decompressor::new(),
        };
        Ok((spool, opened.report))
    }

    /// Appends one batch, without waiting for space or for the disk.
    ///
    /// Returns the record's logical position. The batch is durable only after
    /// the next [`sync`](Self::sync).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Full`] when the unread records leave too little space
    /// (nothing is written; retry after replay). [`SpoolError::TooLarge`] when
    /// the batch cannot fit even in an empty spool. [`SpoolError::Io`] if
    /// making earlier acks durable, to reuse their space, fails.
    pub fn try_append(
        &mut self,
        key: &BatchKey,
        lines: usize,
        body: &[u8],
    ) -> Result<u64, SpoolError> {
        let mut encoder = std::mem::take(&mut self.encoder);
        let result = self.try_append_encoded(key, lines, &encoder.encode(body));
        self.encoder = encoder;
        result
    }

    /// Whether bodies appended with [`Spool::try_append`] are compressed: what
    /// an [`Encoder`] for this spool is made with.
    pub fn compresses(&self) -> bool {
        self.compress
    }

    /// [`Spool::try_append`] for a body encoded beforehand, outside the lock
    /// around the spool.
    ///
    /// # Errors
    ///
    /// As for [`Spool::try_append`].
    pub fn try_append_encoded(
        &mut self,
        key: &BatchKey,
        lines: usize,
        encoded: &Encoded<'_>,
    ) -> Result<u64, SpoolError> {
        let data_capacity = self.ring.data_capacity;
        let Encoded {
            stored,
            flags,
            body_len,
        } = *encoded;
        let payload_len = record::payload_len(key, stored.len());
        let total = record::align(HEADER_LEN as u64 + payload_len);
        if total > data_capacity
            || payload_len > u64::from(u32::MAX)
            || body_len > u32::MAX as usize
        {
            return Err(SpoolError::TooLarge {
                needed: total,
                capacity: data_capacity,
            });
        }
        let room = data_capacity - self.write % data_capacity;
        let start = if room < total {
            self.write + room
        } else {
            self.write
        };
        let end = start + total;
        if end - self.durable.read > data_capacity {
            if end - self.read > data_capacity {
                return Err(SpoolError::Full {
                    needed: end - self.write,
                    free: data_capacity - (self.write - self.read),
                });
            }
            // Only acks not yet durable stand in the way: make them durable.
            // The header keeps the durable write position, or moves it up to
            // the read position over acked records that were never synced.
            let slot = Slot {
                sequence: self.durable.sequence + 1,
                read: self.read,
                write: self.durable.write.max(self.read),
                ..self.durable
            };
            self.ring.write_slot(&slot)?;
            self.durable = slot;
        }
        let session = self.durable.session;
        let appended_at_ms = now_ms();
        if start > self.write && room >= HEADER_LEN as u64 {
            let at = self.ring.physical(self.write);
            let padding = RecordHeader {
                crc: 0,
                len: (room - HEADER_LEN as u64) as u32,
                position: self.write,
                appended_at_ms,
                session,
                kind: KIND_PADDING,
                flags: 0,
            };
            let data = self.ring.data_mut();
            padding.encode((&mut data[at..at + HEADER_LEN]).try_into().unwrap());
            record::seal(&mut data[at..at + HEADER_LEN]);
        }
        let at = self.ring.physical(start);
        let header = RecordHeader {
            crc: 0,
            len: payload_len as u32,
            position: start,
            appended_at_ms,
            session,
            kind: KIND_BATCH,
            flags,
        };
        let data = self.ring.data_mut();
        let record = &mut data[at..at + total as usize];
        header.encode((&mut record[..HEADER_LEN]).try_into().unwrap());
        record::write_payload(
            &mut record[HEADER_LEN..HEADER_LEN + payload_len as usize],
            key,
            lines,
            body_len,
            stored,
        );
        record[HEADER_LEN + payload_len as usize..].fill(0);
        record::seal(record);
        self.write = end;
        self.records += 1;
        self.oldest_appended_at_ms.get_or_insert(appended_at_ms);
        Ok(start)
    }

    /// Makes every append and ack so far durable: msync of the records
    /// appended since the last sync, then of a new header slot. Does nothing
    /// when nothing changed.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Io`] when msync fails; nothing since the previous sync
    /// can then be counted on.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.read == self.durable.read && self.write == self.durable.write {
            return Ok(());
        }
        self.ring.flush_data(self.durable.write, self.write)?;
        let slot = Slot {
            sequence: self.durable.sequence + 1,
            read: self.read,
            write: self.write,
            ..self.durable
        };
        self.ring.write_slot(&slot)?;
        self.durable = slot;
        Ok(())
    }

    /// The oldest batch not yet acknowledged, decompressed, or `None` when
    /// the spool is empty. Without an [`ack`](Self::ack) in between, returns
    /// the same batch again.
    ///
    /// A record that fails its checks here (the file was changed under us)
    /// is skipped and logged at ERROR, like damage found by `open`.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for reads that can fail.
    pub fn peek(&mut self) -> Result<Option<SpooledBatch>, SpoolError> {
        loop {
            let Some(header) = self.head() else {
                return Ok(None);
            };
            match self.decode(&header) {
                Ok(batch) => return Ok(Some(batch)),
                Err(invalid) => self.skip_damage(self.read, invalid),
            }
        }
    }

    /// Acknowledges the batch at `position`, the one [`peek`](Self::peek)
    /// returned: replay moves past it. Durable at the next [`sync`](Self::sync).
    ///
    /// A position before the oldest record is a batch already acknowledged
    /// (two writer threads replaying the same batch): `Ok`, nothing changes.
    ///
    /// # Errors
    ///
    /// [`SpoolError::BadAck`] when `position` is after the oldest record.
    pub fn ack(&mut self, position: u64) -> Result<(), SpoolError> {
        if position < self.read {
            return Ok(());
        }
        let header = match self.checked {
            Some(header) if header.position == self.read => Some(header),
            _ => self.head(),
        };
        let header = match header {
            Some(header) if header.position == position => header,
            _ => {
                return Err(SpoolError::BadAck {
                    position,
                    oldest: header.map(|h| h.position),
                })
            }
        };
        self.read = position + header.total_len();
        self.records -= 1;
        self.checked = None;
        self.oldest_appended_at_ms = self.next_batch(self.read).map(|h| h.appended_at_ms);
        Ok(())
    }

    /// True when every batch was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes between the read and write positions: records, padding and
    /// skipped regions.
    pub fn used_bytes(&self) -> u64 {
        self.write - self.read
    }

    /// Bytes of the data area (the file minus its 12 KiB header).
    pub fn capacity(&self) -> u64 {
        self.ring.data_capacity
    }

    /// Batches not yet acknowledged.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Append time of the oldest batch not yet acknowledged (unix ms).
    pub fn oldest_appended_at_ms(&self) -> Option<u64> {
        self.oldest_appended_at_ms
    }

    /// Moves `read` past skipped regions, short tails and padding, and returns
    /// the header of the batch record there, fully checked (CRC), or `None`
    /// when there is none. Damage found on the way is skipped.
    fn head(&mut self) -> Option<RecordHeader> {
        loop {
            if let Some(&(from, to)) = self.skips.front() {
                if from <= self.read {
                    self.read = self.read.max(to);
                    self.skips.pop_front();
                    continue;
                }
            }
            let start = record_start(self.read, self.ring.data_capacity);
            if start >= self.write {
                self.checked = None;
                return None;
            }
            match recovery::check_at(self.ring.data(), self.ring.data_capacity, start, self.write) {
                Ok(header) if header.kind == KIND_PADDING => {
                    self.read = start + header.total_len();
                }
                Ok(header) => {
                    self.read = start;
                    self.checked = Some(header);
                    return Some(header);
                }
                Err(invalid) => self.skip_damage(start, invalid),
            }
        }
    }

    /// Skips a record at `start` that fails its checks at replay time, up to
    /// the next valid record, and recounts the records left.
    fn skip_damage(&mut self, start: u64, invalid: Invalid) {
        let (data, data_capacity) = (self.ring.data(), self.ring.data_capacity);
        let end = recovery::resync(data, data_capacity, start, self.write, self.write)
            .unwrap_or(self.write);
        tracing::error!(
            path = %self.path.display(),
            position = start,
            skipped_bytes = end - start,
            "spool record damaged since it was written ({invalid}): skipped, its batches are lost"
        );
        self.read = end;
        self.checked = None;
        let mut records = 0;
        let mut position = self.read;
        while let Some(header) = self.next_batch(position) {
            records += 1;
            position = header.position + header.total_len();
        }
        self.records = records;
        self.oldest_appended_at_ms = self.next_batch(self.read).map(|h| h.appended_at_ms);
    }

    /// The header of the first batch record at or after `from` (skipping
    /// regions, short tails and padding), by its header alone (no CRC).
    fn next_batch(&self, from: u64) -> Option<RecordHeader> {
        let data_capacity = self.ring.data_capacity;
        let mut position = from;
        loop {
            if let Some(&(_, to)) = self.skips.iter().find(|&&(skip, _)| skip == position) {
                position = to;
            }
            position = record_start(position, data_capacity);
            if position >= self.write {
                return None;
            }
            let at = self.ring.physical(position);
            let header =
                RecordHeader::decode(self.ring.data()[at..at + HEADER_LEN].try_into().unwrap());
            let total = header.total_len();
            if header.position != position || total > self.write - position {
                return None;
            }
            match header.kind {
                KIND_BATCH => return Some(header),
                KIND_PADDING => position += total,
                _ => return None,
            }
        }
    }

    /// The batch in the checked record `header` at `read`.
    fn decode(&mut self, header: &RecordHeader) -> Result<SpooledBatch, Invalid> {
        let at = self.ring.physical(header.position) + HEADER_LEN;
        let payload = &self.ring.data()[at..at + header.len as usize];
        let parsed = record::parse_payload(payload, header.flags).map_err(Invalid::Payload)?;
        let body = if header.flags & FLAG_DEFLATE != 0 {
            let mut body = vec![0; parsed.body_len as usize];
            match self
                .decompressor
                .deflate_decompress(parsed.stored_body, &mut body)
            {
                Ok(len) if len == body.len() => body,
                _ => return Err(Invalid::Payload("deflate stream does not decompress")),
            }
        } else {
            parsed.stored_body.to_vec()
        };
        Ok(SpooledBatch {
            position: header.position,
            key: BatchKey {
                db: parsed.db.into(),
                rp: parsed.rp.map(Into::into),
                precision: parsed.precision,
                authorization: parsed.authorization.map(Into::into),
            },
            lines: usize::try_from(parsed.lines).unwrap_or(usize::MAX),
            body,
            appended_at_ms: header.appended_at_ms,
        })
    }

    /// Every batch not yet acknowledged, in order, without acknowledging any.
    #[cfg(test)]
    fn pending(&mut self) -> Vec<SpooledBatch> {
        let (read, skips, checked) = (self.read, self.skips.clone(), self.checked);
        let mut out = Vec::new();
        while let Some(batch) = self.peek().unwrap() {
            self.read = batch.position + {
                let at = self.ring.physical(batch.position);
                RecordHeader::decode(self.ring.data()[at..at + HEADER_LEN].try_into().unwrap())
                    .total_len()
            };
            out.push(batch);
        }
        (self.read, self.skips, self.checked) = (read, skips, checked);
        out
    }
}
