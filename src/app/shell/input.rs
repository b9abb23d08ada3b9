//! Lines for the shell: read on a thread of their own (rustyline on a
//! terminal, plain stdin otherwise), split into words like a shell, with
//! tab completion of commands and remote names.

use std::io::BufRead;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use super::resolve::join;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::names;
use crate::protocol::{Entry, EntryKind};

/// Command names, for completion.
pub(super) const COMMANDS: &[&str] = &[
    "bye", "cd", "df", "exit", "get", "help", "lcd", "lls", "lpwd", "ls", "mget", "mkdir", "mput",
    "put", "pwd", "quit", "rm", "rmdir",
];

/// Most subdirectories of the remote directory whose names are fetched for
/// completion (`cd doc/<Tab>`), in one burst at the prompt.
pub(super) const COMPLETE_SUBDIRS: usize = 64;

/// Names for completion in `cwd`, and one level into each of its
/// subdirectories (`doc/a.txt`), fetched in one burst.
pub(super) async fn completion_tree(c: &mut Client, cwd: &str) -> Result<Vec<String>> {
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
pub(super) fn completion_names(entries: &[Entry]) -> Vec<String> {
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

pub(super) fn split(line: &str) -> Result<Vec<String>> {
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
pub(super) fn quote_word(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// What one request for a line gave.
pub(super) enum Read {
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
pub(super) struct Input {
    ask: std::sync::mpsc::Sender<Ask>,
    got: tokio::sync::mpsc::Receiver<Read>,
}

impl Input {
    pub(super) fn start(interactive: bool) -> Result<Input> {
        let (ask, asked) = std::sync::mpsc::channel::<Ask>();
        let (give, got) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("sft-shell-input".into())
            .spawn(move || read_lines(interactive, asked, give))
            .map_err(|e| Error::io("starting the shell's input thread", &e))?;
        Ok(Input { ask, got })
    }

    pub(super) async fn next(&mut self, prompt: String, names: Vec<String>) -> Read {
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
}
