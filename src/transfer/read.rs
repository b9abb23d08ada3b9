//! Reading a file into DATA frames: hashed, compressed where it pays.

use super::*;

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
pub(super) fn read_full(file: &mut File, buf: &mut [u8], what: &str) -> Result<()> {
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
