//! What commands print: text for people, or with --json one JSON object per
//! line on stdout (fields documented in README.md) and errors as JSON on
//! stderr. Notes go to stderr and are dropped by --quiet and --json.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Set once a write to stdout found the reader gone (`sft get a b c | head
/// -1`): later result lines are dropped, the work goes on.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// What a command whose whole product is its stdout (a manual page, a
/// completion script) fails with when the reader goes away.
const CLOSED: &str = "writing to stdout: the reader closed the pipe";

/// Whether a command failed only because its stdout was closed: then it
/// ends quietly with success, as ripgrep does; decided once, in main. A
/// download to `-o -` reports the pipe through the transfer layer as
/// "writing stdout: Broken pipe". Any other error keeps its exit code, also
/// when stdout was closed earlier.
pub fn stdout_closed(e: &Error) -> bool {
    e.message == CLOSED || (e.message.ends_with(": Broken pipe") && e.message.contains("stdout"))
}

fn closed() -> Error {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    Error::other(CLOSED)
}

/// Write bytes to stdout (a manual page, a completion script).
pub fn stdout_bytes(bytes: &[u8]) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(closed()),
        Err(e) => Err(Error::io("writing to stdout", &e)),
    }
}

/// Results already printed by this process, so that a command run again
/// after a lost connection (`--retries`) reports each file once: what the
/// first attempt finished is `unchanged` to the second, and not repeated.
/// Kept as 64-bit hashes: 16 bytes a file however long its path, for trees
/// of millions of files.
static REPORTED: std::sync::Mutex<Option<std::collections::HashSet<u64>>> =
    std::sync::Mutex::new(None);

/// Whether `key` (an operation and a local path) is reported for the first
/// time; it counts as reported from now on.
pub fn first_report(key: &str) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let mut seen = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    seen.get_or_insert_with(Default::default).insert(h.finish())
}

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

/// Write a line to stdout. Once the reader has gone (`sft ls | head -1`)
/// lines are dropped and the command finishes its work (downloads still
/// land): a closed pipe is not an error.
pub fn stdout_line(line: &str) -> Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::io("writing to stdout", &e)),
    }
}

/// An error as JSON: `{"error":{"code":7,"kind":"space","message":"…"}}`.
pub fn error_value(e: &Error) -> Value {
    json!({
        "code": e.kind.exit_code(),
        "kind": e.kind.name(),
        "message": e.message,
    })
}

impl Output {
    /// A result line: `text` for people, `value` with --json.
    pub fn result(
        &self,
        text: impl FnOnce() -> String,
        value: impl FnOnce() -> Value,
    ) -> Result<()> {
        if self.json {
            stdout_line(&value().to_string())
        } else {
            stdout_line(&text())
        }
    }

    /// A result only machines want (text mode prints nothing).
    pub fn json_only(&self, value: impl FnOnce() -> Value) -> Result<()> {
        if self.json {
            stdout_line(&value().to_string())
        } else {
            Ok(())
        }
    }

    /// A note for people on stderr (not with --quiet or --json).
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprintln!("sft: {text}");
        }
    }

    /// A warning on stderr that --json does not silence (only --quiet does).
    pub fn warn_line(&self, text: &str) {
        if !self.quiet {
            eprintln!("sft: {text}");
        }
    }

    /// One file of a multi-file command failed; the command goes on.
    pub fn file_failed(&self, op: &str, name: &str, e: &Error) -> Result<()> {
        if self.json {
            stdout_line(
                &json!({
                    "op": op,
                    "name": name,
                    "outcome": "error",
                    "error": error_value(e),
                })
                .to_string(),
            )
        } else {
            eprintln!("sft: error: {e}");
            Ok(())
        }
    }
}

/// Counts the failures of a multi-file command; the first one decides the
/// exit code.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    pub first: Option<Error>,
}

impl Tally {
    pub fn record(&mut self, e: &Error) {
        self.failed += 1;
        if self.first.is_none() {
            self.first = Some(e.clone());
        }
    }

    /// Ok if nothing failed; otherwise an error of the first failure's kind.
    pub fn finish(self, what: &str) -> Result<()> {
        match self.first {
            None => Ok(()),
            Some(first) if self.failed == 1 && self.ok == 0 => Err(first),
            Some(first) => Err(Error::new(
                first.kind,
                format!(
                    "{} of {} {what} failed (each is reported above)",
                    self.failed,
                    self.failed + self.ok
                ),
            )),
        }
    }
}

/// The completion script for `shell` (rendered in memory: clap_complete
/// panics when its writer fails, and stdout may be a closed pipe).
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = crate::cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sft", &mut buf);
    buf
}

/// Escape text for roff: backslashes, and a leading '.' or '\'' that would
/// read as a request.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The manual page, sft(1): clap's synopsis and global options, then every
/// command with its usage and its own options (there are no per-command
/// pages), then EXIT STATUS, ENVIRONMENT, FILES and EXAMPLES.
pub fn man_page() -> Result<Vec<u8>> {
    use std::fmt::Write as _;
    let cmd = crate::cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    let failed = |e: std::io::Error| Error::io("rendering the manual page", &e);
    man.render_title(&mut buf).map_err(failed)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        ".SH NAME\nsft \\- secure file transfer over TLS 1.3, with SHA\\-256 verified end to end"
    );
    buf.extend_from_slice(s.as_bytes());
    man.render_synopsis_section(&mut buf).map_err(failed)?;
    man.render_options_section(&mut buf).map_err(failed)?;
    let mut s = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        command_entry(&mut s, &format!("sft {}", sub.get_name()), sub);
        for subsub in sub.get_subcommands().filter(|c| !c.is_hide_set()) {
            command_entry(
                &mut s,
                &format!("sft {} {}", sub.get_name(), subsub.get_name()),
                subsub,
            );
        }
    }
    s.push_str(MAN_SECTIONS);
    buf.extend_from_slice(s.as_bytes());
    Ok(buf)
}

/// One command in COMMANDS: usage, what it does, its own options.
fn command_entry(s: &mut String, name: &str, sub: &clap::Command) {
    use std::fmt::Write as _;
    let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
    let usage = sub
        .clone()
        .bin_name(name)
        .render_usage()
        .to_string()
        .trim_start_matches("Usage: ")
        .to_string();
    let _ = write!(
        s,
        ".SS \"{}\"\n.B {}\n.br\n{}\n",
        roff(name),
        roff(&usage),
        roff(&about)
    );
    let own: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|a| !a.is_global_set() && !a.is_hide_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if own.is_empty() {
        return;
    }
    s.push_str(".RS\n");
    for a in own {
        let mut head = String::new();
        if let Some(c) = a.get_short() {
            let _ = write!(head, "\\-{c}");
        }
        if let Some(l) = a.get_long() {
            if !head.is_empty() {
                head.push_str(", ");
            }
            let _ = write!(head, "\\-\\-{}", roff(l));
        }
        let value = a
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| a.get_id().as_str().to_ascii_uppercase());
        if a.is_positional() {
            head = roff(&value);
        } else if a.get_action().takes_values() {
            let _ = write!(head, " {}", roff(&value));
        }
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let _ = write!(s, ".TP\n\\fB{head}\\fR\n{}\n", roff(&help));
    }
    s.push_str(".RE\n");
}

/// The sections clap does not make (their content is README.md's).
const MAN_SECTIONS: &str = r#".SH ADDRESSES
A remote name may name its server: \fBsft://HOST[:PORT]/PATH\fR, \fBPROFILE:PATH\fR (a profile of the config file), or scp's \fBHOST:PATH\fR (port 7373, or the port of a profile for that host). A word is an address only if it has a colon with no slash before it and what precedes the colon is a profile or could be a host name (letters, digits, '.', '\-', '_', or a bracketed IPv6 address): \fB./a:b\fR is a plain name, and a remote file called a:b is \fB./a:b\fR. As the last word of \fBput\fR, \fBHOST:DIR/\fR is a directory and \fBHOST:NAME\fR names the file, unless NAME is an existing remote directory. The pin and token then come from flags, a profile for that same server, or the known\-servers file; never from a profile for another server, nor from SFT_PIN, SFT_CA, SFT_TOKEN or SFT_TOKEN_FILE when SFT_SERVER names another server.
.SH EXIT STATUS
.TP
.B 0
success (also when the reader of standard output went away, as in \fBsft ls | head \-1\fR)
.TP
.B 1
any other error
.TP
.B 2
usage: bad arguments, a name that breaks the rules
.TP
.B 3
network: cannot connect, connection lost, timeout, server busy or shutting down
.TP
.B 4
TLS or server identity: certificate not trusted, pin mismatch
.TP
.B 5
authentication failed or permission denied
.TP
.B 6
not found
.TP
.B 7
quota exceeded or storage full
.TP
.B 8
integrity: SHA\-256 mismatch
.TP
.B 9
protocol violation by the peer
.SH ENVIRONMENT
.TP
.B SFT_SERVER, SFT_TOKEN, SFT_TOKEN_FILE, SFT_PIN, SFT_CA, SFT_TIMEOUT, SFT_COMPRESS, SFT_LIMIT_RATE, SFT_KNOWN_SERVERS, SFT_PROFILE, SFT_CONFIG
the client options of the same names (flags override them; they override the profile)
.TP
.B SFT_USERS, SFT_STATE_DIR
the users file for \fBsft user\fR, and the server's state directory
.TP
.B SFT_LOG
log filter for stderr, e.g. \fBdebug\fR
.TP
.B XDG_CONFIG_HOME, HOME
where the config and known\-servers files are looked for
.SH FILES
.TP
.I ~/.config/sft/config.toml
profiles of connection settings (mode 0600 if it holds a token)
.TP
.I ~/.config/sft/known_servers
servers trusted earlier: \fBHOST:PORT sha256:FINGERPRINT\fR, one a line
.TP
.I ~/.local/state/sft/
the server's generated certificate, key and admin token (see \fB\-\-state\-dir\fR)
.SH EXAMPLES
.nf
sft serve \-\-root /srv/files
sft put report.pdf files.example.com:inbox/
sft ls \-l sft://files.example.com:7373/inbox
sft get prod:inbox/report.pdf \-o ./
sft put \-r photos backups/
tar c dir | sft put \- \-\-as dir.tar
sft get releases/app.tar.gz \-\-sha256 "$EXPECTED"
sft get dir.tar \-o \- | tar x
.fi
.SH SEE ALSO
\fBsha256sum\fR(1), \fBscp\fR(1), \fBsftp\fR(1)
"#;
