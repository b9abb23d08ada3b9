//! Every manifest in the bucket, read a few at a time: what the quota
//! resolver (`ledger.rs`) needs to know which reservations became files.

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use super::manifest::Manifest;
use super::{Bucket, layout, store_err};
use crate::error::Result;

/// Manifests read at once.
const AT_ONCE: usize = 16;

/// Every file's manifest (directory markers and files removed while this
/// runs are skipped; a damaged manifest is an error, so nothing is decided
/// on a partial view).
pub fn manifests(b: &Bucket) -> Result<Vec<Manifest>> {
    let files = b.key("files");
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
                Ok(bytes) => out.push(Manifest::decode(&bytes, key.as_ref())?),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(&e, "reading", &key)),
            }
        }
        Ok(out)
    })
}
