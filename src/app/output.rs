//! What commands print: text for people, or with --json one JSON object per
//! line on stdout (fields documented in README.md) and errors as JSON on
//! stderr. Notes go to stderr and are dropped by --quiet and --json.

use std::io::Write;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

/// Write a line to stdout; a closed pipe (`sft ls | head`) is not an error.
pub fn stdout_line(line: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
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
