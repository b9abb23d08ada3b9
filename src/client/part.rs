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

/// Beside the part file of a download over several streams
/// (`.NAME.sft-part.held`): which file it is being filled from and how
/// far it is written in order, with the SHA-256 of those bytes. The part
/// file itself is preallocated to the whole size and filled out of order,
/// so its length says nothing; this says which prefix a later attempt can
/// keep — after checking that the remote file is the same one (its size
/// and whole SHA-256) and that the bytes here still hash to the digest
/// recorded. Rewritten as the prefix grows; never trusted beyond that check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The remote file's size and whole SHA-256.
    pub size: u64,
    pub sha256: [u8; 32],
    /// Bytes from 0 written, and their SHA-256.
    pub len: u64,
    pub prefix: [u8; 32],
}

impl Held {
    const TAG: &'static str = "sft-held 1";

    /// The one line it is stored as.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            Held::TAG,
            self.size,
            hex::encode(self.sha256),
            self.len,
            hex::encode(self.prefix)
        )
    }

    /// The line `line` wrote, or None for anything else (a torn write, a
    /// file of another version).
    pub fn parse(text: &str) -> Option<Held> {
        let rest = text.strip_suffix('\n')?.strip_prefix(Held::TAG)?;
        let f: Vec<&str> = rest.split(' ').collect();
        let [_, size, sha256, len, prefix] = f.as_slice() else {
            return None;
        };
        let digest = |h: &str| -> Option<[u8; 32]> {
            let mut d = [0u8; 32];
            hex::decode_to_slice(h, &mut d).ok()?;
            Some(d)
        };
        let held = Held {
            size: size.parse().ok()?,
            sha256: digest(sha256)?,
            len: len.parse().ok()?,
            prefix: digest(prefix)?,
        };
        (held.len <= held.size).then_some(held)
    }
}

/// Where the `Held` record of the part file `part` is kept.
pub fn held_path(part: &Path) -> PathBuf {
    let mut p = part.as_os_str().to_owned();
    p.push(".held");
    PathBuf::from(p)
}

/// The `Held` record beside `part`, if there is a readable one.
pub fn read_held(part: &Path) -> Option<Held> {
    std::fs::read_to_string(held_path(part))
        .ok()
        .and_then(|t| Held::parse(&t))
}

/// Forget the `Held` record of `part` (the part is gone, or no longer
/// filled out of order).
pub fn drop_held(part: &Path) {
    let _ = std::fs::remove_file(held_path(part));
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
    let mut len = file.metadata().ok()?.len();
    if held_path(&path).exists() {
        // left by a download over several streams: only its prefix is
        // data (what the server confirms of it is checked as always)
        len = read_held(&path).map_or(0, |h| h.len.min(len));
        file.set_len(len).ok()?;
        drop_held(&path);
    }
    (len > 0).then_some(Part { path, file, len })
}

/// Open `dest`'s part file for a download over several streams, locked:
/// the prefix to keep (if it holds one of this very file, still intact,
/// and `resume`), else emptied. Blocking: the prefix is read and hashed.
pub(super) fn ranged_part(
    dest: &Path,
    size: u64,
    sha256: &[u8; 32],
    resume: bool,
) -> Result<(PathBuf, File, crate::transfer::Prefix)> {
    let path = part_path(dest);
    if resume
        && let Some(h) = read_held(&path)
        && h.size == size
        && crate::transfer::same_digest(&h.sha256, sha256)
        && let Ok(Some(mut file)) = lock_part(&path, false)
        && file.metadata().is_ok_and(|m| m.len() >= h.len)
        && let Ok(p) = crate::transfer::hash_prefix(&mut file, h.len, &path.display().to_string())
        && crate::transfer::same_digest(&p.digest(), &h.prefix)
    {
        return Ok((path, file, p));
    }
    let (path, file) = create_part(dest)?;
    Ok((path, file, crate::transfer::Prefix::none()))
}

/// A fresh, empty temporary file for a download of `dest`.
pub(super) fn create_part(dest: &Path) -> Result<(PathBuf, File)> {
    let path = part_path(dest);
    if let Some(file) = lock_part(&path, true)? {
        drop_held(&path);
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
            .read(true)
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
    fn a_held_record_reads_back_and_anything_torn_is_ignored() {
        let h = Held {
            size: 1 << 30,
            sha256: [7; 32],
            len: 12 << 20,
            prefix: [9; 32],
        };
        let line = h.line();
        assert_eq!(Held::parse(&line), Some(h.clone()));
        // a write cut anywhere is not a record
        for cut in 0..line.len() {
            assert_eq!(Held::parse(&line[..cut]), None, "{cut}");
        }
        let beyond = Held {
            len: h.size + 1,
            ..h
        };
        assert_eq!(Held::parse(&beyond.line()), None, "more held than the file");
        assert_eq!(Held::parse("sft-held 2 1 2 3 4\n"), None);
    }
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
