//! `sft serve`'s options (clap types only). Doc comments are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FsyncArg {
    /// fsync each upload and its directory before acknowledging it (default)
    Always,
    /// acknowledge once data is in the page cache: faster, but a crash can lose acknowledged uploads (scratch storage only)
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory whose files are served (created if missing; its parent must exist)
    #[arg(long, default_value = "sft-data", value_name = "DIR")]
    pub root: PathBuf,
    /// Address to listen on; port 0 picks a free port (the first line printed is "listening on ADDR")
    #[arg(long, default_value = "0.0.0.0:7373", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Certificate chain, PEM (default: a self-signed one kept in the state directory)
    #[arg(long, value_name = "CERT.pem", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key, PEM: RSA, ECDSA P-256/P-384 or Ed25519; PKCS#8, PKCS#1 or SEC1
    #[arg(long, value_name = "KEY.pem", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Accepted access tokens, one per line, each an admin (default: a generated token kept in the state directory)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Users with roles (TOML, made with `sft user add`); re-read when it changes
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Where the server keeps its certificate, key and token (never inside --root)
    #[arg(long, env = "SFT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// When an acknowledged upload must be on stable storage
    #[arg(long, value_enum, default_value = "always")]
    pub fsync: FsyncArg,
    /// Most authenticated sessions at once; more get "server busy"
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Most connections still in their TLS handshake or authentication;
    /// beyond it the oldest waiting one is dropped to make room
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_unauthenticated: usize,
    /// Most unauthenticated connections from one address; beyond it that
    /// address's oldest waiting one is dropped
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_unauthenticated_per_address: usize,
    /// Deadline for the TLS handshake
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Deadline for HELLO and authentication after the handshake
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,
    /// Close sessions idle for this long between commands
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Abort a transfer when no data moves (either way) for this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub data_timeout: Duration,
    /// How long the data of an interrupted upload is kept for resuming it
    /// (counted against the uploader's quota meanwhile); 0 keeps none
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub keep_partial: Duration,
    /// On SIGTERM/SIGINT, how long transfers in flight may take to finish
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Offer zstd compression on the wire to clients that ask for it
    #[arg(long, value_enum, default_value = "on")]
    pub compression: OnOff,
    /// Serve share links over HTTPS on the same port (browsers and curl; `sft share`)
    #[arg(long, value_enum, default_value = "on")]
    pub web: OnOff,
    /// Highest zstd level the server spends CPU on for downloads (1-19)
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub max_compress_level: i32,
    /// Most bytes stored in all, e.g. 50GiB (per-user limits are in the users file)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub quota: Option<u64>,
    /// Most files stored in all
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,
    /// Refuse uploads that would leave less free space than this on the root's filesystem
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size_arg)]
    pub min_free: u64,
    /// Most bytes all transfers together may hold in buffers, e.g. 64MiB;
    /// when it is lent out, transfers slow down (they read less ahead), they
    /// do not fail
    #[arg(long, value_name = "SIZE", default_value = "24MiB", value_parser = parse_size_arg)]
    pub memory_budget: u64,
    /// Log format on stderr
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Keep files in an S3-compatible object store, s3://BUCKET[/PREFIX],
    /// shared by any number of servers (--root then holds only data in
    /// flight); credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
    pub store: Option<String>,
    /// The object store's URL (default: AWS S3)
    #[arg(long, value_name = "URL", requires = "store")]
    pub s3_endpoint: Option<String>,
    /// The object store's region (default: AWS_REGION, else us-east-1)
    #[arg(long, value_name = "REGION", requires = "store")]
    pub s3_region: Option<String>,
    /// Allow plain http:// to the object store (a test engine on loopback)
    #[arg(long, requires = "store")]
    pub s3_allow_http: bool,
    /// Blobs (part sets) no file names are removed once their newest part is
    /// older than this (keep it above --data-timeout)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, requires = "store")]
    pub s3_gc_grace: Duration,
    /// Quota reservations, and uploads kept for resuming, of a server silent
    /// this long (crashed) expire
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "store")]
    pub s3_lease: Duration,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s).map_err(|e| e.message)
}
