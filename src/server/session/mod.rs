//! One authenticated session: read a command, check the role it needs
//! (`policy`), dispatch it to its file, and keep replies in the order of the
//! commands (`order`). Admission (TLS, HELLO, AUTH) is `handshake`'s job.
//! A request that cannot be served gets an ERROR reply and the session goes
//! on; a protocol violation gets an ERROR and the connection is closed.
//!
//! - `put`: uploads, streamed (large, or of unknown size), resumable;
//! - `small`: small uploads, gathered and queued for the committer;
//! - `dispatch`: one command: where an ATTRS belongs, the role it needs,
//!   the order of its reply;
//! - `clone`: CLONE, an upload from content the server already holds;
//! - `get`: downloads and listings (queued for the reading thread);
//! - `fs`: REMOVE, MKDIR, RMDIR, STAT;
//! - `admin`: USAGE, STATUS, SHUTDOWN, RELOAD;
//! - `order`: answers of queued work, in command order;
//! - `ranged`: tickets, ranged uploads and GET_RANGE (several connections
//!   for one transfer); `joined`: a connection that joined with a ticket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::auth::Identity;
use super::commit::{self, Committed, Committer, SMALL_UPLOAD, Stored};
use super::fetch::{self, Fetch, Fetched, Fetcher};
use super::gate::Pass;
use super::policy::check_owner;
use super::verify::check_upload;
use super::{Control, Gauge, Shared, handshake, partial};
use crate::compress::{Link, Mode, Policy};
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Attrs, Encoding, Msg, Role};
use crate::transfer::{self, Outgoing};

use super::handshake::{Admitted, Stream};

mod admin;
mod clone;
mod dispatch;
mod fs;
mod get;
mod joined;
mod order;
mod put;
mod ranged;
mod small;

use dispatch::Flow;
use order::{Ahead, Answer, Which};
use put::queued;

struct Session {
    r: FrameReader<ReadHalf<Stream>>,
    w: FrameWriter<WriteHalf<Stream>>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    who: Option<Identity>,
    /// zstd DATA blocks were negotiated in HELLO/WELCOME.
    zstd: bool,
    /// File metadata (ATTRS, ENTRY's mode) was negotiated.
    meta: bool,
    /// Several connections per transfer (FEATURE_STREAMS) were negotiated.
    streams: bool,
    /// The link to the client (for `auto` compression of downloads).
    link: Link,
    /// An ATTRS waiting for the PUT that must follow it.
    attrs: Option<Attrs>,
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
        Some(handshake::Admission::Sft(a)) => *a,
        Some(handshake::Admission::Web { tls, h2, pass }) => {
            let counted = shared.clone();
            let _connection = Gauge::new(&counted.stats.connections);
            return super::web::serve(*tls, h2, peer, shared, pass).await;
        }
        None => return,
    };
    let Admitted {
        mut r,
        w,
        who,
        zstd,
        meta,
        streams,
        joined,
        permit,
        link,
    } = admitted;
    // DATA buffers come from, and go back to, the pool all sessions share
    r.set_pool(shared.pool.clone());
    let counted = shared.clone();
    let _connection = Gauge::new(&counted.stats.connections);
    let mut s = Session {
        r,
        w,
        shared,
        peer,
        who: Some(who),
        zstd,
        meta,
        streams,
        link,
        attrs: None,
        commits: None,
        fetches: None,
    };
    let served = match joined {
        Some(bound) => s.joined(bound).await,
        None => s.commands().await,
    };
    match served {
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
            if let Flow::End = self.dispatch(msg).await? {
                return Ok(());
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
}

/// How long an upload cut off at shutdown may go on arriving (and be
/// dropped) after its ERROR, so the client reads the ERROR, not a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
