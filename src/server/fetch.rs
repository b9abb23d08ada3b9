//! Downloads and listings requested ahead (PROTOCOL.md §4.4a): one task per
//! session serves them in order, its reading done on the server's disk
//! workers (`disk`). A small file's whole reply — GET_OK, DATA,
//! END — is read, hashed (and compressed, as the client asked) into one
//! buffer while the session is still sending the previous ones; a larger
//! file is handed back opened, for the session to stream; a listing is
//! encoded whole. For many small files (and the many directories of a tree)
//! this saves two hand-offs each, and lets replies share TLS
//! records.

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::Shared;
use super::ahead::InOrder;
use super::commit::{InFlight, SMALL_UPLOAD};
use super::store::FileInfo;
use crate::compress::Policy;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::Msg;
use crate::transfer;

/// Most requests a session reads ahead of its replies; beyond this it sends
/// replies before reading more.
pub const AHEAD: usize = 256;

/// Batches of ready replies held for the session (one more is being read).
const READY: usize = 2;

/// A batch ends after this many replies, or once it holds `BATCH_BYTES`:
/// whatever the files, a session holds at most (READY + 1) batches.
const BATCH: usize = 16;
const BATCH_BYTES: usize = 4 << 20;

/// One read-only request, as the session received it.
pub enum Fetch {
    /// GET of a file, compressed as `policy` says.
    File {
        name: String,
        policy: Box<Policy>,
        started: Instant,
    },
    /// LIST of a directory.
    Listing { path: String },
}

/// What became of a [`Fetch`], in the order they were submitted.
pub enum Fetched {
    /// The whole reply, encoded; `outcome` is for the audit line.
    Ready {
        name: String,
        reply: Vec<u8>,
        outcome: Result<(u64, [u8; 32])>,
        started: Instant,
        _in_flight: InFlight,
        /// The reply's share of the server's memory budget, repaid when
        /// the reply has been handed to the connection.
        _loan: transfer::Loan,
    },
    /// Too large to hold: the session streams it.
    Large {
        name: String,
        file: File,
        info: FileInfo,
        policy: Policy,
    },
    /// Could not be opened: the reply is this error.
    Failed { name: String, error: Error },
    /// A listing's whole reply (ENTRY… LIST_END, or ERROR).
    Listed { reply: Vec<u8> },
}

/// A session's reader, and the requests it has not answered yet.
pub struct Fetcher {
    jobs: mpsc::UnboundedSender<Fetch>,
    /// The replies, in the order the requests were submitted.
    pub answers: InOrder<Fetched, mpsc::Receiver<Vec<Fetched>>>,
}

impl Fetcher {
    /// Start the session's reader: a task that has each batch of requests
    /// read on the server's disk workers, and ends when the session drops
    /// the reader. `meta`: file metadata was negotiated (ATTRS before
    /// GET_OK, ENTRY's mode).
    pub fn start(shared: Arc<Shared>, meta: bool) -> Fetcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        let (tx, done) = mpsc::channel(READY);
        tokio::spawn(run(shared, meta, rx, tx));
        Fetcher {
            jobs,
            answers: InOrder::new(done, lost),
        }
    }

    /// Queue a request (never waits: the session bounds what is pending).
    pub fn submit(&mut self, job: Fetch) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::other("internal error: the download reader stopped"))?;
        self.answers.expect_one();
        Ok(())
    }
}

fn lost() -> Fetched {
    Fetched::Failed {
        name: String::new(),
        error: Error::other("internal error: the download reader stopped"),
    }
}

/// Serve requests in order, in batches of whatever is waiting (one
/// hand-off to a disk worker and one to the session per batch, not per
/// file). Requests that arrive while a batch is read join it.
async fn run(
    s: Arc<Shared>,
    meta: bool,
    mut jobs: mpsc::UnboundedReceiver<Fetch>,
    done: mpsc::Sender<Vec<Fetched>>,
) {
    let mut waiting: Option<Waiting> = None;
    loop {
        // a request the budget held back goes first, with its loan
        let (first, loan) = match waiting.take() {
            Some(w) => {
                let loan = s.budget.borrow(w.bytes).await;
                (w.job, Some(loan))
            }
            None => match jobs.recv().await {
                Some(job) => (job, None),
                None => return,
            },
        };
        let shared = s.clone();
        let read = s
            .disk
            .run(move || {
                let batch = read_batch(&shared, meta, first, loan, &mut jobs);
                (jobs, batch)
            })
            .await;
        // a failed disk job took the queue with it: the session answers
        // what it still owes as lost
        let Ok((back, (batch, held_back))) = read else {
            return;
        };
        jobs = back;
        waiting = held_back;
        if !batch.is_empty() && done.send(batch).await.is_err() {
            return; // the session ended
        }
    }
}

/// A small file's request that found the memory budget lent out: it waits
/// for its loan outside the disk workers (which must never wait for it:
/// what repays it may need them), then is read first.
struct Waiting {
    job: Fetch,
    bytes: usize,
}

/// Read `first` (with `loan`, if it waited for one) and the requests
/// waiting after it, up to a batch; and a request held back for its loan.
fn read_batch(
    s: &Arc<Shared>,
    meta: bool,
    first: Fetch,
    mut loan: Option<transfer::Loan>,
    jobs: &mut mpsc::UnboundedReceiver<Fetch>,
) -> (Vec<Fetched>, Option<Waiting>) {
    let mut bytes = 0;
    let mut batch = Vec::new();
    let mut next = Some(first);
    while let Some(job) = next.take() {
        let f = match job {
            Fetch::File {
                name,
                policy,
                started,
            } => match fetch(s, name, *policy, started, meta, loan.take()) {
                Ok(f) => f,
                Err(w) => return (batch, Some(w)),
            },
            Fetch::Listing { path } => list(s, &path, meta),
        };
        if let Fetched::Ready { reply, .. } | Fetched::Listed { reply } = &f {
            bytes += reply.len();
        }
        let large = matches!(f, Fetched::Large { .. });
        batch.push(f);
        // a large file is streamed by the session: no reason to wait
        if large || batch.len() >= BATCH || bytes >= BATCH_BYTES {
            break;
        }
        next = jobs.try_recv().ok();
    }
    (batch, None)
}

/// A directory's listing, encoded.
fn list(s: &Shared, path: &str, meta: bool) -> Fetched {
    let mut reply = Vec::new();
    match s.store.list(path) {
        Ok(entries) => {
            for mut e in entries {
                if !meta {
                    e.mode = None;
                }
                Msg::Entry(e).encode(&mut reply);
            }
            Msg::ListEnd.encode(&mut reply);
        }
        Err(e) => Msg::Error {
            code: e.kind.wire_code(),
            message: e.message.clone(),
        }
        .encode(&mut reply),
    }
    Fetched::Listed { reply }
}

/// Open one requested file; read a small one into its whole reply, with
/// room borrowed for it (`loan` if it waited for one, else borrowed now if
/// free; if not, the request is handed back to wait for it).
fn fetch(
    s: &Arc<Shared>,
    name: String,
    policy: Policy,
    started: Instant,
    meta: bool,
    loan: Option<transfer::Loan>,
) -> std::result::Result<Fetched, Waiting> {
    let (file, info) = match s.store.open_stream(&name) {
        Ok(x) => x,
        Err(error) => return Ok(Fetched::Failed { name, error }),
    };
    if info.size > SMALL_UPLOAD {
        return Ok(Fetched::Large {
            name,
            file,
            info,
            policy,
        });
    }
    let room = info.size as usize + 256;
    let Some(loan) = loan.or_else(|| s.budget.try_borrow(room)) else {
        return Err(Waiting {
            job: Fetch::File {
                name,
                policy: Box::new(policy),
                started,
            },
            bytes: room,
        });
    };
    let in_flight = InFlight::new(s);
    let mut reply = Vec::with_capacity(room);
    if meta {
        Msg::Attrs {
            mode: info.mode,
            mtime_ns: info.mtime_ns,
        }
        .encode(&mut reply);
    }
    Msg::GetOk {
        size: info.size,
        mtime_ns: info.mtime_ns,
        sha256: info.sha256,
    }
    .encode(&mut reply);
    // a second handle only to record a digest the file does not have yet
    let keep = info
        .sha256
        .is_none()
        .then(|| file.try_clone().ok())
        .flatten();
    let outcome = transfer::encode_small(file, info.size, &names::quote(&name), policy, &mut reply)
        .and_then(|sha256| {
            super::verify::check_stored(&name, info.sha256.as_ref(), &sha256)?;
            if let Some(f) = &keep {
                s.store.remember_digest(f, &info, &sha256);
            }
            Ok((info.size, sha256))
        });
    match &outcome {
        Ok((_, sha256)) => Msg::End { sha256: *sha256 }.encode(&mut reply),
        Err(e) => Msg::Error {
            code: e.kind.wire_code(),
            message: e.message.clone(),
        }
        .encode(&mut reply),
    }
    Ok(Fetched::Ready {
        name,
        reply,
        outcome,
        started,
        _in_flight: in_flight,
        _loan: loan,
    })
}
