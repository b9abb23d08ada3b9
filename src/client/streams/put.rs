//! A ranged upload: PUT with RANGES on the session, the file's ranges sent
//! as RANGE + DATA by joined streams and acknowledged one by one (DONE),
//! then END with the whole file's SHA-256 (hashed here in one pass while
//! the ranges go), and PUT_OK checked as for any upload.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{IN_FLIGHT, Plan, Work};
use crate::client::connect::{Halves, open_joined};
use crate::client::pipeline::Sent;
use crate::client::{Client, Options, Uploaded, unexpected};
use crate::compress::{Encoder, Mode, Policy};
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::{self, Encoding, Msg};
use crate::transfer;

/// Raw bytes per DATA block of a range.
const BLOCK: usize = 1 << 20;

impl Client {
    /// Upload `local` as `remote` over several streams when `--streams` says so
    /// for its size and this link; otherwise `None` (use `put_many`).
    pub async fn put_streams(
        &mut self,
        local: &Path,
        remote: &str,
        overwrite: bool,
    ) -> Option<Result<Uploaded>> {
        let plan = self.origin.streams;
        let size = std::fs::metadata(local).ok()?.len();
        let range = super::range_size();
        let start = plan.streams_for(size, self.local_link, self.rtt, range)?;
        if !self.streams_ok || self.role < protocol::Role::Write {
            return None;
        }
        Some(
            self.put_ranged(local, remote, overwrite, start, plan == Plan::Auto, range)
                .await,
        )
    }

    async fn put_ranged(
        &mut self,
        local: &Path,
        remote: &str,
        overwrite: bool,
        start: usize,
        auto: bool,
        range: u64,
    ) -> Result<Uploaded> {
        names::validate(remote)?;
        let shown = local.display().to_string();
        let file = File::open(local).map_err(|e| Error::io(format!("opening {shown}"), &e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {shown}"), &e))?;
        let size = meta.len();
        let started = Instant::now();
        if self.meta && self.preserve {
            let a = crate::client::local_attrs(&meta);
            self.w
                .send(&Msg::Attrs {
                    mode: a.mode,
                    mtime_ns: a.mtime_ns,
                })
                .await?;
        }
        // an upload cut off keeps what the server wrote in order, and the
        // next try sends only the rest (PROTOCOL.md §4.9)
        let resume = if self.resume { protocol::PUT_RESUME } else { 0 };
        let flags = protocol::PUT_RANGES
            | resume
            | if overwrite {
                protocol::PUT_OVERWRITE
            } else {
                0
            };
        self.w
            .send_now(&Msg::Put {
                size,
                flags,
                name: remote.to_string(),
            })
            .await?;
        let (file, from) = match self.r.expect_within(self.timeout, "PUT_READY").await? {
            Msg::PutReady { offset: 0 } => (file, transfer::Prefix::none()),
            Msg::Partial { offset, sha256 } if resume != 0 && offset <= size => {
                // go on only after a prefix that is the same here
                let (file, from) =
                    crate::client::pipeline::same_prefix(file, offset, sha256, local).await?;
                self.w.send_now(&Msg::Resume { offset: from.len }).await?;
                (file, from)
            }
            other => return Err(unexpected(&other, "PUT_READY")),
        };
        let _moving = (resume != 0).then(|| {
            crate::client::moving::mark(crate::client::moving::Moving::Up {
                remote: remote.to_string(),
            })
        });
        let resumed = from.len;
        let file = Arc::new(file);
        // the whole file's digest, one pass after the prefix, while the
        // ranges go
        let hashing = {
            let p = local.to_path_buf();
            tokio::task::spawn_blocking(move || transfer::sha256_len_after(&p, from))
        };
        let work = Arc::new(Work::after(resumed, size, range).limited(self.limit_rate));
        // each stream compresses as the one-connection upload does: `auto`
        // adapts its level to what limits that stream
        let mode = if self.zstd { self.compress } else { Mode::Off };
        let link = self.link();
        let level = move || Policy::new(mode, crate::compress::MAX_LEVEL).on_link(link);
        let (opts, pin) = (self.origin.clone(), self.seen_pin);
        let spawn = |set: &mut tokio::task::JoinSet<Result<()>>, ticket| {
            let (o, f, w) = (opts.clone(), file.clone(), work.clone());
            let policy = level();
            set.spawn(async move { send_stream(o, pin, ticket, f, w, policy).await });
        };
        let driven = self.drive(&work, start, auto, spawn).await;
        if let Err(e) = driven {
            if resume != 0 && e.kind == crate::error::Kind::Network {
                // the connections are dropped without CANCEL: the server
                // keeps what it has for the retry
                return Err(e);
            }
            // nothing becomes visible: the server discards the upload
            let _ = self.w.send_now(&Msg::Cancel).await;
            let _ = self
                .r
                .expect_within(self.timeout, "the reply to CANCEL")
                .await;
            return Err(e);
        }
        let (n, sha256) = hashing
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))??;
        if n != size {
            let _ = self.w.send_now(&Msg::Cancel).await;
            let _ = self
                .r
                .expect_within(self.timeout, "the reply to CANCEL")
                .await;
            return Err(Error::other(format!(
                "{shown} changed while it was sent; nothing was stored"
            )));
        }
        self.w.send_now(&Msg::End { sha256 }).await?;
        let wait = self.timeout * 4;
        match self.r.expect_within(wait, "PUT_OK").await? {
            Msg::PutOk {
                size: got,
                sha256: theirs,
                name,
            } => {
                let sent = Sent {
                    sha256,
                    wire: work.moved.load(std::sync::atomic::Ordering::Relaxed),
                    resumed,
                };
                crate::client::pipeline::acknowledged(got, &theirs, name, size, sent, started)
            }
            other => Err(unexpected(&other, "PUT_OK")),
        }
    }
}

/// One joined stream of an upload: ranges from `work` until none is left,
/// `IN_FLIGHT` of them unacknowledged at most; those are given back if the
/// stream fails.
async fn send_stream(
    opts: Options,
    pin: Option<[u8; 32]>,
    ticket: [u8; 32],
    file: Arc<File>,
    work: Arc<Work>,
    policy: Policy,
) -> Result<()> {
    let (mut r, mut w): Halves = open_joined(&opts, pin, ticket).await?;
    let mut unacked: VecDeque<(u64, u64)> = VecDeque::new();
    let mut enc = Some(Squeeze::new(policy));
    let result = async {
        loop {
            while unacked.len() < IN_FLIGHT {
                let Some((offset, length)) = work.take() else {
                    break;
                };
                unacked.push_back((offset, length));
                w.send(&Msg::Range { offset, length }).await?;
                let mut at = offset;
                while at < offset + length {
                    let n = ((offset + length - at) as usize).min(BLOCK);
                    let Some(mut e) = enc.take() else {
                        return Err(Error::other("internal error: no block encoder"));
                    };
                    let f = file.clone();
                    let (frame, mut e) = tokio::task::spawn_blocking(move || {
                        let frame = e.frame(&f, at, n);
                        (frame, e)
                    })
                    .await
                    .map_err(|e| Error::other(format!("internal error: {e}")))?;
                    let (frame, spent) = frame?;
                    let waited = Instant::now();
                    w.write_raw(&frame).await?;
                    e.policy.observe(n, waited.elapsed(), spent);
                    enc = Some(e);
                    work.moved(frame.len() as u64);
                    work.pace().await;
                    at += n as u64;
                }
                w.flush().await?;
            }
            let Some(&(_, length)) = unacked.front() else {
                break;
            };
            match r.expect_within(opts.timeout * 2, "DONE").await? {
                Msg::Done => {
                    unacked.pop_front();
                    work.acked(length);
                }
                other => return Err(unexpected(&other, "DONE")),
            }
        }
        let _ = w.send_now(&Msg::Bye).await;
        let _ = r.expect_within(opts.timeout, "BYE").await;
        Ok(())
    }
    .await;
    if result.is_err() {
        work.give_back(unacked.into_iter());
    }
    result
}

/// Reads blocks of the file and compresses them as the stream's policy
/// says (the `--compress` policy of one-connection uploads: blocks that do
/// not shrink go raw, and `auto` adapts its level per stream).
struct Squeeze {
    policy: Policy,
    enc: Encoder,
    buf: Vec<u8>,
}

impl Squeeze {
    fn new(policy: Policy) -> Squeeze {
        Squeeze {
            policy,
            enc: Encoder::new(),
            buf: Vec::new(),
        }
    }

    /// The DATA frame for `n` bytes at `at`, and the time spent
    /// compressing it (if it was tried).
    fn frame(&mut self, f: &File, at: u64, n: usize) -> Result<(Vec<u8>, Option<Duration>)> {
        self.buf.resize(n, 0);
        f.read_exact_at(&mut self.buf, at)
            .map_err(|e| Error::io("reading the file to upload", &e))?;
        if let Some(level) = self.policy.next_level() {
            let t = Instant::now();
            if let Some(z) = self.enc.compress(&self.buf, level) {
                let spent = Some(t.elapsed());
                if self.policy.record_attempt(n, z.len()) {
                    let mut out = Vec::with_capacity(z.len() + 10);
                    out.extend_from_slice(&protocol::data_header(
                        Encoding::Zstd,
                        n as u32,
                        z.len(),
                    ));
                    out.extend_from_slice(z);
                    return Ok((out, spent));
                }
                return Ok((raw_frame(&self.buf), spent));
            }
        }
        Ok((raw_frame(&self.buf), None))
    }
}

fn raw_frame(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len() + 10);
    out.extend_from_slice(&protocol::data_header(
        Encoding::Raw,
        buf.len() as u32,
        buf.len(),
    ));
    out.extend_from_slice(buf);
    out
}
