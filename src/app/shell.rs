//! `sft shell`: an interactive session over one connection, like sftp.
//!
//! The remote working directory lives here, on the client; every name typed
//! is resolved against it and checked before it is sent. `ls` numbers what it
//! shows, and `get 3` / `rm 3` refer to those numbers. Lines come from
//! rustyline (line editing, history, completion) when stdin is a terminal,
//! and plainly from stdin otherwise; either way they are read on a thread of
//! their own so the session never blocks the async runtime.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use super::out;
use super::output::Tally;
use crate::client::Client;
use crate::client::pipeline::{Dest, GetJob, PutJob};
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::progress::Progress;
use crate::protocol::{Entry, EntryKind};

/// The commands, their arguments and what they do (for `help`).
const HELP: &[(&str, &str)] = &[
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

/// Command names, for completion.
const COMMANDS: &[&str] = &[
    "bye", "cd", "df", "exit", "get", "help", "lcd", "lls", "lpwd", "ls", "mget", "mkdir", "mput",
    "put", "pwd", "quit", "rm", "rmdir",
];

/// Most subdirectories of the remote directory whose names are fetched for
/// completion (`cd doc/<Tab>`), in one burst at the prompt.
const COMPLETE_SUBDIRS: usize = 64;

/// Run the shell on an open session until `exit` or end of input. A session
/// the server ended while the shell sat at its prompt (idle timeout, a
/// restart) is opened again with `opts` before the next command, which is
/// then sent as usual: the server never saw it, so nothing runs twice.
pub async fn run(
    c: &mut Client,
    opts: &crate::client::Options,
    start_dir: Option<&str>,
) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut sh = Shell::default();
    if let Some(d) = start_dir {
        sh.cd(c, Some(d)).await?;
    }
    let mut input = Input::start(interactive)?;
    if interactive {
        eprintln!(
            "signed in as {} ({}); type help for the commands, exit to leave",
            names::escape(&c.user),
            c.role.name()
        );
    }
    loop {
        if interactive && sh.complete.is_none() {
            // names for tab completion; a failed listing just means none
            sh.complete = Some(match completion_tree(c, &sh.cwd).await {
                Ok(names) => names,
                Err(e) if session_lost(&e) => return Err(e),
                Err(_) => Vec::new(),
            });
        }
        let prompt = format!("sft:/{}> ", names::escape(&sh.cwd));
        let next = input.next(prompt, sh.complete.clone().unwrap_or_default());
        // (a terminal gives Ctrl-C at the prompt to the line editor as a key;
        // from a pipe or file it ends the shell, as it would any command)
        let read = tokio::select! {
            r = next => r,
            during = super::interrupted(), if !interactive => {
                return Err(super::interrupt_error(during));
            }
        };
        let line = match read {
            Read::Line(l) => l,
            Read::Interrupted => continue,
            Read::Invalid => {
                eprintln!("error: the line is not valid UTF-8; ignored");
                continue;
            }
            Read::End => return Ok(()),
            Read::Failed(e) => return Err(e),
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let words = match split(&line) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        if words.is_empty() {
            continue;
        }
        if let Some(why) = c.ended().await {
            eprintln!("sft: the session had ended ({why}); connecting again");
            *c = Client::connect(opts).await?;
        }
        // Ctrl-C stops the command (its transfer is cut off, and kept for
        // resuming as on the command line) and comes back to the prompt
        let ran = tokio::select! {
            r = sh.exec(c, &words) => Some(r),
            during = super::interrupted() => {
                eprintln!("sft: {}", crate::client::moving::interrupted_note(during.as_ref()));
                None
            }
        };
        let Some(ran) = ran else {
            // the session was in the middle of something: start a new one
            *c = Client::connect(opts).await?;
            sh.complete = None;
            sh.fresh = false;
            continue;
        };
        match ran {
            Ok(Flow::Go) => {}
            Ok(Flow::Exit) => return Ok(()),
            Err(e) if session_lost(&e) => return Err(e),
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// Errors after which the session cannot go on.
fn session_lost(e: &Error) -> bool {
    matches!(e.kind, Kind::Network | Kind::Protocol)
}

enum Flow {
    Go,
    Exit,
}

#[derive(Default)]
struct Shell {
    /// The remote working directory ("" is the root).
    cwd: String,
    /// Full names and kinds of the last `ls`, numbered from 1.
    listed: Vec<(String, EntryKind)>,
    /// The numbers still mean what `ls` showed: no `cd`, upload, removal or
    /// new directory since. A stale number is refused, never acted on.
    fresh: bool,
    /// Completion candidates in `cwd` (interactive only); None: to fetch.
    complete: Option<Vec<String>>,
}

impl Shell {
    async fn exec(&mut self, c: &mut Client, words: &[String]) -> Result<Flow> {
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

    /// A typed remote name made absolute (from the root) against `cwd`; ""
    /// is the root. `..` may go up, but never above the root.
    fn resolve(&self, arg: &str) -> Result<String> {
        let mut parts: Vec<&str> = if arg.starts_with('/') {
            Vec::new()
        } else {
            self.cwd.split('/').filter(|p| !p.is_empty()).collect()
        };
        for comp in arg.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(Error::usage(format!(
                            "{}: '..' would leave the server's root directory",
                            names::quote(arg)
                        )));
                    }
                }
                c => parts.push(c),
            }
        }
        let name = parts.join("/");
        if !name.is_empty() {
            names::validate(&name)?;
        }
        Ok(name)
    }

    /// A name or a number from the last listing; a numbered entry must be a `want`.
    fn target(&self, arg: &str, want: EntryKind) -> Result<String> {
        if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
            return needs_name(self.resolve(arg)?);
        }
        let entry = arg
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.listed.get(i))
            .filter(|_| self.fresh);
        match entry {
            Some((name, kind)) if *kind == want => Ok(name.clone()),
            Some((name, EntryKind::Dir)) => Err(Error::usage(format!(
                "{} is a directory",
                names::quote(name)
            ))),
            Some((name, EntryKind::File)) => Err(Error::usage(format!(
                "{} is not a directory",
                names::quote(name)
            ))),
            _ if self.listed.is_empty() => Err(Error::usage(format!(
                "no numbered listing yet: run ls first (or write ./{arg} for a name)"
            ))),
            _ if !self.fresh => Err(Error::usage(format!(
                "{arg} is a number from an ls that is out of date (the directory or its contents changed since); run ls again, or write ./{arg} for a name"
            ))),
            None => Err(Error::usage(format!(
                "the last listing has no entry {arg} (it has 1-{}); write ./{arg} for a name",
                self.listed.len()
            ))),
        }
    }

    /// A full remote name as shown to the user: relative to `cwd` when inside it.
    fn shown(&self, name: &str) -> String {
        let rel = if self.cwd.is_empty() {
            Some(name)
        } else {
            name.strip_prefix(self.cwd.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        match rel {
            Some(r) => names::escape(r),
            None => format!("/{}", names::escape(name)),
        }
    }

    /// The remote directory's contents changed (or may have): numbers from
    /// the last listing no longer count, completion is fetched again.
    fn changed(&mut self) {
        self.fresh = false;
        self.complete = None;
    }

    async fn ls(&mut self, c: &mut Client, arg: Option<&str>, long: bool) -> Result<()> {
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
                    .map(|d| hex::encode(d)[..super::files::SHORT_DIGEST].to_string())
                    .unwrap_or_else(|| "-".into());
                format!("{d:<width$}  ", width = super::files::SHORT_DIGEST)
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

    /// The remote files a word names: a number of the last listing, a
    /// pattern (`*.gz`, matched against its directory's files), or a name.
    async fn remote_files(&self, c: &mut Client, arg: &str) -> Result<Vec<String>> {
        if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(vec![self.target(arg, EntryKind::File)?]);
        }
        if !is_pattern(arg) {
            return Ok(vec![needs_name(self.resolve(arg)?)?]);
        }
        let full = self.resolve(arg)?;
        let (dir, pattern) = names::split_parent(&full);
        if is_pattern(dir) {
            return Err(Error::usage(format!(
                "{}: patterns work in the last part of a name only",
                names::quote(arg)
            )));
        }
        let mut found: Vec<String> = c
            .list(dir)
            .await?
            .into_iter()
            .filter(|e| {
                e.kind == EntryKind::File
                    && !e.name.contains('/')
                    && names::validate(&e.name).is_ok()
                    && glob_match(pattern, &e.name)
            })
            .map(|e| join(dir, &e.name))
            .collect();
        if found.is_empty() {
            return Err(Error::not_found(format!(
                "no remote file matches {}",
                names::quote(arg)
            )));
        }
        found.sort();
        Ok(found)
    }

    /// Download `names` (full remote names): one file to LOCAL (a file or a
    /// directory), several into LOCAL or the local directory; a bar on a
    /// terminal; each failure reported, the rest go on.
    async fn get_files(
        &mut self,
        c: &mut Client,
        names_: Vec<String>,
        local: Option<&str>,
    ) -> Result<()> {
        let single = names_.len() == 1;
        if !single
            && let Some(l) = local
            && !Path::new(l).is_dir()
        {
            return Err(Error::usage(format!(
                "several files go into a local directory, and {} is not one",
                names::quote(l)
            )));
        }
        let mut jobs = Vec::with_capacity(names_.len());
        for name in names_ {
            let (_, base) = names::split_parent(&name);
            let dest = match local {
                Some(p) if p.ends_with('/') || Path::new(p).is_dir() => Path::new(p).join(base),
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(base),
            };
            // checked before asking: once the server starts sending, a local
            // failure would leave the rest of the file on the wire
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::usage(format!(
                    "{} is not a local directory",
                    shown(parent)
                )));
            }
            jobs.push(GetJob {
                remote: name,
                dest: Dest::Path(dest),
                expect: None,
            });
        }
        let progress = Progress::new(true, jobs.len());
        let mut tally = Tally::default();
        let r = c
            .get_many(&jobs, false, &progress, |i, r| {
                match r {
                    Ok(got) => {
                        tally.ok += 1;
                        out(&format!(
                            "{}  {}",
                            hex::encode(got.sha256),
                            shown(&got.path)
                        ))?;
                    }
                    Err(e) => {
                        let e = on_server(e, &self.shown(&jobs[i].remote));
                        if !single {
                            progress.println(&format!("error: {e}"));
                        }
                        tally.record(&e);
                    }
                }
                Ok(())
            })
            .await;
        progress.finish();
        r?;
        tally.finish("downloads")
    }

    /// Upload local `paths`: one file as NAME (or NAME/ for a directory),
    /// several into REMOTE_DIR or the remote directory.
    async fn put_files(
        &mut self,
        c: &mut Client,
        paths: Vec<PathBuf>,
        remote: Option<&str>,
    ) -> Result<()> {
        let single = paths.len() == 1;
        let mut jobs = Vec::with_capacity(paths.len());
        for local in paths {
            if local.is_dir() {
                return Err(Error::usage(format!(
                    "{} is a directory; use put -r to upload a tree",
                    shown(&local)
                )));
            }
            let file_name = || -> Result<String> {
                local
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "{} has no usable file name; give one: put PATH NAME",
                            shown(&local)
                        ))
                    })
            };
            let name = match remote {
                // NAME/ (or any NAME for several files) is a directory
                Some(r) if r.ends_with('/') || !single => join(&self.resolve(r)?, &file_name()?),
                Some(r) => self.resolve(r)?,
                None => join(&self.cwd, &file_name()?),
            };
            let name = needs_name(name)?;
            names::validate(&name)?;
            jobs.push(PutJob {
                local,
                remote: name,
            });
        }
        self.changed();
        let progress = Progress::new(true, jobs.len());
        let mut tally = Tally::default();
        let r = c
            .put_many(&jobs, false, &progress, |i, r| {
                match r {
                    Ok(up) => {
                        tally.ok += 1;
                        out(&format!(
                            "{}  {}",
                            hex::encode(up.sha256),
                            self.shown(&up.name)
                        ))?;
                    }
                    Err(e) => {
                        if !single {
                            progress.println(&format!("error: {}: {e}", shown(&jobs[i].local)));
                        }
                        tally.record(&e);
                    }
                }
                Ok(())
            })
            .await;
        progress.finish();
        r?;
        tally.finish("uploads")
    }

    /// `get -r DIR [LOCAL_DIR]`: the tree as LOCAL_DIR/DIR/...
    async fn get_tree(&mut self, c: &mut Client, arg: &str, local: Option<&str>) -> Result<()> {
        let dir = if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            self.target(arg, EntryKind::Dir)?
        } else {
            self.resolve(arg)?
        };
        let names_ = [dir];
        let a = super::files::GetArgs {
            names: &names_,
            output: Some(Path::new(local.unwrap_or("."))),
            recursive: true,
            sha256: None,
            check: None,
            force: false,
            stats: false,
        };
        super::files::check_get(&a)?;
        super::files::get(c, &super::Output::default(), &a).await
    }

    /// `put -r DIR [REMOTE_DIR]`: the tree as REMOTE_DIR/DIR/... (REMOTE_DIR
    /// is relative to the remote directory).
    async fn put_tree(&mut self, c: &mut Client, dir: &str, remote: Option<&str>) -> Result<()> {
        let to = match remote {
            Some(r) => self.resolve(r)?,
            None => self.cwd.clone(),
        };
        let paths = [PathBuf::from(dir)];
        let o = super::Output::default();
        let (jobs, empty) = super::files::plan_put(
            &super::files::PutArgs {
                paths: &paths,
                recursive: true,
                as_name: None,
                to: (!to.is_empty()).then_some(to.as_str()),
            },
            &o,
        )?;
        self.changed();
        super::files::put(c, &o, jobs, empty, false, false).await
    }

    async fn cd(&mut self, c: &mut Client, arg: Option<&str>) -> Result<()> {
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

fn arity(args: &[String], min: usize, max: usize, usage: &str) -> Result<()> {
    if args.len() < min || args.len() > max {
        return Err(Error::usage(format!("usage: {usage}")));
    }
    Ok(())
}

/// A server's refusal about a name, in the shell's own commands.
fn on_server(e: Error, name: &str) -> Error {
    let mut e = super::files::on_server(e, name);
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
fn flag(args: &[String], flag: &str) -> (bool, Vec<String>) {
    let rest: Vec<String> = args.iter().filter(|a| *a != flag).cloned().collect();
    (rest.len() != args.len(), rest)
}

/// Whether a word holds pattern characters (`*`, `?`, `[`).
fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style matching of one name component: `*` any run, `?` one
/// character, `[abc]`, `[a-z]`, `[!x]` a set. A leading `.` is matched only
/// by a pattern that starts with one, as in sh.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // iterative matching with one backtrack point for the last '*'
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p[pi..], n[ni]) {
                Some((true, len)) => Some(pi + len),
                Some((false, _)) => None,
                // no closing ']': a literal '['
                None => (n[ni] == '[').then_some(pi + 1),
            },
            Some(c) => (*c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` set at the start of `p`: whether `c` is in it, and the set's
/// length; None when it has no closing `]`.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&x) = p.get(i) {
        if x == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-')
            && let Some(&hi) = p.get(i + 2)
            && hi != ']'
        {
            hit |= x <= c && c <= hi;
            i += 3;
        } else {
            hit |= x == c;
            i += 1;
        }
    }
    None
}

/// The local files a word names: a pattern (matched against its directory's
/// regular files, sorted) or a path.
fn local_files(arg: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(arg);
    let pattern = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !is_pattern(pattern) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let what = |e: std::io::Error| Error::io(format!("listing {}", shown(dir)), &e);
    let mut found = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(what)? {
        let ent = ent.map_err(what)?;
        let is_file = ent.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let Some(name) = ent.file_name().to_str()
            && is_file
            && glob_match(pattern, name)
        {
            found.push(
                if dir == Path::new(".") && path.parent() != Some(Path::new(".")) {
                    PathBuf::from(name)
                } else {
                    dir.join(name)
                },
            );
        }
    }
    if found.is_empty() {
        return Err(Error::not_found(format!(
            "no local file matches {}",
            names::quote(arg)
        )));
    }
    found.sort();
    Ok(found)
}

fn needs_name(name: String) -> Result<String> {
    if name.is_empty() {
        return Err(Error::usage("that is the root directory; give a name"));
    }
    Ok(name)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A local path for the terminal.
fn shown(p: &Path) -> String {
    names::escape(&p.display().to_string())
}

/// "2026-11-24 10:00" (UTC).
fn short_time(ns: i64) -> String {
    let secs = u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm}"),
        _ => s,
    }
}

/// Names for completion in `cwd`, and one level into each of its
/// subdirectories (`doc/a.txt`), fetched in one burst.
async fn completion_tree(c: &mut Client, cwd: &str) -> Result<Vec<String>> {
    let entries = c.list(cwd).await?;
    let mut names = completion_names(&entries);
    let subdirs: Vec<String> = names
        .iter()
        .filter(|n| n.ends_with('/'))
        .take(COMPLETE_SUBDIRS)
        .map(|n| n.trim_end_matches('/').to_string())
        .collect();
    let full: Vec<String> = subdirs.iter().map(|d| join(cwd, d)).collect();
    if !full.is_empty() {
        for (d, listing) in subdirs.iter().zip(c.list_many(&full).await?) {
            if let Ok(entries) = listing {
                names.extend(
                    completion_names(&entries)
                        .into_iter()
                        .map(|n| format!("{d}/{n}")),
                );
            }
        }
    }
    Ok(names)
}

/// Names offered by tab completion: directories end in '/'; names that
/// would need escaping on a terminal are left out.
fn completion_names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            !e.name.contains('/')
                && names::validate(&e.name).is_ok()
                && names::escape(&e.name) == e.name
        })
        .map(|e| match e.kind {
            EntryKind::Dir => format!("{}/", e.name),
            EntryKind::File => e.name.clone(),
        })
        .collect()
}

fn lls(dir: &Path) -> Result<()> {
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

async fn df(c: &mut Client) -> Result<()> {
    super::files::df(c, &super::Output::default(), false).await
}

/// The words of a command line so far.
struct Lexed {
    /// Each word with the byte offset where it starts.
    words: Vec<(usize, String)>,
    /// The line ended inside a word (no whitespace after it).
    open: bool,
    /// The line ended inside double quotes.
    quoted: bool,
    /// The line ended with a lone backslash.
    escaped: bool,
}

/// Split a line into words: whitespace separates them, double quotes group
/// (`\"` and `\\` inside), and outside quotes a backslash takes the next
/// character as it is (`my\ file.txt`).
fn lex(line: &str) -> Lexed {
    let mut l = Lexed {
        words: Vec::new(),
        open: false,
        quoted: false,
        escaped: false,
    };
    let mut word = String::new();
    for (i, ch) in line.char_indices() {
        if l.escaped {
            word.push(ch);
            l.escaped = false;
        } else if l.quoted {
            match ch {
                '"' => l.quoted = false,
                '\\' => l.escaped = true,
                c => word.push(c),
            }
        } else if ch.is_whitespace() {
            if l.open {
                if let Some(w) = l.words.last_mut() {
                    w.1 = std::mem::take(&mut word);
                }
                l.open = false;
            }
            continue;
        } else {
            match ch {
                '"' => l.quoted = true,
                '\\' => l.escaped = true,
                c => word.push(c),
            }
        }
        if !l.open {
            l.words.push((i, String::new()));
            l.open = true;
        }
    }
    if l.open
        && let Some(w) = l.words.last_mut()
    {
        w.1 = word;
    }
    l
}

fn split(line: &str) -> Result<Vec<String>> {
    let l = lex(line);
    if l.quoted {
        return Err(Error::usage("a double quote is not closed"));
    }
    if l.escaped {
        return Err(Error::usage("the line ends with a lone backslash"));
    }
    Ok(l.words.into_iter().map(|(_, w)| w).collect())
}

/// A word as it must be typed to mean `s`.
fn quote_word(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// What one request for a line gave.
enum Read {
    Line(String),
    /// Ctrl-C at the prompt: a new prompt.
    Interrupted,
    /// A line that is not UTF-8 (scripts only).
    Invalid,
    End,
    Failed(Error),
}

/// Asks for one line: the prompt and the names completion may offer.
struct Ask {
    prompt: String,
    names: Vec<String>,
}

/// Lines from a thread of their own: rustyline and stdin reads block.
struct Input {
    ask: std::sync::mpsc::Sender<Ask>,
    got: tokio::sync::mpsc::Receiver<Read>,
}

impl Input {
    fn start(interactive: bool) -> Result<Input> {
        let (ask, asked) = std::sync::mpsc::channel::<Ask>();
        let (give, got) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("sft-shell-input".into())
            .spawn(move || read_lines(interactive, asked, give))
            .map_err(|e| Error::io("starting the shell's input thread", &e))?;
        Ok(Input { ask, got })
    }

    async fn next(&mut self, prompt: String, names: Vec<String>) -> Read {
        // a thread that has stopped has left its last word (End or Failed)
        let _ = self.ask.send(Ask { prompt, names });
        self.got.recv().await.unwrap_or(Read::End)
    }
}

/// Where lines come from.
enum Source {
    Editor(Box<Editor<Names, DefaultHistory>>),
    Plain(std::io::StdinLock<'static>),
}

impl Source {
    fn open(interactive: bool) -> Result<Source> {
        if !interactive {
            return Ok(Source::Plain(std::io::stdin().lock()));
        }
        let mut ed = Config::builder()
            .completion_type(CompletionType::List)
            .max_history_size(1000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.history_ignore_space(true).build())
            .and_then(Editor::with_config)
            .map_err(|e| Error::other(format!("cannot start line editing: {e}")))?;
        ed.set_helper(Some(Names::default()));
        Ok(Source::Editor(Box::new(ed)))
    }

    fn read(&mut self, ask: Ask) -> Read {
        match self {
            Source::Editor(ed) => {
                if let Some(h) = ed.helper_mut() {
                    h.names = ask.names;
                }
                match ed.readline(&ask.prompt) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = ed.add_history_entry(line.as_str());
                        }
                        Read::Line(line)
                    }
                    Err(ReadlineError::Interrupted | ReadlineError::Signal(_)) => Read::Interrupted,
                    Err(ReadlineError::Eof) => Read::End,
                    Err(e) => Read::Failed(Error::other(format!("reading the command line: {e}"))),
                }
            }
            Source::Plain(stdin) => {
                let mut buf = Vec::new();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) => Read::End,
                    Ok(_) => {
                        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            buf.pop();
                        }
                        String::from_utf8(buf).map_or(Read::Invalid, Read::Line)
                    }
                    Err(e) => Read::Failed(Error::io("reading commands from stdin", &e)),
                }
            }
        }
    }
}

/// The input thread: one line per request, until the shell stops asking.
fn read_lines(
    interactive: bool,
    asked: std::sync::mpsc::Receiver<Ask>,
    give: tokio::sync::mpsc::Sender<Read>,
) {
    let mut source = match Source::open(interactive) {
        Ok(s) => s,
        Err(e) => {
            let _ = give.blocking_send(Read::Failed(e));
            return;
        }
    };
    for ask in asked {
        let read = source.read(ask);
        let last = matches!(read, Read::End | Read::Failed(_));
        if give.blocking_send(read).is_err() || last {
            return;
        }
    }
}

/// Tab completion: commands first, then remote names of the current
/// directory (get, rm, cd, ls, rmdir) or local paths (put, lcd, lls).
#[derive(Default)]
struct Names {
    names: Vec<String>,
    files: FilenameCompleter,
}

impl Completer for Names {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let Some(before) = line.get(..pos) else {
            return Ok((pos, Vec::new()));
        };
        let mut l = lex(before);
        let (start, word) = if l.open {
            l.words.pop().unwrap_or((pos, String::new()))
        } else {
            (pos, String::new())
        };
        let done: Vec<&str> = l.words.iter().map(|(_, w)| w.as_str()).collect();
        let offer = |list: &mut dyn Iterator<Item = &str>, space: bool| {
            list.filter(|n| n.starts_with(word.as_str()))
                .map(|n| Pair {
                    display: n.to_string(),
                    replacement: if space && !n.ends_with('/') {
                        format!("{} ", quote_word(n))
                    } else {
                        quote_word(n)
                    },
                })
                .collect::<Vec<_>>()
        };
        let remote = match (done.first().copied(), done.len()) {
            (None, _) => return Ok((start, offer(&mut COMMANDS.iter().copied(), true))),
            (Some("get" | "rm" | "cd" | "ls" | "dir" | "rmdir"), 1) => true,
            (Some("mget" | "rm"), _) => true,
            (Some("put"), 1) | (Some("get"), 2) | (Some("lcd" | "lls"), 1) => false,
            (Some("mput"), _) => false,
            _ => return Ok((pos, Vec::new())),
        };
        if !remote {
            return self.files.complete(line, pos, ctx);
        }
        // names at the depth of the word: `doc/` offers what is in doc
        let depth = word.matches('/').count();
        Ok((
            start,
            offer(
                &mut self
                    .names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| n.trim_end_matches('/').matches('/').count() == depth),
                true,
            ),
        ))
    }
}

impl Hinter for Names {
    type Hint = String;
}
impl Highlighter for Names {}
impl Validator for Names {}
impl Helper for Names {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_a_shell() {
        assert_eq!(split("  get  a.txt  ").unwrap(), ["get", "a.txt"]);
        assert_eq!(
            split(r#"put "my file.txt" x\ y"#).unwrap(),
            ["put", "my file.txt", "x y"]
        );
        assert_eq!(
            split(r#"get "a \"q\" \\ b""#).unwrap(),
            ["get", r#"a "q" \ b"#]
        );
        assert_eq!(split(r#"rm """#).unwrap(), ["rm", ""]);
        assert_eq!(split(r#"get "di"r/x"#).unwrap(), ["get", "dir/x"]);
        assert!(split("").unwrap().is_empty());
        assert!(split(r#"get "open"#).is_err());
        assert!(split("get a\\").is_err());
        let l = lex(r#"get "my fi"#);
        assert!(l.open && l.quoted);
        assert_eq!(l.words[1], (4, "my fi".to_string()));
        assert!(!lex("get ").open);
        for s in ["plain", "my file", r#"a"b"#, r"a\b"] {
            assert_eq!(split(&quote_word(s)).unwrap(), [s]);
        }
    }

    #[test]
    fn names_resolve_against_the_remote_directory() {
        let sh = Shell {
            cwd: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(sh.resolve("x").unwrap(), "a/b/x");
        assert_eq!(sh.resolve("../x").unwrap(), "a/x");
        assert_eq!(sh.resolve("./x/").unwrap(), "a/b/x");
        assert_eq!(sh.resolve("/x").unwrap(), "x");
        assert_eq!(sh.resolve("../..").unwrap(), "");
        assert_eq!(sh.resolve("/").unwrap(), "");
        let e = sh.resolve("../../..").unwrap_err();
        assert!(e.message.contains("root"), "{e}");
        assert!(sh.resolve("/../x").is_err());
        assert!(sh.resolve("x\u{1b}[2J").is_err());
        assert_eq!(sh.shown("a/b/c/d"), "c/d");
        assert_eq!(sh.shown("a/bc"), "/a/bc");
    }

    #[test]
    fn numbers_refer_to_the_last_listing() {
        let mut sh = Shell::default();
        assert!(
            sh.target("1", EntryKind::File)
                .unwrap_err()
                .message
                .contains("run ls")
        );
        sh.listed = vec![
            ("d".into(), EntryKind::Dir),
            ("d/f".into(), EntryKind::File),
        ];
        sh.fresh = true;
        assert_eq!(sh.target("2", EntryKind::File).unwrap(), "d/f");
        assert_eq!(sh.target("1", EntryKind::Dir).unwrap(), "d");
        assert!(sh.target("1", EntryKind::File).is_err());
        assert!(sh.target("0", EntryKind::File).is_err());
        assert!(
            sh.target("3", EntryKind::File)
                .unwrap_err()
                .message
                .contains("1-2")
        );
        assert_eq!(sh.target("./2", EntryKind::File).unwrap(), "2");
        assert!(sh.target("/", EntryKind::File).is_err());
        // after a change (rm, put, cd, ...) a number is refused, not guessed
        sh.changed();
        let e = sh.target("2", EntryKind::File).unwrap_err();
        assert!(e.message.contains("out of date"), "{e}");
        assert_eq!(sh.target("./2", EntryKind::File).unwrap(), "2");
    }

    #[test]
    fn patterns_match_like_sh() {
        for (p, n) in [
            ("*.gz", "a.tar.gz"),
            ("*", "x"),
            ("a?c", "abc"),
            ("[abc]*", "b1"),
            ("[a-c]x", "bx"),
            ("[!a]x", "bx"),
            ("*a*b*", "xxaxxbxx"),
            (".*", ".hidden"),
            ("[", "["),
            ("r[]]", "r]"),
        ] {
            assert!(glob_match(p, n), "{p} should match {n}");
        }
        for (p, n) in [
            ("*.gz", "a.tgz"),
            ("a?c", "ac"),
            ("[!a]x", "ax"),
            ("*", ".hidden"),
            ("[a-c]x", "dx"),
            ("*a", "ab"),
        ] {
            assert!(!glob_match(p, n), "{p} should not match {n}");
        }
        assert!(is_pattern("*.txt") && is_pattern("a[1]") && !is_pattern("a.txt"));
        assert_eq!(
            flag(&["-r".into(), "d".into()], "-r"),
            (true, vec!["d".to_string()])
        );
    }
}
