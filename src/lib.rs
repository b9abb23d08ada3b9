//! sft: secure file transfer over TLS 1.3.
//!
//! Layers, bottom up:
//! - [`protocol`]: frames and messages, bytes in and out, no I/O (PROTOCOL.md).
//! - [`connection`]: moves frames over any async stream, with deadlines.
//! - [`net`]: the socket under TLS, the deadline helper, descriptor limits.
//! - [`transfer`]: the streaming pipeline: read/hash/write on blocking threads.
//! - [`compress`]: zstd blocks on the wire and the adaptive `auto` policy.
//! - [`names`]: the one name validator, "name (1).ext", terminal escaping.
//! - [`units`]: sizes as people write and read them.
//! - [`tls`] and [`certs`]: TLS 1.3 configuration, trust (pin / CA / known
//!   servers), rcgen.
//! - [`server`]: listener, sessions, root-confined storage, accounts and the
//!   users file, quotas (reservations), state.
//! - [`client`]: a typed client over one session, pipelined many-file
//!   transfers, the known-servers file.
//! - [`config`]: the client's config file and profiles.
//! - [`progress`]: progress bars on a terminal.
//! - [`cli`] and [`app`]: the command line, one module per command group.
//! - [`error`]: one error type; kinds map to wire codes and exit codes.

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
pub mod progress;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod transfer;
pub mod units;
