//! How much CPU there is: the cores this process may use, and the idle cores
//! of the whole machine from /proc/stat (read by `auto`).

use std::time::{Duration, Instant};

/// Idle CPU of the whole machine, in cores, from /proc/stat deltas.
#[derive(Debug, Default)]
pub struct IdleMeter {
    last: Option<(u64, u64)>,
    cores: f64,
}

impl IdleMeter {
    pub fn new() -> IdleMeter {
        IdleMeter {
            last: recent_cpu_times(),
            cores: cores() as f64,
        }
    }

    /// Idle cores since the previous call (None where /proc/stat is missing).
    pub fn idle_cores(&mut self) -> Option<f64> {
        let now = read_cpu_times()?;
        let (idle0, total0) = self.last.replace(now)?;
        let (di, dt) = (now.0.saturating_sub(idle0), now.1.saturating_sub(total0));
        (dt > 0).then(|| di as f64 / dt as f64 * self.cores)
    }
}

/// CPU times read at most every 20 ms process-wide: a baseline for a new
/// meter (many small transfers in a row would otherwise each read
/// /proc/stat, which costs more than sending a small file).
fn recent_cpu_times() -> Option<(u64, u64)> {
    use std::sync::{Mutex, OnceLock};
    type Reading = Option<(Instant, (u64, u64))>;
    static LAST: OnceLock<Mutex<Reading>> = OnceLock::new();
    let cell = LAST.get_or_init(|| Mutex::new(None));
    let mut g = cell.lock().unwrap_or_else(|p| p.into_inner());
    match *g {
        Some((at, t)) if at.elapsed() < Duration::from_millis(20) => Some(t),
        _ => {
            let t = read_cpu_times()?;
            *g = Some((Instant::now(), t));
            Some(t)
        }
    }
}

/// Cores this process may use (looked up once: the lookup reads several
/// cgroup files, which costs more than sending a small file).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// (idle + iowait, total) jiffies of all CPUs.
fn read_cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    Some((v[3] + v[4], v.iter().take(8).sum()))
}
