//! The server's disk workers: one pool of OS threads, started with the
//! server and sized from the core count, for the disk work sessions hand off
//! in batches — writing, then syncing and publishing pipelined small uploads
//! (`commit`), reading small downloads and listings ahead (`fetch`), and the
//! server-side copy of a CLONE. A session owns no thread: it queues a job
//! and awaits its answer, so a thousand idle sessions cost nothing and many
//! busy ones share the same few threads.
//!
//! One-call metadata commands (MKDIR, RMDIR, REMOVE, STAT, USAGE) do not
//! come here: they run on tokio's blocking pool, which grows as needed, so
//! they never wait behind a batch of whole files. Large transfers do not
//! either: each has its own reading or writing threads for its whole life
//! (`transfer::spawn_reader`, `spawn_writer`), which a bounded pool would
//! let a few slow clients monopolise.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Its threads end when it is dropped (with the server's shared
/// state), after the jobs already queued.
pub struct Disk {
    jobs: Sender<Job>,
    threads: usize,
}

/// Threads for `cores` cores: twice the cores (a worker waiting for a sync
/// holds no core), at least 4 (one session writes a batch while the previous
/// one syncs, and another session must not wait for both), at most 32.
pub fn threads_for(cores: usize) -> usize {
    cores.saturating_mul(2).clamp(4, 32)
}

impl Disk {
    /// Start `threads` workers, named `sft-disk`.
    pub fn start(threads: usize) -> Result<Disk> {
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("sft-disk".into())
                .spawn(move || work(&rx))
                .map_err(|e| Error::io("starting the disk worker threads", &e))?;
        }
        Ok(Disk {
            jobs,
            threads: threads.max(1),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on a worker and wait for its result (cancel-safe: a job whose
    /// caller went away still runs to its end, and its result is dropped).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| Error::other("internal error: the disk workers stopped"))?;
        rx.await
            .map_err(|_| Error::other("internal error: a disk job failed; see the server log"))
    }
}

/// One worker: take the next job, run it, until the pool is dropped. A job
/// that panics is logged and costs only its own answer.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a disk job panicked; its request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_from_the_cores() {
        assert_eq!(threads_for(1), 4);
        assert_eq!(threads_for(2), 4);
        assert_eq!(threads_for(8), 16);
        assert_eq!(threads_for(64), 32);
    }

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let disk = Disk::start(2).unwrap();
        assert_eq!(disk.run(|| 2 + 2).await.unwrap(), 4);
        let failed = disk.run(|| -> u32 { panic!("boom") }).await;
        assert!(failed.is_err());
        // both workers still serve
        let (a, b) = tokio::join!(disk.run(|| 1), disk.run(|| 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }

    #[tokio::test]
    async fn many_jobs_share_few_threads() {
        let disk = Arc::new(Disk::start(3).unwrap());
        let mut all = Vec::new();
        for i in 0..200u64 {
            let d = disk.clone();
            all.push(tokio::spawn(async move { d.run(move || i * 2).await }));
        }
        let mut sum = 0;
        for h in all {
            sum += h.await.unwrap().unwrap();
        }
        assert_eq!(sum, 2 * (0..200).sum::<u64>());
    }
}
