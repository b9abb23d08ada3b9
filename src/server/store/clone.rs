//! CLONE (PROTOCOL.md §4.4c): an upload stored from content the server
//! already holds, and the content index it is found by.

use std::fs::File;
use std::io::Read;

use rustix::fs::{Mode, OFlags};

use super::meta::{file_info, read_owner, sha256_to_end};
use super::{RESERVED_PREFIX, Store, Upload, check_client_name, join, resolve};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::server::content;

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
        if let Some(b) = &self.object {
            // a server-side copy of the parts into a new blob
            for source in self.content.candidates(sha256, owner) {
                match super::remote::clone_source(b, &source, owner, sha256, size) {
                    Ok(Some(copied)) => {
                        let mut up = self.begin_upload(name)?;
                        up.cloned = Some(copied);
                        return Ok((up, source));
                    }
                    Ok(None) => self.content.stale(&source),
                    Err(e) => tracing::warn!(event = "storage", "{e}"),
                }
            }
            return Err(Error::not_found(format!(
                "the server holds no file of {owner} with {size} bytes and SHA-256 {}",
                hex::encode(sha256)
            )));
        }
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
        if let Some(b) = &self.object {
            // every manifest (one read each); files other servers store
            // later are not seen here: a CLONE of them is a miss
            let all = super::remote::holders(b).unwrap_or_else(|e| {
                tracing::warn!(event = "storage", "{e}; uploads can be stored from content already held only for the files stored through this server from now on");
                Vec::new()
            });
            let mut bytes = 0usize;
            return all
                .into_iter()
                .take_while(|(name, owner, _, _)| {
                    bytes += content::cost(name, owner);
                    bytes <= content::BUDGET
                })
                .collect();
        }
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
                let c = content::cost(&full, &owner);
                if bytes + c <= content::BUDGET {
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
    let (n, digest) = sha256_to_end(up.read_back()?)?;
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
