//! The requests of one shard waiting for their group's sync, woken together after each one.
//!
//! A shard's log and every request that commits to it run on the shard's own thread. So a
//! plain list of wakers is enough here. `event_listener` keeps a thread-safe list and
//! allocates a listener on the heap for every wait. With one event per request, that
//! listener's allocation, registration, poll and removal were about 4% of a durable
//! shard's time.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub(super) struct SyncWaiters {
    wakers: RefCell<Vec<Waker>>,
    /// The list from the last wake, emptied and kept for its capacity.
    spare: RefCell<Vec<Waker>>,
    /// Counts the wakes. A waiter polled again before the next wake updates its entry
    /// rather than adding one, so the list holds at most one entry per waiter.
    round: Cell<u64>,
}

impl SyncWaiters {
    /// Completes once `done()` holds. It is checked when first polled and after every
    /// wake.
    pub(super) async fn wait_until(&self, done: impl Fn() -> bool) {
        let mut entry: Option<(u64, usize)> = None;
        poll_fn(|cx| {
            if done() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            match entry {
                Some((round, at)) if round == self.round.get() => {
                    if !wakers[at].will_wake(cx.waker()) {
                        wakers[at] = cx.waker().clone();
                    }
                }
                _ => {
                    entry = Some((self.round.get(), wakers.len()));
                    wakers.push(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes every waiter; each checks its own condition again.
    pub(super) fn wake_all(&self) {
        let mut woken = self.spare.take();
        std::mem::swap(&mut woken, &mut *self.wakers.borrow_mut());
        self.round.set(self.round.get() + 1);
        // No borrow is held while waking: a waker may run code that waits again.
        for waker in woken.drain(..) {
            waker.wake();
        }
        *self.spare.borrow_mut() = woken;
    }

    #[cfg(test)]
    fn registered(&self) -> usize {
        self.wakers.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_waiter_is_woken_and_completes_once_its_condition_holds() {
        let waiters = SyncWaiters::default();
        let synced = Cell::new(0u64);
        let (wakes, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(waiters.wait_until(|| synced.get() >= 2));
        assert!(wait.as_mut().poll(&mut cx).is_pending());

        // A sync of an earlier group wakes it, but it waits on.
        synced.set(1);
        waiters.wake_all();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(wait.as_mut().poll(&mut cx).is_pending());

        synced.set(2);
        waiters.wake_all();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(waiters.registered(), 0);
    }

    #[test]
    fn polls_between_wakes_keep_one_entry_per_waiter_with_its_latest_waker() {
        let waiters = SyncWaiters::default();
        let (first_wakes, first) = counting();
        let (second_wakes, second) = counting();
        let mut wait = pin!(waiters.wait_until(|| false));
        for _ in 0..5 {
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&first))
                .is_pending());
        }
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        assert_eq!(waiters.registered(), 1);
        waiters.wake_all();
        assert_eq!(first_wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(second_wakes.0.load(Ordering::SeqCst), 1);
        // After a wake it registers anew.
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        assert_eq!(waiters.registered(), 1);
    }

    #[test]
    fn a_waiter_already_satisfied_never_registers() {
        let waiters = SyncWaiters::default();
        let (_, waker) = counting();
        let mut wait = pin!(waiters.wait_until(|| true));
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
        assert_eq!(waiters.registered(), 0);
    }
}
