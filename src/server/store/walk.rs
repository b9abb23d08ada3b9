//! Walks over the whole tree beneath the root: usage per owner, the sweep of
//! leftovers, and the walk itself (paths of any length).

use std::fs::File;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::meta::{has_digest_xattr, read_owner};
use super::{RESERVED_PREFIX, Store, resolve};
use crate::error::{Error, Result};
use crate::names;

impl Store {
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
    pub(super) fn walk(
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
