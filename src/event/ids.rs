//! Server-generated event ids.
//!
//! An event sent without `event_id` gets a UUIDv7 whose timestamp is the request's receive
//! time. Its 74 random bits come from a generator per thread, seeded once from the OS,
//! rather than from `Uuid::now_v7`, which makes a `getrandom` system call (and reads the
//! clock) for every id: one syscall per event on the single-event path.
//!
//! The ids need to be unique, not secret: with independently seeded 64-bit generators on
//! every shard and node, two ids collide only if two generators produce the same 128
//! bits in the same millisecond.

use std::cell::RefCell;

use uuid::{Builder, Uuid};

thread_local! {
    static RANDOM: RefCell<fastrand::Rng> = RefCell::new(seeded());
}

fn seeded() -> fastrand::Rng {
    // One OS-random draw per thread: a v4 id is 122 bits from getrandom.
    let (high, low) = Uuid::new_v4().as_u64_pair();
    fastrand::Rng::with_seed(high ^ low.rotate_left(32))
}

/// A new UUIDv7 for an event received at `received_at_ms` (Unix milliseconds).
pub fn generated_id(received_at_ms: i64) -> Uuid {
    let mut random = [0u8; 10];
    RANDOM.with(|rng| {
        let mut rng = rng.borrow_mut();
        random[..8].copy_from_slice(&rng.u64(..).to_le_bytes());
        random[8..].copy_from_slice(&rng.u16(..).to_le_bytes());
    });
    Builder::from_unix_timestamp_millis(received_at_ms.max(0) as u64, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_7_and_carry_the_receive_time() {
        let received = 1_714_564_800_123;
        let id = generated_id(received);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            seconds * 1000 + u64::from(nanos) / 1_000_000,
            received as u64
        );
    }

    #[test]
    fn ids_of_one_millisecond_are_distinct_within_and_across_threads() {
        let draw = || (0..50_000).map(|_| generated_id(7)).collect::<Vec<_>>();
        let other = std::thread::spawn(draw).join().unwrap();
        let mine = draw();
        let all: HashSet<Uuid> = mine.iter().chain(&other).copied().collect();
        assert_eq!(all.len(), 100_000);
    }
}
