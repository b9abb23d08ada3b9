//! The client: one TLS connection carrying a whole session, with typed
//! methods for each command. Everything a server sends is treated as hostile
//! input: names are validated, sizes are enforced, text is escaped.
//!
//! This file holds the session and its file commands; `admin.rs` the
//! administrative ones; `connect.rs` opens it (TLS,
//! HELLO, AUTH), `pipeline/` moves many files, `part.rs` keeps a download's
//! temporary file, `attrs.rs` local mode and mtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{ReadHalf, WriteHalf};
use tokio_rustls::client::TlsStream;

mod admin;
mod attrs;
mod connect;
pub mod known;
pub mod moving;
mod part;
pub mod pipeline;
pub mod streams;

pub use attrs::{apply_attrs, local_attrs};
pub use connect::fingerprint_of;
pub use part::{Part, held_part, part_path};
use part::{create_part, place, ranged_part};

use crate::compress::Mode;
use crate::connection::{FrameReader, FrameWriter};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Entry, Msg, Role};
use crate::tls::Trust;

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
    /// Connections for one large transfer (`--streams`).
    pub streams: streams::Plan,
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
    /// Whether the server agreed to several connections per transfer.
    pub streams_ok: bool,
    /// How this session was opened, for the connections that join it.
    origin: Options,
    /// The certificate the server presented (when pinned or first seen):
    /// joining connections must meet the same one.
    seen_pin: Option<[u8; 32]>,
    /// The round trip of HELLO/WELCOME: whether the link is long (more
    /// streams, and a higher level to start `auto` compression at).
    rtt: Duration,
    /// The session ends after the uploads of `put_many`: BYE goes out right
    /// after the last END, in the same flight, and its reply follows the
    /// last PUT_OK (no round trip of its own).
    pub bye_after_puts: bool,
    /// BYE was already sent; [`Client::bye`] only reads its reply.
    bye_sent: bool,
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

impl Client {
    /// The link to the server, as compression's `auto` needs to know it.
    fn link(&self) -> crate::compress::Link {
        crate::compress::Link::of(self.local_link, Some(self.rtt))
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
        if !std::mem::take(&mut self.bye_sent) {
            self.w.send_now(&Msg::Bye).await?;
        }
        match self.r.expect_within(self.timeout, "BYE").await? {
            Msg::Bye => {}
            other => return Err(unexpected(&other, "BYE")),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.w.shutdown()).await;
        Ok(())
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

    /// Read the replies to commands sent ahead with
    /// [`Client::connect_with`]: `lists` listings (LIST), then `probes`
    /// answers to CLONE probes (DONE or ERROR), in that order. One result
    /// per command; an ERROR answers its own command only.
    pub async fn early_replies(
        &mut self,
        lists: usize,
        probes: usize,
    ) -> Result<(Vec<Result<Vec<Entry>>>, Vec<Result<()>>)> {
        let timeout = self.timeout;
        let mut listings = Vec::with_capacity(lists);
        for _ in 0..lists {
            let mut out = Vec::new();
            listings.push(loop {
                match self.r.expect_within(timeout, "the listing").await? {
                    Msg::Entry(e) => out.push(e),
                    Msg::ListEnd => break Ok(out),
                    Msg::Error { code, message } => break Err(server_error(code, &message)),
                    other => return Err(unexpected(&other, "the listing")),
                }
            });
        }
        let what = "the reply to a CLONE probe";
        let mut answers = Vec::with_capacity(probes);
        for _ in 0..probes {
            answers.push(match self.r.expect_within(timeout, what).await? {
                Msg::Done => Ok(()),
                Msg::Error { code, message } => Err(server_error(code, &message)),
                other => return Err(unexpected(&other, what)),
            });
        }
        Ok((listings, answers))
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
}
