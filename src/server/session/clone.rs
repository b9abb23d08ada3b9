//! CLONE (PROTOCOL.md §4.4c): store a file from content the server already
//! holds for this same user, with no data sent. The same path as an upload
//! from the reservation on — quota first, the overwrite and ownership rules,
//! `name (1).ext`, owner and digest recorded, synced — only the bytes come
//! from a verified server-side copy (`Store::clone_from`) instead of DATA.

use super::*;

/// Indexed files of the asked size a CLONE probe checks are still there.
const PROBE_CHECKS: usize = 4;

impl Session {
    pub(super) async fn clone_put(
        &mut self,
        size: u64,
        flags: u32,
        sha256: [u8; 32],
        name: String,
        attrs: Option<Attrs>,
    ) -> Result<()> {
        if flags & !(protocol::PUT_OVERWRITE | protocol::CLONE_PROBE) != 0 {
            let e = Error::protocol(format!("unknown CLONE flags 0x{flags:08x}"));
            return self.reply_error(&e).await;
        }
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        let started = Instant::now();
        // the first CLONE starts the walk that fills the content index, on a
        // thread of its own (not the runtime's: a long walk must not hold up
        // a shutdown), and waits for it a little: a miss costs an upload
        let index = &self.shared.store.content;
        if index.start_building() {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("sft-index".into())
                .spawn(move || shared.store.index_content());
            if let Err(e) = spawned {
                warn!("cannot start a thread to index stored content: {e}");
                index.abandon();
            }
        }
        let probe = flags & protocol::CLONE_PROBE != 0;
        // a probe comes before every large upload: it waits for a first walk
        // only briefly (a miss costs an upload, a wait delays one)
        let wait = if probe {
            crate::server::content::PROBE_WAIT
        } else {
            crate::server::content::WAIT
        };
        index.wait_ready(wait).await;
        if probe {
            // worth hashing the file? (no digest yet, nothing stored) Only
            // if such a file is still there: one removed by hand would
            // cost the client a read of its whole file on every upload
            let user = self.user().to_string();
            let live = self
                .blocking(move |s| {
                    let index = &s.store.content;
                    for n in index.of_size(&user, size, PROBE_CHECKS) {
                        match s.store.existing(&n) {
                            Ok(Some(e)) if e.size == size && e.owner == user => return Ok(true),
                            Ok(_) => index.stale(&n),
                            Err(_) => {}
                        }
                    }
                    Ok(index.holds_size(&user, size))
                })
                .await
                .unwrap_or(false);
            if live {
                return self.w.send_now(&Msg::Done).await;
            }
            let e = Error::not_found(format!("no file of yours has {size} bytes here; upload it"));
            return self.reply_error(&e).await;
        }
        let who = self.identity();
        let n = name.clone();
        // a whole-file copy: on the disk workers, not the blocking pool
        // that metadata commands use
        let shared = self.shared.clone();
        let outcome = self
            .shared
            .disk
            .run(move || -> Result<(String, String)> {
                let s = &*shared;
                // space is reserved first, exactly as for a PUT of `size`
                let reservation = commit::reserve(s, &who, &n, size, overwrite, false)?;
                let (up, source) = s.store.clone_from(&who.user, &sha256, size, &n)?;
                let published =
                    s.store
                        .commit(up, &sha256, overwrite, &who.user, attrs, reservation.ids())?;
                reservation.commit(size, published.replaced.as_ref());
                Ok((published.name, source))
            })
            .await
            .and_then(|r| r);
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok((stored, source)) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&stored), size, sha256 = %hex::encode(sha256), seconds, source = %names::escape(&source), outcome = "cloned");
                self.w
                    .send_now(&Msg::PutOk {
                        size,
                        sha256,
                        name: stored,
                    })
                    .await
            }
            Err(e) => {
                if e.kind == Kind::NotFound {
                    // the client uploads it: its PUT gets the audit line
                    debug!(peer = %self.peer, user = self.user(), name = %names::escape(&name), size, "clone: {e}");
                } else {
                    info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "clone: {e}");
                }
                self.reply_error(&e).await
            }
        }
    }
}
