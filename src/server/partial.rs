//! Uploads cut off before their END, kept so that the same upload can
//! resume (PROTOCOL.md §4.9): the data received so far stays in its reserved
//! temporary file, and its quota reservation stays held, until the same user
//! uploads the same name with the same size again, or `--keep-partial`
//! passes.
//!
//! Kept in memory only: a server restart sweeps them with the other leftover
//! temporary files (`Store::sweep`), and their reservations with them, since
//! usage is rebuilt from the files on disk. Pure bookkeeping: the caller does
//! the filesystem work, and dropping a `Kept` removes its file and releases
//! its reservation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::quota::Reservation;
use super::store::Upload;

/// Most partial uploads kept per user; the oldest goes first.
pub const PER_USER: usize = 16;
/// Most partial uploads kept in all.
pub const TOTAL: usize = 1024;

/// What identifies an upload that may resume: the same user sending the same
/// name, the same size and the same OVERWRITE choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub user: String,
    pub name: String,
    pub size: u64,
    pub overwrite: bool,
}

/// An interrupted upload's data and the space held for it.
pub struct Kept {
    pub upload: Upload,
    pub reservation: Reservation,
    /// Bytes of the file already written (the file is exactly this long).
    pub len: u64,
    pub since: Instant,
}

/// The partial uploads a server holds.
pub struct Partials {
    keep: Duration,
    held: Mutex<HashMap<Key, Kept>>,
}

impl Partials {
    /// Partials expire `keep` after their upload stopped; `ZERO` keeps none.
    pub fn new(keep: Duration) -> Partials {
        Partials {
            keep,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Kept>> {
        // a panic elsewhere while holding it leaves a usable map
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the partial upload kept under `key`, if any and not expired.
    /// Others of the same user and name (another size: the file changed)
    /// can no longer resume anything: they are dropped, their space freed.
    pub fn take(&self, key: &Key) -> Option<Kept> {
        let mut gone = self.expire_locked();
        let kept = {
            let mut held = self.lock();
            let stale: Vec<Key> = held
                .keys()
                .filter(|k| k.user == key.user && k.name == key.name && *k != key)
                .cloned()
                .collect();
            gone.extend(stale.iter().filter_map(|k| held.remove(k)));
            held.remove(key)
        };
        drop(gone);
        kept
    }

    /// Keep an interrupted upload for resuming. Returns false (and drops it,
    /// removing its file) when partials are not kept at all.
    pub fn keep(&self, key: Key, kept: Kept) -> bool {
        if self.keep.is_zero() || kept.len == 0 {
            return false;
        }
        let mut gone = self.expire_locked();
        {
            let mut held = self.lock();
            let user = key.user.clone();
            if let Some(old) = held.insert(key, kept) {
                gone.push(old);
            }
            for limit_user in [Some(user.as_str()), None] {
                let limit = if limit_user.is_some() {
                    PER_USER
                } else {
                    TOTAL
                };
                loop {
                    let of: Vec<(&Key, &Kept)> = held
                        .iter()
                        .filter(|(k, _)| limit_user.is_none_or(|u| k.user == u))
                        .collect();
                    if of.len() <= limit {
                        break;
                    }
                    let Some(oldest) = of
                        .iter()
                        .min_by_key(|(_, v)| v.since)
                        .map(|(k, _)| (*k).clone())
                    else {
                        break;
                    };
                    if let Some(v) = held.remove(&oldest) {
                        gone.push(v);
                    }
                }
            }
        }
        // files are removed outside the lock
        drop(gone);
        true
    }

    /// Drop the partials older than `--keep-partial` (their files removed,
    /// their reservations released); how many.
    pub fn expire(&self) -> usize {
        self.expire_locked().len()
    }

    fn expire_locked(&self) -> Vec<Kept> {
        let mut held = self.lock();
        let old: Vec<Key> = held
            .iter()
            .filter(|(_, v)| v.since.elapsed() >= self.keep)
            .map(|(k, _)| k.clone())
            .collect();
        old.iter().filter_map(|k| held.remove(k)).collect()
    }

    /// Drop the partials kept directly in directory `dir` (their files
    /// removed, their reservations released), so that a directory that
    /// lists as empty can be removed; how many.
    pub fn discard_in(&self, dir: &str) -> usize {
        let gone: Vec<Kept> = {
            let mut held = self.lock();
            let inside: Vec<Key> = held
                .keys()
                .filter(|k| crate::names::split_parent(&k.name).0 == dir)
                .cloned()
                .collect();
            inside.iter().filter_map(|k| held.remove(k)).collect()
        };
        gone.len()
    }

    /// Drop every partial (the server is stopping); how many.
    pub fn clear(&self) -> usize {
        let gone: Vec<Kept> = self.lock().drain().map(|(_, v)| v).collect();
        gone.len()
    }

    /// How often `expire` should run.
    pub fn sweep_every(&self) -> Duration {
        (self.keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}
