//! `--streams auto`: how many connections one transfer uses. Pure decision
//! logic over (time, bytes moved), tested without sockets.
//!
//! [`START`] streams first: `auto` splits only long links (a round trip of
//! [`SHORT_RTT`] or more), where one window-limited stream is the very
//! thing to avoid, and a stream too many costs nothing but a connection —
//! so the transfer does not spend its first seconds on one stream while
//! the controller finds out. After streams start, [`WARMUP`] passes
//! unjudged (their TLS handshake, JOIN and slow start), then a sample of
//! [`SAMPLE`] measures the aggregate rate. While it beats the best rate
//! before by more than [`GAIN`], as many streams as run are added (4 → 8)
//! up to the cap; the first sample that does not gain ends the search for
//! good (the link is full, or more streams do not help). Whether to split
//! at all (the file's size, a short link) is decided before, by
//! [`Plan::streams_for`].

use std::time::{Duration, Instant};

/// How long a sample of the aggregate rate lasts.
pub const SAMPLE: Duration = Duration::from_millis(800);
/// How long new streams run before they are judged.
pub const WARMUP: Duration = Duration::from_millis(700);
/// The gain over the best rate so far that earns another stream.
pub const GAIN: f64 = 0.12;
/// Most streams `auto` opens.
pub const CAP: usize = 8;
/// Streams `auto` starts with on a long link: four fill a 100 Mbit link of
/// 100 ms whose windows stop at 640 KiB (measured: one stream moved 3.8
/// MB/s of its 11.6), where starting with one cost the first 1.5 s.
pub const START: usize = 4;
/// Files smaller than this are never split by `auto`.
pub const AUTO_FROM: u64 = 64 << 20;
/// Round trips shorter than this make a short link: one stream fills it
/// (Linux's default window maximum, 4–6 MiB, covers a gigabit up to about
/// 30 ms), and a single connection's pipeline (two compression threads
/// overlapped with the network) is then the faster one.
pub const SHORT_RTT: Duration = Duration::from_millis(25);

/// How many connections a transfer may use (`--streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plan {
    /// Exactly this many (1: today's single connection).
    Fixed(usize),
    /// Start with one, add while the rate grows.
    #[default]
    Auto,
}

impl Plan {
    /// `auto` or a count 1..=64.
    pub fn parse(s: &str) -> crate::error::Result<Plan> {
        match s.trim() {
            "auto" => Ok(Plan::Auto),
            n => match n.parse::<usize>() {
                Ok(k @ 1..=64) => Ok(Plan::Fixed(k)),
                _ => Err(crate::error::Error::usage(format!(
                    "--streams takes auto or a number from 1 to 64, not {n:?}"
                ))),
            },
        }
    }

    /// How many streams to start with for a file of `size` bytes, or `None`
    /// for the ordinary single connection (nothing changes on the wire).
    pub fn streams_for(self, size: u64, local: bool, rtt: Duration, range: u64) -> Option<usize> {
        match self {
            Plan::Fixed(1) => None,
            Plan::Fixed(n) => (size > range).then_some(n),
            Plan::Auto if local || rtt < SHORT_RTT || size < AUTO_FROM => None,
            Plan::Auto => Some(START),
        }
    }
}

/// What the controller says after a look at the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hold,
    /// Open this many more streams.
    Add(usize),
}

/// The state of `auto` for one transfer.
#[derive(Debug)]
pub struct Auto {
    streams: usize,
    cap: usize,
    since: Instant,
    bytes_then: u64,
    best: Option<f64>,
    warming: bool,
    settled: bool,
}

impl Auto {
    /// `start` streams running since `now`, `cap` at most.
    pub fn new(now: Instant, start: usize, cap: usize) -> Auto {
        Auto {
            streams: start.clamp(1, cap.max(1)),
            cap: cap.max(1),
            since: now,
            bytes_then: 0,
            best: None,
            // the first streams' slow start is not judged either
            warming: true,
            settled: false,
        }
    }

    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Whether the search is over.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// `bytes` moved in all by `now`: add a stream or not.
    pub fn observe(&mut self, now: Instant, bytes: u64) -> Step {
        let wait = if self.warming { WARMUP } else { SAMPLE };
        if self.settled || now.duration_since(self.since) < wait {
            return Step::Hold;
        }
        let secs = now.duration_since(self.since).as_secs_f64();
        let rate = bytes.saturating_sub(self.bytes_then) as f64 / secs;
        self.since = now;
        self.bytes_then = bytes;
        if std::mem::take(&mut self.warming) {
            // the sample starts now
            return Step::Hold;
        }
        let better = match self.best {
            None => true,
            Some(b) => rate > b * (1.0 + GAIN),
        };
        if !better {
            self.settled = true;
            return Step::Hold;
        }
        self.best = Some(rate);
        if self.streams >= self.cap {
            self.settled = true;
            return Step::Hold;
        }
        let grow = if self.streams == 1 { 3 } else { self.streams };
        let more = grow.min(self.cap - self.streams);
        self.streams += more;
        self.warming = true;
        Step::Add(more)
    }

    /// A stream was lost (and is being replaced): measure afresh.
    pub fn lost(&mut self) {
        self.warming = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive the controller with a link where `rate(n)` bytes/s flow with n
    /// streams; the streams it settles on.
    fn settle(rate: impl Fn(usize) -> f64) -> usize {
        let t0 = Instant::now();
        let mut a = Auto::new(t0, START, CAP);
        let mut bytes = 0f64;
        let tick = Duration::from_millis(250);
        for i in 1..400u32 {
            bytes += rate(a.streams()) * tick.as_secs_f64();
            a.observe(t0 + tick * i, bytes as u64);
        }
        assert!(a.settled());
        a.streams()
    }

    #[test]
    fn a_window_limited_link_gets_streams_until_it_is_full() {
        // 3.8 MB/s a stream, 11.9 MB/s the link: 4 (full), 8 (no gain)
        assert_eq!(settle(|n| (3.8e6 * n as f64).min(11.9e6)), 8);
        // 1 MB/s a stream, 11.9 the link: 4, 8 (gained), capped
        assert_eq!(settle(|n| (1e6 * n as f64).min(11.9e6)), 8);
    }

    #[test]
    fn a_full_link_ends_the_search_after_one_probe() {
        // the first streams already at the limit: one probe, then no more
        let t0 = Instant::now();
        let mut a = Auto::new(t0, START, CAP);
        let tick = Duration::from_millis(250);
        let mut adds = 0;
        for i in 1..400u32 {
            if let Step::Add(_) = a.observe(t0 + tick * i, 100_000_000 * u64::from(i)) {
                adds += 1;
            }
        }
        assert!(a.settled());
        assert_eq!((adds, a.streams()), (1, 8));
    }

    #[test]
    fn the_first_streams_are_judged_after_warm_up_and_one_sample() {
        // the probe comes 1.5 s in: 0.7 s of warm-up, a 0.8 s sample
        let t0 = Instant::now();
        let mut a = Auto::new(t0, START, CAP);
        assert_eq!(a.streams(), START);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        assert_eq!(a.observe(ms(500), 1), Step::Hold);
        assert_eq!(a.observe(ms(750), 2), Step::Hold, "warm-up over");
        assert_eq!(a.observe(ms(1250), 3), Step::Hold, "sampling");
        assert_eq!(a.observe(ms(1550), 9_000_000), Step::Add(4));
        // a start above the cap is the cap
        assert_eq!(Auto::new(t0, 20, CAP).streams(), CAP);
    }

    #[test]
    fn the_cap_holds() {
        assert_eq!(settle(|n| 1e6 * n as f64), CAP);
    }

    #[test]
    fn small_files_short_links_and_loopback_are_not_split() {
        let long = Duration::from_millis(100);
        let big = 1 << 30;
        assert_eq!(
            Plan::Auto.streams_for(big, false, long, 4 << 20),
            Some(START)
        );
        assert_eq!(Plan::Auto.streams_for(big, true, long, 4 << 20), None);
        let short = Duration::from_micros(300);
        assert_eq!(Plan::Auto.streams_for(big, false, short, 4 << 20), None);
        assert_eq!(Plan::Auto.streams_for(1 << 20, false, long, 4 << 20), None);
        assert_eq!(Plan::Fixed(1).streams_for(big, false, long, 4 << 20), None);
        assert_eq!(
            Plan::Fixed(4).streams_for(big, true, long, 4 << 20),
            Some(4)
        );
        assert_eq!(Plan::parse("auto").unwrap(), Plan::Auto);
        assert_eq!(Plan::parse("3").unwrap(), Plan::Fixed(3));
        assert!(Plan::parse("0").is_err());
    }
}
