//! One function per subcommand: validated options in, client or server call,
//! results on stdout.

use std::path::PathBuf;

mod cert;
mod files;
mod output;
mod serve;
mod share;
mod shell;
mod trust;
mod user;

pub use output::{Output, error_value, stdout_closed};

use crate::cli::{AdminCmd, Cli, Command, ConfigCmd, ConnArgs};
use crate::client::{self, Client};
use crate::config::{self, Effective};
use crate::error::{Error, Result};
use crate::names;
use crate::private;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let o = Output {
        json: cli.conn.json,
        quiet: cli.conn.quiet,
        verbose: cli.conn.verbose,
    };
    match cli.cmd {
        Command::Serve(args) => serve::run(*args).await,
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
        streams: c
            .streams
            .as_deref()
            .map(client::streams::Plan::parse)
            .transpose()?
            .unwrap_or_default(),
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
        let connected = std::sync::atomic::AtomicBool::new(false);
        return connect_and_run(opts, cmd, stats, o, planned_put, &connected).await;
    }
    let mut attempt = 0u32;
    // only a connection that was made and then lost is retried: a server
    // that cannot be reached at all is reported at once
    let connected = std::sync::atomic::AtomicBool::new(false);
    // why the transfer was cut off: what the user needs to read if every
    // retry fails too
    let mut first: Option<Error> = None;
    loop {
        let once = connect_and_run(opts, cmd.clone(), stats, o, planned_put.clone(), &connected);
        let result = tokio::select! {
            r = once => r,
            at = interrupted() => return Err(interrupt_error(at)),
        };
        match result {
            Err(e)
                if e.kind == crate::error::Kind::Network
                    && attempt < retries
                    && connected.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                attempt += 1;
                let wait = retry_wait(attempt);
                o.warn_line(&format!(
                    "{e}; retrying in {} (retry {attempt} of {retries})",
                    crate::net::show_duration(wait)
                ));
                first.get_or_insert(e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    at = interrupted() => return Err(interrupt_error(at)),
                }
            }
            Err(last) if last.kind == crate::error::Kind::Network && first.is_some() => {
                let first = first.take().map(|f| f.message).unwrap_or_default();
                return Err(Error::network(format!(
                    "{first} (then {retries} retries failed; the last: {})",
                    last.message
                )));
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
    connected: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    // an upload's first questions go with AUTH (no round trip of their own),
    // unless its destination may be a directory (STAT first) or it makes
    // directories first
    let first = match (&cmd, &planned_put) {
        (
            Command::Put {
                dest_may_be_dir: false,
                ..
            },
            Some((jobs, empty)),
        ) if empty.is_empty() => files::FirstFlight::of(jobs),
        _ => None,
    };
    let early = first.as_ref().map_or(&[][..], |f| f.msgs());
    let mut c = Client::connect_with(opts, early).await?;
    connected.store(true, std::sync::atomic::Ordering::Relaxed);
    let result = run_on(&mut c, opts, cmd, stats, o, planned_put, first).await;
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
    first: Option<files::FirstFlight>,
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
                // nothing follows the uploads: BYE goes with the last of them
                c.bye_after_puts = true;
                files::put(c, o, jobs, empty, overwrite, stats, first).await?
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
}
