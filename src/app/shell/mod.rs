//! `sft shell`: an interactive session over one connection, like sftp.
//!
//! The remote working directory lives here, on the client; every name typed
//! is resolved against it and checked before it is sent. `ls` numbers what it
//! shows, and `get 3` / `rm 3` refer to those numbers. Lines come from
//! rustyline (line editing, history, completion) when stdin is a terminal,
//! and plainly from stdin otherwise; either way they are read on a thread of
//! their own so the session never blocks the async runtime.
//!
//! This file holds the loop; `commands.rs` runs one command line,
//! `resolve.rs` turns words into remote and local names (numbers, patterns),
//! `transfers.rs` the uploads and downloads, `input.rs` reads lines (line
//! editing, completion).

mod commands;
mod input;
mod resolve;
mod transfers;

use std::io::IsTerminal;

use self::input::{Input, Read, completion_tree, split};
use crate::client::Client;
use crate::error::{Error, Kind, Result};
use crate::names;
use crate::protocol::EntryKind;

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
