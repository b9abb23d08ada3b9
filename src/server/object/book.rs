//! The quota ledger's pure part: its entries, the state they add up to
//! (`Book`), and the decisions taken on that state — how a dead server's
//! reservations are resolved and which old entries a checkpoint makes
//! removable. Tested without a network; `ledger.rs` reads and writes them.
//!
//! A reservation counts until it is settled or released, whoever writes
//! that: its own server, or — when that server died — the live server that
//! resolves it (`resolve`), by looking for the manifest that names it. So a
//! server killed between creating a file's manifest and recording it leaves
//! that file counted, and one killed before leaves nothing held.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::server::quota::Usage;
use crate::server::store::Existing;

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
    /// Reservations `ids` became a stored file (with `ids` empty: a file
    /// stored without one). Recorded once: when none of `ids` is still
    /// held (a resolver or a retry recorded it first), it changes nothing.
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
                let held = ids.iter().filter(|id| self.holds.remove(id).is_some());
                if held.count() == 0 && !ids.is_empty() {
                    return; // settled already
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

    /// The total and per-user usage. Every open reservation counts, a dead
    /// server's too, until it is resolved.
    pub fn usage(&self) -> (Usage, HashMap<String, Usage>) {
        let mut total = Usage::default();
        let mut users: HashMap<String, Usage> = HashMap::new();
        for (user, &(bytes, files)) in &self.stored {
            total.bytes += bytes;
            total.files += files;
            let u = users.entry(user.clone()).or_default();
            u.bytes += bytes;
            u.files += files;
        }
        for h in self.holds.values() {
            total.reserved_bytes += h.bytes;
            total.reserved_files += h.files;
            let u = users.entry(h.user.clone()).or_default();
            u.reserved_bytes += h.bytes;
            u.reserved_files += h.files;
        }
        (total, users)
    }

    /// Servers holding reservations.
    pub fn holders(&self) -> HashSet<&str> {
        self.holds.values().map(|h| h.server.as_str()).collect()
    }

    /// Open reservations of servers that are not `live`.
    pub fn dead_holds(&self, live: &dyn Fn(&str) -> bool) -> Vec<u64> {
        self.holds
            .iter()
            .filter(|(_, h)| !live(&h.server))
            .map(|(&id, _)| id)
            .collect()
    }
}

/// A stored file as the resolver sees it: its manifest's size and the
/// reservations it was stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub size: u64,
    pub holds: Vec<u64>,
}

/// The entries that resolve the dead server's reservations `dead`, given
/// every stored file: a reservation some manifest names was stored (its
/// server died before recording it), so it is settled with that file's
/// size; the rest ended without a file and are released.
pub fn resolve(book: &Book, dead: &[u64], files: &[Named]) -> Vec<Op> {
    let dead: HashSet<u64> = dead
        .iter()
        .copied()
        .filter(|id| book.holds.contains_key(id))
        .collect();
    let mut done: HashSet<u64> = HashSet::new();
    let mut out = Vec::new();
    for f in files {
        if !f.holds.iter().any(|id| dead.contains(id)) {
            continue;
        }
        let ids: Vec<u64> = f
            .holds
            .iter()
            .copied()
            .filter(|id| book.holds.contains_key(id) && done.insert(*id))
            .collect();
        let Some(user) = ids.first().and_then(|id| book.holds.get(id)) else {
            continue;
        };
        out.push(Op::Settle {
            user: user.user.clone(),
            ids,
            bytes: f.size,
            replaced: None,
        });
    }
    let mut released: Vec<u64> = dead.into_iter().filter(|id| !done.contains(id)).collect();
    if !released.is_empty() {
        released.sort_unstable();
        out.push(Op::Release { ids: released });
    }
    out
}

/// Which entries compaction may remove: given the checkpoints (sequence
/// number, age), those below the newest checkpoint at least `keep` old —
/// every server has read past it (a server whose book was last brought up
/// to date more than `keep / 2` ago reloads from the newest checkpoint
/// before it writes, `Ledger::append`), so no server will read or write a
/// slot below it again. `None`: nothing yet.
pub fn compactable(ckpts: &[(u64, std::time::Duration)], keep: std::time::Duration) -> Option<u64> {
    ckpts
        .iter()
        .filter(|(_, age)| *age >= keep)
        .map(|&(seq, _)| seq)
        .max()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let (t, users) = b.usage();
        assert_eq!((t.bytes, t.reserved_bytes, t.reserved_files), (0, 15, 2));
        assert_eq!(users["u"].reserved_bytes, 15);
        b.apply(&Op::Settle {
            ids: vec![0],
            user: "u".into(),
            bytes: 9,
            replaced: None,
        });
        b.apply(&Op::Release { ids: vec![1] });
        let (t, _) = b.usage();
        assert_eq!((t.bytes, t.files, t.reserved_bytes), (9, 1, 0));
        b.apply(&Op::Free {
            user: "u".into(),
            bytes: 9,
        });
        let (t, _) = b.usage();
        assert_eq!((t.bytes, t.files), (0, 0));
        assert_eq!(b.next, 5);
    }

    #[test]
    fn holds_of_dead_servers_count_until_resolved() {
        let mut b = Book::default();
        b.apply(&reserve("dead", "u", 100));
        b.apply(&reserve("live", "u", 1));
        let (t, _) = b.usage();
        assert_eq!(t.reserved_bytes, 101, "never exceeded: a dead hold counts");
        assert_eq!(b.holders().len(), 2);
        assert_eq!(b.dead_holds(&|s| s == "live"), vec![0]);
    }

    #[test]
    fn a_settle_is_counted_once() {
        let mut b = Book::default();
        b.apply(&reserve("a", "u", 10)); // 0
        let settle = Op::Settle {
            ids: vec![0],
            user: "u".into(),
            bytes: 10,
            replaced: None,
        };
        b.apply(&settle);
        b.apply(&settle); // a resolver's, or a retry's
        let (t, _) = b.usage();
        assert_eq!((t.bytes, t.files, t.reserved_bytes), (10, 1, 0));
        // released first (resolved as dead), then settled late: not counted
        b.apply(&reserve("a", "u", 5)); // 3
        b.apply(&Op::Release { ids: vec![3] });
        b.apply(&Op::Settle {
            ids: vec![3],
            user: "u".into(),
            bytes: 5,
            replaced: None,
        });
        assert_eq!(b.usage().0.bytes, 10);
    }

    #[test]
    fn dead_holds_named_by_a_manifest_are_settled_and_the_rest_released() {
        let mut b = Book::default();
        b.apply(&reserve("dead", "u", 10)); // 0: stored, not recorded
        b.apply(&reserve("dead", "u", 20)); // 1: cut off
        b.apply(&reserve("dead", "v", 4)); // 2: a stream's first step
        b.apply(&reserve("dead", "v", 4)); // 3: and its growth
        b.apply(&reserve("live", "u", 7)); // 4
        let files = [
            Named {
                size: 9,
                holds: vec![0],
            },
            Named {
                size: 6,
                holds: vec![2, 3],
            },
            Named {
                size: 1,
                holds: vec![], // an old file
            },
        ];
        let ops = resolve(&b, &b.dead_holds(&|s| s == "live"), &files);
        assert_eq!(
            ops,
            vec![
                Op::Settle {
                    ids: vec![0],
                    user: "u".into(),
                    bytes: 9,
                    replaced: None
                },
                Op::Settle {
                    ids: vec![2, 3],
                    user: "v".into(),
                    bytes: 6,
                    replaced: None
                },
                Op::Release { ids: vec![1] },
            ]
        );
        for op in &ops {
            b.apply(op);
        }
        let (t, users) = b.usage();
        assert_eq!((t.bytes, t.files), (15, 2));
        assert_eq!(t.reserved_bytes, 7, "only the live server's hold is left");
        assert_eq!(users["v"].bytes, 6);
        // resolving again changes nothing
        assert!(resolve(&b, &b.dead_holds(&|s| s == "live"), &files).is_empty());
    }

    #[test]
    fn only_checkpoints_old_enough_allow_compaction() {
        let h = Duration::from_secs(3600);
        assert_eq!(compactable(&[], h), None);
        assert_eq!(compactable(&[(256, h / 2)], h), None);
        assert_eq!(
            compactable(&[(256, h * 3), (512, h * 2), (768, h / 3)], h),
            Some(512)
        );
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
        let (t, _) = b.usage();
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
