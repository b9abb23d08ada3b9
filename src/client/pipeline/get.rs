//! Downloads of many files over one session: GETs sent ahead, replies
//! taken in order, interrupted downloads resumed from their part files.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::receive::{Expected, Receiving, receive_one};
use super::small::{SMALL_DOWNLOAD, StoreJob, gather, spawn_storer};
use super::{Dest, GetJob, WINDOW, slot};
use crate::client::{Client, Downloaded, Pacer, unexpected};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{self, Msg};
use crate::transfer;

impl Client {
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
                    Dest::Path(p) if resume => crate::client::held_part(p),
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
            // a GET the server refused: its ERROR is its result, and its
            // place in the window is free
            let refused = |index: usize, permit: OwnedSemaphorePermit, code: u16, message: &str| {
                drop(permit);
                let _ = report_tx.send(Report::Ready(
                    index,
                    Err(crate::client::server_error(code, message)),
                ));
            };
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
                            refused(index, permit, code, &message);
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
                        refused(index, permit, code, &message);
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
                        let want = Expected {
                            size,
                            recorded,
                            expect: job.expect,
                        };
                        let how = Receiving {
                            zstd,
                            timeout,
                            limit_rate,
                            progress,
                        };
                        let r2 =
                            receive_one(r, job, resumed.take(), want, (force, attrs), &how).await;
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
    part: crate::client::Part,
    decided: oneshot::Sender<Option<u64>>,
}

/// A part file positioned where the download goes on: after its first
/// `offset` bytes if they hash to `sha256` (the server's same bytes), else
/// emptied (the server is told to start over).
async fn continue_part(
    part: crate::client::Part,
    offset: u64,
    sha256: [u8; 32],
) -> Result<(crate::client::Part, transfer::Prefix)> {
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

/// A download's result, in the order of the requests.
enum Report {
    Ready(usize, Result<Downloaded>),
    /// Being stored by the storing thread.
    Pending(usize, oneshot::Receiver<Result<Downloaded>>),
}
