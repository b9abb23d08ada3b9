//! One function per subcommand: validated options in, client or server call,
//! results on stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

mod cert;
mod files;
mod output;
mod share;
mod shell;
mod trust;
mod user;

pub use output::{Output, error_value, stdout_closed};

use crate::cli::{AdminCmd, Cli, Command, ConfigCmd, ConnArgs, FsyncArg, ServeArgs};
use crate::client::{self, Client};
use crate::config::{self, Effective};
use crate::error::{Error, Result};
use crate::names;
use crate::private;
use crate::server::{self, auth::Tokens, state, store::Fsync};
use crate::tls;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let o = Output {
        json: cli.conn.json,
        quiet: cli.conn.quiet,
        verbose: cli.conn.verbose,
    };
    match cli.cmd {
        Command::Serve(args) => serve(*args).await,
        Command::Cert(c) => cert::command(c),
        Command::User(c) => user::command(c),
        Command::Trust(a) => trust::command(&cli.conn, a).await,
        Command::Completions { shell } => output::stdout_bytes(&output::completions(shell)),
        Command::Man => output::stdout_bytes(&output::man_page()?),
        Command::Config(ConfigCmd::Show) => config_show(&cli.conn, &o),
        cmd => {
            let eff = config::effective(&cli.conn)?;
            let opts = client_options(&cli.conn, &eff)?;
            client_command(&opts, cmd, cli.conn.stats, &o).await
        }
    }
}

/// Write to stdout; a closed pipe (`sft ls | head`) is not an error.
pub(crate) fn out(line: &str) -> Result<()> {
    output::stdout_line(line)
}

fn client_options(c: &ConnArgs, eff: &Effective) -> Result<client::Options> {
    let server = eff
        .server
        .0
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", client::DEFAULT_PORT));
    let trust = trust::resolve(
        eff.pin.0.as_deref(),
        eff.ca.0.as_deref(),
        eff.known_servers.0.clone(),
        c.trust_on_first_use,
        &server,
    )?;
    let token = match (&eff.token.0, &eff.token_file.0) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => private::read_private(f)?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        (None, None) => {
            return Err(Error::usage(
                "no access token: set SFT_TOKEN, or pass --token-file FILE ('sft serve' prints one), or use a --profile",
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
        timeout: eff.timeout.0,
        compress: crate::compress::Mode::parse(&eff.compress.0)?,
        limit_rate: eff
            .limit_rate
            .0
            .as_deref()
            .map(crate::units::parse_size)
            .transpose()
            .map_err(|e| e.context("--limit-rate"))?,
        resume: !c.no_resume,
        retries: c.retries.unwrap_or(3),
    })
}

/// `sft config show`: every setting in effect, where it comes from, secrets masked.
fn config_show(c: &ConnArgs, o: &Output) -> Result<()> {
    let eff = config::effective(c)?;
    let show = |v: Option<String>| v.unwrap_or_else(|| "(not set)".into());
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let known = eff
        .known_servers
        .0
        .clone()
        .or_else(client::known::default_path);
    let rows: Vec<(&str, String, &str)> = vec![
        ("profile", show(eff.profile.clone()), ""),
        ("config_file", show(path(&eff.config_file)), ""),
        (
            "server",
            show(
                eff.server
                    .0
                    .clone()
                    .or(Some(format!("127.0.0.1:{}", client::DEFAULT_PORT))),
            ),
            eff.server.1.name(),
        ),
        (
            "token",
            show(eff.token.0.as_deref().map(config::mask)),
            eff.token.1.name(),
        ),
        (
            "token_file",
            show(path(&eff.token_file.0)),
            eff.token_file.1.name(),
        ),
        ("pin", show(eff.pin.0.clone()), eff.pin.1.name()),
        ("ca", show(path(&eff.ca.0)), eff.ca.1.name()),
        (
            "known_servers",
            show(path(&known)),
            eff.known_servers.1.name(),
        ),
        ("compress", eff.compress.0.clone(), eff.compress.1.name()),
        (
            "timeout",
            humantime::format_duration(eff.timeout.0).to_string(),
            eff.timeout.1.name(),
        ),
        (
            "limit_rate",
            show(eff.limit_rate.0.clone()),
            eff.limit_rate.1.name(),
        ),
    ];
    if o.json {
        let mut m = serde_json::Map::new();
        for (k, v, src) in &rows {
            m.insert(
                k.to_string(),
                serde_json::json!({"value": v, "source": src}),
            );
        }
        return out(&serde_json::Value::Object(m).to_string());
    }
    for (k, v, src) in rows {
        if src.is_empty() {
            out(&format!("{k:<14} {v}"))?;
        } else {
            out(&format!("{k:<14} {v}  ({src})"))?;
        }
    }
    Ok(())
}

async fn client_command(
    opts: &client::Options,
    cmd: Command,
    stats: bool,
    o: &Output,
) -> Result<()> {
    // check arguments (and read local trees) before connecting
    let mut planned_put = None;
    match &cmd {
        Command::Put {
            paths,
            recursive,
            as_name,
            to,
            ..
        } => {
            let a = files::PutArgs {
                paths,
                recursive: *recursive,
                as_name: as_name.as_deref(),
                to: to.as_deref(),
            };
            if paths.len() == 1 && paths[0].as_os_str() == "-" {
                let name = as_name.as_deref().ok_or_else(|| {
                    Error::usage("uploading standard input needs --as NAME: tar c dir | sft put - --as dir.tar")
                })?;
                names::validate(name)?;
            } else {
                planned_put = Some(files::plan_put(&a, o)?);
            }
        }
        Command::Get {
            names: n,
            output,
            recursive,
            sha256,
            check,
            force,
            ..
        } => files::check_get(&files::GetArgs {
            names: n,
            output: output.as_deref(),
            recursive: *recursive,
            sha256: sha256.as_deref(),
            check: check.as_deref(),
            force: *force,
            stats,
        })?,
        Command::Rm {
            names: n,
            recursive,
            ..
        } => {
            for x in n {
                // `rm -r dir/` as shell completion writes it
                names::validate(if *recursive {
                    x.trim_end_matches('/')
                } else {
                    x
                })?;
            }
        }
        Command::Verify { name, sha256 } => {
            names::validate(name)?;
            files::parse_sha256(sha256)?;
        }
        Command::Mkdir { name } => names::validate(name)?,
        Command::Share(a) => share::check(a)?,
        Command::Ls { dir: Some(d), .. } | Command::Sums { dir: Some(d) } => {
            let d = d.trim_end_matches('/');
            if !d.is_empty() {
                names::validate(d)?;
            }
        }
        _ => {}
    }
    // a transfer that can be run again after a lost connection: it resumes
    // (and what is already there is `unchanged`)
    let retries = match &cmd {
        Command::Put { .. } if planned_put.is_some() => opts.retries,
        Command::Get { output, .. } if output.as_deref().is_none_or(|p| p.as_os_str() != "-") => {
            opts.retries
        }
        _ => 0,
    };
    if let Command::Shell { .. } = cmd {
        // the shell handles Ctrl-C itself: it stops the command running
        return connect_and_run(opts, cmd, stats, o, planned_put).await;
    }
    let mut attempt = 0u32;
    loop {
        let once = connect_and_run(opts, cmd.clone(), stats, o, planned_put.clone());
        let result = tokio::select! {
            r = once => r,
            at = interrupted() => return Err(interrupt_error(at)),
        };
        match result {
            Err(e) if e.kind == crate::error::Kind::Network && attempt < retries => {
                attempt += 1;
                let wait = retry_wait(attempt);
                o.warn_line(&format!(
                    "{e}; retrying in {} (retry {attempt} of {retries})",
                    crate::net::show_duration(wait)
                ));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    at = interrupted() => return Err(interrupt_error(at)),
                }
            }
            r => return r,
        }
    }
}

/// How long to wait before retry `n` (1, 2, …): 1 s doubling, at most 30 s.
fn retry_wait(n: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << n.saturating_sub(1).min(5))
        .min(std::time::Duration::from_secs(30))
}

/// Resolves at the first Ctrl-C (SIGINT) or SIGTERM, with the transfer
/// that was in progress then.
async fn interrupted() -> Option<client::moving::Moving> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // no handlers: the default action ends the process as before
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    client::moving::now()
}

/// The error an interrupted command ends with (exit 130), saying what was
/// kept for resuming.
fn interrupt_error(during: Option<client::moving::Moving>) -> Error {
    Error::new(
        crate::error::Kind::Interrupted,
        client::moving::interrupted_note(during.as_ref()),
    )
}

/// One connection: connect, run the command, say goodbye.
async fn connect_and_run(
    opts: &client::Options,
    cmd: Command,
    stats: bool,
    o: &Output,
    planned_put: Option<(Vec<client::pipeline::PutJob>, Vec<String>)>,
) -> Result<()> {
    let mut c = Client::connect(opts).await?;
    let result = run_on(&mut c, opts, cmd, stats, o, planned_put).await;
    match &result {
        // the session is lost: nothing more to say
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

async fn run_on(
    c: &mut Client,
    opts: &client::Options,
    cmd: Command,
    stats: bool,
    o: &Output,
    planned_put: Option<(Vec<client::pipeline::PutJob>, Vec<String>)>,
) -> Result<()> {
    match cmd {
        Command::Ls {
            dir,
            long,
            bytes,
            full_digest,
        } => files::ls(c, o, dir.as_deref(), long, bytes, full_digest).await?,
        Command::Put {
            as_name,
            overwrite,
            dest_may_be_dir,
            no_preserve,
            ..
        } => match planned_put {
            Some((jobs, empty)) => {
                c.preserve = !no_preserve;
                let jobs = files::into_existing_dir(c, jobs, dest_may_be_dir).await?;
                files::put(c, o, jobs, empty, overwrite, stats).await?
            }
            // no plan: standard input, whose name was checked before connecting
            None => {
                let name = as_name.unwrap_or_default();
                files::put_stdin(c, o, &name, overwrite, stats).await?
            }
        },
        Command::Get {
            names,
            output,
            recursive,
            sha256,
            check,
            force,
            no_preserve,
        } => {
            c.preserve = !no_preserve;
            files::get(
                c,
                o,
                &files::GetArgs {
                    names: &names,
                    output: output.as_deref(),
                    recursive,
                    sha256: sha256.as_deref(),
                    check: check.as_deref(),
                    force,
                    stats,
                },
            )
            .await?
        }
        Command::Rm {
            names,
            recursive,
            yes,
        } => files::rm(c, o, &names, recursive, yes).await?,
        Command::Sums { dir } => files::sums(c, o, dir.as_deref()).await?,
        Command::Verify { name, sha256 } => files::verify(c, o, &name, &sha256).await?,
        Command::Mkdir { name } => {
            c.mkdir(&name).await?;
            o.json_only(|| serde_json::json!({"op": "mkdir", "name": name, "outcome": "ok"}))?;
        }
        Command::Shell { dir } => shell::run(c, opts, dir.as_deref()).await?,
        Command::Share(a) => share::run(c, opts, o, a).await?,
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
        Command::Df { bytes } => files::df(c, o, bytes).await?,
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
storage used: {} bytes in {} ({})",
                humantime::format_duration(std::time::Duration::from_secs(st.uptime_s)),
                connections_text(st.connections.into()),
                st.transfers,
                st.bytes_in,
                crate::units::human(st.bytes_in),
                st.bytes_out,
                crate::units::human(st.bytes_out),
                st.storage_bytes,
                count_text(st.files, "file", "files"),
                crate::units::human(st.storage_bytes),
            ))?;
        }
        _ => {}
    }
    Ok(())
}

/// The server counts the asking connection among its connections; say so.
fn connections_text(n: u64) -> String {
    match n {
        0 | 1 => "1 (this one)".to_string(),
        n => format!(
            "{n} (this one and {})",
            count_text(n - 1, "other", "others")
        ),
    }
}

/// "1 file", "2 files", "0 files".
fn count_text(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The token `serve` made in its state directory.
struct Generated {
    file: PathBuf,
    /// The token itself, when it may be printed (just made, on a terminal).
    shown: Option<String>,
    /// Made by this start.
    created: bool,
}

/// Make the storage root if it is missing: only its last component, so a
/// mistyped path fails instead of growing a tree of directories.
fn prepare_root(root: &Path) -> Result<()> {
    let shown = root.display();
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::usage(format!(
                "--root {shown} is a file, not a directory; give the directory to serve (it is created if missing)"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::usage(format!(
                "--root {shown}: part of that path is a file, not a directory; check the path"
            )));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("checking root directory {shown}"), &e));
        }
        Err(_) => {}
    }
    match std::fs::create_dir(root) {
        Ok(()) => {
            tracing::info!(root = %shown, "created the root directory");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = private::parent_dir(root);
            Err(Error::usage(format!(
                "--root {shown}: the directory it would be made in, {}, does not exist; check the path, or create it first (mkdir -p {})",
                parent.display(),
                parent.display()
            )))
        }
        // a dangling symlink, or made by someone else meanwhile
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("creating root directory {shown}"), &e)),
    }
}

/// Which addresses the server answers on, for its first lines: an address
/// like 0.0.0.0 means every address of the machine, not only the one the
/// connect line shows.
fn reachable_line(addr: std::net::SocketAddr) -> String {
    let port = addr.port();
    let ip = addr.ip();
    if ip.is_unspecified() {
        let (family, local) = if addr.is_ipv6() {
            (
                "every IPv6 address (and IPv4, unless the system keeps them apart)",
                format!("[::1]:{port}"),
            )
        } else {
            ("every IPv4 address", format!("127.0.0.1:{port}"))
        };
        format!(
            "reachable on: {family} of this machine, port {port} (from this machine: {local}); --listen {local} keeps it to this machine"
        )
    } else if ip.is_loopback() {
        format!("reachable on: {addr} only (this machine)")
    } else {
        format!("reachable on: {addr} only")
    }
}

/// What crossed the wire for one file (for --stats and -v, on stderr).
pub(crate) fn stats_line(name: &str, size: u64, wire: u64, secs: f64) -> String {
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
    format!(
        "stats: {}: file {size} bytes, wire {wire} bytes, ratio {ratio:.2}, {secs:.2} s, {rate:.1} MB/s",
        names::escape(name)
    )
}

async fn serve(a: ServeArgs) -> Result<()> {
    let state_dir = a.state_dir.clone().unwrap_or_else(state::default_dir);
    prepare_root(&a.root)?;
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
                private::write_private(&k, pem.key.as_bytes())?;
                private::write_private(&c, pem.cert.as_bytes())?;
            }
            (c, k)
        }
    };
    let (tokens, generated) = match &a.token_file {
        None if a.users.is_some() => (Tokens::default(), None),
        Some(f) => {
            let t = Tokens::from_lines(&private::read_private(f)?);
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
            let created = !f.exists();
            if created {
                private::write_private(
                    &f,
                    format!("{}\n", crate::private::secret_hex(32)?).as_bytes(),
                )?;
            }
            let text = private::read_private(&f)?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            (
                Tokens::from_lines(&text),
                Some(Generated {
                    file: f,
                    // shown once, when it is made, and only to a person: a
                    // service's stdout goes to a log that others may read
                    shown: (created && std::io::stdout().is_terminal()).then_some(token),
                    created,
                }),
            )
        }
    };
    // share links are kept in the state directory (created with the first)
    // (a server that needs no state directory otherwise still serves files
    // when it has none usable: it then makes no share links, and says why)
    let share_dir = if a.web == crate::cli::OnOff::On {
        match state::ensure_dir(&state_dir)
            .and_then(|()| state::check_separate(&a.root, &state_dir))
        {
            Ok(()) => Some(state_dir.clone()),
            Err(e) if a.state_dir.is_none() && !needs_state => {
                tracing::warn!("share links are off: {e}");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let fingerprint = tls::fingerprint(&tls::load_certs(&cert)?[0]);
    let expiry = crate::certs::expiry_note(&cert);
    if let Some((note, true)) = &expiry {
        tracing::warn!("the server certificate {} {note}", cert.display());
    }
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
            let mut s = format!(
                "{}\nroot: {root}\ncertificate sha256: {fp}\n",
                reachable_line(addr)
            );
            if let Some((note, _)) = &expiry {
                s.push_str(&format!("certificate {note}\n"));
            }
            match &generated {
                Some(Generated {
                    file,
                    shown: Some(token),
                    ..
                }) => {
                    s.push_str(&format!(
                        "token: {token}  (new: shown only this once; kept in {})\n",
                        file.display()
                    ));
                    s.push_str(&format!("connect with:\n  export SFT_SERVER={server} SFT_PIN={fp} SFT_TOKEN={token}\n  sft put FILE && sft ls\n"));
                }
                Some(Generated { file, created, .. }) => {
                    let f = file.display();
                    if *created {
                        s.push_str(&format!(
                            "token: new, kept in {f} (not printed: the output is not a terminal)\n"
                        ));
                    } else {
                        s.push_str(&format!("token: kept in {f} (printed only when it was made; read it with: cat {f})\n"));
                    }
                    s.push_str(&format!("connect with:\n  export SFT_SERVER={server} SFT_PIN={fp} SFT_TOKEN_FILE={f}\n  sft put FILE && sft ls\n"));
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
        max_unauthenticated: a.max_unauthenticated.max(1),
        max_unauthenticated_per_address: a.max_unauthenticated_per_address.max(1),
        handshake: a.handshake_timeout,
        auth: a.auth_timeout,
        idle: a.idle_timeout,
        data: a.data_timeout,
        grace: a.grace,
        keep_partial: a.keep_partial,
        memory_budget: a.memory_budget,
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
        web: a.web == crate::cli::OnOff::On,
        state_dir: share_dir,
        max_level: a.max_compress_level,
        banner: Some(Box::new(banner)),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_read_as_english() {
        assert_eq!(connections_text(1), "1 (this one)");
        assert_eq!(connections_text(2), "2 (this one and 1 other)");
        assert_eq!(connections_text(5), "5 (this one and 4 others)");
        assert_eq!(count_text(1, "file", "files"), "1 file");
        assert_eq!(count_text(0, "file", "files"), "0 files");
        assert_eq!(count_text(7, "file", "files"), "7 files");
    }

    #[test]
    fn reachable_line_names_every_address_or_the_one() {
        let any: std::net::SocketAddr = "0.0.0.0:7373".parse().unwrap();
        let line = reachable_line(any);
        assert!(line.contains("every IPv4 address"), "{line}");
        assert!(line.contains("127.0.0.1:7373"), "{line}");
        assert!(line.contains("--listen 127.0.0.1:7373"), "{line}");
        let one: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            reachable_line(one),
            "reachable on: 127.0.0.1:9000 only (this machine)"
        );
        let v6: std::net::SocketAddr = "[::]:7373".parse().unwrap();
        assert!(reachable_line(v6).contains("every IPv6 address"));
    }
}
