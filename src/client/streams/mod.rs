//! One large transfer over several connections of the same session
//! (`--streams`, PROTOCOL.md §4.10). The file is cut into ranges of
//! [`range_size`] bytes, handed out in order to whichever stream is free;
//! each stream joins the session with a one-time ticket the session asks
//! for (TICKET_REQ), never with the token. A stream that fails gives its
//! unacknowledged ranges back and is replaced (up to [`REPLACEMENTS`]
//! times); with none left the transfer fails with one error and nothing
//! visible.
//!
//! - `auto`: the pure decision of how many streams (`--streams auto`);
//! - `put`: ranged uploads; `get`: ranged downloads.

pub mod auto;
mod get;
mod put;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

pub use auto::Plan;

use super::{Client, unexpected};
use crate::error::{Error, Result};
use crate::protocol::Msg;

/// Streams that may fail and be replaced during one transfer.
pub const REPLACEMENTS: usize = 8;
/// Ranges a stream has in flight (sent or requested, not yet acknowledged):
/// two keep it busy across the round trip of an acknowledgement.
pub const IN_FLIGHT: usize = 2;

/// Bytes per range: 2 MiB — small enough that the last ranges, which
/// only some streams still carry, end soon after the others; large enough
/// that a range outlasts a round trip — or `SFT_RANGE_SIZE` (a tuning and
/// testing knob; at least 64 KiB).
pub fn range_size() -> u64 {
    std::env::var("SFT_RANGE_SIZE")
        .ok()
        .and_then(|v| crate::units::parse_size(&v).ok())
        .map_or(2 << 20, |n| n.max(64 << 10))
}

/// The ranges of one file still to move, shared by its streams.
pub struct Work {
    pending: Mutex<VecDeque<(u64, u64)>>,
    /// Bytes acknowledged (written on the receiving side).
    done: AtomicU64,
    /// Bytes sent or received so far, retries included: the rate `auto` sees.
    moved: AtomicU64,
    size: u64,
    /// `--limit-rate`, for all the streams together, and since when.
    rate: Option<(u64, Instant)>,
}

impl Work {
    pub fn new(size: u64, range: u64) -> Work {
        Work::after(0, size, range)
    }

    /// The ranges after the first `held` bytes, which the receiving side
    /// already holds (a resumed transfer).
    pub fn after(held: u64, size: u64, range: u64) -> Work {
        let mut pending = VecDeque::new();
        let mut at = held.min(size);
        while at < size {
            let len = range.min(size - at);
            pending.push_back((at, len));
            at += len;
        }
        Work {
            pending: Mutex::new(pending),
            done: AtomicU64::new(held.min(size)),
            moved: AtomicU64::new(0),
            size,
            rate: None,
        }
    }

    /// At most `rate` bytes a second moved by all streams together.
    pub fn limited(mut self, rate: Option<u64>) -> Work {
        self.rate = rate.filter(|r| *r > 0).map(|r| (r, Instant::now()));
        self
    }

    /// Wait until what was moved is within `--limit-rate`.
    pub async fn pace(&self) {
        let Some((rate, since)) = self.rate else {
            return;
        };
        let moved = self.moved.load(Ordering::Relaxed);
        let due = since + Duration::from_secs_f64(moved as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }

    /// The next range to move, lowest offset first.
    pub fn take(&self) -> Option<(u64, u64)> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Ranges a failed stream did not finish, to be moved again (first).
    pub fn give_back(&self, ranges: impl DoubleEndedIterator<Item = (u64, u64)>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for r in ranges.rev() {
            p.push_front(r);
        }
    }

    pub fn acked(&self, len: u64) {
        self.done.fetch_add(len, Ordering::Relaxed);
    }

    pub fn moved(&self, n: u64) {
        self.moved.fetch_add(n, Ordering::Relaxed);
    }

    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed) >= self.size
    }

    fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

impl Client {
    /// One-time tickets for `n` further connections, asked on this session
    /// all at once (one round trip).
    async fn ask_tickets(&mut self, n: usize) -> Result<Vec<[u8; 32]>> {
        for _ in 0..n {
            self.w.send(&Msg::TicketReq).await?;
        }
        self.w.flush().await?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.r.expect_within(self.timeout, "TICKET").await? {
                Msg::Ticket { ticket } => out.push(ticket),
                other => return Err(unexpected(&other, "TICKET")),
            }
        }
        Ok(out)
    }

    /// Run streams until `work` is done: `start` streams at first, more as
    /// `auto` decides (when `auto`), failed ones replaced. `spawn` starts a
    /// stream with a ticket. Returns how many streams ran at most.
    async fn drive(
        &mut self,
        work: &Work,
        start: usize,
        auto: bool,
        mut spawn: impl FnMut(&mut JoinSet<Result<()>>, [u8; 32]),
    ) -> Result<usize> {
        let mut set: JoinSet<Result<()>> = JoinSet::new();
        let mut controller = auto.then(|| auto::Auto::new(Instant::now(), start, auto::CAP));
        for t in self.ask_tickets(start).await? {
            spawn(&mut set, t);
        }
        let mut most = start;
        let mut replaced = 0;
        let mut last_error: Option<Error> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !work.finished() {
            tokio::select! {
                Some(ended) = set.join_next() => {
                    let failed = match ended {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(e) => Some(Error::other(format!("internal error: {e}"))),
                    };
                    if let Some(e) = failed {
                        tracing::debug!("a stream failed: {e}");
                        if e.kind != crate::error::Kind::Network {
                            // bad data or a refusal: no retry helps
                            set.abort_all();
                            return Err(e);
                        }
                        last_error = Some(e);
                        if let Some(c) = controller.as_mut() {
                            c.lost();
                        }
                    }
                    if !work.finished() && (work.has_pending() || set.is_empty()) && set.len() < most {
                        if replaced >= REPLACEMENTS {
                            if set.is_empty() {
                                return Err(last_error.unwrap_or_else(|| {
                                    Error::network("every stream of the transfer was lost")
                                }));
                            }
                            continue;
                        }
                        replaced += 1;
                        for t in self.ask_tickets(1).await? {
                            spawn(&mut set, t);
                        }
                    }
                }
                _ = tick.tick() => {
                    let step = match controller.as_mut() {
                        Some(c) => c.observe(Instant::now(), work.moved.load(Ordering::Relaxed)),
                        None => auto::Step::Hold,
                    };
                    if let auto::Step::Add(more) = step
                        && work.has_pending()
                    {
                        for t in self.ask_tickets(more).await? {
                            spawn(&mut set, t);
                        }
                        most = most.max(set.len());
                    }
                }
            }
        }
        // the streams end once the queue is empty; wait for their BYE
        while let Some(ended) = set.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::debug!("a stream ended with: {e}");
            }
        }
        Ok(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_work_hands_out_only_the_ranges_after_what_is_held() {
        let w = Work::after(5 << 20, 9 << 20, 2 << 20);
        assert_eq!(w.take(), Some((5 << 20, 2 << 20)));
        assert_eq!(w.take(), Some((7 << 20, 2 << 20)));
        assert_eq!(w.take(), None);
        assert!(!w.finished());
        w.acked(4 << 20);
        assert!(w.finished(), "the held bytes count as done");
        // everything held: nothing to move
        let all = Work::after(9 << 20, 9 << 20, 2 << 20);
        assert_eq!(all.take(), None);
        assert!(all.finished());
        assert_eq!(Work::new(3, 2).take(), Some((0, 2)));
    }
}
