//! Answers from a session's worker thread (the committer of small uploads,
//! the reader of downloads and listings), taken back one at a time in the
//! order the requests were handed over. The worker sends them in batches, so
//! a session woken once can answer many requests.

use std::collections::VecDeque;
use std::future::Future;

use tokio::sync::mpsc;

/// Where a worker's batches of answers arrive: a bounded channel (the
/// worker waits while the session is behind) or an unbounded one.
pub trait Batches<T> {
    fn recv(&mut self) -> impl Future<Output = Option<Vec<T>>> + Send;
    fn try_recv(&mut self) -> Result<Vec<T>, mpsc::error::TryRecvError>;
}

impl<T: Send> Batches<T> for mpsc::Receiver<Vec<T>> {
    fn recv(&mut self) -> impl Future<Output = Option<Vec<T>>> + Send {
        mpsc::Receiver::recv(self)
    }
    fn try_recv(&mut self) -> Result<Vec<T>, mpsc::error::TryRecvError> {
        mpsc::Receiver::try_recv(self)
    }
}

impl<T: Send> Batches<T> for mpsc::UnboundedReceiver<Vec<T>> {
    fn recv(&mut self) -> impl Future<Output = Option<Vec<T>>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
    fn try_recv(&mut self) -> Result<Vec<T>, mpsc::error::TryRecvError> {
        mpsc::UnboundedReceiver::try_recv(self)
    }
}

/// The answers still owed for the requests handed to a worker.
pub struct InOrder<T, R> {
    rx: R,
    /// The rest of the batch received last.
    ready: VecDeque<T>,
    /// Requests handed over whose answers were not taken yet.
    pending: usize,
    /// The answer for a request whose worker is gone.
    lost: fn() -> T,
}

impl<T, R: Batches<T>> InOrder<T, R> {
    pub fn new(rx: R, lost: fn() -> T) -> Self {
        InOrder {
            rx,
            ready: VecDeque::new(),
            pending: 0,
            lost,
        }
    }

    /// One more request was handed to the worker.
    pub fn expect_one(&mut self) {
        self.pending += 1;
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The next answer; cancel-safe. `None` if nothing is owed.
    pub async fn next(&mut self) -> Option<T> {
        if self.pending == 0 {
            return None;
        }
        if self.ready.is_empty() {
            match self.rx.recv().await {
                Some(batch) => self.ready.extend(batch),
                None => self.ready.push_back((self.lost)()),
            }
        }
        self.take()
    }

    /// The next answer if it has arrived.
    pub fn try_next(&mut self) -> Option<T> {
        if self.pending == 0 {
            return None;
        }
        if self.ready.is_empty() {
            match self.rx.try_recv() {
                Ok(batch) => self.ready.extend(batch),
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => self.ready.push_back((self.lost)()),
            }
        }
        self.take()
    }

    fn take(&mut self) -> Option<T> {
        let t = self.ready.pop_front()?;
        self.pending -= 1;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_back_one_at_a_time_in_order_across_batches() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut q = InOrder::new(rx, || 0u32);
        assert_eq!(q.next().await, None, "nothing owed");
        for _ in 0..4 {
            q.expect_one();
        }
        assert_eq!(q.try_next(), None, "nothing arrived yet");
        tx.send(vec![1, 2, 3]).unwrap();
        assert_eq!(q.next().await, Some(1));
        assert_eq!(q.try_next(), Some(2));
        assert_eq!(q.next().await, Some(3));
        assert_eq!(q.pending(), 1);
        // a worker gone before answering: the answer says so
        drop(tx);
        assert_eq!(q.next().await, Some(0));
        assert_eq!(q.pending(), 0);
        assert_eq!(q.try_next(), None);
    }
}
