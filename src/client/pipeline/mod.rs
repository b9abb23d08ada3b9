//! Many files over one session without a round trip per file. Uploads are
//! pipelined: PUT with the PIPELINED flag is followed at once by its DATA and
//! END, without waiting for PUT_READY. Downloads are requested ahead: several
//! GETs are outstanding. Replies come back in order. A window bounds how far
//! the sender runs ahead of the replies; a reader of replies runs alongside
//! the sender, so neither side can block the other.
//!
//! This file holds the jobs, the windows and what uploads share; `put.rs`
//! and `get.rs` the two directions, `stream.rs` an upload of standard
//! input, `receive.rs` one download, `small.rs` the storing of small
//! downloads off the async threads.

mod get;
mod put;
pub(in crate::client) use put::same_prefix;
mod receive;
pub(in crate::client) use receive::{Expected, verify_download};
mod small;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Uploaded;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol;
use crate::transfer;

/// Why the sender stopped a file the server had already refused.
const REFUSED: &str = "refused by the server";

/// Most files requested ahead of their replies (downloads).
pub const WINDOW: usize = 256;

/// Most small files sent ahead of their replies (uploads): enough for the
/// server to make hundreds durable with one sync (group commit). The server
/// bounds what it buffers, so this bounds nothing but bookkeeping.
pub const PUT_WINDOW: usize = 1024;

/// Files this small are pipelined; larger ones wait for PUT_READY, so a
/// refused upload (quota) costs no data at all, and the round trip is lost in
/// the time the file takes to send.
pub const PIPELINE_BELOW: u64 = 1 << 20;

/// One upload: a local file and the remote name asked for.
#[derive(Debug, Clone)]
pub struct PutJob {
    pub local: PathBuf,
    pub remote: String,
}

/// A file the server may already hold (CLONE): its remote name, size and
/// SHA-256.
#[derive(Debug, Clone)]
pub struct CloneJob {
    pub remote: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The local file's mode and mtime, sent in ATTRS (when preserved).
    pub attrs: Option<protocol::Attrs>,
}

/// Files this large are first offered to the server by content (CLONE):
/// hashing them costs a read, and asking costs no round trip of its own
/// (all are asked together); smaller files are simply sent.
pub const CLONE_FROM: u64 = 1 << 20;

/// Where a download goes.
#[derive(Debug, Clone)]
pub enum Dest {
    /// A local path (through a `.part` file, renamed when verified).
    Path(PathBuf),
    /// Standard output, as it arrives (a mismatch is still reported, exit 8).
    Stdout,
}

/// One download.
#[derive(Debug, Clone)]
pub struct GetJob {
    pub remote: String,
    pub dest: Dest,
    /// The SHA-256 the file must have (--sha256, --check).
    pub expect: Option<[u8; 32]>,
}

/// A file's data, sent: its digest, the bytes its DATA frames took on the
/// wire, and how many of its bytes the server already held (resumed).
pub struct Sent {
    pub sha256: [u8; 32],
    pub wire: u64,
    pub resumed: u64,
}

/// A place in the window of files sent ahead of their replies.
async fn slot(window: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
    window
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::other("internal error: window closed"))
}

/// PUT_OK checked against what was sent: the stored name is valid, and the
/// size and SHA-256 the server acknowledges are those of the data sent.
pub(super) fn acknowledged(
    got: u64,
    theirs: &[u8; 32],
    name: String,
    size: u64,
    sent: Sent,
    started: Instant,
) -> Result<Uploaded> {
    let Sent {
        sha256,
        wire,
        resumed,
    } = sent;
    names::validate(&name)
        .map_err(|e| Error::protocol(format!("the server named the stored file badly: {e}")))?;
    if got != size || !transfer::same_digest(theirs, &sha256) {
        return Err(Error::integrity(format!(
            "the server acknowledged {got} bytes with SHA-256 {} but {size} bytes with SHA-256 {} were sent",
            hex::encode(theirs),
            hex::encode(sha256)
        )));
    }
    Ok(Uploaded {
        name,
        size,
        sha256,
        wire,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
