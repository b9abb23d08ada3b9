//! Share links: made, listed and revoked over the sft protocol (SHARE,
//! SHARE_LIST, SHARE_REVOKE), used over HTTPS (see `web`). The server keeps
//! only the SHA-256 of each token, in `shares.json` in its state directory
//! (0600, replaced atomically on every change); a link is bound to one path
//! and to the user who made it, expires, counts its downloads and can be
//! revoked. Audit lines never contain the token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::Shared;
use super::auth::Identity;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::{EntryKind, Msg, Role, ShareInfo};

/// Longest life a link may be given.
pub const MAX_LIFE: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most live links on one server (the file is rewritten on every change).
pub const MAX_SHARES: usize = 10_000;
const FILE_NAME: &str = "shares.json";

/// One link as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub id: String,
    /// SHA-256 of the token, hex.
    pub digest: String,
    pub user: String,
    /// The shared path, relative to the root.
    pub path: String,
    pub dir: bool,
    /// The file's SHA-256 when shared (hex); a changed file ends the link.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub created: u64,
    /// Unix seconds; None: never.
    pub expires: Option<u64>,
    /// None: no limit.
    pub downloads_left: Option<u64>,
}

impl Share {
    fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| now < e) && self.downloads_left != Some(0)
    }

    pub fn info(&self, token: String) -> ShareInfo {
        ShareInfo {
            id: self.id.clone(),
            token,
            kind: if self.dir {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: self.size,
            sha256: self.sha256.as_deref().and_then(parse_digest),
            expires: self.expires.unwrap_or(u64::MAX),
            downloads_left: self.downloads_left.unwrap_or(u64::MAX),
            name: self.path.clone(),
            user: self.user.clone(),
        }
    }
}

fn parse_digest(h: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(h, &mut d).ok().map(|_| d)
}

#[derive(Default, Serialize, Deserialize)]
struct FileForm {
    shares: Vec<Share>,
}

/// Every live link, in memory and on disk.
pub struct Shares {
    /// `shares.json`; None when the server has no state directory.
    path: Option<PathBuf>,
    all: Mutex<Vec<Share>>,
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SHA-256 of a token, hex.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token: 144 random bits, URL-safe base64 (24 characters).
fn new_token() -> Result<String> {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).map_err(|e| Error::other(format!("no randomness for a token: {e}")))?;
    Ok(crate::server::web::base64(&b, true))
}

impl Shares {
    /// Load the links kept in `dir` (none if the file does not exist yet).
    pub fn open(dir: Option<PathBuf>) -> Result<Shares> {
        let path = dir.map(|d| d.join(FILE_NAME));
        let mut all = Vec::new();
        if let Some(p) = &path
            && p.exists()
        {
            let text = crate::private::read_private(p)?;
            let f: FileForm = serde_json::from_str(&text).map_err(|e| {
                Error::usage(format!(
                    "{} is not a valid shares file ({e}); move it away to start with no links",
                    p.display()
                ))
            })?;
            all = f.shares;
        }
        Ok(Shares {
            path,
            all: Mutex::new(all),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Share>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the list (dead links dropped) to disk.
    fn save(&self, all: &mut Vec<Share>) -> Result<()> {
        let now = now_s();
        all.retain(|s| s.live(now));
        let Some(p) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = p.parent() {
            super::state::ensure_dir(dir)?;
        }
        let text = serde_json::to_string_pretty(&FileForm {
            shares: all.clone(),
        })
        .map_err(|e| Error::other(format!("encoding the shares file: {e}")))?;
        crate::private::write_atomic(p, text.as_bytes(), 0o600)
    }

    /// Record a new link; returns it and its token.
    pub fn create(&self, mut share: Share) -> Result<(Share, String)> {
        if self.path.is_none() {
            return Err(Error::usage(
                "this server makes no share links (it runs with --web off, or without a usable state directory; see its log)",
            ));
        }
        let token = new_token()?;
        share.digest = token_digest(&token);
        share.id = crate::private::secret_hex(4)?;
        let mut all = self.lock();
        let now = now_s();
        all.retain(|s| s.live(now));
        if all.len() >= MAX_SHARES {
            return Err(Error::usage(format!(
                "the server already keeps {MAX_SHARES} share links; revoke some with sft share --revoke ID"
            )));
        }
        all.push(share.clone());
        if let Err(e) = self.save(&mut all) {
            all.pop();
            return Err(e);
        }
        Ok((share, token))
    }

    /// The live link a token opens, if any.
    pub fn find(&self, token: &str) -> Option<Share> {
        if token.is_empty() || token.len() > 64 {
            return None;
        }
        let d = token_digest(token);
        let now = now_s();
        self.lock()
            .iter()
            .find(|s| s.digest == d && s.live(now))
            .cloned()
    }

    /// Count one download on a link; false if it is no longer live.
    pub fn take_download(&self, id: &str) -> Result<bool> {
        let mut all = self.lock();
        let now = now_s();
        let Some(s) = all.iter_mut().find(|s| s.id == id && s.live(now)) else {
            return Ok(false);
        };
        match s.downloads_left {
            None => return Ok(true),
            Some(n) => s.downloads_left = Some(n.saturating_sub(1)),
        }
        self.save(&mut all)?;
        Ok(true)
    }

    /// Live links of `who` (an admin: everyone's).
    pub fn list(&self, who: &Identity) -> Vec<Share> {
        let now = now_s();
        self.lock()
            .iter()
            .filter(|s| s.live(now) && (who.role == Role::Admin || s.user == who.user))
            .cloned()
            .collect()
    }

    /// Revoke a link of `who` (an admin: anyone's).
    pub fn revoke(&self, who: &Identity, id: &str) -> Result<Share> {
        let mut all = self.lock();
        let pos = all
            .iter()
            .position(|s| s.id == id && (who.role == Role::Admin || s.user == who.user))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no share link with id {}; see sft share --list",
                    names::escape(id)
                ))
            })?;
        let gone = all.remove(pos);
        if let Err(e) = self.save(&mut all) {
            all.insert(pos, gone);
            return Err(e);
        }
        Ok(gone)
    }
}

/// Serve SHARE, SHARE_LIST or SHARE_REVOKE: the replies to send, in order.
pub async fn command(
    shared: &std::sync::Arc<Shared>,
    who: &Identity,
    peer: SocketAddr,
    msg: Msg,
) -> Result<Vec<Msg>> {
    who.require(Role::Read, "share files")?;
    let sh = shared.clone();
    let who2 = who.clone();
    tokio::task::spawn_blocking(move || apply(&sh, &who2, peer, msg))
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))?
}

/// Make a link for `name` as `who` (blocking: it may hash the file).
/// `expires_s`/`downloads`: `u64::MAX` for none.
pub fn make(
    shared: &Shared,
    who: &Identity,
    peer: SocketAddr,
    name: &str,
    expires_s: u64,
    downloads: u64,
) -> Result<(Share, String)> {
    who.require(Role::Read, "share files")?;
    let name = name.trim_end_matches('/').to_string();
    if downloads == 0 {
        return Err(Error::usage("a share link must allow at least 1 download"));
    }
    let entry = shared.store.stat(&name)?;
    let dir = entry.kind == EntryKind::Dir;
    let sha256 = if dir {
        None
    } else {
        Some(match entry.sha256 {
            Some(d) => d,
            None => super::web::digest_of(&shared.store, &name)?.1,
        })
    };
    let now = now_s();
    let life = if expires_s == u64::MAX {
        None
    } else {
        Some(expires_s.min(MAX_LIFE.as_secs()))
    };
    let share = Share {
        id: String::new(),
        digest: String::new(),
        user: who.user.clone(),
        path: name.clone(),
        dir,
        sha256: sha256.map(hex::encode),
        size: if dir { 0 } else { entry.size },
        created: now,
        expires: life.map(|l| now + l),
        downloads_left: (downloads != u64::MAX).then_some(downloads),
    };
    let (share, token) = shared.shares.create(share)?;
    info!(event = "share", action = "create", %peer, user = %who.user, id = %share.id,
        name = %names::escape(&name), expires = ?share.expires, downloads = ?share.downloads_left, "share link made");
    Ok((share, token))
}

fn apply(shared: &Shared, who: &Identity, peer: SocketAddr, msg: Msg) -> Result<Vec<Msg>> {
    match msg {
        Msg::Share {
            expires_s,
            downloads,
            name,
        } => {
            let (share, token) = make(shared, who, peer, &name, expires_s, downloads)?;
            Ok(vec![Msg::ShareOk(share.info(token))])
        }
        Msg::ShareList => {
            let mut out: Vec<Msg> = shared
                .shares
                .list(who)
                .into_iter()
                .map(|s| Msg::ShareEntry(s.info(String::new())))
                .collect();
            out.push(Msg::ListEnd);
            Ok(out)
        }
        Msg::ShareRevoke { id } => match shared.shares.revoke(who, &id) {
            Ok(s) => {
                info!(event = "share", action = "revoke", %peer, user = %who.user, id = %s.id,
                    name = %names::escape(&s.path), "share link revoked");
                Ok(vec![Msg::Done])
            }
            Err(e) => {
                warn!(event = "share", action = "revoke", %peer, user = %who.user, outcome = e.kind.name(), "{e}");
                Err(e)
            }
        },
        other => Err(Error::protocol(format!(
            "{} is not a share command",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expires: Option<u64>, downloads: Option<u64>) -> Share {
        Share {
            id: String::new(),
            digest: String::new(),
            user: "alice".into(),
            path: "a.txt".into(),
            dir: false,
            sha256: None,
            size: 1,
            created: 0,
            expires,
            downloads_left: downloads,
        }
    }

    #[test]
    fn a_link_is_found_by_its_token_only_while_live_and_its_downloads_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shares::open(Some(dir.path().to_path_buf())).unwrap();
        let (made, token) = s.create(sample(None, Some(2))).unwrap();
        assert!(token.len() >= 22, "at least 128 bits");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains(&token), "the token is never stored");
        assert!(text.contains(&token_digest(&token)));
        assert_eq!(s.find(&token).unwrap().id, made.id);
        assert!(s.find("not-the-token").is_none());
        assert!(s.take_download(&made.id).unwrap());
        assert!(s.take_download(&made.id).unwrap());
        assert!(s.find(&token).is_none(), "exhausted");
        assert!(!s.take_download(&made.id).unwrap());
        let (_, t2) = s.create(sample(Some(now_s() - 1), None)).unwrap();
        assert!(s.find(&t2).is_none(), "expired");
        // kept across a restart
        let (kept, t3) = s.create(sample(None, None)).unwrap();
        let again = Shares::open(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(again.find(&t3).unwrap().id, kept.id);
    }

    #[test]
    fn only_the_maker_or_an_admin_lists_and_revokes_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shares::open(Some(dir.path().to_path_buf())).unwrap();
        let (made, token) = s.create(sample(None, None)).unwrap();
        let bob = Identity::new("bob", Role::Write);
        let alice = Identity::new("alice", Role::Read);
        let admin = Identity::new("root", Role::Admin);
        assert!(s.list(&bob).is_empty());
        assert_eq!(s.list(&alice).len(), 1);
        assert_eq!(s.list(&admin).len(), 1);
        assert!(s.revoke(&bob, &made.id).is_err());
        s.revoke(&alice, &made.id).unwrap();
        assert!(s.find(&token).is_none());
    }
}
