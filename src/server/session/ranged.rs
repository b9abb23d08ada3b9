//! Several connections for one transfer (PROTOCOL.md §4.10), the session's
//! side: TICKET_REQ between commands (a ticket for downloads) or during a
//! ranged upload (a ticket bound to it), the ranged upload itself (PUT with
//! RANGES: reserved once, preallocated, filled by joined connections,
//! checked whole at END), and GET_RANGE. Joined connections are `joined`.

use super::*;
use crate::server::tickets::{Bound, Grant};
use crate::transfer::Assembly;

impl Session {
    /// A ticket bound to this session's user (and to `bound`).
    pub(super) async fn ticket(&mut self, bound: Bound) -> Result<()> {
        if !self.streams {
            return Err(Error::protocol(
                "TICKET_REQ needs FEATURE_STREAMS, which this session did not negotiate",
            ));
        }
        let grant = Grant {
            who: self.identity(),
            bound,
        };
        match self.shared.tickets.issue(grant) {
            Ok(ticket) => self.w.send_now(&Msg::Ticket { ticket }).await,
            Err(e) => self.reply_error(&e).await,
        }
    }

    /// A ranged upload: space reserved once, the file preallocated, its
    /// data sent as RANGE blocks by joined connections, END on this one with
    /// the whole file's SHA-256, which the server's one pass over the
    /// contiguous prefix must match before the file becomes visible.
    pub(super) async fn put_ranged(
        &mut self,
        size: u64,
        flags: u32,
        name: String,
        attrs: Option<Attrs>,
    ) -> Result<()> {
        let known = protocol::PUT_OVERWRITE | protocol::PUT_RANGES | protocol::PUT_RESUME;
        if !self.streams || flags & !known != 0 {
            let e = Error::protocol(
                "the RANGES flag of PUT needs FEATURE_STREAMS and allows only OVERWRITE and RESUME besides",
            );
            return self.refuse_put(&e, false).await;
        }
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        // what the upload is kept under if it is cut off (PROTOCOL.md §4.9):
        // the same key as a one-connection upload's, so either kind of
        // upload resumes what either kind left
        let key = (flags & protocol::PUT_RESUME != 0).then(|| partial::Key {
            user: self.user().to_string(),
            name: name.clone(),
            size,
            overwrite,
        });
        let (n, who, wanted) = (name.clone(), self.identity(), key.clone());
        let begun = self
            .blocking(move |s| {
                if let Some(k) = &wanted
                    && let Some(kept) = s.partials.take(k)
                {
                    let partial::Kept {
                        mut upload,
                        reservation,
                        len,
                        ..
                    } = kept;
                    // (on an object store the kept prefix's hash, its parts
                    // already sent and punched out of the scratch file)
                    let held = s.store.resume_upload(&mut upload, len).unwrap_or_default();
                    return Ok((upload, reservation, held));
                }
                let reservation = commit::reserve(s, &who, &n, size, overwrite, false)?;
                let upload = s.store.begin_upload(&n)?;
                Ok((upload, reservation, transfer::Prefix::none()))
            })
            .await;
        let (upload, reservation, held) = match begun {
            Ok(x) => x,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                return self.refuse_put(&e, false).await;
            }
        };
        // the file is preallocated before PUT_READY, so that a disk that
        // cannot hold it refuses the PUT; a resumed one once RESUME says
        // from where
        let resuming = held.len > 0;
        let asm = if resuming {
            Ok(None)
        } else {
            assemble(&upload.file, size, &name, transfer::Prefix::none())
                .await
                .map(Some)
        };
        let asm = match asm {
            Ok(Some(a)) => {
                self.w.send_now(&Msg::PutReady { offset: 0 }).await?;
                Ok(a)
            }
            Ok(None) => {
                // PARTIAL, then the client's RESUME says where the ranges start
                let from = self.offer_partial(held, &name).await?;
                assemble(&upload.file, size, &name, from).await
            }
            Err(e) => Err(e),
        };
        let asm = match asm {
            Ok(a) => a,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                return self.refuse_put(&e, false).await;
            }
        };
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let started = Instant::now();
        let limit = self.shared.limits.data;
        let mut seen = asm.written();
        // joined connections write while this one waits for END: the data
        // deadline runs only while none of them moves
        let end = loop {
            let next = match tokio::time::timeout(limit, self.r.read_frame()).await {
                Ok(m) => m,
                Err(_) if asm.written() != seen => {
                    seen = asm.written();
                    continue;
                }
                Err(_) => Err(Error::network(format!(
                    "timed out after {}s: no stream of the ranged upload moved",
                    limit.as_secs()
                ))),
            };
            let msg = match next {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(Error::network("connection closed during a ranged upload")),
                Err(e) => Err(e),
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    let a = asm.clone();
                    let _ = tokio::task::spawn_blocking(move || a.close()).await;
                    let held = asm.hashed().len;
                    info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), received = held, outcome = "aborted", "{e}");
                    // cut off: a resumable upload keeps its contiguous
                    // prefix, which is written and hashed (not at shutdown:
                    // kept uploads do not outlive the server)
                    if let Some(key) = key
                        && !*self.shared.abort.borrow()
                    {
                        self.keep_held(key, upload, reservation, held).await;
                    }
                    return Err(e);
                }
            };
            match msg {
                Msg::TicketReq => self.ticket(Bound::Upload(asm.clone())).await?,
                Msg::End { sha256 } => break Some(sha256),
                Msg::Cancel => break None,
                other => {
                    let a = asm.clone();
                    let _ = tokio::task::spawn_blocking(move || a.close()).await;
                    return Err(Error::protocol(format!(
                        "unexpected {} during a ranged upload",
                        other.name()
                    )));
                }
            }
        };
        let a = asm.clone();
        let closed = tokio::task::spawn_blocking(move || a.close())
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))
            .and_then(|r| r);
        let outcome: Result<Stored> = async {
            let Some(claimed) = end else {
                return Err(Error::other(
                    "upload cancelled by the client; nothing was stored",
                ));
            };
            let digest = closed?;
            check_upload(&name, Some(size), size, &digest, &claimed)?;
            let verified = commit::Verified {
                upload,
                sha256: digest,
                size,
            };
            self.publish(verified, overwrite, attrs, reservation).await
        }
        .await;
        self.finish_put(&name, size, started, outcome, true).await
    }

    /// GET_RANGE: `length` bytes from `offset` (clamped to the file), after
    /// ATTRS (with FEATURE_META) and GET_OK, which always carries the whole
    /// file's digest (a file without one recorded is hashed first); END
    /// carries the SHA-256 of the bytes of the range.
    pub(super) async fn get_range(
        &mut self,
        offset: u64,
        length: u64,
        compress: u8,
        name: String,
    ) -> Result<()> {
        if !self.streams {
            return Err(Error::protocol(
                "GET_RANGE needs FEATURE_STREAMS, which this session did not negotiate",
            ));
        }
        let policy = self.download_policy(compress);
        let n = name.clone();
        let opened = self
            .blocking(move |s| {
                use std::io::Seek;
                let (mut file, mut info) = s.store.open_read(&n)?;
                if info.sha256.is_none() {
                    let whole = transfer::hash_prefix(&mut file, info.size, &names::quote(&n))?;
                    let d = whole.digest();
                    s.store.remember_digest(&file, &info, &d);
                    info.sha256 = Some(d);
                }
                let start = offset.min(info.size);
                let len = length.min(info.size - start);
                file.seek(std::io::SeekFrom::Start(start))
                    .map_err(|e| Error::io(format!("reading {}", names::quote(&n)), &e))?;
                Ok((file, info, len))
            })
            .await;
        let (file, info, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                return self.reply_error(&e).await;
            }
        };
        self.send_head(&info).await?;
        let pool = self.shared.pool.clone();
        let mut rx = transfer::spawn_reader_within(
            file,
            len,
            names::quote(&name),
            pool.clone(),
            policy,
            transfer::Prefix::none(),
            self.shared.budget.clone(),
        );
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let outcome = loop {
            // the loan is repaid when this turn ends: after the frame is sent
            let Some((item, _loan)) = rx.recv().await else {
                break Err(Error::other("internal error: the file reader stopped"));
            };
            match item {
                Outgoing::Frame(f) => {
                    self.w.write_raw(&f).await?;
                    shared
                        .stats
                        .bytes_out
                        .fetch_add(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    pool.give(f);
                }
                Outgoing::Done { sha256, .. } => break Ok(sha256),
                Outgoing::Failed(e) => break Err(e),
            }
        };
        match outcome {
            Ok(sha256) => {
                debug!(peer = %self.peer, user = self.user(), name = %names::escape(&name), offset, len, "range sent");
                self.w.send_now(&Msg::End { sha256 }).await
            }
            Err(e) => {
                warn!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }
}

/// The assembly of a ranged upload into its file, whose first `from.len`
/// bytes are already held (preallocated off the async threads).
async fn assemble(
    file: &std::fs::File,
    size: u64,
    name: &str,
    from: transfer::Prefix,
) -> Result<Arc<Assembly>> {
    let file = file
        .try_clone()
        .map_err(|e| Error::io("duplicating upload file", &e))?;
    let what = names::quote(name);
    tokio::task::spawn_blocking(move || Assembly::after(file, size, what, from))
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))?
        .map(Arc::new)
}
