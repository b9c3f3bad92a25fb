//! The global cap on message bytes held in memory across all sessions.
//!
//! Each transaction holds a [`Reservation`] that grows in steps as its body arrives; when the
//! shared [`MemoryBudget`] cannot cover a step, the transaction fails with `451 4.3.1` instead of
//! the process running out of memory. Dropping the reservation returns its bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Granularity of reservations, so the atomic is touched once per step, not per read.
pub const STEP: u64 = 64 * 1024;

#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { used: AtomicU64::new(0), limit })
    }

    /// Bytes currently reserved.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation against this budget.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: Arc::clone(self), bytes: 0 }
    }
}

/// Bytes reserved by one transaction; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Make sure at least `total` bytes are reserved; false when the budget is exhausted.
    pub fn ensure(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        let want = total.div_ceil(STEP) * STEP - self.bytes;
        let limit = self.budget.limit;
        let grown = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| (u + want <= limit).then_some(u + want))
            .is_ok();
        if grown {
            self.bytes += want;
        }
        grown
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_release_on_drop() {
        let b = MemoryBudget::new(3 * STEP);
        let mut r1 = b.reservation();
        assert!(r1.ensure(1));
        assert_eq!(r1.bytes(), STEP);
        assert!(r1.ensure(2 * STEP));
        let mut r2 = b.reservation();
        assert!(r2.ensure(STEP));
        assert!(!r2.ensure(STEP + 1), "budget is full");
        assert_eq!(b.used(), 3 * STEP);
        drop(r1);
        assert_eq!(b.used(), STEP);
        assert!(r2.ensure(3 * STEP));
    }
}
