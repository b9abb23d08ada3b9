//! A file's bytes as an immutable set of part objects (`blobs/ID/NNNNNN`,
//! each `PART` bytes but the last), written with plain PUTs before anything
//! names them. No multipart upload is used: every object sft ever sent can be
//! listed, so the collector finds every orphan, and an upload cut off is
//! simply the parts already sent.
//!
//! An upload is sent while it arrives by `ship.rs`.
//!
//! A download reads the parts in order, a couple ahead (`stream`), into a
//! pipe the server's reader serves from: the first byte does not wait for
//! the last, and nothing is copied to the local disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};

use super::{Bucket, layout, store_err};
use crate::error::{Error, Result};

/// Bytes per part: few requests (256 for 2 GiB), little memory (at most
/// `IN_FLIGHT` parts per transfer).
pub const PART: u64 = 8 << 20;
/// The largest part size a manifest may name (a damaged or hostile one
/// cannot make a download buffer more than this at once).
pub const MAX_PART: u64 = 64 << 20;
/// Parts of one transfer being sent or fetched at once.
pub(super) const IN_FLIGHT: usize = 2;

/// How many parts of `part` bytes hold `size` bytes (none for an empty file).
pub fn count(size: u64, part: u64) -> u64 {
    if part == 0 { 0 } else { size.div_ceil(part) }
}

/// A blob whose parts are all stored: what its manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub size: u64,
    pub part: u64,
    pub sha256: [u8; 32],
}

/// Remove every part of blob `id` (best effort: what is left is an orphan
/// for the collector), then its `held/` marker if it has one.
pub fn discard(b: &Bucket, id: &str, held: bool) {
    if let Err(e) = remove(b, id) {
        tracing::warn!(event = "storage", "{e}");
        return;
    }
    if held {
        unhold(b, id);
    }
}

/// Remove this server's `held/` marker of blob `id` (best effort: the
/// collector ignores the markers of servers gone).
pub fn unhold(b: &Bucket, id: &str) {
    let key = b.key(&layout::held(&b.server, id));
    let r = b.run(|os| async move {
        match os.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(&e, "removing", &key)),
        }
    });
    if let Err(e) = r {
        tracing::warn!(event = "storage", "{e}");
    }
}

/// Remove every part of blob `id` (an absent one is fine).
pub fn remove(b: &Bucket, id: &str) -> Result<()> {
    let prefix = b.key(&layout::blob(id));
    b.run(|os| async move {
        let listed: Vec<_> = os
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &prefix))?;
        delete_all(&os, listed.into_iter().map(|m| m.location).collect()).await
    })
}

/// Delete `keys`, a few at a time; absent ones are fine.
pub async fn delete_all(os: &Arc<dyn object_store::ObjectStore>, keys: Vec<Path>) -> Result<()> {
    let mut gone = futures_util::stream::iter(keys)
        .map(|key| {
            let os = os.clone();
            async move {
                match os.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(store_err(&e, "removing", &key)),
                }
            }
        })
        .buffer_unordered(8);
    while let Some(r) = gone.next().await {
        r?;
    }
    Ok(())
}

/// Fetch one part whole, checking its length.
async fn fetch_part(
    os: Arc<dyn object_store::ObjectStore>,
    key: Path,
    len: u64,
    shown: String,
) -> Result<bytes::Bytes> {
    let got = match os.get(&key).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|e| store_err(&e, "reading", &key))?;
    if got.len() as u64 != len {
        return Err(Error::integrity(format!(
            "{shown}: a part of its data in the object store has the wrong size (damaged)"
        )));
    }
    Ok(got)
}

/// The parts of a blob, in order, `IN_FLIGHT` fetched ahead.
pub struct Parts<'a> {
    b: &'a Bucket,
    id: String,
    size: u64,
    part: u64,
    shown: String,
    next: u64,
    ahead: VecDeque<Receiver<Result<bytes::Bytes>>>,
}

impl<'a> Parts<'a> {
    pub fn new(b: &'a Bucket, id: &str, size: u64, part: u64, shown: &str) -> Parts<'a> {
        Parts {
            b,
            id: id.to_string(),
            size,
            part,
            shown: shown.to_string(),
            next: 0,
            ahead: VecDeque::new(),
        }
    }

    /// The next part's bytes; `None` after the last.
    pub fn next_part(&mut self) -> Result<Option<bytes::Bytes>> {
        let total = count(self.size, self.part);
        while self.ahead.len() < IN_FLIGHT && self.next < total {
            let at = self.next * self.part;
            let len = (self.size - at).min(self.part);
            let key = self.b.key(&layout::part(&self.id, self.next));
            let rx =
                self.b
                    .bridge
                    .start(fetch_part(self.b.os.clone(), key, len, self.shown.clone()))?;
            self.ahead.push_back(rx);
            self.next += 1;
        }
        let Some(rx) = self.ahead.pop_front() else {
            return Ok(None);
        };
        rx.recv()
            .map_err(|_| Error::other("the object-store threads have stopped"))?
            .map(Some)
    }
}

/// Fetch blob `id` into `out` (a scratch file, for readers that need to
/// seek) and return its SHA-256.
pub fn fetch(
    b: &Bucket,
    id: &str,
    size: u64,
    part: u64,
    out: &File,
    shown: &str,
) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut parts = Parts::new(b, id, size, part, shown);
    let mut w = out;
    while let Some(p) = parts.next_part()? {
        hasher.update(&p);
        w.write_all(&p)
            .map_err(|e| Error::io(format!("buffering the download of {shown}"), &e))?;
    }
    Ok(hasher.finalize().into())
}

/// Serve blob `id` through a pipe: the returned read end yields its bytes in
/// order as the parts arrive (two fetched ahead), from a thread of its own
/// (`sft-fetch`) that ends when the last byte is written or the reader goes.
/// The reader hashes what it serves and checks it against the manifest's
/// SHA-256 at the end (`verify::check_stored`): a damaged blob is logged as
/// an integrity error and the transfer ends with an error instead of END
/// (the client, which got that digest before the data, would refuse it
/// too). A failure to fetch closes the pipe early: the reader finds the data
/// short, and the cause is logged here.
pub fn stream(b: &Arc<Bucket>, id: &str, size: u64, part: u64, shown: &str) -> Result<File> {
    let (rx, mut tx) = std::io::pipe().map_err(|e| Error::io("making a pipe", &e))?;
    let (b, id, shown) = (b.clone(), id.to_string(), shown.to_string());
    std::thread::Builder::new()
        .name("sft-fetch".into())
        .spawn(move || {
            let mut parts = Parts::new(&b, &id, size, part, &shown);
            loop {
                match parts.next_part() {
                    Ok(Some(p)) => {
                        if tx.write_all(&p).is_err() {
                            return; // the reader is gone (the client left)
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(event = "get", "{shown}: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting a download's fetching thread", &e))?;
    Ok(File::from(std::os::fd::OwnedFd::from(rx)))
}

/// A blob stored by a server-side copy (CLONE), waiting for its manifest:
/// dropped uncommitted, its parts go.
pub struct Copied {
    sent: Option<Sent>,
    bucket: Arc<Bucket>,
}

impl Copied {
    /// The copy's blob, for its manifest (it is no longer removed on drop).
    pub fn take(mut self) -> Option<Sent> {
        self.sent.take()
    }
}

impl Drop for Copied {
    fn drop(&mut self) {
        if let Some(s) = self.sent.take() {
            discard(&self.bucket, &s.id, false);
        }
    }
}

/// Copy every part of a stored blob to a new blob, in the store (no byte
/// passes through the server): the new blob is immutable and independent,
/// so either file can be removed without touching the other. The parts were
/// checked against `sha256` when the source was uploaded; each copy's size
/// is checked again.
pub fn copy(b: &Arc<Bucket>, from: &str, size: u64, part: u64, sha256: [u8; 32]) -> Result<Copied> {
    let id = super::random_id();
    let n = count(size, part);
    let pairs: Vec<(Path, Path, u64)> = (0..n)
        .map(|i| {
            let len = (size - i * part).min(part);
            (
                b.key(&layout::part(from, i)),
                b.key(&layout::part(&id, i)),
                len,
            )
        })
        .collect();
    let copied = Copied {
        sent: Some(Sent {
            id: id.clone(),
            size,
            part,
            sha256,
        }),
        bucket: b.clone(),
    };
    b.run(|os| async move {
        let mut done = futures_util::stream::iter(pairs)
            .map(|(src, dst, len)| {
                let os = os.clone();
                async move {
                    os.copy(&src, &dst)
                        .await
                        .map_err(|e| store_err(&e, "copying", &src))?;
                    let meta = os
                        .head(&dst)
                        .await
                        .map_err(|e| store_err(&e, "checking", &dst))?;
                    if meta.size != len {
                        return Err(Error::integrity(format!(
                            "copying {src}: the copy has {} bytes, not {len}",
                            meta.size
                        )));
                    }
                    Ok(())
                }
            })
            .buffer_unordered(8);
        while let Some(r) = done.next().await {
            r?;
        }
        Ok(())
    })?;
    Ok(copied)
}
