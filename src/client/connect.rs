//! Opening a session: TCP, the TLS handshake verified as the user's trust
//! says (with errors that say what went wrong), HELLO, AUTH.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Client, Options, Stream, split_host_port, unexpected};
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Msg, Role};
use crate::tls::{self, PinVerifier, Trust};

fn tls_error(
    e: std::io::Error,
    server: &str,
    trust: &Trust,
    pin: Option<&Arc<PinVerifier>>,
) -> Error {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return Error::network(format!(
            "TLS handshake with {server} failed: {}",
            crate::error::describe_io(&e)
        ));
    };
    match (inner, pin) {
        (rustls::Error::InvalidCertificate(_), Some(p)) if matches!(trust, Trust::Known { .. }) => {
            let file = match trust {
                Trust::Known { file, .. } => file.display().to_string(),
                _ => String::new(),
            };
            let seen = p.seen().unwrap_or_else(|| "nothing".into());
            Error::new(
                Kind::Tls,
                format!(
                    "WARNING: SERVER IDENTITY HAS CHANGED for {server}: {file} records certificate SHA-256 {} but the server presented {seen}. Someone may be intercepting the connection, or the server's certificate was replaced. Nothing was sent. If the change is expected, run: sft trust {server} --pin {seen} --replace",
                    p.expected()
                ),
            )
        }
        (rustls::Error::InvalidCertificate(_), Some(p)) => Error::new(
            Kind::Tls,
            format!(
                "server identity mismatch for {server}: expected certificate SHA-256 {}, but the server presented {}. The server's certificate changed or someone is intercepting the connection; if the change is expected, update --pin / SFT_PIN",
                p.expected(),
                p.seen().unwrap_or_else(|| "nothing".into())
            ),
        ),
        (rustls::Error::InvalidCertificate(c), None) => {
            let ca = match trust {
                Trust::Ca(p) => p.display().to_string(),
                _ => String::new(),
            };
            Error::new(
                Kind::Tls,
                format!(
                    "the certificate of {server} is not trusted by --ca {ca}: {}; check the CA file and that the certificate covers the name you connect to",
                    crate::tls::describe_certificate(c)
                ),
            )
        }
        (other, _) => Error::new(
            Kind::Tls,
            format!(
                "TLS handshake with {server} failed: {}; is it an sft server speaking TLS 1.3?",
                crate::tls::describe_rustls(other)
            ),
        ),
    }
}

/// Connect and complete the TLS handshake, verifying the server as `trust`
/// says; also returns the pin verifier (for the fingerprint seen).
async fn open_tls(
    server: &str,
    trust: &Trust,
    t: Duration,
) -> Result<(Stream, Option<Arc<PinVerifier>>)> {
    let (host, port) = split_host_port(server)?;
    let shown = format!("{}:{port}", names::escape(&host));
    let addrs: Vec<_> = tokio::time::timeout(t, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| Error::network(format!("resolving {shown} timed out")))?
        .map_err(|e| {
            Error::network(format!(
                "cannot resolve {shown}: {}",
                crate::error::describe_io(&e)
            ))
        })?
        .collect();
    let mut last = Error::network(format!("cannot resolve {shown}: no addresses"));
    let mut tcp = None;
    for a in addrs {
        match tokio::time::timeout(t, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => {
                last = Error::network(format!(
                    "cannot connect to {shown}: {}; is the server running?",
                    crate::error::describe_io(&e)
                ))
            }
            Err(_) => {
                last = Error::network(format!(
                    "connecting to {shown} timed out after {}s",
                    t.as_secs()
                ))
            }
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let (cfg, pin) = tls::client_config(trust)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| Error::usage(format!("invalid server name {:?}", names::escape(&host))))?;
    let sock = crate::net::Socket::buffered(tcp);
    match tokio::time::timeout(t, TlsConnector::from(cfg).connect(name, sock)).await {
        Ok(Ok(s)) => Ok((s, pin)),
        Ok(Err(e)) => Err(tls_error(e, &shown, trust, pin.as_ref())),
        Err(_) => Err(Error::network(format!(
            "TLS handshake with {shown} timed out after {}s",
            t.as_secs()
        ))),
    }
}

/// The SHA-256 fingerprint of a server's certificate (hex), learned from a
/// handshake that sends nothing else.
pub async fn fingerprint_of(server: &str, t: Duration) -> Result<String> {
    let trust = Trust::FirstUse(Arc::new(|_| Ok(())));
    let (mut tls, pin) = open_tls(server, &trust, t).await?;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncWriteExt::shutdown(&mut tls),
    )
    .await;
    pin.and_then(|p| p.seen())
        .ok_or_else(|| Error::other("the server presented no certificate"))
}

impl Client {
    /// Connect, verify the server, say HELLO and authenticate.
    pub async fn connect(opts: &Options) -> Result<Client> {
        Client::connect_with(opts, &[]).await
    }

    /// Connect as [`Client::connect`] does, and send `early` commands right
    /// after AUTH, in the same flight (PROTOCOL.md §4.1): their replies
    /// follow AUTH_OK, in order, for the caller to read. The server reads
    /// them only once the token is accepted; if it is not, the
    /// authentication error is what this returns, and they are never run.
    /// `early` must be small (the client writes it before it reads).
    pub async fn connect_with(opts: &Options, early: &[Msg]) -> Result<Client> {
        let t = opts.timeout;
        let (tls, pin) = open_tls(&opts.server, &opts.trust, t).await?;
        let local_link = tls
            .get_ref()
            .0
            .tcp()
            .peer_addr()
            .is_ok_and(|a| a.ip().is_loopback());

        if let Trust::FirstUse(decide) = &opts.trust {
            // decided before HELLO: nothing, least of all the token, goes to
            // a server the user has not accepted
            let seen = pin.as_ref().and_then(|p| p.seen()).unwrap_or_default();
            decide(&seen)?;
        }
        let (rd, wr) = tokio::io::split(tls);
        let mut w = FrameWriter::new(wr);
        // a server that stops reading cannot hang the client either
        w.set_deadline(t.max(std::time::Duration::from_secs(30)));
        let mut c = Client {
            r: FrameReader::new(rd),
            w,
            timeout: t,
            user: String::new(),
            role: Role::Read,
            zstd: false,
            meta: false,
            preserve: true,
            compress: opts.compress,
            limit_rate: opts.limit_rate,
            local_link,
            resume: opts.resume,
            streams_ok: false,
            origin: opts.clone(),
            seen_pin: pin
                .as_ref()
                .and_then(|p| p.seen())
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok()),
            rtt: Duration::ZERO,
            bye_after_puts: false,
            bye_sent: false,
        };
        let hello_at = std::time::Instant::now();
        c.w.send(&Msg::Hello {
            min_version: protocol::VERSION,
            max_version: protocol::VERSION,
            features: protocol::FEATURE_ZSTD | protocol::FEATURE_META | protocol::FEATURE_STREAMS,
        })
        .await?;
        c.w.send(&Msg::Auth {
            secret: opts.token.as_bytes().to_vec(),
        })
        .await?;
        for m in early {
            c.w.send(m).await?;
        }
        c.w.flush().await?;
        match c.r.expect_within(t, "WELCOME").await? {
            Msg::Welcome {
                version, features, ..
            } if version == protocol::VERSION => {
                c.zstd = features & protocol::FEATURE_ZSTD != 0;
                c.meta = features & protocol::FEATURE_META != 0;
                c.streams_ok = features & protocol::FEATURE_STREAMS != 0;
                c.rtt = hello_at.elapsed();
            }
            Msg::Welcome { version, .. } => {
                return Err(Error::protocol(format!(
                    "the server chose protocol version {version}, which this client does not speak"
                )));
            }
            other => return Err(unexpected(&other, "WELCOME")),
        }
        match c.r.expect_within(t, "the authentication reply").await? {
            Msg::AuthOk { role, user } => {
                c.user = user;
                c.role = role;
            }
            other => return Err(unexpected(&other, "the authentication reply")),
        }
        Ok(c)
    }
}

/// The two halves of a connection.
pub(super) type Halves = (
    FrameReader<tokio::io::ReadHalf<Stream>>,
    FrameWriter<tokio::io::WriteHalf<Stream>>,
);

/// A further connection for one transfer of a session (PROTOCOL.md §4.10):
/// the server must present the certificate the session's connection met
/// (`pin`, when known), and the connection joins with the session's
/// one-time `ticket` instead of the token.
pub(super) async fn open_joined(
    opts: &Options,
    pin: Option<[u8; 32]>,
    ticket: [u8; 32],
) -> Result<Halves> {
    let t = opts.timeout;
    let trust = match pin {
        Some(p) => Trust::Pin(p),
        None => opts.trust.clone(),
    };
    let (tls, _) = open_tls(&opts.server, &trust, t).await?;
    let (rd, wr) = tokio::io::split(tls);
    let mut r = FrameReader::new(rd);
    let mut w = FrameWriter::new(wr);
    w.set_deadline(t.max(Duration::from_secs(30)));
    w.send(&Msg::Hello {
        min_version: protocol::VERSION,
        max_version: protocol::VERSION,
        features: protocol::FEATURE_ZSTD | protocol::FEATURE_META | protocol::FEATURE_STREAMS,
    })
    .await?;
    w.send_now(&Msg::Join { ticket }).await?;
    match r.expect_within(t, "WELCOME").await? {
        Msg::Welcome { version, .. } if version == protocol::VERSION => {}
        other => return Err(unexpected(&other, "WELCOME")),
    }
    match r.expect_within(t, "the reply to JOIN").await? {
        Msg::AuthOk { .. } => Ok((r, w)),
        other => Err(unexpected(&other, "the reply to JOIN")),
    }
}
