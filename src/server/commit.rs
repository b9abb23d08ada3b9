//! Small uploads, from checked request to visible file: the quota
//! reservation, writing and verifying the data, and committing them in
//! batches on the server's disk workers (`disk`).
//!
//! A client sending many small files pipelined (PROTOCOL.md §4.4a) never waits
//! for a reply, so the session need not either: it reserves space for each
//! upload as its PUT arrives, gathers its data and hands it to its committer,
//! then reads the next PUT at once. The committer's writing task takes
//! whatever uploads are waiting and has them written and verified; its
//! syncing task has each batch made durable together (one `syncfs` for the data, one
//! for the new names: a group commit) while the next batch is being written,
//! renames them into place and hands the results back in order; the session
//! sends the replies, still in order, as they come. Per file this saves two
//! thread hand-offs, a flush and — under `--fsync always` — two journal
//! commits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Shared;
use super::ahead::InOrder;
use super::auth::Identity;
use super::quota::Reservation;
use super::store::{Staged, Upload};
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::Attrs;
use crate::transfer;

/// Uploads up to this size are gathered in memory and written in one step.
pub const SMALL_UPLOAD: u64 = 1 << 20;

/// Most uploads waiting for the committer.
const QUEUE: usize = 1024;

/// Data of uploads waiting for the committer, in `UNIT`s: 16 MiB a session.
/// The session stops reading (so the client stops sending) while it is used
/// up. Sized for group commit: a batch of many small files while the
/// previous one syncs.
const BUDGET: u32 = 4096;
const UNIT: u64 = 4096;

/// Most uploads committed together.
const BATCH: usize = 512;

/// A stored upload: its final name, SHA-256 and size.
pub struct Stored {
    pub name: String,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// A small upload written and verified, not yet visible.
pub struct Verified {
    pub upload: Upload,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// A small pipelined upload whose data has all arrived.
pub struct SmallPut {
    pub name: String,
    pub size: u64,
    pub overwrite: bool,
    /// Recorded as the file's uploader.
    pub owner: String,
    /// Mode and mtime sent in ATTRS, if any.
    pub attrs: Option<Attrs>,
    /// Space reserved when the PUT arrived.
    pub reservation: Reservation,
    pub blocks: Vec<transfer::Block>,
    /// The SHA-256 sent in END; `None`: the client cancelled.
    pub claimed: Option<[u8; 32]>,
    pub started: Instant,
    /// Counts the upload as a transfer in flight (`admin status`) until it
    /// is committed or dropped.
    pub in_flight: InFlight,
    /// Its share of the session's queue budget (see `Committer::room`).
    pub room: OwnedSemaphorePermit,
    /// Its data's share of the server's memory budget.
    pub loan: transfer::Loan,
}

/// The outcome of a [`SmallPut`], in the order they were submitted.
pub struct Committed {
    pub name: String,
    pub size: u64,
    pub started: Instant,
    pub outcome: Result<Stored>,
}

/// One transfer in flight, counted while this lives.
pub struct InFlight(Arc<Shared>);

impl InFlight {
    pub fn new(shared: &Arc<Shared>) -> InFlight {
        shared.stats.transfers.fetch_add(1, Ordering::Relaxed);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.transfers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's committer, and the uploads it has not answered yet.
pub struct Committer {
    jobs: mpsc::Sender<SmallPut>,
    budget: Arc<Semaphore>,
    /// The outcomes, in the order the uploads were submitted.
    pub answers: InOrder<Committed, mpsc::UnboundedReceiver<Vec<Committed>>>,
}

impl Committer {
    /// Start the session's committer: two tasks (writing, syncing) that do
    /// their disk work on the server's disk workers and end when the
    /// session drops the committer (uploads already queued are still
    /// committed).
    pub fn start(shared: Arc<Shared>) -> Committer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        // unbounded: the committer never waits for the session (which may be
        // waiting for `room` the committer is about to free)
        let (tx, done) = mpsc::unbounded_channel();
        // one written batch waits while the one before it syncs
        let (to_sync, written) = mpsc::channel(1);
        tokio::spawn(write_loop(shared.clone(), rx, to_sync));
        tokio::spawn(sync_loop(shared, written, tx));
        Committer {
            jobs,
            budget: Arc::new(Semaphore::new(BUDGET as usize)),
            answers: InOrder::new(done, lost),
        }
    }

    /// Room in the queue for an upload of `size` bytes; waits while the
    /// uploads queued before it hold the budget.
    pub async fn room(&self, size: u64) -> Result<OwnedSemaphorePermit> {
        let units = (size.div_ceil(UNIT) + 1).min(u64::from(BUDGET)) as u32;
        self.budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| Error::other("internal error: the upload queue closed"))
    }

    /// Queue an upload (waits while the queue is full).
    pub async fn submit(&mut self, job: SmallPut) -> Result<()> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::other("internal error: the upload committer stopped"))?;
        self.answers.expect_one();
        Ok(())
    }
}

fn lost() -> Committed {
    Committed {
        name: String::new(),
        size: 0,
        started: Instant::now(),
        outcome: Err(Error::other("internal error: the upload committer stopped")),
    }
}

/// The writing half: take whatever uploads are waiting (up to `BATCH`) and
/// write and verify them on a disk worker, in order, while the syncing half
/// makes the batch before durable (its sync is I/O wait, the writing is
/// CPU).
async fn write_loop(
    s: Arc<Shared>,
    mut jobs: mpsc::Receiver<SmallPut>,
    to_sync: mpsc::Sender<Result<Written>>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let shared = s.clone();
        let written = s.disk.run(move || write_batch(&shared, batch)).await;
        if to_sync.send(written).await.is_err() {
            return;
        }
    }
}

/// The syncing half: make each written batch durable and visible on a disk
/// worker and hand the results back in order.
async fn sync_loop(
    s: Arc<Shared>,
    mut written: mpsc::Receiver<Result<Written>>,
    done: mpsc::UnboundedSender<Vec<Committed>>,
) {
    while let Some(w) = written.recv().await {
        let out = match w {
            Ok(w) => {
                let shared = s.clone();
                let n = w.out.len();
                s.disk
                    .run(move || publish_batch(&shared, w))
                    .await
                    .unwrap_or_else(|e| (0..n).map(|_| failed(&e)).collect())
            }
            // the batch's jobs are gone with the failed worker job: the
            // session's InOrder answers for them when the channel closes
            Err(_) => return,
        };
        // a session that ended no longer wants the answers
        let _ = done.send(out);
    }
}

fn failed(e: &Error) -> Committed {
    Committed {
        name: String::new(),
        size: 0,
        started: Instant::now(),
        outcome: Err(Error::other(e.message.clone())),
    }
}

/// A batch written and verified, waiting to be synced and renamed: each
/// upload's result so far, and for those that passed their staged file.
struct Written {
    out: Vec<Committed>,
    staged: Vec<Staged>,
    /// What publishing each staged upload settles, in `staged`'s order.
    held: Vec<Held>,
}

/// A staged upload's accounting, settled when it is published.
struct Held {
    /// Its place in `Written::out`.
    index: usize,
    reservation: Reservation,
    sha256: [u8; 32],
    size: u64,
}

/// Write and verify each upload of a batch.
fn write_batch(s: &Shared, batch: Vec<SmallPut>) -> Written {
    let mut w = Written {
        out: Vec::with_capacity(batch.len()),
        staged: Vec::new(),
        held: Vec::new(),
    };
    for job in batch {
        let r = match job.claimed {
            None => Err(Error::other(
                "upload cancelled by the client; nothing was stored",
            )),
            Some(claimed) => write_blocks(s, &job.name, job.size, &job.blocks, &claimed),
        };
        let outcome = match r {
            Ok(v) => {
                let holds = job.reservation.ids().to_vec();
                w.held.push(Held {
                    index: w.out.len(),
                    reservation: job.reservation,
                    sha256: v.sha256,
                    size: v.size,
                });
                w.staged.push(Staged {
                    up: v.upload,
                    sha256: v.sha256,
                    overwrite: job.overwrite,
                    owner: job.owner,
                    attrs: job.attrs,
                    holds,
                });
                Err(Error::other("internal error: not committed"))
            }
            Err(e) => Err(e),
        };
        w.out.push(Committed {
            name: job.name,
            size: job.size,
            started: job.started,
            outcome,
        });
    }
    w
}

/// Make a written batch durable and visible together (group commit); one
/// result per upload, in order.
fn publish_batch(s: &Shared, w: Written) -> Vec<Committed> {
    let Written {
        mut out,
        staged,
        held,
    } = w;
    let results = s.store.commit_all(staged);
    for (h, r) in held.into_iter().zip(results) {
        out[h.index].outcome = r.map(|published| {
            h.reservation.commit(h.size, published.replaced.as_ref());
            Stored {
                name: published.name,
                sha256: h.sha256,
                size: h.size,
            }
        });
    }
    out
}

/// Reserve space for an upload of `size` bytes (a first step of it for a
/// stream) before a byte of it is accepted, checking that a non-admin
/// overwrites only its own file.
pub fn reserve(
    s: &Shared,
    who: &Identity,
    name: &str,
    size: u64,
    overwrite: bool,
    stream: bool,
) -> Result<Reservation> {
    super::store::check_client_name(name)?;
    let old = if overwrite {
        s.store.existing(name)?
    } else {
        None
    };
    let request = super::policy::upload_request(who, name, size, old.as_ref(), stream)?;
    if stream {
        // a first step, or what is left if that is less: the stream is
        // refused only when its data does not fit (Reservation::grow)
        s.ledger.reserve_up_to(&request, s.store.free_space())
    } else {
        s.ledger.reserve(&request, s.store.free_space())
    }
}

/// Decode, hash and write a small upload's blocks into a new upload file,
/// and check them against the declared size and the client's digest.
/// Nothing is visible yet; dropping the result removes the file.
pub fn write_blocks(
    s: &Shared,
    name: &str,
    size: u64,
    blocks: &[transfer::Block],
    claimed: &[u8; 32],
) -> Result<Verified> {
    let upload = s.store.begin_upload(name)?;
    let (n, sha256) = transfer::write_gathered(&upload.file, blocks, &names::quote(name))?;
    super::verify::check_upload(name, Some(size), n, &sha256, claimed)?;
    Ok(Verified {
        upload,
        sha256,
        size: n,
    })
}
