//! PUT: streamed uploads, small ones gathered in memory, pipelined ones
//! queued for the committer; every way an upload ends is answered once.

use super::*;

impl Session {
    /// `upload_frame` for the upload of `name`: an upload cut off
    /// (connection lost, data timeout, shutdown) leaves its audit line.
    pub(super) async fn next_upload_frame(
        &mut self,
        name: &str,
        received: u64,
    ) -> Result<UploadFrame> {
        let r = self.upload_frame().await;
        if let Err(e) = &r {
            info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(name), received, outcome = "aborted", "{e}");
        }
        r
    }

    /// The next frame of an upload. Anything but DATA, END or CANCEL,
    /// compressed DATA that was not negotiated, the data timeout, and the end
    /// of the shutdown grace period (the client is told) end the session.
    /// DATA frames that carry no bytes are no progress: they are dropped and
    /// the data deadline keeps running, so they cannot hold an upload open.
    pub(super) async fn upload_frame(&mut self) -> Result<UploadFrame> {
        let mut abort = self.shared.abort.clone();
        let limit = self.shared.limits.data;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::select! {
                biased;
                _ = abort.wait_for(|a| *a) => None,
                m = self.r.expect_within(left, "upload data") => Some(m),
            };
            let Some(next) = next else {
                return self.aborted("upload").await.map(|()| UploadFrame::Cancel);
            };
            return match next? {
                Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                } => {
                    if encoding != Encoding::Raw && !self.zstd {
                        return Err(Error::protocol(
                            "compressed DATA was not negotiated for this session",
                        ));
                    }
                    if raw_len == 0 {
                        continue;
                    }
                    Ok(UploadFrame::Data(transfer::Block {
                        encoding,
                        raw_len,
                        payload,
                    }))
                }
                Msg::End { sha256 } => Ok(UploadFrame::End(sha256)),
                Msg::Cancel => Ok(UploadFrame::Cancel),
                other => Err(Error::protocol(format!(
                    "unexpected {} during an upload",
                    other.name()
                ))),
            };
        }
    }

    /// Read and drop the DATA of an upload refused before it started (a
    /// pipelined PUT sends its data without waiting), up to END or CANCEL.
    pub(super) async fn discard_upload(&mut self) -> Result<()> {
        while let UploadFrame::Data(_) = self.upload_frame().await? {}
        Ok(())
    }

    /// The one reply to an upload that reached END or CANCEL, with its audit line.
    pub(super) async fn finish_put(
        &mut self,
        name: &str,
        size: u64,
        started: Instant,
        outcome: Result<Stored>,
        flush: bool,
    ) -> Result<()> {
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Stored {
                name: stored,
                sha256: digest,
                size,
            }) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&stored), size, sha256 = %hex::encode(digest), seconds = secs, outcome = "ok");
                self.w
                    .send(&Msg::PutOk {
                        size,
                        sha256: digest,
                        name: stored,
                    })
                    .await?;
            }
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(name), size, outcome = e.kind.name(), "{e}");
                self.w
                    .send(&Msg::Error {
                        code: e.kind.wire_code(),
                        message: e.message.clone(),
                    })
                    .await?;
            }
        }
        if flush { self.w.flush().await } else { Ok(()) }
    }

    /// Make a verified streamed upload visible (synced, renamed, its owner,
    /// digest and metadata recorded) and settle its reservation.
    pub(super) async fn publish(
        &self,
        v: commit::Verified,
        overwrite: bool,
        attrs: Option<Attrs>,
        reservation: crate::server::quota::Reservation,
    ) -> Result<Stored> {
        let owner = self.user().to_string();
        let (sha256, size) = (v.sha256, v.size);
        let name = self
            .blocking(move |s| {
                let published = s.store.commit(
                    v.upload,
                    &v.sha256,
                    overwrite,
                    &owner,
                    attrs,
                    reservation.ids(),
                )?;
                reservation.commit(v.size, published.replaced.as_ref());
                Ok(published.name)
            })
            .await?;
        Ok(Stored { name, sha256, size })
    }

    /// A refusal before the upload started: the one reply, and for a
    /// pipelined PUT the data that is already on its way is discarded.
    pub(super) async fn refuse_put(&mut self, e: &Error, pipelined: bool) -> Result<()> {
        self.reply_error(e).await?;
        if pipelined {
            self.discard_upload().await?;
        }
        Ok(())
    }

    /// Offer the kept data of an interrupted upload (PARTIAL) and read the
    /// client's RESUME: go on after it, or (offset 0) start over.
    pub(super) async fn offer_partial(
        &mut self,
        prefix: transfer::Prefix,
        name: &str,
    ) -> Result<transfer::Prefix> {
        self.w
            .send_now(&Msg::Partial {
                offset: prefix.len,
                sha256: prefix.digest(),
            })
            .await?;
        let limit = self.shared.limits.data;
        match self.r.expect_within(limit, "RESUME").await? {
            Msg::Resume { offset } if offset == prefix.len => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(name), offset, outcome = "resumed", "resuming after {offset} bytes already held");
                Ok(prefix)
            }
            Msg::Resume { offset: 0 } => Ok(transfer::Prefix::none()),
            Msg::Resume { offset } => Err(Error::protocol(format!(
                "RESUME at {offset}: only 0 or the offered {} can be answered to PARTIAL",
                prefix.len
            ))),
            other => Err(Error::protocol(format!(
                "expected RESUME after PARTIAL, not {}",
                other.name()
            ))),
        }
    }

    /// An upload cut off before its END: if it asked to be resumable, keep
    /// what was written (and the space reserved for it) for the next try.
    async fn keep_partial(
        &mut self,
        key: Option<partial::Key>,
        upload: crate::server::store::Upload,
        reservation: crate::server::quota::Reservation,
        writer: Option<tokio::task::JoinHandle<transfer::WriteResult>>,
    ) {
        let (Some(key), Some(writer)) = (key, writer) else {
            return;
        };
        // everything received is written before the file is kept
        let Ok(Ok((len, _, _))) = writer.await else {
            return;
        };
        self.keep_held(key, upload, reservation, len).await;
    }

    /// Keep the first `len` bytes of an interrupted upload's file (the rest
    /// is cut off) and the space reserved for it, for the next try.
    pub(super) async fn keep_held(
        &mut self,
        key: partial::Key,
        upload: crate::server::store::Upload,
        reservation: crate::server::quota::Reservation,
        len: u64,
    ) {
        let name = key.name.clone();
        let kept = self
            .blocking(move |s| {
                let mut upload = upload;
                upload
                    .file
                    .set_len(len)
                    .map_err(|e| Error::io("keeping an interrupted upload", &e))?;
                s.store.keep_upload(&mut upload)?;
                let kept = partial::Kept {
                    upload,
                    reservation,
                    len,
                    since: Instant::now(),
                };
                Ok(s.partials.keep(key, kept))
            })
            .await;
        if let Ok(true) = kept {
            info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), kept = len, outcome = "kept", "interrupted after {len} bytes; kept for resuming (--keep-partial)");
        }
    }

    pub(super) async fn put(
        &mut self,
        size: u64,
        flags: u32,
        name: String,
        attrs: Option<Attrs>,
    ) -> Result<()> {
        let pipelined = flags & protocol::PUT_PIPELINED != 0;
        let stream = flags & protocol::PUT_STREAM != 0;
        let resume = flags & protocol::PUT_RESUME != 0;
        let known = protocol::PUT_OVERWRITE
            | protocol::PUT_PIPELINED
            | protocol::PUT_STREAM
            | protocol::PUT_RESUME;
        if flags & !known != 0 {
            let e = Error::protocol(format!("unknown PUT flags 0x{flags:08x}"));
            return self.refuse_put(&e, pipelined).await;
        }
        if stream && size != 0 {
            let e = Error::protocol("a PUT of unknown size (STREAM flag) must declare size 0");
            return self.refuse_put(&e, pipelined).await;
        }
        if resume && (pipelined || stream) {
            let e = Error::protocol("the RESUME flag cannot be combined with PIPELINED or STREAM");
            return self.refuse_put(&e, pipelined).await;
        }
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        // small files are gathered in memory and written in one step
        let small = !stream && size <= SMALL_UPLOAD;
        // what a resumable upload is kept under if it is cut off
        let key = (resume && !small).then(|| partial::Key {
            user: self.user().to_string(),
            name: name.clone(),
            size,
            overwrite,
        });
        let n = name.clone();
        let who = self.identity();
        let wanted = key.clone();
        let (upload, mut reservation, held) = match self
            .blocking(move |s| {
                if let Some(k) = &wanted
                    && let Some(kept) = s.partials.take(k)
                {
                    // the data of an earlier attempt, and the space held for it
                    let partial::Kept {
                        mut upload,
                        reservation,
                        len,
                        ..
                    } = kept;
                    let prefix = s.store.resume_upload(&mut upload, len);
                    return Ok((Some(upload), reservation, prefix.ok()));
                }
                // space is reserved before a single data byte is accepted
                let reservation = commit::reserve(s, &who, &n, size, overwrite, stream)?;
                if small {
                    // the file itself is made at END, in one step
                    return Ok((None, reservation, None));
                }
                Ok((Some(s.store.begin_upload(&n)?), reservation, None))
            })
            .await
        {
            Ok(u) => u,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                return self.refuse_put(&e, pipelined).await;
            }
        };
        let mut from = transfer::Prefix::none();
        match held {
            Some(prefix) => {
                // PARTIAL, then the client's RESUME decides where to go on
                from = self.offer_partial(prefix, &name).await?;
            }
            None if !pipelined => self.w.send_now(&Msg::PutReady { offset: 0 }).await?,
            None => {}
        }
        let Some(upload) = upload else {
            return self
                .put_small(size, overwrite, name, reservation, attrs)
                .await;
        };
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let mut upload = upload;
        if from.len == 0 {
            // nothing kept, or the client starts over: from the first byte
            start_over(&upload.file).map_err(|e| Error::io("restarting an upload", &e))?;
            // on the object store, parts go out while the data arrives
            self.shared.store.follow_upload(&mut upload)?;
        }
        let writer_file = upload
            .file
            .try_clone()
            .map_err(|e| Error::io("duplicating upload file", &e))?;
        let started = Instant::now();
        let background_sync = self.shared.store.fsync == crate::server::store::Fsync::Always;
        let pool = self.r.pool();
        let (tx, writer) = match upload.ship.as_ref().map(|s| s.pace()) {
            // on the object store: held while the parts before are sent
            Some(pace) => transfer::spawn_writer_paced(
                writer_file,
                names::quote(&name),
                background_sync,
                pool,
                from.clone(),
                pace,
            ),
            None => transfer::spawn_writer_within(
                writer_file,
                names::quote(&name),
                background_sync,
                pool,
                from.clone(),
            ),
        };
        // room for the next DATA frame, borrowed before it is read: while
        // the budget is lent out the socket is not read (the client waits)
        let budget = self.shared.budget.clone();
        let mut loan = transfer::Loan::none();
        let mut tx = Some(tx);
        let mut writer = Some(writer);
        let mut failed: Option<Error> = None;
        let mut received: u64 = from.len;
        let end = loop {
            // a writer that stops before the end (a bad zstd block, a full
            // disk) is answered at once, not when the next frame arrives
            let writing = failed.is_none() && writer.is_some();
            if writing && loan.bytes() == 0 {
                loan = budget.borrow(transfer::CHUNK).await;
            }
            let next = tokio::select! {
                biased;
                stopped = async {
                    match writer.as_mut() {
                        Some(h) => h.await,
                        None => std::future::pending().await,
                    }
                }, if writing => Err(stopped),
                f = self.next_upload_frame(&name, received) => Ok(f),
            };
            let next = match next {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    // cut off: a resumable upload's data is kept for next time
                    // (not at shutdown: kept uploads do not outlive the server)
                    if failed.is_none() && !*self.shared.abort.borrow() {
                        drop(tx);
                        self.keep_partial(key, upload, reservation, writer).await;
                    }
                    return Err(e);
                }
                Err(stopped) => {
                    writer = None;
                    tx = None;
                    let e = match stopped {
                        Ok(Err(e)) => e,
                        _ => Error::other("internal error: the upload writer stopped"),
                    };
                    info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), received, outcome = e.kind.name(), "{e}");
                    self.reply_error(&e).await?;
                    failed = Some(e);
                    continue;
                }
            };
            match next {
                UploadFrame::Data(block) => {
                    if failed.is_some() {
                        continue; // discarding the rest of a failed upload
                    }
                    let raw_len = block.raw_len;
                    received += u64::from(raw_len);
                    shared
                        .stats
                        .bytes_in
                        .fetch_add(u64::from(raw_len), std::sync::atomic::Ordering::Relaxed);
                    if !stream && received > size {
                        return Err(Error::protocol(format!(
                            "upload of {} sent more data than its declared size of {size} bytes",
                            names::quote(&name)
                        )));
                    }
                    if stream && received > reservation.held() {
                        // a whole step if it fits, else just what has arrived, so
                        // the upload stops only when its data really does not fit
                        let needed = received - reservation.held();
                        let free = self.shared.store.free_space();
                        let grown = reservation
                            .grow(protocol::STREAM_STEP.max(needed), free)
                            .or_else(|_| reservation.grow(needed, free));
                        if let Err(e) = grown {
                            // nothing more fits: stop writing, discard the rest
                            tx = None;
                            let e = e.context(format!(
                                "upload of {} stopped after {received} bytes",
                                names::quote(&name)
                            ));
                            info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), received, outcome = e.kind.name(), "{e}");
                            self.reply_error(&e).await?;
                            failed = Some(e);
                            continue;
                        }
                    }
                    // a frame larger than expected borrows the rest (a
                    // smaller one repays what it did not need)
                    loan.resize(&budget, block.cost()).await;
                    let sent = match &tx {
                        Some(t) => t.send((block, std::mem::take(&mut loan))).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        // the writer stopped: report its error now, then drain
                        tx = None;
                        let e = match writer.take() {
                            Some(h) => match h.await {
                                Ok(Err(e)) => e,
                                _ => Error::other("internal error: the upload writer stopped"),
                            },
                            None => Error::other("internal error: the upload writer stopped"),
                        };
                        info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                        self.reply_error(&e).await?;
                        failed = Some(e);
                    }
                }
                UploadFrame::End(sha256) => break Some(sha256),
                UploadFrame::Cancel => break None,
            }
        };
        drop(tx);
        let written = match writer.take() {
            Some(h) => Some(
                h.await
                    .map_err(|e| Error::other(format!("internal error: {e}"))),
            ),
            None => None,
        };
        if failed.is_some() {
            return Ok(()); // the one reply was already sent
        }
        let outcome: Result<Stored> = async {
            let Some(claimed) = end else {
                return Err(Error::other(
                    "upload cancelled by the client; nothing was stored",
                ));
            };
            let (n, digest, _file) = match written {
                Some(r) => r??,
                None => return Err(Error::other("internal error: no upload writer")),
            };
            check_upload(&name, (!stream).then_some(size), n, &digest, &claimed)?;
            let verified = commit::Verified {
                upload,
                sha256: digest,
                size: n,
            };
            self.publish(verified, overwrite, attrs, reservation).await
        }
        .await;
        self.finish_put(&name, size, started, outcome, true).await
    }
}

/// Position an upload file at its start, empty.
fn start_over(file: &std::fs::File) -> std::io::Result<()> {
    use std::io::Seek;
    file.set_len(0)?;
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(())
}

/// Whether a PUT is a small pipelined upload, which the committer handles
/// (any other flags, and larger or streamed uploads, take the general path).
pub(super) fn queued(size: u64, flags: u32) -> bool {
    let known = protocol::PUT_PIPELINED | protocol::PUT_OVERWRITE;
    flags & protocol::PUT_PIPELINED != 0 && flags & !known == 0 && size <= SMALL_UPLOAD
}

/// One frame of an upload's data.
pub(super) enum UploadFrame {
    Data(transfer::Block),
    End([u8; 32]),
    Cancel,
}
