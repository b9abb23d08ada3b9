//! Writing received blocks to a file: decoded, hashed, synced.

use super::*;

/// One received DATA block, as it came off the wire.
pub struct Block {
    pub encoding: Encoding,
    pub raw_len: u32,
    pub payload: Bytes,
}

impl Block {
    /// Bytes of memory the block takes until written: its payload, and the
    /// decoded data too if it is compressed.
    pub fn cost(&self) -> usize {
        match self.encoding {
            Encoding::Raw => self.payload.len(),
            _ => self.payload.len() + self.raw_len as usize,
        }
    }
}

/// The result of a writing thread: bytes written and their SHA-256.
pub type WriteResult = Result<(u64, [u8; 32], File)>;

/// Write blocks to `file`, hashing as they pass: one blocking thread
/// decompresses and hashes, a second writes (copying into the page cache
/// costs as much as the rest, so the two overlap). With `background_sync`,
/// write-back is started every 32 MiB on a helper thread so the data is
/// mostly on disk by the time the caller syncs. Each block's buffer goes back
/// to `pool` once written.
pub fn spawn_writer(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
) -> (mpsc::Sender<Block>, tokio::task::JoinHandle<WriteResult>) {
    start_writer(file, what, background_sync, pool, from, None)
}

/// `spawn_writer` for blocks each sent with the loan that covers its buffer:
/// the loan is repaid once the block is written (or dropped).
pub fn spawn_writer_within(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
) -> (
    mpsc::Sender<(Block, Loan)>,
    tokio::task::JoinHandle<WriteResult>,
) {
    start_writer(file, what, background_sync, pool, from, None)
}

/// Told the file's length (from its first byte, the prefix included) after
/// each write, on the writing thread; it may block to hold the writer back
/// (the object store's shipper does, so the scratch file stays a few parts
/// long while the parts before are sent: the socket is then not read).
pub type Pace = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// `spawn_writer_within` with a `Pace` told of every write.
pub fn spawn_writer_paced(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
    pace: Pace,
) -> (
    mpsc::Sender<(Block, Loan)>,
    tokio::task::JoinHandle<WriteResult>,
) {
    start_writer(file, what, background_sync, pool, from, Some(pace))
}

/// A block for the writer, with or without a loan.
trait Loaned: Send + 'static {
    fn parts(self) -> (Block, Loan);
}

impl Loaned for Block {
    fn parts(self) -> (Block, Loan) {
        (self, Loan::none())
    }
}

impl Loaned for (Block, Loan) {
    fn parts(self) -> (Block, Loan) {
        self
    }
}

fn start_writer<T: Loaned>(
    file: File,
    what: String,
    background_sync: bool,
    pool: Pool,
    from: Prefix,
    pace: Option<Pace>,
) -> (mpsc::Sender<T>, tokio::task::JoinHandle<WriteResult>) {
    let (tx, mut rx) = mpsc::channel::<T>(DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let Prefix {
            len: already,
            hasher: mut h,
        } = from;
        let mut n: u64 = 0;
        let mut decoder = Decoder::new();
        let (wtx, wrx) = std::sync::mpsc::sync_channel::<(Plain, Loan)>(DEPTH / 2);
        let (p2, what2) = (pool.clone(), what.clone());
        let writer = std::thread::Builder::new()
            .name("sft-write".into())
            .spawn(move || write_plain(file, &what2, (background_sync, pace, already), &p2, wrx))
            .map_err(|e| Error::io("starting a writer thread", &e))?;
        let result = (|| -> Result<()> {
            while let Some(item) = rx.blocking_recv() {
                let (block, loan) = item.parts();
                let plain = match block.encoding {
                    Encoding::Raw if block.payload.len() == block.raw_len as usize => {
                        Plain::Raw(block.payload)
                    }
                    encoding => {
                        let mut out = pool.take_len(block.raw_len as usize);
                        let r = decoder.decode(encoding, block.raw_len, &block.payload, &mut out);
                        pool.recycle(block.payload);
                        if let Err(e) = r {
                            pool.give(out);
                            return Err(e);
                        }
                        Plain::Inflated(out)
                    }
                };
                h.update(plain.bytes());
                n += plain.bytes().len() as u64;
                if wtx.send((plain, loan)).is_err() {
                    break; // the writer failed: its error is reported below
                }
            }
            Ok(())
        })();
        drop(wtx);
        let written = writer
            .join()
            .map_err(|_| Error::other("internal error: the writer thread panicked"))?;
        // a write error explains a decoding loop cut short: report it first
        let (w, file) = written?;
        result?;
        if w != n {
            return Err(Error::other(format!("writing {what}: short write")));
        }
        Ok((already + n, h.finalize().into(), file))
    });
    (tx, handle)
}

/// A block's data after decoding.
enum Plain {
    Raw(Bytes),
    Inflated(Vec<u8>),
}

impl Plain {
    fn bytes(&self) -> &[u8] {
        match self {
            Plain::Raw(b) => b,
            Plain::Inflated(v) => v,
        }
    }
}

/// Write decoded blocks in order; bytes written and the file.
fn write_plain(
    mut file: File,
    what: &str,
    (background_sync, pace, already): (bool, Option<Pace>, u64),
    pool: &Pool,
    rx: std::sync::mpsc::Receiver<(Plain, Loan)>,
) -> Result<(u64, File)> {
    let mut n: u64 = 0;
    let mut synced_at: u64 = 0;
    let syncer = if background_sync {
        Syncer::start(&file)
    } else {
        None
    };
    while let Ok((plain, loan)) = rx.recv() {
        file.write_all(plain.bytes())
            .map_err(|e| Error::io(format!("writing {what}"), &e))?;
        n += plain.bytes().len() as u64;
        match plain {
            Plain::Raw(b) => pool.recycle(b),
            Plain::Inflated(v) => pool.give(v),
        }
        drop(loan); // the block is in the page cache now
        if let Some(p) = &pace {
            p(already + n);
        }
        if n - synced_at >= SYNC_EVERY {
            synced_at = n;
            if let Some(s) = &syncer {
                s.kick();
            }
        }
    }
    drop(syncer);
    Ok((n, file))
}

/// A helper thread that runs fdatasync on request, so write-back overlaps the
/// transfer. A request made while one is running is merged into the next.
struct Syncer {
    tx: std::sync::mpsc::SyncSender<()>,
}

impl Syncer {
    fn start(file: &File) -> Option<Syncer> {
        let clone = file.try_clone().ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sft-writeback".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let _ = rustix::fs::fdatasync(&clone);
                }
            })
            .ok()?;
        Some(Syncer { tx })
    }
    fn kick(&self) {
        let _ = self.tx.try_send(());
    }
}

/// Decode, hash and write blocks gathered in memory (a small transfer) to
/// `file` on this thread: the bytes written and their SHA-256. `what`
/// names the file in errors.
pub fn write_gathered(file: &File, blocks: &[Block], what: &str) -> Result<(u64, [u8; 32])> {
    let mut decoder = Decoder::new();
    let mut buf = Vec::new();
    let mut h = Sha256::new();
    let mut n: u64 = 0;
    let mut out = file;
    for b in blocks {
        let data: &[u8] = if b.encoding == Encoding::Raw && b.payload.len() == b.raw_len as usize {
            &b.payload
        } else {
            decoder.decode(b.encoding, b.raw_len, &b.payload, &mut buf)?;
            &buf
        };
        h.update(data);
        out.write_all(data)
            .map_err(|e| Error::io(format!("writing {what}"), &e))?;
        n += data.len() as u64;
    }
    Ok((n, h.finalize().into()))
}
