//! The client: one TLS connection carrying a whole session, with typed
//! methods for each command. Everything a server sends is treated as hostile
//! input: names are validated, sizes are enforced, text is escaped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub mod known;
pub mod moving;
pub mod pipeline;

use crate::compress::Mode;
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Entry, Msg, Role};
use crate::tls::{self, PinVerifier, Trust};

/// The default port of `sft serve`.
pub const DEFAULT_PORT: u16 = 7373;

/// How to reach and trust a server.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: String,
    pub trust: Trust,
    pub token: String,
    /// Deadline for connecting, the handshake and each reply.
    pub timeout: Duration,
    /// Compression for uploads, and asked of the server for downloads.
    pub compress: Mode,
    /// Most bytes per second to move (file bytes), if limited.
    pub limit_rate: Option<u64>,
    /// Resume interrupted transfers (after checking the part already moved).
    pub resume: bool,
    /// Reconnect and resume this many times after a lost connection.
    pub retries: u32,
}

/// The raw length a DATA frame (header included) carries.
fn frame_raw_len(f: &[u8]) -> u64 {
    f.get(6..10)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u64::from(u32::from_be_bytes(b)))
}

/// Keeps a transfer at or below a rate by sleeping between frames.
struct Pacer {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    async fn pace(&mut self, n: u64) {
        let Some(rate) = self.rate else { return };
        self.bytes += n;
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

type Stream = TlsStream<crate::net::Socket>;

pub struct Client {
    r: FrameReader<ReadHalf<Stream>>,
    w: FrameWriter<WriteHalf<Stream>>,
    timeout: Duration,
    pub user: String,
    pub role: Role,
    /// Whether the server agreed to zstd DATA blocks.
    pub zstd: bool,
    /// Whether the server agreed to file metadata (ATTRS, ENTRY's mode).
    pub meta: bool,
    /// Send each uploaded file's mode and mtime, and apply those of each
    /// downloaded file (when `meta`); `--no-preserve` clears it.
    pub preserve: bool,
    compress: Mode,
    limit_rate: Option<u64>,
    /// The server is on this machine (loopback): `auto` starts raw.
    local_link: bool,
    /// Resume interrupted transfers (`--no-resume` turns it off).
    resume: bool,
}

/// The result of an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Bytes of DATA frames sent (what crossed the wire for the file).
    pub wire: u64,
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Bytes the server already held from an interrupted attempt (not sent again).
    pub resumed: u64,
    pub seconds: f64,
}

/// The result of a download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Bytes of DATA frames received.
    pub wire: u64,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Bytes already in the local `.part` file from an interrupted attempt.
    pub resumed: u64,
    pub seconds: f64,
}

/// Split "host:port", "[v6]:port" or "host" (default port).
pub fn split_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::usage(format!(
            "invalid server address {:?}: expected HOST:PORT, e.g. files.example.com:{DEFAULT_PORT}",
            names::escape(s)
        ))
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        Some(_) => Ok((s.to_string(), DEFAULT_PORT)), // a bare IPv6 address
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

fn server_error(code: u16, message: &str) -> Error {
    Error::new(Kind::from_wire(code), names::escape(message))
}

fn unexpected(m: &Msg, waiting_for: &str) -> Error {
    match m {
        Msg::Error { code, message } => server_error(*code, message),
        other => Error::protocol(format!(
            "the server sent {} while the client waited for {waiting_for}",
            other.name()
        )),
    }
}

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
        };
        c.w.send(&Msg::Hello {
            min_version: protocol::VERSION,
            max_version: protocol::VERSION,
            features: protocol::FEATURE_ZSTD | protocol::FEATURE_META,
        })
        .await?;
        c.w.send_now(&Msg::Auth {
            secret: opts.token.as_bytes().to_vec(),
        })
        .await?;
        match c.r.expect_within(t, "WELCOME").await? {
            Msg::Welcome {
                version, features, ..
            } if version == protocol::VERSION => {
                c.zstd = features & protocol::FEATURE_ZSTD != 0;
                c.meta = features & protocol::FEATURE_META != 0;
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

    /// Whether the server has ended this session while it sat idle between
    /// commands (idle timeout, shutdown): `Some(its reason)`. Never waits.
    pub async fn ended(&mut self) -> Option<String> {
        // read_frame is cancel-safe: a zero deadline only looks at what
        // has already arrived
        match tokio::time::timeout(Duration::ZERO, self.r.read_frame()).await {
            Err(_) => None,
            Ok(Ok(None)) => Some("the server closed the session".into()),
            Ok(Ok(Some(Msg::Error { message, .. }))) => Some(message),
            Ok(Ok(Some(other))) => {
                Some(format!("the server sent {} between commands", other.name()))
            }
            Ok(Err(e)) => Some(e.message),
        }
    }

    /// End the session politely (BYE, then TLS close_notify).
    pub async fn bye(&mut self) -> Result<()> {
        self.w.send_now(&Msg::Bye).await?;
        match self.r.expect_within(self.timeout, "BYE").await? {
            Msg::Bye => {}
            other => return Err(unexpected(&other, "BYE")),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.w.shutdown()).await;
        Ok(())
    }

    /// Ask the server to shut down (admin), giving transfers in flight
    /// `grace` (the server's default if None).
    pub async fn shutdown(&mut self, grace: Option<Duration>) -> Result<()> {
        let grace_ms = grace.map_or(u64::MAX, |g| g.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.w.send_now(&Msg::Shutdown { grace_ms }).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to SHUTDOWN")
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, "the reply to SHUTDOWN")),
        }
    }

    /// The server's counters (admin).
    pub async fn status(&mut self) -> Result<protocol::Status> {
        self.w.send_now(&Msg::StatusReq).await?;
        match self
            .r
            .expect_within(self.timeout * 4, "the reply to STATUS")
            .await?
        {
            Msg::StatusOk(st) => Ok(st),
            other => Err(unexpected(&other, "the reply to STATUS")),
        }
    }

    /// Storage accounting: own usage, or everyone's for an admin.
    pub async fn usage(&mut self) -> Result<protocol::Usage> {
        self.w.send_now(&Msg::UsageReq).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to USAGE")
            .await?
        {
            Msg::UsageOk(u) => Ok(u),
            other => Err(unexpected(&other, "the reply to USAGE")),
        }
    }

    /// Make a share link for a file or directory; `expires`/`downloads`
    /// None for no limit. The reply carries the link's token.
    pub async fn share(
        &mut self,
        name: &str,
        expires: Option<Duration>,
        downloads: Option<u64>,
    ) -> Result<protocol::ShareInfo> {
        let name = name.trim_end_matches('/');
        names::validate(name)?;
        let what = "the reply to SHARE";
        self.w
            .send_now(&Msg::Share {
                expires_s: expires.map_or(u64::MAX, |d| d.as_secs().max(1)),
                downloads: downloads.unwrap_or(u64::MAX),
                name: name.to_string(),
            })
            .await?;
        match self.r.expect_within(self.timeout * 4, what).await? {
            Msg::ShareOk(s) => Ok(s),
            other => Err(unexpected(&other, what)),
        }
    }

    /// The caller's live share links (an admin's: everyone's).
    pub async fn share_list(&mut self) -> Result<Vec<protocol::ShareInfo>> {
        self.w.send_now(&Msg::ShareList).await?;
        let mut out = Vec::new();
        loop {
            match self
                .r
                .expect_within(self.timeout, "the share links")
                .await?
            {
                Msg::ShareEntry(s) => out.push(s),
                Msg::ListEnd => return Ok(out),
                other => return Err(unexpected(&other, "the share links")),
            }
        }
    }

    /// Revoke a share link by id.
    pub async fn share_revoke(&mut self, id: &str) -> Result<()> {
        self.simple(
            Msg::ShareRevoke { id: id.to_string() },
            "the reply to SHARE_REVOKE",
        )
        .await
    }

    /// Make the server reload its certificate and users file (admin).
    pub async fn reload(&mut self) -> Result<()> {
        self.w.send_now(&Msg::Reload).await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to RELOAD")
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, "the reply to RELOAD")),
        }
    }

    /// List a directory ("" for the root).
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        if !path.is_empty() {
            names::validate(path)?;
        }
        self.w
            .send_now(&Msg::List {
                path: path.to_string(),
            })
            .await?;
        let mut out = Vec::new();
        loop {
            match self.r.expect_within(self.timeout, "the listing").await? {
                Msg::Entry(e) => out.push(e),
                Msg::ListEnd => return Ok(out),
                other => return Err(unexpected(&other, "the listing")),
            }
        }
    }

    /// The listings of several directories, requested all at once (one
    /// round trip for the lot); one result per directory, in order.
    pub async fn list_many(&mut self, paths: &[String]) -> Result<Vec<Result<Vec<Entry>>>> {
        for p in paths {
            if !p.is_empty() {
                names::validate(p)?;
            }
        }
        let (r, w, timeout) = (&mut self.r, &mut self.w, self.timeout);
        let sender = async {
            for p in paths {
                w.send(&Msg::List { path: p.clone() }).await?;
            }
            w.flush().await
        };
        let receiver = async {
            let mut all = Vec::with_capacity(paths.len());
            for _ in paths {
                let mut out = Vec::new();
                let one = loop {
                    match r.expect_within(timeout, "the listing").await? {
                        Msg::Entry(e) => out.push(e),
                        Msg::ListEnd => break Ok(out),
                        Msg::Error { code, message } => break Err(server_error(code, &message)),
                        other => return Err(unexpected(&other, "the listing")),
                    }
                };
                all.push(one);
            }
            Ok(all)
        };
        let ((), all) = tokio::try_join!(sender, receiver)?;
        Ok(all)
    }

    /// Create a remote directory (and its parents).
    pub async fn mkdir(&mut self, name: &str) -> Result<()> {
        names::validate(name)?;
        self.simple(
            Msg::Mkdir {
                name: name.to_string(),
            },
            "the reply to MKDIR",
        )
        .await
    }

    /// Remove an empty remote directory.
    pub async fn rmdir(&mut self, name: &str) -> Result<()> {
        names::validate(name)?;
        self.simple(
            Msg::Rmdir {
                name: name.to_string(),
            },
            "the reply to RMDIR",
        )
        .await
    }

    /// One remote entry (size, time, SHA-256, owner) without downloading it.
    pub async fn stat(&mut self, name: &str) -> Result<Entry> {
        names::validate(name)?;
        self.w
            .send_now(&Msg::Stat {
                name: name.to_string(),
            })
            .await?;
        match self
            .r
            .expect_within(self.timeout * 4, "the reply to STAT")
            .await?
        {
            Msg::Entry(e) => Ok(e),
            other => Err(unexpected(&other, "the reply to STAT")),
        }
    }

    /// Several commands answered by DONE or ERROR (REMOVE, RMDIR, MKDIR),
    /// sent all at once and answered in order: one round trip for the lot.
    /// The server carries them out in order, each as if sent alone.
    pub async fn simple_many(&mut self, msgs: &[Msg], what: &str) -> Result<Vec<Result<()>>> {
        let (r, w, timeout) = (&mut self.r, &mut self.w, self.timeout);
        let sender = async {
            for m in msgs {
                w.send(m).await?;
            }
            w.flush().await
        };
        let receiver = async {
            let mut all = Vec::with_capacity(msgs.len());
            for _ in msgs {
                all.push(match r.expect_within(timeout, what).await? {
                    Msg::Done => Ok(()),
                    Msg::Error { code, message } => Err(server_error(code, &message)),
                    other => return Err(unexpected(&other, what)),
                });
            }
            Ok(all)
        };
        let ((), all) = tokio::try_join!(sender, receiver)?;
        Ok(all)
    }

    /// Ask the server to store each file from content it already holds for
    /// this user under another name (CLONE, PROTOCOL.md §4.4c), all sent at
    /// once: one round trip for the lot. One result per file, in order:
    /// `Ok(Some(_))` stored (no data sent), `Ok(None)` the server holds no
    /// such content (upload it), `Err` refused as a PUT would be.
    pub async fn clone_many(
        &mut self,
        items: &[pipeline::CloneJob],
        overwrite: bool,
    ) -> Result<Vec<Result<Option<Uploaded>>>> {
        for it in items {
            names::validate(&it.remote)?;
        }
        let flags = if overwrite {
            protocol::PUT_OVERWRITE
        } else {
            0
        };
        let started = Instant::now();
        let what = "the reply to CLONE";
        // the server copies and hashes the file before it answers
        let (r, w, timeout) = (&mut self.r, &mut self.w, self.timeout * 4);
        let send_attrs = self.meta && self.preserve;
        let sender = async {
            for it in items {
                if let (true, Some(a)) = (send_attrs, it.attrs) {
                    w.send(&Msg::Attrs {
                        mode: a.mode,
                        mtime_ns: a.mtime_ns,
                    })
                    .await?;
                }
                w.send(&Msg::Clone {
                    size: it.size,
                    flags,
                    sha256: it.sha256,
                    name: it.remote.clone(),
                })
                .await?;
            }
            w.flush().await
        };
        let receiver = async {
            let mut all = Vec::with_capacity(items.len());
            for it in items {
                all.push(match r.expect_within(timeout, what).await? {
                    Msg::PutOk { size, sha256, name } => match pipeline::acknowledged(
                        size,
                        &sha256,
                        name,
                        it.size,
                        pipeline::Sent {
                            sha256: it.sha256,
                            wire: 0,
                            resumed: 0,
                        },
                        started,
                    ) {
                        // a badly named reply breaks the session
                        Err(e) if e.kind == Kind::Protocol => return Err(e),
                        r => r.map(Some),
                    },
                    Msg::Error { code, .. } if Kind::from_wire(code) == Kind::NotFound => Ok(None),
                    Msg::Error { code, message } => Err(server_error(code, &message)),
                    other => return Err(unexpected(&other, what)),
                });
            }
            Ok(all)
        };
        let ((), all) = tokio::try_join!(sender, receiver)?;
        Ok(all)
    }

    async fn simple(&mut self, m: Msg, what: &str) -> Result<()> {
        self.w.send_now(&m).await?;
        match self.r.expect_within(self.timeout, what).await? {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, what)),
        }
    }

    /// Remove a remote file.
    pub async fn remove(&mut self, name: &str) -> Result<()> {
        names::validate(name)?;
        self.w
            .send_now(&Msg::Remove {
                name: name.to_string(),
            })
            .await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to REMOVE")
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(unexpected(&other, "the reply to REMOVE")),
        }
    }

    /// Upload a local file as `remote`. The server may store it under another
    /// name ("name (1).ext"); the returned name is the one it chose.
    pub async fn put(&mut self, local: &Path, remote: &str, overwrite: bool) -> Result<Uploaded> {
        let jobs = [pipeline::PutJob {
            local: local.to_path_buf(),
            remote: remote.to_string(),
        }];
        let mut out = None;
        self.put_many(
            &jobs,
            overwrite,
            &crate::progress::Progress::off(),
            |_, r| {
                out = Some(r);
                Ok(())
            },
        )
        .await?;
        out.unwrap_or_else(|| Err(Error::other("internal error: no upload result")))
    }

    /// Download `remote` to `dest`. The data goes to a temporary `.part` file
    /// beside `dest` and is renamed into place only after its SHA-256 matches
    /// what the server sent, what it recorded at upload time, and `expect`.
    /// An existing file is never replaced unless `force`: the download is
    /// saved as "name (1).ext" instead.
    pub async fn get(
        &mut self,
        remote: &str,
        dest: &Path,
        force: bool,
        expect: Option<[u8; 32]>,
    ) -> Result<Downloaded> {
        let jobs = [pipeline::GetJob {
            remote: remote.to_string(),
            dest: pipeline::Dest::Path(dest.to_path_buf()),
            expect,
        }];
        let mut out = None;
        self.get_many(&jobs, force, &crate::progress::Progress::off(), |_, r| {
            out = Some(r);
            Ok(())
        })
        .await?;
        out.unwrap_or_else(|| Err(Error::other("internal error: no download result")))
    }
}

/// The mode and mtime of a local file, as ATTRS carries them.
pub fn local_attrs(meta: &std::fs::Metadata) -> protocol::Attrs {
    use std::os::unix::fs::MetadataExt;
    protocol::Attrs {
        mode: meta.mode() & protocol::MODE_BITS,
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    }
}

/// Give a downloaded file the mode (`& 0o777`: never setuid, setgid or
/// sticky) and mtime the server sent; `shown` names it in errors.
pub fn apply_attrs(file: &File, a: protocol::Attrs, shown: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = Duration::from_nanos(a.mtime_ns.unsigned_abs());
    let when = if a.mtime_ns >= 0 {
        std::time::UNIX_EPOCH.checked_add(nanos)
    } else {
        std::time::UNIX_EPOCH.checked_sub(nanos)
    };
    if let Some(when) = when {
        file.set_times(std::fs::FileTimes::new().set_modified(when))
            .map_err(|e| Error::io(format!("setting the modification time of {shown}"), &e))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        a.mode & protocol::MODE_BITS,
    ))
    .map_err(|e| Error::io(format!("setting the mode of {shown}"), &e))
}

/// The temporary file a download is written to, beside its destination:
/// `.NAME.sft-part`, locked while in use. A download cut off (lost
/// connection, Ctrl-C, a killed client) leaves it, and the same download
/// later resumes after the part of it the server confirms by SHA-256
/// (PROTOCOL.md §4.9). When another download holds that name, a one-off
/// `.NAME.RANDOM.part` is used instead (not resumable).
pub struct Part {
    pub path: PathBuf,
    pub file: File,
    /// Bytes it holds from an earlier attempt.
    pub len: u64,
}

/// Where a download of `dest` keeps its data until it is verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    part_dir(dest).join(format!(".{base}.sft-part"))
}

fn part_dir(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Open and lock `path` for a download; None if another holds it.
fn lock_part(path: &Path, create: bool) -> Result<Option<File>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("creating {}", path.display()), &e)),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        // a filesystem without locks: use it unlocked
        Err(_) => Ok(Some(file)),
    }
}

/// The data an interrupted download of `dest` left, if any (and not in
/// use by another download).
pub fn held_part(dest: &Path) -> Option<Part> {
    let path = part_path(dest);
    let file = lock_part(&path, false).ok()??;
    let len = file.metadata().ok()?.len();
    (len > 0).then_some(Part { path, file, len })
}

/// A fresh, empty temporary file for a download of `dest`.
fn create_part(dest: &Path) -> Result<(PathBuf, File)> {
    let path = part_path(dest);
    if let Some(file) = lock_part(&path, true)? {
        file.set_len(0)
            .map_err(|e| Error::io(format!("creating {}", path.display()), &e))?;
        return Ok((path, file));
    }
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let dir = part_dir(dest);
    for _ in 0..16 {
        let part = dir.join(format!(".{base}.{}.part", crate::private::unique_hex()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
        {
            Ok(f) => return Ok((part, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("creating a file in {}", dir.display()),
                    &e,
                ));
            }
        }
    }
    Err(Error::other(format!(
        "could not create a temporary file in {}",
        dir.display()
    )))
}

/// Move a verified download into place without replacing anything (unless
/// `force`): `dest`, else `dest (1).ext`, `dest (2).ext`, …
fn place(part: &Path, dest: &Path, force: bool) -> Result<PathBuf> {
    let what = |e: std::io::Error, p: &Path| Error::io(format!("saving {}", p.display()), &e);
    if force {
        std::fs::rename(part, dest).map_err(|e| what(e, dest))?;
        return Ok(dest.to_path_buf());
    }
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..10_000u32 {
        let cand = if n == 0 {
            dest.to_path_buf()
        } else {
            dest.with_file_name(names::numbered(&base, n))
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            part,
            rustix::fs::CWD,
            &cand,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(cand),
            Err(rustix::io::Errno::EXIST) => continue,
            // filesystems without RENAME_NOREPLACE: link (fails if taken), then unlink
            Err(rustix::io::Errno::INVAL) => match std::fs::hard_link(part, &cand) {
                Ok(()) => {
                    let _ = std::fs::remove_file(part);
                    return Ok(cand);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(what(e, &cand)),
            },
            Err(e) => return Err(what(e.into(), &cand)),
        }
    }
    Err(Error::other(format!(
        "too many files named like {}",
        dest.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse_like_people_write_them() {
        assert_eq!(split_host_port("h:1").unwrap(), ("h".into(), 1));
        assert_eq!(split_host_port("h").unwrap(), ("h".into(), DEFAULT_PORT));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(
            split_host_port("[::1]").unwrap(),
            ("::1".into(), DEFAULT_PORT)
        );
        assert_eq!(
            split_host_port("::1").unwrap(),
            ("::1".into(), DEFAULT_PORT)
        );
        assert!(split_host_port("h:x").is_err());
        assert!(split_host_port("").is_err());
    }

    #[test]
    fn placing_a_download_never_clobbers() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("f.txt");
        std::fs::write(&dest, b"old").unwrap();
        let part = d.path().join("p");
        std::fs::write(&part, b"new").unwrap();
        let got = place(&part, &dest, false).unwrap();
        assert_eq!(got, d.path().join("f (1).txt"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        std::fs::write(&part, b"newer").unwrap();
        assert_eq!(place(&part, &dest, true).unwrap(), dest);
        assert_eq!(std::fs::read(&dest).unwrap(), b"newer");
    }
}
