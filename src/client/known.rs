//! The known-servers file, in the spirit of OpenSSH's known_hosts: one line
//! per server, `HOST:PORT sha256:HEX`, written by `sft trust` or on first
//! use. A server whose certificate no longer matches its line is refused.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// $SFT_KNOWN_SERVERS is handled by clap; this is the default beneath it:
/// $XDG_CONFIG_HOME/sft/known_servers or ~/.config/sft/known_servers.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("sft/known_servers"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config/sft/known_servers"))
}

/// The key a server is recorded under: lower-case host and port, IPv6 in
/// brackets ("files.example.com:7373", "[::1]:7373").
pub fn key_for(server: &str) -> Result<String> {
    let (host, port) = super::split_host_port(server)?;
    let host = host.to_ascii_lowercase();
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub key: String,
    pub pin: [u8; 32],
}

/// Parse the file's text; malformed lines are skipped (reported by `list`).
pub fn parse(text: &str) -> Vec<Known> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next()?;
            let pin = crate::tls::parse_pin(parts.next()?).ok()?;
            Some(Known {
                key: key.to_string(),
                pin,
            })
        })
        .collect()
}

/// Read the file; a missing file is empty.
pub fn load(path: &Path) -> Result<Vec<Known>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), &e)),
    }
}

/// The recorded fingerprint of a server.
pub fn lookup(path: &Path, key: &str) -> Result<Option<[u8; 32]>> {
    Ok(load(path)?
        .into_iter()
        .find(|k| k.key == key)
        .map(|k| k.pin))
}

fn render(entries: &[Known]) -> String {
    let mut s = String::from(
        "# sft known servers: HOST:PORT sha256:FINGERPRINT (managed by `sft trust`)\n",
    );
    for k in entries {
        s.push_str(&format!("{} sha256:{}\n", k.key, hex::encode(k.pin)));
    }
    s
}

/// Replace the file atomically (0600, its directory created 0700).
fn store(path: &Path, entries: &[Known]) -> Result<()> {
    let dir = crate::private::parent_dir(path);
    if !dir.exists() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
    }
    crate::private::write_atomic(path, render(entries).as_bytes(), 0o600)
}

/// What `add` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    Unchanged,
    Replaced([u8; 32]),
}

/// Record a server. A different fingerprint already recorded is replaced
/// only with `replace`; otherwise that is an error saying how.
pub fn add(path: &Path, key: &str, pin: [u8; 32], replace: bool) -> Result<Added> {
    let mut entries = load(path)?;
    let outcome = match entries.iter_mut().find(|k| k.key == key) {
        Some(k) if k.pin == pin => return Ok(Added::Unchanged),
        Some(k) if replace => {
            let old = k.pin;
            k.pin = pin;
            Added::Replaced(old)
        }
        Some(k) => {
            return Err(Error::usage(format!(
                "{key} is already trusted with a different fingerprint (sha256:{}); add --replace if the server's certificate really changed",
                hex::encode(k.pin)
            )));
        }
        None => {
            entries.push(Known {
                key: key.to_string(),
                pin,
            });
            Added::New
        }
    };
    store(path, &entries)?;
    Ok(outcome)
}

/// Forget a server; false if it was not recorded.
pub fn remove(path: &Path, key: &str) -> Result<bool> {
    let mut entries = load(path)?;
    let before = entries.len();
    entries.retain(|k| k.key != key);
    if entries.len() == before {
        return Ok(false);
    }
    store(path, &entries)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalized() {
        assert_eq!(
            key_for("Files.Example.com:7000").unwrap(),
            "files.example.com:7000"
        );
        assert_eq!(key_for("host").unwrap(), "host:7373");
        assert_eq!(key_for("[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(key_for("::1").unwrap(), "[::1]:7373");
    }

    #[test]
    fn add_lookup_replace_remove() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/known_servers");
        assert_eq!(lookup(&p, "a:1").unwrap(), None);
        assert_eq!(add(&p, "a:1", [1; 32], false).unwrap(), Added::New);
        assert_eq!(add(&p, "a:1", [1; 32], false).unwrap(), Added::Unchanged);
        assert_eq!(add(&p, "b:2", [2; 32], false).unwrap(), Added::New);
        let e = add(&p, "a:1", [3; 32], false).unwrap_err();
        assert!(e.message.contains("--replace"), "{e}");
        assert_eq!(lookup(&p, "a:1").unwrap(), Some([1; 32]));
        assert_eq!(
            add(&p, "a:1", [3; 32], true).unwrap(),
            Added::Replaced([1; 32])
        );
        assert_eq!(lookup(&p, "a:1").unwrap(), Some([3; 32]));
        assert!(remove(&p, "a:1").unwrap());
        assert!(!remove(&p, "a:1").unwrap());
        assert_eq!(load(&p).unwrap().len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // junk lines are ignored, not fatal
        let t = "# c\ngarbage\nx:1 sha256:zz\nc:3 sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(parse(&t).len(), 1);
    }
}
