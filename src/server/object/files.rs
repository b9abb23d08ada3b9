//! The store's operations on names, on the bucket: what `server::store`
//! does on a local root, for `--store s3://`. Directories are prefixes; a
//! marker object keeps one that is empty (made by MKDIR, or left by the
//! removal of its last file, as on disk). A name is visible exactly while
//! its manifest exists.

use std::fs::File;
use std::sync::Arc;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::manifest::Manifest;
use super::{Bucket, blob, layout, names as naming, ship, store_err};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind};
use crate::server::content::ContentIndex;
use crate::server::store::{Existing, FileInfo, Published, Staged, stored_mode};

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What a directory prefix holds.
struct Listing {
    /// Manifests: key and last component.
    files: Vec<(Path, String)>,
    /// Subdirectories' last components.
    dirs: Vec<String>,
    /// Made by MKDIR (a marker object).
    marked: bool,
}

fn children(b: &Bucket, dir: &str) -> Result<Listing> {
    let prefix = b.key(&layout::dir(dir));
    b.run(|os| async move {
        let listed = os
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| store_err(&e, "listing", &prefix))?;
        let mut marked = false;
        let mut files = Vec::new();
        for o in listed.objects {
            match layout::last(&o.location) {
                Some(n) if n == layout::DIR_MARKER => marked = true,
                Some(n) => files.push((o.location, n)),
                None => {}
            }
        }
        let dirs = listed
            .common_prefixes
            .iter()
            .filter_map(layout::last)
            .collect();
        Ok(Listing {
            files,
            dirs,
            marked,
        })
    })
}

fn join(parent: &str, comp: &str) -> String {
    if parent.is_empty() {
        comp.to_string()
    } else {
        format!("{parent}/{comp}")
    }
}

fn dir_entry(name: &str) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        size: 0,
        mtime_ns: 0,
        sha256: None,
        name: name.to_string(),
        owner: String::new(),
        mode: Some(0o755),
    }
}

/// Whether directory `name` exists (has a marker or anything in it).
fn is_dir(b: &Bucket, name: &str) -> Result<bool> {
    let Listing {
        files,
        dirs,
        marked,
    } = children(b, name)?;
    Ok(marked || !files.is_empty() || !dirs.is_empty())
}

pub fn list(b: &Bucket, rel: &str) -> Result<Vec<Entry>> {
    let Listing {
        files,
        dirs,
        marked,
    } = children(b, rel)?;
    if !rel.is_empty() && !marked && files.is_empty() && dirs.is_empty() {
        return Err(Error::not_found(format!(
            "listing {}: no such file or directory",
            names::quote(rel)
        )));
    }
    // the manifests, read a few at a time
    let keys: Vec<(Path, String)> = files;
    let read = b.run(|os| async move {
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::new();
        let mut it = keys.into_iter();
        loop {
            while set.len() < 16 {
                let Some((key, comp)) = it.next() else { break };
                let os = os.clone();
                set.spawn(async move {
                    let got = match os.get(&key).await {
                        Ok(r) => r.bytes().await,
                        Err(e) => Err(e),
                    };
                    (key, comp, got)
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let Ok((key, comp, got)) = done else { continue };
            match got {
                Ok(bytes) => out.push((comp, bytes)),
                // removed since it was listed
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(&e, "reading", &key)),
            }
        }
        Ok(out)
    })?;
    let mut out: Vec<Entry> = dirs
        .iter()
        .filter(|d| names::validate(&join(rel, d)).is_ok())
        .map(|d| dir_entry(d))
        .collect();
    for (comp, bytes) in read {
        if let Ok(m) = Manifest::decode(&bytes, &join(rel, &comp)) {
            out.push(m.entry(&comp));
        }
    }
    out.sort_by(|a, c| a.name.cmp(&c.name));
    Ok(out)
}

pub fn stat(b: &Bucket, name: &str) -> Result<Entry> {
    let (_, comp) = names::split_parent(name);
    if let Some(m) = naming::read(b, name)? {
        return Ok(m.entry(comp));
    }
    if is_dir(b, name)? {
        return Ok(dir_entry(comp));
    }
    Err(Error::not_found(format!(
        "no such file: {}",
        names::quote(name)
    )))
}

pub fn existing(b: &Bucket, name: &str) -> Result<Option<Existing>> {
    Ok(naming::read(b, name)?.map(|m| Existing {
        size: m.size,
        owner: m.owner,
    }))
}

pub fn mkdir(b: &Bucket, name: &str) -> Result<()> {
    if naming::read(b, name)?.is_some() {
        return Err(Error::new(
            Kind::Usage,
            format!(
                "creating directory {}: a file has that name",
                names::quote(name)
            ),
        ));
    }
    mark_dir(b, name)
}

/// Make directory `name` exist while empty (a marker object; idempotent).
fn mark_dir(b: &Bucket, name: &str) -> Result<()> {
    let key = b.key(&layout::marker(name));
    b.run(|os| async move {
        os.put(&key, Vec::new().into())
            .await
            .map(|_| ())
            .map_err(|e| store_err(&e, "creating", &key))
    })
}

pub fn rmdir(b: &Bucket, name: &str) -> Result<()> {
    if naming::read(b, name)?.is_some() {
        return Err(Error::usage(format!(
            "{} is not a directory; remove files with sft rm",
            names::quote(name)
        )));
    }
    let Listing {
        files,
        dirs,
        marked,
    } = children(b, name)?;
    if !files.is_empty() || !dirs.is_empty() {
        return Err(Error::usage(format!(
            "directory {} is not empty; remove its contents first (sft rm -r)",
            names::quote(name)
        )));
    }
    if !marked {
        return Err(Error::not_found(format!(
            "removing directory {}: no such file or directory",
            names::quote(name)
        )));
    }
    let key = b.key(&layout::marker(name));
    b.run(|os| async move {
        os.delete(&key)
            .await
            .map_err(|e| store_err(&e, "removing", &key))
    })
}

/// Remove a file: its manifest first (invisible at once), then its blob.
/// What it was, for the ledger.
pub fn remove(b: &Bucket, name: &str) -> Result<Existing> {
    let Some(m) = naming::read(b, name)? else {
        if is_dir(b, name)? {
            return Err(Error::usage(format!(
                "{} is a directory; sft rm removes files",
                names::quote(name)
            )));
        }
        return Err(Error::not_found(format!(
            "no such file: {}",
            names::quote(name)
        )));
    };
    let key = b.key(&layout::file(name));
    b.run(|os| async move {
        match os.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(&e, "removing", &key)),
        }
    })?;
    // a blob left by a failure here is an orphan for the collector
    if let Err(e) = blob::remove(b, &m.blob) {
        tracing::warn!(event = "storage", "{e}");
    }
    // its directory stays, as on disk, when its last file goes
    let (parent, _) = names::split_parent(name);
    if !parent.is_empty()
        && let Err(e) = mark_dir(b, parent)
    {
        tracing::warn!(event = "storage", "{e}");
    }
    Ok(Existing {
        size: m.size,
        owner: m.owner,
    })
}

/// The manifest of regular file `name`, or the error a reader gets.
fn readable(b: &Bucket, name: &str) -> Result<Manifest> {
    let Some(m) = naming::read(b, name)? else {
        if is_dir(b, name)? {
            return Err(Error::usage(format!(
                "{} is not a regular file",
                names::quote(name)
            )));
        }
        return Err(Error::not_found(format!(
            "opening {}: no such file or directory",
            names::quote(name)
        )));
    };
    Ok(m)
}

fn info_of(m: &Manifest) -> FileInfo {
    FileInfo {
        size: m.size,
        mtime_ns: m.mtime_ns,
        mode: m.mode,
        sha256: m.digest(),
    }
}

/// Fetch `name` into `spool` (an unlinked scratch file) and check it
/// against its manifest's SHA-256 before it is served: for readers that
/// seek (a resumed or ranged download, the web's ranges).
pub fn open_read(b: &Bucket, spool: File, name: &str) -> Result<(File, FileInfo)> {
    let m = readable(b, name)?;
    let shown = names::quote(name);
    let digest = blob::fetch(b, &m.blob, m.size, m.part, &spool, &shown)?;
    if Some(digest) != m.digest() {
        return Err(Error::integrity(format!(
            "{shown}: the data in the object store does not match its recorded SHA-256 (damaged); not sent"
        )));
    }
    use std::io::Seek;
    let mut f = spool;
    f.rewind()
        .map_err(|e| Error::io(format!("buffering the download of {shown}"), &e))?;
    Ok((f, info_of(&m)))
}

/// Open `name` for a reader that reads it once, in order, from its first
/// byte: a file larger than `small` is streamed from the bucket as its parts
/// arrive (`blob::stream`; the reader checks the whole against the
/// manifest's SHA-256, which the client also gets before the data), a
/// smaller one is fetched and checked whole first (`open_read`).
pub fn open_stream(
    b: &Arc<Bucket>,
    spool: impl FnOnce() -> Result<File>,
    name: &str,
    small: u64,
) -> Result<(File, FileInfo)> {
    let m = readable(b, name)?;
    let Some(digest) = m.digest() else {
        return Err(Error::other(format!(
            "the manifest of {} in the object store has no valid SHA-256",
            names::quote(name)
        )));
    };
    if m.size <= small {
        let shown = names::quote(name);
        let spool = spool()?;
        let got = blob::fetch(b, &m.blob, m.size, m.part, &spool, &shown)?;
        if got != digest {
            return Err(Error::integrity(format!(
                "{shown}: the data in the object store does not match its recorded SHA-256 (damaged); not sent"
            )));
        }
        use std::io::Seek;
        let mut f = spool;
        f.rewind()
            .map_err(|e| Error::io(format!("buffering the download of {shown}"), &e))?;
        return Ok((f, info_of(&m)));
    }
    let f = blob::stream(b, &m.blob, m.size, m.part, &names::quote(name))?;
    Ok((f, info_of(&m)))
}

/// Commit spooled uploads: each is sent as a blob, its SHA-256 checked
/// again as it is sent, then made visible by its manifest. One result each.
/// A batch (pipelined small files) is committed `AT_ONCE` at a time, each
/// on a scoped thread of its own, since each waits on round trips.
pub fn commit_all(
    b: &Bucket,
    content: &ContentIndex,
    batch: Vec<Staged>,
) -> Vec<Result<Published>> {
    if batch.len() < 2 {
        return batch
            .into_iter()
            .map(|st| commit_one(b, content, st))
            .collect();
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut rest = batch.into_iter().peekable();
    while rest.peek().is_some() {
        let group: Vec<Staged> = rest.by_ref().take(AT_ONCE).collect();
        std::thread::scope(|sc| {
            let running: Vec<_> = group
                .into_iter()
                .map(|st| sc.spawn(move || commit_one(b, content, st)))
                .collect();
            for r in running {
                out.push(r.join().unwrap_or_else(|_| {
                    Err(Error::other(
                        "internal error: a commit to the object store failed",
                    ))
                }));
            }
        });
    }
    out
}

/// Commits of one batch in flight at once.
const AT_ONCE: usize = 16;

fn commit_one(b: &Bucket, content: &ContentIndex, mut st: Staged) -> Result<Published> {
    let name = st.up.name();
    let shown = names::quote(&name);
    if let Some(copied) = st.up.cloned.take().and_then(blob::Copied::take) {
        // a CLONE's copy: stored already, verified as its source was
        let sent = (&*copied.id, copied.size, copied.part, copied.sha256);
        let published = publish_sent(b, &st, sent, &shown);
        match &published {
            Ok(p) => content.stored(&copied.sha256, &st.owner, &p.name, copied.size),
            Err(_) => blob::discard(b, &copied.id, false),
        }
        return published;
    }
    let size = st
        .up
        .file
        .metadata()
        .map_err(|e| Error::io(format!("reading the upload of {shown}"), &e))?
        .len();
    // the parts a shipper sent while the data arrived, else none yet
    let out = match st.up.ship.take() {
        Some(shipper) => shipper.finish()?,
        None => {
            let own = st
                .up
                .file
                .try_clone()
                .map_err(|e| Error::io("duplicating the upload file", &e))?;
            ship::Outgoing::new(own, &shown)
        }
    };
    let held = out.held;
    let blob::Sent {
        id,
        size,
        part,
        sha256: digest,
    } = out.finish(b, size)?;
    let published = publish_sent(b, &st, (&id, size, part, digest), &shown);
    match &published {
        Ok(p) => {
            content.stored(&digest, &st.owner, &p.name, size);
            // a manifest names the parts now: the resume marker may go
            if held {
                blob::unhold(b, &id);
            }
        }
        Err(_) => blob::discard(b, &id, held),
    }
    published
}

/// Make the stored blob visible under the upload's name (its manifest).
fn publish_sent(
    b: &Bucket,
    st: &Staged,
    (id, size, part, digest): (&str, u64, u64, [u8; 32]),
    shown: &str,
) -> Result<Published> {
    let name = st.up.name();
    let id = id.to_string();
    if digest != st.sha256 {
        return Err(Error::integrity(format!(
            "{shown}: the upload changed on the server's scratch disk before it was stored; nothing was stored"
        )));
    }
    let m = Manifest {
        blob: id.clone(),
        size,
        part,
        sha256: hex::encode(digest),
        owner: st.owner.clone(),
        mode: st.attrs.map_or(0o644, |a| stored_mode(a.mode)),
        mtime_ns: st.attrs.map_or_else(now_ns, |a| a.mtime_ns),
        holds: st.holds.clone(),
    };
    // not while this server's reservations may be resolved by another
    b.fence(&st.holds)?;
    let mut replaced = None;
    if st.overwrite
        && let Some(old) = naming::read(b, &name)?
    {
        // no conditional replace on S3 engines we trust: the old manifest
        // goes, then ours is created if absent (a racing upload that takes
        // the name in between wins, and this one fails: nothing is lost)
        let key = b.key(&layout::file(&name));
        b.run(|os| async move {
            match os.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err(&e, "replacing", &key)),
            }
        })?;
        let _ = blob::remove(b, &old.blob);
        replaced = Some(Existing {
            size: old.size,
            owner: old.owner,
        });
        if !naming::create(b, &layout::file(&name), m.encode())? {
            return Err(Error::other(format!(
                "{shown} was replaced by another upload at the same moment; this one was not stored (its old file is gone): try again"
            )));
        }
        return still_leased(b, &st.holds, name, &id, replaced);
    }
    let stored = naming::publish(b, &name, &m)?;
    still_leased(b, &st.holds, stored, &id, replaced)
}

/// Every file with an owner, from its manifest: (name, owner, SHA-256,
/// size), for the content index (CLONE).
pub fn holders(b: &Bucket) -> Result<Vec<crate::server::content::Holder>> {
    Ok(super::scan::manifests(b)?
        .into_iter()
        .filter(|(name, m)| !m.owner.is_empty() && names::validate(name).is_ok())
        .filter_map(|(name, m)| Some((name, m.owner.clone(), m.digest()?, m.size)))
        .collect())
}

/// A verified copy of a file of `owner` holding `size` bytes hashing to
/// `sha256`, named `source` when the index was filled: `None` if that file
/// no longer holds it.
pub fn clone_source(
    b: &Arc<Bucket>,
    source: &str,
    owner: &str,
    sha256: &[u8; 32],
    size: u64,
) -> Result<Option<blob::Copied>> {
    let Some(m) = naming::read(b, source)? else {
        return Ok(None);
    };
    if m.owner != owner || m.digest() != Some(*sha256) || m.size != size {
        return Ok(None);
    }
    blob::copy(b, &m.blob, m.size, m.part, *sha256).map(Some)
}

/// The lease checked again once the manifest exists: if this server was
/// silent long enough meanwhile (a create retried across a network cut)
/// that another may have released its reservations, the file is taken back
/// rather than left uncounted (its parts go with the caller's error).
fn still_leased(
    b: &Bucket,
    holds: &[u64],
    name: String,
    id: &str,
    replaced: Option<Existing>,
) -> Result<Published> {
    if let Err(e) = b.lease.check(holds) {
        if naming::read(b, &name)?.is_some_and(|m| m.blob == id) {
            let key = b.key(&layout::file(&name));
            b.run(|os| async move {
                os.delete(&key)
                    .await
                    .map_err(|e| store_err(&e, "removing", &key))
            })?;
        }
        return Err(e);
    }
    Ok(Published { name, replaced })
}
