//! One download received: its DATA frames checked and written, its
//! digest checked three ways, a refused or abandoned one drained.

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use tokio::io::ReadHalf;

use super::{Dest, GetJob};
use crate::client::{Downloaded, Pacer, Stream, unexpected};
use crate::connection::FrameReader;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{self, Encoding, Msg};
use crate::transfer;

/// A download checked three ways: the digest in END, the one recorded at
/// upload, and the expected one. `saved` says what became of the data.
#[allow(clippy::too_many_arguments)]
pub(in crate::client) fn verify_download(
    remote: &str,
    n: u64,
    size: u64,
    digest: &[u8; 32],
    sent: &[u8; 32],
    recorded: Option<[u8; 32]>,
    expect: Option<[u8; 32]>,
    saved: &str,
) -> Result<()> {
    if n != size {
        return Err(Error::protocol(format!(
            "the server sent {n} bytes but announced {size}"
        )));
    }
    // (the digest it must match, how to say "X but Y")
    let checks = [
        (
            Some(*sent),
            "the server sent",
            "the data received hashes to",
        ),
        (recorded, "recorded at upload as", "received"),
        (expect, "expected", "the file is"),
    ];
    for (want, said, got) in checks {
        if let Some(want) = want
            && !transfer::same_digest(digest, &want)
        {
            return Err(Error::integrity(format!(
                "SHA-256 mismatch for {}: {said} {} but {got} {}; {saved}",
                names::quote(remote),
                hex::encode(want),
                hex::encode(digest)
            )));
        }
    }
    Ok(())
}

/// Receive one download announced by GET_OK and check it three ways: the
/// digest in END, the one recorded at upload, and the expected one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn receive_one(
    r: &mut FrameReader<ReadHalf<Stream>>,
    job: &GetJob,
    resumed: Option<(crate::client::Part, transfer::Prefix)>,
    size: u64,
    recorded: Option<[u8; 32]>,
    force: bool,
    attrs: Option<protocol::Attrs>,
    zstd: bool,
    timeout: std::time::Duration,
    limit_rate: Option<u64>,
    progress: &Progress,
) -> Result<Downloaded> {
    let started = Instant::now();
    let mut from = transfer::Prefix::none();
    let (part, file) = match (&job.dest, resumed) {
        (Dest::Path(_), Some((held, prefix))) => {
            from = prefix;
            (Some(held.path), held.file)
        }
        (Dest::Path(p), None) => match crate::client::create_part(p) {
            Ok((part, f)) => (Some(part), f),
            Err(e) => {
                // keep the session in step: the data is coming regardless
                drain_download(r, timeout).await?;
                return Err(e);
            }
        },
        (Dest::Stdout, _) => {
            use std::os::fd::AsFd;
            match std::io::stdout().as_fd().try_clone_to_owned() {
                Ok(fd) => (None, File::from(fd)),
                Err(e) => {
                    drain_download(r, timeout).await?;
                    return Err(Error::io("writing to stdout", &e));
                }
            }
        }
    };
    let shown = part
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdout".into());
    let resumable = |p: &&PathBuf| p.extension().is_some_and(|e| e == "sft-part");
    let _moving = part.as_ref().filter(resumable).map(|p| {
        crate::client::moving::mark(crate::client::moving::Moving::Down {
            remote: job.remote.clone(),
            part: p.clone(),
        })
    });
    let resumed_len = from.len;
    // a second handle on a `.part` file, to give it its metadata once written
    let keep = match (&part, attrs) {
        (Some(p), Some(a)) => match file.try_clone() {
            Ok(f) => Some((f, a)),
            Err(e) => {
                let _ = std::fs::remove_file(p);
                drain_download(r, timeout).await?;
                return Err(Error::io(format!("opening {shown}"), &e));
            }
        },
        _ => None,
    };
    let result = receive_data(
        r,
        file,
        from,
        size,
        &job.remote,
        &shown,
        zstd,
        timeout,
        limit_rate,
        progress,
    )
    .await;
    let checked = result.and_then(|(n, digest, sent, wire)| {
        let saved = if part.is_some() {
            "the file was not saved"
        } else {
            "the data written to stdout is bad"
        };
        verify_download(
            &job.remote,
            n,
            size,
            &digest,
            &sent,
            recorded,
            job.expect,
            saved,
        )?;
        if let Some((f, a)) = &keep {
            crate::client::apply_attrs(f, *a, &shown)?;
        }
        Ok((digest, wire))
    });
    let (sha256, wire) = match checked {
        Ok(x) => x,
        Err(e) => {
            // a lost connection keeps the part for resuming; bad data does not
            if let Some(p) = &part
                && e.kind != Kind::Network
            {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let path = match (&part, &job.dest) {
        (Some(part), Dest::Path(dest)) => match crate::client::place(part, dest, force) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(part);
                return Err(e);
            }
        },
        _ => PathBuf::from("-"),
    };
    Ok(Downloaded {
        path,
        size,
        sha256,
        wire,
        resumed: resumed_len,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// DATA frames into `file` until END: (bytes, their digest, the digest the
/// server sent, wire bytes).
#[allow(clippy::too_many_arguments)]
async fn receive_data(
    r: &mut FrameReader<ReadHalf<Stream>>,
    file: File,
    from: transfer::Prefix,
    size: u64,
    remote: &str,
    shown: &str,
    zstd: bool,
    timeout: std::time::Duration,
    limit_rate: Option<u64>,
    progress: &Progress,
) -> Result<(u64, [u8; 32], [u8; 32], u64)> {
    // a resumed download brings the rest of the file after what is held
    let want = Want {
        size: size.saturating_sub(from.len),
        remote,
        zstd,
    };
    progress.advance(from.len);
    let (tx, writer) = transfer::spawn_writer(file, shown.to_string(), false, r.pool(), from);
    let mut count = Counted::default();
    let mut pacer = Pacer::new(limit_rate);
    let sent = loop {
        match next_block(r, timeout, &want, &mut count, progress, &mut pacer).await? {
            Downloading::Data(block) => {
                if tx.send(block).await.is_err() {
                    drop(tx);
                    // a local write failure: the rest of this download must
                    // still be read to keep the session in step
                    let err = match writer.await {
                        Ok(Err(e)) => e,
                        _ => Error::other("internal error: the download writer stopped"),
                    };
                    drain_download(r, timeout).await?;
                    return Err(err);
                }
            }
            Downloading::End(sha256) => break sha256,
            Downloading::Refused(e) => return Err(e),
        }
    };
    drop(tx);
    let (n, digest, _) = writer
        .await
        .map_err(|e| Error::other(format!("internal error: {e}")))??;
    Ok((n, digest, sent, count.wire))
}

/// What a download announced: its size, its name, whether zstd was agreed.
pub(super) struct Want<'a> {
    pub(super) size: u64,
    pub(super) remote: &'a str,
    pub(super) zstd: bool,
}

impl Want<'_> {
    pub(super) fn too_much(&self) -> Error {
        Error::protocol(format!(
            "the server sent more than the {} bytes it announced for {}",
            self.size,
            names::quote(self.remote)
        ))
    }
}

/// Bytes of a download so far: of the file, and on the wire.
#[derive(Default)]
pub(super) struct Counted {
    received: u64,
    pub(super) wire: u64,
}

impl Counted {
    pub(super) fn check_end(&self, size: u64) -> Result<()> {
        if self.received != size {
            return Err(Error::protocol(format!(
                "the server sent {} bytes but announced {size}",
                self.received
            )));
        }
        Ok(())
    }
}

/// One step of a download.
pub(super) enum Downloading {
    Data(transfer::Block),
    End([u8; 32]),
    /// The server's ERROR in place of the rest (the session goes on).
    Refused(Error),
}

/// The next frame of a download, checked (an encoding that was agreed, no
/// more than the announced size), counted, shown and paced: the one reader
/// of download frames for small and large files alike.
pub(super) async fn next_block(
    r: &mut FrameReader<ReadHalf<Stream>>,
    timeout: std::time::Duration,
    want: &Want<'_>,
    count: &mut Counted,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<Downloading> {
    match r.expect_within(timeout, "download data").await? {
        Msg::Data {
            encoding,
            raw_len,
            payload,
        } => {
            if encoding != Encoding::Raw && !want.zstd {
                return Err(Error::protocol(
                    "the server sent compressed data that was not negotiated",
                ));
            }
            count.wire += (protocol::HEADER_LEN + protocol::DATA_PREFIX_LEN + payload.len()) as u64;
            count.received += u64::from(raw_len);
            if count.received > want.size {
                return Err(want.too_much());
            }
            progress.advance(u64::from(raw_len));
            pacer.pace(u64::from(raw_len)).await;
            Ok(Downloading::Data(transfer::Block {
                encoding,
                raw_len,
                payload,
            }))
        }
        Msg::End { sha256 } => Ok(Downloading::End(sha256)),
        Msg::Error { code, message } => Ok(Downloading::Refused(crate::client::server_error(
            code, &message,
        ))),
        other => Err(unexpected(&other, "download data")),
    }
}

/// Read and drop the rest of a download up to its END (or ERROR).
pub(super) async fn drain_download(
    r: &mut FrameReader<ReadHalf<Stream>>,
    timeout: std::time::Duration,
) -> Result<()> {
    loop {
        match r.expect_within(timeout, "download data").await? {
            Msg::Data { .. } => {}
            Msg::End { .. } | Msg::Error { .. } => return Ok(()),
            other => return Err(unexpected(&other, "download data")),
        }
    }
}
