//! The users file: a TOML table of users, each with a role, the SHA-256 of
//! its token (never the token itself) and optional limits. `sft user ...`
//! edits it (atomically, under a lock); `sft serve --users FILE` reads it and
//! picks up changes without a restart.
//!
//! ```toml
//! [users.alice]
//! role = "write"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! quota = "10GiB"     # optional
//! max_files = 10000   # optional
//! ```
//!
//! Tokens are 256 random bits, so a plain SHA-256 is enough to make the file
//! useless to someone who reads it (no password-style stretching needed).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::protocol::Role;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// "read", "write" or "admin".
    pub role: String,
    /// SHA-256 of the user's token, 64 hex digits.
    pub token_sha256: String,
    /// Storage limit, e.g. "10GiB" (enforced by quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// Most files this user may own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
}

/// Parse a role name.
pub fn parse_role(s: &str) -> Result<Role> {
    match s {
        "read" => Ok(Role::Read),
        "write" => Ok(Role::Write),
        "admin" => Ok(Role::Admin),
        other => Err(Error::usage(format!(
            "unknown role {:?}: use read, write or admin",
            crate::names::escape(other)
        ))),
    }
}

/// User names: 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid user name {:?}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            crate::names::escape(name)
        )))
    }
}

/// A new random token ("sft_" and 64 hex digits).
pub fn new_token() -> Result<String> {
    Ok(format!("sft_{}", crate::private::secret_hex(32)?))
}

/// The digest stored for a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl UserEntry {
    pub fn role(&self) -> Result<Role> {
        parse_role(&self.role)
    }
    pub fn digest(&self) -> Result<[u8; 32]> {
        let mut d = [0u8; 32];
        hex::decode_to_slice(self.token_sha256.trim(), &mut d)
            .map_err(|_| Error::usage("token_sha256 must be 64 hex digits"))?;
        Ok(d)
    }
}

impl UsersFile {
    /// Parse and check every entry.
    pub fn parse(text: &str, shown: &str) -> Result<UsersFile> {
        let f: UsersFile = toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            Error::usage(format!(
                "{shown} is not a valid users file: {}",
                msg.lines().next().unwrap_or("parse error")
            ))
        })?;
        for (name, u) in &f.users {
            validate_name(name).map_err(|e| e.context(shown))?;
            u.role()
                .map_err(|e| e.context(format!("{shown}: user {name}")))?;
            u.digest()
                .map_err(|e| e.context(format!("{shown}: user {name}")))?;
            if let Some(q) = &u.quota {
                crate::units::parse_size(q)
                    .map_err(|e| e.context(format!("{shown}: user {name}: quota")))?;
            }
        }
        Ok(f)
    }

    /// Give user `name` the role `role` (checked); returns the role it had.
    pub fn set_role(&mut self, name: &str, role: &str) -> Result<String> {
        parse_role(role)?;
        let u = self
            .users
            .get_mut(name)
            .ok_or_else(|| Error::not_found(format!("no user {name}")))?;
        Ok(std::mem::replace(&mut u.role, role.to_string()))
    }

    /// Read a users file; refuses one that others may write.
    pub fn load(path: &Path) -> Result<UsersFile> {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::usage(format!(
                    "users file {} does not exist; create it with: sft user add NAME --role admin --users {}",
                    path.display(),
                    path.display()
                ))
            } else {
                Error::io(format!("reading {}", path.display()), &e)
            }
        })?;
        if meta.mode() & 0o022 != 0 {
            return Err(Error::usage(format!(
                "{} can be changed by other users (mode {:04o}); run: chmod 600 {}",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
        UsersFile::parse(&text, &path.display().to_string())
    }

    /// Write atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string(self)
            .map_err(|e| Error::other(format!("writing the users file: {e}")))?;
        let text = format!(
            "# sft users: edit with `sft user add|rm|token|list --users {}`.\n# Tokens are stored only as SHA-256 digests.\n\n{body}",
            path.display()
        );
        crate::private::write_atomic(path, text.as_bytes(), 0o600)
    }
}

/// Edit a users file under an exclusive lock (`.NAME.lock` beside it), so two
/// `sft user` commands never lose each other's change. A missing file starts
/// empty when `create` is set.
pub fn edit<T>(
    path: &Path,
    create: bool,
    f: impl FnOnce(&mut UsersFile) -> Result<T>,
) -> Result<T> {
    let dir = crate::private::parent_dir(path);
    let lock_path = dir.join(format!(
        ".{}.lock",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("locking {}", path.display()), &e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(format!("locking {}", path.display()), &e.into()))?;
    let mut file = if create && !path.exists() {
        UsersFile::default()
    } else {
        UsersFile::load(path)?
    };
    let out = f(&mut file)?;
    file.save(path)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_entries() {
        let mut f = UsersFile::default();
        f.users.insert(
            "alice".into(),
            UserEntry {
                role: "write".into(),
                token_sha256: hex::encode(token_digest("sft_x")),
                quota: Some("10GiB".into()),
                max_files: None,
            },
        );
        let text = toml::to_string(&f).unwrap();
        assert_eq!(UsersFile::parse(&text, "t").unwrap(), f);

        let bad_role = text.replace("\"write\"", "\"root\"");
        let e = UsersFile::parse(&bad_role, "t").unwrap_err();
        assert!(e.message.contains("unknown role"), "{e}");
        let bad_hash = text.replace(&hex::encode(token_digest("sft_x")), "abc");
        assert!(UsersFile::parse(&bad_hash, "t").is_err());
        let unknown = format!("{text}\ncolour = \"red\"\n");
        assert!(UsersFile::parse(&unknown, "t").is_err());
        assert!(
            UsersFile::parse("[users.\"../x\"]\nrole=\"read\"\ntoken_sha256=\"00\"", "t").is_err()
        );
    }

    #[test]
    fn set_role_changes_only_that_users_role() {
        let entry = |role: &str| UserEntry {
            role: role.into(),
            token_sha256: hex::encode([1u8; 32]),
            quota: Some("1GiB".into()),
            max_files: Some(3),
        };
        let mut f = UsersFile::default();
        f.users.insert("alice".into(), entry("read"));
        f.users.insert("bob".into(), entry("write"));
        assert_eq!(f.set_role("alice", "admin").unwrap(), "read");
        assert_eq!(f.users["alice"].role().unwrap(), Role::Admin);
        assert_eq!(f.users["alice"].quota.as_deref(), Some("1GiB"));
        assert_eq!(f.users["bob"], entry("write"));
        let e = f.set_role("carol", "read").unwrap_err();
        assert!(e.message.contains("no user carol"), "{e}");
        let e = f.set_role("bob", "root").unwrap_err();
        assert!(e.message.contains("unknown role"), "{e}");
        assert_eq!(f.users["bob"].role, "write");
    }

    #[test]
    fn user_names_are_plain() {
        for ok in ["alice", "ci-bot", "a.b_c@d", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn edits_are_atomic_and_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        edit(&p, true, |f| {
            f.users.insert(
                "bob".into(),
                UserEntry {
                    role: "read".into(),
                    token_sha256: hex::encode([7u8; 32]),
                    quota: None,
                    max_files: None,
                },
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let f = UsersFile::load(&p).unwrap();
        assert_eq!(f.users["bob"].role().unwrap(), Role::Read);
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
