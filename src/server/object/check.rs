//! The start-up self-check: several servers are safe on a store only if it
//! refuses to create an object that exists. A probe object is created twice
//! with `PutMode::Create`; unless the second is refused the server does not
//! start. (Known to ignore the condition: Garage 2.5, s3rver 3.7.)

use object_store::ObjectStoreExt;

use super::{Bucket, names::create, random_id, store_err};
use crate::error::{Error, Result};

pub fn create_if_absent(b: &Bucket) -> Result<()> {
    let rel = format!("probe/{}", random_id());
    let first = create(b, &rel, b"probe".to_vec()).map_err(|e| {
        if e.kind == crate::error::Kind::NotFound {
            return Error::usage(format!(
                "--store {}: the bucket {} does not exist there; create it first",
                b.loc.shown(),
                b.loc.bucket
            ));
        }
        e.context(format!(
            "checking the object store {} (is the bucket there, and are the endpoint and credentials right?)",
            b.loc.shown()
        ))
    })?;
    let second = first && create(b, &rel, b"again".to_vec())?;
    let key = b.key(&rel);
    let _ = b.run(|os| async move {
        os.delete(&key)
            .await
            .map_err(|e| store_err(&e, "removing", &key))
    });
    if !first || second {
        return Err(Error::usage(format!(
            "refusing to serve {}: this object store ignores conditional writes (If-None-Match: *): a second create of one object was not refused, so several servers would overwrite each other's files. Use an engine that keeps create-if-absent (Ceph RGW, MinIO, AWS S3)",
            b.loc.shown()
        )));
    }
    Ok(())
}
