//! Every manifest in the bucket, read a few at a time, with the name it
//! makes visible: the one walk over all files, for the collector (which
//! blobs are named), the quota resolver (which reservations became files)
//! and the content index (which content is stored where).

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use super::manifest::Manifest;
use super::{Bucket, layout, store_err};
use crate::error::Result;

/// Manifests read at once.
const AT_ONCE: usize = 16;

/// Every file's name and manifest (directory markers and files removed
/// while this runs are skipped; a damaged manifest is an error, so nothing
/// is decided on a partial view).
pub fn manifests(b: &Bucket) -> Result<Vec<(String, Manifest)>> {
    let files = b.key("files");
    // the components before a file's name: the prefix's and "files"
    let skip = b.loc.prefix.split('/').filter(|c| !c.is_empty()).count() + 1;
    b.run(|os| async move {
        let listed: Vec<_> = os
            .list(Some(&files))
            .try_collect()
            .await
            .map_err(|e| store_err(&e, "listing", &files))?;
        let mut keys = listed
            .into_iter()
            .map(|m| m.location)
            .filter(|k| layout::last(k).as_deref() != Some(layout::DIR_MARKER));
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::new();
        loop {
            while set.len() < AT_ONCE {
                let Some(key) = keys.next() else { break };
                let os = os.clone();
                set.spawn(async move {
                    let got = match os.get(&key).await {
                        Ok(r) => r.bytes().await,
                        Err(e) => Err(e),
                    };
                    (key, got)
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let Ok((key, got)) = done else { continue };
            match got {
                Ok(bytes) => out.push((name(&key, skip), Manifest::decode(&bytes, key.as_ref())?)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(&e, "reading", &key)),
            }
        }
        Ok(out)
    })
}

/// The client's name for a manifest's key: its components after `skip`,
/// decoded.
fn name(key: &object_store::path::Path, skip: usize) -> String {
    key.parts()
        .skip(skip)
        .map(|p| {
            percent_encoding::percent_decode_str(p.as_ref())
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join("/")
}
