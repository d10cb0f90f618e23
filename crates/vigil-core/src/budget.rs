//! A memory budget shared by everything that holds a client's bytes while it
//! works on them (request bodies being read, packages being unpacked): each
//! takes a [`Reservation`] before it allocates, and a server past its budget
//! answers "busy, retry" (503) instead of running out of memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    max: u64,
    in_use: AtomicU64,
}

impl MemoryBudget {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(MemoryBudget { max, in_use: AtomicU64::new(0) })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Reserves `n` bytes, or `None` when they do not fit. One request larger
    /// than the whole budget is let in only when nothing else holds any (it
    /// runs alone): the route's own size limit still bounds it.
    pub fn try_reserve(self: &Arc<Self>, n: u64) -> Option<Reservation> {
        self.try_reserve_beside(n, 0)
    }

    /// [`MemoryBudget::try_reserve`] for work that belongs to a request
    /// already holding `own` bytes (a package unpacked from the body it came
    /// in): counted as alone when nothing but those bytes is held.
    pub fn try_reserve_beside(self: &Arc<Self>, n: u64, own: u64) -> Option<Reservation> {
        let mut reservation = Reservation { budget: Arc::clone(self), bytes: 0, beside: own };
        reservation.try_grow(n).then_some(reservation)
    }
}

/// Bytes held against a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
    /// Bytes the same request holds in another reservation.
    beside: u64,
}

impl Reservation {
    /// Reserves `n` more bytes; `false` (and nothing taken) when they do not fit.
    pub fn try_grow(&mut self, n: u64) -> bool {
        let (budget, mine) = (&self.budget, self.bytes.saturating_add(self.beside));
        let taken = budget.in_use.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let after = used.checked_add(n)?;
            // Over the budget only when this reservation is all there is.
            (after <= budget.max || used <= mine).then_some(after)
        });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none(), "60 + 50 is over 100");
        let mut b = budget.try_reserve(40).unwrap();
        assert!(!b.try_grow(1));
        let c = budget.try_reserve(0).unwrap();
        drop(c);
        drop(a);
        assert!(b.try_grow(60));
        assert_eq!((b.bytes(), budget.in_use()), (100, 100));
        drop(b);
        assert_eq!(budget.in_use(), 0);
        // Larger than the whole budget: only alone.
        let mut alone = budget.try_reserve(500).unwrap();
        assert!(budget.try_reserve(1).is_none());
        assert!(alone.try_grow(500), "a lone body may keep growing");
        drop(alone);
        assert!(budget.try_reserve(u64::MAX).is_some());
        // A request's second reservation (its unpacked package) beside its first (its body).
        let body = budget.try_reserve(80).unwrap();
        assert!(budget.try_reserve(300).is_none());
        let unpacked = budget.try_reserve_beside(300, body.bytes()).unwrap();
        assert!(budget.try_reserve_beside(1, body.bytes()).is_none(), "others still wait");
        drop((body, unpacked));
        assert_eq!(budget.in_use(), 0);
    }
}
