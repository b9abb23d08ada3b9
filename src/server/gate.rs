//! Admission of connections that have not authenticated yet.
//!
//! A stranger needs no token to open a socket, so strangers never take a
//! session slot (`--max-connections` counts authenticated sessions only).
//! They have a budget of their own (`--max-unauthenticated`, and a share per
//! address), and when it is full the newcomer is let in and the oldest
//! waiting connection of the address holding the most is dropped: a flood of
//! idle sockets pushes out itself, while a real client, which finishes its
//! handshake in a few round trips, gets through. Every drop is logged,
//! rate-limited.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Waiting connections, oldest first (ids grow with time).
#[derive(Default)]
struct Waiting {
    next_id: u64,
    by_id: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: IpAddr,
    /// Fired when the connection is dropped to make room.
    evict: oneshot::Sender<()>,
}

/// The budget for unauthenticated connections.
pub struct Gate {
    waiting: Mutex<Waiting>,
    max: usize,
    per_ip: usize,
}

/// One admitted connection's place; removed when it authenticates
/// ([`Pass::promote`]) or ends (drop).
pub struct Pass {
    gate: Arc<Gate>,
    id: u64,
    /// Resolves when the connection was dropped to make room for another.
    pub evicted: oneshot::Receiver<()>,
}

/// Whom the gate dropped to make room, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub ip: IpAddr,
    /// How many were waiting from that address.
    pub from_ip: usize,
}

impl Gate {
    pub fn new(max: usize, per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            waiting: Mutex::new(Waiting::default()),
            max: max.max(1),
            per_ip: per_ip.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // the map stays consistent even if a holder panicked
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit a connection from `ip`, dropping another if the budget is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> (Pass, Option<Dropped>) {
        let mut w = self.lock();
        let mut dropped = None;
        let victim_ip = if w.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            Some(ip)
        } else if w.by_id.len() >= self.max {
            // the address holding the most waiting connections gives one up
            w.per_ip.iter().max_by_key(|(_, n)| **n).map(|(ip, _)| *ip)
        } else {
            None
        };
        if let Some(vip) = victim_ip {
            let oldest = w.by_id.iter().find(|(_, e)| e.ip == vip).map(|(id, _)| *id);
            if let Some(id) = oldest {
                let from_ip = w.per_ip.get(&vip).copied().unwrap_or(0);
                if let Some(e) = remove(&mut w, id) {
                    let _ = e.evict.send(());
                }
                dropped = Some(Dropped { ip: vip, from_ip });
            }
        }
        let id = w.next_id;
        w.next_id += 1;
        let (tx, rx) = oneshot::channel();
        w.by_id.insert(id, Entry { ip, evict: tx });
        *w.per_ip.entry(ip).or_insert(0) += 1;
        drop(w);
        (
            Pass {
                gate: self.clone(),
                id,
                evicted: rx,
            },
            dropped,
        )
    }

    /// Drop the oldest waiting connection (to free a descriptor when the
    /// process has run out). Returns whom, if anyone was waiting.
    pub fn evict_oldest(&self) -> Option<IpAddr> {
        let mut w = self.lock();
        let id = *w.by_id.keys().next()?;
        let e = remove(&mut w, id)?;
        let ip = e.ip;
        let _ = e.evict.send(());
        Some(ip)
    }
}

fn remove(w: &mut Waiting, id: u64) -> Option<Entry> {
    let e = w.by_id.remove(&id)?;
    if let Some(n) = w.per_ip.get_mut(&e.ip) {
        *n -= 1;
        if *n == 0 {
            w.per_ip.remove(&e.ip);
        }
    }
    Some(e)
}

impl Pass {
    /// The connection authenticated: it leaves the budget. False if it was
    /// dropped to make room in the meantime (it must then end).
    pub fn promote(&self) -> bool {
        let mut w = self.gate.lock();
        remove(&mut w, self.id).is_some()
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut w = self.gate.lock();
        remove(&mut w, self.id);
    }
}

/// At most one log line per interval for a recurring event; the lines that
/// were held back are counted in the next one.
pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were
    /// held back since the last one; `None` to stay quiet.
    pub fn ready(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_full_address_gives_up_its_oldest_connection() {
        let g = Gate::new(100, 2);
        let (mut a, d) = g.admit(ip(1));
        assert_eq!(d, None);
        let (_b, _) = g.admit(ip(1));
        let (_c, d) = g.admit(ip(1));
        assert_eq!(
            d,
            Some(Dropped {
                ip: ip(1),
                from_ip: 2
            })
        );
        assert!(a.evicted.try_recv().is_ok(), "the oldest was told");
        assert!(!a.promote(), "an evicted connection cannot authenticate");
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_full_budget_is_paid_by_the_address_holding_the_most() {
        let g = Gate::new(3, 10);
        let (mut lone, _) = g.admit(ip(9));
        let (mut f1, _) = g.admit(ip(1));
        let (_f2, _) = g.admit(ip(1));
        let (newcomer, d) = g.admit(ip(2));
        assert_eq!(d.map(|d| d.ip), Some(ip(1)));
        assert!(f1.evicted.try_recv().is_ok());
        assert!(lone.evicted.try_recv().is_err(), "the lone client stays");
        assert!(lone.promote());
        assert!(newcomer.promote());
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_pass_leaves_the_budget_when_dropped_or_promoted() {
        let g = Gate::new(2, 2);
        let (a, _) = g.admit(ip(1));
        let (b, _) = g.admit(ip(1));
        drop(a);
        assert_eq!(g.len(), 1);
        assert!(b.promote());
        assert!(g.is_empty());
        drop(b);
        let (_c, d) = g.admit(ip(1));
        assert_eq!(d, None, "room was freed");
        assert_eq!(g.evict_oldest(), Some(ip(1)));
        assert_eq!(g.evict_oldest(), None);
    }

    #[test]
    fn the_throttle_counts_what_it_held_back() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        let t2 = Throttle::new(Duration::ZERO);
        assert_eq!(t2.ready(), Some(0));
        assert_eq!(t2.ready(), Some(0));
    }
}
