//! Many files over one session without a round trip per file. Uploads are
//! pipelined: PUT with the PIPELINED flag is followed at once by its DATA and
//! END, without waiting for PUT_READY. Downloads are requested ahead: several
//! GETs are outstanding. Replies come back in order. A window bounds how far
//! the sender runs ahead of the replies; a reader of replies runs alongside
//! the sender, so neither side can block the other.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{Client, Downloaded, Pacer, Stream, Uploaded, frame_raw_len, unexpected};
use crate::compress::{Mode, Policy};
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{self, Encoding, Msg};
use crate::transfer::{self, Outgoing};

/// Why the sender stopped a file the server had already refused.
const REFUSED: &str = "refused by the server";

/// Most files requested ahead of their replies (downloads).
pub const WINDOW: usize = 256;

/// Most small files sent ahead of their replies (uploads): enough for the
/// server to make hundreds durable with one sync (group commit). The server
/// bounds what it buffers, so this bounds nothing but bookkeeping.
pub const PUT_WINDOW: usize = 1024;

/// Files this small are pipelined; larger ones wait for PUT_READY, so a
/// refused upload (quota) costs no data at all, and the round trip is lost in
/// the time the file takes to send.
pub const PIPELINE_BELOW: u64 = 1 << 20;

/// One upload: a local file and the remote name asked for.
#[derive(Debug, Clone)]
pub struct PutJob {
    pub local: PathBuf,
    pub remote: String,
}

/// A file the server may already hold (CLONE): its remote name, size and
/// SHA-256.
#[derive(Debug, Clone)]
pub struct CloneJob {
    pub remote: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The local file's mode and mtime, sent in ATTRS (when preserved).
    pub attrs: Option<protocol::Attrs>,
}

/// Files this large are first offered to the server by content (CLONE):
/// hashing them costs a read, and asking costs no round trip of its own
/// (all are asked together); smaller files are simply sent.
pub const CLONE_FROM: u64 = 1 << 20;

/// Where a download goes.
#[derive(Debug, Clone)]
pub enum Dest {
    /// A local path (through a `.part` file, renamed when verified).
    Path(PathBuf),
    /// Standard output, as it arrives (a mismatch is still reported, exit 8).
    Stdout,
}

/// One download.
#[derive(Debug, Clone)]
pub struct GetJob {
    pub remote: String,
    pub dest: Dest,
    /// The SHA-256 the file must have (--sha256, --check).
    pub expect: Option<[u8; 32]>,
}

/// What the receiver learns of an upload from the sender.
struct SentPut {
    index: usize,
    size: u64,
    started: Instant,
    /// Err: not sent at all (the local file could not be opened).
    sent: Result<()>,
    /// The digest and wire bytes once END went out, or why it was cancelled.
    outcome: oneshot::Receiver<Result<Sent>>,
    /// Not pipelined: tell the sender what answered its PUT.
    ready: Option<oneshot::Sender<Ready>>,
    _permit: OwnedSemaphorePermit,
}

/// A file's data, sent: its digest, the bytes its DATA frames took on the
/// wire, and how many of its bytes the server already held (resumed).
pub struct Sent {
    pub sha256: [u8; 32],
    pub wire: u64,
    pub resumed: u64,
}

/// What answered a PUT that waits for its reply before sending data.
enum Ready {
    /// PUT_READY: send the data from the first byte.
    Go,
    /// PARTIAL: the server holds this many bytes of an earlier attempt.
    Partial { offset: u64, sha256: [u8; 32] },
    /// ERROR: nothing is to be sent.
    Refused,
}

/// A place in the window of files sent ahead of their replies.
async fn slot(window: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
    window
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::other("internal error: window closed"))
}

/// PUT_OK checked against what was sent: the stored name is valid, and the
/// size and SHA-256 the server acknowledges are those of the data sent.
pub(super) fn acknowledged(
    got: u64,
    theirs: &[u8; 32],
    name: String,
    size: u64,
    sent: Sent,
    started: Instant,
) -> Result<Uploaded> {
    let Sent {
        sha256,
        wire,
        resumed,
    } = sent;
    names::validate(&name)
        .map_err(|e| Error::protocol(format!("the server named the stored file badly: {e}")))?;
    if got != size || !transfer::same_digest(theirs, &sha256) {
        return Err(Error::integrity(format!(
            "the server acknowledged {got} bytes with SHA-256 {} but {size} bytes with SHA-256 {} were sent",
            hex::encode(theirs),
            hex::encode(sha256)
        )));
    }
    Ok(Uploaded {
        name,
        size,
        sha256,
        wire,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A local file opened for upload: the file, its size, its metadata.
fn open_local(path: &Path) -> Result<(File, u64, protocol::Attrs)> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(format!("opening {shown}"), &e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {shown}"), &e))?;
    if !meta.is_file() {
        return Err(Error::usage(format!("{shown} is not a regular file")));
    }
    Ok((file, meta.len(), super::local_attrs(&meta)))
}

/// An upload as the preparing thread leaves it for the sender.
enum Prepared {
    /// A file under `PIPELINE_BELOW`: PUT (pipelined), DATA and END, encoded.
    Small {
        index: usize,
        size: u64,
        frames: Vec<u8>,
        sha256: [u8; 32],
        /// Bytes of its DATA frames.
        wire: u64,
        started: Instant,
    },
    /// A larger file, opened: it is streamed after PUT_READY (its ATTRS,
    /// if sent, goes just before its PUT).
    Large {
        index: usize,
        file: File,
        size: u64,
        attrs: Option<protocol::Attrs>,
    },
    /// The local file could not be opened or read; nothing was sent.
    Failed { index: usize, error: Error },
}

/// Files prepared ahead of the sender; each holds at most one small file.
const PREPARED_AHEAD: usize = 16;

/// Open the files of `jobs` in order on one blocking thread, and read, hash
/// (and compress, as the policy decides) each small one into its encoded
/// frames, ahead of the sender: no thread or flush per file. With
/// `preserve`, each PUT is preceded by the file's ATTRS.
fn spawn_preparer(
    jobs: Vec<PutJob>,
    base_flags: u32,
    mode: Mode,
    local: bool,
    preserve: bool,
) -> mpsc::Receiver<Prepared> {
    let (tx, rx) = mpsc::channel(PREPARED_AHEAD);
    tokio::task::spawn_blocking(move || {
        for (index, job) in jobs.into_iter().enumerate() {
            let item = match open_local(&job.local) {
                Err(error) => Prepared::Failed { index, error },
                Ok((file, size, attrs)) if size >= PIPELINE_BELOW => Prepared::Large {
                    index,
                    file,
                    size,
                    attrs: preserve.then_some(attrs),
                },
                Ok((file, size, attrs)) => {
                    let started = Instant::now();
                    let mut frames = Vec::with_capacity(size as usize + 256);
                    if preserve {
                        Msg::Attrs {
                            mode: attrs.mode,
                            mtime_ns: attrs.mtime_ns,
                        }
                        .encode(&mut frames);
                    }
                    Msg::Put {
                        size,
                        flags: base_flags | protocol::PUT_PIPELINED,
                        name: job.remote,
                    }
                    .encode(&mut frames);
                    let policy = Policy::new(mode, crate::compress::MAX_LEVEL).on_local_link(local);
                    let what = job.local.display().to_string();
                    let head = frames.len();
                    match transfer::encode_small(file, size, &what, policy, &mut frames) {
                        Ok(sha256) => {
                            let wire = (frames.len() - head) as u64;
                            Msg::End { sha256 }.encode(&mut frames);
                            Prepared::Small {
                                index,
                                size,
                                frames,
                                sha256,
                                wire,
                                started,
                            }
                        }
                        Err(error) => Prepared::Failed { index, error },
                    }
                }
            };
            if tx.blocking_send(item).is_err() {
                return; // the sender stopped
            }
        }
    });
    rx
}

impl Client {
    /// Upload `jobs` in order over this session, pipelined. `done` gets each
    /// job's result in order; an error it returns stops everything. Errors
    /// that break the session are returned.
    pub async fn put_many(
        &mut self,
        jobs: &[PutJob],
        overwrite: bool,
        progress: &Progress,
        mut done: impl FnMut(usize, Result<Uploaded>) -> Result<()>,
    ) -> Result<()> {
        for j in jobs {
            names::validate(&j.remote)?;
        }
        let base_flags = if overwrite {
            protocol::PUT_OVERWRITE
        } else {
            0
        };
        // files large enough to wait for PUT_READY may resume (PROTOCOL.md §4.9)
        let resume_flag = if self.resume { protocol::PUT_RESUME } else { 0 };
        let mode = if self.zstd { self.compress } else { Mode::Off };
        let (limit_rate, timeout, local) = (self.limit_rate, self.timeout, self.local_link);
        let window = Arc::new(Semaphore::new(PUT_WINDOW));
        // jobs with an index below this were refused by the server: stop sending them
        let refused = AtomicUsize::new(0);
        let (tx, mut rx) = mpsc::unbounded_channel::<SentPut>();
        let (r, w) = (&mut self.r, &mut self.w);

        let preserve = self.meta && self.preserve;
        let mut prepared = spawn_preparer(jobs.to_vec(), base_flags, mode, local, preserve);
        let sender = async {
            let mut pacer = Pacer::new(limit_rate);
            while let Some(item) = {
                // nothing may wait in the buffer while this side waits
                if prepared.is_empty() || window.available_permits() == 0 {
                    w.flush().await?;
                }
                prepared.recv().await
            } {
                if window.available_permits() == 0 {
                    w.flush().await?;
                }
                let permit = slot(&window).await?;
                let (otx, orx) = oneshot::channel();
                let (index, file, size) = match item {
                    Prepared::Failed { index, error } => {
                        let _ = tx.send(SentPut {
                            index,
                            size: 0,
                            started: Instant::now(),
                            sent: Err(error),
                            outcome: orx,
                            ready: None,
                            _permit: permit,
                        });
                        continue;
                    }
                    Prepared::Small {
                        index,
                        size,
                        frames,
                        sha256,
                        wire,
                        started,
                    } => {
                        // PUT, DATA and END, queued without waiting
                        let remote = &jobs[index].remote;
                        progress.start(remote, size);
                        w.queue_raw(&frames).await?;
                        progress.advance(size);
                        progress.done();
                        let _ = otx.send(Ok(Sent {
                            sha256,
                            wire,
                            resumed: 0,
                        }));
                        let _ = tx.send(SentPut {
                            index,
                            size,
                            started,
                            sent: Ok(()),
                            outcome: orx,
                            ready: None,
                            _permit: permit,
                        });
                        pacer.pace(size).await;
                        continue;
                    }
                    Prepared::Large {
                        index,
                        file,
                        size,
                        attrs,
                    } => {
                        if let Some(a) = attrs {
                            w.send(&Msg::Attrs {
                                mode: a.mode,
                                mtime_ns: a.mtime_ns,
                            })
                            .await?;
                        }
                        (index, file, size)
                    }
                };
                let job = &jobs[index];
                // a larger file waits for PUT_READY, so a refusal costs no data
                w.send_now(&Msg::Put {
                    size,
                    flags: base_flags | resume_flag,
                    name: job.remote.clone(),
                })
                .await?;
                let (ready_tx, ready_rx) = oneshot::channel();
                let _ = tx.send(SentPut {
                    index,
                    size,
                    started: Instant::now(),
                    sent: Ok(()),
                    outcome: orx,
                    ready: Some(ready_tx),
                    _permit: permit,
                });
                let (file, from) = match ready_rx.await.unwrap_or(Ready::Refused) {
                    Ready::Refused => {
                        // refused before any data: nothing to send
                        let _ = otx.send(Err(Error::other(REFUSED)));
                        continue;
                    }
                    Ready::Go => (file, transfer::Prefix::none()),
                    Ready::Partial { offset, sha256 } => {
                        // go on only after a prefix that is the same here
                        let (file, from) = same_prefix(file, offset, sha256, &job.local).await?;
                        w.send_now(&Msg::Resume { offset: from.len }).await?;
                        (file, from)
                    }
                };
                progress.start(&job.remote, size);
                progress.advance(from.len);
                let _moving = (resume_flag != 0).then(|| {
                    super::moving::mark(super::moving::Moving::Up {
                        remote: job.remote.clone(),
                    })
                });
                let r = send_file(
                    w,
                    file,
                    from,
                    size,
                    &job.local,
                    Policy::new(mode, crate::compress::MAX_LEVEL).on_local_link(local),
                    limit_rate,
                    progress,
                    || refused.load(Ordering::Acquire) > index,
                )
                .await;
                progress.done();
                match r {
                    Ok(x) => {
                        let _ = otx.send(x);
                    }
                    Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
                    Err(e) => {
                        let _ = otx.send(Err(e));
                    }
                }
            }
            drop(tx);
            w.flush().await
        };

        let receiver = async {
            while let Some(p) = rx.recv().await {
                if let Err(e) = p.sent {
                    done(p.index, Err(e))?;
                    continue;
                }
                let mut outcome = p.outcome;
                if let Some(ready) = p.ready {
                    match r.expect_within(timeout, "the reply to PUT").await? {
                        Msg::PutReady { offset: 0 } => {
                            let _ = ready.send(Ready::Go);
                        }
                        Msg::Partial { offset, sha256 } if resume_flag != 0 => {
                            let _ = ready.send(Ready::Partial { offset, sha256 });
                        }
                        Msg::Error { code, message } => {
                            let _ = ready.send(Ready::Refused);
                            done(p.index, Err(super::server_error(code, &message)))?;
                            continue;
                        }
                        Msg::PutReady { offset } => {
                            return Err(Error::protocol(format!(
                                "the server asked to resume at {offset}, which this client did not request"
                            )));
                        }
                        other => return Err(unexpected(&other, "the reply to PUT")),
                    }
                }
                // a reply may come before the data is all sent (a refusal)
                let mut finished = None;
                let reply = tokio::select! {
                    biased;
                    m = r.read_frame() => m?.ok_or_else(|| {
                        Error::network("the server closed the connection during an upload")
                    })?,
                    o = &mut outcome => {
                        finished = Some(o);
                        // the server verifies and syncs before it answers
                        r.expect_within(timeout * 4, "the upload acknowledgement").await?
                    }
                };
                if let Msg::Error { .. } = reply {
                    // stop sending this file if it is still going out
                    refused.fetch_max(p.index + 1, Ordering::AcqRel);
                }
                let sent = match finished {
                    Some(o) => o,
                    None => (&mut outcome).await,
                }
                .map_err(|_| Error::other("internal error: the upload sender stopped"))?;
                let result = match reply {
                    Msg::PutOk {
                        size: got,
                        sha256: theirs,
                        name,
                    } => {
                        match acknowledged(got, &theirs, name, p.size, sent?, p.started) {
                            // a badly named reply breaks the session
                            Err(e) if e.kind == Kind::Protocol => return Err(e),
                            r => r,
                        }
                    }
                    // a local read failure makes the sender cancel: report
                    // that rather than the server's "cancelled"
                    Msg::Error { code, message } => match sent {
                        Err(local)
                            if code == Kind::Other.wire_code() && local.message != REFUSED =>
                        {
                            Err(local)
                        }
                        _ => Err(super::server_error(code, &message)),
                    },
                    other => return Err(unexpected(&other, "the upload acknowledgement")),
                };
                done(p.index, result)?;
            }
            Ok::<(), Error>(())
        };
        // a connection lost while sending: the server may have said why
        // (shutting down, disk full) before it closed, and that reason, read
        // by the receiver, is what the user needs to see
        tokio::pin!(sender, receiver);
        tokio::select! {
            sent = &mut sender => match sent {
                Ok(()) => receiver.await,
                Err(e) if e.kind == Kind::Network => {
                    let _ = receiver.await;
                    Err(e)
                }
                Err(e) => Err(e),
            },
            received = &mut receiver => match received {
                Ok(()) => sender.await,
                Err(e) => Err(e),
            },
        }
    }

    /// Download `jobs` in order over this session, requests sent ahead.
    /// `done` gets each job's result in order; an error it returns stops
    /// everything. Errors that break the session are returned.
    pub async fn get_many(
        &mut self,
        jobs: &[GetJob],
        force: bool,
        progress: &Progress,
        mut done: impl FnMut(usize, Result<Downloaded>) -> Result<()>,
    ) -> Result<()> {
        for j in jobs {
            names::validate(&j.remote)?;
        }
        let compress = if self.zstd {
            self.compress.to_wire()
        } else {
            0
        };
        let (zstd, limit_rate, timeout) = (self.zstd, self.limit_rate, self.timeout);
        let resume = self.resume;
        let (meta, preserve) = (self.meta, self.preserve);
        let window = Arc::new(Semaphore::new(WINDOW));
        let (tx, mut rx) = mpsc::unbounded_channel::<Requested>();
        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Report>();
        let storer = spawn_storer();
        let (r, w) = (&mut self.r, &mut self.w);
        let sender = async {
            for (index, job) in jobs.iter().enumerate() {
                if window.available_permits() == 0 {
                    // the requests queued so far must go out before waiting
                    w.flush().await?;
                }
                let permit = slot(&window).await?;
                // what an interrupted download of the same file left
                let held = match &job.dest {
                    Dest::Path(p) if resume => super::held_part(p),
                    _ => None,
                };
                let Some(part) = held else {
                    w.send(&Msg::Get {
                        offset: 0,
                        compress,
                        name: job.remote.clone(),
                    })
                    .await?;
                    if tx
                        .send(Requested {
                            index,
                            permit,
                            held: None,
                        })
                        .is_err()
                    {
                        break;
                    }
                    continue;
                };
                // resuming: the server's PARTIAL, checked by the receiver,
                // decides the RESUME sent before anything else
                w.send_now(&Msg::Get {
                    offset: part.len,
                    compress,
                    name: job.remote.clone(),
                })
                .await?;
                let (decided, decision) = oneshot::channel();
                let held = Some(Held { part, decided });
                if tx
                    .send(Requested {
                        index,
                        permit,
                        held,
                    })
                    .is_err()
                {
                    break;
                }
                if let Ok(Some(offset)) = decision.await {
                    w.send_now(&Msg::Resume { offset }).await?;
                }
            }
            drop(tx);
            w.flush().await
        };
        let receiver = async {
            let mut pacer = Pacer::new(limit_rate);
            while let Some(Requested {
                index,
                permit,
                held,
            }) = rx.recv().await
            {
                let job = &jobs[index];
                let mut resumed = None;
                if let Some(Held { part, decided }) = held {
                    match r.expect_within(timeout, "the reply to GET").await? {
                        Msg::Partial { offset, sha256 } => {
                            let (part, from) = continue_part(part, offset, sha256).await?;
                            let _ = decided.send(Some(from.len));
                            resumed = Some((part, from));
                        }
                        Msg::Error { code, message } => {
                            let _ = decided.send(None);
                            drop(permit);
                            let _ = report_tx.send(Report::Ready(
                                index,
                                Err(super::server_error(code, &message)),
                            ));
                            continue;
                        }
                        other => return Err(unexpected(&other, "the reply to GET")),
                    }
                }

                let mut reply = r.expect_within(timeout, "the reply to GET").await?;
                // with FEATURE_META, GET_OK comes right after the file's ATTRS
                let mut attrs = None;
                if meta && let Msg::Attrs { mode, mtime_ns } = reply {
                    attrs = Some(protocol::Attrs { mode, mtime_ns });
                    reply = match r.expect_within(timeout, "the reply to GET").await? {
                        m @ Msg::GetOk { .. } => m,
                        other => {
                            return Err(Error::protocol(format!(
                                "the server sent ATTRS followed by {} instead of GET_OK",
                                other.name()
                            )));
                        }
                    };
                }
                let attrs = attrs.filter(|_| preserve);
                let (size, recorded) = match reply {
                    Msg::GetOk { size, sha256, .. } => (size, sha256),
                    Msg::Error { code, message } => {
                        drop(permit);
                        let _ = report_tx.send(Report::Ready(
                            index,
                            Err(super::server_error(code, &message)),
                        ));
                        continue;
                    }
                    other => return Err(unexpected(&other, "the reply to GET")),
                };
                progress.start(&job.remote, size);
                let report = match &job.dest {
                    Dest::Path(dest) if size <= SMALL_DOWNLOAD && resumed.is_none() => {
                        // whole in memory, then stored on the storing thread
                        let started = Instant::now();
                        let got = gather(r, size, &job.remote, zstd, timeout, progress, &mut pacer)
                            .await?;
                        match got {
                            Err(e) => Report::Ready(index, Err(e)),
                            Ok((blocks, sent, wire)) => {
                                let (otx, orx) = oneshot::channel();
                                let store = StoreJob {
                                    dest: dest.clone(),
                                    remote: job.remote.clone(),
                                    blocks,
                                    size,
                                    sent,
                                    recorded,
                                    expect: job.expect,
                                    force,
                                    attrs,
                                    wire,
                                    started,
                                    reply: otx,
                                };
                                if storer.send(store).await.is_err() {
                                    return Err(Error::other(
                                        "internal error: the download storer stopped",
                                    ));
                                }
                                Report::Pending(index, orx)
                            }
                        }
                    }
                    _ => {
                        let r2 = receive_one(
                            r,
                            job,
                            resumed.take(),
                            size,
                            recorded,
                            force,
                            attrs,
                            zstd,
                            timeout,
                            limit_rate,
                            progress,
                        )
                        .await;
                        if let Err(e) = &r2
                            && matches!(e.kind, Kind::Network | Kind::Protocol)
                        {
                            return r2.map(|_| ());
                        }
                        Report::Ready(index, r2)
                    }
                };
                progress.done();
                drop(permit);
                let _ = report_tx.send(report);
            }
            drop(report_tx);
            drop(storer);
            Ok::<(), Error>(())
        };
        let reporter = async {
            while let Some(report) = report_rx.recv().await {
                let (index, result) = match report {
                    Report::Ready(index, r) => (index, r),
                    Report::Pending(index, rx) => (
                        index,
                        rx.await.unwrap_or_else(|_| {
                            Err(Error::other("internal error: the download storer stopped"))
                        }),
                    ),
                };
                done(index, result)?;
            }
            Ok::<(), Error>(())
        };
        tokio::try_join!(sender, receiver, reporter)?;
        Ok(())
    }
}

/// A GET sent, for the receiver: which job, its place in the window, and
/// for a resumed download the part it continues and where to say how.
struct Requested {
    index: usize,
    permit: OwnedSemaphorePermit,
    held: Option<Held>,
}

/// An interrupted download's data, and the channel to the sender for the
/// RESUME offset it decides (None: the GET was refused).
struct Held {
    part: super::Part,
    decided: oneshot::Sender<Option<u64>>,
}

/// A part file positioned where the download goes on: after its first
/// `offset` bytes if they hash to `sha256` (the server's same bytes), else
/// emptied (the server is told to start over).
async fn continue_part(
    part: super::Part,
    offset: u64,
    sha256: [u8; 32],
) -> Result<(super::Part, transfer::Prefix)> {
    tokio::task::spawn_blocking(move || {
        let mut part = part;
        let shown = part.path.display().to_string();
        let from = match transfer::hash_prefix(&mut part.file, offset.min(part.len), &shown) {
            Ok(p) if p.len == offset && transfer::same_digest(&p.digest(), &sha256) => p,
            _ => transfer::Prefix::none(),
        };
        // the part ends where the download goes on
        part.file
            .set_len(from.len)
            .map_err(|e| Error::io(format!("writing {shown}"), &e))?;
        use std::io::Seek;
        part.file
            .seek(std::io::SeekFrom::Start(from.len))
            .map_err(|e| Error::io(format!("writing {shown}"), &e))?;
        part.len = from.len;
        Ok((part, from))
    })
    .await
    .map_err(|e| Error::other(format!("internal error: {e}")))?
}

/// Downloads up to this size are gathered in memory and stored in one step.
const SMALL_DOWNLOAD: u64 = 1 << 20;

/// Small downloads received but not yet stored; bounds the memory they hold.
const STORE_QUEUE: usize = 8;

/// A download's result, in the order of the requests.
enum Report {
    Ready(usize, Result<Downloaded>),
    /// Being stored by the storing thread.
    Pending(usize, oneshot::Receiver<Result<Downloaded>>),
}

/// A small download, whole in memory, for the storing thread.
struct StoreJob {
    dest: PathBuf,
    remote: String,
    blocks: Vec<transfer::Block>,
    size: u64,
    /// The SHA-256 in END.
    sent: [u8; 32],
    /// The SHA-256 recorded at upload (GET_OK).
    recorded: Option<[u8; 32]>,
    /// The SHA-256 the file must have (--sha256, --check).
    expect: Option<[u8; 32]>,
    force: bool,
    /// Mode and mtime to give the file (ATTRS, unless --no-preserve).
    attrs: Option<protocol::Attrs>,
    wire: u64,
    started: Instant,
    reply: oneshot::Sender<Result<Downloaded>>,
}

/// One blocking thread that stores small downloads in order: decode, hash
/// and write each to a `.part` file, check it, rename it into place.
fn spawn_storer() -> mpsc::Sender<StoreJob> {
    let (tx, mut rx) = mpsc::channel::<StoreJob>(STORE_QUEUE);
    tokio::task::spawn_blocking(move || {
        while let Some(job) = rx.blocking_recv() {
            let r = store_small(&job);
            let _ = job.reply.send(r);
        }
    });
    tx
}

fn store_small(job: &StoreJob) -> Result<Downloaded> {
    use sha2::Digest;
    use std::io::Write;
    let (part, file) = super::create_part(&job.dest)?;
    let shown = part.display().to_string();
    let written = (|| {
        let mut decoder = crate::compress::Decoder::new();
        let mut buf = Vec::new();
        let mut h = sha2::Sha256::new();
        let mut n: u64 = 0;
        let mut out = &file;
        for b in &job.blocks {
            let data: &[u8] =
                if b.encoding == Encoding::Raw && b.payload.len() == b.raw_len as usize {
                    &b.payload
                } else {
                    decoder.decode(b.encoding, b.raw_len, &b.payload, &mut buf)?;
                    &buf
                };
            h.update(data);
            out.write_all(data)
                .map_err(|e| Error::io(format!("writing {shown}"), &e))?;
            n += data.len() as u64;
        }
        let digest: [u8; 32] = h.finalize().into();
        verify_download(
            &job.remote,
            n,
            job.size,
            &digest,
            &job.sent,
            job.recorded,
            job.expect,
            "the file was not saved",
        )?;
        if let Some(a) = job.attrs {
            super::apply_attrs(&file, a, &shown)?;
        }
        Ok(digest)
    })();
    drop(file);
    let placed = written
        .and_then(|digest| super::place(&part, &job.dest, job.force).map(|path| (path, digest)));
    match placed {
        Ok((path, sha256)) => Ok(Downloaded {
            path,
            size: job.size,
            sha256,
            wire: job.wire,
            resumed: 0,
            seconds: job.started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The DATA of a small download up to END, in memory: (blocks, the digest
/// sent, wire bytes). `Ok(Err)`: the server replied ERROR instead (the
/// session goes on); `Err`: the session cannot.
async fn gather(
    r: &mut FrameReader<ReadHalf<Stream>>,
    size: u64,
    remote: &str,
    zstd: bool,
    timeout: std::time::Duration,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<Result<(Vec<transfer::Block>, [u8; 32], u64)>> {
    let mut blocks = Vec::new();
    let mut count = Counted::default();
    let want = Want { size, remote, zstd };
    loop {
        match next_block(r, timeout, &want, &mut count, progress, pacer).await? {
            Downloading::Data(block) => {
                // compressed payloads are bounded too, not only their raw sizes
                if count.wire > 2 * SMALL_DOWNLOAD + 65536 {
                    return Err(want.too_much());
                }
                blocks.push(block);
            }
            Downloading::End(sha256) => {
                count.check_end(size)?;
                return Ok(Ok((blocks, sha256, count.wire)));
            }
            Downloading::Refused(e) => return Ok(Err(e)),
        }
    }
}

/// A download checked three ways: the digest in END, the one recorded at
/// upload, and the expected one. `saved` says what became of the data.
#[allow(clippy::too_many_arguments)]
fn verify_download(
    remote: &str,
    n: u64,
    size: u64,
    digest: &[u8; 32],
    sent: &[u8; 32],
    recorded: Option<[u8; 32]>,
    expect: Option<[u8; 32]>,
    saved: &str,
) -> Result<()> {
    if n != size {
        return Err(Error::protocol(format!(
            "the server sent {n} bytes but announced {size}"
        )));
    }
    // (the digest it must match, how to say "X but Y")
    let checks = [
        (
            Some(*sent),
            "the server sent",
            "the data received hashes to",
        ),
        (recorded, "recorded at upload as", "received"),
        (expect, "expected", "the file is"),
    ];
    for (want, said, got) in checks {
        if let Some(want) = want
            && !transfer::same_digest(digest, &want)
        {
            return Err(Error::integrity(format!(
                "SHA-256 mismatch for {}: {said} {} but {got} {}; {saved}",
                names::quote(remote),
                hex::encode(want),
                hex::encode(digest)
            )));
        }
    }
    Ok(())
}

/// Frames of a stream of unknown length (a pipe): raw DATA frames of up to
/// 256 KiB, read and hashed on a blocking thread; then its size and digest.
enum StreamItem {
    Frame(Vec<u8>),
    Done { size: u64, sha256: [u8; 32] },
    Failed(Error),
}

fn spawn_stream_reader(
    mut input: impl std::io::Read + Send + 'static,
    what: String,
) -> mpsc::Receiver<StreamItem> {
    use sha2::Digest;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        const CHUNK: usize = 256 * 1024;
        let off = protocol::HEADER_LEN + protocol::DATA_PREFIX_LEN;
        let mut h = sha2::Sha256::new();
        let mut total: u64 = 0;
        loop {
            let mut frame = vec![0u8; off + CHUNK];
            let mut got = 0;
            while got < CHUNK {
                match input.read(&mut frame[off + got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(StreamItem::Failed(Error::io(
                            format!("reading {what}"),
                            &e,
                        )));
                        return;
                    }
                }
            }
            if got == 0 {
                let _ = tx.blocking_send(StreamItem::Done {
                    size: total,
                    sha256: h.finalize().into(),
                });
                return;
            }
            frame.truncate(off + got);
            h.update(&frame[off..]);
            total += got as u64;
            frame[..off].copy_from_slice(&protocol::data_header(Encoding::Raw, got as u32, got));
            if tx.blocking_send(StreamItem::Frame(frame)).is_err() {
                return;
            }
        }
    });
    rx
}

impl Client {
    /// Upload a stream of unknown length (standard input) as `remote`; the
    /// server reserves space in steps and stops the upload cleanly when the
    /// next step does not fit.
    pub async fn put_stream(
        &mut self,
        input: impl std::io::Read + Send + 'static,
        remote: &str,
        overwrite: bool,
        progress: &Progress,
    ) -> Result<Uploaded> {
        names::validate(remote)?;
        let flags = protocol::PUT_STREAM
            | if overwrite {
                protocol::PUT_OVERWRITE
            } else {
                0
            };
        self.w
            .send_now(&Msg::Put {
                size: 0,
                flags,
                name: remote.to_string(),
            })
            .await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to PUT")
            .await?
        {
            Msg::PutReady { offset: 0 } => {}
            other => return Err(unexpected(&other, "the reply to PUT")),
        }
        let started = Instant::now();
        progress.start(remote, 0);
        let mut frames = spawn_stream_reader(input, "standard input".into());
        let mut pacer = Pacer::new(self.limit_rate);
        let mut wire = 0u64;
        let (size, sha256) = loop {
            tokio::select! {
                biased;
                m = self.r.read_frame() => {
                    let err = match m? {
                        Some(other) => unexpected(&other, "the end of the upload"),
                        None => Error::network("the server closed the connection during the upload"),
                    };
                    let _ = self.w.send_now(&Msg::Cancel).await;
                    progress.done();
                    return Err(err);
                }
                item = frames.recv() => match item {
                    Some(StreamItem::Frame(f)) => {
                        self.w.write_raw(&f).await?;
                        wire += f.len() as u64;
                        let raw = frame_raw_len(&f);
                        progress.advance(raw);
                        pacer.pace(raw).await;
                    }
                    Some(StreamItem::Done { size, sha256 }) => {
                        self.w.send_now(&Msg::End { sha256 }).await?;
                        break (size, sha256);
                    }
                    Some(StreamItem::Failed(e)) => {
                        self.w.send_now(&Msg::Cancel).await?;
                        let _ = self.r.expect_within(self.timeout, "the reply to CANCEL").await;
                        progress.done();
                        return Err(e);
                    }
                    None => return Err(Error::other("internal error: the stream reader stopped")),
                },
            }
        };
        progress.done();
        match self
            .r
            .expect_within(self.timeout * 4, "the upload acknowledgement")
            .await?
        {
            Msg::PutOk {
                size: got,
                sha256: theirs,
                name,
            } => acknowledged(
                got,
                &theirs,
                name,
                size,
                Sent {
                    sha256,
                    wire,
                    resumed: 0,
                },
                started,
            ),
            other => Err(unexpected(&other, "the upload acknowledgement")),
        }
    }
}

/// The local file, positioned where the upload goes on: after its first
/// `offset` bytes if they hash to `sha256` (what the server holds of an
/// earlier attempt), else at its start (the server is told to start over).
async fn same_prefix(
    file: File,
    offset: u64,
    sha256: [u8; 32],
    local: &Path,
) -> Result<(File, transfer::Prefix)> {
    let shown = local.display().to_string();
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        match transfer::hash_prefix(&mut file, offset, &shown) {
            Ok(p) if transfer::same_digest(&p.digest(), &sha256) => Ok((file, p)),
            _ => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| Error::io(format!("reading {shown}"), &e))?;
                Ok((file, transfer::Prefix::none()))
            }
        }
    })
    .await
    .map_err(|e| Error::other(format!("internal error: {e}")))?
}

/// Stream one file's DATA and END (or CANCEL when `stop` says the server
/// refused it, or the file could not be read). Ok: its digest and wire bytes.
#[allow(clippy::too_many_arguments)]
async fn send_file(
    w: &mut FrameWriter<WriteHalf<Stream>>,
    file: File,
    from: transfer::Prefix,
    size: u64,
    local: &Path,
    policy: Policy,
    limit_rate: Option<u64>,
    progress: &Progress,
    stop: impl Fn() -> bool,
) -> Result<Result<Sent>> {
    let pool = transfer::Pool::new();
    let resumed = from.len;
    let mut frames = transfer::spawn_reader(
        file,
        size.saturating_sub(from.len),
        local.display().to_string(),
        pool.clone(),
        policy,
        from,
    );
    let mut pacer = Pacer::new(limit_rate);
    let mut wire = 0u64;
    loop {
        if stop() {
            w.send_now(&Msg::Cancel).await?;
            return Ok(Err(Error::other(REFUSED)));
        }
        match frames.recv().await {
            Some(Outgoing::Frame(f)) => {
                w.write_raw(&f).await?;
                wire += f.len() as u64;
                let raw = frame_raw_len(&f);
                progress.advance(raw);
                pacer.pace(raw).await;
                pool.give(f);
            }
            Some(Outgoing::Done { sha256, .. }) => {
                w.send_now(&Msg::End { sha256 }).await?;
                return Ok(Ok(Sent {
                    sha256,
                    wire,
                    resumed,
                }));
            }
            Some(Outgoing::Failed(e)) => {
                w.send_now(&Msg::Cancel).await?;
                return Ok(Err(e));
            }
            None => {
                w.send_now(&Msg::Cancel).await?;
                return Ok(Err(Error::other("internal error: the file reader stopped")));
            }
        }
    }
}

/// Receive one download announced by GET_OK and check it three ways: the
/// digest in END, the one recorded at upload, and the expected one.
#[allow(clippy::too_many_arguments)]
async fn receive_one(
    r: &mut FrameReader<ReadHalf<Stream>>,
    job: &GetJob,
    resumed: Option<(super::Part, transfer::Prefix)>,
    size: u64,
    recorded: Option<[u8; 32]>,
    force: bool,
    attrs: Option<protocol::Attrs>,
    zstd: bool,
    timeout: std::time::Duration,
    limit_rate: Option<u64>,
    progress: &Progress,
) -> Result<Downloaded> {
    let started = Instant::now();
    let mut from = transfer::Prefix::none();
    let (part, file) = match (&job.dest, resumed) {
        (Dest::Path(_), Some((held, prefix))) => {
            from = prefix;
            (Some(held.path), held.file)
        }
        (Dest::Path(p), None) => match super::create_part(p) {
            Ok((part, f)) => (Some(part), f),
            Err(e) => {
                // keep the session in step: the data is coming regardless
                drain_download(r, timeout).await?;
                return Err(e);
            }
        },
        (Dest::Stdout, _) => {
            use std::os::fd::AsFd;
            match std::io::stdout().as_fd().try_clone_to_owned() {
                Ok(fd) => (None, File::from(fd)),
                Err(e) => {
                    drain_download(r, timeout).await?;
                    return Err(Error::io("writing to stdout", &e));
                }
            }
        }
    };
    let shown = part
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdout".into());
    let resumable = |p: &&PathBuf| p.extension().is_some_and(|e| e == "sft-part");
    let _moving = part.as_ref().filter(resumable).map(|p| {
        super::moving::mark(super::moving::Moving::Down {
            remote: job.remote.clone(),
            part: p.clone(),
        })
    });
    let resumed_len = from.len;
    // a second handle on a `.part` file, to give it its metadata once written
    let keep = match (&part, attrs) {
        (Some(p), Some(a)) => match file.try_clone() {
            Ok(f) => Some((f, a)),
            Err(e) => {
                let _ = std::fs::remove_file(p);
                drain_download(r, timeout).await?;
                return Err(Error::io(format!("opening {shown}"), &e));
            }
        },
        _ => None,
    };
    let result = receive_data(
        r,
        file,
        from,
        size,
        &job.remote,
        &shown,
        zstd,
        timeout,
        limit_rate,
        progress,
    )
    .await;
    let checked = result.and_then(|(n, digest, sent, wire)| {
        let saved = if part.is_some() {
            "the file was not saved"
        } else {
            "the data written to stdout is bad"
        };
        verify_download(
            &job.remote,
            n,
            size,
            &digest,
            &sent,
            recorded,
            job.expect,
            saved,
        )?;
        if let Some((f, a)) = &keep {
            super::apply_attrs(f, *a, &shown)?;
        }
        Ok((digest, wire))
    });
    let (sha256, wire) = match checked {
        Ok(x) => x,
        Err(e) => {
            // a lost connection keeps the part for resuming; bad data does not
            if let Some(p) = &part
                && e.kind != Kind::Network
            {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let path = match (&part, &job.dest) {
        (Some(part), Dest::Path(dest)) => match super::place(part, dest, force) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(part);
                return Err(e);
            }
        },
        _ => PathBuf::from("-"),
    };
    Ok(Downloaded {
        path,
        size,
        sha256,
        wire,
        resumed: resumed_len,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// DATA frames into `file` until END: (bytes, their digest, the digest the
/// server sent, wire bytes).
#[allow(clippy::too_many_arguments)]
async fn receive_data(
    r: &mut FrameReader<ReadHalf<Stream>>,
    file: File,
    from: transfer::Prefix,
    size: u64,
    remote: &str,
    shown: &str,
    zstd: bool,
    timeout: std::time::Duration,
    limit_rate: Option<u64>,
    progress: &Progress,
) -> Result<(u64, [u8; 32], [u8; 32], u64)> {
    // a resumed download brings the rest of the file after what is held
    let want = Want {
        size: size.saturating_sub(from.len),
        remote,
        zstd,
    };
    progress.advance(from.len);
    let (tx, writer) = transfer::spawn_writer(file, shown.to_string(), false, r.pool(), from);
    let mut count = Counted::default();
    let mut pacer = Pacer::new(limit_rate);
    let sent = loop {
        match next_block(r, timeout, &want, &mut count, progress, &mut pacer).await? {
            Downloading::Data(block) => {
                if tx.send(block).await.is_err() {
                    drop(tx);
                    // a local write failure: the rest of this download must
                    // still be read to keep the session in step
                    let err = match writer.await {
                        Ok(Err(e)) => e,
                        _ => Error::other("internal error: the download writer stopped"),
                    };
                    drain_download(r, timeout).await?;
                    return Err(err);
                }
            }
            Downloading::End(sha256) => break sha256,
            Downloading::Refused(e) => return Err(e),
        }
    };
    drop(tx);
    let (n, digest, _) = writer
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))??;
    Ok((n, digest, sent, count.wire))
}

/// What a download announced: its size, its name, whether zstd was agreed.
struct Want<'a> {
    size: u64,
    remote: &'a str,
    zstd: bool,
}

impl Want<'_> {
    fn too_much(&self) -> Error {
        Error::protocol(format!(
            "the server sent more than the {} bytes it announced for {}",
            self.size,
            names::quote(self.remote)
        ))
    }
}

/// Bytes of a download so far: of the file, and on the wire.
#[derive(Default)]
struct Counted {
    received: u64,
    wire: u64,
}

impl Counted {
    fn check_end(&self, size: u64) -> Result<()> {
        if self.received != size {
            return Err(Error::protocol(format!(
                "the server sent {} bytes but announced {size}",
                self.received
            )));
        }
        Ok(())
    }
}

/// One step of a download.
enum Downloading {
    Data(transfer::Block),
    End([u8; 32]),
    /// The server's ERROR in place of the rest (the session goes on).
    Refused(Error),
}

/// The next frame of a download, checked (an encoding that was agreed, no
/// more than the announced size), counted, shown and paced: the one reader
/// of download frames for small and large files alike.
async fn next_block(
    r: &mut FrameReader<ReadHalf<Stream>>,
    timeout: std::time::Duration,
    want: &Want<'_>,
    count: &mut Counted,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<Downloading> {
    match r.expect_within(timeout, "download data").await? {
        Msg::Data {
            encoding,
            raw_len,
            payload,
        } => {
            if encoding != Encoding::Raw && !want.zstd {
                return Err(Error::protocol(
                    "the server sent compressed data that was not negotiated",
                ));
            }
            count.wire += (protocol::HEADER_LEN + protocol::DATA_PREFIX_LEN + payload.len()) as u64;
            count.received += u64::from(raw_len);
            if count.received > want.size {
                return Err(want.too_much());
            }
            progress.advance(u64::from(raw_len));
            pacer.pace(u64::from(raw_len)).await;
            Ok(Downloading::Data(transfer::Block {
                encoding,
                raw_len,
                payload,
            }))
        }
        Msg::End { sha256 } => Ok(Downloading::End(sha256)),
        Msg::Error { code, message } => {
            Ok(Downloading::Refused(super::server_error(code, &message)))
        }
        other => Err(unexpected(&other, "download data")),
    }
}

/// Read and drop the rest of a download up to its END (or ERROR).
async fn drain_download(
    r: &mut FrameReader<ReadHalf<Stream>>,
    timeout: std::time::Duration,
) -> Result<()> {
    loop {
        match r.expect_within(timeout, "download data").await? {
            Msg::Data { .. } => {}
            Msg::End { .. } | Msg::Error { .. } => return Ok(()),
            other => return Err(unexpected(&other, "download data")),
        }
    }
}
