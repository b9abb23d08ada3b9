//! Storage on an S3-compatible object store, shared by any number of
//! stateless `sft serve` (`--store s3://BUCKET[/PREFIX]`). Every promise of
//! the local root rests on one primitive the store must keep: create an
//! object only if absent (`PutMode::Create`, `If-None-Match: *`), checked at
//! start (`check.rs`).
//!
//! Keys under the prefix (`layout`):
//! - `blobs/ID/NNNNNN`: a file's bytes as a set of parts (`blob.rs`),
//!   immutable, written before anything names them;
//! - `files/NAME`: the manifest that makes NAME visible (`manifest.rs`),
//!   created only if absent, so a name has one winner (`names.rs`);
//!   `files/DIR/.sft-tmp-dir` marks a directory made by MKDIR;
//! - `ledger/SEQ`, `ckpt/SEQ`, `servers/ID`: the shared quota book
//!   (`ledger.rs`);
//! - `held/SERVER/ID`: blob ID's parts are an upload kept for resuming by
//!   a live server (`--keep-partial`): the collector leaves them;
//! - `probe/ID`: the start-up self-check.
//!
//! `files.rs` holds the store's operations on names, `blob.rs` the data,
//! `gc.rs` the collector; `tests.rs` runs them over an in-memory store.
//!
//! The server's code is synchronous around storage (it runs on blocking
//! threads), so each call here is a future run on this module's own small
//! runtime (`sft-s3` threads) and waited for (`Bridge`). An upload is
//! written to a scratch file in the local `--root` as on disk, and its parts
//! are sent while it arrives and punched out of that file (`ship::Shipper`);
//! a whole download is streamed from the parts through a pipe
//! (`blob::stream`); a download that seeks is fetched into a scratch file
//! and checked first (`files::open_read`). An upload cut off can be kept for
//! resuming (its parts marked `held/`), and CLONE copies a blob's parts in
//! the store (`blob::copy`).

pub mod blob;
pub mod book;
pub mod check;
pub mod files;
pub mod gc;
pub mod lease;
pub mod ledger;
pub mod manifest;
pub mod names;
pub mod scan;
pub mod ship;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Kind, Result};

/// Where the objects live: `s3://BUCKET[/PREFIX]` and how to reach it.
#[derive(Debug, Clone)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
}

impl Location {
    /// Parse `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<Location> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::usage(format!(
                "--store {url}: expected s3://BUCKET[/PREFIX] (without --store the server uses --root)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3 {
            return Err(Error::usage(format!(
                "--store {url}: the bucket name must have at least 3 characters"
            )));
        }
        Ok(Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            allow_http: false,
        })
    }

    pub fn shown(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Runs object-store futures for synchronous callers, on threads of its own.
pub struct Bridge {
    rt: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    fn new() -> Result<Bridge> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sft-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the object-store threads", &e))?;
        Ok(Bridge { rt: Some(rt) })
    }

    /// Run `f` to its end and return its output. Callable from any thread
    /// (a blocking one, where the server's storage calls run).
    pub fn wait<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::other("the object-store threads have stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .map_err(|_| Error::other("the object-store threads have stopped"))
    }

    /// Start `f` now; its output arrives on the returned channel (so a
    /// caller can have several in flight and wait for them in order).
    pub fn start<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<std::sync::mpsc::Receiver<T>> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::other("the object-store threads have stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        Ok(rx)
    }

    /// Start `f` and do not wait for it (a release that may be late).
    pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.rt {
            rt.spawn(f);
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Connect to the bucket at start: the self-check, the shared quota book
/// with this server's heartbeat, and the garbage collector.
pub fn open(
    loc: Location,
    scratch: &std::path::Path,
    gc_grace: std::time::Duration,
    lease: std::time::Duration,
) -> Result<(Arc<Bucket>, Arc<ledger::Ledger>)> {
    let shown = loc.shown();
    let bucket = Arc::new(Bucket::open(loc, lease)?);
    check::create_if_absent(&bucket)?;
    let book = ledger::Ledger::open(bucket.clone())?;
    ledger::start_lease(&book);
    gc::start(&bucket, gc_grace, lease);
    tracing::info!(
        store = %shown,
        scratch = %scratch.display(),
        "files are kept in {shown}: create-if-absent checked; {} is scratch for data in flight",
        scratch.display()
    );
    Ok((bucket, book))
}

/// The bucket as the server uses it.
pub struct Bucket {
    pub loc: Location,
    pub os: Arc<dyn ObjectStore>,
    pub bridge: Bridge,
    /// This process's id among the servers on the bucket (random per start).
    pub server: String,
    /// Its heartbeat and the fence on commits (`lease.rs`).
    pub lease: lease::Lease,
}

impl Bucket {
    /// Connect (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    /// Nothing is sent yet: `check::create_if_absent` is the first request.
    pub fn open(loc: Location, lease: std::time::Duration) -> Result<Bucket> {
        // reqwest's rustls takes the process's provider: ours, ring
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&loc.bucket);
        if let Some(e) = &loc.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &loc.region {
            b = b.with_region(r);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        b = b.with_allow_http(loc.allow_http);
        let os = b.build().map_err(|e| {
            Error::usage(format!(
                "--store {}: {}",
                loc.shown(),
                describe(&e, "configuring the object store")
            ))
        })?;
        Bucket::over(loc, Arc::new(os), lease)
    }

    /// A bucket over any store (tests: `object_store::memory::InMemory`).
    pub fn over(
        loc: Location,
        os: Arc<dyn ObjectStore>,
        lease: std::time::Duration,
    ) -> Result<Bucket> {
        Ok(Bucket {
            loc,
            os,
            bridge: Bridge::new()?,
            server: random_id(),
            lease: lease::Lease::new(lease),
        })
    }

    /// Rewrite this server's heartbeat (`servers/ID`; by this server only,
    /// a plain PUT).
    pub fn beat(&self) -> Result<()> {
        let key = self.key(&layout::server(&self.server));
        let sent = std::time::Instant::now();
        self.run(|os| async move {
            os.put(&key, b"alive".to_vec().into())
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e, "writing", &key))
        })?;
        self.lease.beaten(sent);
        Ok(())
    }

    /// Make sure the heartbeat is fresh: rewritten within `--s3-lease` / 3
    /// (the lease thread rewrites it every eighth), else now.
    pub fn fresh(&self) -> Result<()> {
        if self.lease.age().is_none_or(|a| a > self.lease.ttl / 3) {
            self.beat()?;
        }
        Ok(())
    }

    /// Whether a file stored under reservations `holds` may be made visible
    /// now: this server's lease held all along (`lease.rs`).
    pub fn fence(&self, holds: &[u64]) -> Result<()> {
        self.fresh()?;
        self.lease.check(holds)
    }

    /// The object key for `rel` (a path below the prefix).
    pub fn key(&self, rel: &str) -> Path {
        layout::key(&self.loc.prefix, rel)
    }

    /// Run `f` with a handle on the store, waiting for it.
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn ObjectStore>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.bridge.wait(f(self.os.clone()))?
    }

    /// Read a small object whole; `None` if absent.
    pub fn read_small(&self, key: Path) -> Result<Option<bytes::Bytes>> {
        self.run(|os| async move {
            match os.get(&key).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(Some)
                    .map_err(|e| store_err(&e, "reading", &key)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(&e, "reading", &key)),
            }
        })
    }
}

/// 128 random bits in hex: blob and server ids, unique across servers.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        return format!(
            "{}{}",
            crate::private::unique_hex(),
            crate::private::unique_hex()
        );
    }
    hex::encode(b)
}

/// Key layout: pure, tested without a network.
pub mod layout {
    use object_store::path::Path;

    /// What marks a directory made by MKDIR (a reserved name: no client
    /// can make or see a file called this).
    pub const DIR_MARKER: &str = ".sft-tmp-dir";

    pub fn key(prefix: &str, rel: &str) -> Path {
        let parts = prefix
            .split('/')
            .chain(rel.split('/'))
            .filter(|p| !p.is_empty());
        Path::from_iter(parts)
    }

    /// The manifest of a client's name.
    pub fn file(name: &str) -> String {
        format!("files/{name}")
    }

    /// The directory `name` ("" for the top) as a listing prefix.
    pub fn dir(name: &str) -> String {
        if name.is_empty() {
            "files".to_string()
        } else {
            format!("files/{name}")
        }
    }

    pub fn marker(name: &str) -> String {
        format!("files/{name}/{DIR_MARKER}")
    }

    /// The prefix of a blob's parts.
    pub fn blob(id: &str) -> String {
        format!("blobs/{id}")
    }

    /// Part `n` of a blob (numbered from 0; six digits list in order up to
    /// 7.6 TiB in 8 MiB parts, and more still sort after).
    pub fn part(id: &str, n: u64) -> String {
        format!("blobs/{id}/{n:06}")
    }

    /// The marker by which server `server` keeps blob `id`'s parts for a
    /// resumable upload (`gc.rs` leaves them while the server lives).
    pub fn held(server: &str, id: &str) -> String {
        format!("held/{server}/{id}")
    }

    /// The blob id in a key below `blobs/` (`blobs/ID/NNNNNN` or an old
    /// `blobs/ID`): the component after `blobs`.
    pub fn blob_of(p: &Path, prefix: &str) -> Option<String> {
        let skip = prefix.split('/').filter(|c| !c.is_empty()).count() + 1;
        let part = p.parts().nth(skip)?;
        percent_encoding::percent_decode_str(part.as_ref())
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    }

    pub fn ledger(seq: u64) -> String {
        format!("ledger/{seq:020}")
    }

    pub fn checkpoint(seq: u64) -> String {
        format!("ckpt/{seq:020}")
    }

    pub fn server(id: &str) -> String {
        format!("servers/{id}")
    }

    /// The last component of a key, decoded as the client named it.
    pub fn last(p: &Path) -> Option<String> {
        let part = p.parts().next_back()?;
        percent_encoding::percent_decode_str(part.as_ref())
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    }

    /// The sequence number in a `ledger/` or `ckpt/` key.
    pub fn seq(p: &Path) -> Option<u64> {
        last(p)?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_round_trip_names() {
            let k = key("team/a", &file("dir/a b (1).txt"));
            assert_eq!(k.as_ref(), "team/a/files/dir/a b (1).txt");
            assert_eq!(last(&k).as_deref(), Some("a b (1).txt"));
            let odd = key("", &file("x#y%z[1].txt"));
            assert_eq!(last(&odd).as_deref(), Some("x#y%z[1].txt"));
            assert_eq!(key("", &ledger(42)).as_ref(), "ledger/00000000000000000042");
            assert_eq!(seq(&key("p", &ledger(42))), Some(42));
            assert_eq!(key("", &dir("")).as_ref(), "files");
            assert_eq!(key("p/", &marker("d")).as_ref(), "p/files/d/.sft-tmp-dir");
            let part = key("team/a", &super::part("ab12", 3));
            assert_eq!(part.as_ref(), "team/a/blobs/ab12/000003");
            assert_eq!(blob_of(&part, "team/a").as_deref(), Some("ab12"));
            assert_eq!(blob_of(&key("", "blobs/old"), "").as_deref(), Some("old"));
            assert_eq!(blob_of(&key("", "blobs"), ""), None);
        }
    }
}

/// One line a person can act on, for an object-store failure: never the
/// library's Debug text or a URL.
pub fn describe(e: &object_store::Error, doing: &str) -> String {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => format!("{doing}: not found"),
        E::AlreadyExists { .. } => format!("{doing}: already exists"),
        E::Precondition { .. } => format!("{doing}: the object changed meanwhile"),
        E::NotImplemented { .. } | E::NotSupported { .. } => {
            format!("{doing}: the object store does not support this")
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => format!(
            "{doing}: the object store refused the credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ),
        _ => {
            let text = e.to_string();
            let hint = if text.contains("NoSuchBucket") {
                "the bucket does not exist; create it first"
            } else if text.contains("connect") || text.contains("Connect") {
                "cannot connect to the object store (check --s3-endpoint, and --s3-allow-http for http://)"
            } else if text.contains("timed out") || text.contains("timeout") {
                "the object store did not answer in time"
            } else if text.contains("SignatureDoesNotMatch") || text.contains("InvalidAccessKeyId")
            {
                "the object store refused the credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            } else {
                "the object store failed the request"
            };
            format!("{doing}: {hint}")
        }
    }
}

/// An object-store failure on `key` as the server's error (logged once at
/// WARN for the operator, like a disk fault).
pub fn store_err(e: &object_store::Error, what: &str, key: &Path) -> Error {
    let line = describe(e, &format!("{what} {key}"));
    match e {
        object_store::Error::NotFound { .. } => Error::not_found(line),
        _ => {
            tracing::debug!(event = "storage", "{line}: {e}");
            tracing::warn!(event = "storage", "{line}");
            Error::new(Kind::Other, line)
        }
    }
}
