//! Small uploads (at most `SMALL_UPLOAD` bytes): their data gathered in
//! memory and queued for the session's committer (`commit`), which writes,
//! verifies and publishes them in batches. A pipelined one is answered in
//! order later; one that waited for PUT_READY is the same path followed by
//! its answer.

use super::put::UploadFrame;
use super::*;

impl Session {
    /// The DATA of an upload of at most `SMALL_UPLOAD` bytes, gathered in
    /// memory up to END (with the digest sent) or CANCEL (`None`).
    pub(super) async fn gather_small(
        &mut self,
        size: u64,
        name: &str,
    ) -> Result<(Vec<transfer::Block>, Option<[u8; 32]>)> {
        let mut blocks: Vec<transfer::Block> = Vec::new();
        let (mut raw, mut payload_bytes) = (0u64, 0u64);
        loop {
            match self.next_upload_frame(name, raw).await? {
                UploadFrame::Data(block) => {
                    raw += u64::from(block.raw_len);
                    payload_bytes += block.payload.len() as u64;
                    // compressed payloads are bounded too, not only their raw sizes
                    if raw > size || payload_bytes > 2 * SMALL_UPLOAD + 65536 {
                        return Err(Error::protocol(format!(
                            "upload of {} sent more data than its declared size of {size} bytes",
                            names::quote(name)
                        )));
                    }
                    self.shared.stats.bytes_in.fetch_add(
                        u64::from(block.raw_len),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    blocks.push(block);
                }
                UploadFrame::End(sha256) => return Ok((blocks, Some(sha256))),
                UploadFrame::Cancel => return Ok((blocks, None)),
            }
        }
    }

    /// An upload of at most `SMALL_UPLOAD` bytes that waited for PUT_READY:
    /// the same path as a pipelined one (gathered, queued for the
    /// committer), followed by its answer. Replies exactly as `put` does.
    pub(super) async fn put_small(
        &mut self,
        size: u64,
        overwrite: bool,
        name: String,
        reservation: crate::server::quota::Reservation,
        attrs: Option<Attrs>,
    ) -> Result<()> {
        let owner = self.user().to_string();
        let started = Instant::now();
        let small = Small {
            name,
            size,
            overwrite,
            owner,
            attrs,
            reservation,
            started,
        };
        self.queue_small(small).await?;
        self.drain(Which::Puts).await
    }

    /// A small pipelined upload (PROTOCOL.md §4.4a): its data is gathered and
    /// handed to the session's committer, and the next command is read at
    /// once; the reply follows, in order, when the committer is done.
    pub(super) async fn put_queued(
        &mut self,
        size: u64,
        flags: u32,
        name: String,
        who: Identity,
        attrs: Option<Attrs>,
    ) -> Result<()> {
        let started = Instant::now();
        let overwrite = flags & protocol::PUT_OVERWRITE != 0;
        // space is reserved before a data byte is accepted, as for any PUT;
        // without an old file to look at, that is no more than a statvfs
        // (a shared quota book, on an object store, is asked over the network)
        let reserved = if overwrite || self.shared.store.object.is_some() {
            let (n, w) = (name.clone(), who.clone());
            self.blocking(move |s| commit::reserve(s, &w, &n, size, overwrite, false))
                .await
        } else {
            commit::reserve(&self.shared, &who, &name, size, false, false)
        };
        let reservation = match reserved {
            Ok(r) => r,
            Err(e) => {
                info!(event = "put", peer = %self.peer, user = self.user(), name = %names::escape(&name), size, outcome = e.kind.name(), "{e}");
                // the refusal is the reply to this PUT: those before it go first
                self.drain(Which::Puts).await?;
                return self.refuse_put(&e, true).await;
            }
        };
        let small = Small {
            name,
            size,
            overwrite,
            owner: who.user,
            attrs,
            reservation,
            started,
        };
        self.queue_small(small).await
    }

    /// Gather a small upload's data and queue it for the committer, which
    /// writes, verifies and publishes it; its answer comes in order.
    async fn queue_small(&mut self, u: Small) -> Result<()> {
        let commits = self
            .commits
            .get_or_insert_with(|| Committer::start(self.shared.clone()));
        let room = commits.room(u.size).await?;
        let loan = self.shared.budget.borrow(u.size as usize).await;
        let in_flight = commit::InFlight::new(&self.shared);
        let (blocks, claimed) = self.gather_small(u.size, &u.name).await?;
        let job = commit::SmallPut {
            name: u.name,
            size: u.size,
            overwrite: u.overwrite,
            owner: u.owner,
            attrs: u.attrs,
            reservation: u.reservation,
            blocks,
            claimed,
            started: u.started,
            in_flight,
            room,
            loan,
        };
        match self.commits.as_mut() {
            Some(c) => c.submit(job).await,
            None => Err(Error::other("internal error: no upload committer")),
        }
    }
}

/// A small upload, checked and reserved, whose data is still to come.
struct Small {
    name: String,
    size: u64,
    overwrite: bool,
    owner: String,
    attrs: Option<Attrs>,
    reservation: crate::server::quota::Reservation,
    started: Instant,
}
