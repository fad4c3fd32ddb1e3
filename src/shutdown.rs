//! The process-wide shutdown request, visible to every shard.
//!
//! A signal thread calls [`Shutdown::request`]; each shard's accept loop and every open
//! connection wait on it, stop taking new work, finish what is in flight, and then each
//! writer drains its ring into the sink before the process exits.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;

#[derive(Default)]
pub struct Shutdown {
    requested: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Completes once shutdown has been requested; usable from any executor.
    pub async fn wait(&self) {
        loop {
            if self.is_requested() {
                return;
            }
            let listener = self.event.listen();
            if self.is_requested() {
                return;
            }
            listener.await;
        }
    }
}
