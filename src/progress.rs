//! Progress bars (indicatif) on stderr: one per file, plus an overall bar
//! for multi-file transfers, and when it ends one summary line (files,
//! size, time, rate) as scp leaves. Disabled (no drawing at all) when stderr
//! is not a terminal, with --quiet, or with --json.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one command.
pub struct Progress {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    current: std::sync::Mutex<Option<ProgressBar>>,
    /// For the overall bar's byte rate and the summary line.
    started: Instant,
    bytes: AtomicU64,
    files: AtomicU64,
}

/// The line left on the terminal when a transfer ends:
/// `3 files, 1.2 MiB in 0.4 s, 3.0 MiB/s`.
pub fn summary(files: u64, bytes: u64, secs: f64) -> String {
    let what = if files == 1 {
        "1 file".to_string()
    } else {
        format!("{files} files")
    };
    format!(
        "{what}, {} in {secs:.1} s, {}",
        crate::units::human(bytes),
        rate(bytes, secs)
    )
}

/// Bytes per second, in binary units (`0 B/s` for no time at all).
fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "0 B/s".into();
    }
    format!("{}/s", crate::units::human((bytes as f64 / secs) as u64))
}

fn file_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{wide_msg} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4} [{bar:24}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// The overall bar counts files; its message carries the bytes and their
/// rate, and the file rate is labelled as files.
fn overall_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "total {pos}/{len} files {wide_bar} {msg} {files_per_sec} elapsed {elapsed}",
    )
    .map(|s| {
        s.with_key(
            "files_per_sec",
            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1} files/s", st.per_sec());
            },
        )
    })
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
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }

    /// No drawing.
    pub fn off() -> Progress {
        Progress {
            multi: None,
            overall: None,
            current: std::sync::Mutex::new(None),
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
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
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if let Ok(c) = self.current.lock()
            && let Some(b) = c.as_ref()
        {
            b.inc(n);
        }
        if let Some(o) = &self.overall {
            let secs = self.started.elapsed().as_secs_f64();
            o.set_message(format!(
                "{} {}",
                crate::units::human(total),
                rate(total, secs)
            ));
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
        self.files.fetch_add(1, Ordering::Relaxed);
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

    /// Remove everything drawn, and leave the summary line (when bars were
    /// drawn and something moved).
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Ok(mut c) = self.current.lock()
            && let Some(b) = c.take()
        {
            b.finish_and_clear();
        }
        let files = self.files.load(Ordering::Relaxed);
        if self.multi.is_some() && files > 0 {
            eprintln!(
                "{}",
                summary(
                    files,
                    self.bytes.load(Ordering::Relaxed),
                    self.started.elapsed().as_secs_f64()
                )
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_summary_says_files_size_time_and_rate() {
        assert_eq!(
            super::summary(3, 3 * 1024 * 1024, 2.0),
            "3 files, 3.0 MiB in 2.0 s, 1.5 MiB/s"
        );
        assert_eq!(super::summary(1, 10, 0.0), "1 file, 10 B in 0.0 s, 0 B/s");
    }
}
