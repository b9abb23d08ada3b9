//! Admin and accounting commands: USAGE, STATUS, SHUTDOWN, RELOAD.

use super::*;

impl Session {
    /// `sft df`: the caller's usage and limits; for an admin, the server's
    /// totals and every user's.
    pub(super) async fn usage(&mut self, who: &Identity) -> Result<()> {
        let all = who.role == Role::Admin;
        let users: Vec<(String, Option<u64>, Option<u64>)> = if all {
            let mut v: Vec<_> = self
                .shared
                .accounts
                .all()
                .into_iter()
                .map(|u| (u.user, u.quota, u.max_files))
                .collect();
            v.sort();
            v
        } else {
            vec![(who.user.clone(), who.quota, who.max_files)]
        };
        let free = self.shared.store.free_space().unwrap_or(0);
        // (a shared quota book, on an object store, is read over the network)
        let report = self
            .blocking(move |s| Ok(s.ledger.report(&users, all, free)))
            .await?;
        self.w.send_now(&Msg::UsageOk(report)).await
    }

    pub(super) async fn status(&mut self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.blocking(|s| Ok(s.ledger.usage(""))).await?;
        let st = &self.shared.stats;
        let status = protocol::Status {
            uptime_s: self.shared.started.elapsed().as_secs(),
            connections: st.connections.load(Relaxed).min(u32::MAX as u64) as u32,
            transfers: st.transfers.load(Relaxed).min(u32::MAX as u64) as u32,
            bytes_in: st.bytes_in.load(Relaxed),
            bytes_out: st.bytes_out.load(Relaxed),
            storage_bytes: total.bytes,
            files: total.files,
        };
        self.w.send_now(&Msg::StatusOk(status)).await
    }

    /// SHUTDOWN: the accept loop stops and drains (within `grace_ms`, or the
    /// server's `--grace` for `u64::MAX`).
    pub(super) async fn shutdown(&mut self, grace_ms: u64, who: &Identity) -> Result<()> {
        let grace = (grace_ms != u64::MAX).then(|| std::time::Duration::from_millis(grace_ms));
        let by = who.user.clone();
        info!(event = "shutdown_request", peer = %self.peer, user = %by, "admin asked the server to shut down");
        let asked = self
            .shared
            .control
            .send(Control::Shutdown { grace, by })
            .await;
        match asked {
            Ok(()) => self.w.send_now(&Msg::Done).await,
            Err(_) => {
                let e = Error::network("the server is already shutting down");
                self.reply_error(&e).await
            }
        }
    }

    /// RELOAD: certificate, key and users file, answered once done.
    pub(super) async fn reload(&mut self) -> Result<()> {
        let gone = || Error::network("the server is shutting down");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let r = match self.shared.control.send(Control::Reload { done: tx }).await {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(gone())),
            Err(_) => Err(gone()),
        };
        match r {
            Ok(()) => self.w.send_now(&Msg::Done).await,
            Err(e) => self.reply_error(&e).await,
        }
    }

    /// SHARE, SHARE_LIST, SHARE_REVOKE: share links (`server::share`).
    pub(super) async fn share(&mut self, m: Msg, who: &Identity) -> Result<()> {
        match crate::server::share::command(&self.shared, who, self.peer, m).await {
            Ok(replies) => {
                for r in &replies {
                    self.w.send(r).await?;
                }
                self.w.flush().await
            }
            Err(e) => self.reply_error(&e).await,
        }
    }
}
