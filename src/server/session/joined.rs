//! A connection that joined a session with a ticket (PROTOCOL.md §4.10):
//! it may only move the data it was joined for. Bound to an upload, it
//! receives RANGE blocks, writes each at its offset and acknowledges it
//! with DONE once written; bound to downloads, it answers GET_RANGE. BYE
//! ends it; anything else is a protocol violation.

use super::put::UploadFrame;
use super::*;
use crate::server::tickets::Bound;
use crate::transfer::Assembly;

impl Session {
    pub(super) async fn joined(&mut self, bound: Bound) -> Result<()> {
        let idle = self.shared.limits.idle;
        loop {
            let msg = match tokio::time::timeout(idle, self.r.read_frame()).await {
                Ok(m) => m?,
                Err(_) => return Err(Error::network("joined connection idle; closed")),
            };
            let Some(msg) = msg else {
                return Ok(());
            };
            match (msg, &bound) {
                (
                    Msg::GetRange {
                        offset,
                        length,
                        compress,
                        name,
                    },
                    Bound::Download,
                ) => {
                    // a removed user's joined connections end too
                    self.refresh_identity()?;
                    self.get_range(offset, length, compress, name).await?;
                }
                (Msg::Range { offset, length }, Bound::Upload(asm)) => {
                    let asm = asm.clone();
                    match self.receive_range(&asm, offset, length).await {
                        Ok(()) => self.w.send_now(&Msg::Done).await?,
                        Err(e) if e.kind == Kind::Network || e.kind == Kind::Protocol => {
                            return Err(e);
                        }
                        Err(e) => {
                            // the upload ended or failed: say why, and stop
                            self.reply_error(&e).await?;
                            return Ok(());
                        }
                    }
                }
                (Msg::Bye, _) => return self.w.send_now(&Msg::Bye).await,
                (other, _) => {
                    return Err(Error::protocol(format!(
                        "unexpected {} on a joined connection",
                        other.name()
                    )));
                }
            }
        }
    }

    /// The DATA of one RANGE: exactly `length` bytes, each block decoded
    /// and written at its offset off the async threads, under a loan from
    /// the server's budget; then the range is recorded as written.
    async fn receive_range(&mut self, asm: &Arc<Assembly>, offset: u64, length: u64) -> Result<()> {
        asm.check(offset, length)?;
        let budget = self.shared.budget.clone();
        let mut got: u64 = 0;
        while got < length {
            let mut loan = budget.borrow(transfer::CHUNK).await;
            let block = match self.upload_frame().await? {
                UploadFrame::Data(b) => b,
                _ => {
                    return Err(Error::protocol(format!(
                        "a RANGE of {length} bytes ended after {got}"
                    )));
                }
            };
            let raw = u64::from(block.raw_len);
            if got + raw > length {
                return Err(Error::protocol(format!(
                    "a RANGE of {length} bytes sent more"
                )));
            }
            loan.resize(&budget, block.cost()).await;
            let (a, at, pool) = (asm.clone(), offset + got, self.r.pool());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let _loan = loan;
                if block.encoding == Encoding::Raw {
                    let r = a.write_at(at, &block.payload);
                    pool.recycle(block.payload);
                    return r;
                }
                let mut out = pool.take_len(block.raw_len as usize);
                let r = crate::compress::Decoder::new()
                    .decode(block.encoding, block.raw_len, &block.payload, &mut out)
                    .and_then(|()| a.write_at(at, &out));
                pool.recycle(block.payload);
                pool.give(out);
                r
            })
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))??;
            got += raw;
            self.shared
                .stats
                .bytes_in
                .fetch_add(raw, std::sync::atomic::Ordering::Relaxed);
        }
        let a = asm.clone();
        tokio::task::spawn_blocking(move || a.finished(offset, length))
            .await
            .map_err(|e| Error::other(format!("internal error: {e}")))?
    }
}
