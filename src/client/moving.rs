//! What this client process is moving right now, so that an interrupted
//! command (Ctrl-C, SIGTERM) can say in one line what was kept and how to
//! resume or discard it. Process-wide, as signals are.

use std::path::PathBuf;
use std::sync::Mutex;

/// A transfer that can resume if it is cut off now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moving {
    /// An upload sent with RESUME: the server keeps what it received.
    Up { remote: String },
    /// A download into a `.sft-part` file beside its destination.
    Down { remote: String, part: PathBuf },
}

static NOW: Mutex<Option<Moving>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<Moving>> {
    NOW.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a transfer as in progress while it lives.
pub struct Marked(());

/// `m` is in progress until the returned guard is dropped.
pub fn mark(m: Moving) -> Marked {
    *slot() = Some(m);
    Marked(())
}

impl Drop for Marked {
    fn drop(&mut self) {
        *slot() = None;
    }
}

/// The transfer in progress, if any.
pub fn now() -> Option<Moving> {
    slot().clone()
}

/// The line printed when a command is interrupted during `m`.
pub fn interrupted_note(m: Option<&Moving>) -> String {
    match m {
        Some(Moving::Up { remote }) => format!(
            "interrupted: the server keeps what it received of {} for resuming (its --keep-partial, 24h by default); run the same command again to resume, or add --no-resume to start over",
            crate::names::quote(remote)
        ),
        Some(Moving::Down { remote, part }) => format!(
            "interrupted: what was downloaded of {} is kept in {}; run the same command again to resume, or delete that file to discard it",
            crate::names::quote(remote),
            part.display()
        ),
        None => "interrupted: transfers already reported are complete; run the same command again to finish (files already there are reported unchanged)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_lasts_as_long_as_its_guard() {
        let m = Moving::Up {
            remote: "big.bin".into(),
        };
        {
            let _g = mark(m.clone());
            assert_eq!(now(), Some(m.clone()));
            assert!(
                interrupted_note(now().as_ref()).contains("'big.bin'")
                    || interrupted_note(now().as_ref()).contains("big.bin")
            );
        }
        assert_eq!(now(), None);
        assert!(interrupted_note(None).contains("run the same command again"));
    }
}
