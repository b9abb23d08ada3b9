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
//! Entries: `reserve` (before any data is accepted), `settle` (the file is
//! stored: its size becomes usage, an overwritten file's is freed),
//! `release` (the upload ended otherwise) and `free` (a file was removed).
//! A reservation counts only while its server lives: every server rewrites
//! `servers/ID` every `TTL / 4`, and a reservation of a server whose
//! heartbeat is older than `TTL` (by the store's own clock: the newest
//! heartbeat is "now") counts no more, so a crashed server leaks nothing.
//! Every `CHECKPOINT` entries the state is written as `ckpt/SEQ` (also
//! created only if absent: any server may, all write the same sums, less
//! the holds of servers gone), and a starting server reads from the newest
//! checkpoint on. Entries are not deleted yet.
//!
//! `Book` is the pure part (entries in, usage out), tested without a network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::{Bucket, layout, names::create, store_err};
use crate::error::{Error, Kind, Result};
use crate::server::quota::{Remote, Usage};
use crate::server::store::Existing;

/// A reservation of a server not heard from for this long counts no more
/// (`--s3-lease`).
pub const TTL: Duration = Duration::from_secs(60);
/// A checkpoint every this many entries.
pub const CHECKPOINT: u64 = 256;

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Reserve {
        server: String,
        user: String,
        bytes: u64,
        files: u64,
    },
    Settle {
        ids: Vec<u64>,
        user: String,
        bytes: u64,
        replaced: Option<Existing>,
    },
    Release {
        ids: Vec<u64>,
    },
    Free {
        user: String,
        bytes: u64,
    },
}

/// An entry as stored: the op and a random nonce, by which a server knows
/// its own entry when a create's answer was lost and its retry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub nonce: String,
    #[serde(flatten)]
    pub op: Op,
}

/// A reservation not yet settled or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub server: String,
    pub user: String,
    pub bytes: u64,
    pub files: u64,
}

/// The state after entries `0..next`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub next: u64,
    /// Stored (bytes, files) per owner.
    pub stored: BTreeMap<String, (u64, u64)>,
    pub holds: BTreeMap<u64, Hold>,
}

impl Book {
    /// Apply entry `next` and move on.
    pub fn apply(&mut self, op: &Op) {
        let seq = self.next;
        self.next += 1;
        match op {
            Op::Reserve {
                server,
                user,
                bytes,
                files,
            } => {
                self.holds.insert(
                    seq,
                    Hold {
                        server: server.clone(),
                        user: user.clone(),
                        bytes: *bytes,
                        files: *files,
                    },
                );
            }
            Op::Settle {
                ids,
                user,
                bytes,
                replaced,
            } => {
                for id in ids {
                    self.holds.remove(id);
                }
                let e = self.stored.entry(user.clone()).or_default();
                e.0 += bytes;
                e.1 += 1;
                if let Some(old) = replaced {
                    self.free(&old.owner, old.size);
                }
            }
            Op::Release { ids } => {
                for id in ids {
                    self.holds.remove(id);
                }
            }
            Op::Free { user, bytes } => self.free(user, *bytes),
        }
    }

    fn free(&mut self, user: &str, bytes: u64) {
        if let Some(e) = self.stored.get_mut(user) {
            e.0 = e.0.saturating_sub(bytes);
            e.1 = e.1.saturating_sub(1);
        }
    }

    /// The total and per-user usage, counting the holds of live servers.
    pub fn usage(&self, live: &dyn Fn(&str) -> bool) -> (Usage, HashMap<String, Usage>) {
        let mut total = Usage::default();
        let mut users: HashMap<String, Usage> = HashMap::new();
        for (user, &(bytes, files)) in &self.stored {
            total.bytes += bytes;
            total.files += files;
            let u = users.entry(user.clone()).or_default();
            u.bytes += bytes;
            u.files += files;
        }
        for h in self.holds.values().filter(|h| live(&h.server)) {
            total.reserved_bytes += h.bytes;
            total.reserved_files += h.files;
            let u = users.entry(h.user.clone()).or_default();
            u.reserved_bytes += h.bytes;
            u.reserved_files += h.files;
        }
        (total, users)
    }

    /// Servers holding reservations.
    fn holders(&self) -> HashSet<&str> {
        self.holds.values().map(|h| h.server.as_str()).collect()
    }
}

/// What to reserve, given the total and the user's usage (`quota.rs`).
type Decide<'a> = &'a dyn Fn(&Usage, &Usage) -> Result<u64>;

/// The ledger as one server sees it.
pub struct Ledger {
    bucket: Arc<Bucket>,
    book: Mutex<Book>,
    /// When this server last wrote its heartbeat.
    beat: Mutex<Option<Instant>>,
    /// Itself, for releases recorded on a thread of their own.
    me: std::sync::Weak<Ledger>,
    /// How long a silent server's reservations still count.
    ttl: Duration,
}

impl Ledger {
    /// Load from the newest checkpoint and the entries after it, and write
    /// this server's first heartbeat.
    pub fn open(bucket: Arc<Bucket>, ttl: Duration) -> Result<Arc<Ledger>> {
        let prefix = bucket.key("ckpt");
        let newest = bucket.run(|os| async move {
            let listed = os
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| store_err(&e, "listing", &prefix))?;
            Ok(listed
                .objects
                .iter()
                .filter_map(|o| layout::seq(&o.location))
                .max())
        })?;
        let mut book = Book::default();
        if let Some(seq) = newest
            && let Some(bytes) = bucket.read_small(bucket.key(&layout::checkpoint(seq)))?
        {
            book = serde_json::from_slice(&bytes).map_err(|_| {
                Error::other(format!(
                    "the quota checkpoint {} in the object store is damaged",
                    layout::checkpoint(seq)
                ))
            })?;
        }
        let l = Arc::new_cyclic(|me| Ledger {
            bucket,
            book: Mutex::new(book),
            beat: Mutex::new(None),
            me: me.clone(),
            ttl,
        });
        l.heartbeat()?;
        {
            let mut book = l.lock();
            l.catch_up(&mut book)?;
        }
        Ok(l)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrite `servers/ID` (by this server only: a plain PUT).
    pub fn heartbeat(&self) -> Result<()> {
        let key = self.bucket.key(&layout::server(&self.bucket.server));
        self.bucket.run(|os| async move {
            os.put(&key, b"alive".to_vec().into())
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e, "writing", &key))
        })?;
        *self.beat.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Read the entries written since `book.next`.
    fn catch_up(&self, book: &mut Book) -> Result<()> {
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
        Ok(())
    }

    /// Which servers holding reservations are alive.
    fn live(&self, book: &Book) -> Result<HashSet<String>> {
        let me = self.bucket.server.clone();
        let others: Vec<String> = book
            .holders()
            .into_iter()
            .filter(|s| *s != me)
            .map(str::to_string)
            .collect();
        let mut live: HashSet<String> = HashSet::from([me]);
        if others.is_empty() {
            return Ok(live);
        }
        let prefix = self.bucket.key("servers");
        let seen = self.bucket.run(|os| async move {
            let listed = os
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| store_err(&e, "listing", &prefix))?;
            Ok(listed
                .objects
                .into_iter()
                .filter_map(|o| Some((layout::last(&o.location)?, o.last_modified)))
                .collect::<HashMap<_, _>>())
        })?;
        let Some(now) = seen.values().max().copied() else {
            return Ok(live);
        };
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        for s in others {
            if seen
                .get(&s)
                .is_some_and(|&at| (now - at).num_seconds() <= ttl)
            {
                live.insert(s);
            }
        }
        Ok(live)
    }

    /// Append `op` at the first free slot; with `decide`, first ask it
    /// (given the usage then) what to reserve, and write that instead.
    fn append(&self, op: Op, decide: Option<Decide<'_>>) -> Result<(u64, u64)> {
        let mut book = self.lock();
        loop {
            // no read first: a slot is written only by a server that read
            // every slot before it, so if ours is free, all before it are
            // known here; if it is taken, read on and try again
            let mut op = op.clone();
            let mut granted = 0;
            if let (Some(decide), Op::Reserve { user, bytes, .. }) = (decide, &mut op) {
                let live = self.live(&book)?;
                let (total, users) = book.usage(&|s| live.contains(s));
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
                    // without the holds of servers gone (they count for
                    // nothing), so the state does not grow with crashes
                    let mut kept = book.clone();
                    if let Ok(live) = self.live(&book) {
                        kept.holds.retain(|_, h| live.contains(&h.server));
                    }
                    let ckpt = serde_json::to_vec(&kept).unwrap_or_default();
                    // any server may write it; a lost race is fine
                    let _ = create(&self.bucket, &layout::checkpoint(book.next), ckpt);
                }
                return Ok((seq, granted));
            }
            // another server took the slot: read it and the rest, try again
            self.catch_up(&mut book)?;
        }
    }

    fn stale(&self) -> bool {
        let beat = *self.beat.lock().unwrap_or_else(|p| p.into_inner());
        beat.is_none_or(|t| t.elapsed() > self.ttl / 2)
    }
}

impl Remote for Ledger {
    fn reserve(
        &self,
        user: &str,
        files: u64,
        decide: &dyn Fn(&Usage, &Usage) -> Result<u64>,
    ) -> Result<(u64, u64)> {
        if self.stale() {
            // our reservations may already count as expired elsewhere
            self.heartbeat().map_err(|e| {
                Error::new(
                    Kind::Other,
                    format!("cannot take a quota reservation: {}", e.message),
                )
            })?;
        }
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
                "could not record a stored file in the quota ledger: {e}"
            );
        }
    }

    fn release(&self, ids: Vec<u64>) {
        // called from Drop, maybe on an async thread: recorded on a thread
        // of its own (a release that is lost expires with this server)
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
        let live = self.live(&book).unwrap_or_default();
        book.usage(&|s| live.contains(s))
    }
}

/// Keep this server's heartbeat fresh, on the object-store threads, for as
/// long as the ledger lives.
pub fn start_heartbeat(ledger: &Arc<Ledger>) {
    let weak = Arc::downgrade(ledger);
    let every = ledger.ttl / 4;
    ledger.bucket.bridge.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(l) = weak.upgrade() else { return };
            let key = l.bucket.key(&layout::server(&l.bucket.server));
            let os = l.bucket.os.clone();
            drop(l);
            match os.put(&key, b"alive".to_vec().into()).await {
                Ok(_) => {
                    if let Some(l) = weak.upgrade() {
                        *l.beat.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                }
                Err(e) => tracing::warn!(
                    event = "storage",
                    "{}",
                    super::describe(&e, "writing this server's heartbeat")
                ),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(server: &str, user: &str, bytes: u64) -> Op {
        Op::Reserve {
            server: server.into(),
            user: user.into(),
            bytes,
            files: 1,
        }
    }

    #[test]
    fn reserve_settle_release_free() {
        let mut b = Book::default();
        b.apply(&reserve("a", "u", 10)); // 0
        b.apply(&reserve("b", "u", 5)); // 1
        let (t, users) = b.usage(&|_| true);
        assert_eq!((t.bytes, t.reserved_bytes, t.reserved_files), (0, 15, 2));
        assert_eq!(users["u"].reserved_bytes, 15);
        b.apply(&Op::Settle {
            ids: vec![0],
            user: "u".into(),
            bytes: 9,
            replaced: None,
        });
        b.apply(&Op::Release { ids: vec![1] });
        let (t, _) = b.usage(&|_| true);
        assert_eq!((t.bytes, t.files, t.reserved_bytes), (9, 1, 0));
        b.apply(&Op::Free {
            user: "u".into(),
            bytes: 9,
        });
        let (t, _) = b.usage(&|_| true);
        assert_eq!((t.bytes, t.files), (0, 0));
        assert_eq!(b.next, 5);
    }

    #[test]
    fn holds_of_dead_servers_do_not_count() {
        let mut b = Book::default();
        b.apply(&reserve("dead", "u", 100));
        b.apply(&reserve("live", "u", 1));
        let (t, _) = b.usage(&|s| s == "live");
        assert_eq!(t.reserved_bytes, 1);
        assert_eq!(b.holders().len(), 2);
    }

    #[test]
    fn overwrite_frees_the_old_size() {
        let mut b = Book::default();
        b.apply(&Op::Settle {
            ids: vec![],
            user: "u".into(),
            bytes: 10,
            replaced: None,
        });
        b.apply(&Op::Settle {
            ids: vec![],
            user: "u".into(),
            bytes: 4,
            replaced: Some(Existing {
                size: 10,
                owner: "u".into(),
            }),
        });
        let (t, _) = b.usage(&|_| true);
        assert_eq!((t.bytes, t.files), (4, 1));
    }

    #[test]
    fn entries_and_checkpoints_round_trip() {
        let op = reserve("a", "u", 3);
        let entry = Entry {
            nonce: "n1".into(),
            op: op.clone(),
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(text.contains("\"op\":\"reserve\""), "{text}");
        assert!(text.contains("\"nonce\":\"n1\""), "{text}");
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
        let mut b = Book::default();
        b.apply(&op);
        let back: Book = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
