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
    use std::io::Read;
    let what = || format!("reading {}", path.display());
    let mut f = File::open(path).map_err(|e| Error::io(what(), &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(what(), &e))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
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
    use std::io::Read;
    let what = || format!("reading {}", path.display());
    let mut f = File::open(path).map_err(|e| Error::io(what(), &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size: u64 = 0;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(what(), &e))?;
        if n == 0 {
            return Ok((size, h.finalize().into()));
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
}

/// A small free list of chunk buffers shared by the network task and a disk
/// thread, so steady-state transfers allocate (and page-fault) nothing. It
/// keeps at most `DEPTH + 4` free buffers unless told otherwise (`set_keep`:
/// a server shares one pool among all its transfers, sized in bytes).
#[derive(Clone)]
pub struct Pool(std::sync::Arc<std::sync::Mutex<Free>>);

struct Free {
    bufs: Vec<Vec<u8>>,
    /// Their capacities added up.
    bytes: usize,
    /// Most buffers, and most bytes, kept.
    keep: usize,
    keep_bytes: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool(std::sync::Arc::new(std::sync::Mutex::new(Free {
            bufs: Vec::new(),
            bytes: 0,
            keep: DEPTH + 4,
            keep_bytes: usize::MAX,
        })))
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Keep at most `n` free buffers of at most `bytes` in all from now on
    /// (for every clone).
    pub fn set_keep(&self, n: usize, bytes: usize) {
        if let Ok(mut f) = self.0.lock() {
            f.keep = n;
            f.keep_bytes = bytes;
            while f.bufs.len() > n || f.bytes > bytes {
                if let Some(v) = f.bufs.pop() {
                    f.bytes -= v.capacity();
                }
            }
        }
    }

    /// Free every buffer kept (the limits stay).
    pub fn trim(&self) {
        if let Ok(mut f) = self.0.lock() {
            f.bufs = Vec::new();
            f.bytes = 0;
        }
    }

    /// Bytes held in free buffers.
    pub fn kept(&self) -> usize {
        self.0.lock().map_or(0, |f| f.bytes)
    }

    fn pop(&self) -> Vec<u8> {
        let Ok(mut f) = self.0.lock() else {
            return Vec::new();
        };
        match f.bufs.pop() {
            Some(v) => {
                f.bytes -= v.capacity();
                v
            }
            None => Vec::new(),
        }
    }

    /// An empty buffer with room for `cap` bytes.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        let mut v = self.pop();
        v.clear();
        if v.capacity() < cap {
            v.reserve_exact(slab(cap));
        }
        v
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (a
    /// recycled buffer is reused as it is: no zero-filling per chunk).
    pub fn take_len(&self, len: usize) -> Vec<u8> {
        let mut v = self.pop();
        if v.capacity() < len {
            v.reserve_exact(slab(len) - v.len());
        }
        v.resize(len, 0);
        v
    }

    /// Give a buffer back (kept only while the pool is small).
    pub fn give(&self, v: Vec<u8>) {
        if let Ok(mut f) = self.0.lock()
            && f.bufs.len() < f.keep
            && f.bytes.saturating_add(v.capacity()) <= f.keep_bytes
        {
            f.bytes += v.capacity();
            f.bufs.push(v);
        }
    }

    /// Give back the buffer behind a payload, if nobody else holds it.
    pub fn recycle(&self, b: Bytes) {
        if let Ok(m) = b.try_into_mut() {
            self.give(Vec::from(m));
        }
    }
}

/// The capacity to allocate for a buffer of `n` bytes: chunk-sized ones
/// (a raw DATA payload, a raw DATA frame with its header) get one size, so
/// any of them can be reused for any other without growing (an exact fit
/// a few bytes short would be reallocated, or doubled).
fn slab(n: usize) -> usize {
    if (CHUNK / 2..=CHUNK + 4096).contains(&n) {
        CHUNK + 4096
    } else {
        n
    }
}

/// Bytes are lent in units of this size.
const UNIT: u64 = 1024;

/// A byte budget that transfers borrow their buffers from: a total shared by
/// every transfer of a server (`sft serve --memory-budget`), or unlimited (the
/// client, and tests). A transfer that finds it used up waits for a loan
/// before it reads more (from the socket or the disk), so memory stays
/// bounded and a full budget slows transfers down instead of failing them.
/// Every loan is repaid when the buffer it covers has been written (to disk
/// or the socket) or dropped, whatever way the transfer ends; a single loan
/// never asks for more than the whole budget, so every transfer can always
/// make progress once the loans ahead of it are repaid.
#[derive(Clone, Default)]
pub struct Budget(Option<std::sync::Arc<BudgetInner>>);

struct BudgetInner {
    units: std::sync::Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl Budget {
    /// No limit: loans are free and never wait.
    pub fn unlimited() -> Budget {
        Budget(None)
    }

    /// A budget of `bytes` in all (at least one unit).
    pub fn new(bytes: u64) -> Budget {
        let total = (bytes / UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Budget(Some(std::sync::Arc::new(BudgetInner {
            units: std::sync::Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        })))
    }

    /// The whole budget in bytes (None: unlimited).
    pub fn total(&self) -> Option<u64> {
        self.0.as_ref().map(|b| u64::from(b.total) * UNIT)
    }

    /// Bytes not lent out now (None: unlimited).
    pub fn available(&self) -> Option<u64> {
        self.0
            .as_ref()
            .map(|b| b.units.available_permits() as u64 * UNIT)
    }

    /// Units for `bytes`, capped at the whole budget so a loan can always
    /// be granted in the end.
    fn units(b: &BudgetInner, bytes: usize) -> u32 {
        (bytes as u64).div_ceil(UNIT).clamp(1, u64::from(b.total)) as u32
    }

    /// Borrow room for `bytes`, waiting while the budget is lent out.
    pub async fn borrow(&self, bytes: usize) -> Loan {
        let Some(b) = &self.0 else {
            return Loan(None);
        };
        let n = Self::units(b, bytes);
        // the semaphore is never closed, so this only waits
        Loan(b.units.clone().acquire_many_owned(n).await.ok())
    }

    /// `borrow` from a blocking thread (one that runs no async tasks).
    pub fn borrow_blocking(&self, bytes: usize) -> Loan {
        let Some(b) = &self.0 else {
            return Loan(None);
        };
        let n = Self::units(b, bytes);
        if let Ok(p) = b.units.clone().try_acquire_many_owned(n) {
            return Loan(Some(p));
        }
        let wait = b.units.clone().acquire_many_owned(n);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => Loan(h.block_on(wait).ok()),
            // no runtime to wait in: do without (never happens in a server)
            Err(_) => Loan(None),
        }
    }

    /// Borrow room for `bytes` only if it is free now.
    pub fn try_borrow(&self, bytes: usize) -> Option<Loan> {
        let Some(b) = &self.0 else {
            return Some(Loan(None));
        };
        let n = Self::units(b, bytes);
        b.units
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| Loan(Some(p)))
    }
}

/// Room borrowed from a [`Budget`]; repaid when dropped.
#[derive(Default)]
pub struct Loan(Option<tokio::sync::OwnedSemaphorePermit>);

impl Loan {
    /// A loan of nothing (from an unlimited budget).
    pub fn none() -> Loan {
        Loan(None)
    }

    /// Bytes this loan holds.
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.num_permits() as u64 * UNIT)
    }

    /// Make this loan cover `bytes`: keep what it holds if that is enough
    /// (repaying the rest), else borrow the difference, or if that is not
    /// free now, repay everything and borrow the whole anew, so a transfer
    /// never holds one loan while it waits for another.
    pub async fn resize(&mut self, budget: &Budget, bytes: usize) {
        let Some(b) = &budget.0 else { return };
        let want = Budget::units(b, bytes) as usize;
        let have = self.0.as_ref().map_or(0, |p| p.num_permits());
        if have >= want {
            if let Some(p) = self.0.as_mut() {
                drop(p.split(have - want));
            }
            return;
        }
        let more = b.units.clone().try_acquire_many_owned((want - have) as u32);
        match (self.0.as_mut(), more) {
            (Some(p), Ok(m)) => p.merge(m),
            (None, Ok(m)) => self.0 = Some(m),
            (_, Err(_)) => {
                self.0 = None;
                *self = budget.borrow(bytes).await;
            }
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
/// once sent. Unless `policy` is off, blocks the policy chooses to compress
/// go to worker threads (two where the machine has two cores) and come back
/// in order; raw blocks go out straight from the reading thread, as with
/// compression off.
pub fn spawn_reader(
    file: File,
    size: u64,
    what: String,
    pool: Pool,
    policy: Policy,
    from: Prefix,
) -> mpsc::Receiver<Outgoing> {
    start_reader(
        (file, size, what, pool, policy, from),
        Budget::unlimited(),
        |item, _| item,
    )
}

/// `spawn_reader` whose buffers are borrowed from `budget`: room for each
/// block is borrowed before it is read from the file, and the loan comes
/// with its frame; drop it once the frame is sent. While the budget is lent
/// out the reading thread waits (the file is read no further ahead).
pub fn spawn_reader_within(
    file: File,
    size: u64,
    what: String,
    pool: Pool,
    policy: Policy,
    from: Prefix,
    budget: Budget,
) -> mpsc::Receiver<(Outgoing, Loan)> {
    start_reader(
        (file, size, what, pool, policy, from),
        budget,
        |item, loan| (item, loan),
    )
}

type ReaderArgs = (File, u64, String, Pool, Policy, Prefix);

fn start_reader<T: Send + 'static>(
    (file, size, what, pool, mut policy, from): ReaderArgs,
    budget: Budget,
    wrap: fn(Outgoing, Loan) -> T,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(DEPTH);
    if !policy.may_compress() {
        tokio::task::spawn_blocking(move || {
            let h = from.hasher;
            read_blocks(
                (file, size, h),
                &what,
                CHUNK,
                (&pool, &budget),
                |item, loan| tx.blocking_send(wrap(item, loan)).is_ok(),
            )
        });
        return rx;
    }
    tokio::task::spawn_blocking(move || {
        // a file of one block is compressed right here: starting worker
        // threads would cost more than they save (many small files)
        let n = if size <= compress::BLOCK as u64 {
            0
        } else {
            compress::cores().min(MAX_WORKERS)
        };
        let workers = Workers::start(n, &pool);
        policy.set_workers(workers.len());
        sequence(
            (file, size, from.hasher),
            &what,
            (&pool, &budget),
            policy,
            workers,
            &mut |item, loan| tx.blocking_send(wrap(item, loan)).is_ok(),
        );
    });
    rx
}

/// Read, hash and frame (raw) the blocks of a file; `emit` returns false when
/// the consumer is gone.
fn read_blocks(
    (mut file, size, mut h): (File, u64, Sha256),
    what: &str,
    block: usize,
    (pool, budget): (&Pool, &Budget),
    mut emit: impl FnMut(Outgoing, Loan) -> bool,
) {
    let mut left = size;
    while left > 0 {
        let want = (left.min(block as u64)) as usize;
        let loan = budget.borrow_blocking(OFF + want);
        let buf = match read_frame(&mut file, want, what, pool, &mut h) {
            Ok(b) => b,
            Err(e) => {
                emit(Outgoing::Failed(e), Loan::none());
                return;
            }
        };
        left -= want as u64;
        if !emit(Outgoing::Frame(buf), loan) {
            return;
        }
    }
    emit(
        Outgoing::Done {
            size,
            sha256: h.finalize().into(),
        },
        Loan::none(),
    );
}

/// Bytes before the data in a DATA frame.
const OFF: usize = HEADER_LEN + DATA_PREFIX_LEN;
/// Most compression workers per transfer.
const MAX_WORKERS: usize = 2;

/// Read the next `want` bytes into a raw DATA frame and hash them.
fn read_frame(
    file: &mut File,
    want: usize,
    what: &str,
    pool: &Pool,
    h: &mut Sha256,
) -> Result<Vec<u8>> {
    let mut buf = pool.take_len(OFF + want);
    read_full(file, &mut buf[OFF..], what)?;
    h.update(&buf[OFF..]);
    buf[..OFF].copy_from_slice(&protocol::data_header(Encoding::Raw, want as u32, want));
    Ok(buf)
}

/// A raw frame to compress, and where to send the outcome.
struct Job {
    frame: Vec<u8>,
    level: i32,
    reply: std::sync::mpsc::SyncSender<Compressed>,
}

/// A worker's outcome: the frame to send (zstd if that paid, else the raw
/// frame unchanged), the raw and compressed sizes, and the time it took.
struct Compressed {
    frame: Vec<u8>,
    raw: usize,
    compressed: Option<usize>,
    took: Duration,
}

/// Compress one raw frame at `level`; keep it raw if that does not pay.
fn compress_frame(encoder: &mut Encoder, pool: &Pool, frame: Vec<u8>, level: i32) -> Compressed {
    let raw = frame.len() - OFF;
    let t = Instant::now();
    let (frame, compressed) = match encoder.compress(&frame[OFF..], level) {
        Some(c) if compress::pays(raw, c.len()) => {
            let mut z = pool.take_len(OFF);
            z[..OFF].copy_from_slice(&protocol::data_header(Encoding::Zstd, raw as u32, c.len()));
            z.extend_from_slice(c);
            let n = c.len();
            pool.give(frame);
            (z, Some(n))
        }
        Some(c) => {
            let n = c.len();
            (frame, Some(n))
        }
        None => (frame, None),
    };
    Compressed {
        frame,
        raw,
        compressed,
        took: t.elapsed(),
    }
}

/// Compression threads fed round-robin; they stop when this is dropped.
struct Workers {
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    next: usize,
    /// Used when no thread could be started.
    inline: Encoder,
    pool: Pool,
}

impl Workers {
    fn start(n: usize, pool: &Pool) -> Workers {
        let mut jobs = Vec::new();
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let pool = pool.clone();
            let spawned = std::thread::Builder::new()
                .name("sft-zstd".into())
                .spawn(move || {
                    let mut encoder = Encoder::new();
                    while let Ok(job) = rx.recv() {
                        let done = compress_frame(&mut encoder, &pool, job.frame, job.level);
                        if job.reply.send(done).is_err() {
                            return;
                        }
                    }
                });
            if spawned.is_ok() {
                jobs.push(tx);
            }
        }
        Workers {
            jobs,
            next: 0,
            inline: Encoder::new(),
            pool: pool.clone(),
        }
    }

    fn len(&self) -> usize {
        self.jobs.len().max(1)
    }

    /// Hand `frame` to the next worker; the outcome arrives on the receiver.
    fn submit(&mut self, frame: Vec<u8>, level: i32) -> Slot {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            frame,
            level,
            reply,
        };
        let job = match self.jobs.get(self.next % self.jobs.len().max(1)) {
            Some(w) => match w.send(job) {
                Ok(()) => {
                    self.next += 1;
                    return Slot::Pending(rx);
                }
                Err(e) => e.0,
            },
            None => job,
        };
        // no worker (none started, or it died): compress here
        Slot::Done(compress_frame(
            &mut self.inline,
            &self.pool,
            job.frame,
            job.level,
        ))
    }
}

/// A frame in the send queue, in file order.
enum Slot {
    Raw(Vec<u8>),
    Pending(std::sync::mpsc::Receiver<Compressed>),
    Done(Compressed),
}

/// Read a small file (at most one compression block) on this thread and
/// append its DATA frames to `out`, compressed as `policy` decides; its
/// SHA-256. For senders that prepare many small files ahead on one thread.
pub fn encode_small(
    file: File,
    size: u64,
    what: &str,
    mut policy: Policy,
    out: &mut Vec<u8>,
) -> Result<[u8; 32]> {
    let pool = Pool::new();
    let mut result = Err(Error::other("internal error: the file was not read"));
    let mut emit = |item: Outgoing, _: Loan| match item {
        Outgoing::Frame(f) => {
            out.extend_from_slice(&f);
            pool.give(f);
            true
        }
        Outgoing::Done { sha256, .. } => {
            result = Ok(sha256);
            false
        }
        Outgoing::Failed(e) => {
            result = Err(e);
            false
        }
    };
    if policy.may_compress() && size <= BLOCK as u64 {
        let workers = Workers::start(0, &pool);
        policy.set_workers(workers.len());
        sequence(
            (file, size, Sha256::new()),
            what,
            (&pool, &Budget::unlimited()),
            policy,
            workers,
            &mut emit,
        );
    } else {
        let unlimited = Budget::unlimited();
        read_blocks(
            (file, size, Sha256::new()),
            what,
            CHUNK,
            (&pool, &unlimited),
            emit,
        );
    }
    result
}

/// Read and hash the file, send compressible blocks to the workers, and emit
/// every frame in file order, telling the policy how each went.
fn sequence(
    (mut file, size, mut h): (File, u64, Sha256),
    what: &str,
    (pool, budget): (&Pool, &Budget),
    mut policy: Policy,
    mut workers: Workers,
    emit: &mut dyn FnMut(Outgoing, Loan) -> bool,
) {
    let mut left = size;
    let mut queue: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    // the loan of each queued block, in the same order
    let mut loans: std::collections::VecDeque<Loan> = std::collections::VecDeque::new();
    // blocks in flight: enough to keep every worker busy while one is sent
    let max_queue = 2 * workers.len() + 2;
    // the budget is lent out: send the front block (repaying its loan to
    // whoever waits) before reading more; never wait for a loan while
    // holding queued ones only this thread can repay
    let mut starved = false;
    // the level chosen for a block whose loan could not be had yet
    let mut planned = None;
    loop {
        // send what is ready at the front; wait for it when the queue is
        // full or the file is all read
        loop {
            let must_wait = left == 0 || queue.len() >= max_queue || starved;
            let Some(front) = queue.front() else { break };
            let (frame, raw, took) = match front {
                Slot::Raw(_) | Slot::Done(_) => match queue.pop_front() {
                    Some(Slot::Raw(f)) => {
                        let n = f.len() - OFF;
                        (f, n, None)
                    }
                    Some(Slot::Done(c)) => {
                        take_outcome(&mut policy, &c);
                        (c.frame, c.raw, c.compressed.map(|_| c.took))
                    }
                    _ => continue,
                },
                Slot::Pending(rx) => {
                    let got = if must_wait {
                        rx.recv().ok()
                    } else {
                        match rx.try_recv() {
                            Ok(c) => Some(c),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                        }
                    };
                    let Some(c) = got else {
                        emit(
                            Outgoing::Failed(Error::other(
                                "internal error: a compression worker stopped",
                            )),
                            Loan::none(),
                        );
                        return;
                    };
                    queue.pop_front();
                    take_outcome(&mut policy, &c);
                    (c.frame, c.raw, c.compressed.map(|_| c.took))
                }
            };
            let t = Instant::now();
            let loan = loans.pop_front().unwrap_or_default();
            if !emit(Outgoing::Frame(frame), loan) {
                return; // the network side gave up
            }
            starved = false;
            policy.observe(raw, t.elapsed(), took);
        }
        if left == 0 {
            emit(
                Outgoing::Done {
                    size,
                    sha256: h.finalize().into(),
                },
                Loan::none(),
            );
            return;
        }
        let level = planned.take().unwrap_or_else(|| policy.next_level());
        let want = left.min(if level.is_some() { BLOCK } else { CHUNK } as u64) as usize;
        let loan = if queue.is_empty() {
            budget.borrow_blocking(OFF + want)
        } else {
            match budget.try_borrow(OFF + want) {
                Some(l) => l,
                None => {
                    (planned, starved) = (Some(level), true);
                    continue;
                }
            }
        };
        loans.push_back(loan);
        let frame = match read_frame(&mut file, want, what, pool, &mut h) {
            Ok(f) => f,
            Err(e) => {
                emit(Outgoing::Failed(e), Loan::none());
                return;
            }
        };
        left -= want as u64;
        queue.push_back(match level {
            Some(l) => workers.submit(frame, l),
            None => Slot::Raw(frame),
        });
    }
}

/// Tell the policy whether a compression attempt paid.
fn take_outcome(policy: &mut Policy, c: &Compressed) {
    if let Some(n) = c.compressed {
        policy.record_attempt(c.raw, n);
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

impl Block {
    /// Bytes of memory the block takes until written: its payload, and the
    /// decoded data too if it is compressed.
    pub fn cost(&self) -> usize {
        match self.encoding {
            Encoding::Raw => self.payload.len(),
            _ => self.payload.len() + self.raw_len as usize,
        }
    }
}

/// The result of a writing thread: bytes written and their SHA-256.
pub type WriteResult = Result<(u64, [u8; 32], File)>;

/// Write blocks to `file`, hashing as they pass: one blocking thread
/// decompresses and hashes, a second writes (copying into the page cache
/// costs as much as the rest, so the two overlap). With `background_sync`,
/// write-back is started every 32 MiB on a helper thread so the data is
/// mostly on disk by the time the caller syncs. Each block's buffer goes back
/// to `pool` once written.
pub fn spawn_writer(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
) -> (mpsc::Sender<Block>, tokio::task::JoinHandle<WriteResult>) {
    start_writer(file, what, background_sync, pool, from)
}

/// `spawn_writer` for blocks each sent with the loan that covers its buffer:
/// the loan is repaid once the block is written (or dropped).
pub fn spawn_writer_within(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
) -> (
    mpsc::Sender<(Block, Loan)>,
    tokio::task::JoinHandle<WriteResult>,
) {
    start_writer(file, what, background_sync, pool, from)
}

/// A block for the writer, with or without a loan.
trait Loaned: Send + 'static {
    fn parts(self) -> (Block, Loan);
}

impl Loaned for Block {
    fn parts(self) -> (Block, Loan) {
        (self, Loan::none())
    }
}

impl Loaned for (Block, Loan) {
    fn parts(self) -> (Block, Loan) {
        self
    }
}

fn start_writer<T: Loaned>(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
) -> (mpsc::Sender<T>, tokio::task::JoinHandle<WriteResult>) {
    let (tx, mut rx) = mpsc::channel::<T>(DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let Prefix {
            len: already,
            hasher: mut h,
        } = from;
        let mut n: u64 = 0;
        let mut decoder = Decoder::new();
        let (wtx, wrx) = std::sync::mpsc::sync_channel::<(Plain, Loan)>(DEPTH / 2);
        let (p2, what2) = (pool.clone(), what.clone());
        let writer = std::thread::Builder::new()
            .name("sft-write".into())
            .spawn(move || write_plain(file, &what2, background_sync, &p2, wrx))
            .map_err(|e| Error::io("starting a writer thread", &e))?;
        let result = (|| -> Result<()> {
            while let Some(item) = rx.blocking_recv() {
                let (block, loan) = item.parts();
                let plain = match block.encoding {
                    Encoding::Raw if block.payload.len() == block.raw_len as usize => {
                        Plain::Raw(block.payload)
                    }
                    encoding => {
                        let mut out = pool.take_len(block.raw_len as usize);
                        let r = decoder.decode(encoding, block.raw_len, &block.payload, &mut out);
                        pool.recycle(block.payload);
                        if let Err(e) = r {
                            pool.give(out);
                            return Err(e);
                        }
                        Plain::Inflated(out)
                    }
                };
                h.update(plain.bytes());
                n += plain.bytes().len() as u64;
                if wtx.send((plain, loan)).is_err() {
                    break; // the writer failed: its error is reported below
                }
            }
            Ok(())
        })();
        drop(wtx);
        let written = writer
            .join()
            .map_err(|_| Error::other("internal error: the writer thread panicked"))?;
        // a write error explains a decoding loop cut short: report it first
        let (w, file) = written?;
        result?;
        if w != n {
            return Err(Error::other(format!("writing {what}: short write")));
        }
        Ok((already + n, h.finalize().into(), file))
    });
    (tx, handle)
}

/// A block's data after decoding.
enum Plain {
    Raw(Bytes),
    Inflated(Vec<u8>),
}

impl Plain {
    fn bytes(&self) -> &[u8] {
        match self {
            Plain::Raw(b) => b,
            Plain::Inflated(v) => v,
        }
    }
}

/// Write decoded blocks in order; bytes written and the file.
fn write_plain(
    mut file: File,
    what: &str,
    background_sync: bool,
    pool: &Pool,
    rx: std::sync::mpsc::Receiver<(Plain, Loan)>,
) -> Result<(u64, File)> {
    let mut n: u64 = 0;
    let mut synced_at: u64 = 0;
    let syncer = if background_sync {
        Syncer::start(&file)
    } else {
        None
    };
    while let Ok((plain, loan)) = rx.recv() {
        file.write_all(plain.bytes())
            .map_err(|e| Error::io(format!("writing {what}"), &e))?;
        n += plain.bytes().len() as u64;
        match plain {
            Plain::Raw(b) => pool.recycle(b),
            Plain::Inflated(v) => pool.give(v),
        }
        drop(loan); // the block is in the page cache now
        if n - synced_at >= SYNC_EVERY {
            synced_at = n;
            if let Some(s) = &syncer {
                s.kick();
            }
        }
    }
    drop(syncer);
    Ok((n, file))
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
            .name("sft-writeback".into())
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
            Prefix::none(),
        );
        let dst = File::create(dir.path().join("dst")).unwrap();
        let (tx, h) = spawn_writer(dst, "dst".into(), true, pool.clone(), Prefix::none());
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
    async fn loans_are_capped_repaid_and_resized() {
        let b = Budget::new(1 << 20);
        assert_eq!(b.total(), Some(1 << 20));
        // a loan never asks for more than the whole budget
        let all = b.borrow(5 << 20).await;
        assert_eq!(all.bytes(), 1 << 20);
        assert_eq!(b.available(), Some(0));
        assert!(b.try_borrow(1).is_none());
        drop(all);
        assert_eq!(b.available(), Some(1 << 20));
        // resizing repays the excess, and borrows more when it is free
        let mut l = b.borrow(CHUNK).await;
        l.resize(&b, 10_000).await;
        assert_eq!(l.bytes(), 10 * 1024);
        assert_eq!(b.available(), Some((1 << 20) - 10 * 1024));
        l.resize(&b, 512 << 10).await;
        assert_eq!(l.bytes(), 512 << 10);
        // more than is free: everything is repaid and borrowed anew, waiting
        // for the other holder, never holding one loan while waiting
        let other = b.borrow(256 << 10).await;
        let waiter = tokio::spawn(async move {
            l.resize(&b, 900 << 10).await;
            (l, b)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "it must wait for the other loan");
        drop(other);
        let (l, b) = waiter.await.unwrap();
        assert_eq!(l.bytes(), 900 << 10);
        assert_eq!(b.available(), Some(124 << 10));
        drop(l);
        assert_eq!(b.available(), Some(1 << 20));
        // unlimited: nothing is counted, nothing waits
        let u = Budget::unlimited();
        assert_eq!(u.borrow(1 << 30).await.bytes(), 0);
        assert!(u.try_borrow(1 << 30).is_some());
        assert_eq!(u.available(), None);
    }

    /// Push `data` through budgeted reader and writer threads, as a server
    /// does: a download's frames are borrowed from `out` by the reading
    /// thread and repaid once "sent"; an upload borrows from `into` before
    /// each frame is "read" and repays once it is written. (A task that
    /// borrowed while it held frames only it can repay would wait forever:
    /// the server never does that, so neither does this.)
    async fn pipeline_within(
        data: &[u8],
        mode: crate::compress::Mode,
        (out, into): (Budget, Budget),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, data).unwrap();
        let pool = Pool::new();
        pool.set_keep(2, 1 << 20);
        let policy = Policy::new(mode, crate::compress::MAX_LEVEL);
        let mut rx = spawn_reader_within(
            File::open(&src).unwrap(),
            data.len() as u64,
            "src".into(),
            pool.clone(),
            policy,
            Prefix::none(),
            out.clone(),
        );
        let dst = File::create(dir.path().join("dst")).unwrap();
        let (tx, h) = spawn_writer_within(dst, "dst".into(), false, pool.clone(), Prefix::none());
        let total = out.total().unwrap();
        let mut frames = Vec::new();
        loop {
            match rx.recv().await.unwrap() {
                (Outgoing::Frame(f), loan) => {
                    assert!(loan.bytes() > 0 && loan.bytes() <= total);
                    drop(loan); // sent
                    frames.push(f);
                }
                (Outgoing::Done { .. }, _) => break,
                (Outgoing::Failed(e), _) => panic!("{e}"),
            }
        }
        // and received, frame by frame
        for f in frames {
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
            let block = Block {
                encoding,
                raw_len,
                payload,
            };
            let mut loan = into.borrow(CHUNK).await;
            loan.resize(&into, block.cost()).await;
            tx.send((block, loan)).await.unwrap();
        }
        drop(tx);
        let (n, _, _) = h.await.unwrap().unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_budget_slows_transfers_down_and_never_stops_them() {
        use crate::compress::Mode;
        let data: Vec<u8> = (0..(CHUNK * 9 + 5)).map(|i| (i * 7 % 253) as u8).collect();
        let small = (Budget::new(300 << 10), Budget::new(300 << 10));
        pipeline_within(&data, Mode::Off, small.clone()).await;
        assert_eq!(small.0.available(), small.0.total());
        assert_eq!(small.1.available(), small.1.total());
        // compressed blocks (1 MiB) are larger than the whole budget
        let data = text(6 << 20);
        pipeline_within(&data, Mode::Level(3), small.clone()).await;
        assert_eq!(small.0.available(), small.0.total());
        assert_eq!(small.1.available(), small.1.total());
        // several at once, sharing budgets of about a block
        let shared = (
            Budget::new(CHUNK as u64 + 8192),
            Budget::new(CHUNK as u64 + 8192),
        );
        let mut all = Vec::new();
        for i in 0..4u8 {
            let data: Vec<u8> = (0..(CHUNK * 5 + i as usize))
                .map(|j| (j as u8) ^ i)
                .collect();
            let b = shared.clone();
            all.push(tokio::spawn(async move {
                pipeline_within(&data, Mode::Off, b).await
            }));
        }
        for t in all {
            t.await.unwrap();
        }
        assert_eq!(shared.0.available(), shared.0.total());
        assert_eq!(shared.1.available(), shared.1.total());
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
            Prefix::none(),
        );
        match rx.recv().await.unwrap() {
            Outgoing::Failed(e) => assert!(e.message.contains("shorter")),
            _ => panic!("expected failure"),
        }
    }
}
