//! The quota book shared by every server on the bucket: an append-only
//! ledger of immutable entries `ledger/SEQ`, each created only if absent, so
//! each slot has exactly one winner. A server writes a slot only after it
//! has read every entry before it (read back one by one, not listed:
//! read-after-write is what S3 promises), so an entry that could be created
//! was decided on everything reserved or stored before it: concurrent
//! uploads through any servers can never together exceed a limit. (The
//! server tries its next slot first and reads only when it was taken: one
//! request per entry when it is alone.)
//!
//! Entries (`book.rs`, the pure part): `reserve` (before any data is
//! accepted), `settle` (the file is stored: its size becomes usage, an
//! overwritten file's is freed), `release` (the upload ended otherwise) and
//! `free` (a file was removed). A reservation counts until it is settled or
//! released. Its server records which; if the server dies (its heartbeat,
//! `lease.rs`, older than `--s3-lease` by the store's own clock), one live
//! server (the one with the least id) resolves its reservations on its
//! lease thread: those a manifest names (the file was stored, the server
//! died before recording it) are settled with the file's size, the rest
//! released. So a crash neither lets a limit be passed nor leaks space.
//!
//! Every `CHECKPOINT` entries the state is written as `ckpt/SEQ` (created
//! only if absent: any server may, all write the same state), and a
//! starting server reads from the newest checkpoint on. Compaction: entries
//! and checkpoints below a checkpoint older than `KEEP` are deleted (any
//! server, now and then): a server reloads from the newest checkpoint
//! before writing when its book was last brought up to date more than
//! `KEEP / 2` ago, so none reads or writes a deleted slot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use super::book::{self, Book, Entry, Op};
use super::{Bucket, layout, names::create, scan, store_err};
use crate::error::{Error, Kind, Result};
use crate::server::quota::{Remote, Usage};
use crate::server::store::Existing;

/// A server not heard from for this long is dead: its reservations are
/// resolved (`--s3-lease`).
pub const TTL: Duration = Duration::from_secs(60);
/// A checkpoint every this many entries.
pub const CHECKPOINT: u64 = 256;
/// Entries below a checkpoint this old are deleted.
pub const KEEP: Duration = Duration::from_secs(3600);
/// How often a server looks for entries to delete.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// What to reserve, given the total and the user's usage (`quota.rs`).
type Decide<'a> = &'a dyn Fn(&Usage, &Usage) -> Result<u64>;

/// The ledger as one server sees it.
pub struct Ledger {
    bucket: Arc<Bucket>,
    book: Mutex<Book>,
    /// When the book was last brought up to date (the start of that read).
    read_at: Mutex<Instant>,
    /// Itself, for releases recorded on a thread of their own.
    me: std::sync::Weak<Ledger>,
}

impl Ledger {
    /// Load from the newest checkpoint and the entries after it, and write
    /// this server's first heartbeat.
    pub fn open(bucket: Arc<Bucket>) -> Result<Arc<Ledger>> {
        let l = Arc::new_cyclic(|me| Ledger {
            bucket,
            book: Mutex::new(Book::default()),
            read_at: Mutex::new(Instant::now()),
            me: me.clone(),
        });
        l.bucket.beat()?;
        {
            let mut book = l.lock();
            l.reload(&mut book)?;
        }
        Ok(l)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The objects directly under `dir` (one listing).
    fn listed(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let prefix = self.bucket.key(dir);
        self.bucket.run(|os| async move {
            os.list_with_delimiter(Some(&prefix))
                .await
                .map(|l| l.objects)
                .map_err(|e| store_err(&e, "listing", &prefix))
        })
    }

    /// The newest checkpoint's state, if any.
    fn newest_checkpoint(&self) -> Result<Option<Book>> {
        let newest = self
            .listed("ckpt")?
            .iter()
            .filter_map(|o| layout::seq(&o.location))
            .max();
        let Some(seq) = newest else { return Ok(None) };
        let Some(bytes) = self
            .bucket
            .read_small(self.bucket.key(&layout::checkpoint(seq)))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|_| {
            Error::other(format!(
                "the quota checkpoint {} in the object store is damaged",
                layout::checkpoint(seq)
            ))
        })
    }

    /// Move to the newest checkpoint if it is ahead of `book`, then read on.
    fn reload(&self, book: &mut Book) -> Result<()> {
        if let Some(newer) = self.newest_checkpoint()?
            && newer.next > book.next
        {
            *book = newer;
        }
        self.catch_up(book)
    }

    /// Read the entries written since `book.next`.
    fn catch_up(&self, book: &mut Book) -> Result<()> {
        let started = Instant::now();
        while let Some(bytes) = self
            .bucket
            .read_small(self.bucket.key(&layout::ledger(book.next)))?
        {
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|_| {
                Error::other(format!(
                    "the quota ledger entry {} in the object store is damaged",
                    layout::ledger(book.next)
                ))
            })?;
            book.apply(&entry.op);
        }
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    /// The servers whose heartbeat is fresh (this one always).
    fn live(&self) -> Result<HashSet<String>> {
        let seen: HashMap<String, _> = self
            .listed("servers")?
            .into_iter()
            .filter_map(|o| Some((layout::last(&o.location)?, o.last_modified)))
            .collect();
        let mut live: HashSet<String> = HashSet::from([self.bucket.server.clone()]);
        // "now" by the store's own clock: its newest heartbeat
        let Some(now) = seen.values().max().copied() else {
            return Ok(live);
        };
        let ttl = i64::try_from(self.bucket.lease.ttl.as_secs()).unwrap_or(i64::MAX);
        for (s, at) in seen {
            if (now - at).num_seconds() <= ttl {
                live.insert(s);
            }
        }
        Ok(live)
    }

    /// Append `op` at the first free slot; with `decide`, first ask it
    /// (given the usage then) what to reserve, and write that instead.
    fn append(&self, op: Op, decide: Option<Decide<'_>>) -> Result<(u64, u64)> {
        let mut book = self.lock();
        let read_at = *self.read_at.lock().unwrap_or_else(|p| p.into_inner());
        if read_at.elapsed() > KEEP / 2 {
            // slots this far behind may have been compacted away
            self.reload(&mut book)?;
        }
        // this server's reservations are all below `next`: those held
        // across a silence just ended are forfeit
        self.bucket.lease.settle_gap(book.next);
        loop {
            // no read first: a slot is written only by a server that read
            // every slot before it, so if ours is free, all before it are
            // known here; if it is taken, read on and try again
            let mut op = op.clone();
            let mut granted = 0;
            if let (Some(decide), Op::Reserve { user, bytes, .. }) = (decide, &mut op) {
                let (total, users) = book.usage();
                let mine = users.get(user.as_str()).copied().unwrap_or_default();
                granted = decide(&total, &mine)?;
                *bytes = granted;
            }
            let seq = book.next;
            let entry = Entry {
                nonce: super::random_id(),
                op: op.clone(),
            };
            let body = serde_json::to_vec(&entry).unwrap_or_default();
            let key = self.bucket.key(&layout::ledger(seq));
            // taken, or ours from a retry whose first answer was lost
            let ours = create(&self.bucket, &layout::ledger(seq), body.clone())?
                || self.bucket.read_small(key)?.is_some_and(|b| b == body);
            if ours {
                book.apply(&op);
                if book.next.is_multiple_of(CHECKPOINT) {
                    let ckpt = serde_json::to_vec(&*book).unwrap_or_default();
                    // any server may write it; a lost race is fine
                    let _ = create(&self.bucket, &layout::checkpoint(book.next), ckpt);
                }
                return Ok((seq, granted));
            }
            // another server took the slot: read it and the rest, try again
            self.catch_up(&mut book)?;
        }
    }

    /// Rewrite this server's heartbeat; after a silence, forfeit the
    /// reservations held across it (`lease.rs`).
    pub fn beat(&self) -> Result<()> {
        self.bucket.beat()?;
        self.bucket.lease.settle_gap(self.lock().next);
        Ok(())
    }

    /// Resolve the reservations of dead servers (see the module's text):
    /// done by the live server with the least id, so normally by one. How
    /// many were resolved.
    pub fn resolve_dead(&self) -> Result<usize> {
        let snapshot = {
            let mut book = self.lock();
            self.catch_up(&mut book)?;
            let me = self.bucket.server.as_str();
            if book.holders().iter().all(|s| *s == me) {
                return Ok(0);
            }
            book.clone()
        };
        let live = self.live()?;
        if live.iter().min() != Some(&self.bucket.server) {
            return Ok(0);
        }
        let dead = snapshot.dead_holds(&|s| live.contains(s));
        if dead.is_empty() {
            return Ok(0);
        }
        let files: Vec<book::Named> = scan::manifests(&self.bucket)?
            .into_iter()
            .filter(|(_, m)| !m.holds.is_empty())
            .map(|(_, m)| book::Named {
                size: m.size,
                holds: m.holds,
            })
            .collect();
        for op in book::resolve(&snapshot, &dead, &files) {
            tracing::info!(
                event = "quota",
                "a dead server's reservation resolved: {op:?}"
            );
            self.append(op, None)?;
        }
        Ok(dead.len())
    }

    /// Delete the entries and checkpoints every server has read past (see
    /// the module's text); how many objects went.
    pub fn compact(&self, keep: Duration) -> Result<usize> {
        let ckpts = self.bucket.key("ckpt");
        let entries = self.bucket.key("ledger");
        self.bucket.run(|os| async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let listed: Vec<_> = os
                .list(Some(&ckpts))
                .try_collect()
                .await
                .map_err(|e| store_err(&e, "listing", &ckpts))?;
            let aged: Vec<(u64, Duration)> = listed
                .iter()
                .filter_map(|o| {
                    let age = now.saturating_sub(o.last_modified.timestamp()).max(0);
                    let age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
                    Some((layout::seq(&o.location)?, age))
                })
                .collect();
            let Some(below) = book::compactable(&aged, keep) else {
                return Ok(0);
            };
            let mut doomed: Vec<_> = listed
                .into_iter()
                .filter(|o| layout::seq(&o.location).is_some_and(|s| s < below))
                .map(|o| o.location)
                .collect();
            let old: Vec<_> = os
                .list(Some(&entries))
                .try_collect()
                .await
                .map_err(|e| store_err(&e, "listing", &entries))?;
            doomed.extend(
                old.into_iter()
                    .filter(|o| layout::seq(&o.location).is_some_and(|s| s < below))
                    .map(|o| o.location),
            );
            let mut removed = 0;
            for key in doomed {
                match os.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(store_err(&e, "removing", &key)),
                }
            }
            Ok(removed)
        })
    }
}

impl Remote for Ledger {
    fn reserve(
        &self,
        user: &str,
        files: u64,
        decide: &dyn Fn(&Usage, &Usage) -> Result<u64>,
    ) -> Result<(u64, u64)> {
        self.bucket.fresh().map_err(|e| {
            Error::new(
                Kind::Other,
                format!("cannot take a quota reservation: {}", e.message),
            )
        })?;
        let op = Op::Reserve {
            server: self.bucket.server.clone(),
            user: user.to_string(),
            bytes: 0,
            files,
        };
        self.append(op, Some(decide))
    }

    fn settle(&self, ids: Vec<u64>, user: &str, bytes: u64, replaced: Option<&Existing>) {
        let op = Op::Settle {
            ids,
            user: user.to_string(),
            bytes,
            replaced: replaced.cloned(),
        };
        if let Err(e) = self.append(op, None) {
            tracing::warn!(
                event = "quota",
                "could not record a stored file in the quota ledger (a live server will, once this one's lease runs out): {e}"
            );
        }
    }

    fn release(&self, ids: Vec<u64>) {
        // called from Drop, maybe on an async thread: recorded on a thread
        // of its own (a release that is lost is resolved once this server
        // is gone)
        let Some(me) = self.me.upgrade() else { return };
        let spawned = std::thread::Builder::new()
            .name("sft-release".into())
            .spawn(move || {
                if let Err(e) = me.append(Op::Release { ids }, None) {
                    tracing::warn!(
                        event = "quota",
                        "could not release a quota reservation: {e}"
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                event = "quota",
                "could not release a quota reservation: {e}"
            );
        }
    }

    fn removed(&self, owner: &str, bytes: u64) {
        let op = Op::Free {
            user: owner.to_string(),
            bytes,
        };
        if let Err(e) = self.append(op, None) {
            tracing::warn!(
                event = "quota",
                "could not record a removal in the quota ledger: {e}"
            );
        }
    }

    fn usage(&self) -> (Usage, HashMap<String, Usage>) {
        let mut book = self.lock();
        let _ = self.catch_up(&mut book);
        book.usage()
    }
}

/// This server's lease thread (`sft-lease`), for as long as the ledger
/// lives: every `--s3-lease` / 8 it rewrites the heartbeat and resolves
/// the reservations of servers gone; every ten minutes it compacts.
pub fn start_lease(ledger: &Arc<Ledger>) {
    let weak = Arc::downgrade(ledger);
    let every = ledger.bucket.lease.ttl / 8;
    let spawned = std::thread::Builder::new()
        .name("sft-lease".into())
        .spawn(move || {
            let mut compacted = Instant::now();
            loop {
                std::thread::sleep(every);
                let Some(l) = weak.upgrade() else { return };
                if let Err(e) = l.beat() {
                    tracing::warn!(event = "storage", "writing this server's heartbeat: {e}");
                    continue;
                }
                if let Err(e) = l.resolve_dead() {
                    tracing::warn!(
                        event = "quota",
                        "resolving a dead server's reservations: {e}"
                    );
                }
                if compacted.elapsed() >= COMPACT_EVERY {
                    compacted = Instant::now();
                    match l.compact(KEEP) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            event = "quota",
                            "compacted the quota ledger: {n} old entries removed"
                        ),
                        Err(e) => {
                            tracing::warn!(event = "quota", "compacting the quota ledger: {e}")
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(event = "storage", "cannot start the lease thread: {e}");
    }
}
