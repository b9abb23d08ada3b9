//! The streaming pipeline shared by client and server: a blocking thread reads
//! a file, hashes it and turns it into ready-to-send DATA frames; another
//! hashes and writes received blocks to a file. Channels between them and the
//! network task are bounded, so memory per transfer is a few MiB whatever the
//! file size, and hashing, disk and TLS work overlap. A server also lends
//! every buffer from one [`Budget`] for all transfers (`spawn_reader_within`,
//! `spawn_writer_within`), so many transfers at once share a fixed total.

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::compress::{self, BLOCK, Decoder, Encoder, Policy};
use crate::error::{Error, Result};
use crate::protocol::{self, DATA_PREFIX_LEN, Encoding, HEADER_LEN};

mod budget;
mod pool;
mod ranges;
mod read;
mod write;

pub use budget::{Budget, Loan};
pub use pool::Pool;
pub use ranges::Assembly;
pub use read::*;
pub use write::*;

/// Bytes of file data per DATA frame.
pub const CHUNK: usize = 256 * 1024;
/// Frames buffered between a disk thread and the network task.
pub const DEPTH: usize = 8;
/// Start write-back of an upload in the background every this many bytes,
/// so the final fsync has little left to do.
const SYNC_EVERY: u64 = 32 << 20;

/// The SHA-256 of a local file, read in chunks (to compare it with a
/// digest the server recorded before sending anything).
pub fn sha256_file(path: &std::path::Path) -> Result<[u8; 32]> {
    sha256_len_file(path).map(|(_, digest)| digest)
}

/// Where a transfer starts: the bytes before it (already on the other side,
/// checked by their digest) and the SHA-256 state over them, so the digest
/// at the end is still the whole file's. `Prefix::none()` for a fresh one.
#[derive(Clone, Default)]
pub struct Prefix {
    pub len: u64,
    pub hasher: Sha256,
}

impl Prefix {
    pub fn none() -> Prefix {
        Prefix::default()
    }

    /// The SHA-256 of the prefix alone.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// Hash the first `len` bytes of `file` (from its start), leaving the file
/// positioned just after them: the prefix a resumed transfer continues.
/// Fails if the file is shorter.
pub fn hash_prefix(file: &mut File, len: u64, what: &str) -> Result<Prefix> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(format!("reading {what}"), &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        read_full(file, &mut buf[..want], what)?;
        h.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(Prefix { len, hasher: h })
}

/// The size and SHA-256 of a file, from one read of it.
pub fn sha256_len_file(path: &std::path::Path) -> Result<(u64, [u8; 32])> {
    sha256_len_after(path, Prefix::none())
}

/// The size and SHA-256 of a file whose first `held.len` bytes were
/// already hashed into `held`: only the rest is read.
pub fn sha256_len_after(path: &std::path::Path, held: Prefix) -> Result<(u64, [u8; 32])> {
    use std::io::{Read, Seek};
    let what = || format!("reading {}", path.display());
    let mut f = File::open(path).map_err(|e| Error::io(what(), &e))?;
    f.seek(std::io::SeekFrom::Start(held.len))
        .map_err(|e| Error::io(what(), &e))?;
    let mut h = held.hasher;
    let mut buf = vec![0u8; CHUNK];
    let mut size: u64 = held.len;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(what(), &e))?;
        if n == 0 {
            return Ok((size, h.finalize().into()));
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
}

/// Compare two digests in constant time.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]).into()
}

#[cfg(test)]
mod tests;
