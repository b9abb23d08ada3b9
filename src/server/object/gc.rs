//! Garbage collection: part sets (`blobs/ID/…`) no manifest names (an
//! upload cut off while it was being sent, a server killed between its last
//! part and its manifest, a file removed by a server that died before
//! removing the parts). Sets are whole objects (no multipart uploads), so
//! every orphan is listed. Safe from any server at any time: manifests are
//! listed before parts, and only sets whose newest part is older than
//! `grace` are candidates, so an upload still sending, or whose manifest is
//! being created right now, is never taken (`grace` must exceed the longest
//! a client may pause mid-upload: the server cuts one silent for the data
//! timeout, far below the default hour). Heartbeats of servers gone for a day
//! go too.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use super::{Bucket, layout, store_err};
use crate::error::Result;

/// Remove orphan blobs older than `grace`; how many were removed. The parts
/// of an upload kept for resuming by a server whose heartbeat is younger
/// than `lease` are not orphans.
pub fn collect(b: &Bucket, grace: Duration, lease: Duration) -> Result<usize> {
    let blobs = b.key("blobs");
    let os = b.os.clone();
    let mut keep = held(b, lease)?;
    // a damaged manifest fails the walk: keep everything rather than guess
    let named = super::scan::manifests(b)?.into_iter().map(|(_, m)| m.blob);
    keep.extend(named);
    let prefix = b.loc.prefix.clone();
    let removed = b.run(|_| async move {
        let listed: Vec<_> = os
            .list(Some(&blobs))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &blobs))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let listed = listed
            .into_iter()
            .map(|m| (m.location, m.last_modified.timestamp()))
            .collect();
        let orphans = orphans(listed, &keep, &prefix, now, grace);
        let n = orphans.len();
        let keys = orphans.into_iter().flat_map(|(_, keys)| keys).collect();
        super::blob::delete_all(&os, keys).await?;
        Ok(n)
    })?;
    Ok(removed)
}

/// The part sets (`blobs/ID/…`) to remove: no manifest names them and
/// their newest part is older than `grace` (a set still being sent, or
/// whose manifest is being created, was touched since). Pure.
pub fn orphans(
    listed: Vec<(object_store::path::Path, i64)>,
    keep: &HashSet<String>,
    prefix: &str,
    now: i64,
    grace: i64,
) -> Vec<(String, Vec<object_store::path::Path>)> {
    let mut sets: BTreeMap<String, (i64, Vec<object_store::path::Path>)> = BTreeMap::new();
    for (key, modified) in listed {
        let Some(id) = layout::blob_of(&key, prefix) else {
            continue;
        };
        if keep.contains(&id) {
            continue;
        }
        let set = sets.entry(id).or_insert((i64::MIN, Vec::new()));
        set.0 = set.0.max(modified);
        set.1.push(key);
    }
    sets.into_iter()
        .filter(|(_, (newest, _))| now.saturating_sub(*newest) >= grace)
        .map(|(id, (_, keys))| (id, keys))
        .collect()
}

/// The blobs kept for resuming by live servers (`held/SERVER/ID` markers
/// whose SERVER has written its heartbeat within `lease`); the markers of
/// servers gone are removed (their blobs are then orphans like any other).
fn held(b: &Bucket, lease: Duration) -> Result<HashSet<String>> {
    let marks = b.key("held");
    let servers = b.key("servers");
    let prefix = b.loc.prefix.clone();
    b.run(|os| async move {
        let listed: Vec<_> = os
            .list(Some(&marks))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &marks))?;
        if listed.is_empty() {
            return Ok(HashSet::new());
        }
        let beats: Vec<_> = os
            .list(Some(&servers))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &servers))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let lease = i64::try_from(lease.as_secs()).unwrap_or(i64::MAX);
        let live: HashSet<String> = beats
            .iter()
            .filter(|m| now.saturating_sub(m.last_modified.timestamp()) <= lease)
            .filter_map(|m| layout::last(&m.location))
            .collect();
        let mut keep = HashSet::new();
        let mut gone = Vec::new();
        for m in listed {
            match held_of(&m.location, &prefix) {
                Some((server, id)) if live.contains(&server) => {
                    keep.insert(id);
                }
                _ => gone.push(m.location),
            }
        }
        super::blob::delete_all(&os, gone).await?;
        Ok(keep)
    })
}

/// SERVER and ID of a `held/SERVER/ID` key.
fn held_of(p: &object_store::path::Path, prefix: &str) -> Option<(String, String)> {
    let skip = prefix.split('/').filter(|c| !c.is_empty()).count() + 1;
    let mut parts = p.parts().skip(skip);
    let server = parts.next()?.as_ref().to_string();
    let id = parts.next()?.as_ref().to_string();
    Some((server, id))
}

/// Heartbeats (`servers/ID`) older than this belong to servers long gone
/// (a live one rewrites its own every lease / 8): removed, so the listing
/// the ledger reads stays short.
const GONE: i64 = 24 * 3600;

/// Remove the heartbeats of servers not heard from for a day.
pub fn forget_servers(b: &Bucket) -> Result<usize> {
    let prefix = b.key("servers");
    b.run(|os| async move {
        let listed: Vec<_> = os
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &prefix))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut removed = 0;
        for meta in listed {
            if now.saturating_sub(meta.last_modified.timestamp()) > GONE
                && os.delete(&meta.location).await.is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    })
}

/// Collect now and then every `grace / 2` (at least a minute, at most an
/// hour), on a thread of its own (`sft-gc`) that ends with the bucket.
pub fn start(b: &std::sync::Arc<Bucket>, grace: Duration, lease: Duration) {
    let weak = std::sync::Arc::downgrade(b);
    let every = (grace / 2).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    let spawned = std::thread::Builder::new()
        .name("sft-gc".into())
        .spawn(move || {
            loop {
                let Some(b) = weak.upgrade() else { return };
                match collect(&b, grace, lease) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        event = "gc",
                        removed = n,
                        "removed {n} orphan blobs (part sets no file names)"
                    ),
                    Err(e) => tracing::warn!(event = "gc", "garbage collection: {e}"),
                }
                if let Err(e) = forget_servers(&b) {
                    tracing::warn!(event = "gc", "garbage collection: {e}");
                }
                drop(b);
                std::thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(event = "gc", "cannot start the garbage collector: {e}");
    }
}
