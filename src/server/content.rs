//! Which stored files hold which content: SHA-256 → names, for CLONE
//! (PROTOCOL.md §4.4c), so a user re-uploading something it already stored
//! under another name sends no data.
//!
//! The index is only a hint. It is filled by one walk of the root, on a
//! thread of its own, started by the first CLONE (which waits for it a
//! little, `WAIT`; a CLONE while the walk still runs is a miss), from the
//! digest and owner extended attributes the store writes; and kept up to
//! date by every commit and removal. Files changed
//! behind the server's back (by hand, a restore) are not seen, so every hit
//! is checked again when it is used (`Store::clone_from`: the file exists, is
//! regular, belongs to the user, and its recorded digest is valid for its
//! size and mtime) and the copy is hashed before it is published: a stale
//! entry costs a miss, never a wrong file.
//!
//! Memory: each indexed file costs its name and owner plus about
//! `ENTRY_COST` bytes of bookkeeping (two hash-map slots, a vector slot, the
//! allocations' headers); in all at most `BUDGET` (64 MiB, roughly 400,000
//! files with 40-byte names). Beyond it new files are not indexed: CLONEs of
//! their content miss and the client uploads normally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How long a CLONE waits for the walk that fills the index; after that it
/// is a miss (the client uploads) and the walk goes on.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a CLONE PROBE waits for that walk; after that it is a miss.
pub const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Most memory the index may take (estimated, see `ENTRY_COST`).
pub const BUDGET: usize = 64 << 20;
/// Bookkeeping of one indexed file beyond its name and owner, estimated.
pub const ENTRY_COST: usize = 160;

/// Whether the walk that fills the index has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet: nothing is recorded (the walk will find what is on disk).
    Cold,
    /// A walk is running: commits are recorded already, lookups miss.
    Building,
    Ready,
}

/// One indexed file.
struct Held {
    sha256: [u8; 32],
    owner: Box<str>,
    size: u64,
}

struct State {
    phase: Phase,
    /// name → its content and owner
    names: HashMap<Arc<str>, Held>,
    /// content → the names holding it
    by_digest: HashMap<[u8; 32], Vec<Arc<str>>>,
    /// (owner, size) → how many names hold content of that size for that
    /// owner: a client asks this before it hashes a file (CLONE_PROBE).
    by_size: HashMap<(Box<str>, u64), u32>,
    /// Estimated memory in use.
    bytes: usize,
}

/// A file found holding content: (name, owner, SHA-256, size).
pub type Holder = (String, String, [u8; 32], u64);

/// The index; cheap to consult, updated under one short lock.
pub struct ContentIndex {
    state: Mutex<State>,
    /// Whether the walk has filled it.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for ContentIndex {
    fn default() -> Self {
        ContentIndex {
            state: Mutex::new(State {
                phase: Phase::Cold,
                names: HashMap::new(),
                by_digest: HashMap::new(),
                by_size: HashMap::new(),
                bytes: 0,
            }),
            ready: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// The cost of indexing a file, as counted against `BUDGET`.
pub fn cost(name: &str, owner: &str) -> usize {
    name.len() + owner.len() + ENTRY_COST
}

impl State {
    fn insert(&mut self, sha256: [u8; 32], owner: &str, name: &str, size: u64) {
        self.remove(name);
        let c = cost(name, owner);
        if self.bytes + c > BUDGET {
            return; // full: this content will not be found (a miss)
        }
        let name: Arc<str> = Arc::from(name);
        self.names.insert(
            name.clone(),
            Held {
                sha256,
                owner: owner.into(),
                size,
            },
        );
        self.by_digest.entry(sha256).or_default().push(name);
        *self.by_size.entry((owner.into(), size)).or_default() += 1;
        self.bytes += c;
    }

    fn remove(&mut self, name: &str) {
        let Some((name, held)) = self.names.remove_entry(name) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(cost(&name, &held.owner));
        let key = (held.owner.clone(), held.size);
        if let Some(n) = self.by_size.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_size.remove(&key);
            }
        }
        if let Some(v) = self.by_digest.get_mut(&held.sha256) {
            v.retain(|n| *n != name);
            if v.is_empty() {
                self.by_digest.remove(&held.sha256);
            }
        }
    }
}

impl ContentIndex {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while holding the lock leaves a consistent map (every
        // update is a few map operations): carry on with it
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file was stored: `name` now holds `sha256`, uploaded by `owner`.
    /// Files without an owner are never a source, so not recorded.
    pub fn stored(&self, sha256: &[u8; 32], owner: &str, name: &str, size: u64) {
        let mut s = self.lock();
        if s.phase == Phase::Cold {
            return;
        }
        if owner.is_empty() {
            s.remove(name);
        } else {
            s.insert(*sha256, owner, name, size);
        }
    }

    /// A file was removed.
    pub fn removed(&self, name: &str) {
        let mut s = self.lock();
        if s.phase != Phase::Cold {
            s.remove(name);
        }
    }

    /// A checked candidate turned out not to hold the content (any more).
    pub fn stale(&self, name: &str) {
        self.removed(name);
    }

    /// Wait (at most `limit`) until the index is filled.
    pub async fn wait_ready(&self, limit: std::time::Duration) {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(limit, ready.wait_for(|r| *r)).await;
    }

    /// The walk could not be started: the next CLONE tries again.
    pub fn abandon(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Building {
            s.phase = Phase::Cold;
        }
    }

    /// Whether the caller should fill the index now (the first to ask); then
    /// it must call `built` with what it found (or `abandon`).
    pub fn start_building(&self) -> bool {
        let mut s = self.lock();
        if s.phase == Phase::Cold {
            s.phase = Phase::Building;
            true
        } else {
            false
        }
    }

    /// The walk's findings: (name, owner, digest, size). What was stored
    /// while the walk ran is newer and kept.
    pub fn built(&self, found: Vec<(String, String, [u8; 32], u64)>) {
        let mut s = self.lock();
        for (name, owner, sha256, size) in found {
            if !s.names.contains_key(name.as_str()) {
                s.insert(sha256, &owner, &name, size);
            }
        }
        s.phase = Phase::Ready;
        drop(s);
        self.ready.send_replace(true);
    }

    /// Names that held `sha256` for `owner` when last seen (to be checked);
    /// empty while the index is being filled.
    pub fn candidates(&self, sha256: &[u8; 32], owner: &str) -> Vec<String> {
        let s = self.lock();
        if s.phase != Phase::Ready {
            return Vec::new();
        }
        s.by_digest
            .get(sha256)
            .map(|v| {
                v.iter()
                    .filter(|n| s.names.get(&***n).is_some_and(|h| &*h.owner == owner))
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether some file of `owner` had exactly `size` bytes when last seen:
    /// worth hashing a file of that size to offer it by content. False
    /// while the index is being filled.
    pub fn holds_size(&self, owner: &str, size: u64) -> bool {
        let s = self.lock();
        s.phase == Phase::Ready && s.by_size.contains_key(&(Box::from(owner), size))
    }

    /// Up to `most` names of `owner` that had exactly `size` bytes when
    /// last seen (to be checked: a file removed behind the server's back
    /// is still listed until a check finds it gone).
    pub fn of_size(&self, owner: &str, size: u64, most: usize) -> Vec<String> {
        let s = self.lock();
        if s.phase != Phase::Ready || !s.by_size.contains_key(&(Box::from(owner), size)) {
            return Vec::new();
        }
        s.names
            .iter()
            .filter(|(_, h)| h.size == size && &*h.owner == owner)
            .take(most)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Files indexed, and the memory they are estimated to take.
    pub fn size(&self) -> (usize, usize) {
        let s = self.lock();
        (s.names.len(), s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_content_and_owner() {
        let ix = ContentIndex::default();
        // nothing is recorded before the index is built
        ix.stored(&[1; 32], "rita", "early", 5);
        assert!(ix.start_building());
        assert!(!ix.start_building(), "only one walk");
        ix.stored(&[1; 32], "rita", "during", 5);
        assert!(ix.candidates(&[1; 32], "rita").is_empty(), "not ready yet");
        ix.built(vec![
            ("a".into(), "rita".into(), [1; 32], 5),
            ("during".into(), "rita".into(), [9; 32], 7), // older than the commit
            ("b".into(), "sam".into(), [1; 32], 5),
        ]);
        let mut c = ix.candidates(&[1; 32], "rita");
        c.sort();
        assert_eq!(c, ["a", "during"]);
        assert_eq!(ix.candidates(&[1; 32], "sam"), ["b"]);
        assert!(ix.candidates(&[1; 32], "nobody").is_empty());
        assert!(ix.holds_size("rita", 5) && ix.holds_size("sam", 5));
        assert!(
            !ix.holds_size("rita", 7),
            "the commit replaced the walk's size"
        );
        assert!(!ix.holds_size("nobody", 5));
        // overwritten with other content: found under that, not the old
        ix.stored(&[2; 32], "rita", "a", 6);
        assert_eq!(ix.candidates(&[1; 32], "rita"), ["during"]);
        assert_eq!(ix.candidates(&[2; 32], "rita"), ["a"]);
        assert!(ix.holds_size("rita", 6));
        ix.removed("during");
        ix.stale("b");
        assert!(ix.candidates(&[1; 32], "rita").is_empty());
        assert!(ix.candidates(&[1; 32], "sam").is_empty());
        assert_eq!(ix.size(), (1, cost("a", "rita")));
        assert!(!ix.holds_size("sam", 5), "removed names no longer count");
        // replaced by a file without owner: no longer a source
        ix.stored(&[2; 32], "", "a", 6);
        assert_eq!(ix.size(), (0, 0));
    }

    #[test]
    fn the_index_stays_within_its_budget() {
        let ix = ContentIndex::default();
        assert!(ix.start_building());
        ix.built(Vec::new());
        let name = "n".repeat(4000);
        let fits = BUDGET / cost(&format!("{name}000000"), "o");
        for i in 0..fits + 10 {
            ix.stored(&[1; 32], "o", &format!("{name}{i:06}"), 1);
        }
        let (files, bytes) = ix.size();
        assert!(bytes <= BUDGET, "{bytes}");
        assert_eq!(files, fits);
    }
}
