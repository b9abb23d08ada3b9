//! The server's files, confined to its root by the kernel: every path is
//! resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) against a
//! handle on the root, so no name (and no symlink planted or swapped in
//! mid-operation) can reach anything outside it.
//!
//! Uploads are written under a reserved name (`.sft-tmp-…`) in the target
//! directory: clients can neither list nor open such names, the file is
//! removed however the upload ends, and leftovers of a crash are swept at the
//! next start. A complete, verified upload becomes visible with a rename that
//! never replaces an existing name (RENAME_NOREPLACE), which is what makes
//! "name (1).ext" race-free; an overwrite exchanges (RENAME_EXCHANGE) the
//! upload with the old file, which stays under the reserved name until the
//! directory is synced. Under `--fsync always` the data is synced before the
//! rename and the directory after it; if that last sync fails the rename is
//! undone and the upload reported failed (see `Store::unpublish_all`).
//! (O_TMPFILE would need no sweeping, but on ext4 creating one costs ~0.6 ms,
//! which dominated uploads of many small files.) Each file's SHA-256 is kept
//! in the `user.sft.sha256` extended attribute together with the size and
//! mtime it was computed for, so a file changed by hand is noticed and hashed
//! again.
//!
//! With `--store s3://` the same calls go to the bucket
//! (`server::object::files`), and the root is only a scratch directory for
//! data in flight: one `if` at the top of each public call is the seam.
//!
//! This file holds the store's types, opening, names and the one-file
//! operations (list, stat, mkdir, rmdir, remove); `publish.rs` uploads and
//! their commit, `clone.rs` CLONE, `walk.rs` the walks over the whole tree
//! (usage, sweep), `meta.rs` what is recorded about a file (digest and owner
//! attributes, mode, mtime).

mod clone;
mod meta;
mod publish;
#[cfg(test)]
mod tests;
mod upload;
mod walk;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use self::meta::{file_info, hash_and_remember, mtime_ns, read_owner, set_digest_xattr};
use self::publish::create_reserved;
use super::content::ContentIndex;
use super::object::{Bucket, files as remote};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind, MODE_BITS};

pub use self::meta::stored_mode;
pub use self::upload::{Published, Staged, Upload};

/// Components with this prefix are the server's own short-lived names (used
/// only while replacing a file); clients can neither see nor use them.
pub const RESERVED_PREFIX: &str = ".sft-tmp-";
/// The kernel's limit on a path given to one call, its NUL included.
const PATH_MAX: usize = 4096;

/// Whether an acknowledged upload must already be on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fsync the file and its directory before acknowledging (the default).
    Always,
    /// Acknowledge once the data is in the page cache (scratch storage only).
    Never,
}

/// Facts about a file being read.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo {
    pub size: u64,
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o777`).
    pub mode: u32,
    pub sha256: Option<[u8; 32]>,
}

/// A regular file already stored under a name: its size and its uploader
/// (`""` if it was not uploaded through sft).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Existing {
    pub size: u64,
    pub owner: String,
}

pub struct Store {
    root: OwnedFd,
    pub fsync: Fsync,
    /// Regular files the last `usage` walk found without a recorded SHA-256
    /// (restored without extended attributes, or placed by hand).
    pub without_digest: std::sync::atomic::AtomicU64,
    /// Which files hold which content, for CLONE (filled on first use).
    pub content: ContentIndex,
    /// Files live in this bucket, not under the root (`--store s3://`):
    /// the root holds only uploads and downloads in flight.
    pub object: Option<Arc<Bucket>>,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn fs_err(what: &str, name: &str, e: Errno) -> Error {
    let shown = names::quote(name);
    match e {
        Errno::NOENT => Error::not_found(format!("{what} {shown}: no such file or directory")),
        Errno::LOOP => Error::new(
            Kind::Usage,
            format!(
                "{what} {shown}: the path goes through a symbolic link, which the server does not follow"
            ),
        ),
        Errno::XDEV => Error::new(
            Kind::Usage,
            format!("{what} {shown}: the path leaves the server's root"),
        ),
        Errno::NOTDIR => Error::not_found(format!("{what} {shown}: a parent is not a directory")),
        Errno::ISDIR => Error::new(Kind::Usage, format!("{what} {shown}: is a directory")),
        Errno::NOSPC | Errno::DQUOT => Error::new(
            Kind::Space,
            format!("{what} {shown}: the server's storage is full"),
        ),
        Errno::ROFS => fault(format!(
            "{what} {shown}: the server's storage is a read-only filesystem"
        )),
        Errno::ACCESS | Errno::PERM => fault(format!(
            "{what} {shown}: the server has no permission to do this"
        )),
        Errno::NAMETOOLONG => Error::usage(format!(
            "{what} {shown}: name too long for the server's filesystem"
        )),
        other => fault(format!(
            "{what} {shown}: {}",
            crate::error::describe_io(&other.into())
        )),
    }
}

/// A failure of the server's storage itself (I/O error, read-only or
/// misconfigured root), not of the request: logged at WARN here, where the
/// cause is known, for the operator; the client gets the same one line.
fn fault(message: String) -> Error {
    tracing::warn!(event = "storage", "{message}");
    Error::other(message)
}

impl Store {
    /// Open (creating if needed) the root directory.
    pub fn open(root: &Path, fsync: Fsync) -> Result<Store> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating root directory {}", root.display()), &e))?;
        let fd = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::io(
                format!("opening root directory {}", root.display()),
                &e.into(),
            )
        })?;
        let store = Store {
            root: fd,
            fsync,
            without_digest: Default::default(),
            content: ContentIndex::default(),
            object: None,
        };
        store.check_writable(root)?;
        Ok(store)
    }

    /// Serve the files of `bucket`, with `scratch` for data in flight.
    pub fn open_object(scratch: &Path, bucket: Arc<Bucket>) -> Result<Store> {
        let mut store = Store::open(scratch, Fsync::Never)?;
        store.object = Some(bucket);
        Ok(store)
    }

    /// An unlinked scratch file in the root (for a download from the bucket).
    fn scratch(&self) -> Result<File> {
        let (file, tmp) = create_reserved(&self.root)
            .map_err(|e| fs_err("creating a scratch file in", "the root", e))?;
        let _ = rustix::fs::unlinkat(&self.root, tmp.as_str(), AtFlags::empty());
        Ok(file)
    }

    /// Fail at start, not at the first upload, if the root is not writable.
    fn check_writable(&self, root: &Path) -> Result<()> {
        let (file, tmp) = create_reserved(&self.root).map_err(|e| {
            Error::io(
                format!("checking that {} is writable", root.display()),
                &e.into(),
            )
        })?;
        drop(file);
        let _ = rustix::fs::unlinkat(&self.root, tmp.as_str(), AtFlags::empty());
        Ok(())
    }

    /// Open a directory beneath the root ("" is the root itself).
    fn open_dir(&self, rel: &str) -> Result<OwnedFd> {
        let path = if rel.is_empty() { "." } else { rel };
        self.open_beneath(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC)
            .map_err(|e| fs_err("opening directory", rel, e))
    }

    /// openat2 beneath the root, for any valid name: one that does not fit
    /// in PATH_MAX with its NUL (4,096 bytes) is opened relative to its
    /// parent directory, so every name the rules allow can be reached.
    fn open_beneath(&self, name: &str, flags: OFlags) -> std::result::Result<OwnedFd, Errno> {
        if name.len() < PATH_MAX {
            return rustix::fs::openat2(&self.root, name, flags, Mode::empty(), resolve());
        }
        let (parent, component) = names::split_parent(name);
        let dir = self.open_beneath(
            if parent.is_empty() { "." } else { parent },
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        )?;
        rustix::fs::openat2(&dir, component, flags, Mode::empty(), resolve())
    }

    /// Open a directory, creating any missing components on the way. Only
    /// the missing ones are touched: a new directory in an existing one costs
    /// a failed open, the parent's open, a mkdir and an open, however deep.
    fn make_dirs(&self, rel: &str) -> Result<OwnedFd> {
        // the common case: it exists already (one call instead of a walk)
        let mut missing = Vec::new();
        let mut at = rel;
        let mut fd = loop {
            match self.open_dir(at) {
                Ok(fd) => break fd,
                Err(e) if e.kind == Kind::NotFound && !at.is_empty() => {
                    let (parent, comp) = names::split_parent(at);
                    missing.push(comp);
                    at = parent;
                }
                Err(e) => return Err(e),
            }
        };
        for comp in missing.into_iter().rev() {
            match rustix::fs::mkdirat(&fd, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(fs_err("creating directory", rel, e)),
            }
            fd = rustix::fs::openat2(
                &fd,
                comp,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve(),
            )
            .map_err(|e| fs_err("opening directory", rel, e))?;
        }
        Ok(fd)
    }

    /// The entries of a directory, sorted by name. Symbolic links, special
    /// files and names that break the naming rules are not listed.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>> {
        if !rel.is_empty() {
            check_client_name(rel)?;
        }
        if let Some(b) = &self.object {
            return remote::list(b, rel);
        }
        let dirfd = self.open_dir(rel)?;
        let dir = rustix::fs::Dir::read_from(&dirfd).map_err(|e| fs_err("listing", rel, e))?;
        let mut out = Vec::new();
        for ent in dir {
            let ent = ent.map_err(|e| fs_err("listing", rel, e))?;
            let Ok(name) = ent.file_name().to_str() else {
                continue;
            };
            // (the whole name too: one placed by hand beyond 4096 bytes
            // could be neither fetched nor removed)
            if name == "."
                || name == ".."
                || name.starts_with(RESERVED_PREFIX)
                || names::validate(&join(rel, name)).is_err()
            {
                continue;
            }
            if let Some(entry) = entry_for(&dirfd, name)? {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Open a regular file for reading.
    pub fn open_read(&self, name: &str) -> Result<(File, FileInfo)> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            return remote::open_read(b, self.scratch()?, name);
        }
        let fd = self
            .open_beneath(name, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW)
            .map_err(|e| fs_err("opening", name, e))?;
        let file = File::from(fd);
        let st = rustix::fs::fstat(&file).map_err(|e| fs_err("opening", name, e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Error::usage(format!(
                "{} is not a regular file",
                names::quote(name)
            )));
        }
        let info = file_info(&file)?;
        Ok((file, info))
    }

    /// Open a regular file for a reader that reads it once, in order, from
    /// its first byte (a whole download): on the object store a large file
    /// is then streamed from the bucket instead of fetched whole first.
    pub fn open_stream(&self, name: &str) -> Result<(File, FileInfo)> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            let small = crate::server::commit::SMALL_UPLOAD;
            return remote::open_stream(b, || self.scratch(), name, small);
        }
        self.open_read(name)
    }

    /// Remember a digest computed while serving a file that had none.
    pub fn remember_digest(&self, file: &File, info: &FileInfo, sha256: &[u8; 32]) {
        if self.object.is_some() {
            return; // a scratch copy: the manifest holds the digest
        }
        let _ = set_digest_xattr(file, info.size, info.mtime_ns, sha256);
    }

    /// The regular file stored under `name`; `Ok(None)` if there is none.
    pub fn existing(&self, name: &str) -> Result<Option<Existing>> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            return remote::existing(b, name);
        }
        let (parent, component) = names::split_parent(name);
        let dir = match self.open_dir(parent) {
            Ok(d) => d,
            Err(e) if e.kind == Kind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        existing_in(&dir, component).map_err(|e| fs_err("opening", name, e))
    }

    /// Create a directory and any missing parents; an existing one is fine.
    pub fn mkdir(&self, name: &str) -> Result<()> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            return remote::mkdir(b, name);
        }
        let fd = self.make_dirs(name)?;
        if self.fsync == Fsync::Always {
            let _ = rustix::fs::fsync(&fd);
        }
        Ok(())
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, name: &str) -> Result<()> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            return remote::rmdir(b, name);
        }
        let (parent, component) = names::split_parent(name);
        let dir = self.open_dir(parent)?;
        let st = rustix::fs::statat(&dir, component, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err("removing directory", name, e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(Error::usage(format!(
                "{} is not a directory; remove files with sft rm",
                names::quote(name)
            )));
        }
        rustix::fs::unlinkat(&dir, component, AtFlags::REMOVEDIR).map_err(|e| match e {
            Errno::NOTEMPTY | Errno::EXIST => Error::usage(format!(
                "directory {} is not empty; remove its contents first (sft rm -r)",
                names::quote(name)
            )),
            e => fs_err("removing directory", name, e),
        })?;
        if self.fsync == Fsync::Always {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(())
    }

    /// One entry, as LIST would show it.
    pub fn stat(&self, name: &str) -> Result<Entry> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            return remote::stat(b, name);
        }
        let (parent, component) = names::split_parent(name);
        let dirfd = self.open_dir(parent)?;
        entry_for(&dirfd, component)?
            .ok_or_else(|| Error::not_found(format!("no such file: {}", names::quote(name))))
    }

    /// Free space for unprivileged writers on the root's filesystem.
    pub fn free_space(&self) -> Option<u64> {
        if self.object.is_some() {
            return None; // the bucket's room is not known; quotas bound it
        }
        let st = rustix::fs::fstatvfs(&self.root).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Remove a file (not a directory); what it was.
    pub fn remove(&self, name: &str) -> Result<Existing> {
        check_client_name(name)?;
        if let Some(b) = &self.object {
            let gone = remote::remove(b, name)?;
            self.content.removed(name);
            return Ok(gone);
        }
        let (parent, component) = names::split_parent(name);
        let dir = self.open_dir(parent).map_err(|e| {
            if e.kind == Kind::NotFound {
                Error::not_found(format!("no such file: {}", names::quote(name)))
            } else {
                e
            }
        })?;
        let st = rustix::fs::statat(&dir, component, AtFlags::SYMLINK_NOFOLLOW).map_err(
            |e| match e {
                Errno::NOENT => Error::not_found(format!("no such file: {}", names::quote(name))),
                e => fs_err("removing", name, e),
            },
        )?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            return Err(Error::usage(format!(
                "{} is a directory; sft rm removes files",
                names::quote(name)
            )));
        }
        let gone = existing_in(&dir, component)
            .ok()
            .flatten()
            .unwrap_or(Existing {
                size: st.st_size as u64,
                owner: String::new(),
            });
        rustix::fs::unlinkat(&dir, component, AtFlags::empty()).map_err(|e| match e {
            Errno::NOENT => Error::not_found(format!("no such file: {}", names::quote(name))),
            e => fs_err("removing", name, e),
        })?;
        self.content.removed(name);
        if self.fsync == Fsync::Always {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(gone)
    }
}
/// Validate a client-supplied name, including the server's reserved prefix.
pub fn check_client_name(name: &str) -> Result<()> {
    names::validate(name)?;
    if name.split('/').any(|c| c.starts_with(RESERVED_PREFIX)) {
        return Err(Error::usage(format!(
            "invalid name {}: names starting with {RESERVED_PREFIX} are reserved by the server",
            names::quote(name)
        )));
    }
    Ok(())
}

fn join(parent: &str, comp: &str) -> String {
    if parent.is_empty() {
        comp.to_string()
    } else {
        format!("{parent}/{comp}")
    }
}

/// The listing entry for `name` in `dirfd`: directories and regular files
/// only (symlinks and special files are `None`).
fn entry_for(dirfd: &OwnedFd, name: &str) -> Result<Option<Entry>> {
    let Ok(st) = rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(None);
    };
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let mtime_ns = mtime_ns(&st);
    let entry = match ft {
        rustix::fs::FileType::Directory => Entry {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns,
            sha256: None,
            name: name.to_string(),
            owner: String::new(),
            mode: Some(st.st_mode & MODE_BITS),
        },
        rustix::fs::FileType::RegularFile => {
            let Ok(fd) = rustix::fs::openat2(
                dirfd,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                resolve(),
            ) else {
                return Ok(None);
            };
            let file = File::from(fd);
            let info = file_info(&file)?;
            let sha256 = match info.sha256 {
                Some(d) => Some(d),
                None => hash_and_remember(&file, &info).ok(),
            };
            Entry {
                kind: EntryKind::File,
                size: info.size,
                mtime_ns: info.mtime_ns,
                sha256,
                name: name.to_string(),
                owner: read_owner(&file).unwrap_or_default(),
                mode: Some(info.mode),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(entry))
}

/// Size and owner of a regular file in `dir`; `None` if absent or not a
/// regular file.
fn existing_in(dir: &OwnedFd, component: &str) -> std::result::Result<Option<Existing>, Errno> {
    match rustix::fs::openat2(
        dir,
        component,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        resolve(),
    ) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Ok(None);
            }
            let file = File::from(fd);
            Ok(Some(Existing {
                size: st.st_size as u64,
                owner: read_owner(&file).unwrap_or_default(),
            }))
        }
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => Ok(None),
        Err(e) => Err(e),
    }
}
