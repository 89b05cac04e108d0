//! The decision journal: the outbox's durable write, one append to a file of its own.
//!
//! A decision must be on disk before the deciding tick moves on (a crash after a rollback
//! was decided must still deliver it). Committing it to SQLite with `synchronous=FULL` costs
//! one sync of the WAL's new pages plus SQLite's own work for every row, index and the
//! deploy's history: 4.4 to 17 times one `fdatasync` of the same disk at p99 (BENCHMARKS.md,
//! "The outbox write against one fsync" and "The decision journal"). The journal makes the durable part exactly one
//! `pwrite` and one `fdatasync`: the batch is framed and appended to a file that was
//! filled with zeros when it was opened, so the sync never also journals a new size or new
//! blocks. SQLite then takes the rows without its own sync (`synchronous=NORMAL`); the next
//! synced commit or checkpoint carries them to disk.
//!
//! Why hand-written rather than a crate: what is needed is a preallocated, checksummed
//! append log whose sync is a single `fdatasync`, replayed into SQLite on start. The
//! embedded log crates (sled, okaywal, commitlog) own their file layout, threads and sync
//! policy, which is exactly the part this module exists to control; the code is short.
//!
//! **Frames.** Each batch is one frame: a 24-byte header (magic `IMJ1`, stored length u32,
//! sequence number u64, CRC-32 of sequence, flags and stored bytes u32, flags u32;
//! little-endian), then the stored bytes: the payload, Snappy-compressed (flag bit 0) when
//! the payload is 1 KiB or more and that makes it smaller. A batch journaled at once holds
//! its decisions only (0.7 to 1.2 KiB stored in the latency bench); one that had to wait (a
//! full disk) is journaled with its deploys' views, about 30 KiB of JSON, 8 KiB
//! compressed. Frames follow each other from offset 0. Reading stops at the first frame
//! that is torn (bad magic, length or checksum) or whose sequence number does not
//! follow the previous one: after a rewind the file still holds older frames further on,
//! and their numbers are lower.
//!
//! **Rewind.** The outbox rewinds the journal to offset 0 only once every frame in it has
//! been applied to SQLite and SQLite has synced (see `Outbox::apply`); until then a frame
//! that does not fit grows the file. On open, the frames whose sequence number is above
//! what SQLite says it applied are handed back to be applied again, and writing goes on
//! after the last frame; applying and
//! recording the number are one SQLite transaction, so a frame is applied exactly once.
//!
//! The file is locked (`flock`-style, exclusive) while open: two agents on one data
//! directory would otherwise write over each other's frames.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The journal's preallocated size. A decision batch is about 1 KiB as stored (8 KiB
/// when it waited and carries its views), so a rewind (one synced SQLite commit, off the
/// durable path) comes every few hundred batches.
pub(crate) const CAPACITY: u64 = 1 << 20;

const MAGIC: [u8; 4] = *b"IMJ1";
const HEADER: usize = 24;
/// Flag: the stored bytes are the payload compressed with Snappy (raw format).
const SNAPPY: u32 = 1;
/// Payloads shorter than this are stored as they are.
const COMPRESS_FROM: usize = 1024;
/// A frame larger than this is refused when read back (a torn length), never written.
const MAX_PAYLOAD: usize = 256 << 20;

/// Why the journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    /// Reading, writing or syncing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The journal's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process has the journal open.
    #[error("{0}: in use by another process (one agent per data directory)")]
    Locked(String),
    /// The batch is too large to be a frame.
    #[error("{0}: a batch of {1} bytes is too large for the journal")]
    TooLarge(String, usize),
}

/// One frame read back on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// The batch as written.
    pub payload: Vec<u8>,
}

/// The open journal: where the next frame goes and what number it gets.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Offset of the next frame.
    tail: u64,
    /// The file's length: zeros or older frames beyond `tail`.
    len: u64,
    /// Sequence number of the next frame.
    next_seq: u64,
    /// Reused frame buffer (header and payload in one write).
    frame: Vec<u8>,
    /// Reused compression buffer.
    packed: Vec<u8>,
}

impl Journal {
    /// Opens (creating and zero-filling it if needed) and locks the journal at `path`;
    /// returns it with the frames it holds, oldest first. The next frame is written after
    /// them and numbered after `floor` and after them (`floor`: the highest number SQLite
    /// has applied).
    pub(crate) fn open(path: &Path, floor: u64) -> Result<(Journal, Vec<Entry>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(path.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (entries, end) = read_frames(&bytes);
        let mut len = bytes.len() as u64;
        if len < CAPACITY {
            // Zero-fill up to the capacity once, synced with the directory entry, so that
            // later appends overwrite allocated blocks and their sync is data only. On a
            // full disk the journal starts shorter and grows as it is written.
            match preallocate(&mut file, path, len) {
                Ok(()) => len = CAPACITY,
                Err(e) => {
                    tracing::warn!(error = %e, journal = %path.display(), "The decision journal cannot be preallocated; it grows as decisions are written.");
                    len = file.seek(SeekFrom::End(0)).map_err(io)?;
                }
            }
        }
        let last = entries.last().map_or(0, |e| e.seq);
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            tail: end as u64,
            len,
            next_seq: floor.max(last) + 1,
            frame: Vec::new(),
            packed: Vec::new(),
        };
        Ok((journal, entries))
    }

    /// Appends `payload` as the next frame and waits until it is on disk (`fdatasync`);
    /// returns its sequence number. A frame that does not fit before the preallocated end
    /// grows the file (the sync then also covers the new size).
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(JournalError::TooLarge(
                self.path.display().to_string(),
                payload.len(),
            ));
        }
        let seq = self.next_seq;
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let (flags, stored) = if payload.len() >= COMPRESS_FROM {
            self.packed
                .resize(snap::raw::max_compress_len(payload.len()), 0);
            let n = snap::raw::Encoder::new()
                .compress(payload, &mut self.packed)
                .map_err(|e| io(std::io::Error::other(e)))?;
            if n < payload.len() {
                (SNAPPY, &self.packed[..n])
            } else {
                (0, payload)
            }
        } else {
            (0, payload)
        };
        encode(&mut self.frame, seq, flags, stored);
        write_at(&self.file, &self.frame, self.tail).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.tail += self.frame.len() as u64;
        self.len = self.len.max(self.tail);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Whether the used part has passed three quarters of the file: time to rewind once
    /// everything in it is safe in SQLite.
    pub(crate) fn wants_rewind(&self) -> bool {
        self.tail > self.len / 4 * 3
    }

    /// Starts writing from offset 0 again. Only for when every frame written so far has
    /// been applied and synced elsewhere: the frames are then dead, and the next ones
    /// (numbered higher) end the chain where they stop.
    pub(crate) fn rewind(&mut self) {
        self.tail = 0;
    }

    /// The number the last frame written got (0 if none since the file was created).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// Fills `file` with zeros from `from` up to [`CAPACITY`] and syncs it and its directory.
fn preallocate(file: &mut File, path: &Path, from: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(from))?;
    let page = [0u8; 4096];
    let mut at = from;
    while at < CAPACITY {
        let n = (CAPACITY - at).min(4096) as usize;
        file.write_all(&page[..n])?;
        at += n as u64;
    }
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `buf` at `offset` without moving a shared cursor (`pwrite`).
#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

/// Writes `buf` at `offset` (seek, then write).
#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

/// The checksum of a frame: its sequence number, flags and stored bytes.
fn checksum(seq: u64, flags: u32, stored: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&flags.to_le_bytes());
    h.update(stored);
    h.finalize()
}

/// Writes the frame of `stored` into `out`.
fn encode(out: &mut Vec<u8>, seq: u64, flags: u32, stored: &[u8]) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(seq, flags, stored).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(stored);
}

/// The payload of a frame's stored bytes; `None` if they do not decompress (or would be
/// larger than any frame written).
fn unpack(flags: u32, stored: &[u8]) -> Option<Vec<u8>> {
    match flags {
        0 => Some(stored.to_vec()),
        SNAPPY => {
            let n = snap::raw::decompress_len(stored).ok()?;
            if n > MAX_PAYLOAD {
                return None;
            }
            snap::raw::Decoder::new().decompress_vec(stored).ok()
        }
        _ => None,
    }
}

/// The chain of whole frames from the start of `bytes`, and where it ends.
fn read_frames(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while let Some(h) = bytes.get(at..at + HEADER) {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let len = word(4) as usize;
        let seq = u64::from(word(8)) | (u64::from(word(12)) << 32);
        let sum = word(16);
        let flags = word(20);
        if h[..4] != MAGIC || len > MAX_PAYLOAD {
            break;
        }
        let Some(stored) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let follows = entries
            .last()
            .is_none_or(|e| e.seq.checked_add(1) == Some(seq));
        if !follows || checksum(seq, flags, stored) != sum {
            break;
        }
        let Some(payload) = unpack(flags, stored) else {
            break;
        };
        entries.push(Entry { seq, payload });
        at += HEADER + len;
    }
    (entries, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("immune-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn frames_come_back_in_order_after_a_reopen() {
        let p = dir("order").join("j");
        let (mut j, found) = Journal::open(&p, 0).unwrap();
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), CAPACITY);
        for i in 0..5u8 {
            assert_eq!(
                j.append(&vec![i; 100 * usize::from(i)]).unwrap(),
                u64::from(i) + 1
            );
        }
        drop(j);
        let (j, found) = Journal::open(&p, 0).unwrap();
        assert_eq!(found.len(), 5);
        for (i, e) in found.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.payload, vec![i as u8; 100 * i]);
        }
        assert_eq!(j.last_seq(), 5);
    }

    #[test]
    fn a_torn_frame_ends_the_chain() {
        let p = dir("torn").join("j");
        let (mut j, _) = Journal::open(&p, 0).unwrap();
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        j.append(b"three").unwrap();
        drop(j);
        // Flip one payload byte of the second frame.
        let mut bytes = std::fs::read(&p).unwrap();
        let second = HEADER + 3;
        bytes[second + HEADER] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let (mut j, found) = Journal::open(&p, 0).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].payload, b"one");
        // The next frame overwrites the torn one and is numbered after everything seen.
        assert_eq!(j.append(b"four").unwrap(), 2);
        drop(j);
        let (_, found) = Journal::open(&p, 0).unwrap();
        let payloads: Vec<&[u8]> = found.iter().map(|e| e.payload.as_slice()).collect();
        assert_eq!(payloads, [b"one".as_slice(), b"four"]);
    }

    #[test]
    fn after_a_rewind_older_frames_further_on_are_not_read() {
        let p = dir("rewind").join("j");
        let (mut j, _) = Journal::open(&p, 0).unwrap();
        for _ in 0..4 {
            j.append(&[7; 40]).unwrap();
        }
        j.rewind();
        assert_eq!(j.append(&[8; 40]).unwrap(), 5);
        drop(j);
        // Frame 5 is at offset 0; frames 2..4 follow it on disk but are numbered lower.
        let (j, found) = Journal::open(&p, 4).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].seq, found[0].payload[0]), (5, 8));
        assert_eq!(j.last_seq(), 5);
    }

    #[test]
    fn large_payloads_are_stored_compressed_and_read_back_whole() {
        let p = dir("snappy").join("j");
        let (mut j, _) = Journal::open(&p, 0).unwrap();
        let text: Vec<u8> = (0..30_000u32)
            .map(|i| b"{\"view\":[1,2]}"[i as usize % 14])
            .collect();
        j.append(&text).unwrap();
        j.append(b"short").unwrap();
        assert!(j.tail < (text.len() / 4) as u64, "stored {} bytes", j.tail);
        drop(j);
        let (_, found) = Journal::open(&p, 0).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].payload, text);
        assert_eq!(found[1].payload, b"short");
    }

    #[test]
    fn numbering_continues_after_what_was_applied() {
        let p = dir("floor").join("j");
        let (mut j, _) = Journal::open(&p, 41).unwrap();
        assert_eq!(j.append(b"x").unwrap(), 42);
    }

    #[test]
    fn a_frame_past_the_end_grows_the_file() {
        let p = dir("grow").join("j");
        let (mut j, _) = Journal::open(&p, 0).unwrap();
        // Noise (xorshift): it does not compress.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..CAPACITY)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        j.append(&big).unwrap();
        // Noise does not compress: it is stored as it is.
        assert_eq!(j.tail, (HEADER + big.len()) as u64);
        j.append(b"after").unwrap();
        assert!(j.wants_rewind());
        drop(j);
        let (_, found) = Journal::open(&p, 0).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].payload, b"after");
    }

    #[test]
    fn a_second_opener_is_refused() {
        let p = dir("lock").join("j");
        let (_j, _) = Journal::open(&p, 0).unwrap();
        match Journal::open(&p, 0) {
            Err(JournalError::Locked(_)) => {}
            other => panic!("expected Locked, got {:?}", other.map(|(_, e)| e)),
        }
    }
}
