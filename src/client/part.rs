//! A download's temporary file beside its destination (`.NAME.sft-part`,
//! locked, kept for resuming), and its move into place.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names;

/// The temporary file a download is written to, beside its destination:
/// `.NAME.sft-part`, locked while in use. A download cut off (lost
/// connection, Ctrl-C, a killed client) leaves it, and the same download
/// later resumes after the part of it the server confirms by SHA-256
/// (PROTOCOL.md §4.9). When another download holds that name, a one-off
/// `.NAME.RANDOM.part` is used instead (not resumable).
pub struct Part {
    pub path: PathBuf,
    pub file: File,
    /// Bytes it holds from an earlier attempt.
    pub len: u64,
}

/// Where a download of `dest` keeps its data until it is verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    part_dir(dest).join(format!(".{base}.sft-part"))
}

fn part_dir(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Open and lock `path` for a download; None if another holds it.
fn lock_part(path: &Path, create: bool) -> Result<Option<File>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("creating {}", path.display()), &e)),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        // a filesystem without locks: use it unlocked
        Err(_) => Ok(Some(file)),
    }
}

/// The data an interrupted download of `dest` left, if any (and not in
/// use by another download).
pub fn held_part(dest: &Path) -> Option<Part> {
    let path = part_path(dest);
    let file = lock_part(&path, false).ok()??;
    let len = file.metadata().ok()?.len();
    (len > 0).then_some(Part { path, file, len })
}

/// A fresh, empty temporary file for a download of `dest`.
pub(super) fn create_part(dest: &Path) -> Result<(PathBuf, File)> {
    let path = part_path(dest);
    if let Some(file) = lock_part(&path, true)? {
        file.set_len(0)
            .map_err(|e| Error::io(format!("creating {}", path.display()), &e))?;
        return Ok((path, file));
    }
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let dir = part_dir(dest);
    for _ in 0..16 {
        let part = dir.join(format!(".{base}.{}.part", crate::private::unique_hex()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
        {
            Ok(f) => return Ok((part, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("creating a file in {}", dir.display()),
                    &e,
                ));
            }
        }
    }
    Err(Error::other(format!(
        "could not create a temporary file in {}",
        dir.display()
    )))
}

/// Move a verified download into place without replacing anything (unless
/// `force`): `dest`, else `dest (1).ext`, `dest (2).ext`, …
pub(super) fn place(part: &Path, dest: &Path, force: bool) -> Result<PathBuf> {
    let what = |e: std::io::Error, p: &Path| Error::io(format!("saving {}", p.display()), &e);
    if force {
        std::fs::rename(part, dest).map_err(|e| what(e, dest))?;
        return Ok(dest.to_path_buf());
    }
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..10_000u32 {
        let cand = if n == 0 {
            dest.to_path_buf()
        } else {
            dest.with_file_name(names::numbered(&base, n))
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            part,
            rustix::fs::CWD,
            &cand,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(cand),
            Err(rustix::io::Errno::EXIST) => continue,
            // filesystems without RENAME_NOREPLACE: link (fails if taken), then unlink
            Err(rustix::io::Errno::INVAL) => match std::fs::hard_link(part, &cand) {
                Ok(()) => {
                    let _ = std::fs::remove_file(part);
                    return Ok(cand);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(what(e, &cand)),
            },
            Err(e) => return Err(what(e.into(), &cand)),
        }
    }
    Err(Error::other(format!(
        "too many files named like {}",
        dest.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn placing_a_download_never_clobbers() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("f.txt");
        std::fs::write(&dest, b"old").unwrap();
        let part = d.path().join("p");
        std::fs::write(&part, b"new").unwrap();
        let got = place(&part, &dest, false).unwrap();
        assert_eq!(got, d.path().join("f (1).txt"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        std::fs::write(&part, b"newer").unwrap();
        assert_eq!(place(&part, &dest, true).unwrap(), dest);
        assert_eq!(std::fs::read(&dest).unwrap(), b"newer");
    }
}
