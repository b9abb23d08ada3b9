//! sft: secure file transfer over TLS 1.3.
//!
//! Layers, bottom up:
//! - [`protocol`]: frames and messages, bytes in and out, no I/O (PROTOCOL.md).
//! - [`connection`]: moves frames over any async stream, with deadlines.
//! - [`net`]: the socket under TLS, the deadline helper, descriptor limits.
//! - [`private`]: files only their owner may read; secrets from the OS generator.
//! - [`transfer`]: the streaming pipeline: read/hash/write on blocking threads.
//! - [`compress`]: zstd blocks on the wire and the adaptive `auto` policy.
//! - [`names`]: the one name validator, "name (1).ext", terminal escaping.
//! - [`units`]: sizes as people write and read them.
//! - [`tls`] and [`certs`]: TLS 1.3 configuration, trust (pin / CA / known
//!   servers), rcgen.
//! - [`server`]: listener, sessions, root-confined storage (or an S3 bucket
//!   shared by several servers, `server::object`), accounts and the users
//!   file, quotas (reservations), state.
//! - [`client`]: a typed client over one session, pipelined many-file
//!   transfers, the known-servers file.
//! - [`config`]: the client's config file and profiles.
//! - [`progress`]: progress bars on a terminal.
//! - [`cli`] and [`app`]: the command line, one module per command group.
//! - [`error`]: one error type; kinds map to wire codes and exit codes.
//!
//! # Threads
//!
//! Every thread and task that exists, who starts it, what bounds it, and how
//! it ends. Async tasks run on one tokio multi-thread runtime (`main.rs`,
//! one worker per core); blocking work goes to tokio's blocking pool or to
//! named OS threads.
//!
//! Server (`sft serve`):
//! - The accept loop (`server::run`): one task. Ends on SIGTERM/SIGINT or an
//!   admin SHUTDOWN, then drains the connection tasks within `--grace`. It
//!   also expires interrupted uploads kept for resuming (`server::partial`)
//!   on a tick of min(`--keep-partial` / 4, 60 s): no task of their own.
//! - One task per connection (`session::serve`, in the accept loop's
//!   `JoinSet`). Before authentication it is bounded by the gate
//!   (`--max-unauthenticated`, per address; oldest dropped) and by the
//!   handshake/auth deadlines; afterwards by `--max-connections`. It ends at
//!   BYE, an error, the idle timeout, a stalled write (`--data-timeout`) or
//!   shutdown. An idle session is this task alone: no thread, no buffers
//!   beyond its socket's (`tests/hostile.rs` counts `/proc/PID/task` with
//!   1,000 idle sessions).
//! - The disk workers (`server::disk`): `sft-disk` threads, twice the cores
//!   (4 to 32), started with the server and ending with it. All batched disk
//!   work of every session runs on them: writing, syncing and publishing
//!   small uploads, reading small downloads and listings ahead, CLONE's
//!   server-side copy. A session owns no thread.
//! - Per session, started by its first small upload: the committer's two
//!   tasks (one has a batch written while the other has the batch before it
//!   synced and published); started by its first GET or LIST: the reader's
//!   task. Their work runs on the disk workers; they end when the session
//!   drops their queues (after what was already queued).
//! - Per large upload (`transfer::spawn_writer`): a blocking-pool task that
//!   decompresses and hashes, an `sft-write` thread that writes, and under
//!   `--fsync always` an `sft-writeback` thread starting write-back every
//!   32 MiB. All end at the upload's last block or when it is abandoned.
//! - Per large download (`transfer::spawn_reader`): a blocking-pool task
//!   that reads and hashes, and when compressing up to two `sft-zstd`
//!   threads; they end at the file's end or when the receiver is dropped.
//! - A connection that joined a session with a ticket (`--streams`) is a
//!   connection task like any other (it takes a session slot), bound to
//!   one ranged upload or to GET_RANGEs; it ends at BYE, an error, the idle
//!   timeout, or when its upload is finished. Each DATA block of a RANGE is
//!   decoded and written by one blocking-pool task, and each finished range
//!   hashes the file's newly contiguous prefix in another (reading it back);
//!   a GET_RANGE uses the large-download reader above.
//! - MKDIR, RMDIR, REMOVE, STAT, USAGE, a large upload's final commit: one
//!   blocking-pool task each, for the call. tokio's blocking pool grows as
//!   needed, so these never wait behind the disk workers' whole-file batches.
//! - The content index (`server::content`), for CLONE: one `sft-index`
//!   thread, started by the first CLONE after the server starts, walks the
//!   root once and ends; later commits and removals update it in place.
//! - With `--store s3://` (`server::object`): a second tokio runtime of two
//!   `sft-s3` worker threads runs every object-store request; storage calls
//!   (on blocking threads, as for the disk) hand it a future and wait. One
//!   `sft-lease` thread rewrites this server's heartbeat every
//!   `--s3-lease` / 8, resolves the reservations of servers gone (reading
//!   every manifest, only when there are such) and every ten minutes
//!   compacts the quota ledger; it ends at its next wake after the ledger is
//!   dropped. One `sft-gc` thread collects orphan blobs at start and then every
//!   `--s3-gc-grace` / 2 (1 min to 1 h); it ends at its next wake after the
//!   bucket is dropped. A quota reservation released by `Drop` is recorded
//!   by a short `sft-release` thread (so no async thread waits on the
//!   network). A batch of pipelined small uploads is committed by up to 16
//!   scoped threads at once, which end with the batch. The transfer threads
//!   above are unchanged: a large upload is written to a scratch file in
//!   `--root`, and one `sft-ship` thread per upload sends its parts as they
//!   are written (it ends with the upload, or with the kept partial); a
//!   whole large download is read from a pipe that one `sft-fetch` thread
//!   per download fills from the parts (it ends at the last byte or when the
//!   reader goes).
//!
//! Client: the same runtime; a blocking-pool task that prepares pipelined
//! uploads ahead, one that stores small downloads, one that reads standard
//! input for `put -`, the transfer threads above for large files, and in
//! `sft shell` one `sft-shell-input` thread reading lines. A transfer over
//! several connections (`client::streams`) runs one task per joined
//! connection (at most 8 with `auto`, N with `--streams N`), started and
//! replaced by the command's task, each ending when no range is left or its
//! connection fails; blocking-pool tasks read, compress, decode, write and
//! hash its blocks, and one hashes the whole local file for an upload. Ctrl-C and
//! SIGTERM are listened for by the command's own task (`app::client_command`,
//! and per command in the shell), not by a thread; retries reconnect from
//! that same task.
//!
//! # Memory
//!
//! The buffers of every transfer are borrowed from one server-wide
//! budget (`--memory-budget`, `transfer::Budget`, in `Shared`): a large
//! upload borrows room for each DATA frame before reading it from the socket
//! and repays it when the block is written; a large download borrows before
//! reading each block from disk and repays it once the frame is sent; a
//! small upload borrows for all of its data before reading it and repays it
//! when it is written (for pipelined ones, by the committer); a small
//! download read ahead borrows for its whole reply before it is read and
//! repays it once the reply is handed to the connection (a reader that
//! finds the budget lent out waits for it in its task, never on a disk
//! worker, whose work may be what repays it). A transfer
//! that finds the budget lent out waits — the socket is not read, so TCP
//! holds the client back — and never holds one loan while it waits for
//! another, and no loan exceeds the budget, so waits always end. Free chunk
//! buffers are kept in one pool for the whole server, at most the budget's
//! worth (so buffers allocated never exceed the most lent at once, and
//! they are reused rather than left in per-thread malloc arenas), and freed
//! when no transfer runs. The client's transfers borrow from an unlimited
//! budget. With `--store s3://` the parts moved between the scratch file and
//! the bucket (`server::object::{ship, blob}`) are outside the budget: per
//! upload at most two 8 MiB parts being sent, per download at most three
//! being fetched or served (a 2 GiB put and get: 63–95 MiB resident,
//! `benches/s3.sh`). A ranged upload (several connections, PROTOCOL.md §4.10) holds
//! no range data of its own: each joined connection borrows for the one
//! block it has read, as above, and the in-order SHA-256 reads back from
//! the file (the page cache) what the ranges wrote, with one 256 KiB
//! buffer, so 8 streams of one file cost 8 connections' blocks and a
//! constant, whatever the file's size or the order ranges arrive in
//! (`transfer::Assembly`: one map entry per gap beyond the contiguous
//! prefix, at most the ranges in flight). `benches/memory.sh` measures the whole: 32 concurrent large
//! uploads and 32 downloads stay under 64 MiB resident.

#![forbid(unsafe_code)]

pub mod app;
pub mod certs;
pub mod cli;
pub mod client;
pub mod compress;
pub mod config;
pub mod connection;
pub mod error;
pub mod names;
pub mod net;
pub mod private;
pub mod progress;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod transfer;
pub mod units;
