//! Progress bars (indicatif) on stderr: one per file, plus an overall bar
//! for multi-file transfers. Disabled (no drawing at all) when stderr is not
//! a terminal, with --quiet, or with --json.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one command.
pub struct Progress {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    current: std::sync::Mutex<Option<ProgressBar>>,
}

fn file_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{wide_msg} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4} [{bar:24}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn overall_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "total {pos}/{len} files {wide_bar} {binary_bytes_per_sec:>12} elapsed {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// Bars if `enabled` and stderr is a terminal; `files` > 1 adds an
    /// overall bar.
    pub fn new(enabled: bool, files: usize) -> Progress {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress::off();
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let overall = (files > 1).then(|| {
            let b = multi.add(ProgressBar::new(files as u64));
            b.set_style(overall_style());
            b
        });
        Progress {
            multi: Some(multi),
            overall,
            current: std::sync::Mutex::new(None),
        }
    }

    /// No drawing.
    pub fn off() -> Progress {
        Progress {
            multi: None,
            overall: None,
            current: std::sync::Mutex::new(None),
        }
    }

    /// A file of `size` bytes starts.
    pub fn start(&self, name: &str, size: u64) {
        let Some(m) = &self.multi else { return };
        let b = m.add(ProgressBar::new(size));
        b.set_style(file_style());
        b.set_message(crate::names::escape(name));
        if let Ok(mut c) = self.current.lock()
            && let Some(old) = c.replace(b)
        {
            old.finish_and_clear();
        }
    }

    /// `n` more bytes of the current file moved.
    pub fn advance(&self, n: u64) {
        if self.multi.is_none() {
            return;
        }
        if let Ok(c) = self.current.lock()
            && let Some(b) = c.as_ref()
        {
            b.inc(n);
        }
    }

    /// A file finished (or failed).
    pub fn done(&self) {
        if self.multi.is_none() {
            return;
        }
        if let Ok(mut c) = self.current.lock()
            && let Some(b) = c.take()
        {
            b.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.inc(1);
        }
    }

    /// Print a line above the bars (or plainly when there are none).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Remove everything drawn.
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Ok(mut c) = self.current.lock()
            && let Some(b) = c.take()
        {
            b.finish_and_clear();
        }
    }
}
