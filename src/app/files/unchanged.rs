//! Transfers the other side already holds exactly: found by size, then
//! by hashing the local file, and skipped.

use std::path::PathBuf;

use super::join_remote;
use crate::client::Client;
use crate::client::pipeline::{Dest, GetJob, PutJob};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::EntryKind;

/// A transfer whose other side already holds exactly its content.
pub(super) struct Unchanged<J> {
    pub(super) job: J,
    pub(super) size: u64,
    pub(super) sha256: [u8; 32],
}

/// A transfer whose sizes match on both sides: its local file is hashed to
/// decide (the `i`-th transfer given).
struct Candidate<J> {
    i: usize,
    job: J,
    local: PathBuf,
    size: u64,
    sha256: [u8; 32],
}

/// A transfer to make, with its local file's size and SHA-256 when a
/// pre-pass already hashed it.
pub(super) type Moving<J> = (J, Option<(u64, [u8; 32])>);

/// Hash the candidates' local files (off the async threads) and split them:
/// the same digest is `unchanged`, anything else joins `moving` (with the
/// digest computed); the transfers to make come back in the order they were
/// given.
async fn keep_changed<J: Send + 'static>(
    moving: Vec<(usize, J)>,
    candidates: Vec<Candidate<J>>,
) -> Result<(Vec<Moving<J>>, Vec<Unchanged<J>>)> {
    let mut unchanged = Vec::new();
    let mut moving: Vec<(usize, Moving<J>)> =
        moving.into_iter().map(|(i, j)| (i, (j, None))).collect();
    if !candidates.is_empty() {
        let hashed = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|c| {
                    let local = crate::transfer::sha256_file(&c.local).ok();
                    (c, local)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))?;
        for (c, local) in hashed {
            if local == Some(c.sha256) {
                unchanged.push(Unchanged {
                    job: c.job,
                    size: c.size,
                    sha256: c.sha256,
                });
            } else {
                moving.push((c.i, (c.job, local.map(|d| (c.size, d)))));
            }
        }
        moving.sort_by_key(|(i, _)| *i);
    }
    Ok((moving.into_iter().map(|(_, j)| j).collect(), unchanged))
}

/// Split off the files whose remote name already holds exactly their
/// content, uploaded by this same user, so re-running a put sends and
/// stores nothing again. Cheap
/// first: one listing per remote directory (requested together) gives
/// sizes and recorded digests; only files whose size matches are hashed.
/// `listed`: the listings of [`remote_dirs`] of these jobs, when already
/// read (sent right after AUTH); otherwise they are asked for here.
pub(super) async fn split_unchanged(
    c: &mut Client,
    jobs: Vec<PutJob>,
    listed: Option<Vec<Result<Vec<crate::protocol::Entry>>>>,
) -> Result<(Vec<Moving<PutJob>>, Vec<Unchanged<PutJob>>)> {
    let dirs = remote_dirs(&jobs);
    let listings = match listed {
        Some(l) if l.len() == dirs.len() => l,
        _ => c.list_many(&dirs).await?,
    };
    let me = c.user.clone();
    let mut remote = std::collections::HashMap::new();
    for (dir, listing) in dirs.iter().zip(listings) {
        let entries = match listing {
            Ok(entries) => entries,
            // a directory that does not exist yet holds nothing
            Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
            Err(_) => continue,
        };
        for e in entries {
            // only this user's own files: another user's file under the name
            // keeps the usual rules (a numbered copy, or a refused overwrite)
            if let (EntryKind::File, Some(digest), true) = (e.kind, e.sha256, e.owner == me) {
                remote.insert(join_remote(dir, &e.name), (e.size, digest));
            }
        }
    }
    let mut send = Vec::new();
    let mut candidates = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let local_size = std::fs::metadata(&job.local).map(|m| m.len()).ok();
        match remote.get(&job.remote) {
            Some(&(size, digest)) if local_size == Some(size) => {
                let local = job.local.clone();
                candidates.push(Candidate {
                    i,
                    job,
                    local,
                    size,
                    sha256: digest,
                })
            }
            _ => send.push((i, job)),
        }
    }
    keep_changed(send, candidates).await
}

/// The remote directories uploads go into, sorted, each once: what the
/// `unchanged` check lists.
pub(super) fn remote_dirs(jobs: &[PutJob]) -> Vec<String> {
    let mut dirs: Vec<String> = jobs
        .iter()
        .map(|j| names::split_parent(&j.remote).0.to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Split off downloads whose local file already holds exactly the remote
/// bytes, so re-running a get changes nothing and makes no numbered copies.
/// Cheap first: only existing local files are considered; their size is
/// compared with the remote one (from the listing of `get -r`, else a STAT),
/// and only equal sizes are hashed and compared with the recorded digest
/// (and `--sha256`/`--check`, when given).
pub(super) async fn split_unchanged_downloads(
    c: &mut Client,
    jobs: Vec<GetJob>,
    mut known: std::collections::HashMap<String, (u64, [u8; 32])>,
) -> Result<(Vec<GetJob>, Vec<Unchanged<GetJob>>)> {
    let mut fetch = Vec::new();
    let mut candidates = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let local = match &job.dest {
            Dest::Path(p) => std::fs::symlink_metadata(p).ok().filter(|m| m.is_file()),
            Dest::Stdout => None,
        };
        let Some(local) = local else {
            fetch.push((i, job));
            continue;
        };
        if !known.contains_key(&job.remote) {
            match c.stat(&job.remote).await {
                Ok(e) if e.kind == EntryKind::File => {
                    if let Some(d) = e.sha256 {
                        known.insert(job.remote.clone(), (e.size, d));
                    }
                }
                Err(e) if matches!(e.kind, Kind::Network | Kind::Protocol) => return Err(e),
                // missing, a directory, …: the download reports it as usual
                _ => {}
            }
        }
        match (known.get(&job.remote), &job.dest) {
            (Some(&(size, digest)), Dest::Path(path))
                if size == local.len() && job.expect.is_none_or(|x| x == digest) =>
            {
                let local = path.clone();
                candidates.push(Candidate {
                    i,
                    job,
                    local,
                    size,
                    sha256: digest,
                })
            }
            _ => fetch.push((i, job)),
        }
    }
    let (fetch, unchanged) = keep_changed(fetch, candidates).await?;
    Ok((fetch.into_iter().map(|(j, _)| j).collect(), unchanged))
}
