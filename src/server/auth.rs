//! Who may use the server and as what: tokens (kept only as SHA-256 digests,
//! compared in constant time) mapped to users with roles. Users come from a
//! token file (each token an admin) and/or a users file, which is re-read
//! whenever it changes on disk, so `sft user ...` takes effect without a
//! restart.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::users::UsersFile;
use crate::error::{Error, Kind, Result};
use crate::protocol::Role;

/// A user the server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    /// Storage limit in bytes (quotas).
    pub quota: Option<u64>,
    /// Most files this user may own (quotas).
    pub max_files: Option<u64>,
}

impl Identity {
    pub fn new(user: impl Into<String>, role: Role) -> Identity {
        Identity {
            user: user.into(),
            role,
            quota: None,
            max_files: None,
        }
    }

    /// Permission for an operation that needs at least `need`.
    pub fn require(&self, need: Role, op: &str) -> Result<()> {
        if self.role >= need {
            Ok(())
        } else {
            Err(self.denied(op))
        }
    }

    /// "permission denied: user X (role read) cannot OP".
    pub fn denied(&self, op: &str) -> Error {
        Error::new(
            Kind::Auth,
            format!(
                "permission denied: user {} (role {}) cannot {op}",
                self.user,
                self.role.name()
            ),
        )
    }
}

/// The accepted tokens, kept only as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Identity)>,
}

impl Tokens {
    /// Accept each token in `tokens` (empty lines and `#` comments skipped);
    /// each is an admin named "tokenN".
    pub fn from_lines(text: &str) -> Tokens {
        let mut t = Tokens::default();
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
        {
            t.add(
                Sha256::digest(line.as_bytes()).into(),
                Identity::new(format!("token{}", i + 1), Role::Admin),
            );
        }
        t
    }

    /// The users of a (checked) users file.
    pub fn from_users(f: &UsersFile) -> Result<Tokens> {
        let mut t = Tokens::default();
        for (name, u) in &f.users {
            let quota = u
                .quota
                .as_deref()
                .map(crate::units::parse_size)
                .transpose()?;
            t.add(
                u.digest()?,
                Identity {
                    user: name.clone(),
                    role: u.role()?,
                    quota,
                    max_files: u.max_files,
                },
            );
        }
        Ok(t)
    }

    pub fn add(&mut self, digest: [u8; 32], who: Identity) {
        self.entries.push((digest, who));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity for a presented secret. Every entry is compared, in
    /// constant time, so timing says nothing about which token came close.
    pub fn check(&self, secret: &[u8]) -> Option<Identity> {
        let h: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for (d, who) in &self.entries {
            if bool::from(d.ct_eq(&h)) && found.is_none() {
                found = Some(who.clone());
            }
        }
        found
    }

    /// The current entry of a user, by name.
    pub fn user(&self, name: &str) -> Option<Identity> {
        self.entries
            .iter()
            .find(|(_, w)| w.user == name)
            .map(|(_, w)| w.clone())
    }

    /// Every user (a user with several tokens once).
    pub fn users(&self) -> Vec<Identity> {
        let mut out: Vec<Identity> = Vec::new();
        for (_, w) in &self.entries {
            if !out.iter().any(|o| o.user == w.user) {
                out.push(w.clone());
            }
        }
        out
    }
}

/// What identifies a version of the users file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
    })
}

struct Live {
    path: PathBuf,
    cache: Mutex<(Option<Stamp>, Arc<Tokens>)>,
}

/// All accounts: fixed tokens plus a users file that is re-read on change.
pub struct Accounts {
    fixed: Tokens,
    live: Option<Live>,
}

impl Accounts {
    /// Fixed tokens, and optionally a users file (loaded now; errors are fatal
    /// at start, but later a broken edit keeps the last good version).
    pub fn new(fixed: Tokens, users: Option<&Path>) -> Result<Accounts> {
        let live = match users {
            None => None,
            Some(p) => {
                let st = stamp(p).ok();
                let tokens = Tokens::from_users(&UsersFile::load(p)?)?;
                Some(Live {
                    path: p.to_path_buf(),
                    cache: Mutex::new((st, Arc::new(tokens))),
                })
            }
        };
        Ok(Accounts { fixed, live })
    }

    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.live_tokens().is_none_or(|t| t.is_empty())
    }

    /// Re-read the users file if it changed; the current users (None
    /// without a users file).
    fn live_tokens(&self) -> Option<Arc<Tokens>> {
        let live = self.live.as_ref()?;
        let mut cache = live.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&live.path).ok();
        if now != cache.0 {
            cache.0 = now;
            match UsersFile::load(&live.path).and_then(|f| Tokens::from_users(&f)) {
                Ok(t) => {
                    info!(event = "users_reloaded", file = %live.path.display(), users = t.users().len(), "users file reloaded");
                    cache.1 = Arc::new(t);
                }
                Err(e) => warn!(
                    event = "users_reload_failed",
                    "users file not reloaded, keeping the previous version: {e}"
                ),
            }
        }
        Some(cache.1.clone())
    }

    /// Force a re-read of the users file (admin reload, SIGHUP).
    pub fn reload(&self) -> Result<()> {
        if let Some(live) = &self.live {
            let t = Tokens::from_users(&UsersFile::load(&live.path)?)?;
            if let Ok(mut cache) = live.cache.lock() {
                *cache = (stamp(&live.path).ok(), Arc::new(t));
            }
        }
        Ok(())
    }

    /// Authenticate a presented token.
    pub fn check(&self, secret: &[u8]) -> Option<Identity> {
        let live = self.live_tokens();
        // both are checked, so timing does not tell which list matched
        let a = self.fixed.check(secret);
        let b = live.and_then(|t| t.check(secret));
        b.or(a)
    }

    /// The current identity of an authenticated user: roles and limits
    /// follow the users file; `None` once the user has been removed.
    pub fn current(&self, user: &str) -> Option<Identity> {
        self.live_tokens()
            .and_then(|t| t.user(user))
            .or_else(|| self.fixed.user(user))
    }

    /// Every known user.
    pub fn all(&self) -> Vec<Identity> {
        let mut v = self.live_tokens().map(|t| t.users()).unwrap_or_default();
        for f in self.fixed.users() {
            if !v.iter().any(|u| u.user == f.user) {
                v.push(f);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::users::{UserEntry, token_digest};

    #[test]
    fn only_listed_tokens_are_accepted() {
        let t = Tokens::from_lines("# comment\nalpha\n\n  beta  \n");
        assert_eq!(t.check(b"alpha").map(|i| i.user), Some("token1".into()));
        assert_eq!(t.check(b"beta").map(|i| i.user), Some("token2".into()));
        assert!(t.check(b"alph").is_none());
        assert!(t.check(b"").is_none());
        assert!(t.check(&[b'x'; 1024]).is_none());
        assert!(Tokens::from_lines("\n# only comments\n").is_empty());
    }

    #[test]
    fn roles_are_ordered_and_denials_name_the_user() {
        let r = Identity::new("rita", Role::Read);
        r.require(Role::Read, "ls").unwrap();
        let e = r.require(Role::Write, "put").unwrap_err();
        assert_eq!(e.kind, Kind::Auth);
        assert_eq!(
            e.message,
            "permission denied: user rita (role read) cannot put"
        );
        Identity::new("a", Role::Admin)
            .require(Role::Write, "put")
            .unwrap();
    }

    #[test]
    fn users_file_changes_apply_without_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        let entry = |role: &str, tok: &str| UserEntry {
            role: role.into(),
            token_sha256: hex::encode(token_digest(tok)),
            quota: Some("1MiB".into()),
            max_files: None,
        };
        let mut f = UsersFile::default();
        f.users.insert("ann".into(), entry("read", "t-ann"));
        f.save(&p).unwrap();
        let acc = Accounts::new(Tokens::from_lines("fixed"), Some(&p)).unwrap();
        let ann = acc.check(b"t-ann").unwrap();
        assert_eq!((ann.role, ann.quota), (Role::Read, Some(1 << 20)));
        assert_eq!(acc.check(b"fixed").unwrap().user, "token1");

        f.users.insert("ann".into(), entry("write", "t-ann2"));
        f.save(&p).unwrap();
        assert!(acc.check(b"t-ann").is_none(), "old token rotated away");
        assert_eq!(acc.current("ann").unwrap().role, Role::Write);

        std::fs::write(&p, "not toml [").unwrap();
        assert_eq!(
            acc.current("ann").unwrap().role,
            Role::Write,
            "a broken edit keeps the last good users"
        );
        f.users.clear();
        f.save(&p).unwrap();
        assert!(acc.current("ann").is_none());
    }
}
