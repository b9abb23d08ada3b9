//! One client connection: TLS handshake (in the connection's own task, with a
//! deadline), HELLO, authentication, then commands until BYE. A request that
//! cannot be served gets an ERROR reply and the session goes on; a protocol
//! violation gets an ERROR and the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use super::Shared;
use super::auth::Identity;
use crate::compress::{Mode, Policy};
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Encoding, Msg};
use crate::transfer::{self, Outgoing};

/// rustls pulls at most one TLS record per read; a large buffer below it turns
/// that into few, large socket reads (measured: far fewer syscalls per GiB).
pub type Socket = tokio::io::BufReader<TcpStream>;
pub const SOCKET_BUFFER: usize = 256 * 1024;

type Stream = TlsStream<Socket>;

struct Session {
    r: FrameReader<ReadHalf<Stream>>,
    w: FrameWriter<WriteHalf<Stream>>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    who: Option<Identity>,
    /// zstd DATA blocks were negotiated in HELLO/WELCOME.
    zstd: bool,
}

/// Serve one accepted TCP connection to the end. With `busy`, the client only
/// learns (over TLS) that the server is full.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    busy: bool,
) {
    let limits = shared.limits.clone();
    let sock = tokio::io::BufReader::with_capacity(SOCKET_BUFFER, tcp);
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(sock)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(%peer, "TLS handshake failed: {}", crate::error::describe_io(&e));
            return;
        }
        Err(_) => {
            info!(%peer, "TLS handshake timed out after {}s", limits.handshake.as_secs());
            return;
        }
    };
    let (rd, wr) = tokio::io::split(tls);
    let mut s = Session {
        r: FrameReader::new(rd),
        w: FrameWriter::new(wr),
        shared,
        peer,
        who: None,
        zstd: false,
    };
    if busy {
        warn!(%peer, "refused: server busy ({} connections)", limits.max_connections);
        let e = Error::network(format!(
            "server busy: all {} connections are in use; try again later",
            limits.max_connections
        ));
        let _ = s.reply_error(&e).await;
    } else {
        debug!(%peer, "connection");
        match s.run().await {
            Ok(()) => {}
            Err(e) => {
                let user = s.who.as_ref().map(|w| w.user.as_str()).unwrap_or("-");
                if e.kind == Kind::Network {
                    info!(%peer, user, "connection ended: {e}");
                } else {
                    warn!(%peer, user, "closing connection: {e}");
                    let _ = s.reply_error(&e).await;
                }
            }
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.w.shutdown()).await;
}

impl Session {
    async fn reply_error(&mut self, e: &Error) -> Result<()> {
        self.w
            .send_now(&Msg::Error {
                code: e.kind.wire_code(),
                message: e.message.clone(),
            })
            .await
    }

    fn user(&self) -> &str {
        self.who.as_ref().map(|w| w.user.as_str()).unwrap_or("-")
    }

    async fn run(&mut self) -> Result<()> {
        let limits = self.shared.limits.clone();
        let deadline = Instant::now() + limits.auth;
        match self.r.expect_within(limits.auth, "HELLO").await? {
            Msg::Hello {
                min_version,
                max_version,
                features,
            } => {
                self.zstd = features & protocol::FEATURE_ZSTD != 0 && self.shared.compression;
                if protocol::VERSION < min_version || protocol::VERSION > max_version {
                    return Err(Error::protocol(format!(
                        "protocol version mismatch: this server speaks version {}, the client {min_version}..{max_version}; upgrade the older side",
                        protocol::VERSION
                    )));
                }
            }
            other => {
                return Err(Error::protocol(format!(
                    "expected HELLO, got {}",
                    other.name()
                )));
            }
        }
        self.w
            .send_now(&Msg::Welcome {
                version: protocol::VERSION,
                features: if self.zstd { protocol::FEATURE_ZSTD } else { 0 },
                max_block: protocol::MAX_BLOCK as u32,
            })
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        match self.r.expect_within(left, "AUTH").await? {
            Msg::Auth { secret } => match self.shared.tokens.check(&secret) {
                Some(who) => {
                    info!(peer = %self.peer, user = %who.user, role = who.role.name(), "authenticated");
                    self.w
                        .send_now(&Msg::AuthOk {
                            role: who.role,
                            user: who.user.clone(),
                        })
                        .await?;
                    self.who = Some(who);
                }
                None => {
                    warn!(peer = %self.peer, "authentication failed: token not accepted");
                    let e = Error::new(
                        Kind::Auth,
                        "authentication failed: the token was not accepted; check --token, --token-file or SFT_TOKEN",
                    );
                    self.reply_error(&e).await?;
                    return Ok(());
                }
            },
            other => {
                return Err(Error::protocol(format!(
                    "expected AUTH, got {}",
                    other.name()
                )));
            }
        }
        self.commands().await
    }

    async fn commands(&mut self) -> Result<()> {
        let mut stop = self.shared.stop.clone();
        let idle = self.shared.limits.idle;
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => None,
                m = tokio::time::timeout(idle, self.r.read_frame()) => Some(m),
            };
            let msg = match next {
                None => {
                    let e = Error::network("server is shutting down; try again later");
                    return self.reply_error(&e).await;
                }
                Some(Ok(m)) => m?,
                Some(Err(_)) => {
                    info!(peer = %self.peer, user = self.user(), "idle timeout");
                    let e = Error::network(format!(
                        "session closed after {}s without a command",
                        idle.as_secs()
                    ));
                    return self.reply_error(&e).await;
                }
            };
            let Some(msg) = msg else {
                debug!(peer = %self.peer, "client left without BYE");
                return Ok(());
            };
            match msg {
                Msg::List { path } => self.list(path).await?,
                Msg::Put { size, flags, name } => self.put(size, flags, name).await?,
                Msg::Get {
                    offset,
                    compress,
                    name,
                } => self.get(offset, compress, name).await?,
                Msg::Remove { name } => self.remove(name).await?,
                Msg::Bye => {
                    debug!(peer = %self.peer, "end of session");
                    return self.w.send_now(&Msg::Bye).await;
                }
                other => {
                    return Err(Error::protocol(format!(
                        "unexpected {} message between commands",
                        other.name()
                    )));
                }
            }
        }
    }

    /// Run blocking filesystem work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&super::Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))?
    }

    async fn list(&mut self, path: String) -> Result<()> {
        let p = path.clone();
        match self.blocking(move |s| s.store.list(&p)).await {
            Ok(entries) => {
                for e in entries {
                    self.w.send(&Msg::Entry(e)).await?;
                }
                self.w.send_now(&Msg::ListEnd).await
            }
            Err(e) => self.reply_error(&e).await,
        }
    }

    async fn remove(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        let res = self.blocking(move |s| s.store.remove(&n)).await;
        match &res {
            Ok(()) => {
                info!(peer = %self.peer, user = self.user(), op = "rm", name = %names::escape(&name), outcome = "ok")
            }
            Err(e) => {
                info!(peer = %self.peer, user = self.user(), op = "rm", name = %names::escape(&name), outcome = e.kind.name(), "{e}")
            }
        }
        match res {
            Ok(()) => self.w.send_now(&Msg::Done).await,
            Err(e) => self.reply_error(&e).await,
        }
    }

    async fn put(&mut self, size: u64, flags: u32, name: String) -> Result<()> {
        if flags & !protocol::PUT_OVERWRITE != 0 {
            return self
                .reply_error(&Error::protocol(format!("unknown PUT flags 0x{flags:08x}")))
                .await;
        }
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        let n = name.clone();
        let upload = match self.blocking(move |s| s.store.begin_upload(&n)).await {
            Ok(u) => u,
            Err(e) => {
                info!(peer = %self.peer, user = self.user(), op = "put", name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                return self.reply_error(&e).await;
            }
        };
        let writer_file = upload
            .file
            .try_clone()
            .map_err(|e| Error::io("duplicating upload file", &e))?;
        self.w.send_now(&Msg::PutReady { offset: 0 }).await?;
        let started = Instant::now();
        let background_sync = self.shared.store.fsync == super::store::Fsync::Always;
        let (tx, writer) = transfer::spawn_writer(
            writer_file,
            names::quote(&name),
            background_sync,
            self.r.pool(),
        );
        let mut tx = Some(tx);
        let mut writer = Some(writer);
        let mut failed: Option<Error> = None;
        let mut received: u64 = 0;
        let data_timeout = self.shared.limits.data;
        let end = loop {
            match self.r.expect_within(data_timeout, "upload data").await? {
                Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                } => {
                    if failed.is_some() {
                        continue; // discarding the rest of a failed upload
                    }
                    if encoding != Encoding::Raw && !self.zstd {
                        return Err(Error::protocol(
                            "compressed DATA was not negotiated for this session",
                        ));
                    }
                    received += u64::from(raw_len);
                    if received > size {
                        return Err(Error::protocol(format!(
                            "upload of {} sent more data than its declared size of {size} bytes",
                            names::quote(&name)
                        )));
                    }
                    let sent = match &tx {
                        Some(t) => t
                            .send(transfer::Block {
                                encoding,
                                raw_len,
                                payload,
                            })
                            .await
                            .is_ok(),
                        None => false,
                    };
                    if !sent {
                        // the writer stopped: report its error now, then drain
                        tx = None;
                        let e = match writer.take() {
                            Some(h) => match h.await {
                                Ok(Err(e)) => e,
                                _ => Error::other("internal error: the upload writer stopped"),
                            },
                            None => Error::other("internal error: the upload writer stopped"),
                        };
                        info!(peer = %self.peer, user = self.user(), op = "put", name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                        self.reply_error(&e).await?;
                        failed = Some(e);
                    }
                }
                Msg::End { sha256 } => break Some(sha256),
                Msg::Cancel => break None,
                other => {
                    return Err(Error::protocol(format!(
                        "unexpected {} during an upload",
                        other.name()
                    )));
                }
            }
        };
        drop(tx);
        let written = match writer.take() {
            Some(h) => Some(
                h.await
                    .map_err(|e| Error::other(format!("internal error: {e}"))),
            ),
            None => None,
        };
        if failed.is_some() {
            return Ok(()); // the one reply was already sent
        }
        let outcome: Result<(String, [u8; 32])> = async {
            let Some(claimed) = end else {
                return Err(Error::other("upload cancelled by the client; nothing was stored"));
            };
            let (n, digest, _file) = match written {
                Some(r) => r??,
                None => return Err(Error::other("internal error: no upload writer")),
            };
            if n != size {
                return Err(Error::protocol(format!("upload ended after {n} of its declared {size} bytes; nothing was stored")));
            }
            if !transfer::same_digest(&digest, &claimed) {
                return Err(Error::integrity(format!(
                    "SHA-256 mismatch for {}: the client sent {} but the data received hashes to {}; nothing was stored",
                    names::quote(&name),
                    hex::encode(claimed),
                    hex::encode(digest)
                )));
            }
            let stored = self.blocking(move |s| s.store.commit(upload, &digest, overwrite)).await?;
            Ok((stored, digest))
        }
        .await;
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok((stored, digest)) => {
                info!(peer = %self.peer, user = self.user(), op = "put", name = %names::escape(&stored), size, sha256 = %hex::encode(digest), seconds = secs, outcome = "ok");
                self.w
                    .send_now(&Msg::PutOk {
                        size,
                        sha256: digest,
                        name: stored,
                    })
                    .await
            }
            Err(e) => {
                info!(peer = %self.peer, user = self.user(), op = "put", name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }

    async fn get(&mut self, offset: u64, compress: u8, name: String) -> Result<()> {
        if offset != 0 {
            return self
                .reply_error(&Error::usage(
                    "this server cannot resume downloads yet (offset must be 0)",
                ))
                .await;
        }
        let n = name.clone();
        let (file, info) = match self.blocking(move |s| s.store.open_read(&n)).await {
            Ok(x) => x,
            Err(e) => {
                info!(peer = %self.peer, user = self.user(), op = "get", name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                return self.reply_error(&e).await;
            }
        };
        let keep = file
            .try_clone()
            .map_err(|e| Error::io("duplicating file handle", &e))?;
        self.w
            .send(&Msg::GetOk {
                size: info.size,
                mtime_ns: info.mtime_ns,
                sha256: info.sha256,
            })
            .await?;
        let started = Instant::now();
        let pool = transfer::Pool::new();
        let mode = if self.zstd {
            Mode::from_wire(compress).capped(self.shared.max_level)
        } else {
            Mode::Off
        };
        let policy = Policy::new(mode, self.shared.max_level);
        let mut rx =
            transfer::spawn_reader(file, info.size, names::quote(&name), pool.clone(), policy);
        let outcome = loop {
            match rx.recv().await {
                Some(Outgoing::Frame(f)) => {
                    self.w.write_raw(&f).await?;
                    pool.give(f);
                }
                Some(Outgoing::Done { sha256, .. }) => match info.sha256 {
                    Some(stored) if !transfer::same_digest(&stored, &sha256) => {
                        break Err(Error::integrity(format!(
                            "{} is corrupted on the server: its SHA-256 no longer matches the one recorded when it was stored; restore it from a backup",
                            names::quote(&name)
                        )));
                    }
                    stored => {
                        if stored.is_none() {
                            let _ = self
                                .blocking(move |s| {
                                    s.store.remember_digest(&keep, &info, &sha256);
                                    Ok(())
                                })
                                .await;
                        }
                        break Ok(sha256);
                    }
                },
                Some(Outgoing::Failed(e)) => break Err(e),
                None => break Err(Error::other("internal error: the file reader stopped")),
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(sha256) => {
                info!(peer = %self.peer, user = self.user(), op = "get", name = %names::escape(&name), size = info.size, sha256 = %hex::encode(sha256), seconds = secs, outcome = "ok");
                self.w.send_now(&Msg::End { sha256 }).await
            }
            Err(e) => {
                warn!(peer = %self.peer, user = self.user(), op = "get", name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }
}
