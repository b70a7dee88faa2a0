//! The mmap'ed ring file: the file header with its two alternating slots,
//! logical-to-physical offsets with wrap-around, and msync of dirty ranges.
//!
//! Layout and the reasons for it are in the [module doc of `spool`](super).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use memmap2::MmapMut;

/// First bytes of every spool file. A file without them is not ours and is
/// never written to.
pub(crate) const MAGIC: [u8; 8] = *b"FGSPOOL\n";
/// Bumped on any change to the file header, slot, record or payload layout.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Header pages are this far apart, so an msync of one slot never rewrites the
/// other or the magic page (4 KiB pages on x86-64 and most aarch64 kernels;
/// on a 64 KiB-page kernel a slot write would rewrite its neighbours too).
pub(crate) const PAGE: u64 = 4096;
/// Page 0: magic; page 1: slot 0; page 2: slot 1. The data area follows.
pub(crate) const FILE_HEADER_LEN: u64 = 3 * PAGE;
/// Smallest data area accepted: a few records. Real spools are much larger.
pub(crate) const MIN_DATA_CAPACITY: u64 = PAGE;
/// Bytes of a slot that are written (the rest of its page stays zero).
const SLOT_LEN: usize = 40;
/// Bytes of page 0 that are written.
const STATIC_LEN: usize = 20;

/// One header slot, little-endian at the start of page 1 or 2.
///
/// Persisted: do not reorder or resize these fields (bump [`FORMAT_VERSION`]).
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 8 | sequence, +1 per header write; slot = sequence % 2 |
/// | 8 | 8 | read position: the oldest record not acknowledged |
/// | 16 | 8 | write position: everything before it was msync'ed |
/// | 24 | 8 | data capacity in bytes (a multiple of 8) |
/// | 32 | 4 | session: +1 per open |
/// | 36 | 4 | CRC32 of bytes 0..36 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub sequence: u64,
    pub read: u64,
    pub write: u64,
    pub data_capacity: u64,
    pub session: u32,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut out = [0; SLOT_LEN];
        out[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        out[8..16].copy_from_slice(&self.read.to_le_bytes());
        out[16..24].copy_from_slice(&self.write.to_le_bytes());
        out[24..32].copy_from_slice(&self.data_capacity.to_le_bytes());
        out[32..36].copy_from_slice(&self.session.to_le_bytes());
        let crc = crc32fast::hash(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The slot in `bytes`, if its CRC matches and its fields are consistent.
    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        let bytes = bytes.get(..SLOT_LEN)?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let crc = u32::from_le_bytes(bytes[36..40].try_into().unwrap());
        if crc32fast::hash(&bytes[..36]) != crc {
            return None;
        }
        let slot = Slot {
            sequence: u64_at(0),
            read: u64_at(8),
            write: u64_at(16),
            data_capacity: u64_at(24),
            session: u32::from_le_bytes(bytes[32..36].try_into().unwrap()),
        };
        let sane = slot.data_capacity >= MIN_DATA_CAPACITY
            && slot.data_capacity.is_multiple_of(8)
            && slot.read.is_multiple_of(8)
            && slot.write.is_multiple_of(8)
            && slot.read <= slot.write
            && slot.write - slot.read <= slot.data_capacity;
        sane.then_some(slot)
    }

    /// Byte offset of this slot's page in the file.
    pub fn offset(sequence: u64) -> u64 {
        PAGE * (1 + sequence % 2)
    }
}

/// Page 0: magic, format version, header length, CRC32 of the first 16 bytes.
fn static_page() -> [u8; STATIC_LEN] {
    let mut out = [0; STATIC_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(FILE_HEADER_LEN as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What page 0 says about a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StaticCheck {
    Spool,
    NotASpool,
    /// Our magic, but another format version (or a damaged page 0).
    Unsupported {
        version: u32,
    },
}

pub(crate) fn check_static(bytes: &[u8]) -> StaticCheck {
    let len = bytes.len().min(MAGIC.len());
    if bytes[..len] != MAGIC[..len] || bytes.len() < MAGIC.len() {
        return StaticCheck::NotASpool;
    }
    let expected = static_page();
    if bytes.len() < STATIC_LEN || bytes[..STATIC_LEN] != expected {
        let version = bytes
            .get(8..12)
            .map_or(0, |v| u32::from_le_bytes(v.try_into().unwrap()));
        return StaticCheck::Unsupported { version };
    }
    StaticCheck::Spool
}

/// Data capacity for a file of `capacity` bytes: what follows the header,
/// rounded down to a multiple of 8.
pub(crate) fn data_capacity_for(capacity: u64) -> u64 {
    capacity.saturating_sub(FILE_HEADER_LEN) & !7
}

/// The mapped file. Owns the only mapping; the file is `flock`ed by this process.
pub(crate) struct Ring {
    /// Kept open for the `flock`, released when it closes.
    _file: File,
    /// Maps the whole file; at least `FILE_HEADER_LEN + data_capacity` bytes
    /// once recovery is done (shorter only while a truncated file is recovered).
    map: MmapMut,
    /// Bytes of the data area; a multiple of 8, at least `MIN_DATA_CAPACITY`.
    pub data_capacity: u64,
}

impl Ring {
    /// Creates a new spool file at `path` with an empty ring at position 0,
    /// atomically: written and synced under a temporary name, then renamed,
    /// so a crash never leaves a half-initialized file at `path`.
    pub fn create(path: &Path, capacity: u64) -> io::Result<()> {
        let data_capacity = data_capacity_for(capacity);
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".creating");
        let tmp = path.with_file_name(tmp_name);
        // One left by a crash would keep its mode through the truncation.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Records hold what clients sent, their `Authorization` header too:
        // for the owner only.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_len(capacity)?;
        preallocate(&file, capacity)?;
        // SAFETY: `tmp` is a file we just created and nobody else knows of yet;
        // its length is `capacity` and it is not truncated while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..STATIC_LEN].copy_from_slice(&static_page());
        let slot = Slot {
            sequence: 0,
            read: 0,
            write: 0,
            data_capacity,
            session: 0,
        };
        let at = Slot::offset(0) as usize;
        map[at..at + SLOT_LEN].copy_from_slice(&slot.encode());
        map.flush_range(0, FILE_HEADER_LEN as usize)?;
        drop(map);
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    }

    /// Opens an existing file: locks it and maps all of it; the caller checks
    /// what it holds.
    pub fn map(path: &Path) -> io::Result<(File, MmapMut)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock(&file, path)?;
        owner_only(&file, path)?;
        // SAFETY: the file is exclusively locked (flock) by this process, so no
        // other fluxgate maps it; we never truncate it while this map lives
        // (`resize` drops the map first). A third party truncating it under us
        // would make accesses fault: the spool directory belongs to fluxgate.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok((file, map))
    }

    pub fn new(file: File, map: MmapMut, data_capacity: u64) -> Ring {
        Ring {
            _file: file,
            map,
            data_capacity,
        }
    }

    /// Sets the file length (preallocated) and maps it again.
    pub fn resize(file: File, map: MmapMut, len: u64) -> io::Result<(File, MmapMut)> {
        drop(map);
        file.set_len(len)?;
        preallocate(&file, len)?;
        file.sync_all()?;
        // SAFETY: as in `map`: locked by us, `len` bytes long, not truncated while mapped.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok((file, map))
    }

    /// The data area.
    pub fn data(&self) -> &[u8] {
        let start = FILE_HEADER_LEN as usize;
        &self.map[start..start + self.data_capacity as usize]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let start = FILE_HEADER_LEN as usize;
        &mut self.map[start..start + self.data_capacity as usize]
    }

    /// Offset in the data area of logical `position`.
    pub fn physical(&self, position: u64) -> usize {
        (position % self.data_capacity) as usize
    }

    /// Writes `slot` to its page and msyncs that page: the durability point.
    pub fn write_slot(&mut self, slot: &Slot) -> io::Result<()> {
        debug_assert_eq!(slot.data_capacity, self.data_capacity);
        let at = Slot::offset(slot.sequence) as usize;
        self.map[at..at + SLOT_LEN].copy_from_slice(&slot.encode());
        self.map.flush_range(at, PAGE as usize)
    }

    /// msyncs the data written between logical positions `from` and `to`.
    pub fn flush_data(&self, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            return Ok(());
        }
        let base = FILE_HEADER_LEN as usize;
        if to - from >= self.data_capacity {
            return self.map.flush_range(base, self.data_capacity as usize);
        }
        let (start, end) = (self.physical(from), self.physical(to));
        if start < end {
            self.map.flush_range(base + start, end - start)
        } else {
            // Wraps: the tail of the data area, then its start.
            self.map
                .flush_range(base + start, self.data_capacity as usize - start)?;
            if end > 0 {
                self.map.flush_range(base, end)?;
            }
            Ok(())
        }
    }
}

/// Reserves the blocks, so that a write to the map can never hit a full disk
/// (which would be a SIGBUS, not an error). File systems without fallocate
/// support fall back to a sparse file.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "spool file too large"))?;
    // SAFETY: a plain syscall on a valid, open file descriptor.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match code {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

/// Makes a spool file (from a release that made them readable by all, say) for
/// its owner only: its records hold clients' `Authorization` headers.
fn owner_only(file: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "spool file was readable by others; made 0600");
    }
    Ok(())
}

/// One process per spool file: a second fluxgate on the same directory would
/// corrupt it.
fn lock(file: &File, path: &Path) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid, open file descriptor; the lock is
    // released when the file is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is locked by another process (another fluxgate using the same spool directory?)",
                path.display()
            ),
        ));
    }
    Err(err)
}

/// Makes a rename durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_and_rejects_damage() {
        let slot = Slot {
            sequence: 5,
            read: 8,
            write: 4096,
            data_capacity: 8192,
            session: 3,
        };
        let bytes = slot.encode();
        assert_eq!(Slot::decode(&bytes), Some(slot));
        for byte in 0..SLOT_LEN {
            let mut bad = bytes;
            bad[byte] ^= 4;
            assert_eq!(Slot::decode(&bad), None, "byte {byte}");
        }
        assert_eq!(Slot::decode(&bytes[..39]), None);
        assert_eq!(Slot::decode(&[0; SLOT_LEN]), None);
    }

    #[test]
    fn slot_rejects_inconsistent_positions() {
        #[track_caller]
        fn f(read: u64, write: u64, data_capacity: u64) {
            let slot = Slot {
                sequence: 1,
                read,
                write,
                data_capacity,
                session: 1,
            };
            assert_eq!(Slot::decode(&slot.encode()), None);
        }
        f(16, 8, 8192); // read after write
        f(0, 8200, 8192); // more than the ring holds
        f(4, 8, 8192); // unaligned
        f(0, 0, 4095 & !7); // below the minimum
        f(0, 0, 8196); // capacity unaligned
    }

    #[test]
    fn static_page_checks() {
        let page = static_page();
        assert_eq!(check_static(&page), StaticCheck::Spool);
        assert_eq!(check_static(b"FGSP"), StaticCheck::NotASpool);
        assert_eq!(check_static(b"cpu,host=a v=1 1\n"), StaticCheck::NotASpool);
        assert_eq!(check_static(&[]), StaticCheck::NotASpool);
        let mut next = page;
        next[8] = 2;
        assert_eq!(check_static(&next), StaticCheck::Unsupported { version: 2 });
    }
}
