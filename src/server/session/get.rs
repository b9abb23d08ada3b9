//! GET and LIST: queued for the reading thread, answered in order; a large
//! file is streamed.

use super::*;

impl Session {
    /// A GET is queued for the session's reading thread (see `fetch`), and
    /// the next command read at once; the reply follows in order.
    pub(super) async fn get(&mut self, offset: u64, compress: u8, name: String) -> Result<()> {
        let policy = self.download_policy(compress);
        if offset != 0 {
            // the answers to GETs queued before this one go first
            self.drain(Which::Gets).await?;
            return self.get_resumed(offset, policy, name).await;
        }
        self.fetch(Fetch::File {
            name,
            policy: Box::new(policy),
            started: Instant::now(),
        })
        .await
    }

    /// A download's head: ATTRS (if metadata was negotiated), then GET_OK.
    pub(super) async fn send_head(&mut self, info: &crate::server::store::FileInfo) -> Result<()> {
        if self.meta {
            self.w
                .send(&Msg::Attrs {
                    mode: info.mode,
                    mtime_ns: info.mtime_ns,
                })
                .await?;
        }
        self.w
            .send(&Msg::GetOk {
                size: info.size,
                mtime_ns: info.mtime_ns,
                sha256: info.sha256,
            })
            .await
    }

    /// How a download is compressed: as the client asked, if zstd was
    /// agreed, capped by the server.
    pub(super) fn download_policy(&self, compress: u8) -> Policy {
        let mode = if self.zstd {
            Mode::from_wire(compress).capped(self.shared.max_level)
        } else {
            Mode::Off
        };
        Policy::new(mode, self.shared.max_level).on_link(self.link)
    }

    /// A GET that asks to resume after the client's first `offset` bytes
    /// (PROTOCOL.md §4.9): PARTIAL with the SHA-256 of that many bytes of the
    /// file (fewer if it is shorter), the client's RESUME, then GET_OK and
    /// the rest of the file; END still carries the whole file's digest.
    async fn get_resumed(&mut self, offset: u64, policy: Policy, name: String) -> Result<()> {
        let n = name.clone();
        let opened = self
            .blocking(move |s| {
                let (mut file, info) = s.store.open_read(&n)?;
                let prefix =
                    transfer::hash_prefix(&mut file, offset.min(info.size), &names::quote(&n))?;
                Ok((file, info, prefix))
            })
            .await;
        let (mut file, info, prefix) = match opened {
            Ok(x) => x,
            Err(e) => {
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                return self.reply_error(&e).await;
            }
        };
        self.w
            .send_now(&Msg::Partial {
                offset: prefix.len,
                sha256: prefix.digest(),
            })
            .await?;
        let from = match self
            .r
            .expect_within(self.shared.limits.data, "RESUME")
            .await?
        {
            Msg::Resume { offset } if offset == prefix.len => prefix,
            Msg::Resume { offset: 0 } => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| Error::io(format!("reading {}", names::quote(&name)), &e))?;
                transfer::Prefix::none()
            }
            Msg::Resume { offset } => {
                return Err(Error::protocol(format!(
                    "RESUME at {offset}: only 0 or the offered {} can be answered to PARTIAL",
                    prefix.len
                )));
            }
            other => {
                return Err(Error::protocol(format!(
                    "expected RESUME after PARTIAL, not {}",
                    other.name()
                )));
            }
        };
        self.stream_file(name, file, info, policy, from).await
    }

    /// Queue a read-only request for the session's reading thread.
    pub(super) async fn fetch(&mut self, job: Fetch) -> Result<()> {
        if self.fetches.is_none() {
            self.fetches = Some(Fetcher::start(self.shared.clone(), self.meta));
        }
        // a client far ahead of its replies gets some before more is read
        while self
            .fetches
            .as_ref()
            .is_some_and(|f| f.answers.pending() >= fetch::AHEAD)
        {
            match self.next_answer(Which::Gets).await {
                Some(a) => self.answer(a).await?,
                None => break,
            }
        }
        match self.fetches.as_mut() {
            Some(f) => f.submit(job),
            None => Err(Error::other("internal error: no download reader")),
        }
    }

    /// Send one fetched reply (buffered; a large file is streamed).
    pub(super) async fn reply_fetched(&mut self, f: Fetched) -> Result<()> {
        match f {
            Fetched::Ready {
                name,
                reply,
                outcome,
                started,
                _in_flight,
                _loan,
            } => {
                self.w.queue_raw(&reply).await?;
                self.shared
                    .stats
                    .bytes_out
                    .fetch_add(reply.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                match outcome {
                    Ok((size, sha256)) => {
                        info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, sha256 = %hex::encode(sha256), seconds = secs, outcome = "sent")
                    }
                    Err(e) => {
                        warn!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}")
                    }
                }
                Ok(())
            }
            Fetched::Large {
                name,
                file,
                info,
                policy,
            } => {
                self.stream_file(name, file, info, policy, transfer::Prefix::none())
                    .await
            }
            Fetched::Listed { reply } => self.w.queue_raw(&reply).await,
            Fetched::Failed { name, error } => {
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = error.kind.name(), "{error}");
                self.w
                    .send(&Msg::Error {
                        code: error.kind.wire_code(),
                        message: error.message.clone(),
                    })
                    .await
            }
        }
    }

    /// Stream a large file: GET_OK, its DATA as the reader produces it, END.
    pub(super) async fn stream_file(
        &mut self,
        name: String,
        file: std::fs::File,
        info: crate::server::store::FileInfo,
        policy: Policy,
        from: transfer::Prefix,
    ) -> Result<()> {
        let keep = file
            .try_clone()
            .map_err(|e| Error::io("duplicating file handle", &e))?;
        self.send_head(&info).await?;
        let started = Instant::now();
        let pool = self.shared.pool.clone();
        // each block is read from disk only once room for it is borrowed,
        // and the room is repaid once the block is sent
        let mut rx = transfer::spawn_reader_within(
            file,
            info.size - from.len,
            names::quote(&name),
            pool.clone(),
            policy,
            from,
            self.shared.budget.clone(),
        );
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let mut abort = self.shared.abort.clone();
        let outcome = loop {
            let next = tokio::select! {
                biased;
                _ = abort.wait_for(|a| *a) => None,
                m = rx.recv() => Some(m),
            };
            let Some(next) = next else {
                return self.aborted("download").await;
            };
            // the loan is repaid when this turn ends: after the frame is sent
            let (next, _loan) = match next {
                Some((item, loan)) => (Some(item), loan),
                None => (None, transfer::Loan::none()),
            };
            match next {
                Some(Outgoing::Frame(f)) => {
                    self.w.write_raw(&f).await?;
                    shared
                        .stats
                        .bytes_out
                        .fetch_add(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    pool.give(f);
                }
                Some(Outgoing::Done { sha256, .. }) => {
                    if let Err(e) =
                        crate::server::verify::check_stored(&name, info.sha256.as_ref(), &sha256)
                    {
                        break Err(e);
                    }
                    if info.sha256.is_none() {
                        let _ = self
                            .blocking(move |s| {
                                s.store.remember_digest(&keep, &info, &sha256);
                                Ok(())
                            })
                            .await;
                    }
                    break Ok(sha256);
                }
                Some(Outgoing::Failed(e)) => break Err(e),
                None => break Err(Error::other("internal error: the file reader stopped")),
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(sha256) => {
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), size = info.size, sha256 = %hex::encode(sha256), seconds = secs, outcome = "sent");
                self.w.send_now(&Msg::End { sha256 }).await
            }
            Err(e) => {
                warn!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }
}
