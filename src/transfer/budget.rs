//! The byte budget transfers borrow their buffers from.

/// Bytes are lent in units of this size.
const UNIT: u64 = 1024;

/// A byte budget that transfers borrow their buffers from: a total shared by
/// every transfer of a server (`sft serve --memory-budget`), or unlimited (the
/// client, and tests). A transfer that finds it used up waits for a loan
/// before it reads more (from the socket or the disk), so memory stays
/// bounded and a full budget slows transfers down instead of failing them.
/// Every loan is repaid when the buffer it covers has been written (to disk
/// or the socket) or dropped, whatever way the transfer ends; a single loan
/// never asks for more than the whole budget, so every transfer can always
/// make progress once the loans ahead of it are repaid.
#[derive(Clone, Default)]
pub struct Budget(Option<std::sync::Arc<BudgetInner>>);

struct BudgetInner {
    units: std::sync::Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl Budget {
    /// No limit: loans are free and never wait.
    pub fn unlimited() -> Budget {
        Budget(None)
    }

    /// A budget of `bytes` in all (at least one unit).
    pub fn new(bytes: u64) -> Budget {
        let total = (bytes / UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Budget(Some(std::sync::Arc::new(BudgetInner {
            units: std::sync::Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        })))
    }

    /// The whole budget in bytes (None: unlimited).
    pub fn total(&self) -> Option<u64> {
        self.0.as_ref().map(|b| u64::from(b.total) * UNIT)
    }

    /// Bytes not lent out now (None: unlimited).
    pub fn available(&self) -> Option<u64> {
        self.0
            .as_ref()
            .map(|b| b.units.available_permits() as u64 * UNIT)
    }

    /// Units for `bytes`, capped at the whole budget so a loan can always
    /// be granted in the end.
    fn units(b: &BudgetInner, bytes: usize) -> u32 {
        (bytes as u64).div_ceil(UNIT).clamp(1, u64::from(b.total)) as u32
    }

    /// Borrow room for `bytes`, waiting while the budget is lent out.
    pub async fn borrow(&self, bytes: usize) -> Loan {
        let Some(b) = &self.0 else {
            return Loan(None);
        };
        let n = Self::units(b, bytes);
        // the semaphore is never closed, so this only waits
        Loan(b.units.clone().acquire_many_owned(n).await.ok())
    }

    /// `borrow` from a blocking thread (one that runs no async tasks).
    pub fn borrow_blocking(&self, bytes: usize) -> Loan {
        let Some(b) = &self.0 else {
            return Loan(None);
        };
        let n = Self::units(b, bytes);
        if let Ok(p) = b.units.clone().try_acquire_many_owned(n) {
            return Loan(Some(p));
        }
        let wait = b.units.clone().acquire_many_owned(n);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => Loan(h.block_on(wait).ok()),
            // no runtime to wait in: do without (never happens in a server)
            Err(_) => Loan(None),
        }
    }

    /// Borrow room for `bytes` only if it is free now.
    pub fn try_borrow(&self, bytes: usize) -> Option<Loan> {
        let Some(b) = &self.0 else {
            return Some(Loan(None));
        };
        let n = Self::units(b, bytes);
        b.units
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| Loan(Some(p)))
    }
}

/// Room borrowed from a [`Budget`]; repaid when dropped.
#[derive(Default)]
pub struct Loan(Option<tokio::sync::OwnedSemaphorePermit>);

impl Loan {
    /// A loan of nothing (from an unlimited budget).
    pub fn none() -> Loan {
        Loan(None)
    }

    /// Bytes this loan holds.
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.num_permits() as u64 * UNIT)
    }

    /// Make this loan cover `bytes`: keep what it holds if that is enough
    /// (repaying the rest), else borrow the difference, or if that is not
    /// free now, repay everything and borrow the whole anew, so a transfer
    /// never holds one loan while it waits for another.
    pub async fn resize(&mut self, budget: &Budget, bytes: usize) {
        let Some(b) = &budget.0 else { return };
        let want = Budget::units(b, bytes) as usize;
        let have = self.0.as_ref().map_or(0, |p| p.num_permits());
        if have >= want {
            if let Some(p) = self.0.as_mut() {
                drop(p.split(have - want));
            }
            return;
        }
        let more = b.units.clone().try_acquire_many_owned((want - have) as u32);
        match (self.0.as_mut(), more) {
            (Some(p), Ok(m)) => p.merge(m),
            (None, Ok(m)) => self.0 = Some(m),
            (_, Err(_)) => {
                self.0 = None;
                *self = budget.borrow(bytes).await;
            }
        }
    }
}
