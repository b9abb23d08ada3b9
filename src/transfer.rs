//! The streaming pipeline shared by client and server: a blocking thread reads
//! a file, hashes it and turns it into ready-to-send DATA frames; another
//! hashes and writes received blocks to a file. Channels between them and the
//! network task are bounded, so memory per transfer is a few MiB whatever the
//! file size, and hashing, disk and TLS work overlap.

use std::fs::File;
use std::io::{Read, Write};
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::compress::{BLOCK, Decoder, Encoder, Policy};
use crate::error::{Error, Result};
use crate::protocol::{self, DATA_PREFIX_LEN, Encoding, HEADER_LEN};

/// Bytes of file data per DATA frame.
pub const CHUNK: usize = 256 * 1024;
/// Frames buffered between a disk thread and the network task.
pub const DEPTH: usize = 8;
/// Start write-back of an upload in the background every this many bytes,
/// so the final fsync has little left to do.
const SYNC_EVERY: u64 = 32 << 20;

/// A small free list of chunk buffers shared by the network task and a disk
/// thread, so steady-state transfers allocate (and page-fault) nothing.
#[derive(Clone, Default)]
pub struct Pool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// An empty buffer with room for `cap` bytes.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        v.clear();
        v.reserve(cap);
        v
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (a
    /// recycled buffer is reused as it is: no zero-filling per chunk).
    pub fn take_len(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    /// Give a buffer back (kept only while the pool is small).
    pub fn give(&self, v: Vec<u8>) {
        if let Ok(mut p) = self.0.lock()
            && p.len() < DEPTH + 4
        {
            p.push(v);
        }
    }

    /// Give back the buffer behind a payload, if nobody else holds it.
    pub fn recycle(&self, b: Bytes) {
        if let Ok(m) = b.try_into_mut() {
            self.give(Vec::from(m));
        }
    }
}

/// What the reading thread produces.
pub enum Outgoing {
    /// A whole DATA frame, header included.
    Frame(Vec<u8>),
    /// All `size` bytes were read; their SHA-256.
    Done {
        size: u64,
        sha256: [u8; 32],
    },
    Failed(Error),
}

/// Read exactly `size` bytes of `file` on a blocking thread, hash them, and
/// turn them into ready-to-send DATA frames. A file that ends early (or
/// changed under us) yields `Failed`. Frames may be handed back through `pool`
/// once sent. Unless `policy` is off, a second thread compresses blocks as the
/// policy decides, so hashing and compression run on different cores.
pub fn spawn_reader(
    file: File,
    size: u64,
    what: String,
    pool: Pool,
    policy: Policy,
) -> mpsc::Receiver<Outgoing> {
    let block = CHUNK;
    if !policy.may_compress() {
        let (tx, rx) = mpsc::channel(DEPTH);
        tokio::task::spawn_blocking(move || {
            read_blocks(file, size, &what, block, &pool, |item| {
                tx.blocking_send(item).is_ok()
            })
        });
        return rx;
    }
    // reader -> compressor -> network
    let (tx, rx) = mpsc::channel(DEPTH);
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Outgoing>(DEPTH);
    let p2 = pool.clone();
    tokio::task::spawn_blocking(move || {
        read_blocks(file, size, &what, block, &p2, |item| {
            raw_tx.send(item).is_ok()
        })
    });
    tokio::task::spawn_blocking(move || compress_blocks(raw_rx, tx, policy, pool));
    rx
}

/// Read, hash and frame (raw) the blocks of a file; `emit` returns false when
/// the consumer is gone.
fn read_blocks(
    mut file: File,
    size: u64,
    what: &str,
    block: usize,
    pool: &Pool,
    mut emit: impl FnMut(Outgoing) -> bool,
) {
    let mut h = Sha256::new();
    let mut left = size;
    let off = HEADER_LEN + DATA_PREFIX_LEN;
    while left > 0 {
        let want = (left.min(block as u64)) as usize;
        let mut buf = pool.take_len(off + want);
        if let Err(e) = read_full(&mut file, &mut buf[off..], what) {
            emit(Outgoing::Failed(e));
            return;
        }
        h.update(&buf[off..]);
        buf[..off].copy_from_slice(&protocol::data_header(Encoding::Raw, want as u32, want));
        left -= want as u64;
        if !emit(Outgoing::Frame(buf)) {
            return;
        }
    }
    emit(Outgoing::Done {
        size,
        sha256: h.finalize().into(),
    });
}

/// Turn raw frames into zstd frames where the policy says so and it pays.
/// Raw frames arrive in CHUNK-sized blocks and are forwarded as they are when
/// not compressing, so raw data flows exactly as with compression off; to
/// compress, up to `BLOCK` bytes of them are gathered into one zstd block,
/// and if that does not pay the original frames go out unchanged.
fn compress_blocks(
    raw: std::sync::mpsc::Receiver<Outgoing>,
    tx: mpsc::Sender<Outgoing>,
    mut policy: Policy,
    pool: Pool,
) {
    let off = HEADER_LEN + DATA_PREFIX_LEN;
    let mut encoder = Encoder::new();
    let mut gathered: Vec<Vec<u8>> = Vec::new();
    let mut input: Vec<u8> = Vec::new();
    let mut level: Option<i32> = None;
    let mut started = Instant::now();
    // send frames in order, measuring how long the network makes us wait
    let send = |frames: Vec<Vec<u8>>, policy: &mut Policy, started: &mut Instant| -> bool {
        let raw_bytes: usize = frames.iter().map(|f| f.len() - off).sum();
        let mut blocked = std::time::Duration::ZERO;
        for f in frames {
            let t = Instant::now();
            if tx.blocking_send(Outgoing::Frame(f)).is_err() {
                return false;
            }
            blocked += t.elapsed();
        }
        policy.observe(raw_bytes, started.elapsed(), blocked);
        *started = Instant::now();
        true
    };
    loop {
        // a frame, or the end (Done / Failed, or the reader gone)
        let (frame, end) = match raw.recv() {
            Ok(Outgoing::Frame(f)) => (Some(f), None),
            Ok(other) => (None, Some(other)),
            Err(_) => (None, None),
        };
        let more = frame.is_some();
        if let Some(f) = frame {
            if gathered.is_empty() {
                level = policy.next_level();
            }
            if level.is_none() {
                if !send(vec![f], &mut policy, &mut started) {
                    return;
                }
                continue;
            }
            gathered.push(f);
            let have: usize = gathered.iter().map(|f| f.len() - off).sum();
            if have + CHUNK <= BLOCK {
                continue; // gather more
            }
        }
        // compress what was gathered (a full block, or the tail at the end)
        if let (Some(l), false) = (level, gathered.is_empty()) {
            input.clear();
            for f in &gathered {
                input.extend_from_slice(&f[off..]);
            }
            let frames = match encoder.compress(&input, l) {
                Some(c) if policy.record_attempt(input.len(), c.len()) => {
                    let mut z = pool.take_len(off);
                    z[..off].copy_from_slice(&protocol::data_header(
                        Encoding::Zstd,
                        input.len() as u32,
                        c.len(),
                    ));
                    z.extend_from_slice(c);
                    for f in gathered.drain(..) {
                        pool.give(f);
                    }
                    vec![z]
                }
                _ => std::mem::take(&mut gathered),
            };
            if !send(frames, &mut policy, &mut started) {
                return;
            }
        }
        if !more {
            if let Some(end) = end {
                let _ = tx.blocking_send(end);
            }
            return;
        }
    }
}

/// Fill `buf` from `file`; a file that ends first is an error.
fn read_full(file: &mut File, buf: &mut [u8], what: &str) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::other(format!(
                    "reading {what}: the file is shorter than when the transfer started; was it changed during the transfer?"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("reading {what}"), &e)),
        }
    }
    Ok(())
}

/// One received DATA block, as it came off the wire.
pub struct Block {
    pub encoding: Encoding,
    pub raw_len: u32,
    pub payload: Bytes,
}

/// The result of a writing thread: bytes written and their SHA-256.
pub type WriteResult = Result<(u64, [u8; 32], File)>;

/// Write blocks to `file` on a blocking thread, hashing as they pass. With
/// `background_sync`, write-back is started every 32 MiB on a helper thread so
/// the data is mostly on disk by the time the caller syncs.
/// Each block's buffer goes back to `pool` once written.
pub fn spawn_writer(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
) -> (mpsc::Sender<Block>, tokio::task::JoinHandle<WriteResult>) {
    let (tx, mut rx) = mpsc::channel::<Block>(DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut h = Sha256::new();
        let mut n: u64 = 0;
        let mut synced_at: u64 = 0;
        let mut decoder = Decoder::new();
        let mut inflated = Vec::new();
        let syncer = if background_sync {
            Syncer::start(&file)
        } else {
            None
        };
        while let Some(block) = rx.blocking_recv() {
            let data: &[u8] = match block.encoding {
                Encoding::Raw if block.payload.len() == block.raw_len as usize => &block.payload,
                encoding => {
                    decoder.decode(encoding, block.raw_len, &block.payload, &mut inflated)?;
                    &inflated
                }
            };
            h.update(data);
            file.write_all(data)
                .map_err(|e| Error::io(format!("writing {what}"), &e))?;
            n += data.len() as u64;
            pool.recycle(block.payload);
            if n - synced_at >= SYNC_EVERY {
                synced_at = n;
                if let Some(s) = &syncer {
                    s.kick();
                }
            }
        }
        drop(syncer);
        Ok((n, h.finalize().into(), file))
    });
    (tx, handle)
}

/// A helper thread that runs fdatasync on request, so write-back overlaps the
/// transfer. A request made while one is running is merged into the next.
struct Syncer {
    tx: std::sync::mpsc::SyncSender<()>,
}

impl Syncer {
    fn start(file: &File) -> Option<Syncer> {
        let clone = file.try_clone().ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sft-sync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let _ = rustix::fs::fdatasync(&clone);
                }
            })
            .ok()?;
        Some(Syncer { tx })
    }
    fn kick(&self) {
        let _ = self.tx.try_send(());
    }
}

/// Compare two digests in constant time.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Push `data` through reader and writer threads; (frames, wire bytes).
    async fn pipeline(data: &[u8], mode: crate::compress::Mode) -> (usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, data).unwrap();
        let pool = Pool::new();
        let size = data.len() as u64;
        let policy = Policy::new(mode, crate::compress::MAX_LEVEL);
        let mut rx = spawn_reader(
            File::open(&src).unwrap(),
            size,
            "src".into(),
            pool.clone(),
            policy,
        );
        let dst = File::create(dir.path().join("dst")).unwrap();
        let (tx, h) = spawn_writer(dst, "dst".into(), true, pool.clone());
        let (mut frames, mut wire) = (0, 0);
        let sent = loop {
            match rx.recv().await.unwrap() {
                Outgoing::Frame(f) => {
                    frames += 1;
                    wire += f.len();
                    let (ty, len) = protocol::parse_header(&f).unwrap().unwrap();
                    let body = Bytes::copy_from_slice(&f[HEADER_LEN..HEADER_LEN + len]);
                    let protocol::Msg::Data {
                        encoding,
                        raw_len,
                        payload,
                    } = protocol::Msg::decode(ty, body).unwrap()
                    else {
                        panic!("not data")
                    };
                    tx.send(Block {
                        encoding,
                        raw_len,
                        payload,
                    })
                    .await
                    .unwrap();
                }
                Outgoing::Done { size, sha256 } => break (size, sha256),
                Outgoing::Failed(e) => panic!("{e}"),
            }
        };
        drop(tx);
        let (n, digest, _) = h.await.unwrap().unwrap();
        assert_eq!(n, size);
        assert_eq!(sent, (n, digest));
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(data)));
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
        (frames, wire)
    }

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("line {} of some source text {}\n", i, i % 97).as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    #[tokio::test]
    async fn raw_transfers_are_bit_exact() {
        use crate::compress::Mode;
        let data: Vec<u8> = (0..(CHUNK * 3 + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (frames, wire) = pipeline(&data, Mode::Off).await;
        assert_eq!(frames, 4);
        assert_eq!(wire, data.len() + 4 * (HEADER_LEN + DATA_PREFIX_LEN));
        assert_eq!(pipeline(&[], Mode::Auto).await, (0, 0));
    }

    #[tokio::test]
    async fn compressed_transfers_are_bit_exact_and_smaller() {
        use crate::compress::Mode;
        let data = text(5 << 20);
        let (_, wire) = pipeline(&data, Mode::Level(3)).await;
        assert!(wire < data.len() / 4, "{wire}");
        let (_, wire) = pipeline(&data, Mode::Auto).await;
        assert!(wire < data.len() / 2, "{wire}");
    }

    #[tokio::test]
    async fn auto_sends_random_data_raw() {
        use crate::compress::Mode;
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..(8 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (_, wire) = pipeline(&data, Mode::Auto).await;
        assert!(
            wire >= data.len() && wire < data.len() + data.len() / 100,
            "{wire}"
        );
    }

    #[tokio::test]
    async fn a_file_shorter_than_declared_fails() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"short").unwrap();
        let mut rx = spawn_reader(
            File::open(&src).unwrap(),
            100,
            "src".into(),
            Pool::new(),
            Policy::new(crate::compress::Mode::Off, 0),
        );
        match rx.recv().await.unwrap() {
            Outgoing::Failed(e) => assert!(e.message.contains("shorter")),
            _ => panic!("expected failure"),
        }
    }
}
