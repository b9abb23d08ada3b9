//! zstd on the wire: blocks are compressed only when it pays, decompressed
//! without ever producing more than the block declares, and the `auto` mode
//! adapts its level to whatever limits the transfer (in the spirit of
//! `zstd --adapt`). Pure logic: no sockets, no files (but /proc/stat in
//! `cpu.rs`). This file holds the user's [`Mode`] and the limits;
//! `codec.rs` the zstd blocks, `policy.rs` the `auto` decisions (pure),
//! `cpu.rs` the CPU measurements they use.

mod codec;
mod cpu;
mod policy;

pub use codec::{Decoder, Encoder};
pub use cpu::cores;
pub use policy::{Link, Policy, Sample, pays};

use crate::error::{Error, Result};
use crate::protocol::MAX_BLOCK;

/// Raw bytes per block when compressing (bigger blocks compress better).
pub const BLOCK: usize = MAX_BLOCK;
/// Highest level `auto` climbs to.
pub const AUTO_MAX_LEVEL: i32 = 12;
/// Highest level anyone may ask for.
pub const MAX_LEVEL: i32 = 19;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
/// Sample data for the tests of the codec and the policy.
#[cfg(test)]
mod testdata {
    pub(super) fn text(n: usize) -> Vec<u8> {
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

    pub(super) fn noise(n: usize) -> Vec<u8> {
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
}
