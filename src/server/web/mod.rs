//! HTTPS on the sft port: a connection whose ALPN is `h2` or `http/1.1` is
//! served by hyper with the same certificate, budgets, deadlines and drain as
//! an sft session. It serves share links only (see `routes`).
//!
//! Budgets: until its first request arrives the connection stays in the
//! unauthenticated budget (its gate `Pass`, which may evict it) and must send
//! its headers within the handshake deadline; from its first request it
//! holds a session slot (`--max-connections`), or gets 503. A connection
//! where no byte moves for `--data-timeout` is closed. On shutdown, hyper
//! finishes the requests in flight and closes (graceful), and they are
//! dropped when the grace period ends.

mod body;
pub mod browse;
mod page;
mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tracing::{debug, info};

use super::Shared;
use super::gate::Pass;
use super::handshake::Stream;
use super::store::Store;
use crate::error::{Error, Result};

pub use body::Body;
pub use routes::percent_encode;

/// Largest request head (request line and headers), HTTP/1.1 and HTTP/2.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/2 streams at once on one connection.
const MAX_STREAMS: u32 = 16;
/// HTTP/2 streams a client may reset before they are answered (rapid reset).
const MAX_PENDING_RESETS: usize = 16;

/// Per-connection state the request handler shares with the connection task.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    /// The first request arrived (the connection left the gate).
    started: AtomicBool,
    first: Notify,
    /// The session slot, taken at the first request.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Conn {
    /// Take a session slot at the first request; false: server busy.
    fn admit(&self) -> bool {
        let mut p = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() {
            return true;
        }
        match self.shared.sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                *p = Some(permit);
                if !self.started.swap(true, Ordering::SeqCst) {
                    self.first.notify_one();
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// A stream that records when a byte last moved either way.
struct Watched<S> {
    inner: S,
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, b);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Both hyper connection kinds, for one driving loop.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn start_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serve one TLS connection that chose `h2` (`h2` true) or `http/1.1`.
pub async fn serve(tls: Stream, h2: bool, peer: SocketAddr, shared: Arc<Shared>, pass: Pass) {
    let epoch = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: tls,
        epoch,
        last_ms: last_ms.clone(),
    });
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        peer,
        started: AtomicBool::new(false),
        first: Notify::new(),
        permit: Mutex::new(None),
    });
    let c = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        let c = c.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(&c, req).await) }
    });
    let limits = &shared.limits;
    if h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            .max_local_error_reset_streams(Some(64))
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_send_buf_size(256 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(limits.handshake);
        drive(b.serve_connection(io, svc), &conn, pass, last_ms, epoch).await;
    } else {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.handshake)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(64)
            .keep_alive(true);
        drive(b.serve_connection(io, svc), &conn, pass, last_ms, epoch).await;
    }
}

async fn drive<C: Graceful>(
    c: C,
    conn: &Arc<Conn>,
    pass: Pass,
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
) {
    let shared = &conn.shared;
    let peer = conn.peer;
    let mut c = std::pin::pin!(c);
    let mut pass = Some(pass);
    let mut stop = shared.stop.clone();
    let mut abort = shared.abort.clone();
    let mut stopping = false;
    let first_deadline = tokio::time::Instant::now() + shared.limits.handshake;
    let quiet = shared.limits.data;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = c.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, "HTTP connection ended: {e}");
                }
                break;
            }
            _ = async {
                match pass.as_mut() {
                    Some(p) => { let _ = (&mut p.evicted).await; }
                    None => std::future::pending().await,
                }
            } => {
                if !conn.started.load(Ordering::SeqCst) {
                    return;
                }
                pass = None;
            }
            _ = conn.first.notified(), if pass.is_some() => {
                if let Some(p) = pass.take() {
                    p.promote();
                }
            }
            _ = tokio::time::sleep_until(first_deadline), if pass.is_some() => {
                if !conn.started.load(Ordering::SeqCst) {
                    if shared.quiet_handshakes.ready().is_some() {
                        info!(%peer, "HTTP connection closed: no request within the handshake deadline");
                    }
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                c.as_mut().start_shutdown();
            }
            _ = abort.wait_for(|s| *s) => return,
            _ = tick.tick() => {
                let idle = epoch.elapsed().saturating_sub(Duration::from_millis(last_ms.load(Ordering::Relaxed)));
                if idle >= quiet {
                    debug!(%peer, "HTTP connection closed: nothing moved for {}s", quiet.as_secs());
                    return;
                }
            }
        }
    }
}

/// The SHA-256 of a file, computed by reading it (and remembered for next
/// time); used when a file has none recorded.
pub fn digest_of(store: &Store, name: &str) -> Result<(u64, [u8; 32])> {
    use std::io::Read;
    let (mut f, info) = store.open_read(name)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", crate::names::quote(name)), &e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let d: [u8; 32] = h.finalize().into();
    store.remember_digest(&f, &info, &d);
    Ok((info.size, d))
}

/// Base64 (RFC 4648): standard with padding, or URL-safe without.
pub fn base64(data: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, std) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes(), false), std);
            assert_eq!(base64(raw.as_bytes(), true), std.trim_end_matches('='));
        }
        assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
    }
}
