//! An upload of a stream of unknown length (standard input).

use std::time::Instant;

use tokio::sync::mpsc;

use super::{Sent, acknowledged};
use crate::client::{Client, Pacer, Uploaded, frame_raw_len, unexpected};
use crate::error::{Error, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{self, Encoding, Msg};

/// Frames of a stream of unknown length (a pipe): raw DATA frames of up to
/// 256 KiB, read and hashed on a blocking thread; then its size and digest.
enum StreamItem {
    Frame(Vec<u8>),
    Done { size: u64, sha256: [u8; 32] },
    Failed(Error),
}

fn spawn_stream_reader(
    mut input: impl std::io::Read + Send + 'static,
    what: String,
) -> mpsc::Receiver<StreamItem> {
    use sha2::Digest;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        const CHUNK: usize = 256 * 1024;
        let off = protocol::HEADER_LEN + protocol::DATA_PREFIX_LEN;
        let mut h = sha2::Sha256::new();
        let mut total: u64 = 0;
        loop {
            let mut frame = vec![0u8; off + CHUNK];
            let mut got = 0;
            while got < CHUNK {
                match input.read(&mut frame[off + got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(StreamItem::Failed(Error::io(
                            format!("reading {what}"),
                            &e,
                        )));
                        return;
                    }
                }
            }
            if got == 0 {
                let _ = tx.blocking_send(StreamItem::Done {
                    size: total,
                    sha256: h.finalize().into(),
                });
                return;
            }
            frame.truncate(off + got);
            h.update(&frame[off..]);
            total += got as u64;
            frame[..off].copy_from_slice(&protocol::data_header(Encoding::Raw, got as u32, got));
            if tx.blocking_send(StreamItem::Frame(frame)).is_err() {
                return;
            }
        }
    });
    rx
}

impl Client {
    /// Upload a stream of unknown length (standard input) as `remote`; the
    /// server reserves space in steps and stops the upload cleanly when the
    /// next step does not fit.
    pub async fn put_stream(
        &mut self,
        input: impl std::io::Read + Send + 'static,
        remote: &str,
        overwrite: bool,
        progress: &Progress,
    ) -> Result<Uploaded> {
        names::validate(remote)?;
        let flags = protocol::PUT_STREAM
            | if overwrite {
                protocol::PUT_OVERWRITE
            } else {
                0
            };
        self.w
            .send_now(&Msg::Put {
                size: 0,
                flags,
                name: remote.to_string(),
            })
            .await?;
        match self
            .r
            .expect_within(self.timeout, "the reply to PUT")
            .await?
        {
            Msg::PutReady { offset: 0 } => {}
            other => return Err(unexpected(&other, "the reply to PUT")),
        }
        let started = Instant::now();
        progress.start(remote, 0);
        let mut frames = spawn_stream_reader(input, "standard input".into());
        let mut pacer = Pacer::new(self.limit_rate);
        let mut wire = 0u64;
        let (size, sha256) = loop {
            tokio::select! {
                biased;
                m = self.r.read_frame() => {
                    let err = match m? {
                        Some(other) => unexpected(&other, "the end of the upload"),
                        None => Error::network("the server closed the connection during the upload"),
                    };
                    let _ = self.w.send_now(&Msg::Cancel).await;
                    progress.done();
                    return Err(err);
                }
                item = frames.recv() => match item {
                    Some(StreamItem::Frame(f)) => {
                        self.w.write_raw(&f).await?;
                        wire += f.len() as u64;
                        let raw = frame_raw_len(&f);
                        progress.advance(raw);
                        pacer.pace(raw).await;
                    }
                    Some(StreamItem::Done { size, sha256 }) => {
                        self.w.send_now(&Msg::End { sha256 }).await?;
                        break (size, sha256);
                    }
                    Some(StreamItem::Failed(e)) => {
                        self.w.send_now(&Msg::Cancel).await?;
                        let _ = self.r.expect_within(self.timeout, "the reply to CANCEL").await;
                        progress.done();
                        return Err(e);
                    }
                    None => return Err(Error::other("internal error: the stream reader stopped")),
                },
            }
        };
        progress.done();
        match self
            .r
            .expect_within(self.timeout * 4, "the upload acknowledgement")
            .await?
        {
            Msg::PutOk {
                size: got,
                sha256: theirs,
                name,
            } => acknowledged(
                got,
                &theirs,
                name,
                size,
                Sent {
                    sha256,
                    wire,
                    resumed: 0,
                },
                started,
            ),
            other => Err(unexpected(&other, "the upload acknowledgement")),
        }
    }
}
