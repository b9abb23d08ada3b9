//! One file assembled from ranges that arrive on several connections, in
//! any order (PROTOCOL.md §4.10): each range is written at its offset into
//! a file preallocated to the full size, and one SHA-256 follows the
//! contiguous prefix, reading back from the file (the page cache) what the
//! ranges wrote. Used by the server for ranged uploads and by the client
//! for ranged downloads.
//!
//! Memory: no data is held here. What is kept is the set of finished
//! ranges beyond the prefix (one entry per gap, at most one per range in
//! flight) and one read buffer of [`CHUNK`] bytes while the prefix is
//! hashed, so the cost is a constant per transfer, not a function of the
//! file: the blocks themselves are buffered only on their way to `pwrite`,
//! under each connection's loans.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::CHUNK;
use crate::error::{Error, Result};

/// A file being filled by ranges.
pub struct Assembly {
    file: File,
    size: u64,
    what: String,
    /// Writers hold it shared while they write; `close` takes it exclusive,
    /// so no write lands after the digest is final.
    open: RwLock<bool>,
    state: Mutex<State>,
    /// The hasher and how far it got, advanced by one thread at a time.
    hashing: Mutex<(Sha256, u64)>,
    /// Bytes written so far, retries included: progress, for deadlines.
    written: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Finished ranges beyond the contiguous prefix: start → end.
    done: BTreeMap<u64, u64>,
    /// Bytes from 0 that are all written.
    prefix: u64,
}

impl Assembly {
    /// `file` (empty or not) becomes `size` bytes long; `what` names it in
    /// errors.
    pub fn new(file: File, size: u64, what: String) -> Result<Assembly> {
        Assembly::after(file, size, what, super::Prefix::none())
    }

    /// Like `new`, for a file whose first `held.len` bytes are already
    /// written and hashed (a resumed transfer): only what follows is
    /// waited for, and the digest goes on from `held`'s.
    pub fn after(file: File, size: u64, what: String, held: super::Prefix) -> Result<Assembly> {
        if held.len > size {
            return Err(Error::protocol(format!(
                "{what}: {} bytes held of a file of {size}",
                held.len
            )));
        }
        file.set_len(size)
            .map_err(|e| Error::io(format!("preallocating {what}"), &e))?;
        // real blocks where the filesystem can, so a full disk shows now
        let _ = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size);
        Ok(Assembly {
            file,
            size,
            what,
            open: RwLock::new(true),
            state: Mutex::new(State {
                done: BTreeMap::new(),
                prefix: held.len,
            }),
            hashing: Mutex::new((held.hasher, held.len)),
            written: AtomicU64::new(0),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Check that `offset..offset + length` lies within the file.
    pub fn check(&self, offset: u64, length: u64) -> Result<()> {
        match offset.checked_add(length) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::protocol(format!(
                "range {offset}+{length} lies beyond the {} bytes of {}",
                self.size, self.what
            ))),
        }
    }

    /// Write `data` at `offset` (blocking). Fails once the assembly is closed.
    /// Bytes inside the contiguous prefix are final — the hasher reads them
    /// — so what a range sent again carries for them is not written: the
    /// file stays exactly what was hashed, whatever a stream re-sends.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if !*open {
            return Err(Error::other(format!("{} is already complete", self.what)));
        }
        {
            // held while writing: the prefix cannot grow over these bytes
            // (and the hasher read them) before they are down
            let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let skip = s.prefix.saturating_sub(offset).min(data.len() as u64);
            let tail = &data[skip as usize..];
            if !tail.is_empty() {
                self.file
                    .write_all_at(tail, offset + skip)
                    .map_err(|e| Error::io(format!("writing {}", self.what), &e))?;
            }
        }
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes written so far (retried ones counted again): whether the
    /// transfer moves.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether `close` was called: writers should stop.
    pub fn closed(&self) -> bool {
        !*self.open.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `offset..offset + length` as written (all of it), and hash
    /// whatever prefix that completes (blocking: reads the file back).
    pub fn finished(&self, offset: u64, length: u64) -> Result<()> {
        self.check(offset, length)?;
        if self.closed() {
            return Err(Error::other(format!("{} is already complete", self.what)));
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let end = offset + length;
            if end > s.prefix && length > 0 {
                let e = s.done.entry(offset).or_insert(end);
                *e = (*e).max(end);
                // merge what now touches the prefix
                while let Some((&start, &stop)) = s.done.first_key_value() {
                    if start > s.prefix {
                        break;
                    }
                    s.done.pop_first();
                    s.prefix = s.prefix.max(stop);
                }
            }
        }
        self.hash_prefix()
    }

    /// Bytes from the start that are all written.
    pub fn prefix(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).prefix
    }

    /// Whether every byte is written.
    pub fn complete(&self) -> bool {
        self.prefix() >= self.size
    }

    /// Gaps beyond the prefix still waiting (for tests and logs).
    pub fn pending_ranges(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done
            .len()
    }

    fn hash_prefix(&self) -> Result<()> {
        let mut h = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.prefix();
        if h.1 >= target {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        while h.1 < target {
            let want = (target - h.1).min(CHUNK as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..want], h.1)
                .map_err(|e| Error::io(format!("reading back {}", self.what), &e))?;
            h.0.update(&buf[..want]);
            h.1 += want as u64;
        }
        Ok(())
    }

    /// The bytes from 0 hashed so far and their digest state: what a
    /// transfer cut off now can resume after (every byte of it written).
    pub fn hashed(&self) -> super::Prefix {
        let h = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
        super::Prefix {
            len: h.1,
            hasher: h.0.clone(),
        }
    }

    /// No more writes: the whole file's SHA-256 if every byte was written,
    /// else an error saying how far it got (blocking).
    pub fn close(&self) -> Result<[u8; 32]> {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = false;
        self.hash_prefix()?;
        let h = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
        if h.1 != self.size {
            return Err(Error::protocol(format!(
                "{} is incomplete: {} of its {} bytes arrived in order",
                self.what, h.1, self.size
            )));
        }
        Ok(h.0.clone().finalize().into())
    }

    /// The file, to commit or rename once closed.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_in_any_order_hash_like_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let a = Assembly::new(f, data.len() as u64, "f".into()).unwrap();
        let step = 65_536usize;
        let mut starts: Vec<usize> = (0..data.len()).step_by(step).collect();
        starts.reverse();
        starts.swap(1, 5);
        for s in starts {
            let e = (s + step).min(data.len());
            a.write_at(s as u64, &data[s..e]).unwrap();
            // a range sent twice (a retry) changes nothing
            a.write_at(s as u64, &data[s..e]).unwrap();
            a.finished(s as u64, (e - s) as u64).unwrap();
            a.finished(s as u64, (e - s) as u64).unwrap();
        }
        assert!(a.complete());
        assert_eq!(a.pending_ranges(), 0);
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(a.close().unwrap(), want);
        assert!(a.write_at(0, b"x").is_err(), "closed");
    }

    #[test]
    fn a_range_sent_again_with_other_bytes_cannot_change_what_was_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let f = std::fs::File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let a = Assembly::new(f, 300, "h".into()).unwrap();
        a.write_at(0, &[1; 100]).unwrap();
        a.finished(0, 100).unwrap();
        assert_eq!(a.prefix(), 100);
        // the same range again, and one straddling the prefix, other bytes
        a.write_at(0, &[9; 100]).unwrap();
        a.write_at(50, &[2; 100]).unwrap();
        a.finished(50, 100).unwrap();
        a.write_at(150, &[3; 150]).unwrap();
        a.finished(150, 150).unwrap();
        let digest = a.close().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        let mut want = vec![1u8; 100];
        want.extend_from_slice(&[2; 50]);
        want.extend_from_slice(&[3; 150]);
        assert_eq!(on_disk, want, "the hashed prefix was not rewritten");
        let hashed: [u8; 32] = Sha256::digest(&on_disk).into();
        assert_eq!(digest, hashed, "the digest is the file's");
    }

    #[test]
    fn a_resumed_assembly_waits_only_for_the_rest_and_hashes_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let open = || {
            std::fs::File::options()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        // a first attempt: the first 100,000 bytes in order, a range after
        // a hole, then cut off
        let a = Assembly::new(open(), data.len() as u64, "r".into()).unwrap();
        a.write_at(0, &data[..100_000]).unwrap();
        a.finished(0, 100_000).unwrap();
        a.write_at(200_000, &data[200_000..250_000]).unwrap();
        a.finished(200_000, 50_000).unwrap();
        assert!(a.close().is_err(), "incomplete");
        let held = a.hashed();
        assert_eq!(held.len, 100_000, "only the contiguous prefix is kept");
        assert!(a.finished(100_000, 10).is_err(), "closed");
        drop(a);
        open().set_len(held.len).unwrap();
        // the next attempt goes on after it
        let b = Assembly::after(open(), data.len() as u64, "r".into(), held).unwrap();
        assert_eq!(b.prefix(), 100_000);
        b.write_at(100_000, &data[100_000..]).unwrap();
        b.finished(100_000, 200_000).unwrap();
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(b.close().unwrap(), want);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // a prefix longer than the file is refused
        let too_long = crate::transfer::Prefix {
            len: 10,
            hasher: Sha256::new(),
        };
        assert!(Assembly::after(open(), 5, "r".into(), too_long).is_err());
    }

    #[test]
    fn an_incomplete_file_and_ranges_beyond_it_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(dir.path().join("g"))
            .unwrap();
        let a = Assembly::new(f, 100, "g".into()).unwrap();
        assert!(a.check(90, 11).is_err());
        assert!(a.check(u64::MAX, 2).is_err());
        a.write_at(50, &[1; 50]).unwrap();
        a.finished(50, 50).unwrap();
        assert_eq!(a.prefix(), 0);
        assert!(a.close().unwrap_err().message.contains("0 of its 100"));
    }
}
