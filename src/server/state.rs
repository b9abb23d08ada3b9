//! The server's own state directory: its certificate, key and generated
//! token, created on first start (files 0600) and reused afterwards. It must
//! never be inside the storage root.

use std::os::unix::fs::PermissionsExt;
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
