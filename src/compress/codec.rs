//! zstd blocks: compressed with a reused context, decompressed without
//! ever producing more than the block declares or a window over 2 MiB.

use crate::error::{Error, Result};
use crate::protocol::{Encoding, MAX_BLOCK};

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
    use super::*;
    use crate::compress::BLOCK;
    use crate::compress::testdata::text;

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

    #[test]
    fn every_level_keeps_a_block_within_the_window_a_receiver_accepts() {
        // whatever level auto or --compress picks, a 1 MiB block is one
        // frame whose window is at most 2 MiB: the receiver's memory stays
        // bounded, and it decodes
        let raw = text(BLOCK);
        let mut e = Encoder::new();
        let mut d = Decoder::new();
        for level in [
            1,
            3,
            7,
            12,
            crate::compress::AUTO_MAX_LEVEL,
            crate::compress::MAX_LEVEL,
        ] {
            let c = e.compress(&raw, level).unwrap().to_vec();
            assert!(!frame_window_too_large(&c), "level {level}");
            let mut out = Vec::new();
            d.decode(Encoding::Zstd, raw.len() as u32, &c, &mut out)
                .unwrap();
            assert_eq!(out, raw, "level {level}");
        }
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
}
