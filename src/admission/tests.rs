//! Every 503 cause and every readiness answer, decided on fakes.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::overflow::OverflowStats;
use crate::ring::{RingCapacity, RingLoad};
use crate::shutdown::Shutdown;
use crate::writer::{BatchPolicy, BatchSource, WriterStats};

fn policy() -> BatchPolicy {
    BatchPolicy {
        max_events: 100,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(10),
    }
}

fn shard_ring(events: usize) -> ShardRing {
    let capacity = RingCapacity {
        events,
        bytes: 1 << 20,
    };
    ShardRing::new(Arc::new(RingLoad::new(capacity, 80)), policy())
}

/// Two events of one request, back to back.
fn request() -> (Bytes, Vec<usize>) {
    (Bytes::from_static(b"aaabbb"), vec![3, 6])
}

/// A spill target that answers as told and counts what it was sent.
struct FakeOverflow {
    answer: Result<(), SpillFailure>,
    sent: Cell<usize>,
    orphaned: Cell<usize>,
}

impl FakeOverflow {
    fn answering(answer: Result<(), SpillFailure>) -> Self {
        FakeOverflow {
            answer,
            sent: Cell::new(0),
            orphaned: Cell::new(0),
        }
    }
}

impl OverflowTopic for FakeOverflow {
    async fn send(&self, _shard: usize, events: &[Bytes]) -> Result<Duration, SpillFailure> {
        self.answer?;
        self.sent.set(self.sent.get() + events.len());
        Ok(Duration::from_millis(1))
    }

    fn orphaned(&self, events: usize) {
        self.orphaned.set(self.orphaned.get() + events);
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

#[test]
fn a_request_that_fits_goes_into_the_ring() {
    let ring = shard_ring(10);
    let (chunk, ends) = request();
    let admitted = admit(&mut ring.borrow_mut(), &chunk, &ends, false, None, None).unwrap();
    assert!(matches!(admitted, Admission::InRing));
    assert_eq!(ring.borrow_mut().len(), 2);
}

#[test]
fn ring_full_without_overflow_is_503_ring_full_and_keeps_nothing() {
    let ring = shard_ring(1);
    let (chunk, ends) = request();
    let refused = admit(&mut ring.borrow_mut(), &chunk, &ends, false, None, None).unwrap_err();
    assert_eq!(refused, UnavailableCause::RingFull);
    assert!(ring.is_empty());
}

#[test]
fn shutdown_refuses_before_looking_at_the_ring() {
    let ring = shard_ring(10);
    let (chunk, ends) = request();
    let refused = admit(&mut ring.borrow_mut(), &chunk, &ends, true, None, None).unwrap_err();
    assert_eq!(refused, UnavailableCause::ShuttingDown);
    assert!(ring.is_empty());
}

#[test]
fn with_the_log_the_ring_is_a_cache_and_the_log_the_bound() {
    use crate::log::ShardLog;
    let (chunk, ends) = request();
    let log = ShardLog::detached(1000);
    let admit_to = |ring: &ShardRing, overflow: Option<OverflowAvailable<'_>>| {
        admit(
            &mut ring.borrow_mut(),
            &chunk,
            &ends,
            false,
            Some(&log),
            overflow,
        )
    };
    // Room in the ring: reserved there, to be pushed after the sync.
    let ring = shard_ring(10);
    assert!(matches!(admit_to(&ring, None), Ok(Admission::Reserved)));
    assert!(ring.is_empty(), "nothing is pushed before the sync");
    // A full ring: kept on disk only.
    let full = shard_ring(1);
    assert!(matches!(admit_to(&full, None), Ok(Admission::DiskOnly)));
    // While earlier requests wait on disk, a new one goes there too, ring room or not.
    log.hold(0, 1);
    assert!(matches!(admit_to(&ring, None), Ok(Admission::DiskOnly)));
    // A full log: 503 log_full without an overflow, a spill with one.
    log.hold(990, 1);
    assert_eq!(
        admit_to(&full, None).unwrap_err(),
        UnavailableCause::LogFull
    );
    let gate = OverflowAvailable { hot_keys: None };
    assert!(matches!(
        admit_to(&full, Some(gate)),
        Ok(Admission::Spill(_))
    ));
}

/// In memory mode, a ring that refused a request refuses every request from its head until
/// an eighth of it is free again, though a small request would fit sooner.
#[test]
fn a_ring_that_refused_sheds_load_until_an_eighth_is_free() {
    let (chunk, ends) = request();
    let ring = shard_ring(16);
    let certain = || certain_refusal(&mut ring.borrow_mut(), false, None, false);
    for _ in 0..7 {
        admit(&mut ring.borrow_mut(), &chunk, &ends, false, None, None).unwrap();
    }
    // 14 of 16: room for the smallest event, not refused before the body.
    assert_eq!(certain(), None);
    admit(&mut ring.borrow_mut(), &chunk, &ends, false, None, None).unwrap();
    // Full: this request does not fit, and the ring starts shedding.
    assert_eq!(
        admit(&mut ring.borrow_mut(), &chunk, &ends, false, None, None).unwrap_err(),
        UnavailableCause::RingFull
    );
    assert_eq!(certain(), Some(UnavailableCause::RingFull));
    // One event stored: room for one, but under an eighth free.
    ring.consume(1);
    assert_eq!(certain(), Some(UnavailableCause::RingFull));
    // Two free of sixteen: requests are read again.
    ring.consume(1);
    assert_eq!(certain(), None);
    ring.consume(1);
    assert_eq!(certain(), None);
}

/// In durable mode, a log that refused a request refuses every request from its head until
/// an eighth of `durability.max_log_bytes` is free again, though a small request would fit
/// sooner.
#[test]
fn a_log_that_refused_sheds_load_until_an_eighth_is_free() {
    use crate::log::ShardLog;
    // Two events well above the smallest an event can encode to.
    let (chunk, ends) = (Bytes::from(vec![b'a'; 400]), vec![200, 400]);
    let ring = shard_ring(16);
    let log = ShardLog::detached(8000);
    let certain = || certain_refusal(&mut ring.borrow_mut(), false, Some(&log), false);
    let admit_one = || {
        admit(
            &mut ring.borrow_mut(),
            &chunk,
            &ends,
            false,
            Some(&log),
            None,
        )
    };
    let request_bytes = framed_bytes(chunk.len(), ends.len());
    // Requests wait on disk, and the log has room for the smallest event but not this
    // request: not refused before the body, refused after it, and the log starts shedding.
    log.hold(8000 - request_bytes + 1, 1);
    assert_eq!(certain(), None);
    assert_eq!(admit_one().unwrap_err(), UnavailableCause::LogFull);
    assert_eq!(certain(), Some(UnavailableCause::LogFull));
    // Room for this request again, but under an eighth free.
    log.pretend_stored(request_bytes);
    assert_eq!(certain(), Some(UnavailableCause::LogFull));
    // One byte short of an eighth free, then an eighth: requests are read again, and
    // shedding ends.
    log.pretend_stored(1000 - 2 * request_bytes);
    assert_eq!(certain(), Some(UnavailableCause::LogFull));
    log.pretend_stored(1);
    assert_eq!(certain(), None);
    log.hold(500, 1);
    assert_eq!(certain(), None, "shedding ended once an eighth was free");
    assert!(matches!(admit_one(), Ok(Admission::DiskOnly)));
}

/// A refusal is certain before the body only when no body could be taken: the smallest
/// event does not fit anywhere, or the shard is shutting down; never with an overflow.
#[test]
fn a_refusal_is_certain_before_the_body_only_when_nothing_could_fit() {
    use crate::log::ShardLog;
    let (chunk, ends) = request();
    let certain = |ring: &ShardRing, log: Option<&ShardLog>, overflow: bool| {
        certain_refusal(&mut ring.borrow_mut(), false, log, overflow)
    };
    // Memory mode: a ring with room for one event is not full, whatever the request.
    let ring = shard_ring(1);
    assert_eq!(certain(&ring, None, false), None);
    admit(
        &mut ring.borrow_mut(),
        &chunk,
        &ends[..1],
        false,
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        certain(&ring, None, false),
        Some(UnavailableCause::RingFull)
    );
    assert_eq!(certain(&ring, None, true), None, "the overflow may take it");
    assert_eq!(
        certain_refusal(&mut shard_ring(10).borrow_mut(), true, None, false),
        Some(UnavailableCause::ShuttingDown)
    );
    // Durable mode: a full ring is not enough; the log must be full too.
    let log = ShardLog::detached(1000);
    assert_eq!(certain(&ring, Some(&log), false), None);
    log.hold(990, 1);
    assert_eq!(
        certain(&ring, Some(&log), false),
        Some(UnavailableCause::LogFull)
    );
    // ...and while a backlog waits on disk, ring room does not help.
    assert_eq!(
        certain(&shard_ring(10), Some(&log), false),
        Some(UnavailableCause::LogFull)
    );
    assert_eq!(certain(&ring, Some(&log), true), None);
}

#[test]
fn the_connection_limit_refuses_the_connection_past_it() {
    assert_eq!(admit_connection(0, 2), Ok(()));
    assert_eq!(admit_connection(1, 2), Ok(()));
    assert_eq!(
        admit_connection(2, 2),
        Err(UnavailableCause::ConnectionLimit)
    );
}

#[test]
fn bodies_past_the_shards_budget_are_503_body_memory() {
    let budget = BodyBudget::new(1000);
    let mut first = BodyCharge::new(budget.clone());
    first.raise_to(600).unwrap();
    let mut second = BodyCharge::new(budget.clone());
    assert_eq!(second.raise_to(600), Err(UnavailableCause::BodyMemory));
    second.raise_to(400).unwrap();
    assert_eq!(budget.in_use(), 1000);
    drop(first);
    second.raise_to(900).unwrap();
    drop(second);
    assert_eq!(budget.in_use(), 0, "every charge is given back");
}

fn full_ring_plan(ring: &ShardRing) -> SpillPlan {
    let (chunk, ends) = request();
    let gate = OverflowAvailable { hot_keys: None };
    match admit(
        &mut ring.borrow_mut(),
        &chunk,
        &ends,
        false,
        None,
        Some(gate),
    )
    .unwrap()
    {
        Admission::Spill(plan) => plan,
        Admission::InRing | Admission::Reserved | Admission::DiskOnly => {
            panic!("a full ring with an overflow plans a spill")
        }
    }
}

#[test]
fn a_full_ring_with_overflow_spills_the_whole_request() {
    let ring = shard_ring(1);
    let plan = full_ring_plan(&ring);
    assert_eq!(plan.events(), 2);
    let overflow = FakeOverflow::answering(Ok(()));
    let spilled = block_on(spill(plan, 0, &overflow, &ring, None)).unwrap();
    assert_eq!((spilled.events, overflow.sent.get()), (2, 2));
    assert!(ring.is_empty());
}

#[test]
fn a_refused_spill_is_503_overflow_saturated_or_unavailable() {
    for (failure, cause) in [
        (SpillFailure::QueueFull, UnavailableCause::OverflowSaturated),
        (
            SpillFailure::Deadline,
            UnavailableCause::OverflowUnavailable,
        ),
        (SpillFailure::Broker, UnavailableCause::OverflowUnavailable),
    ] {
        let ring = shard_ring(1);
        let plan = full_ring_plan(&ring);
        let overflow = FakeOverflow::answering(Err(failure));
        let refused = block_on(spill(plan, 0, &overflow, &ring, None)).unwrap_err();
        assert_eq!(refused, cause, "{failure:?}");
        assert!(ring.is_empty(), "nothing of a refused request is kept");
    }
}

/// A plan whose hot events spill and whose rest goes to the ring.
fn hot_key_plan(ring: &ShardRing) -> SpillPlan {
    let mut chunk = Vec::new();
    let mut ends = Vec::new();
    for (user, n) in [("hot", 1u128), ("hot", 2), ("cold", 3)] {
        crate::encoded::encode_into(
            &mut chunk,
            &crate::encoded::EventFields {
                user_id: user,
                event_type: "t",
                event_time_ms: 1,
                event_id: uuid::Uuid::from_u128(n),
                received_at_ms: 2,
                source: "",
            },
            |_: &mut Vec<u8>| {},
        );
        ends.push(chunk.len());
    }
    let chunk = Bytes::from(chunk);
    let mut hot_keys = HotKeys::new(1, 1);
    let gate = OverflowAvailable {
        hot_keys: Some(&mut hot_keys),
    };
    match admit(
        &mut ring.borrow_mut(),
        &chunk,
        &ends,
        false,
        None,
        Some(gate),
    )
    .unwrap()
    {
        Admission::Spill(plan) => plan,
        Admission::InRing | Admission::Reserved | Admission::DiskOnly => {
            panic!("the second event of `hot` is over its limit")
        }
    }
}

#[test]
fn after_a_spill_shutdown_is_rechecked_and_the_spilled_part_orphaned() {
    let ring = shard_ring(10);
    let plan = hot_key_plan(&ring);
    ring.close();
    let overflow = FakeOverflow::answering(Ok(()));
    let refused = block_on(spill(plan, 0, &overflow, &ring, None)).unwrap_err();
    assert_eq!(refused, UnavailableCause::ShuttingDown);
    assert_eq!(overflow.orphaned.get(), 1, "the hot event the broker took");
    assert!(ring.is_empty());
}

#[test]
fn after_a_spill_a_ring_filled_meanwhile_spills_the_rest_too() {
    let ring = shard_ring(3);
    let plan = hot_key_plan(&ring);
    // Other requests fill the ring while the hot events are being acknowledged.
    ring.borrow_mut()
        .push_all(&Bytes::from_static(b"xyz"), &[1, 2, 3])
        .unwrap();
    let overflow = FakeOverflow::answering(Ok(()));
    let spilled = block_on(spill(plan, 0, &overflow, &ring, None)).unwrap();
    assert_eq!((spilled.events, spilled.hot_key_events), (3, 1));
    assert_eq!(overflow.sent.get(), 3);
}

fn edge(shards: usize, overflow: bool) -> (EdgeState, Vec<ShardRing>, Vec<Arc<WriterStats>>) {
    let rings: Vec<ShardRing> = (0..shards).map(|_| shard_ring(10)).collect();
    let writers: Vec<Arc<WriterStats>> = (0..shards).map(|_| Arc::default()).collect();
    let state = EdgeState {
        shutdown: Arc::new(Shutdown::default()),
        shards: rings
            .iter()
            .map(|r| r.load())
            .zip(writers.clone())
            .collect(),
        overflow: overflow.then(|| Arc::new(OverflowStats::default())),
        logs: Vec::new(),
    };
    (state, rings, writers)
}

#[test]
fn ready_until_a_ring_passes_its_mark_or_a_sink_fails() {
    let (state, rings, writers) = edge(2, false);
    assert!(state.readiness().is_ready());
    assert_eq!(state.drain_pressure(), None);
    rings[1]
        .borrow_mut()
        .push_all(&Bytes::from_static(b"12345678"), &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    let readiness = state.readiness();
    assert_eq!(
        readiness.reasons,
        ["shard 1: ring above its high-water mark"]
    );
    writers[0].health.set_failing(true);
    assert_eq!(state.readiness().reasons.len(), 2);
    assert_eq!(
        state.drain_pressure().as_deref(),
        Some("shard 0: sink writes failing")
    );
    state.shutdown.request();
    assert_eq!(state.readiness().reasons[0], "shutting down");
}

#[test]
fn with_the_overflow_pressure_only_degrades() {
    let (state, _rings, writers) = edge(1, true);
    writers[0].health.set_failing(true);
    let readiness = state.readiness();
    assert!(readiness.is_ready());
    assert_eq!(readiness.degraded, ["shard 0: sink writes failing"]);
    let overflow = state.overflow.as_ref().unwrap();
    overflow.failed(SpillFailure::QueueFull);
    assert!(!state.readiness().is_ready(), "a refused spill is unready");
}

#[test]
fn with_the_log_a_full_ring_degrades_and_a_full_log_is_unready() {
    use crate::log::LogStats;
    let (mut state, rings, writers) = edge(1, false);
    state.logs = vec![Arc::new(LogStats::filled(1000, 100))];
    rings[0]
        .borrow_mut()
        .push_all(&Bytes::from_static(b"12345678"), &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    writers[0].health.set_failing(true);
    let readiness = state.readiness();
    assert!(readiness.is_ready(), "the log absorbs it: {readiness:?}");
    assert_eq!(readiness.degraded.len(), 2);
    state.logs = vec![Arc::new(LogStats::filled(1000, 800))];
    let readiness = state.readiness();
    assert_eq!(
        readiness.reasons,
        ["shard 0: write-ahead log above its high-water mark"]
    );
}
