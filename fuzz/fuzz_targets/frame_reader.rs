//! The frame reader (`sft::connection::FrameReader`) over an arbitrary byte
//! stream, all of it available at once: what a server reads from a client
//! and a client reads from a server goes through this one reader. Reads
//! until the stream ends or an error; every DATA payload is then decoded as
//! the receiving side would (`compress::Decoder`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sft::compress::Decoder;
use sft::connection::FrameReader;
use sft::protocol::Msg;

fuzz_target!(|data: &[u8]| {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let mut rd = FrameReader::new(data);
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        // each frame consumes at least its 5-byte header
        for _ in 0..=data.len() / 5 {
            match rd.read_frame().await {
                Ok(Some(Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                })) => {
                    if dec.decode(encoding, raw_len, &payload, &mut out).is_ok() {
                        assert_eq!(out.len(), raw_len as usize);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
});
