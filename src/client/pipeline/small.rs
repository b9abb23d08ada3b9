//! Small downloads: gathered in memory and stored, in order, by one
//! blocking thread.

use std::path::PathBuf;
use std::time::Instant;

use tokio::io::ReadHalf;
use tokio::sync::{mpsc, oneshot};

use super::receive::{Counted, Downloading, Expected, Want, next_block, verify_download};
use crate::client::{Downloaded, Pacer, Stream};
use crate::connection::FrameReader;
use crate::error::Result;
use crate::progress::Progress;
use crate::protocol;
use crate::transfer;

/// Downloads up to this size are gathered in memory and stored in one step.
pub(super) const SMALL_DOWNLOAD: u64 = 1 << 20;

/// Small downloads received but not yet stored; bounds the memory they hold.
const STORE_QUEUE: usize = 8;

/// A small download, whole in memory, for the storing thread.
pub(super) struct StoreJob {
    pub(super) dest: PathBuf,
    pub(super) remote: String,
    pub(super) blocks: Vec<transfer::Block>,
    pub(super) size: u64,
    /// The SHA-256 in END.
    pub(super) sent: [u8; 32],
    /// The SHA-256 recorded at upload (GET_OK).
    pub(super) recorded: Option<[u8; 32]>,
    /// The SHA-256 the file must have (--sha256, --check).
    pub(super) expect: Option<[u8; 32]>,
    pub(super) force: bool,
    /// Mode and mtime to give the file (ATTRS, unless --no-preserve).
    pub(super) attrs: Option<protocol::Attrs>,
    pub(super) wire: u64,
    pub(super) started: Instant,
    pub(super) reply: oneshot::Sender<Result<Downloaded>>,
}

/// One blocking thread that stores small downloads in order: decode, hash
/// and write each to a `.part` file, check it, rename it into place.
pub(super) fn spawn_storer() -> mpsc::Sender<StoreJob> {
    let (tx, mut rx) = mpsc::channel::<StoreJob>(STORE_QUEUE);
    tokio::task::spawn_blocking(move || {
        while let Some(job) = rx.blocking_recv() {
            let r = store_small(&job);
            let _ = job.reply.send(r);
        }
    });
    tx
}

fn store_small(job: &StoreJob) -> Result<Downloaded> {
    let (part, file) = crate::client::create_part(&job.dest)?;
    let shown = part.display().to_string();
    let written = (|| {
        let (n, digest) = transfer::write_gathered(&file, &job.blocks, &shown)?;
        let want = Expected {
            size: job.size,
            recorded: job.recorded,
            expect: job.expect,
        };
        verify_download(
            &job.remote,
            n,
            &digest,
            &job.sent,
            &want,
            "the file was not saved",
        )?;
        if let Some(a) = job.attrs {
            crate::client::apply_attrs(&file, a, &shown)?;
        }
        Ok(digest)
    })();
    drop(file);
    let placed = written.and_then(|digest| {
        crate::client::place(&part, &job.dest, job.force).map(|path| (path, digest))
    });
    match placed {
        Ok((path, sha256)) => Ok(Downloaded {
            path,
            size: job.size,
            sha256,
            wire: job.wire,
            resumed: 0,
            seconds: job.started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The DATA of a small download up to END, in memory: (blocks, the digest
/// sent, wire bytes). `Ok(Err)`: the server replied ERROR instead (the
/// session goes on); `Err`: the session cannot.
pub(super) async fn gather(
    r: &mut FrameReader<ReadHalf<Stream>>,
    size: u64,
    remote: &str,
    zstd: bool,
    timeout: std::time::Duration,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<Result<(Vec<transfer::Block>, [u8; 32], u64)>> {
    let mut blocks = Vec::new();
    let mut count = Counted::default();
    let want = Want { size, remote, zstd };
    loop {
        match next_block(r, timeout, &want, &mut count, progress, pacer).await? {
            Downloading::Data(block) => {
                // compressed payloads are bounded too, not only their raw sizes
                if count.wire > 2 * SMALL_DOWNLOAD + 65536 {
                    return Err(want.too_much());
                }
                blocks.push(block);
            }
            Downloading::End(sha256) => {
                count.check_end(size)?;
                return Ok(Ok((blocks, sha256, count.wire)));
            }
            Downloading::Refused(e) => return Ok(Err(e)),
        }
    }
}
