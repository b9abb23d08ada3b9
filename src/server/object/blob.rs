//! A file's bytes as an immutable blob (`blobs/ID`), moved in parts of
//! `PART` bytes so memory stays bounded whatever the size: an upload spooled
//! in the local scratch directory is sent (one PUT when it fits in a part,
//! else a multipart upload with at most `IN_FLIGHT` parts in flight), hashed
//! as it is read, so the blob holds exactly the bytes whose SHA-256 is
//! checked; a download is fetched part by part into a scratch file and
//! hashed, and served only if it matches its manifest.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::{Bucket, layout, store_err};
use crate::error::{Error, Result};

/// Bytes per part (S3 wants 5 MiB to 5 GiB; 8 MiB keeps memory small and
/// requests few).
pub const PART: usize = 8 << 20;
/// Parts of one upload being sent at once.
const IN_FLIGHT: usize = 2;

/// Read up to `buf.len()` bytes at `at` (fewer only at the end of the file).
fn read_full(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Send the spooled upload `file` as a new blob; its id, size and SHA-256.
/// Nothing names the blob yet: if this fails, or the server dies, it is an
/// orphan the garbage collector removes.
pub fn send(b: &Bucket, file: &File, shown: &str) -> Result<(String, u64, [u8; 32])> {
    let id = super::random_id();
    let key = b.key(&layout::blob(&id));
    let io = |e: std::io::Error| Error::io(format!("reading the upload of {shown}"), &e);
    let mut hasher = Sha256::new();
    let mut first = vec![0u8; PART];
    let n = read_full(file, &mut first, 0).map_err(io)?;
    first.truncate(n);
    hasher.update(&first);
    if n < PART {
        let k = key.clone();
        b.run(|os| async move {
            os.put(&k, PutPayload::from(first))
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e, "storing", &k))
        })?;
        return Ok((id, n as u64, hasher.finalize().into()));
    }
    let k = key.clone();
    let upload = b.run(|os| async move {
        os.put_multipart(&k)
            .await
            .map_err(|e| store_err(&e, "starting an upload of", &k))
    })?;
    let mut w = Some(WriteMultipart::new_with_chunk_size(upload, PART));
    let mut at = n as u64;
    let mut chunk = bytes::Bytes::from(first);
    loop {
        let Some(mut writer) = w.take() else {
            return Err(Error::other("internal error: the blob writer is gone"));
        };
        let k = key.clone();
        let sent = b.bridge.wait(async move {
            if let Err(e) = writer.wait_for_capacity(IN_FLIGHT).await {
                writer.abort().await.ok();
                return Err(store_err(&e, "storing", &k));
            }
            writer.put(chunk);
            Ok(writer)
        })??;
        w = Some(sent);
        let mut buf = vec![0u8; PART];
        let got = read_full(file, &mut buf, at).map_err(io)?;
        if got == 0 {
            break;
        }
        buf.truncate(got);
        hasher.update(&buf);
        at += got as u64;
        chunk = bytes::Bytes::from(buf);
    }
    let Some(writer) = w.take() else {
        return Err(Error::other("internal error: the blob writer is gone"));
    };
    let k = key.clone();
    b.bridge.wait(async move {
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| store_err(&e, "finishing", &k))
    })??;
    Ok((id, at, hasher.finalize().into()))
}

/// Fetch blob `id` of `size` bytes into `out` (a scratch file) and return
/// its SHA-256.
pub fn fetch(b: &Bucket, id: &str, size: u64, out: &File, shown: &str) -> Result<[u8; 32]> {
    let key: Path = b.key(&layout::blob(id));
    let mut hasher = Sha256::new();
    let mut at = 0u64;
    let mut w = out;
    while at < size {
        let end = (at + PART as u64).min(size);
        let k = key.clone();
        let part = b.run(|os| async move {
            os.get_range(&k, at..end)
                .await
                .map_err(|e| store_err(&e, "reading", &k))
        })?;
        if part.len() as u64 != end - at {
            return Err(Error::integrity(format!(
                "{shown}: the object store returned a short read of its data"
            )));
        }
        hasher.update(&part);
        w.write_all(&part)
            .map_err(|e| Error::io(format!("buffering the download of {shown}"), &e))?;
        at = end;
    }
    Ok(hasher.finalize().into())
}

/// Remove a blob (an absent one is fine).
pub fn remove(b: &Bucket, id: &str) -> Result<()> {
    let key = b.key(&layout::blob(id));
    b.run(|os| async move {
        match os.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(&e, "removing", &key)),
        }
    })
}
