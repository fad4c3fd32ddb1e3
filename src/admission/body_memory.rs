//! The `body_memory` cause: a shard's budget for request bodies being received.
//!
//! Every body in flight on a shard holds its buffer's capacity against one budget
//! (`limits.max_inflight_body_bytes`). A body whose next charge does not fit is refused at
//! once rather than made to wait for memory, so no client can make a shard hold more than
//! the budget, nor queue behind one that does. The reader charges before it allocates.

use std::cell::Cell;
use std::rc::Rc;

use super::UnavailableCause;

/// One shard's memory for bodies being received; shared by its connections.
#[derive(Debug)]
pub struct BodyBudget {
    available: Cell<usize>,
    limit: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(BodyBudget {
            available: Cell::new(limit),
            limit,
        })
    }

    /// Bytes currently charged to bodies in flight.
    pub fn in_use(&self) -> usize {
        self.limit - self.available.get()
    }
}

/// The memory one body holds against its shard's [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub struct BodyCharge {
    budget: Rc<BodyBudget>,
    bytes: usize,
}

impl BodyCharge {
    pub fn new(budget: Rc<BodyBudget>) -> Self {
        BodyCharge { budget, bytes: 0 }
    }

    /// Raises this body's charge to `bytes` in all (never lowers it); `body_memory` if the
    /// shard's budget cannot hold the difference, in which case nothing more is charged.
    pub fn raise_to(&mut self, bytes: usize) -> Result<(), UnavailableCause> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let extra = bytes - self.bytes;
        let available = self.budget.available.get();
        if extra > available {
            return Err(UnavailableCause::BodyMemory);
        }
        self.budget.available.set(available - extra);
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.available.set(budget.available.get() + self.bytes);
    }
}
