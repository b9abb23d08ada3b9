//! The server: the accept loop with its connection limit, graceful shutdown
//! on SIGTERM/SIGINT, certificate reload on SIGHUP, and the shared state every
//! session uses.

pub mod ahead;
pub mod auth;
pub mod commit;
pub mod content;
pub mod disk;
pub mod fetch;
pub mod gate;
pub mod handshake;
pub mod object;
pub mod partial;
pub mod policy;
pub mod quota;
pub mod session;
pub mod share;
pub mod state;
pub mod store;
pub mod tickets;
pub mod users;
pub mod verify;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::tls::{self, CertSlot};

/// Deadlines and limits; every one is configurable from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Authenticated sessions at once; more are told "server busy".
    pub max_connections: usize,
    /// Connections that have not authenticated yet, in all and from one
    /// address; beyond these the oldest waiting one is dropped (see `gate`).
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
    pub handshake: Duration,
    pub auth: Duration,
    pub idle: Duration,
    pub data: Duration,
    pub grace: Duration,
    /// How long an interrupted upload's data is kept for resuming.
    pub keep_partial: Duration,
    /// Bytes all transfers together may hold in buffers (`--memory-budget`;
    /// see [`crate::transfer::Budget`]).
    pub memory_budget: u64,
}

/// `--memory-budget` unless told otherwise.
pub const MEMORY_BUDGET: u64 = 24 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_unauthenticated: 512,
            max_unauthenticated_per_address: 64,
            handshake: Duration::from_secs(5),
            auth: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            data: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            keep_partial: Duration::from_secs(24 * 3600),
            memory_budget: MEMORY_BUDGET,
        }
    }
}

/// Everything `run` needs, validated.
pub struct Config {
    /// Files live in this bucket (`--store s3://`), `root` is scratch.
    pub object: Option<object::Location>,
    /// Orphan blobs older than this are collected (`--s3-gc-grace`).
    pub gc_grace: Duration,
    /// A silent server's quota reservations expire after this (`--s3-lease`).
    pub s3_lease: Duration,
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub fsync: store::Fsync,
    pub tokens: auth::Tokens,
    /// A users file, re-read whenever it changes.
    pub users: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub limits: Limits,
    /// Storage limits.
    pub quota: quota::Limits,
    /// Offer zstd DATA blocks to clients that support them.
    pub compression: bool,
    /// Highest zstd level this server spends CPU on for downloads.
    pub max_level: i32,
    /// Serve share links over HTTPS on the same port (ALPN h2, http/1.1).
    pub web: bool,
    /// Where share links are kept (`shares.json`); None: no share links.
    pub state_dir: Option<PathBuf>,
    /// Printed to stdout after the "listening on" line (zero-config help).
    pub banner: Option<Box<dyn Fn(SocketAddr) -> String + Send>>,
}

/// Counters for `sft admin status`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub transfers: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Counts one thing in progress (a connection, a transfer) while alive.
pub struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub fn new(c: &'a AtomicU64) -> Gauge<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Gauge(c)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests from sessions to the accept loop.
pub enum Control {
    /// Stop accepting, drain within `grace` (the server's default if None), exit.
    Shutdown { grace: Option<Duration>, by: String },
    /// Reload the certificate and the users file now.
    Reload { done: oneshot::Sender<Result<()>> },
}

/// State shared by all sessions.
pub struct Shared {
    pub store: store::Store,
    pub ledger: Arc<quota::Ledger>,
    pub accounts: auth::Accounts,
    pub limits: Limits,
    pub compression: bool,
    pub max_level: i32,
    pub started: Instant,
    pub stats: Stats,
    pub control: mpsc::Sender<Control>,
    /// Becomes true when the server starts shutting down: idle sessions end.
    pub stop: watch::Receiver<bool>,
    /// Becomes true when the grace period is over: transfers still running
    /// are aborted (their uploads discarded) with a message to the client.
    pub abort: watch::Receiver<bool>,
    /// Session slots (`--max-connections`), taken once a client authenticated.
    pub sessions: Arc<Semaphore>,
    /// Log lines about strangers (failed handshakes, timeouts) are
    /// rate-limited: a flood must not flood the log too.
    pub quiet_handshakes: gate::Throttle,
    /// Likewise "server busy" refusals.
    pub busy_log: gate::Throttle,
    /// Interrupted uploads kept for resuming.
    pub partials: partial::Partials,
    /// Share links (made over sft, used over HTTPS).
    pub shares: share::Shares,
    /// Browsers signed in to the browse page.
    pub web_sessions: web::browse::Sessions,
    /// HTTPS is served on the sft port (`--web on`).
    pub web: bool,
    /// What the buffers of all transfers together may hold
    /// (`--memory-budget`): uploads borrow before each DATA frame is read
    /// from the socket, downloads before each block is read from disk.
    pub budget: crate::transfer::Budget,
    /// Free chunk buffers, shared by every transfer for reuse, at most the
    /// budget's worth: a buffer is allocated only when none is free, so
    /// the buffers allocated never exceed the most ever lent at once, and
    /// they are reused rather than freed to the allocator (whose per-thread
    /// arenas would each keep their own). Freed while no transfer runs.
    pub pool: crate::transfer::Pool,
    /// The disk workers every session's batched disk work runs on.
    pub disk: disk::Disk,
    /// Tickets with which further connections join a session's transfer.
    pub tickets: tickets::Tickets,
    /// Refused JOINs are logged at most once a second.
    pub join_log: gate::Throttle,
}

fn load_cert(cfg: &Config) -> Result<Arc<rustls::sign::CertifiedKey>> {
    tls::certified_key(tls::load_certs(&cfg.cert)?, tls::load_key(&cfg.key)?)
}

/// Run the server until SIGTERM or SIGINT, then drain within the grace period.
pub async fn run(cfg: Config) -> Result<()> {
    let fds = crate::net::raise_fd_limit();
    let need = (cfg.limits.max_connections + cfg.limits.max_unauthenticated) as u64 * 2 + 64;
    match fds {
        Some(n) if n < need => warn!(
            limit = n,
            "open-file limit {n} is low for --max-connections {} and --max-unauthenticated {} (about {need} wanted); raise it (LimitNOFILE=, ulimit -n) or lower them",
            cfg.limits.max_connections,
            cfg.limits.max_unauthenticated
        ),
        Some(n) => info!(limit = n, "open-file limit {n}"),
        None => info!("open-file limit: unlimited"),
    }
    let mut cfg = cfg;
    let bucket = match cfg.object.take() {
        Some(loc) => Some(object::open(loc, &cfg.root, cfg.gc_grace, cfg.s3_lease)?),
        None => None,
    };
    let store = match &bucket {
        // an upload kept for resuming is its parts in the bucket (marked
        // held/) and its unsent tail in this server's scratch: the same
        // server resumes it
        Some((b, _)) => store::Store::open_object(&cfg.root, b.clone())?,
        None => store::Store::open(&cfg.root, cfg.fsync)?,
    };
    match store.sweep() {
        Ok(0) => {}
        Ok(n) => info!("removed {n} leftover temporary files"),
        Err(e) => warn!("could not sweep leftover temporary files: {e}"),
    }
    // usage is rebuilt from what is on disk, so a crash never leaks quota
    let on_disk = store.usage()?;
    let without_owner = on_disk.get("").map_or(0, |&(_, files)| files);
    let without_digest = store.without_digest.load(Ordering::Relaxed);
    if without_owner > 0 || without_digest > 0 {
        warn!(
            without_owner,
            without_digest,
            "files without a recorded owner: {without_owner} (only an admin may remove them); without a recorded SHA-256: {without_digest} (hashed on first use). A backup restored without extended attributes does this: restore with tar --xattrs, rsync -aX or cp -a"
        );
    } else {
        let files: u64 = on_disk.values().map(|&(_, f)| f).sum();
        info!(
            files,
            "files under the root: {files}, each with a recorded owner and SHA-256"
        );
    }
    let ledger = Arc::new(match &bucket {
        Some((_, book)) => quota::Ledger::shared(cfg.quota, book.clone()),
        None => quota::Ledger::new(cfg.quota, on_disk.into_iter().map(|(o, (b, f))| (o, b, f))),
    });
    let accounts = auth::Accounts::new(cfg.tokens.clone(), cfg.users.as_deref())?;
    if accounts.is_empty() {
        return Err(Error::usage(
            "no users: the token file and the users file name nobody; add one with: sft user add NAME --role admin --users FILE",
        ));
    }
    let slot = CertSlot::new(load_cert(&cfg)?);
    let acceptor = TlsAcceptor::from(tls::server_config_for(slot.clone(), cfg.web)?);
    let shares = share::Shares::open(cfg.state_dir.clone())?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        Error::io(format!("listening on {}", cfg.listen), &e)
            .context("is another server using that port? choose one with --listen")
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", &e))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        if let Some(b) = &cfg.banner {
            let _ = write!(out, "{}", b(addr));
        }
        let _ = out.flush();
    }
    let limits = cfg.limits.clone();
    info!(%addr, root = %cfg.root.display(), "serving");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let (control_tx, mut control_rx) = mpsc::channel(8);
    let shared = Arc::new(Shared {
        store,
        ledger,
        accounts,
        limits: limits.clone(),
        compression: cfg.compression,
        max_level: cfg.max_level,
        started: Instant::now(),
        stats: Stats::default(),
        control: control_tx,
        stop: stop_rx,
        abort: abort_rx,
        sessions: Arc::new(Semaphore::new(limits.max_connections)),
        quiet_handshakes: gate::Throttle::new(Duration::from_secs(1)),
        busy_log: gate::Throttle::new(Duration::from_secs(1)),
        partials: partial::Partials::new(limits.keep_partial),
        shares,
        web_sessions: web::browse::Sessions::default(),
        web: cfg.web,
        budget: crate::transfer::Budget::new(limits.memory_budget),
        pool: {
            let pool = crate::transfer::Pool::new();
            let bytes = usize::try_from(limits.memory_budget).unwrap_or(usize::MAX);
            pool.set_keep(usize::MAX, bytes);
            pool
        },
        disk: disk::Disk::start(disk::threads_for(crate::compress::cores()))?,
        tickets: tickets::Tickets::default(),
        join_log: gate::Throttle::new(Duration::from_secs(1)),
    });
    let reload = |shared: &Shared| -> Result<()> {
        let ck = load_cert(&cfg).map_err(|e| e.context("reloading the certificate"))?;
        slot.replace(ck);
        shared
            .accounts
            .reload()
            .map_err(|e| e.context("reloading the users file"))?;
        Ok(())
    };
    let mut grace = limits.grace;
    let gate = gate::Gate::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_address,
    );
    let drop_log = gate::Throttle::new(Duration::from_secs(1));
    let accept_log = gate::Throttle::new(Duration::from_secs(5));
    let mut backoff = Duration::ZERO;
    let mut tasks = JoinSet::new();
    let mut sweep = tokio::time::interval(shared.partials.sweep_every());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sig = |k| signal(k).map_err(|e| Error::io("installing signal handlers", &e));
    let (mut sigterm, mut sigint, mut sighup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    backoff = Duration::ZERO;
                    let _ = tcp.set_nodelay(true);
                    let (pass, dropped) = gate.admit(peer.ip());
                    if let Some(d) = dropped
                        && let Some(held) = drop_log.ready()
                    {
                        warn!(event = "dropped", peer = %d.ip, waiting_from_peer = d.from_ip, waiting = gate.len(), held_back = held,
                            "dropped the oldest unauthenticated connection to make room (--max-unauthenticated {}, {} per address)",
                            limits.max_unauthenticated, limits.max_unauthenticated_per_address);
                    }
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tasks.spawn(session::serve(tcp, peer, acceptor, shared, pass));
                }
                Err(e) => {
                    // out of descriptors: free one held by a stranger, and
                    // back off (10 ms doubling to 1 s) instead of spinning
                    let freed = gate.evict_oldest();
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if let Some(held) = accept_log.ready() {
                        warn!(held_back = held, freed_a_stranger = freed.is_some(), "accept failed: {}; retrying in {}",
                            crate::error::describe_io(&e), crate::net::show_duration(backoff));
                    }
                    tokio::time::sleep(backoff).await;
                }
            },
            _ = sigterm.recv() => { info!(event = "shutdown", by = "SIGTERM", "SIGTERM received"); break; }
            _ = sigint.recv() => { info!(event = "shutdown", by = "SIGINT", "SIGINT received"); break; }
            _ = sighup.recv() => match reload(&shared) {
                Ok(()) => info!(event = "reload", by = "SIGHUP", cert = %cfg.cert.display(), "certificate and users reloaded"),
                Err(e) => warn!(event = "reload", by = "SIGHUP", "reload failed, keeping the old settings: {e}"),
            },
            Some(c) = control_rx.recv() => match c {
                Control::Shutdown { grace: g, by } => {
                    if let Some(g) = g {
                        grace = g;
                    }
                    info!(event = "shutdown", by = %by, grace_s = grace.as_secs_f64(), "shutdown requested by an admin");
                    break;
                }
                Control::Reload { done } => {
                    let r = reload(&shared);
                    match &r {
                        Ok(()) => info!(event = "reload", by = "admin", "certificate and users reloaded"),
                        Err(e) => warn!(event = "reload", by = "admin", "reload failed, keeping the old settings: {e}"),
                    }
                    let _ = done.send(r);
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = sweep.tick() => {
                if shared.stats.transfers.load(Ordering::Relaxed) == 0 {
                    shared.pool.trim(); // the buffers wait for no one
                }
                let n = shared.partials.expire();
                if n > 0 {
                    info!(event = "partial", expired = n, "removed {n} interrupted uploads kept longer than --keep-partial");
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    info!(
        connections = tasks.len(),
        grace_s = grace.as_secs_f64(),
        "shutting down: no new connections; waiting for transfers in flight"
    );
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            aborted = tasks.len(),
            "grace period over; aborting the transfers still running (their uploads are discarded)"
        );
        // sessions tell their clients and discard their uploads; stragglers
        // (a peer that stopped reading) are dropped after a short wait
        let _ = abort_tx.send(true);
        let finished = tokio::time::timeout(Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tasks.shutdown().await;
        }
    }
    // kept partial uploads do not outlive the process (a restart would sweep
    // them): remove them now, so a stopped server leaves only whole files
    let discarded = shared.partials.clear();
    if discarded > 0 {
        info!(
            discarded,
            "removed {discarded} interrupted uploads kept for resuming"
        );
    }
    info!("server stopped");
    Ok(())
}
