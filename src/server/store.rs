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

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::content::ContentIndex;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Attrs, Entry, EntryKind, MODE_BITS};

/// Components with this prefix are the server's own short-lived names (used
/// only while replacing a file); clients can neither see nor use them.
pub const RESERVED_PREFIX: &str = ".sft-tmp-";
const XATTR: &str = "user.sft.sha256";
/// Who uploaded a file (the user name, UTF-8).
const OWNER_XATTR: &str = "user.sft.owner";
const MAX_NUMBERED: u32 = 10_000;
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

/// A committed upload's final name and, for an overwrite, the size and
/// uploader of the file it replaced.
pub type Published = (String, Option<(u64, String)>);

/// A complete, verified upload waiting to be made visible.
pub struct Staged {
    pub up: Upload,
    pub sha256: [u8; 32],
    pub overwrite: bool,
    /// Recorded as the file's uploader (empty: none).
    pub owner: String,
    /// Mode and mtime the client sent (ATTRS), given to the file before it
    /// becomes visible; `None`: the defaults (0644 less the umask, now).
    pub attrs: Option<Attrs>,
}

/// An upload in progress: an unnamed file in its target directory.
pub struct Upload {
    pub file: File,
    dir: OwnedFd,
    parent: String,
    component: String,
    /// The reserved name the data is written under; empty once committed.
    /// After an overwrite it holds the replaced file until the new name is
    /// durable (so the replacement can be undone), then is removed.
    tmp: String,
    /// The final component the upload was renamed to, until its directory
    /// is synced (what `unpublish` renames back).
    published: Option<String>,
}

impl Drop for Upload {
    /// An upload that ends any way but committed leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

pub struct Store {
    root: OwnedFd,
    pub fsync: Fsync,
    /// Regular files the last `usage` walk found without a recorded SHA-256
    /// (restored without extended attributes, or placed by hand).
    pub without_digest: std::sync::atomic::AtomicU64,
    /// Which files hold which content, for CLONE (filled on first use).
    pub content: ContentIndex,
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
        };
        store.check_writable(root)?;
        Ok(store)
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

    /// Remember a digest computed while serving a file that had none.
    pub fn remember_digest(&self, file: &File, info: &FileInfo, sha256: &[u8; 32]) {
        let _ = set_digest_xattr(file, info.size, info.mtime_ns, sha256);
    }

    /// Start an upload of `name`: an unnamed file in its (created) directory.
    pub fn begin_upload(&self, name: &str) -> Result<Upload> {
        check_client_name(name)?;
        let (parent, component) = names::split_parent(name);
        let dir = self.make_dirs(parent)?;
        let (file, tmp) =
            create_reserved(&dir).map_err(|e| fs_err("creating upload for", name, e))?;
        Ok(Upload {
            file,
            dir,
            parent: parent.to_string(),
            component: component.to_string(),
            tmp,
            published: None,
        })
    }

    /// Make a complete, verified upload visible and return its final name.
    /// Without `overwrite` an existing name is never replaced: the upload gets
    /// the first free "name (n).ext". With it, the old file is replaced
    /// atomically. Under `Fsync::Always` the file and directory are on stable
    /// storage when this returns.
    pub fn commit(
        &self,
        up: Upload,
        sha256: &[u8; 32],
        overwrite: bool,
        owner: &str,
        attrs: Option<Attrs>,
    ) -> Result<Published> {
        let staged = Staged {
            up,
            sha256: *sha256,
            overwrite,
            owner: owner.to_string(),
            attrs,
        };
        self.commit_all(vec![staged])
            .pop()
            .unwrap_or_else(|| Err(Error::other("internal error: nothing was committed")))
    }

    /// [`commit`](Self::commit) for several uploads at once, with one result
    /// each, in order. Under `Fsync::Always` they share the syncs (group
    /// commit): one `syncfs` makes all their data durable before any becomes
    /// visible, and another makes the renames durable. For many small files
    /// this is two journal commits per batch instead of two per file
    /// (measured on ext4: ~560 µs per file alone, ~60 µs in a batch).
    pub fn commit_all(&self, batch: Vec<Staged>) -> Vec<Result<Published>> {
        let mut results: Vec<Result<Published>> = Vec::with_capacity(batch.len());
        let mut ups: Vec<Option<Staged>> = Vec::with_capacity(batch.len());
        for st in batch {
            let shown = join(&st.up.parent, &st.up.component);
            // the mtime first, so the digest is recorded for the final one;
            // the mode last, as a file the owner may not write to takes no
            // more extended attributes (the file is visible only with both)
            let timed = match st.attrs {
                Some(a) => set_mtime(&st.up.file, a.mtime_ns),
                None => Ok(()),
            };
            match timed.and_then(|()| rustix::fs::fstat(&st.up.file)) {
                Ok(meta) => {
                    let _ = set_digest_xattr(
                        &st.up.file,
                        meta.st_size as u64,
                        mtime_ns(&meta),
                        &st.sha256,
                    );
                    if !st.owner.is_empty() {
                        let _ = rustix::fs::fsetxattr(
                            &st.up.file,
                            OWNER_XATTR,
                            st.owner.as_bytes(),
                            rustix::fs::XattrFlags::empty(),
                        );
                    }
                    if let Some(a) = st.attrs
                        && let Err(e) = rustix::fs::fchmod(
                            &st.up.file,
                            Mode::from_raw_mode(stored_mode(a.mode)),
                        )
                    {
                        results.push(Err(fs_err("finishing upload of", &shown, e)));
                        ups.push(None);
                        continue;
                    }
                    results.push(Ok((String::new(), None)));
                    ups.push(Some(st));
                }
                Err(e) => {
                    results.push(Err(fs_err("finishing upload of", &shown, e)));
                    ups.push(None);
                }
            }
        }
        // the data first: nothing becomes visible before it is durable
        self.sync_batch(&mut ups, &mut results, "writing", |up| {
            rustix::fs::fdatasync(&up.file)
        });
        for (i, slot) in ups.iter_mut().enumerate() {
            let Some(st) = slot.as_mut() else { continue };
            match publish(&mut st.up, st.overwrite) {
                Ok(r) => results[i] = Ok(r),
                Err(e) => {
                    results[i] = Err(e);
                    *slot = None;
                }
            }
        }
        // then the new names
        let synced = self.sync_names(&ups);
        if let Err(e) = synced {
            self.unpublish_all(&mut ups, &mut results, e);
        }
        for (slot, r) in ups.iter().zip(&results) {
            if let (Some(st), Ok((stored, _))) = (slot, r) {
                let size = st.up.file.metadata().map_or(0, |m| m.len());
                self.content.stored(&st.sha256, &st.owner, stored, size);
            }
        }
        // dropping the uploads removes what overwrites replaced
        drop(ups);
        results
    }

    /// Under `Fsync::Always`, make the new names of the uploads in `ups`
    /// durable: one directory fsync for a single upload, one `syncfs` for a
    /// batch.
    fn sync_names(&self, ups: &[Option<Staged>]) -> std::result::Result<(), Errno> {
        if self.fsync != Fsync::Always {
            return Ok(());
        }
        let mut live = ups.iter().flatten();
        match (live.next(), live.next()) {
            (None, _) => Ok(()),
            (Some(st), None) => rustix::fs::fsync(&st.up.dir),
            _ => rustix::fs::syncfs(&self.root),
        }
    }

    /// The directory sync after the renames failed (`e`, e.g. EIO): whether
    /// the new names survive a power cut is unknown, so an acknowledgement
    /// would be a lie. Each upload is taken back — renamed back to a reserved
    /// name (an overwrite exchanged back, restoring the old file) and
    /// removed — and reported failed: what the client is told, what is
    /// visible and what the ledger counts agree. Only if taking it back
    /// fails too is the upload left visible, and then it is reported stored
    /// (and counted), with a warning in the log. Should the machine crash
    /// before the directory reaches the disk, the name may come back after a
    /// restart, but only with its complete, synced data, and the usage
    /// rebuilt at start counts it.
    fn unpublish_all(
        &self,
        ups: &mut [Option<Staged>],
        results: &mut [Result<Published>],
        e: Errno,
    ) {
        for (i, slot) in ups.iter_mut().enumerate() {
            let Some(st) = slot.as_mut() else { continue };
            let shown = join(&st.up.parent, &st.up.component);
            match unpublish(&mut st.up) {
                Ok(()) => {
                    let mut err = fs_err("making the new name durable for", &shown, e);
                    err.message.push_str("; nothing was stored");
                    results[i] = Err(err);
                }
                Err(undo) => tracing::warn!(
                    name = %names::escape(&shown),
                    "the directory sync after storing {} failed ({}) and the upload could not be taken back ({}); it stays visible and counted but may not survive a power cut",
                    names::quote(&shown),
                    crate::error::describe_io(&e.into()),
                    crate::error::describe_io(&undo.into())
                ),
            }
        }
        // best effort: the names taken back are on disk soon anyway
        let _ = self.sync_names(ups);
    }

    /// Under `Fsync::Always`, make what the uploads still in `ups` have done
    /// so far durable: a single upload with `one` (its own file or
    /// directory), a batch with one `syncfs`. A failure fails every one of
    /// them (`what` names the step) and takes it out of the batch.
    fn sync_batch(
        &self,
        ups: &mut [Option<Staged>],
        results: &mut [Result<Published>],
        what: &str,
        one: impl Fn(&Upload) -> std::result::Result<(), Errno>,
    ) {
        if self.fsync != Fsync::Always {
            return;
        }
        let live: Vec<usize> = (0..ups.len()).filter(|&i| ups[i].is_some()).collect();
        let synced = match live.as_slice() {
            [] => Ok(()),
            [i] => ups[*i].as_ref().map_or(Ok(()), |st| one(&st.up)),
            _ => rustix::fs::syncfs(&self.root),
        };
        if let Err(e) = synced {
            for i in live {
                if let Some(st) = ups[i].take() {
                    let shown = join(&st.up.parent, &st.up.component);
                    results[i] = Err(fs_err(what, &shown, e));
                }
            }
        }
    }

    /// An existing regular file's size and uploader (`""` if it was not
    /// uploaded through sft); `Ok(None)` if there is no such file.
    pub fn existing(&self, name: &str) -> Result<Option<(u64, String)>> {
        check_client_name(name)?;
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
        let fd = self.make_dirs(name)?;
        if self.fsync == Fsync::Always {
            let _ = rustix::fs::fsync(&fd);
        }
        Ok(())
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, name: &str) -> Result<()> {
        check_client_name(name)?;
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
        let (parent, component) = names::split_parent(name);
        let dirfd = self.open_dir(parent)?;
        entry_for(&dirfd, component)?
            .ok_or_else(|| Error::not_found(format!("no such file: {}", names::quote(name))))
    }

    /// Free space for unprivileged writers on the root's filesystem.
    pub fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::fstatvfs(&self.root).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Bytes and files under the root, per owner ("" for files without one).
    /// Reserved temporary names are not counted. Any directory or file that
    /// cannot be read (no descriptors left, I/O error, no permission) fails
    /// the whole count: a ledger known to be wrong is worse than none.
    pub fn usage(&self) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut out = std::collections::BTreeMap::new();
        let mut without_digest = 0u64;
        self.walk("cannot count storage usage", |dirfd, _, name, ft| {
            if ft != rustix::fs::FileType::RegularFile
                || name.to_bytes().starts_with(RESERVED_PREFIX.as_bytes())
            {
                return Ok(());
            }
            let fd = match rustix::fs::openat2(
                dirfd,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                Mode::empty(),
                resolve(),
            ) {
                Ok(fd) => fd,
                // removed, or swapped for a link, while counting
                Err(Errno::NOENT) | Err(Errno::LOOP) => return Ok(()),
                Err(e) => return Err(e),
            };
            let st = rustix::fs::fstat(&fd)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Ok(());
            }
            let file = File::from(fd);
            let owner = read_owner(&file).unwrap_or_default();
            let e = out.entry(owner).or_insert((0u64, 0u64));
            e.0 += st.st_size as u64;
            e.1 += 1;
            if !has_digest_xattr(&file) {
                without_digest += 1;
            }
            Ok(())
        })?;
        self.without_digest
            .store(without_digest, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Visit every entry beneath the root but `.` and `..` — (its
    /// directory, its name, its type) — depth-first, descending into
    /// directories (never through links). One directory is open at a time:
    /// the directories still to visit are kept as paths and opened again
    /// beneath the root, so however wide or deep the tree, the walk needs
    /// two or three descriptors. Any failure but a directory vanishing
    /// stops the walk with an error naming `what` and the directory.
    fn walk(
        &self,
        what: &str,
        mut visit: impl FnMut(
            &OwnedFd,
            &std::path::Path,
            &std::ffi::CStr,
            rustix::fs::FileType,
        ) -> std::result::Result<(), Errno>,
    ) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let fail = |dir: &std::path::Path, e: Errno| {
            let shown = if dir.as_os_str().is_empty() {
                "the root".to_string()
            } else {
                names::quote(&dir.to_string_lossy())
            };
            let hint = match e {
                Errno::MFILE | Errno::NFILE => {
                    "; raise the open-files limit (ulimit -n, LimitNOFILE=)"
                }
                _ => "",
            };
            Error::other(format!(
                "{what}: reading directory {shown}: {}{hint}",
                crate::error::describe_io(&e.into())
            ))
        };
        let mut stack = vec![std::path::PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dirfd = match self.open_rel_dir(&rel) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if !rel.as_os_str().is_empty() => continue,
                Err(e) => return Err(fail(&rel, e)),
            };
            let dir = rustix::fs::Dir::read_from(&dirfd).map_err(|e| fail(&rel, e))?;
            for ent in dir {
                let ent = ent.map_err(|e| fail(&rel, e))?;
                let name = ent.file_name();
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                let mut ft = ent.file_type();
                if ft == rustix::fs::FileType::Unknown {
                    ft = match rustix::fs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => rustix::fs::FileType::from_raw_mode(st.st_mode),
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(fail(&rel, e)),
                    };
                }
                if ft == rustix::fs::FileType::Directory {
                    stack.push(rel.join(std::ffi::OsStr::from_bytes(name.to_bytes())));
                }
                visit(&dirfd, &rel, name, ft).map_err(|e| fail(&rel, e))?;
            }
        }
        Ok(())
    }

    /// Open a directory beneath the root by a path of any length: one
    /// openat2 when it fits in PATH_MAX, else component by component (two
    /// descriptors at a time).
    fn open_rel_dir(&self, rel: &std::path::Path) -> std::result::Result<OwnedFd, Errno> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        if rel.as_os_str().len() < 4000 {
            let path = if rel.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                rel
            };
            return rustix::fs::openat2(&self.root, path, flags, Mode::empty(), resolve());
        }
        let mut fd = rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), resolve())?;
        for comp in rel.components() {
            fd = rustix::fs::openat2(&fd, comp.as_os_str(), flags, Mode::empty(), resolve())?;
        }
        Ok(fd)
    }

    /// Remove a file (not a directory); its size and owner.
    pub fn remove(&self, name: &str) -> Result<(u64, String)> {
        check_client_name(name)?;
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
            .unwrap_or((st.st_size as u64, String::new()));
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

    /// Remove leftovers of uploads a crash interrupted (reserved names)
    /// anywhere under the root; run at start. Returns how many were removed.
    pub fn sweep(&self) -> Result<usize> {
        let mut removed = 0;
        self.walk(
            "cannot remove leftover temporary files",
            |dirfd, _, name, ft| {
                if ft != rustix::fs::FileType::Directory
                    && name.to_bytes().starts_with(RESERVED_PREFIX.as_bytes())
                {
                    match rustix::fs::unlinkat(dirfd, name, AtFlags::empty()) {
                        Ok(()) => removed += 1,
                        Err(Errno::NOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            },
        )?;
        Ok(removed)
    }
}

/// CLONE (PROTOCOL.md §4.4c): storing a file from content the server holds.
impl Store {
    /// A new upload of `name` holding a verified copy of a file of `owner`
    /// whose `size` bytes hash to `sha256`, and the name copied from. Nothing
    /// is visible yet: it is committed like any upload, and dropping it
    /// removes it. `Kind::NotFound` when no file of `owner` holds that
    /// content now (or the content index is not filled yet). The source is never shared with the new file (a copy,
    /// in the kernel or as a reflink, never a hard link), and is used only
    /// if its recorded digest is valid for its current size and mtime; the
    /// copy is hashed again before it is returned.
    pub fn clone_from(
        &self,
        owner: &str,
        sha256: &[u8; 32],
        size: u64,
        name: &str,
    ) -> Result<(Upload, String)> {
        check_client_name(name)?;
        for source in self.content.candidates(sha256, owner) {
            let src = match self.clone_source(&source, owner, sha256, size) {
                Source::Usable(f) => f,
                // (the index is right, the request's size is not)
                Source::OtherSize => continue,
                Source::Stale => {
                    self.content.stale(&source);
                    continue;
                }
            };
            let up = self.begin_upload(name)?;
            match copy_verified(&src, &up, size, sha256) {
                Ok(true) => return Ok((up, source)),
                Ok(false) => {
                    tracing::warn!(
                        event = "storage",
                        name = %names::escape(&source),
                        "{} no longer holds the content its recorded SHA-256 says; not used as a source",
                        names::quote(&source)
                    );
                    self.content.stale(&source);
                }
                Err(e) => {
                    let e = Error::io(format!("copying {}", names::quote(&source)), &e);
                    if e.kind == Kind::Space {
                        return Err(e);
                    }
                    // a source that cannot be read is a miss: the client uploads
                    tracing::warn!(event = "storage", "{e}");
                }
            }
        }
        Err(Error::not_found(format!(
            "the server holds no file of {owner} with {size} bytes and SHA-256 {}",
            hex::encode(sha256)
        )))
    }

    /// Fill the content index with one walk of the root (after
    /// `ContentIndex::start_building`; run on a thread of its own).
    pub fn index_content(&self) {
        let started = std::time::Instant::now();
        self.content.built(self.holders());
        let (files, bytes) = self.content.size();
        tracing::info!(
            event = "index",
            files,
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "indexed the content of stored files (for uploads of content already held)"
        );
    }

    /// Whether `name` can be the source of a copy: a regular file of
    /// `owner` whose digest, recorded for its current size and mtime, is
    /// `sha256`, and whose size is `size`.
    fn clone_source(&self, name: &str, owner: &str, sha256: &[u8; 32], size: u64) -> Source {
        if check_client_name(name).is_err() {
            return Source::Stale;
        }
        let Ok(fd) = self.open_beneath(
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        ) else {
            return Source::Stale;
        };
        let file = File::from(fd);
        let regular = rustix::fs::fstat(&file).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        });
        let ours = read_owner(&file).is_some_and(|o| o == owner);
        match file_info(&file) {
            Ok(info) if regular && ours && info.sha256 == Some(*sha256) => {
                if info.size == size {
                    Source::Usable(file)
                } else {
                    Source::OtherSize
                }
            }
            _ => Source::Stale,
        }
    }

    /// Every regular file with an owner and a valid recorded digest:
    /// (name, owner, digest), within the index's memory budget. A walk that
    /// fails part way gives what it found (later misses, nothing worse).
    fn holders(&self) -> Vec<(String, String, [u8; 32], u64)> {
        let mut found = Vec::new();
        let mut bytes = 0usize;
        let walked = self.walk("indexing stored content", |dirfd, rel, name, ft| {
            if ft != rustix::fs::FileType::RegularFile
                || name.to_bytes().starts_with(RESERVED_PREFIX.as_bytes())
            {
                return Ok(());
            }
            let (Ok(comp), Some(dir)) = (name.to_str(), rel.to_str()) else {
                return Ok(());
            };
            let full = join(dir, comp);
            if check_client_name(&full).is_err() {
                return Ok(());
            }
            let Ok(fd) = rustix::fs::openat2(
                dirfd,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                Mode::empty(),
                resolve(),
            ) else {
                return Ok(());
            };
            let file = File::from(fd);
            let regular = rustix::fs::fstat(&file).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            });
            let info = file_info(&file).ok();
            let digest = info.as_ref().and_then(|i| i.sha256);
            let size = info.map_or(0, |i| i.size);
            let owner = read_owner(&file).unwrap_or_default();
            if let (true, Some(d), false) = (regular, digest, owner.is_empty()) {
                let c = super::content::cost(&full, &owner);
                if bytes + c <= super::content::BUDGET {
                    bytes += c;
                    found.push((full, owner, d, size));
                }
            }
            Ok(())
        });
        if let Err(e) = walked {
            tracing::warn!(
                event = "storage",
                "{e}; uploads can be stored from content already held only for the files seen so far and those stored from now on"
            );
        }
        found
    }
}

/// What a name the content index gave turned out to be.
enum Source {
    /// The content asked for: copy it.
    Usable(File),
    /// The content the index says, but not the size asked for.
    OtherSize,
    /// Gone, replaced, changed by hand, or no longer this user's.
    Stale,
}

/// Copy `size` bytes of `src` into the upload (copy_file_range: a reflink
/// where the filesystem has them, a copy in the kernel elsewhere), then read
/// the copy back and hash it: whether it is exactly `size` bytes hashing to
/// `sha256`.
fn copy_verified(src: &File, up: &Upload, size: u64, sha256: &[u8; 32]) -> std::io::Result<bool> {
    let copied = std::io::copy(&mut src.take(size.saturating_add(1)), &mut &up.file)?;
    if copied != size {
        return Ok(false);
    }
    let mut back = up.read_back()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n: u64 = 0;
    loop {
        let got = back.read(&mut buf)?;
        if got == 0 {
            break;
        }
        n += got as u64;
        h.update(&buf[..got]);
    }
    let digest: [u8; 32] = h.finalize().into();
    Ok(n == size && crate::transfer::same_digest(&digest, sha256))
}

impl Upload {
    /// The upload's file opened again for reading (its own handle is
    /// write-only), to check what was written.
    fn read_back(&self) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.dir,
            self.tmp.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
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

/// A new file under a reserved name (hidden from clients, removed by
/// `sweep` if the server dies before the upload ends).
fn create_reserved(dir: &OwnedFd) -> std::result::Result<(File, String), Errno> {
    loop {
        let tmp = format!("{RESERVED_PREFIX}{}", crate::private::unique_hex());
        match rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => return Ok((File::from(fd), tmp)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Rename `from` to `to` in `dir` unless `to` exists (EEXIST then).
/// Rename a synced upload to its final name: over the old file with
/// `overwrite`, else to the first free "name (n).ext". Returns the final name
/// and, for an overwrite, the size and uploader of the file replaced.
fn publish(up: &mut Upload, overwrite: bool) -> Result<Published> {
    let shown = join(&up.parent, &up.component);
    if overwrite {
        let replaced = existing_in(&up.dir, &up.component).ok().flatten();
        // exchanged, not renamed over: the old file stays under the reserved
        // name until the new name is durable, so a failed sync can undo it
        match rustix::fs::renameat_with(
            &up.dir,
            up.tmp.as_str(),
            &up.dir,
            up.component.as_str(),
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                // a file replaces a file (or a link), never a directory
                let swapped =
                    rustix::fs::statat(&up.dir, up.tmp.as_str(), AtFlags::SYMLINK_NOFOLLOW);
                if swapped.is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Directory
                }) {
                    rustix::fs::renameat_with(
                        &up.dir,
                        up.tmp.as_str(),
                        &up.dir,
                        up.component.as_str(),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .map_err(|e| fs_err("replacing", &shown, e))?;
                    return Err(fs_err("replacing", &shown, Errno::ISDIR));
                }
                up.published = Some(up.component.clone());
                return Ok((shown, replaced));
            }
            // nothing to replace: published like a new name (below)
            Err(Errno::NOENT) => {}
            // filesystems without RENAME_EXCHANGE: replaced for good
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                rustix::fs::renameat(&up.dir, up.tmp.as_str(), &up.dir, up.component.as_str())
                    .map_err(|e| fs_err("replacing", &shown, e))?;
                up.tmp.clear();
                return Ok((shown, replaced));
            }
            Err(e) => return Err(fs_err("replacing", &shown, e)),
        }
        return match rename_noreplace(&up.dir, &up.tmp, &up.component) {
            Ok(()) => {
                up.tmp.clear();
                up.published = Some(up.component.clone());
                Ok((shown, None))
            }
            Err(e) => Err(fs_err("replacing", &shown, e)),
        };
    }
    let mut n = 0;
    loop {
        let candidate = if n == 0 {
            up.component.clone()
        } else {
            // shortened so that the whole name, too, stays within the rules
            match names::numbered_name(&shown, n) {
                Some(name) => names::split_parent(&name).1.to_string(),
                None => {
                    return Err(Error::usage(format!(
                        "storing {}: the name is taken and too long to number; choose a shorter name or --overwrite",
                        names::quote(&shown)
                    )));
                }
            }
        };
        match rename_noreplace(&up.dir, &up.tmp, &candidate) {
            Ok(()) => {
                up.tmp.clear();
                let stored = join(&up.parent, &candidate);
                up.published = Some(candidate);
                return Ok((stored, None));
            }
            Err(Errno::EXIST) if n < MAX_NUMBERED => n += 1,
            Err(Errno::EXIST) => {
                return Err(Error::other(format!(
                    "storing {}: {MAX_NUMBERED} numbered copies already exist; remove some",
                    names::quote(&shown)
                )));
            }
            Err(e) => return Err(fs_err("storing", &shown, e)),
        }
    }
}

/// Take back a published upload whose new name may not be durable: an
/// exchanged overwrite is exchanged back (the old file returns, the new one
/// goes back under the reserved name), a new name is renamed to a fresh
/// reserved name. Either way dropping the upload then removes it.
fn unpublish(up: &mut Upload) -> std::result::Result<(), Errno> {
    let Some(name) = up.published.take() else {
        // replaced for good (no RENAME_EXCHANGE): nothing to go back to
        return Err(Errno::OPNOTSUPP);
    };
    if !up.tmp.is_empty() {
        rustix::fs::renameat_with(
            &up.dir,
            up.tmp.as_str(),
            &up.dir,
            name.as_str(),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .inspect_err(|_| up.published = Some(name.clone()))?;
        return Ok(());
    }
    loop {
        let tmp = format!("{RESERVED_PREFIX}{}", crate::private::unique_hex());
        match rename_noreplace(&up.dir, &name, &tmp) {
            Ok(()) => {
                up.tmp = tmp;
                return Ok(());
            }
            Err(Errno::EXIST) => continue,
            Err(e) => {
                up.published = Some(name);
                return Err(e);
            }
        }
    }
}

fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> std::result::Result<(), Errno> {
    match rustix::fs::renameat_with(dir, from, dir, to, rustix::fs::RenameFlags::NOREPLACE) {
        // filesystems without RENAME_NOREPLACE: link (fails if taken), then unlink
        Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            rustix::fs::linkat(dir, from, dir, to, AtFlags::empty())?;
            let _ = rustix::fs::unlinkat(dir, from, AtFlags::empty());
            Ok(())
        }
        other => other,
    }
}

fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// The mode a file uploaded with ATTRS is stored with: its permission bits
/// only (no setuid, setgid or sticky), always readable by the server.
pub fn stored_mode(mode: u32) -> u32 {
    (mode & MODE_BITS) | 0o400
}

/// Give an upload the mtime its client sent (the access time is left alone).
fn set_mtime(file: &File, mtime_ns: i64) -> std::result::Result<(), Errno> {
    let mtime = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let omit = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    rustix::fs::futimens(
        file,
        &rustix::fs::Timestamps {
            last_access: omit,
            last_modification: mtime,
        },
    )
}

/// Size, mtime and the remembered digest (if still valid) of an open file.
fn file_info(file: &File) -> Result<FileInfo> {
    let st = rustix::fs::fstat(file).map_err(|e| Error::from(e).context("reading file status"))?;
    let size = st.st_size as u64;
    let mtime = mtime_ns(&st);
    let mut buf = [0u8; 64];
    let sha256 = match rustix::fs::fgetxattr(file, XATTR, &mut buf[..]) {
        Ok(48) => {
            let rec_size = u64::from_be_bytes(buf[32..40].try_into().unwrap_or_default());
            let rec_mtime = i64::from_be_bytes(buf[40..48].try_into().unwrap_or_default());
            let mut d = [0u8; 32];
            d.copy_from_slice(&buf[..32]);
            (rec_size == size && rec_mtime == mtime).then_some(d)
        }
        _ => None,
    };
    Ok(FileInfo {
        size,
        mtime_ns: mtime,
        mode: st.st_mode & MODE_BITS,
        sha256,
    })
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
fn existing_in(
    dir: &OwnedFd,
    component: &str,
) -> std::result::Result<Option<(u64, String)>, Errno> {
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
            Ok(Some((
                st.st_size as u64,
                read_owner(&file).unwrap_or_default(),
            )))
        }
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The owner recorded on a file, if any.
/// Whether a SHA-256 was recorded for the file (its size is asked, not read).
fn has_digest_xattr(file: &File) -> bool {
    rustix::fs::fgetxattr(file, XATTR, &mut [0u8; 0][..]).is_ok()
}

fn read_owner(file: &File) -> Option<String> {
    let mut buf = [0u8; 256];
    match rustix::fs::fgetxattr(file, OWNER_XATTR, &mut buf[..]) {
        Ok(n) => std::str::from_utf8(&buf[..n]).ok().map(str::to_string),
        Err(_) => None,
    }
}

fn set_digest_xattr(
    file: &File,
    size: u64,
    mtime_ns: i64,
    sha256: &[u8; 32],
) -> std::result::Result<(), Errno> {
    let mut v = [0u8; 48];
    v[..32].copy_from_slice(sha256);
    v[32..40].copy_from_slice(&size.to_be_bytes());
    v[40..48].copy_from_slice(&mtime_ns.to_be_bytes());
    rustix::fs::fsetxattr(file, XATTR, &v, rustix::fs::XattrFlags::empty())
}

/// Hash a file that has no remembered digest (placed by hand) and remember it.
fn hash_and_remember(file: &File, info: &FileInfo) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut f = file;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("hashing file", &e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let d: [u8; 32] = h.finalize().into();
    let _ = set_digest_xattr(file, info.size, info.mtime_ns, &d);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Fsync::Never).unwrap();
        (d, s)
    }

    fn upload(s: &Store, name: &str, data: &[u8], overwrite: bool) -> Result<String> {
        let mut up = s.begin_upload(name)?;
        up.file.write_all(data).unwrap();
        let d: [u8; 32] = Sha256::digest(data).into();
        s.commit(up, &d, overwrite, "", None).map(|(n, _)| n)
    }

    #[test]
    fn a_batch_is_committed_together_in_order_with_taken_names_numbered() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Fsync::Always).unwrap();
        upload(&s, "old", b"old", false).unwrap();
        let mut batch = Vec::new();
        for (name, data, overwrite) in [
            ("a.txt", &b"first"[..], false),
            ("sub/deeper/b", b"second", false),
            ("a.txt", b"third", false),
            ("old", b"new", true),
        ] {
            let mut up = s.begin_upload(name).unwrap();
            up.file.write_all(data).unwrap();
            batch.push(Staged {
                up,
                sha256: Sha256::digest(data).into(),
                overwrite,
                owner: "rita".into(),
                attrs: None,
            });
        }
        let got: Vec<Published> = s
            .commit_all(batch)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub/deeper/b", "a (1).txt", "old"]);
        assert_eq!(got[3].1, Some((3, String::new())), "the replaced file");
        for (name, data) in [
            ("a.txt", &b"first"[..]),
            ("sub/deeper/b", b"second"),
            ("a (1).txt", b"third"),
            ("old", b"new"),
        ] {
            assert_eq!(std::fs::read(d.path().join(name)).unwrap(), data);
            let (_, info) = s.open_read(name).unwrap();
            assert_eq!(info.sha256, Some(Sha256::digest(data).into()), "{name}");
            assert_eq!(s.existing(name).unwrap().unwrap().1, "rita");
        }
        // nothing left under a reserved name
        assert_eq!(s.sweep().unwrap(), 0);
        // an empty batch is nothing to do
        assert!(s.commit_all(Vec::new()).is_empty());
    }

    #[test]
    fn clones_copy_only_the_owners_verified_content() {
        let (dir, s) = store();
        let data = b"the same bytes twice".as_slice();
        let d: [u8; 32] = Sha256::digest(data).into();
        let mut up = s.begin_upload("a").unwrap();
        up.file.write_all(data).unwrap();
        s.commit(up, &d, false, "rita", None).unwrap();
        let n = data.len() as u64;
        // nothing is found until the index is filled
        assert_eq!(
            s.clone_from("rita", &d, n, "b").err().unwrap().kind,
            Kind::NotFound
        );
        assert!(s.content.start_building());
        s.index_content();
        // another user, another size or another digest: not found
        for (owner, size, digest) in [("sam", n, d), ("rita", n + 1, d), ("rita", n, [0; 32])] {
            let e = s.clone_from(owner, &digest, size, "b").err().unwrap();
            assert_eq!(e.kind, Kind::NotFound, "{owner} {size}");
        }
        let (up, source) = s.clone_from("rita", &d, n, "b").unwrap();
        assert_eq!(source, "a");
        assert_eq!(s.commit(up, &d, false, "rita", None).unwrap().0, "b");
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), data);
        // the commit recorded the copy: it is a source too
        let mut c = s.content.candidates(&d, "rita");
        c.sort();
        assert_eq!(c, ["a", "b"]);
        // both changed behind a kept mtime: the copy is checked, not trusted
        for name in ["a", "b"] {
            let p = dir.path().join(name);
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            std::fs::write(&p, b"other bytes, the same size").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_len(n).unwrap();
            f.set_modified(mtime).unwrap();
        }
        let e = s.clone_from("rita", &d, n, "c").err().unwrap();
        assert_eq!(e.kind, Kind::NotFound);
        assert!(s.content.candidates(&d, "rita").is_empty(), "forgotten");
        assert_eq!(s.sweep().unwrap(), 0, "no copy left behind");
        assert!(!dir.path().join("c").exists());
    }

    #[test]
    fn a_published_upload_can_be_taken_back_restoring_what_it_replaced() {
        let (dir, s) = store();
        upload(&s, "doc", b"old", false).unwrap();
        for (overwrite, visible) in [(true, "doc"), (false, "doc (1)")] {
            let mut up = s.begin_upload("doc").unwrap();
            up.file.write_all(b"new").unwrap();
            let (name, _) = publish(&mut up, overwrite).unwrap();
            assert_eq!(name, visible);
            assert_eq!(std::fs::read(dir.path().join(visible)).unwrap(), b"new");
            unpublish(&mut up).unwrap();
            drop(up);
            assert_eq!(std::fs::read(dir.path().join("doc")).unwrap(), b"old");
            let listed: Vec<_> = s.list("").unwrap().into_iter().map(|e| e.name).collect();
            assert_eq!(listed, ["doc"], "overwrite {overwrite}");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "nothing left"
            );
        }
        // an overwrite kept removes the old file once the upload is dropped
        let mut up = s.begin_upload("doc").unwrap();
        up.file.write_all(b"newer").unwrap();
        publish(&mut up, true).unwrap();
        drop(up);
        assert_eq!(std::fs::read(dir.path().join("doc")).unwrap(), b"newer");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // overwriting a name that does not exist publishes it
        assert_eq!(upload(&s, "fresh", b"f", true).unwrap(), "fresh");
        assert_eq!(std::fs::read(dir.path().join("fresh")).unwrap(), b"f");
        // a directory is never replaced (nor hidden under a reserved name)
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/inside"), b"kept").unwrap();
        let e = upload(&s, "d", b"file", true).unwrap_err();
        assert!(e.message.contains("is a directory"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("d/inside")).unwrap(), b"kept");
        assert_eq!(s.sweep().unwrap(), 0, "nothing left under a reserved name");
    }

    #[test]
    fn usage_and_sweep_reach_trees_deeper_than_path_max() {
        let (_dir, s) = store();
        // 20 levels of 250-byte names: 5,020 bytes of path, made by hand
        let mut fd = s.open_dir("").unwrap();
        for i in 0..20 {
            let comp = format!("{i:02}{}", "d".repeat(248));
            rustix::fs::mkdirat(&fd, comp.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, comp.as_str(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        for name in ["deep", ".sft-tmp-00"] {
            let f =
                rustix::fs::openat(&fd, name, OFlags::CREATE | OFlags::WRONLY, Mode::RUSR).unwrap();
            rustix::io::write(&f, b"1234567").unwrap();
        }
        assert_eq!(s.sweep().unwrap(), 1);
        let u = s.usage().unwrap();
        assert_eq!(u.get(""), Some(&(7, 1)));
    }

    #[test]
    fn storage_failures_say_what_happened() {
        let cases = [
            (Errno::ROFS, "read-only filesystem"),
            (Errno::ACCESS, "no permission"),
            (Errno::IO, "Input/output error"),
            (Errno::NOSPC, "storage is full"),
        ];
        for (errno, says) in cases {
            let e = fs_err("storing", "a.txt", errno);
            assert!(e.message.starts_with("storing 'a.txt': "), "{}", e.message);
            assert!(e.message.contains(says), "{errno:?}: {}", e.message);
            assert!(!e.message.contains("os error"), "{}", e.message);
        }
        assert!(
            !fs_err("storing", "a", Errno::ROFS)
                .message
                .contains("permission")
        );
    }

    #[test]
    fn an_upload_is_invisible_until_committed() {
        let (dir, s) = store();
        let mut up = s.begin_upload("a.txt").unwrap();
        up.file.write_all(b"hello").unwrap();
        assert!(s.list("").unwrap().is_empty());
        // on disk only under a reserved name, which clients cannot reach
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(RESERVED_PREFIX));
        assert!(s.open_read(&names[0]).is_err());
        drop(up);
        assert!(s.list("").unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "removed when dropped"
        );
    }

    #[test]
    fn taken_names_get_numbered_and_overwrite_replaces() {
        let (dir, s) = store();
        assert_eq!(upload(&s, "r.pdf", b"1", false).unwrap(), "r.pdf");
        assert_eq!(upload(&s, "r.pdf", b"2", false).unwrap(), "r (1).pdf");
        assert_eq!(upload(&s, "r.pdf", b"3", false).unwrap(), "r (2).pdf");
        assert_eq!(upload(&s, "r.pdf", b"4", true).unwrap(), "r.pdf");
        assert_eq!(std::fs::read(dir.path().join("r.pdf")).unwrap(), b"4");
        assert_eq!(std::fs::read(dir.path().join("r (1).pdf")).unwrap(), b"2");
        let listed: Vec<_> = s.list("").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(listed, ["r (1).pdf", "r (2).pdf", "r.pdf"]);
    }

    #[test]
    fn digests_are_remembered_and_invalidated_by_changes() {
        let (dir, s) = store();
        upload(&s, "f", b"abc", false).unwrap();
        let e = &s.list("").unwrap()[0];
        assert_eq!(
            e.sha256.map(hex::encode).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        std::fs::write(dir.path().join("f"), b"changed by hand").unwrap();
        let e = &s.list("").unwrap()[0];
        assert_eq!(e.sha256, Some(Sha256::digest(b"changed by hand").into()));
    }

    #[test]
    fn attrs_are_stored_before_the_digest_is_recorded() {
        let (_dir, s) = store();
        let mut up = s.begin_upload("run.sh").unwrap();
        up.file.write_all(b"#!/bin/sh\n").unwrap();
        let d: [u8; 32] = Sha256::digest(b"#!/bin/sh\n").into();
        let mtime_ns = 978_307_200_123_456_789; // 2001-01-01, with nanoseconds
        let attrs = Attrs {
            mode: 0o4750, // setuid is dropped
            mtime_ns,
        };
        s.commit(up, &d, false, "u", Some(attrs)).unwrap();
        let e = &s.list("").unwrap()[0];
        assert_eq!(e.mode, Some(0o750));
        assert_eq!(e.mtime_ns, mtime_ns);
        let (_, info) = s.open_read("run.sh").unwrap();
        assert_eq!(
            info.sha256,
            Some(d),
            "the digest is valid for the final mtime"
        );
        // a mode the server could not read is made readable by its owner
        let mut up = s.begin_upload("locked").unwrap();
        up.file.write_all(b"x").unwrap();
        let d: [u8; 32] = Sha256::digest(b"x").into();
        let attrs = Attrs {
            mode: 0,
            mtime_ns: -1_500_000_000,
        };
        s.commit(up, &d, false, "u", Some(attrs)).unwrap();
        let (_, info) = s.open_read("locked").unwrap();
        assert_eq!((info.mode, info.mtime_ns), (0o400, -1_500_000_000));
        assert_eq!(info.sha256, Some(d));
    }

    #[test]
    fn symlinks_never_lead_out_of_the_root() {
        let (dir, s) = store();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
        assert!(s.open_read("link/secret").is_err());
        assert!(s.open_read("s").is_err());
        assert!(s.begin_upload("link/new").is_err());
        assert!(s.list("link").is_err());
        assert!(!outside.path().join("new").exists());
        // links are not listed
        assert!(s.list("").unwrap().is_empty());
    }

    #[test]
    fn uploads_create_directories_and_remove_refuses_them() {
        let (dir, s) = store();
        assert_eq!(upload(&s, "a/b/c.txt", b"x", false).unwrap(), "a/b/c.txt");
        assert!(dir.path().join("a/b/c.txt").is_file());
        assert_eq!(s.remove("a").unwrap_err().kind, Kind::Usage);
        s.remove("a/b/c.txt").unwrap();
        assert_eq!(s.remove("a/b/c.txt").unwrap_err().kind, Kind::NotFound);
    }

    #[test]
    fn reserved_names_are_refused_and_swept() {
        let (dir, s) = store();
        assert_eq!(
            s.begin_upload(".sft-tmp-x").err().unwrap().kind,
            Kind::Usage
        );
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/.sft-tmp-abc"), b"left over").unwrap();
        assert!(s.list("d").unwrap().is_empty());
        assert_eq!(s.sweep().unwrap(), 1);
        assert!(!dir.path().join("d/.sft-tmp-abc").exists());
    }
}
