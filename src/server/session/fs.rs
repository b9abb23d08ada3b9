//! Commands on names: REMOVE, MKDIR, RMDIR, STAT, each with its audit line.

use super::*;

impl Session {
    /// Reply DONE or ERROR to a simple command, with its audit line.
    pub(super) async fn done_or_error(
        &mut self,
        event: &str,
        name: &str,
        r: Result<()>,
    ) -> Result<()> {
        match r {
            Ok(()) => {
                info!(event, peer = %self.peer, user = self.user(), name = %names::escape(name), outcome = "ok");
                self.w.send_now(&Msg::Done).await
            }
            Err(e) => {
                info!(event, peer = %self.peer, user = self.user(), name = %names::escape(name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }

    pub(super) async fn remove(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        let who = self.identity();
        let res = self
            .blocking(move |s| {
                if who.role < Role::Admin {
                    let owner = s.store.existing(&n)?.map(|e| e.owner);
                    check_owner(&who, owner, &n, "rm")?;
                }
                let gone = s.store.remove(&n)?;
                s.ledger.removed(&gone.owner, gone.size);
                Ok(())
            })
            .await;
        match &res {
            Ok(()) => {
                info!(event = "rm", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = "ok")
            }
            Err(e) => {
                info!(event = "rm", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}")
            }
        }
        match res {
            Ok(()) => self.w.send_now(&Msg::Done).await,
            Err(e) => self.reply_error(&e).await,
        }
    }

    pub(super) async fn mkdir(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        let r = self.blocking(move |s| s.store.mkdir(&n)).await;
        self.done_or_error("mkdir", &name, r).await
    }

    pub(super) async fn rmdir(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        let r = self
            .blocking(move |s| {
                s.store.rmdir(&n).or_else(|e| {
                    // a directory that lists as empty may still hold the data
                    // of interrupted uploads kept for resuming: they go with it
                    if s.partials.discard_in(&n) > 0 {
                        s.store.rmdir(&n)
                    } else {
                        Err(e)
                    }
                })
            })
            .await;
        self.done_or_error("rmdir", &name, r).await
    }

    /// STAT: one entry (ENTRY), without listing its directory.
    pub(super) async fn stat(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        match self.blocking(move |s| s.store.stat(&n)).await {
            Ok(mut e) => {
                if !self.meta {
                    e.mode = None;
                }
                self.w.send_now(&Msg::Entry(e)).await
            }
            Err(e) => self.reply_error(&e).await,
        }
    }
}
