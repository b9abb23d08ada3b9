//! The server's own state directory: its certificate, key and generated
//! token, created on first start (files 0600) and reused afterwards. It must
//! never be inside the storage root.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default state directory: $XDG_STATE_HOME/sft, ~/.local/state/sft, or
/// ./.sft-state when there is no home.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("sft");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/sft");
    }
    PathBuf::from(".sft-state")
}

/// Create the directory (0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating state directory {}", dir.display()), &e))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
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
    let tmp = dir.join(format!(
        ".{base}.{}.tmp",
        crate::server::store::random_hex(6)
    ));
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

/// Fail if either directory contains the other: the state (keys, tokens)
/// must never be reachable through the storage root.
pub fn check_separate(root: &Path, state: &Path) -> Result<()> {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {}", p.display()), &e))
    };
    let (r, s) = (canon(root)?, canon(state)?);
    if s.starts_with(&r) || r.starts_with(&s) {
        return Err(Error::usage(format!(
            "the state directory {} and the storage root {} overlap; clients could reach the server's keys. Choose separate directories (--state-dir / --root)",
            s.display(),
            r.display()
        )));
    }
    Ok(())
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
    fn overlapping_state_and_root_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let state = root.join("state");
        std::fs::create_dir_all(&state).unwrap();
        assert!(check_separate(&root, &state).is_err());
        assert!(check_separate(&state, &root).is_err());
        let other = d.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        check_separate(&root, &other).unwrap();
    }
}
