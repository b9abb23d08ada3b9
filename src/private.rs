//! Files only their owner may read, and the randomness behind secrets:
//! private files written with mode 0600 (atomically where they are
//! replaced), refused when others can read them; tokens from the operating
//! system's generator, which fail loudly rather than fall back to anything
//! guessable. Used by the client and the server alike.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// `n` bytes from the operating system's random generator, as hex: for
/// tokens and anything else that must not be guessed.
pub fn secret_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| {
        Error::other(format!(
            "the operating system's random number generator failed ({e}); no secret was made"
        ))
    })?;
    Ok(hex::encode(b))
}

/// A suffix that makes a temporary file name unique in this process and
/// unlikely elsewhere (such files are created exclusively, so a clash is
/// retried, never overwritten). Not a secret.
pub fn unique_hex() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        // uniqueness only: the pid and the counter do
        b[..4].copy_from_slice(&std::process::id().to_be_bytes());
    }
    format!("{}{n:x}", hex::encode(b))
}

/// Write a new file with mode 0600; never replaces an existing one.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), &e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), &e))
}

/// The directory a path is in ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Replace (or create) a file atomically: write a temporary file beside it
/// with `mode`, fsync it, rename it over `path`, fsync the directory. A
/// reader sees the old contents or the new, never a mix; a failure leaves
/// the old file as it was.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{base}.{}.tmp", unique_hex()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), &e));
    }
    Ok(())
}

/// Refuse a secret file that other users can read.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), &e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::usage(format!(
            "{} is readable by other users (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Read a secret file after checking its permissions.
pub fn read_private(path: &Path) -> Result<String> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_others_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        write_private(&p, b"secret\n").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&p).unwrap(), "secret\n");
        assert!(write_private(&p, b"again").is_err(), "never replaces");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&p).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
    }

    #[test]
    fn secrets_are_long_and_different_and_temporary_names_unique() {
        let a = secret_hex(32).unwrap();
        let b = secret_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(unique_hex(), unique_hex());
    }

    #[test]
    fn a_private_file_is_replaced_atomically_and_loose_modes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(read_private(&p).unwrap(), "two");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&p).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
