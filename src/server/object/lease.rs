//! This server's lease on the bucket: its heartbeat (`servers/ID`, rewritten
//! every `ttl / 8`, so that one slow request is not taken for a silence) and
//! the fence that keeps a server which lost touch from storing a file
//! another server may already have accounted for.
//!
//! A live server resolves the reservations of a server whose heartbeat is
//! older than `ttl` (`ledger::Ledger::resolve_dead`): a reservation no
//! manifest names is released. So before a manifest is created, its
//! server must be sure it was never silent that long while the upload's
//! reservations were held: `fence` refuses the commit when the last
//! heartbeat is older than `ttl / 2` (it cannot be sure), and after any
//! silence of more than `ttl / 2` every reservation taken before it is
//! forfeit (its upload fails and can be retried; nothing is stored twice
//! or uncounted).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub struct Lease {
    pub ttl: Duration,
    state: Mutex<State>,
    /// This server's reservations below this ledger slot are forfeit.
    valid_from: AtomicU64,
}

struct State {
    /// When the newest heartbeat that was stored had been sent.
    beat: Option<Instant>,
    /// A silence ended before the ledger learnt where its forfeit ends
    /// (every reservation held now is forfeit).
    gap: bool,
}

impl Lease {
    pub fn new(ttl: Duration) -> Lease {
        Lease {
            ttl,
            state: Mutex::new(State {
                beat: None,
                gap: false,
            }),
            valid_from: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago the newest stored heartbeat was sent.
    pub fn age(&self) -> Option<Duration> {
        self.lock().beat.map(|t| t.elapsed())
    }

    /// A heartbeat sent at `sent` was stored.
    pub fn beaten(&self, sent: Instant) {
        let mut st = self.lock();
        if let Some(prev) = st.beat {
            if sent <= prev {
                return;
            }
            if sent.duration_since(prev) > self.ttl / 2 {
                st.gap = true;
            }
        }
        st.beat = Some(sent);
    }

    /// The ledger's next slot is `next`: reservations of this server below
    /// it were taken before the silence just ended.
    pub fn settle_gap(&self, next: u64) {
        let mut st = self.lock();
        if st.gap {
            self.valid_from.fetch_max(next, Ordering::SeqCst);
            st.gap = false;
        }
    }

    /// Whether a file stored under reservations `holds` may be made visible
    /// now (the heartbeat already checked fresh by the caller).
    pub fn check(&self, holds: &[u64]) -> Result<()> {
        let st = self.lock();
        let fresh = st.beat.is_some_and(|t| t.elapsed() <= self.ttl / 2);
        let from = self.valid_from.load(Ordering::SeqCst);
        if !fresh || (st.gap && !holds.is_empty()) || holds.iter().any(|&h| h < from) {
            return Err(Error::other(
                "this server lost touch with the object store for too long while the upload ran, so its reserved space may have been given back; nothing was stored: try again",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_lease_passes_and_a_silence_forfeits_older_reservations() {
        let l = Lease::new(Duration::from_secs(60));
        assert!(l.check(&[]).is_err(), "no heartbeat yet");
        let t0 = Instant::now();
        l.beaten(t0);
        l.check(&[0, 5]).unwrap();
        // a heartbeat 40 s after the last: longer than ttl / 2
        l.beaten(t0 + Duration::from_secs(40));
        assert!(l.check(&[5]).is_err(), "held across the silence");
        l.check(&[])
            .unwrap_or_else(|_| panic!("a file without reservations"));
        l.settle_gap(9);
        assert!(l.check(&[5]).is_err(), "taken before the silence");
        l.check(&[9, 10]).unwrap();
        // beats in time: nothing more is forfeit
        l.beaten(t0 + Duration::from_secs(50));
        l.check(&[9]).unwrap();
    }
}
