//! The zstd block decoder (`compress::Decoder::decode`) with a declared raw
//! length: the first 4 bytes are the declared length (as on the wire, any
//! u32), the rest the payload. A block that decodes is exactly its declared
//! length; nothing larger than a block is ever produced. Half the inputs
//! also go through the DATA prefix check first, as the frame reader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sft::compress::Decoder;
use sft::protocol::{self, Encoding, MAX_BLOCK};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let raw_len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    // small declared sizes are where the interesting edges are
    let raw_len = if data[4] & 1 == 0 {
        raw_len
    } else {
        raw_len % (MAX_BLOCK as u32 + 2)
    };
    let payload = &data[5..];
    let encoding = if data[4] & 2 == 0 {
        Encoding::Zstd
    } else {
        Encoding::Raw
    };
    if data[4] & 4 != 0
        && protocol::check_data_prefix(encoding as u8, raw_len, payload.len()).is_err()
    {
        return;
    }
    let mut dec = Decoder::new();
    // a reused output buffer, as the receiving side keeps one
    let mut out = vec![0u8; (data[4] as usize) << 4];
    if dec.decode(encoding, raw_len, payload, &mut out).is_ok() {
        assert_eq!(out.len(), raw_len as usize);
        assert!(out.len() <= MAX_BLOCK);
        if encoding == Encoding::Raw {
            assert_eq!(&out[..], payload);
        }
    }
    // the context is reused across blocks: a second block must not be
    // affected by the first
    let _ = dec.decode(
        Encoding::Zstd,
        raw_len.min(MAX_BLOCK as u32),
        payload,
        &mut out,
    );
});
