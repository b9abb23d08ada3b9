//! One function per subcommand: validated options in, client or server call,
//! results on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

mod cert;
mod shell;
mod trust;
mod user;

use crate::cli::{AdminCmd, Cli, Command, ConnArgs, FsyncArg, ServeArgs};
use crate::client::{self, Client};
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::EntryKind;
use crate::server::{self, auth::Tokens, state, store::Fsync};
use crate::tls;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Serve(args) => serve(*args).await,
        Command::Cert(c) => cert::command(c),
        Command::User(c) => user::command(c),
        Command::Trust(a) => trust::command(&cli.conn, a).await,
        cmd => {
            let opts = client_options(&cli.conn)?;
            client_command(&opts, cmd, cli.conn.stats).await
        }
    }
}

/// Write to stdout; a closed pipe (`sft ls | head`) is not an error.
pub(crate) fn out(line: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing to stdout", &e)),
    }
}

fn client_options(c: &ConnArgs) -> Result<client::Options> {
    let server = c
        .server
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", client::DEFAULT_PORT));
    let trust = trust::resolve(c, &server)?;
    let token = match (&c.token, &c.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => state::read_private(f)?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        (None, None) => {
            return Err(Error::usage(
                "no access token: set SFT_TOKEN, or pass --token-file FILE ('sft serve' prints one)",
            ));
        }
    };
    if token.is_empty() {
        return Err(Error::usage(
            "the access token is empty; check SFT_TOKEN / --token-file",
        ));
    }
    Ok(client::Options {
        server,
        trust,
        token,
        timeout: c.timeout,
        compress: crate::compress::Mode::parse(&c.compress)?,
        limit_rate: c
            .limit_rate
            .as_deref()
            .map(crate::units::parse_size)
            .transpose()
            .map_err(|e| e.context("--limit-rate"))?,
    })
}

async fn client_command(opts: &client::Options, cmd: Command, stats: bool) -> Result<()> {
    // check arguments before connecting
    match &cmd {
        Command::Put { files, as_name, .. } => {
            if as_name.is_some() && files.len() > 1 {
                return Err(Error::usage(
                    "--as names a single upload; give one file, or drop --as",
                ));
            }
            if let Some(n) = as_name {
                names::validate(n)?;
            }
        }
        Command::Get { name, sha256, .. } => {
            names::validate(name)?;
            if let Some(h) = sha256 {
                parse_sha256(h)?;
            }
        }
        Command::Rm { name } => names::validate(name)?,
        Command::Ls { dir: Some(d) } => names::validate(d)?,
        _ => {}
    }
    let mut c = Client::connect(opts).await?;
    let result = run_on(&mut c, cmd, stats).await;
    match &result {
        // the session is still in step after a refused request: end it politely
        Err(e)
            if matches!(
                e.kind,
                crate::error::Kind::Network | crate::error::Kind::Protocol
            ) => {}
        // the work is done (an acknowledged upload is durable): a server that
        // is shutting down and refuses BYE does not make it a failure
        _ => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.bye()).await;
        }
    }
    result
}

async fn run_on(c: &mut Client, cmd: Command, stats: bool) -> Result<()> {
    match cmd {
        Command::Ls { dir } => {
            for e in c.list(dir.as_deref().unwrap_or("")).await? {
                let digest = e.sha256.map(hex::encode).unwrap_or_else(|| "-".repeat(64));
                let name = match e.kind {
                    EntryKind::Dir => format!("{}/", names::escape(&e.name)),
                    EntryKind::File => names::escape(&e.name),
                };
                let owner = if e.owner.is_empty() {
                    "-".to_string()
                } else {
                    names::escape(&e.owner)
                };
                out(&format!(
                    "{digest}  {:>14}  {}  {owner:<12}  {name}",
                    e.size,
                    format_time(e.mtime_ns)
                ))?;
            }
        }
        Command::Put {
            files,
            as_name,
            overwrite,
        } => {
            for f in &files {
                let remote = match &as_name {
                    Some(n) => n.clone(),
                    None => default_remote_name(f)?,
                };
                let up = c.put(f, &remote, overwrite).await?;
                if stats {
                    print_stats(&up.name, up.size, up.wire, up.seconds);
                }
                out(&format!(
                    "{}  {}",
                    hex::encode(up.sha256),
                    names::escape(&up.name)
                ))?;
            }
        }
        Command::Get {
            name,
            output,
            sha256,
            force,
        } => {
            let expect = sha256.as_deref().map(parse_sha256).transpose()?;
            let dest = local_destination(&name, output.as_deref());
            let got = c.get(&name, &dest, force, expect).await?;
            if stats {
                print_stats(&name, got.size, got.wire, got.seconds);
            }
            out(&format!(
                "{}  {}",
                hex::encode(got.sha256),
                got.path.display()
            ))?;
        }
        Command::Rm { name } => c.remove(&name).await?,
        Command::Mkdir { name } => c.mkdir(&name).await?,
        Command::Shell => shell::run(c).await?,
        Command::Admin(AdminCmd::Shutdown { grace }) => {
            c.shutdown(grace).await?;
            eprintln!(
                "sft: the server is shutting down: no new connections; transfers in flight get {}",
                match grace {
                    Some(g) => humantime::format_duration(g).to_string(),
                    None => "the server's grace period".to_string(),
                }
            );
        }
        Command::Df { bytes } => {
            let u = c.usage().await?;
            let size = |n: u64| {
                if n == u64::MAX {
                    "-".to_string()
                } else if bytes {
                    n.to_string()
                } else {
                    crate::units::human(n)
                }
            };
            let count = |n: u64| {
                if n == u64::MAX {
                    "-".to_string()
                } else {
                    n.to_string()
                }
            };
            out(&format!(
                "{:<24} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
                "NAME", "USED", "RESERVED", "LIMIT", "LEFT", "FILES", "MAX_FILES"
            ))?;
            for r in &u.rows {
                let name = if r.name.is_empty() {
                    "(server)".to_string()
                } else {
                    names::escape(&r.name)
                };
                let left = if r.quota == u64::MAX {
                    u64::MAX
                } else {
                    r.quota.saturating_sub(r.bytes.saturating_add(r.reserved))
                };
                out(&format!(
                    "{name:<24} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
                    size(r.bytes),
                    size(r.reserved),
                    size(r.quota),
                    size(left),
                    r.files,
                    count(r.max_files)
                ))?;
            }
            out(&format!(
                "disk: {} free on the server, {} kept free (--min-free)",
                size(u.disk_free),
                size(u.min_free)
            ))?;
        }
        Command::Admin(AdminCmd::Reload) => {
            c.reload().await?;
            eprintln!("sft: the server reloaded its certificate and users file");
        }
        Command::Admin(AdminCmd::Status) => {
            let st = c.status().await?;
            out(&format!(
                "uptime: {}
connections: {}
transfers in flight: {}
bytes in: {} ({})
bytes out: {} ({})
storage used: {} bytes in {} files ({})",
                humantime::format_duration(std::time::Duration::from_secs(st.uptime_s)),
                st.connections,
                st.transfers,
                st.bytes_in,
                crate::units::human(st.bytes_in),
                st.bytes_out,
                crate::units::human(st.bytes_out),
                st.storage_bytes,
                st.files,
                crate::units::human(st.storage_bytes),
            ))?;
        }
        Command::Serve(_) | Command::Cert(_) | Command::User(_) | Command::Trust(_) => {}
    }
    Ok(())
}

/// What crossed the wire for one file, on stderr (stdout carries results).
fn print_stats(name: &str, size: u64, wire: u64, secs: f64) {
    let ratio = if wire == 0 {
        1.0
    } else {
        size as f64 / wire as f64
    };
    let rate = if secs > 0.0 {
        size as f64 / secs / 1e6
    } else {
        0.0
    };
    eprintln!(
        "stats: {}: file {size} bytes, wire {wire} bytes, ratio {ratio:.2}, {secs:.2} s, {rate:.1} MB/s",
        names::escape(name)
    );
}

/// The remote name for a local file: its file name.
fn default_remote_name(p: &Path) -> Result<String> {
    let name = p
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} has no file name; use --as NAME", p.display())))?
        .to_str()
        .ok_or_else(|| {
            Error::usage(format!("{} is not valid UTF-8; use --as NAME", p.display()))
        })?;
    names::validate(name)?;
    Ok(name.to_string())
}

/// Where a download goes: `-o PATH`, inside `-o DIR/`, or ./NAME.
fn local_destination(remote: &str, output: Option<&Path>) -> PathBuf {
    let (_, base) = names::split_parent(remote);
    match output {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => p.join(base),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(base),
    }
}

fn parse_sha256(h: &str) -> Result<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(h.trim().to_ascii_lowercase(), &mut d).map_err(|_| {
        Error::usage(format!(
            "invalid --sha256 {:?}: expected 64 hex digits as printed by sha256sum",
            names::escape(h)
        ))
    })?;
    Ok(d)
}

/// UTC time, to the second, RFC 3339.
fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    let state_dir = a.state_dir.clone().unwrap_or_else(state::default_dir);
    std::fs::create_dir_all(&a.root)
        .map_err(|e| Error::io(format!("creating root directory {}", a.root.display()), &e))?;
    let needs_state = a.cert.is_none() || (a.token_file.is_none() && a.users.is_none());
    if needs_state {
        state::ensure_dir(&state_dir)?;
        state::check_separate(&a.root, &state_dir)?;
    }
    let (cert, key) = match (&a.cert, &a.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let (c, k) = (state_dir.join("cert.pem"), state_dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                let pem = crate::certs::self_signed(&crate::certs::default_names())?;
                state::write_private(&k, pem.key.as_bytes())?;
                state::write_private(&c, pem.cert.as_bytes())?;
            }
            (c, k)
        }
    };
    let (tokens, generated) = match &a.token_file {
        None if a.users.is_some() => (Tokens::default(), None),
        Some(f) => {
            let t = Tokens::from_lines(&state::read_private(f)?);
            if t.is_empty() {
                return Err(Error::usage(format!(
                    "{} holds no tokens; put one token per line",
                    f.display()
                )));
            }
            (t, None)
        }
        None => {
            let f = state_dir.join("token");
            if !f.exists() {
                state::write_private(
                    &f,
                    format!("{}\n", server::store::random_hex(32)).as_bytes(),
                )?;
            }
            let text = state::read_private(&f)?;
            (
                Tokens::from_lines(&text),
                Some((f, text.lines().next().unwrap_or("").trim().to_string())),
            )
        }
    };
    let fingerprint = tls::fingerprint(&tls::load_certs(&cert)?[0]);
    let root_shown = std::fs::canonicalize(&a.root).unwrap_or_else(|_| a.root.clone());
    let banner = {
        let fp = fingerprint.clone();
        let root = root_shown.display().to_string();
        move |addr: std::net::SocketAddr| {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let server = if addr.is_ipv6() && !addr.ip().is_unspecified() {
                format!("[{host}]:{}", addr.port())
            } else {
                format!("{host}:{}", addr.port())
            };
            let mut s = format!("root: {root}\ncertificate sha256: {fp}\n");
            match &generated {
                Some((file, token)) => {
                    s.push_str(&format!("token: {token}  (kept in {})\n", file.display()));
                    s.push_str(&format!("connect with:\n  export SFT_SERVER={server} SFT_PIN={fp} SFT_TOKEN={token}\n  sft put FILE && sft ls\n"));
                }
                None => s.push_str(&format!(
                    "connect with:\n  sft --server {server} --pin {fp} --token-file FILE ls\n"
                )),
            }
            s
        }
    };
    let limits = server::Limits {
        max_connections: a.max_connections.max(1),
        handshake: a.handshake_timeout,
        auth: a.auth_timeout,
        idle: a.idle_timeout,
        data: a.data_timeout,
        grace: a.grace,
    };
    server::run(server::Config {
        root: a.root,
        listen: a.listen,
        fsync: match a.fsync {
            FsyncArg::Always => Fsync::Always,
            FsyncArg::Never => Fsync::Never,
        },
        tokens,
        users: a.users.clone(),
        cert,
        key,
        limits,
        quota: server::quota::Limits {
            quota: a.quota,
            max_files: a.max_files,
            min_free: a.min_free,
        },
        compression: a.compression == crate::cli::OnOff::On,
        max_level: a.max_compress_level,
        banner: Some(Box::new(banner)),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_land_where_asked() {
        assert_eq!(local_destination("a/b.txt", None), PathBuf::from("b.txt"));
        assert_eq!(
            local_destination("b.txt", Some(Path::new("out.bin"))),
            PathBuf::from("out.bin")
        );
        assert_eq!(
            local_destination("d/b.txt", Some(Path::new("x/"))),
            PathBuf::from("x/b.txt")
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
    }
}
