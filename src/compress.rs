//! zstd on the wire: blocks are compressed only when it pays, decompressed
//! without ever producing more than the block declares, and the `auto` mode
//! adapts its level to whatever limits the transfer (in the spirit of
//! `zstd --adapt`). Pure logic: no sockets, no files.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::{Encoding, MAX_BLOCK};

/// Raw bytes per block when compressing (bigger blocks compress better).
pub const BLOCK: usize = MAX_BLOCK;
/// Highest level `auto` climbs to.
pub const AUTO_MAX_LEVEL: i32 = 12;
/// Highest level anyone may ask for.
pub const MAX_LEVEL: i32 = 19;
/// A block is sent compressed only if it shrinks below this fraction.
const PAYS: f64 = 0.97;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Auto,
    Level(i32),
}

impl Mode {
    /// Parse `auto`, `off` or a level 1..=19.
    pub fn parse(s: &str) -> Result<Mode> {
        match s.trim() {
            "auto" => Ok(Mode::Auto),
            "off" | "0" | "none" => Ok(Mode::Off),
            n => match n.parse::<i32>() {
                Ok(l) if (1..=MAX_LEVEL).contains(&l) => Ok(Mode::Level(l)),
                _ => Err(Error::usage(format!(
                    "invalid --compress {:?}: use auto, off, or a zstd level from 1 to {MAX_LEVEL}",
                    crate::names::escape(s)
                ))),
            },
        }
    }

    /// The GET hint byte: 0 off, 1..=19 a level, 255 auto.
    pub fn to_wire(self) -> u8 {
        match self {
            Mode::Off => 0,
            Mode::Auto => 255,
            Mode::Level(l) => l.clamp(1, MAX_LEVEL) as u8,
        }
    }

    pub fn from_wire(b: u8) -> Mode {
        match b {
            0 => Mode::Off,
            255 => Mode::Auto,
            l => Mode::Level(i32::from(l).min(MAX_LEVEL)),
        }
    }

    /// The same mode with any level capped at `max` (a server's limit).
    pub fn capped(self, max: i32) -> Mode {
        match self {
            _ if max < 1 => Mode::Off,
            Mode::Level(l) => Mode::Level(l.min(max)),
            m => m,
        }
    }
}

/// A move of the `auto` level, judged after the window that follows it.
#[derive(Debug, Clone, Copy)]
struct Trial {
    from: i32,
    rate: f64,
    up: bool,
    /// Windows still to skip while buffers settle at the new level.
    settle: u32,
}

/// Idle CPU of the whole machine, in cores, from /proc/stat deltas.
#[derive(Debug, Default)]
pub struct IdleMeter {
    last: Option<(u64, u64)>,
    cores: f64,
}

impl IdleMeter {
    pub fn new() -> IdleMeter {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        IdleMeter {
            last: read_cpu_times(),
            cores,
        }
    }

    /// Idle cores since the previous call (None where /proc/stat is missing).
    pub fn idle_cores(&mut self) -> Option<f64> {
        let now = read_cpu_times()?;
        let (idle0, total0) = self.last.replace(now)?;
        let (di, dt) = (now.0.saturating_sub(idle0), now.1.saturating_sub(total0));
        (dt > 0).then(|| di as f64 / dt as f64 * self.cores)
    }
}

/// (idle + iowait, total) jiffies of all CPUs.
fn read_cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    Some((v[3] + v[4], v.iter().take(8).sum()))
}

/// Chooses, block by block, whether and how hard to compress.
///
/// `auto` follows the idea of `zstd --adapt`, with two signals: how long the
/// compressing thread waits to hand blocks to the network (waiting means the
/// network is the bottleneck), and how much CPU the machine has idle
/// (compression can only use CPU nobody else needs: on loopback the peer
/// shares it). Waiting with half a core idle: try a higher level (two steps
/// while the network is clearly the bottleneck). Not waiting while the machine
/// has under a quarter of a core idle: try one level lower (0 is raw). Every
/// move is a trial, judged by throughput over a window after one settling
/// window (buffers absorb data right after a change): a climb that did not
/// raise throughput by 2 %, or a descent that lowered it by 2 %, is undone and
/// that direction is banned for 4, 16, 64 … windows. Windows last ≥ 50 ms.
#[derive(Debug)]
pub struct Policy {
    mode: Mode,
    max: i32,
    /// Current level; 0 means send raw.
    level: i32,
    /// Blocks left to send raw without trying (after incompressible data).
    skip: u32,
    /// Next skip length (doubles while data stays incompressible).
    backoff: u32,
    /// Consecutive blocks that did not shrink.
    streak: u32,
    win_blocks: u32,
    win_bytes: u64,
    win_time: Duration,
    win_blocked: Duration,
    trial: Option<Trial>,
    /// Windows left during which moving up / down is not tried.
    ban: [u32; 2],
    /// Length of the next ban per direction.
    ban_next: [u32; 2],
    idle: Option<IdleMeter>,
}

/// Shortest measurement window.
const MIN_WINDOW: Duration = Duration::from_millis(50);

impl Policy {
    pub fn new(mode: Mode, max: i32) -> Policy {
        let max = max.clamp(0, MAX_LEVEL);
        let level = match mode {
            Mode::Off => 0,
            Mode::Auto => 1.min(max),
            Mode::Level(l) => l.min(max),
        };
        Policy {
            mode,
            max,
            level,
            skip: 0,
            backoff: 8,
            streak: 0,
            win_blocks: 0,
            win_bytes: 0,
            win_time: Duration::ZERO,
            win_blocked: Duration::ZERO,
            trial: None,
            ban: [0, 0],
            ban_next: [4, 4],
            idle: (mode == Mode::Auto).then(IdleMeter::new),
        }
    }

    /// Whether any block of this transfer may be compressed.
    pub fn may_compress(&self) -> bool {
        self.mode != Mode::Off && self.max > 0
    }

    /// The level to try for the next block, or None to send it raw.
    pub fn next_level(&mut self) -> Option<i32> {
        if self.level == 0 {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        // while the data has been incompressible, probe cheaply
        Some(if self.incompressible() { 1 } else { self.level })
    }

    /// Recent blocks did not shrink: the back-off is in force.
    fn incompressible(&self) -> bool {
        self.backoff > 8 || self.streak > 0
    }

    /// Whether a compression attempt paid; incompressible data backs off.
    pub fn record_attempt(&mut self, raw: usize, compressed: usize) -> bool {
        let paid = (compressed as f64) < PAYS * raw as f64;
        if paid {
            self.streak = 0;
            self.backoff = 8;
        } else {
            self.streak += 1;
            if self.streak >= 2 {
                self.skip = self.backoff;
                self.backoff = (self.backoff * 2).min(256);
                self.streak = 0;
            }
        }
        paid
    }

    /// Feedback for `auto`: a block of `raw` bytes took `elapsed` from read to
    /// hand-off, of which `blocked` waiting for the network to take it.
    pub fn observe(&mut self, raw: usize, elapsed: Duration, blocked: Duration) {
        if self.mode != Mode::Auto || self.max == 0 {
            return;
        }
        self.win_blocks += 1;
        self.win_bytes += raw as u64;
        self.win_time += elapsed;
        self.win_blocked += blocked;
        if self.win_blocks < 2 || self.win_time < MIN_WINDOW {
            return;
        }
        let idle = self.idle.as_mut().and_then(IdleMeter::idle_cores);
        let (bytes, time, blocked) = (self.win_bytes, self.win_time, self.win_blocked);
        self.win_blocks = 0;
        self.win_bytes = 0;
        self.win_time = Duration::ZERO;
        self.win_blocked = Duration::ZERO;
        self.decide(
            bytes as f64 / time.as_secs_f64(),
            blocked.as_secs_f64() / time.as_secs_f64(),
            idle,
        );
    }

    /// One window's verdict: `rate` raw bytes/s, the fraction of it spent
    /// waiting on the network, and the machine's idle cores (if known).
    fn decide(&mut self, rate: f64, waiting: f64, idle: Option<f64>) {
        for b in &mut self.ban {
            *b = b.saturating_sub(1);
        }
        if let Some(mut t) = self.trial.take() {
            if t.settle > 0 {
                t.settle -= 1;
                self.trial = Some(t);
                return;
            }
            // climbing must pay for itself; stepping down must not cost
            let keep = if t.up {
                rate >= t.rate * 1.02
            } else {
                rate >= t.rate * 0.98
            };
            let d = usize::from(!t.up);
            if !keep {
                self.level = t.from;
                self.ban[d] = self.ban_next[d];
                self.ban_next[d] = (self.ban_next[d] * 4).min(256);
                return;
            }
            self.ban_next[d] = 4;
        }
        let top = self.max.min(AUTO_MAX_LEVEL);
        // hysteresis on idle CPU: up needs half a core idle, down less than a
        // quarter (compressing would only steal CPU the pipeline needs)
        // the level means nothing for data that does not compress: hold it
        let climb = !self.incompressible();
        let (up, step) =
            if climb && waiting > 0.5 && idle.is_none_or(|i| i >= 0.5) && self.level < top {
                (true, if waiting > 0.8 { 2 } else { 1 })
            } else if waiting < 0.1 && idle.is_some_and(|i| i < 0.25) && self.level > 0 {
                (false, 1)
            } else {
                return;
            };
        if self.ban[usize::from(!up)] > 0 {
            return;
        }
        self.trial = Some(Trial {
            from: self.level,
            rate,
            up,
            settle: 1,
        });
        self.level = if up {
            (self.level + step).min(top)
        } else {
            self.level - step
        };
    }

    pub fn level(&self) -> i32 {
        self.level
    }
}

/// Compresses blocks with a reused zstd context.
pub struct Encoder {
    ctx: Option<zstd::bulk::Compressor<'static>>,
    ctx_level: i32,
    out: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            ctx: None,
            ctx_level: 0,
            out: Vec::new(),
        }
    }

    /// Compress `raw` at `level`; the compressed bytes, or None if zstd failed.
    pub fn compress(&mut self, raw: &[u8], level: i32) -> Option<&[u8]> {
        if self.ctx.is_none() || self.ctx_level != level {
            match &mut self.ctx {
                Some(c) => c.set_compression_level(level).ok()?,
                None => self.ctx = Some(zstd::bulk::Compressor::new(level).ok()?),
            }
            self.ctx_level = level;
        }
        let ctx = self.ctx.as_mut()?;
        self.out.clear();
        self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let n = ctx.compress_to_buffer(raw, &mut self.out).ok()?;
        Some(&self.out[..n])
    }
}

/// Decompresses blocks, never producing more than a block declares.
pub struct Decoder {
    ctx: Option<zstd::bulk::Decompressor<'static>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { ctx: None }
    }

    /// Decode one block into `out` (resized to exactly `raw_len`). A zstd
    /// payload must inflate to exactly `raw_len` bytes, which the caller has
    /// already checked is at most `MAX_BLOCK`: output is written into a
    /// buffer of that size and zstd stops at its end.
    pub fn decode(
        &mut self,
        encoding: Encoding,
        raw_len: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let raw_len = raw_len as usize;
        if raw_len > MAX_BLOCK {
            return Err(Error::protocol(format!(
                "a block declares {raw_len} bytes, more than the limit of {MAX_BLOCK}"
            )));
        }
        match encoding {
            Encoding::Raw => {
                if payload.len() != raw_len {
                    return Err(Error::protocol(
                        "raw DATA block length does not match its payload",
                    ));
                }
                out.clear();
                out.extend_from_slice(payload);
                Ok(())
            }
            Encoding::Zstd => {
                if self.ctx.is_none() {
                    let mut d = zstd::bulk::Decompressor::new()
                        .map_err(|e| Error::other(format!("zstd: {e}")))?;
                    // a block is at most 1 MiB: refuse frames that want a larger window
                    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(21))
                        .map_err(|e| Error::other(format!("zstd: {e}")))?;
                    self.ctx = Some(d);
                }
                let ctx = self
                    .ctx
                    .as_mut()
                    .ok_or_else(|| Error::other("zstd context missing"))?;
                if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(payload)
                    && declared > raw_len as u64
                {
                    return Err(Error::protocol(
                        "decompressed data exceeds the declared size",
                    ));
                }
                out.clear();
                out.resize(raw_len, 0);
                match ctx.decompress_to_buffer(payload, &mut out[..]) {
                    Ok(n) if n == raw_len => Ok(()),
                    Ok(_) => Err(Error::protocol(
                        "decompressed data is shorter than the declared size",
                    )),
                    Err(e) if e.to_string().contains("too small") => Err(Error::protocol(
                        "decompressed data exceeds the declared size",
                    )),
                    Err(e) => Err(Error::protocol(format!(
                        "invalid zstd data in a DATA block: {e}"
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "lorem ",
            "ipsum ",
            "dolor ",
            "sit ",
            "amet\n",
            "consectetur ",
            "adipiscing ",
        ];
        let mut v = Vec::new();
        let mut i = 0usize;
        while v.len() < n {
            v.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 88172645463325252;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn modes_parse_and_round_trip_on_the_wire() {
        assert_eq!(Mode::parse("auto").unwrap(), Mode::Auto);
        assert_eq!(Mode::parse("off").unwrap(), Mode::Off);
        assert_eq!(Mode::parse("7").unwrap(), Mode::Level(7));
        assert!(Mode::parse("23").is_err());
        assert!(
            Mode::parse("fast")
                .unwrap_err()
                .message
                .contains("auto, off")
        );
        for m in [Mode::Off, Mode::Auto, Mode::Level(1), Mode::Level(19)] {
            assert_eq!(Mode::from_wire(m.to_wire()), m);
        }
        assert_eq!(Mode::Level(15).capped(9), Mode::Level(9));
        assert_eq!(Mode::Auto.capped(0), Mode::Off);
    }

    #[test]
    fn blocks_round_trip() {
        let mut e = Encoder::new();
        let mut d = Decoder::new();
        let raw = text(BLOCK);
        let c = e.compress(&raw, 3).unwrap().to_vec();
        assert!(c.len() < raw.len() / 3);
        let mut out = Vec::new();
        d.decode(Encoding::Zstd, raw.len() as u32, &c, &mut out)
            .unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn a_bomb_never_produces_more_than_declared() {
        let mut e = Encoder::new();
        let mut d = Decoder::new();
        let raw = vec![0u8; 100 * 1000];
        let c = e.compress(&raw, 3).unwrap().to_vec();
        let mut out = Vec::new();
        // declares 1000 bytes but inflates to 100x that
        let err = d.decode(Encoding::Zstd, 1000, &c, &mut out).unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Protocol);
        assert!(err.message.contains("exceeds the declared size"), "{err}");
        assert!(out.len() <= 1000);
        // huge claimed length
        assert!(d.decode(Encoding::Zstd, u32::MAX, &c, &mut out).is_err());
        // truncated
        let err = d
            .decode(
                Encoding::Zstd,
                raw.len() as u32,
                &c[..c.len() / 2],
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Protocol);
        // garbage
        let err = d
            .decode(Encoding::Zstd, 1000, b"definitely not zstd", &mut out)
            .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Protocol);
        // shorter than declared
        let err = d
            .decode(Encoding::Zstd, raw.len() as u32 + 1, &c, &mut out)
            .unwrap_err();
        assert!(err.message.contains("shorter"), "{err}");
    }

    #[test]
    fn a_bomb_without_a_content_size_is_stopped_at_the_declared_size() {
        // a frame that does not record its size, so only the buffer bound stops it
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
            .unwrap();
        let big = c.compress(&vec![b'a'; 900_000]).unwrap();
        let mut out = Vec::new();
        let err = Decoder::new()
            .decode(Encoding::Zstd, 9_000, &big, &mut out)
            .unwrap_err();
        assert!(err.message.contains("exceeds the declared size"), "{err}");
    }

    #[test]
    fn incompressible_data_backs_off_and_recovers() {
        let mut p = Policy::new(Mode::Auto, 19);
        let mut e = Encoder::new();
        let raw = noise(BLOCK);
        let mut tried = 0;
        for _ in 0..200 {
            if let Some(l) = p.next_level() {
                tried += 1;
                let n = e.compress(&raw, l).unwrap().len();
                assert!(!p.record_attempt(raw.len(), n));
            }
        }
        assert!(tried < 20, "random data is tried rarely: {tried} of 200");
        // and the network waiting with CPU to spare does not make it climb
        for _ in 0..20 {
            p.decide(100.0, 0.95, Some(1.5));
        }
        assert_eq!(p.level(), 1);
        assert_eq!(p.next_level().unwrap_or(1), 1);
        // compressible data is taken up again at the next probe
        let raw = text(BLOCK);
        let mut paid = false;
        for _ in 0..300 {
            if let Some(l) = p.next_level() {
                let n = e.compress(&raw, l).unwrap().len();
                paid |= p.record_attempt(raw.len(), n);
            }
        }
        assert!(paid);
    }

    #[test]
    fn auto_climbs_while_the_network_is_the_bottleneck_and_cpu_is_idle() {
        // a slow link: throughput grows with the level until level 7, then
        // compression is too slow for the link
        let mut p = Policy::new(Mode::Auto, 19);
        assert_eq!(p.level(), 1);
        for _ in 0..80 {
            let l = p.level();
            let (rate, waiting) = if l <= 7 {
                (10.0 + f64::from(l), 0.9)
            } else {
                (17.0 - f64::from(l - 7) * 2.0, 0.0)
            };
            p.decide(rate, waiting, Some(1.2));
        }
        assert!((6..=8).contains(&p.level()), "{}", p.level());
    }

    #[test]
    fn auto_settles_at_raw_when_the_cpu_is_the_limit() {
        // loopback: the peer shares the CPU; compression only slows things down
        let mut p = Policy::new(Mode::Auto, 19);
        let mut at_raw = 0;
        for _ in 0..200 {
            let l = p.level();
            at_raw += usize::from(l == 0);
            let rate = 700.0 - 150.0 * f64::from(l);
            p.decide(rate, if l == 0 { 0.8 } else { 0.02 }, Some(0.1));
        }
        assert_eq!(p.level(), 0);
        assert!(at_raw > 190, "{at_raw} of 200 windows raw");
    }

    #[test]
    fn auto_keeps_a_level_that_beats_raw_on_a_fast_link() {
        // 1 Gbit: level 1 is three times faster than raw; CPU is half idle
        let mut p = Policy::new(Mode::Auto, 19);
        let mut at_one = 0;
        for _ in 0..100 {
            let l = p.level();
            at_one += usize::from(l == 1);
            let (rate, waiting, idle) = match l {
                0 => (125.0, 0.9, 1.5),
                1 => (380.0, 0.02, 0.4),
                _ => (380.0 - 60.0 * f64::from(l), 0.0, 0.4),
            };
            p.decide(rate, waiting, Some(idle));
        }
        assert!(at_one > 85, "{at_one} of 100 windows at level 1");
    }

    #[test]
    fn fixed_levels_and_off_never_move() {
        let mut f = Policy::new(Mode::Level(5), 19);
        for _ in 0..100 {
            f.observe(BLOCK, Duration::from_millis(100), Duration::ZERO);
        }
        assert_eq!(f.level(), 5);
        assert_eq!(Policy::new(Mode::Off, 19).next_level(), None);
        assert_eq!(Policy::new(Mode::Level(15), 9).level(), 9);
    }
}
