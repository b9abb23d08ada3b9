//! A file's bytes as an immutable set of part objects (`blobs/ID/NNNNNN`,
//! each `PART` bytes but the last), written with plain PUTs before anything
//! names them. No multipart upload is used: every object sft ever sent can be
//! listed, so the collector finds every orphan, and an upload cut off is
//! simply the parts already sent.
//!
//! An upload is written by the session into a scratch file, as on a local
//! root; a `Shipper` follows the file as it grows (the writer tells it each
//! write, `Shipper::pace`) and sends each part as soon as it is complete (at
//! most `IN_FLIGHT` per upload), hashing the parts in order, then punches
//! the sent range out of the scratch file. The writer is held while more
//! than `AHEAD` bytes are not stored yet (so the session stops reading the
//! socket and the client waits), so the local disk holds only a few parts
//! whatever the size. At commit only
//! the tail is left to send (`Outgoing::finish`). Uploads whose data arrives
//! out of order (several streams) or all at once (small files) have no
//! shipper: all their parts are sent at commit.
//!
//! A download reads the parts in order, a couple ahead (`stream`), into a
//! pipe the server's reader serves from: the first byte does not wait for
//! the last, and nothing is copied to the local disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::{Bucket, layout, store_err};
use crate::error::{Error, Result};

/// Bytes per part: few requests (256 for 2 GiB), little memory (at most
/// `IN_FLIGHT` parts per transfer).
pub const PART: u64 = 8 << 20;
/// The largest part size a manifest may name (a damaged or hostile one
/// cannot make a download buffer more than this at once).
pub const MAX_PART: u64 = 64 << 20;
/// Parts of one transfer being sent or fetched at once.
const IN_FLIGHT: usize = 2;
/// How often a shipper looks whether its file has grown by a part (it is
/// also woken by each write).
const POLL: Duration = Duration::from_millis(50);
/// How long a shipper with parts in flight waits for one before it looks
/// again whether another part is complete.
const WAKE: Duration = Duration::from_millis(5);
/// Bytes an upload's writer may be ahead of the parts stored: the most the
/// scratch disk holds per upload (the parts in flight and the next ones).
pub const AHEAD: u64 = 4 * PART;

/// How many parts of `part` bytes hold `size` bytes (none for an empty file).
pub fn count(size: u64, part: u64) -> u64 {
    if part == 0 { 0 } else { size.div_ceil(part) }
}

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

/// A blob whose parts are all stored: what its manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub size: u64,
    pub part: u64,
    pub sha256: [u8; 32],
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

/// Remove every part of blob `id` (best effort: what is left is an orphan
/// for the collector), then its `held/` marker if it has one.
pub fn discard(b: &Bucket, id: &str, held: bool) {
    if let Err(e) = remove(b, id) {
        tracing::warn!(event = "storage", "{e}");
        return;
    }
    if held {
        unhold(b, id);
    }
}

/// Remove this server's `held/` marker of blob `id` (best effort: the
/// collector ignores the markers of servers gone).
pub fn unhold(b: &Bucket, id: &str) {
    let key = b.key(&layout::held(&b.server, id));
    let r = b.run(|os| async move {
        match os.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(&e, "removing", &key)),
        }
    });
    if let Err(e) = r {
        tracing::warn!(event = "storage", "{e}");
    }
}

/// Remove every part of blob `id` (an absent one is fine).
pub fn remove(b: &Bucket, id: &str) -> Result<()> {
    let prefix = b.key(&layout::blob(id));
    b.run(|os| async move {
        let listed: Vec<_> = os
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &prefix))?;
        delete_all(&os, listed.into_iter().map(|m| m.location).collect()).await
    })
}

/// Delete `keys`, a few at a time; absent ones are fine.
pub async fn delete_all(os: &Arc<dyn object_store::ObjectStore>, keys: Vec<Path>) -> Result<()> {
    let mut gone = futures_util::stream::iter(keys)
        .map(|key| {
            let os = os.clone();
            async move {
                match os.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(store_err(&e, "removing", &key)),
                }
            }
        })
        .buffer_unordered(8);
    while let Some(r) = gone.next().await {
        r?;
    }
    Ok(())
}

/// Fetch one part whole, checking its length.
async fn fetch_part(
    os: Arc<dyn object_store::ObjectStore>,
    key: Path,
    len: u64,
    shown: String,
) -> Result<bytes::Bytes> {
    let got = match os.get(&key).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|e| store_err(&e, "reading", &key))?;
    if got.len() as u64 != len {
        return Err(Error::integrity(format!(
            "{shown}: a part of its data in the object store has the wrong size (damaged)"
        )));
    }
    Ok(got)
}

/// The parts of a blob, in order, `IN_FLIGHT` fetched ahead.
pub struct Parts<'a> {
    b: &'a Bucket,
    id: String,
    size: u64,
    part: u64,
    shown: String,
    next: u64,
    ahead: VecDeque<Receiver<Result<bytes::Bytes>>>,
}

impl<'a> Parts<'a> {
    pub fn new(b: &'a Bucket, id: &str, size: u64, part: u64, shown: &str) -> Parts<'a> {
        Parts {
            b,
            id: id.to_string(),
            size,
            part,
            shown: shown.to_string(),
            next: 0,
            ahead: VecDeque::new(),
        }
    }

    /// The next part's bytes; `None` after the last.
    pub fn next_part(&mut self) -> Result<Option<bytes::Bytes>> {
        let total = count(self.size, self.part);
        while self.ahead.len() < IN_FLIGHT && self.next < total {
            let at = self.next * self.part;
            let len = (self.size - at).min(self.part);
            let key = self.b.key(&layout::part(&self.id, self.next));
            let rx =
                self.b
                    .bridge
                    .start(fetch_part(self.b.os.clone(), key, len, self.shown.clone()))?;
            self.ahead.push_back(rx);
            self.next += 1;
        }
        let Some(rx) = self.ahead.pop_front() else {
            return Ok(None);
        };
        rx.recv()
            .map_err(|_| Error::other("the object-store threads have stopped"))?
            .map(Some)
    }
}

/// Fetch blob `id` into `out` (a scratch file, for readers that need to
/// seek) and return its SHA-256.
pub fn fetch(
    b: &Bucket,
    id: &str,
    size: u64,
    part: u64,
    out: &File,
    shown: &str,
) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut parts = Parts::new(b, id, size, part, shown);
    let mut w = out;
    while let Some(p) = parts.next_part()? {
        hasher.update(&p);
        w.write_all(&p)
            .map_err(|e| Error::io(format!("buffering the download of {shown}"), &e))?;
    }
    Ok(hasher.finalize().into())
}

/// Serve blob `id` through a pipe: the returned read end yields its bytes in
/// order as the parts arrive (two fetched ahead), from a thread of its own
/// (`sft-fetch`) that ends when the last byte is written or the reader goes.
/// The reader hashes what it serves and checks it against the manifest's
/// SHA-256 at the end (`verify::check_stored`): a damaged blob is logged as
/// an integrity error and the transfer ends with an error instead of END
/// (the client, which got that digest before the data, would refuse it
/// too). A failure to fetch closes the pipe early: the reader finds the data
/// short, and the cause is logged here.
pub fn stream(b: &Arc<Bucket>, id: &str, size: u64, part: u64, shown: &str) -> Result<File> {
    let (rx, mut tx) = std::io::pipe().map_err(|e| Error::io("making a pipe", &e))?;
    let (b, id, shown) = (b.clone(), id.to_string(), shown.to_string());
    std::thread::Builder::new()
        .name("sft-fetch".into())
        .spawn(move || {
            let mut parts = Parts::new(&b, &id, size, part, &shown);
            loop {
                match parts.next_part() {
                    Ok(Some(p)) => {
                        if tx.write_all(&p).is_err() {
                            return; // the reader is gone (the client left)
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(event = "get", "{shown}: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting a download's fetching thread", &e))?;
    Ok(File::from(std::os::fd::OwnedFd::from(rx)))
}

/// A blob stored by a server-side copy (CLONE), waiting for its manifest:
/// dropped uncommitted, its parts go.
pub struct Copied {
    sent: Option<Sent>,
    bucket: Arc<Bucket>,
}

impl Copied {
    /// The copy's blob, for its manifest (it is no longer removed on drop).
    pub fn take(mut self) -> Option<Sent> {
        self.sent.take()
    }
}

impl Drop for Copied {
    fn drop(&mut self) {
        if let Some(s) = self.sent.take() {
            discard(&self.bucket, &s.id, false);
        }
    }
}

/// Copy every part of a stored blob to a new blob, in the store (no byte
/// passes through the server): the new blob is immutable and independent,
/// so either file can be removed without touching the other. The parts were
/// checked against `sha256` when the source was uploaded; each copy's size
/// is checked again.
pub fn copy(b: &Arc<Bucket>, from: &str, size: u64, part: u64, sha256: [u8; 32]) -> Result<Copied> {
    let id = super::random_id();
    let n = count(size, part);
    let pairs: Vec<(Path, Path, u64)> = (0..n)
        .map(|i| {
            let len = (size - i * part).min(part);
            (
                b.key(&layout::part(from, i)),
                b.key(&layout::part(&id, i)),
                len,
            )
        })
        .collect();
    let copied = Copied {
        sent: Some(Sent {
            id: id.clone(),
            size,
            part,
            sha256,
        }),
        bucket: b.clone(),
    };
    b.run(|os| async move {
        let mut done = futures_util::stream::iter(pairs)
            .map(|(src, dst, len)| {
                let os = os.clone();
                async move {
                    os.copy(&src, &dst)
                        .await
                        .map_err(|e| store_err(&e, "copying", &src))?;
                    let meta = os
                        .head(&dst)
                        .await
                        .map_err(|e| store_err(&e, "checking", &dst))?;
                    if meta.size != len {
                        return Err(Error::integrity(format!(
                            "copying {src}: the copy has {} bytes, not {len}",
                            meta.size
                        )));
                    }
                    Ok(())
                }
            })
            .buffer_unordered(8);
        while let Some(r) = done.next().await {
            r?;
        }
        Ok(())
    })?;
    Ok(copied)
}
