//! One command line of the shell: the dispatch, `ls`, `cd`, `lls`, `df`
//! and `help`.

use std::path::{Path, PathBuf};

use super::resolve::{join, local_files, needs_name, shown};
use super::{Flow, Shell};
use crate::app::out;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::EntryKind;

/// The commands, their arguments and what they do (for `help`).
pub(super) const HELP: &[(&str, &str)] = &[
    (
        "ls [-l] [DIR]",
        "list a remote directory, numbered (-l: with SHA-256)",
    ),
    (
        "get NAME|NUMBER|PATTERN [LOCAL]",
        "download (never replaces a local file); *.gz fetches every match",
    ),
    ("get -r DIR [LOCAL_DIR]", "download a directory tree"),
    ("mget NAME|PATTERN...", "download several files"),
    (
        "put PATH|PATTERN [NAME]",
        "upload into the remote directory",
    ),
    ("put -r DIR [REMOTE_DIR]", "upload a directory tree"),
    ("mput PATH|PATTERN...", "upload several files"),
    ("rm NAME|NUMBER|PATTERN", "remove remote files"),
    ("mkdir DIR", "create a remote directory"),
    ("rmdir DIR|NUMBER", "remove an empty remote directory"),
    ("cd [DIR]", "change the remote directory (no DIR: the root)"),
    ("pwd", "show the remote directory"),
    ("lcd [DIR]", "change the local directory (no DIR: $HOME)"),
    ("lpwd", "show the local directory"),
    ("lls [DIR]", "list a local directory"),
    ("df", "storage used and allowed"),
    ("help", "this list"),
    ("exit", "end the session (also quit, bye, Ctrl-D)"),
];

impl Shell {
    pub(super) async fn exec(&mut self, c: &mut Client, words: &[String]) -> Result<Flow> {
        let (cmd, args) = match words.split_first() {
            Some((cmd, args)) => (cmd.as_str(), args),
            None => return Ok(Flow::Go),
        };
        let arg = |i: usize| args.get(i).map(String::as_str);
        match cmd {
            "ls" | "dir" => {
                let (long, rest) = flag(args, "-l");
                arity(&rest, 0, 1, "ls [-l] [DIR]")?;
                self.ls(c, rest.first().map(String::as_str), long).await?;
            }
            "get" | "mget" => {
                let (recursive, rest) = flag(args, "-r");
                if recursive {
                    arity(&rest, 1, 2, "get -r DIR [LOCAL_DIR]")?;
                    self.get_tree(c, &rest[0], rest.get(1).map(String::as_str))
                        .await?;
                } else if cmd == "mget" {
                    arity(&rest, 1, usize::MAX, "mget NAME|PATTERN...")?;
                    let mut names = Vec::new();
                    for a in &rest {
                        names.extend(self.remote_files(c, a).await?);
                    }
                    self.get_files(c, names, None).await?;
                } else {
                    arity(&rest, 1, 2, "get NAME|NUMBER|PATTERN [LOCAL]")?;
                    let names = self.remote_files(c, &rest[0]).await?;
                    self.get_files(c, names, rest.get(1).map(String::as_str))
                        .await?;
                }
            }
            "put" | "mput" => {
                let (recursive, rest) = flag(args, "-r");
                if recursive {
                    arity(&rest, 1, 2, "put -r DIR [REMOTE_DIR]")?;
                    self.put_tree(c, &rest[0], rest.get(1).map(String::as_str))
                        .await?;
                } else if cmd == "mput" {
                    arity(&rest, 1, usize::MAX, "mput PATH|PATTERN...")?;
                    let mut paths = Vec::new();
                    for a in &rest {
                        paths.extend(local_files(a)?);
                    }
                    self.put_files(c, paths, None).await?;
                } else {
                    arity(&rest, 1, 2, "put PATH|PATTERN [NAME]")?;
                    let paths = local_files(&rest[0])?;
                    self.put_files(c, paths, rest.get(1).map(String::as_str))
                        .await?;
                }
            }
            "rm" => {
                arity(args, 1, usize::MAX, "rm NAME|NUMBER|PATTERN...")?;
                let mut names = Vec::new();
                for a in args {
                    names.extend(self.remote_files(c, a).await?);
                }
                for name in names {
                    self.changed();
                    c.remove(&name)
                        .await
                        .map_err(|e| on_server(e, &self.shown(&name)))?;
                }
            }
            "mkdir" => {
                arity(args, 1, 1, "mkdir DIR")?;
                let name = needs_name(self.resolve(&args[0])?)?;
                c.mkdir(&name).await?;
                self.changed();
            }
            "rmdir" => {
                arity(args, 1, 1, "rmdir DIR|NUMBER")?;
                let name = self.target(&args[0], EntryKind::Dir)?;
                self.changed();
                c.rmdir(&name).await?;
            }
            "cd" => {
                arity(args, 0, 1, "cd [DIR]")?;
                self.cd(c, arg(0)).await?;
            }
            "pwd" => {
                arity(args, 0, 0, "pwd")?;
                out(&format!("/{}", names::escape(&self.cwd)))?;
            }
            "lcd" => {
                arity(args, 0, 1, "lcd [DIR]")?;
                let dir = match arg(0) {
                    Some(d) => PathBuf::from(d),
                    None => std::env::var_os("HOME")
                        .map(PathBuf::from)
                        .ok_or_else(|| Error::usage("HOME is not set; use lcd DIR"))?,
                };
                std::env::set_current_dir(&dir)
                    .map_err(|e| Error::io(format!("lcd {}", shown(&dir)), &e))?;
            }
            "lpwd" => {
                arity(args, 0, 0, "lpwd")?;
                let d = std::env::current_dir()
                    .map_err(|e| Error::io("finding the local directory", &e))?;
                out(&shown(&d))?;
            }
            "lls" => {
                arity(args, 0, 1, "lls [DIR]")?;
                lls(Path::new(arg(0).unwrap_or(".")))?;
            }
            "df" => {
                arity(args, 0, 0, "df")?;
                df(c).await?;
            }
            "help" | "?" => {
                for (usage, what) in HELP {
                    out(&format!("  {usage:<32} {what}"))?;
                }
                out(
                    "Names are relative to the remote directory; NUMBER is a line of the last ls in this directory, until something changes (write ./7 for a file named 7). PATTERN: * ? [a-z] in the last part of a name. Quote names with spaces: \"my file.txt\".",
                )?;
            }
            "exit" | "quit" | "bye" => return Ok(Flow::Exit),
            other => {
                return Err(Error::usage(format!(
                    "unknown command \"{}\"; type help",
                    names::escape(other)
                )));
            }
        }
        Ok(Flow::Go)
    }

    pub(super) async fn ls(&mut self, c: &mut Client, arg: Option<&str>, long: bool) -> Result<()> {
        let dir = match arg {
            Some(a) => {
                let numbered = !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit());
                if numbered {
                    self.target(a, EntryKind::Dir)?
                } else {
                    self.resolve(a)?
                }
            }
            None => self.cwd.clone(),
        };
        let entries = c
            .list(&dir)
            .await
            .map_err(|e| on_server(e, &self.shown(&dir)))?;
        let mut listed = Vec::with_capacity(entries.len());
        let mut lines = Vec::with_capacity(entries.len());
        for e in &entries {
            // a listing holds single components; anything else is not ours to use
            if e.name.contains('/') || names::validate(&e.name).is_err() {
                eprintln!(
                    "warning: the server listed an invalid name {}; skipped",
                    names::quote(&e.name)
                );
                continue;
            }
            listed.push((join(&dir, &e.name), e.kind));
            lines.push(e);
        }
        let width = listed.len().to_string().len().max(3);
        for (i, e) in lines.iter().enumerate() {
            let (kind, size, name) = match e.kind {
                EntryKind::Dir => ('d', "-".to_string(), format!("{}/", names::escape(&e.name))),
                EntryKind::File => ('-', crate::units::human(e.size), names::escape(&e.name)),
            };
            let owner = if e.owner.is_empty() {
                "-".to_string()
            } else {
                names::escape(&e.owner)
            };
            let digest = if long {
                let d = e
                    .sha256
                    .map(|d| hex::encode(d)[..crate::app::files::SHORT_DIGEST].to_string())
                    .unwrap_or_else(|| "-".into());
                format!("{d:<width$}  ", width = crate::app::files::SHORT_DIGEST)
            } else {
                String::new()
            };
            out(&format!(
                "{:>width$}  {kind}  {size:>10}  {}  {owner:<12}  {digest}{name}",
                i + 1,
                short_time(e.mtime_ns)
            ))?;
        }
        self.listed = listed;
        self.fresh = true;
        Ok(())
    }

    pub(super) async fn cd(&mut self, c: &mut Client, arg: Option<&str>) -> Result<()> {
        let dir = match arg {
            None => String::new(),
            Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                self.target(a, EntryKind::Dir)?
            }
            Some(a) => self.resolve(a)?,
        };
        if !dir.is_empty()
            && c.stat(&dir)
                .await
                .map_err(|e| on_server(e, &self.shown(&dir)))?
                .kind
                != EntryKind::Dir
        {
            return Err(Error::usage(format!(
                "{} is not a directory",
                names::quote(&dir)
            )));
        }
        self.cwd = dir;
        self.changed();
        Ok(())
    }
}
pub(super) fn arity(args: &[String], min: usize, max: usize, usage: &str) -> Result<()> {
    if args.len() < min || args.len() > max {
        return Err(Error::usage(format!("usage: {usage}")));
    }
    Ok(())
}

/// A server's refusal about a name, in the shell's own commands.
pub(super) fn on_server(e: Error, name: &str) -> Error {
    let mut e = crate::app::files::on_server(e, name);
    e.message = e
        .message
        .replace(": sft ls", ": ls")
        .replace("use -r: sft get -r", "use: get -r")
        .replace(
            "to remove it and everything in it, use -r: sft rm -r",
            "rmdir removes it once empty; outside the shell, sft rm -r",
        );
    e
}

/// Whether `flag` is among the words; the other words.
pub(super) fn flag(args: &[String], flag: &str) -> (bool, Vec<String>) {
    let rest: Vec<String> = args.iter().filter(|a| *a != flag).cloned().collect();
    (rest.len() != args.len(), rest)
}

/// "2026-11-24 10:00" (UTC).
pub(super) fn short_time(ns: i64) -> String {
    let secs = u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm}"),
        _ => s,
    }
}

pub(super) fn lls(dir: &Path) -> Result<()> {
    let what = |e: std::io::Error| Error::io(format!("listing {}", shown(dir)), &e);
    let mut rows = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(what)? {
        let ent = ent.map_err(what)?;
        let name = names::escape(&ent.file_name().to_string_lossy());
        let meta = ent.metadata().ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        let size = match &meta {
            Some(m) if m.is_file() => crate::units::human(m.len()),
            _ => "-".to_string(),
        };
        rows.push(if is_dir {
            format!("{:>10}  {name}/", "-")
        } else {
            format!("{size:>10}  {name}")
        });
    }
    rows.sort_by(|a, b| a.get(12..).cmp(&b.get(12..)));
    for r in rows {
        out(&r)?;
    }
    Ok(())
}

pub(super) async fn df(c: &mut Client) -> Result<()> {
    crate::app::files::df(c, &crate::app::Output::default(), false).await
}
