//! Socket plumbing shared by the client and the server: the buffered socket
//! under TLS, one deadline helper whose error names the phase, and the
//! descriptor limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Bytes read from the kernel at a time once a session carries data.
/// rustls pulls at most one TLS record per read; a large buffer below it
/// turns that into few, large socket reads (measured: far fewer syscalls per
/// GiB).
pub const SOCKET_BUFFER: usize = 256 * 1024;

/// A TCP stream with a read buffer that is allocated only when it is asked
/// for: a connection that has not authenticated costs no buffer of its own
/// (an idle stranger must be cheap), a session that moves data gets
/// [`SOCKET_BUFFER`] bytes.
pub struct Socket {
    tcp: TcpStream,
    /// Set (by whoever holds the handle from [`Socket::grow_handle`]) when
    /// the buffer should be allocated at the next read.
    grow: Arc<AtomicBool>,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl Socket {
    /// A socket with no read buffer yet.
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            grow: Arc::new(AtomicBool::new(false)),
            buf: Box::default(),
            pos: 0,
            filled: 0,
        }
    }

    /// A socket that buffers from the first read (the client's side).
    pub fn buffered(tcp: TcpStream) -> Socket {
        let s = Socket::new(tcp);
        s.grow.store(true, Ordering::Relaxed);
        s
    }

    /// A handle that, once set, gives the socket its read buffer; usable
    /// after the stream was wrapped in TLS and split.
    pub fn grow_handle(&self) -> Arc<AtomicBool> {
        self.grow.clone()
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pos == me.filled {
            if me.buf.is_empty() && me.grow.load(Ordering::Relaxed) {
                me.buf = vec![0u8; SOCKET_BUFFER].into_boxed_slice();
            }
            if me.buf.is_empty() || out.remaining() >= me.buf.len() {
                return Pin::new(&mut me.tcp).poll_read(cx, out);
            }
            let mut rb = ReadBuf::new(&mut me.buf);
            ready!(Pin::new(&mut me.tcp).poll_read(cx, &mut rb))?;
            me.filled = rb.filled().len();
            me.pos = 0;
        }
        let n = out.remaining().min(me.filled - me.pos);
        out.put_slice(&me.buf[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A duration as people read it in a message: "10s", "1.5s", "250ms".
pub fn show_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Run `fut` with a deadline; the timeout error names the phase
/// ("TLS handshake with HOST timed out after 10s").
pub async fn with_timeout<T>(
    fut: impl Future<Output = Result<T>>,
    phase: &str,
    limit: Duration,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::network(format!(
            "{phase} timed out after {}",
            show_duration(limit)
        ))),
    }
}

/// Raise the soft limit on open descriptors to the hard limit (as Go's
/// runtime does at start) and return the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
    // None means "unlimited"
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(show_duration(Duration::from_secs(10)), "10s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
    }

    #[tokio::test]
    async fn a_deadline_names_its_phase() {
        let e = with_timeout(
            std::future::pending::<Result<()>>(),
            "waiting for HELLO",
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert_eq!(e.message, "waiting for HELLO timed out after 10ms");
        assert_eq!(e.kind, crate::error::Kind::Network);
    }

    #[tokio::test]
    async fn the_buffer_is_allocated_only_when_asked_and_bytes_pass_either_way() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            c.write_all(&data).await.unwrap();
            data
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut s = Socket::new(tcp);
        let mut first = [0u8; 100];
        s.read_exact(&mut first).await.unwrap();
        assert!(s.buf.is_empty(), "no buffer before it is asked for");
        s.grow_handle().store(true, Ordering::Relaxed);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(s.buf.len(), SOCKET_BUFFER);
        let data = sender.await.unwrap();
        assert_eq!(&data[..100], &first);
        assert_eq!(&data[100..], &rest[..]);
    }
}
