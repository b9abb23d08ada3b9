//! An upload is written by the session into a scratch file, as on a local
//! root; a `Shipper` follows the file as it grows (the writer tells it each
//! write, `Shipper::pace`) and sends each part as soon as it is complete (at
//! most `IN_FLIGHT` per upload), hashing the parts in order, then punches
//! the sent range out of the scratch file. The writer is held while more
//! than `AHEAD` bytes are not stored yet (so the session stops reading the
//! socket and the client waits), so the local disk holds only a few parts
//! whatever the size. At commit only the tail is left to send
//! (`Outgoing::finish`). Uploads whose data arrives out of order (several
//! streams) or all at once (small files) have no shipper: all their parts
//! are sent at commit.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::blob::{IN_FLIGHT, PART, Sent, discard};
use super::{Bucket, layout, store_err};
use crate::error::{Error, Result};

/// How often a shipper looks whether its file has grown by a part (it is
/// also woken by each write).
const POLL: Duration = Duration::from_millis(50);
/// How long a shipper with parts in flight waits for one before it looks
/// again whether another part is complete.
const WAKE: Duration = Duration::from_millis(5);
/// Bytes an upload's writer may be ahead of the parts stored: the most the
/// scratch disk holds per upload (the parts in flight and the next ones).
pub const AHEAD: u64 = 4 * PART;

/// Read up to `buf.len()` bytes at `at` (fewer only at the end of the file).
fn read_full(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Free the scratch disk under a range already stored (the file keeps its
/// size; reading there gives zeros). Best effort: a filesystem that cannot
/// punch holes only keeps the bytes until the upload ends.
fn punch(file: &File, at: u64, len: u64) {
    use rustix::fs::FallocateFlags;
    let _ = rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        at,
        len,
    );
}

/// A blob being sent from a scratch file: parts read in order, hashed, and
/// PUT with at most `IN_FLIGHT` in flight.
pub struct Outgoing {
    pub id: String,
    file: File,
    shown: String,
    /// Parts read, hashed and started.
    next: u64,
    /// Parts known to be stored (a prefix: they are settled in order).
    stored: u64,
    hasher: Sha256,
    flight: VecDeque<Receiver<Result<()>>>,
    /// Punch stored parts out of the file, and tell the writer (only a
    /// shipper's: the writer waits for it).
    progress: Option<Arc<Progress>>,
    /// Kept for resuming: a `held/SERVER/ID` marker keeps the collector off
    /// its parts while this server lives; removed once a manifest names the
    /// blob or the parts go.
    pub held: bool,
}

/// What an upload's writer and its shipper tell each other.
#[derive(Default)]
struct Progress {
    /// Bytes the writer has written, from the first.
    written: std::sync::atomic::AtomicU64,
    /// Bytes stored in the bucket (whole parts, from the first).
    stored: std::sync::Mutex<u64>,
    moved: std::sync::Condvar,
    /// The shipper stopped (finished, failed or dropped): nobody waits.
    ended: AtomicBool,
}

impl Progress {
    fn set_stored(&self, bytes: u64) {
        *self
            .stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bytes;
        self.moved.notify_all();
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.moved.notify_all();
    }
}

impl Outgoing {
    /// A new blob (fresh id) for the bytes of `file`.
    pub fn new(file: File, shown: &str) -> Outgoing {
        Outgoing {
            id: super::random_id(),
            file,
            shown: shown.to_string(),
            next: 0,
            stored: 0,
            hasher: Sha256::new(),
            flight: VecDeque::new(),
            progress: None,
            held: false,
        }
    }

    /// Bytes read, hashed and started so far.
    pub fn sent_bytes(&self) -> u64 {
        self.next * PART
    }

    /// The SHA-256 state of the file's first `len` bytes, for a resumed
    /// upload: the parts already sent were hashed as they went (nothing is
    /// read back from the bucket), the rest is read from the scratch file,
    /// which is left positioned at `len` for the writer to go on.
    pub fn prefix(&mut self, len: u64) -> Result<crate::transfer::Prefix> {
        use std::io::Seek;
        self.drain()?;
        let mut hasher = self.hasher.clone();
        let mut at = self.next * PART;
        if at > len {
            return Err(Error::other(format!(
                "{}: the kept upload is shorter than its sent parts",
                self.shown
            )));
        }
        let mut buf = vec![0u8; 1 << 20];
        while at < len {
            let want = usize::try_from((len - at).min(1 << 20)).unwrap_or(1 << 20);
            let n = read_full(&self.file, &mut buf[..want], at)
                .map_err(|e| Error::io(format!("reading the upload of {}", self.shown), &e))?;
            if n != want {
                return Err(Error::other(format!(
                    "{}: the kept upload became shorter on the scratch disk",
                    self.shown
                )));
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let mut f = &self.file;
        f.seek(std::io::SeekFrom::Start(len))
            .map_err(|e| Error::io(format!("reading the upload of {}", self.shown), &e))?;
        Ok(crate::transfer::Prefix { len, hasher })
    }

    /// Read, hash and start sending the next part, of `len` bytes.
    fn start(&mut self, b: &Bucket, len: u64) -> Result<()> {
        while self.flight.len() >= IN_FLIGHT {
            self.settle()?;
        }
        let at = self.next * PART;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        let n = read_full(&self.file, &mut buf, at)
            .map_err(|e| Error::io(format!("reading the upload of {}", self.shown), &e))?;
        if n as u64 != len {
            return Err(Error::integrity(format!(
                "{}: the upload became shorter on the server's scratch disk; nothing was stored",
                self.shown
            )));
        }
        self.hasher.update(&buf);
        let key = b.key(&layout::part(&self.id, self.next));
        let os = b.os.clone();
        let rx = b.bridge.start(async move {
            os.put(&key, PutPayload::from(buf))
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e, "storing", &key))
        })?;
        self.flight.push_back(rx);
        self.next += 1;
        Ok(())
    }

    /// Wait for the oldest part in flight.
    fn settle(&mut self) -> Result<()> {
        let Some(rx) = self.flight.pop_front() else {
            return Ok(());
        };
        rx.recv()
            .map_err(|_| Error::other("the object-store threads have stopped"))??;
        self.stored_one();
        Ok(())
    }

    /// Wait at most `d` for the oldest part in flight.
    fn settle_within(&mut self, d: Duration) -> Result<()> {
        let Some(rx) = self.flight.front() else {
            return Ok(());
        };
        match rx.recv_timeout(d) {
            Ok(r) => {
                self.flight.pop_front();
                r?;
                self.stored_one();
                Ok(())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::other("the object-store threads have stopped"))
            }
        }
    }

    /// Settle the parts already stored, without waiting.
    fn settle_ready(&mut self) -> Result<()> {
        while let Some(rx) = self.flight.front() {
            match rx.try_recv() {
                Ok(r) => {
                    self.flight.pop_front();
                    r?;
                    self.stored_one();
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(Error::other("the object-store threads have stopped"));
                }
            }
        }
        Ok(())
    }

    fn stored_one(&mut self) {
        if let Some(p) = &self.progress {
            punch(&self.file, self.stored * PART, PART);
            p.set_stored((self.stored + 1) * PART);
        }
        self.stored += 1;
    }

    /// Wait for every part in flight.
    fn drain(&mut self) -> Result<()> {
        while !self.flight.is_empty() {
            self.settle()?;
        }
        Ok(())
    }

    /// Send what is left of the file's `size` bytes and wait until every
    /// part is stored. If this fails, the parts sent are orphans the
    /// collector removes (or `discard` removes them now).
    pub fn finish(mut self, b: &Bucket, size: u64) -> Result<Sent> {
        let sent = self.finish_inner(b, size);
        if sent.is_err() {
            let _ = self.drain();
            discard(b, &self.id, self.held);
        }
        sent
    }

    fn finish_inner(&mut self, b: &Bucket, size: u64) -> Result<Sent> {
        if self.next * PART > size {
            return Err(Error::integrity(format!(
                "{}: the upload became shorter on the server's scratch disk; nothing was stored",
                self.shown
            )));
        }
        while self.next * PART < size {
            let len = (size - self.next * PART).min(PART);
            self.start(b, len)?;
        }
        self.drain()?;
        let hasher = std::mem::take(&mut self.hasher);
        Ok(Sent {
            id: self.id.clone(),
            size,
            part: PART,
            sha256: hasher.finalize().into(),
        })
    }
}

/// Sends an upload's complete parts while the session is still writing it
/// (one thread, `sft-ship`, per large upload).
pub struct Shipper {
    id: String,
    /// A `held/` marker names the parts (kept for resuming).
    held: bool,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: Option<std::thread::JoinHandle<(Outgoing, Result<()>)>>,
    bucket: Arc<Bucket>,
}

impl Shipper {
    /// Follow `file`, written from its first byte in order by a writer
    /// that reports each write to `pace()`: every complete `PART` written is
    /// sent, then punched out of the file.
    pub fn follow(b: &Arc<Bucket>, file: &File, shown: &str) -> Result<Shipper> {
        let own = file
            .try_clone()
            .map_err(|e| Error::io("duplicating the upload file", &e))?;
        Shipper::resume(b, Outgoing::new(own, shown), 0)
    }

    /// Go on with `out` (whose parts were sent by an earlier shipper) for a
    /// file already `len` bytes long.
    pub fn resume(b: &Arc<Bucket>, mut out: Outgoing, len: u64) -> Result<Shipper> {
        let progress = Arc::new(Progress::default());
        progress.written.store(len, Ordering::Release);
        progress.set_stored(out.stored * PART);
        out.progress = Some(progress.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (id, held) = (out.id.clone(), out.held);
        let (flag, bucket, told) = (stop.clone(), b.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name("sft-ship".into())
            .spawn(move || {
                let r = ship(&bucket, &mut out, &flag, &told);
                told.end();
                (out, r)
            })
            .map_err(|e| Error::io("starting an upload's sending thread", &e))?;
        Ok(Shipper {
            id,
            held,
            stop,
            progress,
            thread: Some(thread),
            bucket: b.clone(),
        })
    }

    /// Keep the parts for resuming: a marker (`held/SERVER/ID`) tells the
    /// collector of every server to leave them while this server lives.
    pub fn hold(&mut self) -> Result<()> {
        if self.held {
            return Ok(());
        }
        let key = self
            .bucket
            .key(&layout::held(&self.bucket.server, &self.id));
        self.bucket.run(|os| async move {
            os.put(&key, PutPayload::from_static(b""))
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e, "storing", &key))
        })?;
        self.held = true;
        Ok(())
    }

    /// What the writer calls after each write with the file's length: it
    /// wakes the shipper, and holds the writer while more than `AHEAD`
    /// bytes are not stored yet (never once the shipper has stopped).
    pub fn pace(&self) -> crate::transfer::Pace {
        let progress = self.progress.clone();
        let thread = self.thread.as_ref().map(|t| t.thread().clone());
        Arc::new(move |len: u64| {
            progress.written.store(len, Ordering::Release);
            if let Some(t) = &thread {
                t.unpark();
            }
            let mut stored = progress
                .stored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while len > *stored + AHEAD && !progress.ended.load(Ordering::Acquire) {
                stored = progress
                    .moved
                    .wait_timeout(stored, POLL)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        })
    }

    /// Stop following (the session has written everything) and hand over
    /// the blob for its tail to be sent.
    pub fn finish(mut self) -> Result<Outgoing> {
        let (mut out, r) = self.join()?;
        out.held = self.held;
        if let Err(e) = r {
            discard(&self.bucket, &out.id, out.held);
            return Err(e);
        }
        Ok(out)
    }

    fn join(&mut self) -> Result<(Outgoing, Result<()>)> {
        self.stop.store(true, Ordering::Release);
        let Some(t) = self.thread.take() else {
            return Err(Error::other("internal error: the upload's sender is gone"));
        };
        t.thread().unpark();
        t.join()
            .map_err(|_| Error::other("internal error: the upload's sender failed"))
    }
}

impl Drop for Shipper {
    /// An upload that ends any way but committed: its parts go (best
    /// effort; the collector takes what is left).
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.stop.store(true, Ordering::Release);
        let (Some(t), bucket, held) = (self.thread.take(), self.bucket.clone(), self.held) else {
            return;
        };
        t.thread().unpark();
        // not joined here (this may be an async thread): a helper waits
        let _ = std::thread::Builder::new()
            .name("sft-ship".into())
            .spawn(move || {
                if let Ok((out, _)) = t.join() {
                    discard(&bucket, &out.id, held);
                }
            });
    }
}

/// The shipper's loop: send each part as soon as the writer has written it
/// whole.
fn ship(b: &Bucket, out: &mut Outgoing, stop: &AtomicBool, told: &Progress) -> Result<()> {
    loop {
        out.settle_ready()?;
        if stop.load(Ordering::Acquire) {
            return out.drain();
        }
        let size = told.written.load(Ordering::Acquire);
        if size >= (out.next + 1) * PART && out.flight.len() < IN_FLIGHT {
            out.start(b, PART)?;
        } else if !out.flight.is_empty() {
            // a part stored frees the writer at once (it may be waiting)
            out.settle_within(WAKE)?;
        } else {
            // woken by the next write, or by finish / drop
            std::thread::park_timeout(POLL);
        }
    }
}
