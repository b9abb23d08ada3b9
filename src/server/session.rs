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
use tracing::{debug, info, warn};

use super::auth::Identity;
use super::commit::{self, Committed, Committer, SMALL_UPLOAD, check_owner, check_upload};
use super::fetch::{self, Fetch, Fetched, Fetcher};
use super::gate::Pass;
use super::{Control, Gauge, Shared, handshake};
use crate::compress::{Mode, Policy};
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Encoding, Msg, Role};
use crate::transfer::{self, Outgoing};

use super::handshake::{Admitted, Stream};

struct Session {
    r: FrameReader<ReadHalf<Stream>>,
    w: FrameWriter<WriteHalf<Stream>>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    who: Option<Identity>,
    /// zstd DATA blocks were negotiated in HELLO/WELCOME.
    zstd: bool,
    /// Small pipelined uploads being committed (started with the first).
    commits: Option<Committer>,
    /// Downloads being read ahead (started with the first GET).
    fetches: Option<Fetcher>,
}

/// Serve one accepted TCP connection to the end: admission (TLS, HELLO,
/// AUTH, a session slot; see `handshake`), then commands until BYE.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    pass: Pass,
) {
    let admitted = match handshake::admit(tcp, peer, acceptor, &shared, pass).await {
        Some(handshake::Admission::Sft(a)) => a,
        Some(handshake::Admission::Web { tls, h2, pass }) => {
            let counted = shared.clone();
            let _connection = Gauge::new(&counted.stats.connections);
            return super::web::serve(*tls, h2, peer, shared, pass).await;
        }
        None => return,
    };
    let Admitted {
        r,
        w,
        who,
        zstd,
        permit,
    } = admitted;
    let counted = shared.clone();
    let _connection = Gauge::new(&counted.stats.connections);
    let mut s = Session {
        r,
        w,
        shared,
        peer,
        who: Some(who),
        zstd,
        commits: None,
        fetches: None,
    };
    match s.commands().await {
        Ok(()) => {}
        Err(e) => {
            let user = s.user().to_string();
            if e.kind == Kind::Network {
                info!(%peer, user, "connection ended: {e}");
            } else {
                warn!(%peer, user, "closing connection: {e}");
                let _ = s.reply_error(&e).await;
            }
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.w.shutdown()).await;
    drop(permit);
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

    /// The session's user as the users file says now: a changed role applies
    /// to the next command, and a removed user's session ends.
    fn refresh_identity(&mut self) -> Result<Identity> {
        let Some(old) = &self.who else {
            return Err(Error::protocol("command before authentication"));
        };
        match self.shared.accounts.current(&old.user) {
            Some(now) => {
                self.who = Some(now.clone());
                Ok(now)
            }
            None => {
                let e = Error::new(
                    Kind::Auth,
                    format!(
                        "permission denied: user {} no longer exists on this server",
                        old.user
                    ),
                );
                info!(event = "denied", peer = %self.peer, user = %old.user, "user removed; closing the session");
                Err(e)
            }
        }
    }

    fn identity(&self) -> Identity {
        self.who
            .clone()
            .unwrap_or_else(|| Identity::new("-", Role::Read))
    }

    /// `sft df`: the caller's usage and limits; for an admin, the server's
    /// totals and every user's.
    async fn usage(&mut self, who: &Identity) -> Result<()> {
        let all = who.role == Role::Admin;
        let users: Vec<(String, Option<u64>, Option<u64>)> = if all {
            let mut v: Vec<_> = self
                .shared
                .accounts
                .all()
                .into_iter()
                .map(|u| (u.user, u.quota, u.max_files))
                .collect();
            v.sort();
            v
        } else {
            vec![(who.user.clone(), who.quota, who.max_files)]
        };
        let free = self.shared.store.free_space().unwrap_or(0);
        let report = self.shared.ledger.report(&users, all, free);
        self.w.send_now(&Msg::UsageOk(report)).await
    }

    async fn status(&mut self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.shared.ledger.usage("");
        let st = &self.shared.stats;
        let status = protocol::Status {
            uptime_s: self.shared.started.elapsed().as_secs(),
            connections: st.connections.load(Relaxed).min(u32::MAX as u64) as u32,
            transfers: st.transfers.load(Relaxed).min(u32::MAX as u64) as u32,
            bytes_in: st.bytes_in.load(Relaxed),
            bytes_out: st.bytes_out.load(Relaxed),
            storage_bytes: total.bytes,
            files: total.files,
        };
        self.w.send_now(&Msg::StatusOk(status)).await
    }

    /// Tell the client its transfer was cut off by the end of the grace
    /// period, and end the session (the caller discards the upload).
    async fn aborted(&mut self, what: &str) -> Result<()> {
        let e = Error::network(format!(
            "server is shutting down: the grace period ended before this {what} finished{}; try again later",
            if what == "upload" {
                " and nothing was stored"
            } else {
                ""
            }
        ));
        if what != "upload" {
            // (an upload's line is written by `next_upload_frame`, with its name)
            info!(event = "get", peer = %self.peer, user = self.user(), outcome = "aborted", "{e}");
        }
        // uploads already received are answered first, in order
        // (boxed: answering a download may end here again)
        let _ = Box::pin(self.drain(Which::Puts)).await;
        let _ = self.reply_error(&e).await;
        if what == "upload" {
            // a lingering close: closing with the client's data still
            // arriving would make the kernel reset the connection, and a
            // reset can destroy the ERROR before the client reads it; so
            // its data is read and dropped until it stops (CANCEL, close)
            // or a short deadline passes
            let _ = self.w.shutdown().await;
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(Some(_)) = self.r.read_frame().await {}
            })
            .await;
        }
        Err(Error::network("transfer aborted at shutdown"))
    }

    async fn commands(&mut self) -> Result<()> {
        let mut stop = self.shared.stop.clone();
        let idle = self.shared.limits.idle;
        loop {
            let committing = self
                .commits
                .as_ref()
                .is_some_and(|c| c.answers.pending() > 0);
            let fetching = self
                .fetches
                .as_ref()
                .is_some_and(|f| f.answers.pending() > 0);
            let next = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => None,
                // answers to queued uploads and downloads go out while
                // commands come in
                Some(c) = async {
                    match self.commits.as_mut() {
                        Some(c) => c.answers.next().await,
                        None => None,
                    }
                }, if committing => Some(Ahead::Answer(Answer::Put(c))),
                Some(f) = async {
                    match self.fetches.as_mut() {
                        Some(f) => f.answers.next().await,
                        None => None,
                    }
                }, if fetching => Some(Ahead::Answer(Answer::Get(Box::new(f)))),
                m = tokio::time::timeout(idle, self.r.read_frame()) => Some(Ahead::Command(m)),
            };
            let next = match next {
                Some(Ahead::Answer(a)) => {
                    self.flush_answers(a).await?;
                    continue;
                }
                Some(Ahead::Command(m)) => Some(m),
                None => None,
            };
            let msg = match next {
                None => {
                    self.drain_all().await?;
                    let e = Error::network("server is shutting down; try again later");
                    return self.reply_error(&e).await;
                }
                Some(Ok(m)) => m?,
                Some(Err(_)) => {
                    info!(peer = %self.peer, user = self.user(), "idle timeout");
                    self.drain_all().await?;
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
            let who = self.refresh_identity()?;
            let need = match &msg {
                Msg::Put { .. } => Some((Role::Write, "put")),
                Msg::Remove { .. } => Some((Role::Write, "rm")),
                Msg::Mkdir { .. } => Some((Role::Write, "mkdir")),
                Msg::Rmdir { .. } => Some((Role::Write, "rmdir")),
                Msg::Shutdown { .. } => Some((Role::Admin, "shut the server down")),
                Msg::StatusReq => Some((Role::Admin, "see the server status")),
                Msg::Reload => Some((Role::Admin, "reload the server")),
                _ => None,
            };
            if let Some((role, op)) = need
                && let Err(e) = who.require(role, op)
            {
                self.drain_all().await?;
                warn!(event = "denied", peer = %self.peer, user = %who.user, role = who.role.name(), op, "{e}");
                // like any refusal before PUT_READY, the session goes on
                self.reply_error(&e).await?;
                if let Msg::Put { flags, .. } = msg
                    && flags & protocol::PUT_PIPELINED != 0
                {
                    self.discard_upload().await?;
                }
                continue;
            }
            // replies go out in the order of the commands: queued uploads
            // and queued downloads wait for each other, anything else for both
            match msg {
                Msg::Put { size, flags, name } if queued(size, flags) => {
                    self.drain(Which::Gets).await?;
                    self.put_queued(size, flags, name, who).await?;
                    continue;
                }
                Msg::Get {
                    offset,
                    compress,
                    name,
                } => {
                    self.drain(Which::Puts).await?;
                    self.get(offset, compress, name).await?;
                    continue;
                }
                Msg::List { path } => {
                    self.drain(Which::Puts).await?;
                    self.fetch(Fetch::Listing { path }).await?;
                    continue;
                }
                _ => self.drain_all().await?,
            }
            match msg {
                Msg::Put { size, flags, name } => self.put(size, flags, name).await?,
                Msg::Remove { name } => self.remove(name).await?,
                Msg::Mkdir { name } => {
                    let n = name.clone();
                    let r = self.blocking(move |s| s.store.mkdir(&n)).await;
                    self.done_or_error("mkdir", &name, r).await?
                }
                Msg::Rmdir { name } => {
                    let n = name.clone();
                    let r = self.blocking(move |s| s.store.rmdir(&n)).await;
                    self.done_or_error("rmdir", &name, r).await?
                }
                Msg::Stat { name } => {
                    let n = name.clone();
                    match self.blocking(move |s| s.store.stat(&n)).await {
                        Ok(e) => self.w.send_now(&Msg::Entry(e)).await?,
                        Err(e) => self.reply_error(&e).await?,
                    }
                }
                Msg::Shutdown { grace_ms } => {
                    let grace =
                        (grace_ms != u64::MAX).then(|| std::time::Duration::from_millis(grace_ms));
                    let by = who.user.clone();
                    info!(event = "shutdown_request", peer = %self.peer, user = %by, "admin asked the server to shut down");
                    if self
                        .shared
                        .control
                        .send(Control::Shutdown { grace, by })
                        .await
                        .is_err()
                    {
                        let e = Error::network("the server is already shutting down");
                        self.reply_error(&e).await?;
                    } else {
                        self.w.send_now(&Msg::Done).await?;
                    }
                }
                Msg::StatusReq => self.status().await?,
                Msg::UsageReq => self.usage(&who).await?,
                Msg::Reload => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let r = match self.shared.control.send(Control::Reload { done: tx }).await {
                        Ok(()) => rx
                            .await
                            .unwrap_or_else(|_| Err(Error::network("the server is shutting down"))),
                        Err(_) => Err(Error::network("the server is shutting down")),
                    };
                    match r {
                        Ok(()) => self.w.send_now(&Msg::Done).await?,
                        Err(e) => self.reply_error(&e).await?,
                    }
                }
                m @ (Msg::Share { .. } | Msg::ShareList | Msg::ShareRevoke { .. }) => {
                    match super::share::command(&self.shared, &who, self.peer, m).await {
                        Ok(replies) => {
                            for r in &replies {
                                self.w.send(r).await?;
                            }
                            self.w.flush().await?;
                        }
                        Err(e) => self.reply_error(&e).await?,
                    }
                }
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

    /// Reply DONE or ERROR to a simple command, with its audit line.
    async fn done_or_error(&mut self, event: &str, name: &str, r: Result<()>) -> Result<()> {
        match r {
            Ok(()) => {
                info!(event, peer = %self.peer, user = self.user(), name = %names::escape(name), outcome = "ok");
                self.w.send_now(&Msg::Done).await
            }
            Err(e) => {
                info!(event, peer = %self.peer, user = self.user(), name = %names::escape(name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }

    async fn remove(&mut self, name: String) -> Result<()> {
        let n = name.clone();
        let who = self.identity();
        let res = self
            .blocking(move |s| {
                if who.role < Role::Admin {
                    let owner = s.store.existing(&n)?.map(|(_, o)| o);
                    check_owner(&who, owner, &n, "rm")?;
                }
                let (size, owner) = s.store.remove(&n)?;
                s.ledger.removed(&owner, size);
                Ok(())
            })
            .await;
        match &res {
            Ok(()) => {
                info!(event = "rm", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = "ok")
            }
            Err(e) => {
                info!(event = "rm", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}")
            }
        }
        match res {
            Ok(()) => self.w.send_now(&Msg::Done).await,
            Err(e) => self.reply_error(&e).await,
        }
    }

    /// `upload_frame` for the upload of `name`: an upload cut off
    /// (connection lost, data timeout, shutdown) leaves its audit line.
    async fn next_upload_frame(&mut self, name: &str, received: u64) -> Result<UploadFrame> {
        let r = self.upload_frame().await;
        if let Err(e) = &r {
            info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(name), received, outcome = "aborted", "{e}");
        }
        r
    }

    /// The next frame of an upload. Anything but DATA, END or CANCEL,
    /// compressed DATA that was not negotiated, the data timeout, and the end
    /// of the shutdown grace period (the client is told) end the session.
    /// DATA frames that carry no bytes are no progress: they are dropped and
    /// the data deadline keeps running, so they cannot hold an upload open.
    async fn upload_frame(&mut self) -> Result<UploadFrame> {
        let mut abort = self.shared.abort.clone();
        let limit = self.shared.limits.data;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::select! {
                biased;
                _ = abort.wait_for(|a| *a) => None,
                m = self.r.expect_within(left, "upload data") => Some(m),
            };
            let Some(next) = next else {
                return self.aborted("upload").await.map(|()| UploadFrame::Cancel);
            };
            return match next? {
                Msg::Data {
                    encoding,
                    raw_len,
                    payload,
                } => {
                    if encoding != Encoding::Raw && !self.zstd {
                        return Err(Error::protocol(
                            "compressed DATA was not negotiated for this session",
                        ));
                    }
                    if raw_len == 0 {
                        continue;
                    }
                    Ok(UploadFrame::Data(transfer::Block {
                        encoding,
                        raw_len,
                        payload,
                    }))
                }
                Msg::End { sha256 } => Ok(UploadFrame::End(sha256)),
                Msg::Cancel => Ok(UploadFrame::Cancel),
                other => Err(Error::protocol(format!(
                    "unexpected {} during an upload",
                    other.name()
                ))),
            };
        }
    }

    /// Read and drop the DATA of an upload refused before it started (a
    /// pipelined PUT sends its data without waiting), up to END or CANCEL.
    async fn discard_upload(&mut self) -> Result<()> {
        while let UploadFrame::Data(_) = self.upload_frame().await? {}
        Ok(())
    }

    /// The one reply to an upload that reached END or CANCEL, with its audit line.
    async fn finish_put(
        &mut self,
        name: &str,
        size: u64,
        started: Instant,
        outcome: Result<(String, [u8; 32], u64)>,
        flush: bool,
    ) -> Result<()> {
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok((stored, digest, size)) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&stored), size, sha256 = %hex::encode(digest), seconds = secs, outcome = "ok");
                self.w
                    .send(&Msg::PutOk {
                        size,
                        sha256: digest,
                        name: stored,
                    })
                    .await?;
            }
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(name), size, outcome = e.kind.name(), "{e}");
                self.w
                    .send(&Msg::Error {
                        code: e.kind.wire_code(),
                        message: e.message.clone(),
                    })
                    .await?;
            }
        }
        if flush { self.w.flush().await } else { Ok(()) }
    }

    /// A refusal before the upload started: the one reply, and for a
    /// pipelined PUT the data that is already on its way is discarded.
    async fn refuse_put(&mut self, e: &Error, pipelined: bool) -> Result<()> {
        self.reply_error(e).await?;
        if pipelined {
            self.discard_upload().await?;
        }
        Ok(())
    }

    async fn put(&mut self, size: u64, flags: u32, name: String) -> Result<()> {
        let pipelined = flags & protocol::PUT_PIPELINED != 0;
        let stream = flags & protocol::PUT_STREAM != 0;
        if flags & !(protocol::PUT_OVERWRITE | protocol::PUT_PIPELINED | protocol::PUT_STREAM) != 0
        {
            let e = Error::protocol(format!("unknown PUT flags 0x{flags:08x}"));
            return self.refuse_put(&e, pipelined).await;
        }
        if stream && size != 0 {
            let e = Error::protocol("a PUT of unknown size (STREAM flag) must declare size 0");
            return self.refuse_put(&e, pipelined).await;
        }
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        // small files are gathered in memory and written in one step
        let small = !stream && size <= SMALL_UPLOAD;
        let n = name.clone();
        let who = self.identity();
        let (upload, mut reservation) = match self
            .blocking(move |s| {
                // space is reserved before a single data byte is accepted
                let reservation = commit::reserve(s, &who, &n, size, overwrite, stream)?;
                if small {
                    // the file itself is made at END, in one step
                    return Ok((None, reservation));
                }
                Ok((Some(s.store.begin_upload(&n)?), reservation))
            })
            .await
        {
            Ok(u) => u,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                return self.refuse_put(&e, pipelined).await;
            }
        };
        if !pipelined {
            self.w.send_now(&Msg::PutReady { offset: 0 }).await?;
        }
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let Some(upload) = upload else {
            return self.put_small(size, overwrite, name, reservation).await;
        };
        let writer_file = upload
            .file
            .try_clone()
            .map_err(|e| Error::io("duplicating upload file", &e))?;
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
        let end = loop {
            match self.next_upload_frame(&name, received).await? {
                UploadFrame::Data(block) => {
                    if failed.is_some() {
                        continue; // discarding the rest of a failed upload
                    }
                    let raw_len = block.raw_len;
                    received += u64::from(raw_len);
                    shared
                        .stats
                        .bytes_in
                        .fetch_add(u64::from(raw_len), std::sync::atomic::Ordering::Relaxed);
                    if !stream && received > size {
                        return Err(Error::protocol(format!(
                            "upload of {} sent more data than its declared size of {size} bytes",
                            names::quote(&name)
                        )));
                    }
                    if stream && received > reservation.held() {
                        // a whole step if it fits, else just what has arrived, so
                        // the upload stops only when its data really does not fit
                        let needed = received - reservation.held();
                        let free = self.shared.store.free_space();
                        let grown = reservation
                            .grow(protocol::STREAM_STEP.max(needed), free)
                            .or_else(|_| reservation.grow(needed, free));
                        if let Err(e) = grown {
                            // nothing more fits: stop writing, discard the rest
                            tx = None;
                            let e = e.context(format!(
                                "upload of {} stopped after {received} bytes",
                                names::quote(&name)
                            ));
                            info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), received, outcome = e.kind.name(), "{e}");
                            self.reply_error(&e).await?;
                            failed = Some(e);
                            continue;
                        }
                    }
                    let sent = match &tx {
                        Some(t) => t.send(block).await.is_ok(),
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
                        info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                        self.reply_error(&e).await?;
                        failed = Some(e);
                    }
                }
                UploadFrame::End(sha256) => break Some(sha256),
                UploadFrame::Cancel => break None,
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
        let outcome: Result<(String, [u8; 32], u64)> = async {
            let Some(claimed) = end else {
                return Err(Error::other(
                    "upload cancelled by the client; nothing was stored",
                ));
            };
            let (n, digest, _file) = match written {
                Some(r) => r??,
                None => return Err(Error::other("internal error: no upload writer")),
            };
            check_upload(&name, (!stream).then_some(size), n, &digest, &claimed)?;
            let owner = self.user().to_string();
            let stored = self
                .blocking(move |s| {
                    let (stored, replaced) = s.store.commit(upload, &digest, overwrite, &owner)?;
                    reservation.commit(n, replaced.map(|(sz, o)| (o, sz)));
                    Ok(stored)
                })
                .await?;
            Ok((stored, digest, n))
        }
        .await;
        self.finish_put(&name, size, started, outcome, true).await
    }

    /// The DATA of an upload of at most `SMALL_UPLOAD` bytes, gathered in
    /// memory up to END (with the digest sent) or CANCEL (`None`).
    async fn gather_small(
        &mut self,
        size: u64,
        name: &str,
    ) -> Result<(Vec<transfer::Block>, Option<[u8; 32]>)> {
        let mut blocks: Vec<transfer::Block> = Vec::new();
        let (mut raw, mut payload_bytes) = (0u64, 0u64);
        loop {
            match self.next_upload_frame(name, raw).await? {
                UploadFrame::Data(block) => {
                    raw += u64::from(block.raw_len);
                    payload_bytes += block.payload.len() as u64;
                    // compressed payloads are bounded too, not only their raw sizes
                    if raw > size || payload_bytes > 2 * SMALL_UPLOAD + 65536 {
                        return Err(Error::protocol(format!(
                            "upload of {} sent more data than its declared size of {size} bytes",
                            names::quote(name)
                        )));
                    }
                    self.shared.stats.bytes_in.fetch_add(
                        u64::from(block.raw_len),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    blocks.push(block);
                }
                UploadFrame::End(sha256) => return Ok((blocks, Some(sha256))),
                UploadFrame::Cancel => return Ok((blocks, None)),
            }
        }
    }

    /// An upload of at most `SMALL_UPLOAD` bytes that waited for PUT_READY:
    /// its blocks are gathered in memory, then decoded, hashed, written,
    /// checked and committed in one blocking step. Replies exactly as `put`
    /// does.
    async fn put_small(
        &mut self,
        size: u64,
        overwrite: bool,
        name: String,
        reservation: super::quota::Reservation,
    ) -> Result<()> {
        let started = Instant::now();
        let (blocks, end) = self.gather_small(size, &name).await?;
        let outcome = match end {
            None => Err(Error::other(
                "upload cancelled by the client; nothing was stored",
            )),
            Some(claimed) => {
                let (n, owner) = (name.clone(), self.user().to_string());
                self.blocking(move |s| {
                    let (up, digest, n_bytes) =
                        commit::write_blocks(s, &n, size, &blocks, &claimed)?;
                    let (stored, replaced) = s.store.commit(up, &digest, overwrite, &owner)?;
                    reservation.commit(n_bytes, replaced.map(|(sz, o)| (o, sz)));
                    Ok((stored, digest, n_bytes))
                })
                .await
            }
        };
        self.finish_put(&name, size, started, outcome, true).await
    }

    /// A small pipelined upload (PROTOCOL.md §4.4a): its data is gathered and
    /// handed to the session's committer, and the next command is read at
    /// once; the reply follows, in order, when the committer is done.
    async fn put_queued(
        &mut self,
        size: u64,
        flags: u32,
        name: String,
        who: Identity,
    ) -> Result<()> {
        let started = Instant::now();
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        // space is reserved before a data byte is accepted, as for any PUT;
        // without an old file to look at, that is no more than a statvfs
        let reserved = if overwrite {
            let (n, w) = (name.clone(), who.clone());
            self.blocking(move |s| commit::reserve(s, &w, &n, size, true, false))
                .await
        } else {
            commit::reserve(&self.shared, &who, &name, size, false, false)
        };
        let reservation = match reserved {
            Ok(r) => r,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                // the refusal is the reply to this PUT: those before it go first
                self.drain(Which::Puts).await?;
                return self.refuse_put(&e, true).await;
            }
        };
        if self.commits.is_none() {
            self.commits = Some(Committer::start(self.shared.clone())?);
        }
        let room = match self.commits.as_ref() {
            Some(c) => c.room(size).await?,
            None => return Err(Error::other("internal error: no upload committer")),
        };
        let in_flight = commit::InFlight::new(&self.shared);
        let (blocks, claimed) = self.gather_small(size, &name).await?;
        let job = commit::SmallPut {
            name,
            size,
            overwrite,
            owner: who.user,
            reservation,
            blocks,
            claimed,
            started,
            in_flight,
            room,
        };
        match self.commits.as_mut() {
            Some(c) => c.submit(job).await,
            None => Err(Error::other("internal error: no upload committer")),
        }
    }

    /// The next answer owed by one of the session's workers, in order.
    async fn next_answer(&mut self, which: Which) -> Option<Answer> {
        match which {
            Which::Puts => match self.commits.as_mut() {
                Some(c) => c.answers.next().await.map(Answer::Put),
                None => None,
            },
            Which::Gets => match self.fetches.as_mut() {
                Some(f) => f.answers.next().await.map(|f| Answer::Get(Box::new(f))),
                None => None,
            },
        }
    }

    /// The next answer owed by one of the session's workers, if it is ready.
    fn try_answer(&mut self, which: Which) -> Option<Answer> {
        match which {
            Which::Puts => self
                .commits
                .as_mut()
                .and_then(|c| c.answers.try_next())
                .map(Answer::Put),
            Which::Gets => self
                .fetches
                .as_mut()
                .and_then(|f| f.answers.try_next())
                .map(|f| Answer::Get(Box::new(f))),
        }
    }

    /// Send one answer (buffered; a large download is streamed).
    async fn answer(&mut self, a: Answer) -> Result<()> {
        match a {
            Answer::Put(c) => {
                self.finish_put(&c.name, c.size, c.started, c.outcome, false)
                    .await
            }
            Answer::Get(f) => self.reply_fetched(*f).await,
        }
    }

    /// Send `first` and every answer of its kind that is ready, then flush.
    async fn flush_answers(&mut self, first: Answer) -> Result<()> {
        let which = match first {
            Answer::Put(_) => Which::Puts,
            Answer::Get(_) => Which::Gets,
        };
        self.answer(first).await?;
        while let Some(a) = self.try_answer(which) {
            self.answer(a).await?;
        }
        self.w.flush().await
    }

    /// Wait for every answer one worker owes and send it: before any other
    /// reply, so replies stay in the order of the commands.
    async fn drain(&mut self, which: Which) -> Result<()> {
        let mut any = false;
        while let Some(a) = self.next_answer(which).await {
            self.answer(a).await?;
            any = true;
        }
        if any {
            self.w.flush().await?;
        }
        Ok(())
    }

    /// Every answer owed, uploads' and downloads'.
    async fn drain_all(&mut self) -> Result<()> {
        self.drain(Which::Puts).await?;
        self.drain(Which::Gets).await
    }

    /// A GET is queued for the session's reading thread (see `fetch`), and
    /// the next command read at once; the reply follows in order.
    async fn get(&mut self, offset: u64, compress: u8, name: String) -> Result<()> {
        if offset != 0 {
            // the answers to GETs queued before this one go first
            self.drain(Which::Gets).await?;
            return self
                .reply_error(&Error::usage(
                    "this server cannot resume downloads yet (offset must be 0)",
                ))
                .await;
        }
        let mode = if self.zstd {
            Mode::from_wire(compress).capped(self.shared.max_level)
        } else {
            Mode::Off
        };
        let policy =
            Policy::new(mode, self.shared.max_level).on_local_link(self.peer.ip().is_loopback());
        self.fetch(Fetch::File {
            name,
            policy: Box::new(policy),
            started: Instant::now(),
        })
        .await
    }

    /// Queue a read-only request for the session's reading thread.
    async fn fetch(&mut self, job: Fetch) -> Result<()> {
        if self.fetches.is_none() {
            self.fetches = Some(Fetcher::start(self.shared.clone())?);
        }
        // a client far ahead of its replies gets some before more is read
        while self
            .fetches
            .as_ref()
            .is_some_and(|f| f.answers.pending() >= fetch::AHEAD)
        {
            match self.next_answer(Which::Gets).await {
                Some(a) => self.answer(a).await?,
                None => break,
            }
        }
        match self.fetches.as_mut() {
            Some(f) => f.submit(job),
            None => Err(Error::other("internal error: no download reader")),
        }
    }

    /// Send one fetched reply (buffered; a large file is streamed).
    async fn reply_fetched(&mut self, f: Fetched) -> Result<()> {
        match f {
            Fetched::Ready {
                name,
                reply,
                outcome,
                started,
                _in_flight,
            } => {
                self.w.queue_raw(&reply).await?;
                self.shared
                    .stats
                    .bytes_out
                    .fetch_add(reply.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                match outcome {
                    Ok((size, sha256)) => {
                        info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, sha256 = %hex::encode(sha256), seconds = secs, outcome = "sent")
                    }
                    Err(e) => {
                        warn!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}")
                    }
                }
                Ok(())
            }
            Fetched::Large {
                name,
                file,
                info,
                policy,
            } => self.stream_file(name, file, info, policy).await,
            Fetched::Listed { reply } => self.w.queue_raw(&reply).await,
            Fetched::Failed { name, error } => {
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = error.kind.name(), "{error}");
                self.w
                    .send(&Msg::Error {
                        code: error.kind.wire_code(),
                        message: error.message.clone(),
                    })
                    .await
            }
        }
    }

    /// Stream a large file: GET_OK, its DATA as the reader produces it, END.
    async fn stream_file(
        &mut self,
        name: String,
        file: std::fs::File,
        info: super::store::FileInfo,
        policy: Policy,
    ) -> Result<()> {
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
        let mut rx =
            transfer::spawn_reader(file, info.size, names::quote(&name), pool.clone(), policy);
        let shared = self.shared.clone();
        let _transfer = Gauge::new(&shared.stats.transfers);
        let mut abort = self.shared.abort.clone();
        let outcome = loop {
            let next = tokio::select! {
                biased;
                _ = abort.wait_for(|a| *a) => None,
                m = rx.recv() => Some(m),
            };
            let Some(next) = next else {
                return self.aborted("download").await;
            };
            match next {
                Some(Outgoing::Frame(f)) => {
                    self.w.write_raw(&f).await?;
                    shared
                        .stats
                        .bytes_out
                        .fetch_add(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
                info!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), size = info.size, sha256 = %hex::encode(sha256), seconds = secs, outcome = "sent");
                self.w.send_now(&Msg::End { sha256 }).await
            }
            Err(e) => {
                warn!(event = "get", peer = %self.peer, user = self.user(), name = %names::escape(&name), outcome = e.kind.name(), "{e}");
                self.reply_error(&e).await
            }
        }
    }
}

/// How long an upload cut off at shutdown may go on arriving (and be
/// dropped) after its ERROR, so the client reads the ERROR, not a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// What the command loop woke up for.
enum Ahead {
    Answer(Answer),
    Command(std::result::Result<Result<Option<Msg>>, tokio::time::error::Elapsed>),
}

/// A reply a worker prepared for a queued command.
enum Answer {
    Put(Committed),
    Get(Box<Fetched>),
}

/// The session's workers: the committer of small uploads, the reader of
/// downloads and listings.
#[derive(Clone, Copy)]
enum Which {
    Puts,
    Gets,
}

/// Whether a PUT is a small pipelined upload, which the committer handles
/// (any other flags, and larger or streamed uploads, take the general path).
fn queued(size: u64, flags: u32) -> bool {
    let known = protocol::PUT_PIPELINED | protocol::PUT_OVERWRITE;
    flags & protocol::PUT_PIPELINED != 0 && flags & !known == 0 && size <= SMALL_UPLOAD
}

/// One frame of an upload's data.
enum UploadFrame {
    Data(transfer::Block),
    End([u8; 32]),
    Cancel,
}
