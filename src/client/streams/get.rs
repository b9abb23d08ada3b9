//! A ranged download: GET_RANGE of no bytes on the session learns the size,
//! metadata and the whole file's recorded SHA-256; joined streams then ask
//! for the ranges (two outstanding each) and write them at their offsets
//! into the `.part` file, preallocated; one SHA-256 follows the contiguous
//! prefix ([`Assembly`]) and is checked, three ways as for any download,
//! before the file is renamed into place.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{IN_FLIGHT, Plan, Work};
use crate::client::connect::{Halves, open_joined};
use crate::client::{Client, Downloaded, Options, unexpected};
use crate::compress::Decoder;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{self, Encoding, Msg};
use crate::transfer::Assembly;

/// What the first GET_RANGE told of the file.
struct Head {
    size: u64,
    sha256: [u8; 32],
    attrs: Option<protocol::Attrs>,
}

impl Client {
    /// Download `remote` to `dest` over several streams when `--streams` says so
    /// for this link (the size is learned first); `None`: use `get_many`.
    pub async fn get_streams(
        &mut self,
        remote: &str,
        dest: &Path,
        force: bool,
        expect: Option<[u8; 32]>,
    ) -> Option<Result<Downloaded>> {
        let plan = self.origin.streams;
        if !self.streams_ok {
            return None;
        }
        let range = super::range_size();
        // the size decides only once known; a link that auto never splits
        // costs no round trip
        plan.streams_for(u64::MAX, self.local_link, self.rtt, range)?;
        let part = crate::client::part_path(dest);
        if self.resume
            && std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
            && !crate::client::part::held_path(&part).exists()
        {
            // what a one-connection download left: that one resumes it
            return None;
        }
        let head = match self.head(remote).await {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let start = plan.streams_for(head.size, self.local_link, self.rtt, range)?;
        Some(
            self.get_ranged(
                remote,
                dest,
                force,
                expect,
                head,
                start,
                plan == Plan::Auto,
                range,
            )
            .await,
        )
    }

    /// GET_RANGE of 0 bytes: the file's size, attrs and whole digest.
    async fn head(&mut self, remote: &str) -> Result<Head> {
        names::validate(remote)?;
        self.w
            .send_now(&Msg::GetRange {
                offset: 0,
                length: 0,
                compress: 0,
                name: remote.to_string(),
            })
            .await?;
        let (size, sha256, attrs) = read_head(&mut self.r, self.timeout).await?;
        match self.r.expect_within(self.timeout, "END").await? {
            Msg::End { .. } => Ok(Head {
                size,
                sha256,
                attrs,
            }),
            other => Err(unexpected(&other, "END")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn get_ranged(
        &mut self,
        remote: &str,
        dest: &Path,
        force: bool,
        expect: Option<[u8; 32]>,
        head: Head,
        start: usize,
        auto: bool,
        range: u64,
    ) -> Result<Downloaded> {
        let started = Instant::now();
        // the prefix an interrupted download of this very file left, if
        // it is still intact (its record beside the part file says which)
        let (d, size, sha256, resume) = (dest.to_path_buf(), head.size, head.sha256, self.resume);
        let (part, file, held) = tokio::task::spawn_blocking(move || {
            crate::client::ranged_part(&d, size, &sha256, resume)
        })
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))??;
        let shown = part.display().to_string();
        let resumed = held.len;
        let asm = match Assembly::after(file, head.size, shown.clone(), held) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                crate::client::part::drop_held(&part);
                return Err(e);
            }
        };
        let resumable = resume && part.extension().is_some_and(|e| e == "sft-part");
        let _moving = resumable.then(|| {
            crate::client::moving::mark(crate::client::moving::Moving::Down {
                remote: remote.to_string(),
                part: part.clone(),
            })
        });
        let checkpoint = Arc::new(Checkpoint {
            path: resumable.then(|| crate::client::part::held_path(&part)),
            size: head.size,
            sha256: head.sha256,
            written: std::sync::Mutex::new(resumed),
        });
        let work = Arc::new(Work::after(resumed, head.size, range).limited(self.limit_rate));
        let compress = if self.zstd {
            self.compress.to_wire()
        } else {
            0
        };
        let (opts, pin) = (self.origin.clone(), self.seen_pin);
        let name = remote.to_string();
        let spawn = |set: &mut tokio::task::JoinSet<Result<()>>, ticket| {
            let (o, a, w, n) = (opts.clone(), asm.clone(), work.clone(), name.clone());
            let c = checkpoint.clone();
            set.spawn(async move { receive_stream(o, pin, ticket, n, compress, a, w, c).await });
        };
        let outcome = async {
            self.drive(&work, start, auto, spawn).await?;
            let a = asm.clone();
            let digest = tokio::task::spawn_blocking(move || a.close())
                .await
                .map_err(|e| Error::other(format!("internal error: {e}")))??;
            let want = crate::client::pipeline::Expected {
                size: head.size,
                recorded: Some(head.sha256),
                expect,
            };
            crate::client::pipeline::verify_download(
                remote,
                head.size,
                &digest,
                &head.sha256,
                &want,
                "the file was not saved",
            )?;
            if self.meta
                && self.preserve
                && let Some(a) = head.attrs
            {
                crate::client::apply_attrs(asm.file(), a, &shown)?;
            }
            crate::client::place(&part, dest, force).map(|p| (p, digest))
        }
        .await;
        match outcome {
            Ok((path, sha256)) => {
                crate::client::part::drop_held(&part);
                Ok(Downloaded {
                    wire: work.moved.load(std::sync::atomic::Ordering::Relaxed),
                    path,
                    size: head.size,
                    sha256,
                    resumed,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
            // a lost connection keeps the part and its record for resuming
            Err(e) if resumable && e.kind == Kind::Network => Err(e),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                crate::client::part::drop_held(&part);
                Err(e)
            }
        }
    }
}

/// [ATTRS] GET_OK of a GET_RANGE: size, whole digest, attrs.
async fn read_head(
    r: &mut crate::connection::FrameReader<tokio::io::ReadHalf<crate::client::Stream>>,
    t: std::time::Duration,
) -> Result<(u64, [u8; 32], Option<protocol::Attrs>)> {
    let mut attrs = None;
    loop {
        match r.expect_within(t, "GET_OK").await? {
            Msg::Attrs { mode, mtime_ns } if attrs.is_none() => {
                attrs = Some(protocol::Attrs { mode, mtime_ns })
            }
            Msg::GetOk {
                size,
                sha256: Some(d),
                ..
            } => return Ok((size, d, attrs)),
            Msg::GetOk { sha256: None, .. } => {
                return Err(Error::protocol(
                    "the server answered GET_RANGE without the file's SHA-256",
                ));
            }
            other => return Err(unexpected(&other, "GET_OK")),
        }
    }
}

/// Where a download over several streams records how far its part file
/// is written in order ([`crate::client::part::Held`]), so that a later
/// attempt — after a lost connection, Ctrl-C or a killed client — keeps
/// that prefix.
struct Checkpoint {
    /// None: the part cannot resume (a one-off `.part`, `--no-resume`).
    path: Option<std::path::PathBuf>,
    size: u64,
    sha256: [u8; 32],
    /// The prefix last recorded.
    written: std::sync::Mutex<u64>,
}

impl Checkpoint {
    /// Record the prefix `asm` has written and hashed, if it grew
    /// (blocking). A record that cannot be written costs only the resume.
    fn advance(&self, asm: &Assembly) {
        let Some(path) = &self.path else { return };
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let now = asm.hashed();
        if now.len <= *written {
            return;
        }
        let held = crate::client::part::Held {
            size: self.size,
            sha256: self.sha256,
            len: now.len,
            prefix: now.digest(),
        };
        if std::fs::write(path, held.line()).is_ok() {
            *written = now.len;
        }
    }
}

/// One joined stream of a download: GET_RANGE for ranges from `work`, two
/// outstanding, each written at its offset; unfinished ones are given back
/// if the stream fails.
#[allow(clippy::too_many_arguments)]
async fn receive_stream(
    opts: Options,
    pin: Option<[u8; 32]>,
    ticket: [u8; 32],
    name: String,
    compress: u8,
    asm: Arc<Assembly>,
    work: Arc<Work>,
    checkpoint: Arc<Checkpoint>,
) -> Result<()> {
    let (mut r, mut w): Halves = open_joined(&opts, pin, ticket).await?;
    let mut asked: VecDeque<(u64, u64)> = VecDeque::new();
    let size = asm.size();
    let result = async {
        loop {
            while asked.len() < IN_FLIGHT {
                let Some((offset, length)) = work.take() else {
                    break;
                };
                asked.push_back((offset, length));
                w.send_now(&Msg::GetRange {
                    offset,
                    length,
                    compress,
                    name: name.clone(),
                })
                .await?;
            }
            let Some(&(offset, length)) = asked.front() else {
                break;
            };
            let (got, _, _) = read_head(&mut r, opts.timeout).await?;
            if got != size {
                return Err(Error::new(
                    Kind::Integrity,
                    format!(
                        "{} changed on the server during the download",
                        names::quote(&name)
                    ),
                ));
            }
            let mut at = offset;
            let mut decoder = Decoder::new();
            loop {
                match r.expect_within(opts.timeout, "DATA").await? {
                    Msg::Data {
                        encoding,
                        raw_len,
                        payload,
                    } => {
                        let raw = u64::from(raw_len);
                        if at + raw > offset + length {
                            return Err(Error::protocol("the server sent more than the range"));
                        }
                        work.moved(payload.len() as u64);
                        work.pace().await;
                        let a = asm.clone();
                        let mut d = std::mem::take(&mut decoder);
                        decoder = tokio::task::spawn_blocking(move || -> Result<Decoder> {
                            if encoding == Encoding::Raw {
                                a.write_at(at, &payload)?;
                            } else {
                                let mut out = Vec::new();
                                d.decode(encoding, raw_len, &payload, &mut out)?;
                                a.write_at(at, &out)?;
                            }
                            Ok(d)
                        })
                        .await
                        .map_err(|e| Error::other(format!("internal error: {e}")))??;
                        at += raw;
                    }
                    Msg::End { .. } if at == offset + length => break,
                    Msg::End { .. } => {
                        return Err(Error::protocol("the server ended a range early"));
                    }
                    other => return Err(unexpected(&other, "DATA")),
                }
            }
            let (a, c) = (asm.clone(), checkpoint.clone());
            tokio::task::spawn_blocking(move || {
                a.finished(offset, length)?;
                c.advance(&a);
                Ok::<(), Error>(())
            })
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))??;
            asked.pop_front();
            work.acked(length);
        }
        let _ = w.send_now(&Msg::Bye).await;
        let _ = r.expect_within(opts.timeout, "BYE").await;
        Ok(())
    }
    .await;
    if result.is_err() {
        work.give_back(asked.into_iter());
    }
    result
}
