//! zstd on the wire: blocks are compressed only when it pays, decompressed
//! without ever producing more than the block declares, and the `auto` mode
//! adapts its level to whatever limits the transfer (in the spirit of
//! `zstd --adapt`). Pure logic: no sockets, no files.

use std::time::{Duration, Instant};

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

/// A move from compressed to raw, judged over the windows that follow it.
#[derive(Debug, Clone, Copy)]
struct Trial {
    from: i32,
    /// Compressed throughput before the move (smoothed).
    rate: f64,
    /// Windows still to skip while buffers settle at the new level.
    settle: u32,
    /// Raw throughput summed over the windows judged so far, and their number.
    sum: f64,
    judged: u32,
}

/// Idle CPU of the whole machine, in cores, from /proc/stat deltas.
#[derive(Debug, Default)]
pub struct IdleMeter {
    last: Option<(u64, u64)>,
    cores: f64,
}

impl IdleMeter {
    pub fn new() -> IdleMeter {
        IdleMeter {
            last: recent_cpu_times(),
            cores: cores() as f64,
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

/// CPU times read at most every 20 ms process-wide: a baseline for a new
/// meter (many small transfers in a row would otherwise each read
/// /proc/stat, which costs more than sending a small file).
fn recent_cpu_times() -> Option<(u64, u64)> {
    use std::sync::{Mutex, OnceLock};
    type Reading = Option<(Instant, (u64, u64))>;
    static LAST: OnceLock<Mutex<Reading>> = OnceLock::new();
    let cell = LAST.get_or_init(|| Mutex::new(None));
    let mut g = cell.lock().unwrap_or_else(|p| p.into_inner());
    match *g {
        Some((at, t)) if at.elapsed() < Duration::from_millis(20) => Some(t),
        _ => {
            let t = read_cpu_times()?;
            *g = Some((Instant::now(), t));
            Some(t)
        }
    }
}

/// Cores this process may use (looked up once: the lookup reads several
/// cgroup files, which costs more than sending a small file).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
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

/// Relative speed of zstd levels 1..=`AUTO_MAX_LEVEL` on text in 1 MiB blocks
/// (MB/s of one core, `zstd -b1 -e12 -B1048576` on the kernel source tar).
/// Only ratios between entries are used: they predict how fast the next
/// levels would go from how fast the current one goes.
const SPEED: [f64; AUTO_MAX_LEVEL as usize] = [
    453.0, 388.0, 301.0, 292.0, 140.0, 109.0, 97.0, 80.0, 70.0, 58.0, 42.0, 40.0,
];

fn speed(level: i32) -> f64 {
    SPEED[(level.clamp(1, AUTO_MAX_LEVEL) - 1) as usize]
}

/// What one measurement window saw.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Raw bytes/s handed to the network.
    pub rate: f64,
    /// Fraction of the window spent waiting for the network to take data.
    pub waiting: f64,
    /// Raw bytes/s the compression workers could sustain at the current
    /// level with the CPU they have (None if nothing was compressed).
    pub capacity: Option<f64>,
    /// Idle cores of the machine (None if unknown).
    pub idle: Option<f64>,
}

/// Chooses, block by block, whether and how hard to compress.
///
/// `auto` follows the idea of `zstd --adapt`: compress harder while the
/// network is the bottleneck, lighter when compression is. It starts at
/// level 1 and, per window (≥ 50 ms and 8 MiB, or 250 ms):
/// - network-bound (waiting on the network over half the time) with CPU to
///   spare: climb straight to the highest level (up to six steps) whose
///   predicted speed, from the measured speed of the current level and the
///   relative speeds of zstd's levels, stays 1.4× ahead of the (smoothed)
///   throughput — so the ratio grows while compression keeps up;
/// - compression-bound (waiting under a fifth of the time): one level lower;
/// - at level 1 with the machine's CPU saturated for two windows: try raw
///   (on loopback the peer shares the CPU and the link is faster than any
///   compressor). After a settling window (buffers absorb data right after a
///   change), raw is kept if over two windows it is not 3 % slower than
///   compression was; else compression resumes and raw is not tried again
///   for 16, 64, 256 windows, nor at all while compression beats the raw
///   throughput measured then;
/// - raw, network-bound with half a core idle: compress again (level 1).
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
    /// Compression workers running in parallel.
    workers: f64,
    win_start: Instant,
    win_blocks: u32,
    win_bytes: u64,
    win_blocked: Duration,
    win_comp_bytes: u64,
    win_comp_time: Duration,
    trial: Option<Trial>,
    /// Windows left during which raw is not tried, and the next such ban.
    ban: u32,
    ban_next: u32,
    /// Smoothed throughput while compressing.
    smooth: Option<f64>,
    /// Raw throughput measured by the last trial, with its age in windows.
    raw_rate: Option<(f64, u32)>,
    /// Consecutive windows at level 1 with the machine's CPU saturated.
    saturated: u32,
    idle: Option<IdleMeter>,
}

/// Shortest measurement window, in time and in bytes.
const MIN_WINDOW: Duration = Duration::from_millis(50);
const MIN_WINDOW_BYTES: u64 = 8 << 20;
/// A window closes after this long even if fewer bytes went.
const MAX_WINDOW: Duration = Duration::from_millis(250);
/// Windows after which a measured raw throughput is forgotten.
const FORGET: u32 = 256;

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
            workers: 1.0,
            win_start: Instant::now(),
            win_blocks: 0,
            win_bytes: 0,
            win_blocked: Duration::ZERO,
            win_comp_bytes: 0,
            win_comp_time: Duration::ZERO,
            trial: None,
            ban: 0,
            ban_next: 16,
            smooth: None,
            raw_rate: None,
            saturated: 0,
            idle: (mode == Mode::Auto).then(IdleMeter::new),
        }
    }

    /// For a peer on this machine (loopback), `auto` does not compress: the
    /// "link" is a memory copy, so compression could only cost CPU that both
    /// ends share, and the raw path is the lightest (measured: the adaptive
    /// pipeline sending raw was 15-20 % slower than plain raw there).
    pub fn on_local_link(mut self, local: bool) -> Policy {
        if local && self.mode == Mode::Auto {
            self.mode = Mode::Off;
            self.level = 0;
            self.idle = None;
        }
        self
    }

    /// Whether any block of this transfer may be compressed.
    pub fn may_compress(&self) -> bool {
        self.mode != Mode::Off && self.max > 0
    }

    /// How many blocks are compressed in parallel.
    pub fn set_workers(&mut self, n: usize) {
        self.workers = n.max(1) as f64;
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
        let paid = pays(raw, compressed);
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

    /// Feedback for `auto`: `raw` bytes were handed to the network after
    /// waiting `blocked` for it to take them; `compressed` is how long a
    /// worker spent compressing them, if it did.
    pub fn observe(&mut self, raw: usize, blocked: Duration, compressed: Option<Duration>) {
        if self.mode != Mode::Auto || self.max == 0 {
            return;
        }
        self.win_blocks += 1;
        self.win_bytes += raw as u64;
        self.win_blocked += blocked;
        if let Some(c) = compressed {
            self.win_comp_bytes += raw as u64;
            self.win_comp_time += c;
        }
        let time = self.win_start.elapsed();
        if self.win_blocks < 2
            || time < MIN_WINDOW
            || (self.win_bytes < MIN_WINDOW_BYTES && time < MAX_WINDOW)
        {
            return;
        }
        let idle = self.idle.as_mut().and_then(IdleMeter::idle_cores);
        let secs = time.as_secs_f64();
        let capacity = (!self.win_comp_time.is_zero()).then(|| {
            let comp = self.win_comp_time.as_secs_f64();
            // per worker, times the cores the workers have or could have
            let busy = comp / secs;
            let usable = idle.map_or(self.workers, |i| (busy + i).clamp(1.0, self.workers));
            self.win_comp_bytes as f64 / comp * usable
        });
        let sample = Sample {
            rate: self.win_bytes as f64 / secs,
            waiting: self.win_blocked.as_secs_f64() / secs,
            capacity,
            idle,
        };
        self.win_start = Instant::now();
        self.win_blocks = 0;
        self.win_bytes = 0;
        self.win_blocked = Duration::ZERO;
        self.win_comp_bytes = 0;
        self.win_comp_time = Duration::ZERO;
        let from = self.level;
        self.decide(sample);
        tracing::debug!(
            target: "sft::auto",
            "rate {:.1} MB/s, waiting {:.2}, capacity {:?} MB/s, idle {:?}: level {from} -> {}",
            sample.rate / 1e6,
            sample.waiting,
            sample.capacity.map(|c| (c / 1e6).round()),
            sample.idle.map(|i| (i * 100.0).round() / 100.0),
            self.level
        );
    }

    /// One window's verdict.
    fn decide(&mut self, s: Sample) {
        self.ban = self.ban.saturating_sub(1);
        self.raw_rate = self
            .raw_rate
            .and_then(|(r, age)| (age < FORGET).then_some((r, age + 1)));
        if let Some(mut t) = self.trial.take() {
            if t.settle > 0 {
                t.settle -= 1;
                self.trial = Some(t);
                return;
            }
            t.sum += s.rate;
            t.judged += 1;
            if t.judged < 2 {
                self.trial = Some(t);
                return;
            }
            // raw must not cost
            let raw = t.sum / f64::from(t.judged);
            self.raw_rate = Some((raw, 0));
            if raw >= t.rate * 0.97 {
                self.ban_next = 16;
                self.smooth = None;
            } else {
                self.level = t.from;
                self.ban = self.ban_next;
                self.ban_next = (self.ban_next * 4).min(256);
            }
            return;
        }
        let top = self.max.min(AUTO_MAX_LEVEL);
        let saturated = s.idle.is_some_and(|i| i < 0.25);
        let network_bound = s.waiting > 0.5;
        if self.level == 0 {
            // raw: compress when the link holds us back and CPU is spare
            if network_bound && s.idle.is_none_or(|i| i >= 0.5) && top >= 1 {
                self.level = 1;
                self.smooth = None;
            }
            return;
        }
        let rate = match self.smooth {
            Some(r) => 0.5 * r + 0.5 * s.rate,
            None => s.rate,
        };
        self.smooth = Some(rate);
        if network_bound && !saturated {
            self.saturated = 0;
            // the level means nothing for data that does not compress: hold it
            if self.incompressible() {
                return;
            }
            if let Some(cap) = s.capacity {
                let mut to = self.level;
                while to < top
                    && to < self.level + 6
                    && cap * speed(to + 1) / speed(self.level) >= 1.4 * rate
                {
                    to += 1;
                }
                self.level = to;
            }
            return;
        }
        if self.level > 1 {
            if s.waiting < 0.2 {
                // compression is the bottleneck
                self.level -= 1;
            }
            return;
        }
        self.saturated = if saturated { self.saturated + 1 } else { 0 };
        let promising = self.raw_rate.is_none_or(|(r, _)| r > rate * 0.95);
        if self.saturated >= 2 && promising && self.ban == 0 {
            self.saturated = 0;
            self.trial = Some(Trial {
                from: self.level,
                rate,
                settle: 1,
                sum: 0.0,
                judged: 0,
            });
            self.level = 0;
        }
    }

    pub fn level(&self) -> i32 {
        self.level
    }
}

/// Whether `compressed` bytes are worth sending instead of `raw`.
pub fn pays(raw: usize, compressed: usize) -> bool {
    (compressed as f64) < PAYS * raw as f64
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
                if frame_window_too_large(payload) {
                    return Err(Error::protocol(format!(
                        "a zstd frame in a DATA block asks for a window over {} bytes",
                        MAX_ZSTD_WINDOW
                    )));
                }
                if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(payload)
                    && declared > raw_len as u64
                {
                    return Err(Error::protocol(
                        "decompressed data exceeds the declared size",
                    ));
                }
                // exactly raw_len bytes to write into (a buffer of that
                // length is reused as it is: zstd overwrites what it fills,
                // and anything short of raw_len is refused below)
                if out.len() != raw_len {
                    out.clear();
                    out.resize(raw_len, 0);
                }
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

/// Largest window a received zstd frame may ask for (PROTOCOL.md §5a).
pub const MAX_ZSTD_WINDOW: u64 = 2 << 20;

/// Whether any frame of a DATA payload declares a window over
/// [`MAX_ZSTD_WINDOW`] (RFC 8878 §3.1.1.1.2). One-shot decoding into the block's
/// buffer allocates no window either way; this enforces the documented
/// limit, so peers learn it from us rather than from a stricter receiver.
fn frame_window_too_large(mut payload: &[u8]) -> bool {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    while payload.len() >= 6 && payload[..4] == MAGIC {
        let descriptor = payload[4];
        let single_segment = descriptor & 0x20 != 0;
        if !single_segment {
            let wd = payload[5];
            let base = 1u64 << (10 + u64::from(wd >> 3));
            let window = base + (base / 8) * u64::from(wd & 7);
            if window > MAX_ZSTD_WINDOW {
                return true;
            }
        }
        // single-segment frames use their content size, checked elsewhere
        match zstd::zstd_safe::find_frame_compressed_size(payload) {
            Ok(n) if n > 0 && n <= payload.len() => payload = &payload[n..],
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {

    #[test]
    fn auto_sends_raw_to_a_peer_on_this_machine() {
        let mut p = Policy::new(Mode::Auto, MAX_LEVEL).on_local_link(true);
        assert!(!p.may_compress(), "the plain raw path");
        assert_eq!(p.next_level(), None);
        let mut fixed = Policy::new(Mode::Level(3), MAX_LEVEL).on_local_link(true);
        assert_eq!(fixed.next_level(), Some(3), "an explicit level is obeyed");
        let mut remote = Policy::new(Mode::Auto, MAX_LEVEL).on_local_link(false);
        assert_eq!(remote.next_level(), Some(1));
    }

    use super::*;

    #[test]
    fn a_frame_asking_for_a_window_over_2_mib_is_refused() {
        // a hand-made frame header: magic, descriptor without single-segment,
        // window descriptor exponent 21 (1 << 31 = 2 GiB), then an empty raw block
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3];
        frame.extend_from_slice(&[0x01, 0x00, 0x00]); // last block, raw, size 0
        assert!(frame_window_too_large(&frame));
        let mut out = Vec::new();
        let e = Decoder::new()
            .decode(Encoding::Zstd, 0, &frame, &mut out)
            .unwrap_err();
        assert!(e.message.contains("window"), "{e}");
        let mut small = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 10 << 3]; // 1 MiB
        small.extend_from_slice(&[0x01, 0x00, 0x00]);
        assert!(!frame_window_too_large(&small));
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let real = c.compress(&[7u8; 100_000]).unwrap();
        assert!(!frame_window_too_large(&real));
    }

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
            p.decide(sample(100.0, 0.95, Some(400.0), 1.5));
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

    fn sample(rate: f64, waiting: f64, capacity: Option<f64>, idle: f64) -> Sample {
        Sample {
            rate,
            waiting,
            capacity,
            idle: Some(idle),
        }
    }

    #[test]
    fn auto_climbs_while_the_network_is_the_bottleneck_and_cpu_is_idle() {
        // a slow link taking 12 MB/s of compressed data; the ratio grows with
        // the level, and two workers compress at 2 x SPEED
        let mut p = Policy::new(Mode::Auto, 19);
        assert_eq!(p.level(), 1);
        let mut levels = Vec::new();
        for _ in 0..40 {
            let l = p.level();
            let cap = 2.0 * speed(l);
            let net = 12.0 * (4.4 + 0.15 * f64::from(l));
            let (rate, waiting) = if cap >= net { (net, 0.9) } else { (cap, 0.05) };
            p.decide(sample(rate, waiting, Some(cap), 1.2));
            levels.push(p.level());
        }
        // reaches the highest level that keeps up within a few windows, and stays
        assert!(levels[3] >= 8, "{levels:?}");
        assert!(
            levels[10..].iter().all(|l| (8..=11).contains(l)),
            "{levels:?}"
        );
    }

    #[test]
    fn auto_steps_down_when_compression_is_the_bottleneck() {
        let mut p = Policy::new(Mode::Auto, 19);
        p.level = 9;
        p.decide(sample(60.0, 0.05, Some(60.0), 0.6));
        assert_eq!(p.level(), 8);
        // network-bound on a busy machine: hold, do not climb
        p.decide(sample(60.0, 0.9, Some(200.0), 0.1));
        assert_eq!(p.level(), 8);
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
            let (waiting, cap) = if l == 0 {
                (0.8, None)
            } else {
                (0.02, Some(rate))
            };
            p.decide(sample(rate, waiting, cap, 0.1));
        }
        assert_eq!(p.level(), 0);
        assert!(at_raw > 195, "{at_raw} of 200 windows raw");
    }

    #[test]
    fn auto_keeps_a_level_that_beats_raw_on_a_fast_link() {
        // 1 Gbit: level 1 is three times faster than raw, and the CPU is
        // saturated, so raw is tried once, then never again
        let mut p = Policy::new(Mode::Auto, 19);
        let mut at_one = 0;
        for _ in 0..100 {
            let l = p.level();
            at_one += usize::from(l == 1);
            let (rate, waiting, cap, idle) = match l {
                0 => (125.0, 0.9, None, 1.5),
                _ => (380.0 - 60.0 * f64::from(l - 1), 0.02, Some(380.0), 0.1),
            };
            p.decide(sample(rate, waiting, cap, idle));
        }
        assert!(at_one > 95, "{at_one} of 100 windows at level 1");
    }

    #[test]
    fn fixed_levels_and_off_never_move() {
        let mut f = Policy::new(Mode::Level(5), 19);
        for _ in 0..100 {
            f.observe(BLOCK, Duration::from_millis(100), Some(Duration::ZERO));
        }
        assert_eq!(f.level(), 5);
        assert_eq!(Policy::new(Mode::Off, 19).next_level(), None);
        assert_eq!(Policy::new(Mode::Level(15), 9).level(), 9);
    }
}
