//! Frame header and message decoding (`parse_header`, `Msg::decode`): the
//! bytes every peer, client or server, sends first. Any decoded message must
//! encode and decode back to itself (a few fields are truncated by encode on
//! purpose: error text at 4096 bytes, usage names at 64).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sft::protocol::{self, HEADER_LEN, Msg};

fn round_trips(m: &Msg) -> bool {
    match m {
        Msg::Error { message, .. } => message.len() <= 4096,
        Msg::UsageOk(u) => u.rows.iter().all(|r| r.name.len() <= 64),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    // as a whole frame: header first, body only if the header allows it
    if let Ok(Some((ty, len))) = protocol::parse_header(data) {
        assert!(len <= protocol::max_body(ty).unwrap_or(0));
        if data.len() >= HEADER_LEN + len {
            let body = Bytes::copy_from_slice(&data[HEADER_LEN..HEADER_LEN + len]);
            let _ = Msg::decode(ty, body);
        }
    }
    // as a body of the type named by the first byte
    let Some((&ty, body)) = data.split_first() else {
        return;
    };
    if let Ok(m) = Msg::decode(ty, Bytes::copy_from_slice(body)) {
        let mut out = Vec::new();
        m.encode(&mut out);
        let (ty2, len) = match protocol::parse_header(&out) {
            Ok(Some(h)) => h,
            other => panic!("re-encoded {} has a bad header: {other:?}", m.name()),
        };
        assert_eq!(ty2, ty);
        assert_eq!(len + HEADER_LEN, out.len());
        let again = Msg::decode(ty, Bytes::copy_from_slice(&out[HEADER_LEN..]));
        match again {
            Ok(m2) => {
                if round_trips(&m) {
                    assert_eq!(m2, m, "decode(encode(m)) differs");
                }
            }
            Err(e) => panic!("re-encoded {} does not decode: {e}", m.name()),
        }
    }
});
