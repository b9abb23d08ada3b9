//! The administrative commands of a session: SHUTDOWN, STATUS, USAGE,
//! share links, RELOAD.

use std::time::Duration;

use super::{Client, unexpected};
use crate::error::Result;
use crate::names;
use crate::protocol::{self, Msg};

impl Client {
    /// Ask the server to shut down (admin), giving transfers in flight
    /// `grace` (the server's default if None).
    pub async fn shutdown(&mut self, grace: Option<Duration>) -> Result<()> {
        let grace_ms = grace.map_or(u64::MAX, |g| g.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.w.send_now(&Msg::Shutdown { grace_ms }).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to SHUTDOWN")
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, "the reply to SHUTDOWN")),
        }
    }

    /// The server's counters (admin).
    pub async fn status(&mut self) -> Result<protocol::Status> {
        self.w.send_now(&Msg::StatusReq).await?;
        match self
            .r
            .expect_within(self.timeout * 4, "the reply to STATUS")
            .await?
        {
            Msg::StatusOk(st) => Ok(st),
            other => Err(unexpected(&other, "the reply to STATUS")),
        }
    }

    /// Storage accounting: own usage, or everyone's for an admin.
    pub async fn usage(&mut self) -> Result<protocol::Usage> {
        self.w.send_now(&Msg::UsageReq).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to USAGE")
            .await?
        {
            Msg::UsageOk(u) => Ok(u),
            other => Err(unexpected(&other, "the reply to USAGE")),
        }
    }

    /// Make a share link for a file or directory; `expires`/`downloads`
    /// None for no limit. The reply carries the link's token.
    pub async fn share(
        &mut self,
        name: &str,
        expires: Option<Duration>,
        downloads: Option<u64>,
    ) -> Result<protocol::ShareInfo> {
        let name = name.trim_end_matches('/');
        names::validate(name)?;
        let what = "the reply to SHARE";
        self.w
            .send_now(&Msg::Share {
                expires_s: expires.map_or(u64::MAX, |d| d.as_secs().max(1)),
                downloads: downloads.unwrap_or(u64::MAX),
                name: name.to_string(),
            })
            .await?;
        match self.r.expect_within(self.timeout * 4, what).await? {
            Msg::ShareOk(s) => Ok(s),
            other => Err(unexpected(&other, what)),
        }
    }

    /// The caller's live share links (an admin's: everyone's).
    pub async fn share_list(&mut self) -> Result<Vec<protocol::ShareInfo>> {
        self.w.send_now(&Msg::ShareList).await?;
        let mut out = Vec::new();
        loop {
            match self
                .r
                .expect_within(self.timeout, "the share links")
                .await?
            {
                Msg::ShareEntry(s) => out.push(s),
                Msg::ListEnd => return Ok(out),
                other => return Err(unexpected(&other, "the share links")),
            }
        }
    }

    /// Revoke a share link by id.
    pub async fn share_revoke(&mut self, id: &str) -> Result<()> {
        self.simple(
            Msg::ShareRevoke { id: id.to_string() },
            "the reply to SHARE_REVOKE",
        )
        .await
    }

    /// Make the server reload its certificate and users file (admin).
    pub async fn reload(&mut self) -> Result<()> {
        self.w.send_now(&Msg::Reload).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to RELOAD")
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, "the reply to RELOAD")),
        }
    }
}
