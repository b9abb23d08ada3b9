//! The first seconds of a connection: TLS handshake, HELLO/WELCOME and AUTH,
//! under the budget for unauthenticated connections (see [`super::gate`]),
//! short deadlines and handshake-sized frames; then a session slot, or
//! "server busy".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use super::Shared;
use super::auth::Identity;
use super::gate::Pass;
use crate::compress::Link;
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind};
use crate::net::{Socket, with_timeout};
use crate::protocol::{self, Msg};

pub type Stream = TlsStream<Socket>;

/// A connection that authenticated and holds a session slot.
pub struct Admitted {
    pub r: FrameReader<ReadHalf<Stream>>,
    pub w: FrameWriter<WriteHalf<Stream>>,
    pub who: Identity,
    /// zstd DATA blocks were negotiated in HELLO/WELCOME.
    pub zstd: bool,
    /// File metadata (ATTRS, ENTRY's mode) was negotiated.
    pub meta: bool,
    /// Several connections per transfer (FEATURE_STREAMS) were negotiated.
    pub streams: bool,
    /// The connection joined another session's transfer with a ticket
    /// (JOIN instead of AUTH): what it may do.
    pub joined: Option<super::tickets::Bound>,
    /// The session slot (`--max-connections`), released when dropped.
    pub permit: OwnedSemaphorePermit,
    /// The link to the client, as `auto` compression of downloads needs it:
    /// loopback, or how long the TLS handshake took (one round trip, as the
    /// client's Finished answers the server's flight).
    pub link: Link,
}

/// What a connection became after its TLS handshake.
pub enum Admission {
    /// ALPN `sft/1`: an authenticated sft session.
    Sft(Box<Admitted>),
    /// ALPN `h2` (true) or `http/1.1`: HTTPS, still in the unauthenticated
    /// budget until its first request (see `super::web`).
    Web {
        tls: Box<Stream>,
        h2: bool,
        pass: Pass,
    },
}

/// How the unauthenticated part of a connection ended, when not admitted.
enum Refused {
    /// Nothing more to say (handshake failed, peer left, wrong token answered).
    Quiet,
    /// Tell the peer, then close.
    Tell(Error),
    /// A wrong token: already logged; tell the peer, then close.
    Denied(Error),
}

/// Take a connection from TCP to an authenticated session (or, by ALPN, to
/// HTTPS), or end it. Dropped at once when the gate needs its place or the
/// server stops.
pub async fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: &Arc<Shared>,
    mut pass: Pass,
) -> Option<Admission> {
    info!(event = "connection", %peer, "connection");
    let mut stop = shared.stop.clone();
    let sock = Socket::new(tcp);
    let grow = sock.grow_handle();
    let limits = &shared.limits;
    let started = Instant::now();
    let tls = tokio::select! {
        r = with_timeout(
            async { acceptor.accept(sock).await.map_err(|e| Error::io("TLS handshake", &e)) },
            "TLS handshake",
            limits.handshake,
        ) => match r {
            Ok(s) => s,
            Err(e) => {
                if let Some(held) = shared.quiet_handshakes.ready() {
                    info!(%peer, held_back = held, "connection ended before authentication: {e}");
                }
                return None;
            }
        },
        _ = &mut pass.evicted => return None,
        _ = stop.wait_for(|s| *s) => return None,
    };
    let link = Link::of(peer.ip().is_loopback(), Some(started.elapsed()));
    // the server offers h2 and http/1.1 only with --web on, so rustls
    // never selects them otherwise
    match tls.get_ref().1.alpn_protocol() {
        Some(protocol::ALPN) => {}
        Some(p @ (crate::tls::ALPN_H2 | crate::tls::ALPN_HTTP1)) => {
            return Some(Admission::Web {
                h2: p == crate::tls::ALPN_H2,
                tls: Box::new(tls),
                pass,
            });
        }
        // no ALPN at all: every sft client offers sft/1, so this is an HTTP
        // client that predates ALPN (wget 1.21 sends none): HTTP/1.1
        None if shared.web => {
            return Some(Admission::Web {
                h2: false,
                tls: Box::new(tls),
                pass,
            });
        }
        _ => {
            if shared.quiet_handshakes.ready().is_some() {
                info!(%peer, "refused: the client did not offer ALPN sft/1 (nor h2 or http/1.1)");
            }
            return None;
        }
    }
    let (rd, wr) = tokio::io::split(tls);
    let mut r = FrameReader::new(rd);
    let mut w = FrameWriter::new(wr);
    r.set_limit(protocol::MAX_PREAUTH_BODY);
    w.set_deadline(limits.auth);
    let steps = hello_and_auth(&mut r, &mut w, shared, peer);
    let outcome = tokio::select! {
        o = steps => o,
        _ = &mut pass.evicted => return None,
        _ = stop.wait_for(|s| *s) => Err(Refused::Tell(Error::network("server is shutting down; try again later"))),
    };
    let Settled {
        who,
        zstd,
        meta,
        streams,
        joined,
    } = match outcome {
        Ok(v) => v,
        Err(Refused::Quiet) => return None,
        Err(Refused::Denied(e)) => {
            tell(&mut w, &e).await;
            return None;
        }
        Err(Refused::Tell(e)) => {
            if let Some(held) = shared.quiet_handshakes.ready() {
                info!(%peer, held_back = held, "connection ended before authentication: {e}");
            }
            tell(&mut w, &e).await;
            return None;
        }
    };
    if !pass.promote() {
        return None;
    }
    let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
        let max = limits.max_connections;
        if let Some(held) = shared.busy_log.ready() {
            warn!(event = "refused", %peer, user = %who.user, held_back = held, "refused: server busy ({max} sessions)");
        }
        let e = Error::network(format!(
            "server busy: all {max} sessions are in use; try again later"
        ));
        tell(&mut w, &e).await;
        return None;
    };
    if joined.is_some() {
        info!(event = "join", %peer, user = %who.user, outcome = "ok", "joined a session with a ticket");
    } else {
        info!(event = "auth", %peer, user = %who.user, role = who.role.name(), outcome = "ok", "authenticated");
    }
    let ok = Msg::AuthOk {
        role: who.role,
        user: who.user.clone(),
    };
    if let Err(e) = w.send_now(&ok).await {
        info!(%peer, user = %who.user, "connection ended: {e}");
        return None;
    }
    // a session: full-sized frames, a read buffer, and the data deadline
    r.set_limit(usize::MAX);
    grow.store(true, Ordering::Relaxed);
    w.set_deadline(limits.data);
    Some(Admission::Sft(Box::new(Admitted {
        r,
        w,
        who,
        zstd,
        meta,
        streams,
        joined,
        permit,
        link,
    })))
}

async fn tell(w: &mut FrameWriter<WriteHalf<Stream>>, e: &Error) {
    let _ = w
        .send_now(&Msg::Error {
            code: e.kind.wire_code(),
            message: e.message.clone(),
        })
        .await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), w.shutdown()).await;
}

/// What HELLO and AUTH (or JOIN) settled.
struct Settled {
    who: Identity,
    /// zstd DATA blocks, file metadata, several connections per transfer:
    /// offered in HELLO and agreed in WELCOME.
    zstd: bool,
    meta: bool,
    streams: bool,
    /// For a connection that joined with a ticket: what it is bound to.
    joined: Option<super::tickets::Bound>,
}

/// HELLO → WELCOME, AUTH (or JOIN) → checked, all within `--auth-timeout`.
async fn hello_and_auth(
    r: &mut FrameReader<ReadHalf<Stream>>,
    w: &mut FrameWriter<WriteHalf<Stream>>,
    shared: &Shared,
    peer: SocketAddr,
) -> std::result::Result<Settled, Refused> {
    let limit = shared.limits.auth;
    let deadline = Instant::now() + limit;
    let first = r
        .expect_within(limit, "HELLO")
        .await
        .map_err(Refused::Tell)?;
    let (zstd, meta, streams) = match first {
        Msg::Hello {
            min_version,
            max_version,
            features,
        } => {
            if protocol::VERSION < min_version || protocol::VERSION > max_version {
                return Err(Refused::Tell(Error::protocol(format!(
                    "protocol version mismatch: this server speaks version {}, the client {min_version}..{max_version}; upgrade the older side",
                    protocol::VERSION
                ))));
            }
            (
                features & protocol::FEATURE_ZSTD != 0 && shared.compression,
                features & protocol::FEATURE_META != 0,
                features & protocol::FEATURE_STREAMS != 0,
            )
        }
        other => {
            return Err(Refused::Tell(Error::protocol(format!(
                "expected HELLO, got {}",
                other.name()
            ))));
        }
    };
    let welcome = Msg::Welcome {
        version: protocol::VERSION,
        features: if zstd { protocol::FEATURE_ZSTD } else { 0 }
            | if meta { protocol::FEATURE_META } else { 0 }
            | if streams {
                protocol::FEATURE_STREAMS
            } else {
                0
            },
        max_block: protocol::MAX_BLOCK as u32,
    };
    w.send_now(&welcome).await.map_err(|_| Refused::Quiet)?;
    let left = deadline.saturating_duration_since(Instant::now());
    match r.expect_within(left, "AUTH").await {
        Ok(Msg::Auth { secret }) => match shared.accounts.check(&secret) {
            Some(who) => Ok(Settled {
                who,
                zstd,
                meta,
                streams,
                joined: None,
            }),
            None => {
                warn!(event = "auth", %peer, outcome = "denied", "authentication failed: token not accepted");
                Err(Refused::Denied(Error::new(
                    Kind::Auth,
                    "authentication failed: the token was not accepted; check --token, --token-file or SFT_TOKEN",
                )))
            }
        },
        Ok(Msg::Join { ticket }) if streams => match shared.tickets.redeem(&ticket) {
            Some(g) => Ok(Settled {
                who: g.who,
                zstd,
                meta,
                streams,
                joined: Some(g.bound),
            }),
            None => {
                if let Some(held) = shared.join_log.ready() {
                    warn!(event = "join", %peer, outcome = "denied", held_back = held, "refused a JOIN: the ticket is unknown, used or expired");
                }
                Err(Refused::Denied(Error::new(
                    Kind::Auth,
                    "authentication failed: the join ticket is unknown, used or expired; start the transfer again",
                )))
            }
        },
        Ok(other) => Err(Refused::Tell(Error::protocol(format!(
            "expected AUTH, got {}",
            other.name()
        )))),
        Err(e) => Err(Refused::Tell(e)),
    }
}
