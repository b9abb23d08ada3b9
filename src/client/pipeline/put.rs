//! Uploads of many files over one session: opened ahead on a blocking
//! thread, small ones pipelined, large ones after PUT_READY (or resumed
//! after PARTIAL), replies read alongside.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::WriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{PIPELINE_BELOW, PUT_WINDOW, PutJob, REFUSED, Sent, acknowledged, slot};
use crate::client::{Client, Pacer, Stream, Uploaded, frame_raw_len, unexpected};
use crate::compress::{Link, Mode, Policy};
use crate::connection::FrameWriter;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{self, Msg};
use crate::transfer::{self, Outgoing};

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

/// What answered a PUT that waits for its reply before sending data.
enum Ready {
    /// PUT_READY: send the data from the first byte.
    Go,
    /// PARTIAL: the server holds this many bytes of an earlier attempt.
    Partial { offset: u64, sha256: [u8; 32] },
    /// ERROR: nothing is to be sent.
    Refused,
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
    Ok((file, meta.len(), crate::client::local_attrs(&meta)))
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
    link: Link,
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
                    let policy = Policy::new(mode, crate::compress::MAX_LEVEL).on_link(link);
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
        let (limit_rate, timeout, link) = (self.limit_rate, self.timeout, self.link());
        let window = Arc::new(Semaphore::new(PUT_WINDOW));
        // jobs with an index below this were refused by the server: stop sending them
        let refused = AtomicUsize::new(0);
        let (tx, mut rx) = mpsc::unbounded_channel::<SentPut>();
        let (r, w) = (&mut self.r, &mut self.w);

        let preserve = self.meta && self.preserve;
        let bye_after = self.bye_after_puts;
        let bye_queued = std::sync::atomic::AtomicBool::new(false);
        let mut prepared = spawn_preparer(jobs.to_vec(), base_flags, mode, link, preserve);
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
                let policy = || Policy::new(mode, crate::compress::MAX_LEVEL).on_link(link);
                // its first blocks are read (and compressed) while PUT_READY
                // is on its way, from a handle of their own: what PARTIAL
                // needs keeps `file` at its start
                let ahead = File::open(&job.local).ok().map(|f| {
                    let pool = transfer::Pool::new();
                    let frames = transfer::spawn_reader(
                        f,
                        size,
                        job.local.display().to_string(),
                        pool.clone(),
                        policy(),
                        transfer::Prefix::none(),
                    );
                    (pool, frames)
                });
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
                let (file, from, ahead) = match ready_rx.await.unwrap_or(Ready::Refused) {
                    Ready::Refused => {
                        // refused before any data: nothing to send (what
                        // was read ahead is dropped, its reader stops)
                        let _ = otx.send(Err(Error::other(REFUSED)));
                        continue;
                    }
                    Ready::Go => (file, transfer::Prefix::none(), ahead),
                    Ready::Partial { offset, sha256 } => {
                        // go on only after a prefix that is the same here
                        drop(ahead);
                        let (file, from) = same_prefix(file, offset, sha256, &job.local).await?;
                        w.send_now(&Msg::Resume { offset: from.len }).await?;
                        (file, from, None)
                    }
                };
                progress.start(&job.remote, size);
                progress.advance(from.len);
                let _moving = (resume_flag != 0).then(|| {
                    crate::client::moving::mark(crate::client::moving::Moving::Up {
                        remote: job.remote.clone(),
                    })
                });
                let src = Source {
                    file,
                    from,
                    size,
                    local: &job.local,
                    ahead,
                };
                let r = send_file(w, src, policy(), limit_rate, progress, || {
                    refused.load(Ordering::Acquire) > index
                })
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
            if bye_after {
                // the server ends the session after the last reply
                w.send(&Msg::Bye).await?;
                bye_queued.store(true, Ordering::Release);
            }
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
                            done(p.index, Err(crate::client::server_error(code, &message)))?;
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
                        _ => Err(crate::client::server_error(code, &message)),
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
        let result = tokio::select! {
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
        };
        self.bye_sent |= bye_queued.load(Ordering::Acquire);
        result
    }
}
/// The local file, positioned where the upload goes on: after its first
/// `offset` bytes if they hash to `sha256` (what the server holds of an
/// earlier attempt), else at its start (the server is told to start over).
pub(in crate::client) async fn same_prefix(
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

/// What an upload sends: the open file of `size` bytes, from the end of
/// the prefix the server already holds.
struct Source<'a> {
    file: File,
    from: transfer::Prefix,
    size: u64,
    local: &'a Path,
    /// The whole file's frames, already being read (from its first byte).
    ahead: Option<(transfer::Pool, tokio::sync::mpsc::Receiver<Outgoing>)>,
}

/// Stream one file's DATA and END (or CANCEL when `stop` says the server
/// refused it, or the file could not be read). Ok: its digest and wire bytes.
async fn send_file(
    w: &mut FrameWriter<WriteHalf<Stream>>,
    src: Source<'_>,
    policy: Policy,
    limit_rate: Option<u64>,
    progress: &Progress,
    stop: impl Fn() -> bool,
) -> Result<Result<Sent>> {
    let Source {
        file,
        from,
        size,
        local,
        ahead,
    } = src;
    let resumed = from.len;
    let (pool, mut frames) = match ahead {
        Some(a) if from.len == 0 => a,
        _ => {
            let pool = transfer::Pool::new();
            let frames = transfer::spawn_reader(
                file,
                size.saturating_sub(from.len),
                local.display().to_string(),
                pool.clone(),
                policy,
                from,
            );
            (pool, frames)
        }
    };
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
