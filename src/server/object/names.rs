//! Making a name visible: the manifest is created only if absent
//! (`PutMode::Create`, `If-None-Match: *`), on `name.ext`, then
//! `name (1).ext`, … (the numbering of `crate::names`), so two servers
//! racing for one name get two names and neither replaces the other. An
//! ambiguous create (the store answers "exists" to a retry of a create that
//! may have succeeded) is resolved by reading the manifest back: it is ours
//! if it names our blob.

use object_store::{PutMode, PutOptions, PutPayload};

use super::manifest::Manifest;
use super::{Bucket, layout, store_err};
use crate::error::{Error, Result};
use crate::names;

/// How many numbered names are tried before giving up.
const MOST: u32 = 10_000;

/// Create `key` with `body` only if absent: `Ok(true)` created, `Ok(false)`
/// it exists already.
pub fn create(b: &Bucket, rel: &str, body: Vec<u8>) -> Result<bool> {
    let key = b.key(rel);
    b.run(|os| async move {
        let opts = PutOptions::from(PutMode::Create);
        match os.put_opts(&key, PutPayload::from(body), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(store_err(&e, "creating", &key)),
        }
    })
}

/// Read the manifest of `name`; `None` if there is none.
pub fn read(b: &Bucket, name: &str) -> Result<Option<Manifest>> {
    match b.read_small(b.key(&layout::file(name)))? {
        Some(bytes) => Manifest::decode(&bytes, name).map(Some),
        None => Ok(None),
    }
}

/// Publish `m` under `name` or, if taken, the first free numbered name;
/// the name it got.
pub fn publish(b: &Bucket, name: &str, m: &Manifest) -> Result<String> {
    let body = m.encode();
    for n in 0..MOST {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            names::numbered_name(name, n).ok_or_else(|| {
                Error::usage(format!(
                    "{}: no free numbered name fits the naming rules",
                    names::quote(name)
                ))
            })?
        };
        if create(b, &layout::file(&candidate), body.clone())? {
            return Ok(candidate);
        }
        // taken, or ours from a retried request whose answer was lost
        if read(b, &candidate)?.is_some_and(|there| there.blob == m.blob) {
            return Ok(candidate);
        }
    }
    Err(Error::other(format!(
        "{}: {MOST} numbered names are taken; choose another name",
        names::quote(name)
    )))
}
