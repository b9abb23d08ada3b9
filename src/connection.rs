//! Moves frames over any byte stream: a cancel-safe reader (bytes already
//! received stay in its buffer, so `read_frame` may be a `select!` arm) and a
//! buffered writer. Split so one task can read while another writes.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::protocol::{self, DATA_PREFIX_LEN, HEADER_LEN, Msg};
use crate::transfer::Pool;

/// A DATA payload being read straight into a pooled buffer.
struct Pending {
    encoding: u8,
    raw_len: u32,
    len: usize,
    buf: Vec<u8>,
}

/// Reads frames from a stream.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    pool: Pool,
    pending: Option<Pending>,
    /// Largest body accepted from this peer now, whatever the type allows:
    /// before authentication only HELLO/AUTH-sized frames are read, so a
    /// stranger cannot make the server buffer a megabyte.
    limit: usize,
}

/// DATA payloads at least this large bypass the frame buffer.
const DIRECT_MIN: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: BytesMut::new(),
            pool: Pool::new(),
            pending: None,
            limit: usize::MAX,
        }
    }

    /// Refuse, from its header, any frame whose body is larger than `max`
    /// (`usize::MAX`: only the per-type limits of the protocol apply).
    pub fn set_limit(&mut self, max: usize) {
        self.limit = max;
    }

    /// Take DATA payload buffers from `pool` from now on (a server shares
    /// one among all its sessions).
    pub fn set_pool(&mut self, pool: Pool) {
        self.pool = pool;
    }

    /// The pool DATA payload buffers come from; whoever consumes a payload
    /// should give its buffer back (see [`Pool::recycle`]).
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Read the rest of a large DATA payload directly into its own buffer, so
    /// bulk data is copied once out of TLS and buffers are reused.
    async fn finish_pending(&mut self) -> Result<Msg> {
        loop {
            let Some(p) = self.pending.as_mut() else {
                return Err(Error::other("internal error: no pending DATA"));
            };
            let need = p.len - p.buf.len();
            if need == 0 {
                let Some(p) = self.pending.take() else {
                    return Err(Error::other("internal error: no pending DATA"));
                };
                let encoding = protocol::check_data_prefix(p.encoding, p.raw_len, p.buf.len())?;
                return Ok(Msg::Data {
                    encoding,
                    raw_len: p.raw_len,
                    payload: Bytes::from(p.buf),
                });
            }
            let n = self
                .rd
                .read_buf(&mut (&mut p.buf).limit(need))
                .await
                .map_err(lost)?;
            if n == 0 {
                return Err(Error::network(
                    "connection closed in the middle of a message",
                ));
            }
        }
    }

    /// Read the next frame. `Ok(None)` means the peer closed the stream cleanly
    /// between frames; a close inside a frame is an error. Cancel-safe: a
    /// partly received frame stays in the reader.
    pub async fn read_frame(&mut self) -> Result<Option<Msg>> {
        if self.pending.is_some() {
            return self.finish_pending().await.map(Some);
        }
        loop {
            if let Some((ty, len)) = protocol::parse_header(&self.buf)? {
                if len > self.limit {
                    return Err(Error::protocol(format!(
                        "frame type 0x{ty:02x} declares {len} bytes, more than the {} allowed before authentication",
                        self.limit
                    )));
                }
                if ty == protocol::ty::DATA
                    && len >= DIRECT_MIN + DATA_PREFIX_LEN
                    && self.buf.len() >= HEADER_LEN + DATA_PREFIX_LEN
                {
                    let b = &self.buf;
                    let encoding = b[HEADER_LEN];
                    let raw_len = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
                    self.buf.advance(HEADER_LEN + DATA_PREFIX_LEN);
                    let len = len - DATA_PREFIX_LEN;
                    let mut buf = self.pool.take(len);
                    let have = self.buf.len().min(len);
                    buf.extend_from_slice(&self.buf[..have]);
                    self.buf.advance(have);
                    self.pending = Some(Pending {
                        encoding,
                        raw_len,
                        len,
                        buf,
                    });
                    return self.finish_pending().await.map(Some);
                }
                if self.buf.len() >= HEADER_LEN + len {
                    self.buf.advance(HEADER_LEN);
                    let body = self.buf.split_to(len).freeze();
                    return Msg::decode(ty, body).map(Some);
                }
                self.buf.reserve(HEADER_LEN + len - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                // small until the peer is known to send more than handshakes
                let step = if self.limit < protocol::MAX_CONTROL_BODY {
                    4096
                } else {
                    64 * 1024
                };
                self.buf.reserve(step);
            }
            let n = self.rd.read_buf(&mut self.buf).await.map_err(lost)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::network(
                    "connection closed in the middle of a message",
                ));
            }
        }
    }

    /// Like `read_frame` but a closed stream is an error naming what was expected.
    pub async fn expect_frame(&mut self, what: &str) -> Result<Msg> {
        match self.read_frame().await? {
            Some(m) => Ok(m),
            None => Err(Error::network(format!(
                "connection closed by the peer while waiting for {what}"
            ))),
        }
    }

    /// `expect_frame` with a deadline; the error names the phase.
    pub async fn expect_within(&mut self, limit: Duration, what: &str) -> Result<Msg> {
        match tokio::time::timeout(limit, self.expect_frame(what)).await {
            Ok(r) => r,
            Err(_) => Err(Error::network(format!(
                "timed out after {}s waiting for {what}",
                limit.as_secs()
            ))),
        }
    }
}

/// Writes frames to a stream through a small buffer.
pub struct FrameWriter<W> {
    wr: W,
    buf: Vec<u8>,
    /// Longest a single write may wait for the peer to read: a peer that
    /// stops reading cannot hold the connection (and its slot) forever.
    deadline: Option<Duration>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(wr: W) -> Self {
        FrameWriter {
            wr,
            buf: Vec::with_capacity(8 * 1024),
            deadline: None,
        }
    }

    /// Give every write a deadline: no progress for `d` ends the connection.
    pub fn set_deadline(&mut self, d: Duration) {
        self.deadline = Some(d);
    }

    async fn timed<T>(
        deadline: Option<Duration>,
        fut: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T> {
        match deadline {
            None => fut.await.map_err(lost),
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r.map_err(lost),
                Err(_) => Err(Error::network(format!(
                    "sending timed out after {}: the peer stopped reading",
                    crate::net::show_duration(d)
                ))),
            },
        }
    }

    /// Queue a message; it is sent on the next `flush` (or when the buffer fills).
    pub async fn send(&mut self, msg: &Msg) -> Result<()> {
        msg.encode(&mut self.buf);
        if self.buf.len() >= 64 * 1024 {
            self.flush_buf().await?;
        }
        Ok(())
    }

    /// Queue a message and flush.
    pub async fn send_now(&mut self, msg: &Msg) -> Result<()> {
        self.send(msg).await?;
        self.flush().await
    }

    /// Write an already-encoded frame (for DATA: header and payload built in
    /// one buffer, so there is no extra copy and one TLS write).
    pub async fn write_raw(&mut self, frame: &[u8]) -> Result<()> {
        self.flush_buf().await?;
        Self::timed(self.deadline, self.wr.write_all(frame)).await
    }

    /// Queue already-encoded frames; like `send`, they go out on the next
    /// `flush` or when the buffer fills, so many small ones share TLS records.
    pub async fn queue_raw(&mut self, frames: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(frames);
        if self.buf.len() >= 256 * 1024 {
            self.flush_buf().await?;
        }
        Ok(())
    }

    async fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            Self::timed(self.deadline, self.wr.write_all(&self.buf)).await?;
            self.buf.clear();
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.flush_buf().await?;
        Self::timed(self.deadline, self.wr.flush()).await
    }

    /// Flush and shut the stream down (TLS close_notify).
    pub async fn shutdown(&mut self) -> Result<()> {
        self.flush().await?;
        Self::timed(self.deadline, self.wr.shutdown()).await
    }
}

fn lost(e: std::io::Error) -> Error {
    Error::network(format!(
        "connection lost: {}",
        crate::error::describe_io(&e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_stream_in_order() {
        let (a, b) = tokio::io::duplex(64);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let writer = tokio::spawn(async move {
            w.send(&Msg::List { path: "x".into() }).await.unwrap();
            w.send(&Msg::Bye).await.unwrap();
            w.shutdown().await.unwrap();
        });
        assert_eq!(
            r.read_frame().await.unwrap(),
            Some(Msg::List { path: "x".into() })
        );
        assert_eq!(r.read_frame().await.unwrap(), Some(Msg::Bye));
        assert_eq!(r.read_frame().await.unwrap(), None);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b);
        a.write_all(&[protocol::ty::LIST, 0, 0, 0, 10, 0])
            .await
            .unwrap();
        drop(a);
        let e = r.read_frame().await.unwrap_err();
        assert!(e.message.contains("middle of a message"), "{e}");
    }
}
