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
use crate::client::Client;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind};

/// The commands, their arguments and what they do (for `help`).
const HELP: &[(&str, &str)] = &[
    ("ls [DIR]", "list a remote directory, numbered"),
    (
        "get NAME|NUMBER [LOCAL]",
        "download (never replaces a local file)",
    ),
    ("put PATH [NAME]", "upload into the remote directory"),
    ("rm NAME|NUMBER", "remove a remote file"),
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
    "bye", "cd", "df", "exit", "get", "help", "lcd", "lls", "lpwd", "ls", "mkdir", "put", "pwd",
    "quit", "rm", "rmdir",
];

/// Run the shell on an open session until `exit` or end of input. A session
/// the server ended while the shell sat at its prompt (idle timeout, a
/// restart) is opened again with `opts` before the next command, which is
/// then sent as usual: the server never saw it, so nothing runs twice.
pub async fn run(c: &mut Client, opts: &crate::client::Options) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut input = Input::start(interactive)?;
    let mut sh = Shell::default();
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
            sh.complete = Some(match c.list(&sh.cwd).await {
                Ok(entries) => completion_names(&entries),
                Err(e) if session_lost(&e) => return Err(e),
                Err(_) => Vec::new(),
            });
        }
        let prompt = format!("sft:/{}> ", names::escape(&sh.cwd));
        let line = match input
            .next(prompt, sh.complete.clone().unwrap_or_default())
            .await
        {
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
        match sh.exec(c, &words).await {
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
                arity(args, 0, 1, "ls [DIR]")?;
                self.ls(c, arg(0)).await?;
            }
            "get" => {
                arity(args, 1, 2, "get NAME|NUMBER [LOCAL]")?;
                self.get(c, &args[0], arg(1)).await?;
            }
            "put" => {
                arity(args, 1, 2, "put PATH [NAME]")?;
                self.put(c, &args[0], arg(1)).await?;
            }
            "rm" => {
                arity(args, 1, 1, "rm NAME|NUMBER")?;
                let name = self.target(&args[0], EntryKind::File)?;
                c.remove(&name).await?;
                self.complete = None;
            }
            "mkdir" => {
                arity(args, 1, 1, "mkdir DIR")?;
                let name = needs_name(self.resolve(&args[0])?)?;
                c.mkdir(&name).await?;
                self.complete = None;
            }
            "rmdir" => {
                arity(args, 1, 1, "rmdir DIR|NUMBER")?;
                let name = self.target(&args[0], EntryKind::Dir)?;
                c.rmdir(&name).await?;
                self.complete = None;
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
                    out(&format!("  {usage:<26} {what}"))?;
                }
                out(
                    "Names are relative to the remote directory; NUMBER is a line of the last ls (write ./7 for a file named 7). Quote names with spaces: \"my file.txt\".",
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
            .and_then(|i| self.listed.get(i));
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
            None if self.listed.is_empty() => Err(Error::usage(format!(
                "no numbered listing yet: run ls first (or write ./{arg} for a name)"
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

    async fn ls(&mut self, c: &mut Client, arg: Option<&str>) -> Result<()> {
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
        let entries = c.list(&dir).await?;
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
            out(&format!(
                "{:>width$}  {kind}  {size:>10}  {}  {owner:<12}  {name}",
                i + 1,
                short_time(e.mtime_ns)
            ))?;
        }
        if dir == self.cwd {
            self.complete = Some(completion_names(&entries));
        }
        self.listed = listed;
        Ok(())
    }

    async fn get(&mut self, c: &mut Client, arg: &str, local: Option<&str>) -> Result<()> {
        let name = self.target(arg, EntryKind::File)?;
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
        let got = c.get(&name, &dest, false, None).await?;
        out(&format!(
            "{}  {}",
            hex::encode(got.sha256),
            shown(&got.path)
        ))
    }

    async fn put(&mut self, c: &mut Client, path: &str, remote: Option<&str>) -> Result<()> {
        let local = PathBuf::from(path);
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
            // NAME/ puts the file into that directory
            Some(r) if r.ends_with('/') => join(&self.resolve(r)?, &file_name()?),
            Some(r) => self.resolve(r)?,
            None => join(&self.cwd, &file_name()?),
        };
        let name = needs_name(name)?;
        names::validate(&name)?;
        let up = c.put(&local, &name, false).await?;
        self.complete = None;
        out(&format!(
            "{}  {}",
            hex::encode(up.sha256),
            self.shown(&up.name)
        ))
    }

    async fn cd(&mut self, c: &mut Client, arg: Option<&str>) -> Result<()> {
        let dir = match arg {
            None => String::new(),
            Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                self.target(a, EntryKind::Dir)?
            }
            Some(a) => self.resolve(a)?,
        };
        if !dir.is_empty() && c.stat(&dir).await?.kind != EntryKind::Dir {
            return Err(Error::usage(format!(
                "{} is not a directory",
                names::quote(&dir)
            )));
        }
        self.cwd = dir;
        self.complete = None;
        Ok(())
    }
}

fn arity(args: &[String], min: usize, max: usize, usage: &str) -> Result<()> {
    if args.len() < min || args.len() > max {
        return Err(Error::usage(format!("usage: {usage}")));
    }
    Ok(())
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
            (Some("put"), 1) | (Some("get"), 2) | (Some("lcd" | "lls"), 1) => false,
            _ => return Ok((pos, Vec::new())),
        };
        if !remote {
            return self.files.complete(line, pos, ctx);
        }
        if word.contains('/') {
            return Ok((pos, Vec::new()));
        }
        Ok((
            start,
            offer(&mut self.names.iter().map(String::as_str), true),
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
    }
}
