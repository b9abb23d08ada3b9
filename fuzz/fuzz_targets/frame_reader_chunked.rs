//! The frame reader over a stream that delivers its bytes in pieces of
//! fuzzer-chosen sizes (as TLS records do), so partial headers, the
//! buffered path and the direct path for large DATA payloads are all
//! reached. The first 8 input bytes choose the piece sizes (1..=256 each,
//! cycled); the rest is the stream. When the first byte is odd the reader
//! has the server's limit before authentication (`MAX_PREAUTH_BODY`), and
//! no DATA payload larger than that may come out of it.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use sft::connection::FrameReader;
use sft::protocol::{MAX_PREAUTH_BODY, Msg};
use tokio::io::{AsyncRead, ReadBuf};

struct Pieces<'a> {
    data: &'a [u8],
    sizes: [u8; 8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = self.sizes[self.turn % 8] as usize + 1;
        self.turn += 1;
        let n = want.min(buf.remaining()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (sizes, stream) = data.split_at(8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sizes);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let mut rd = FrameReader::new(Pieces {
            data: stream,
            sizes: s,
            turn: 0,
        });
        let preauth = s[0] & 1 == 1;
        if preauth {
            rd.set_limit(MAX_PREAUTH_BODY);
        }
        for _ in 0..=stream.len() / 5 {
            match rd.read_frame().await {
                Ok(Some(Msg::Data { payload, .. })) if preauth => {
                    assert!(
                        payload.len() <= MAX_PREAUTH_BODY,
                        "a large DATA before auth"
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
});
