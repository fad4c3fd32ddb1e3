//! The one place where tidegate decides to answer 503, and whether it is ready.
//!
//! A validated request is admitted only if every one of its events can be kept now;
//! otherwise nothing of it is kept and the client is told to retry. Each reason for
//! refusing is an [`UnavailableCause`], so the metrics, the response body and the logs all
//! name the same cause, and each is decided here: the connection limit
//! ([`admit_connection`]), the memory of bodies being received ([`BodyBudget`], charged by
//! the body reader before it allocates), shutdown, a full ring, a failed spill and the
//! re-check after a spill ([`admit`], [`spill`]). [`EdgeState::readiness`] answers `/ready`
//! and the drain's "should I hold off" from the state each stage publishes.
//!
//! Without the Kafka overflow the decision is simple: the whole request fits this shard's
//! ring, or 503. With it, a request the ring cannot take (and any event of a user over the
//! hot-key limit) is spilled to the overflow topic, and only a spill that fails — the
//! producer's queue is full, the broker is unreachable, or acknowledgements miss their
//! deadline — ends in 503. The spilled part always goes first: once the broker has
//! acknowledged it, putting the rest in the ring cannot fail in a way that leaves a
//! refused request half-kept in the ring.

mod body_memory;
mod readiness;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::encoded::user_id_bytes;
use crate::log::{framed_bytes, ShardLog};
use crate::overflow::{HotKeys, OverflowProducer, SpillFailure};
use crate::ring::{Ring, ShardRing};

pub use body_memory::{BodyBudget, BodyCharge};
pub use readiness::{EdgeState, Readiness};

/// Why a request was refused with 503. Every 503 tidegate sends has exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableCause {
    /// The shard's ring cannot hold the whole request (events or bytes), and there is no
    /// overflow to spill to.
    RingFull,
    /// The server is shutting down and accepts nothing new.
    ShuttingDown,
    /// The shard already serves its maximum number of connections.
    ConnectionLimit,
    /// The spill was needed, but the Kafka producer's queue cannot take the request.
    OverflowSaturated,
    /// The spill was needed, but the broker did not acknowledge every event in time.
    OverflowUnavailable,
    /// The shard's budget for request bodies being received
    /// (`limits.max_inflight_body_bytes`) cannot hold this body.
    BodyMemory,
    /// The write-ahead log could not write or sync the request's events (an I/O error, a
    /// full disk): they were not acknowledged and not kept.
    LogUnavailable,
    /// The ring is full and the log holds `durability.max_log_bytes` of events the sink has
    /// not stored, and there is no overflow to spill to.
    LogFull,
}

impl UnavailableCause {
    pub const ALL: [UnavailableCause; 8] = [
        UnavailableCause::RingFull,
        UnavailableCause::ShuttingDown,
        UnavailableCause::ConnectionLimit,
        UnavailableCause::OverflowSaturated,
        UnavailableCause::OverflowUnavailable,
        UnavailableCause::BodyMemory,
        UnavailableCause::LogUnavailable,
        UnavailableCause::LogFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableCause::RingFull => "ring_full",
            UnavailableCause::ShuttingDown => "shutting_down",
            UnavailableCause::ConnectionLimit => "connection_limit",
            UnavailableCause::OverflowSaturated => "overflow_saturated",
            UnavailableCause::OverflowUnavailable => "overflow_unavailable",
            UnavailableCause::BodyMemory => "body_memory",
            UnavailableCause::LogUnavailable => "log_unavailable",
            UnavailableCause::LogFull => "log_full",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            UnavailableCause::RingFull => {
                "this shard's buffer cannot take the whole request; nothing was kept"
            }
            UnavailableCause::ShuttingDown => "the server is shutting down; nothing was kept",
            UnavailableCause::ConnectionLimit => {
                "too many connections to this shard; nothing was kept"
            }
            UnavailableCause::OverflowSaturated => {
                "the buffer is full and the overflow queue cannot take the request; nothing was kept"
            }
            UnavailableCause::OverflowUnavailable => {
                "the buffer is full and the overflow topic did not acknowledge the request in time; \
                 it was not accepted (events with a client-set event_id are safe to retry)"
            }
            UnavailableCause::BodyMemory => {
                "this shard is receiving as many request bodies as its memory budget allows; \
                 nothing was kept"
            }
            UnavailableCause::LogUnavailable => {
                "the write-ahead log could not store the request on disk; nothing was kept"
            }
            UnavailableCause::LogFull => {
                "this shard's buffer and its write-ahead log hold as much as they may while the \
                 sink catches up; nothing was kept"
            }
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<SpillFailure> for UnavailableCause {
    fn from(why: SpillFailure) -> Self {
        match why {
            SpillFailure::QueueFull => UnavailableCause::OverflowSaturated,
            SpillFailure::Deadline | SpillFailure::Broker => UnavailableCause::OverflowUnavailable,
        }
    }
}

/// What the synchronous part of admission decided.
#[derive(Debug)]
pub enum Admission {
    /// Every event is in the ring.
    InRing,
    /// Room in the ring is held for every event; finish with [`commit`], which waits for
    /// the write-ahead log.
    Reserved,
    /// The ring is full (or earlier requests wait on disk): the events are to be kept in
    /// the write-ahead log only, read back by the writer later; finish with [`commit`].
    DiskOnly,
    /// The request needs the overflow; finish it with [`spill`].
    Spill(SpillPlan),
}

/// The events of a request that must go through the overflow topic.
#[derive(Debug)]
pub struct SpillPlan {
    /// Events of users over the hot-key limit: always spilled.
    hot: Vec<Bytes>,
    /// The other events: for the ring if `rest_to_ring`, else spilled with `hot`.
    rest: Vec<Bytes>,
    rest_to_ring: bool,
}

impl SpillPlan {
    pub fn events(&self) -> usize {
        self.hot.len() + self.rest.len()
    }
}

/// The overflow, as a shard's admission sees it.
pub struct OverflowAvailable<'a> {
    pub hot_keys: Option<&'a mut HotKeys>,
}

/// Where a spill goes: the Kafka overflow, or a fake in tests.
#[allow(async_fn_in_trait)] // shard-local: futures never cross threads
pub trait OverflowTopic {
    /// Sends every event and waits for every acknowledgement; `Ok` with the time taken, or
    /// why not.
    async fn send(&self, shard: usize, events: &[Bytes]) -> Result<Duration, SpillFailure>;
    /// Counts `events` acknowledged for a request that is being refused.
    fn orphaned(&self, events: usize);
}

impl OverflowTopic for OverflowProducer {
    async fn send(&self, shard: usize, events: &[Bytes]) -> Result<Duration, SpillFailure> {
        OverflowProducer::send(self, shard, events).await
    }

    fn orphaned(&self, events: usize) {
        self.orphan(Vec::new(), events);
    }
}

/// Whether a shard already serving `open` connections may serve a new one; over the limit,
/// the new connection gets one 503 and is closed.
pub fn admit_connection(open: usize, max: usize) -> Result<(), UnavailableCause> {
    if open >= max {
        Err(UnavailableCause::ConnectionLimit)
    } else {
        Ok(())
    }
}

/// Admits a request's events, all of them or none, without waiting for anything: into the
/// ring, or — when `overflow` is configured — into a plan for [`spill`].
///
/// With the write-ahead `log`, the events are not pushed but their room is reserved: they
/// enter the ring only once the log has synced them ([`commit`]). When the ring is full, or
/// earlier requests already wait on disk, they are kept in the log only, as long as it has
/// room (`durability.max_log_bytes`): the log is the buffer, the ring its cache.
pub fn admit(
    ring: &mut Ring,
    chunk: &Bytes,
    ends: &[usize],
    shutting_down: bool,
    log: Option<&ShardLog>,
    overflow: Option<OverflowAvailable<'_>>,
) -> Result<Admission, UnavailableCause> {
    if shutting_down {
        return Err(UnavailableCause::ShuttingDown);
    }
    let take = |ring: &mut Ring| match log {
        None => ring
            .push_all(chunk, ends)
            .map(|()| Admission::InRing)
            .map_err(|_| {
                ring.set_shedding(true);
                UnavailableCause::RingFull
            }),
        Some(log) => {
            if !log.has_backlog() && ring.reserve(ends.len(), chunk.len()).is_ok() {
                Ok(Admission::Reserved)
            } else if log.has_room(framed_bytes(chunk.len(), ends.len())) {
                Ok(Admission::DiskOnly)
            } else {
                log.set_shedding(true);
                Err(UnavailableCause::LogFull)
            }
        }
    };
    let Some(overflow) = overflow else {
        return take(ring);
    };
    if let Some(hot_keys) = overflow.hot_keys {
        if let Some(plan) = split_hot(hot_keys, ring, chunk, ends) {
            return Ok(Admission::Spill(plan));
        }
    }
    match take(ring) {
        Ok(admission) => Ok(admission),
        Err(_) => Ok(Admission::Spill(SpillPlan {
            hot: Vec::new(),
            rest: slices(chunk, ends).collect(),
            rest_to_ring: false,
        })),
    }
}

/// Once a request has not fit in the ring (memory mode) or the log (durable mode), requests
/// are refused from their head until one part in this many of it is free (of the ring, in
/// events and in bytes).
const SHED_UNTIL_ONE_FREE_IN: usize = 8;

/// The 503 a request will get whatever its body holds, when that is already certain from
/// the shard's state: it is shutting down, or nothing can take even the smallest event (no
/// Kafka overflow, no room in the ring, and in durable mode none in the log). The handler
/// asks before reading the body, so under overload a refusal costs a request head, not a
/// read and a parse; [`admit`] still decides every request that gets past this.
///
/// A ring that has refused a request (memory mode), or a log that has (durable mode),
/// sheds load until it has drained to an eighth free: with a few KiB left it would
/// otherwise have every request read and parsed only to be refused, which cost as much as
/// admitting it, and kept an overloaded shard busy refusing (memory mode: 503 p99 30 ms at
/// 256 connections of 100-event requests; durable mode: 15k 503s a second, p99 25 ms). The
/// requests refused in that window might have fitted; each still gets 503 with Retry-After
/// and nothing of it is kept.
pub fn certain_refusal(
    ring: &mut Ring,
    shutting_down: bool,
    log: Option<&ShardLog>,
    overflow_configured: bool,
) -> Option<UnavailableCause> {
    if shutting_down {
        return Some(UnavailableCause::ShuttingDown);
    }
    if overflow_configured {
        return None;
    }
    // No event encodes smaller than its fixed header.
    let smallest = crate::encoded::HEADER_LEN;
    let ring_refuses = ring.fits(1, smallest).is_err();
    match log {
        None if ring_refuses => Some(UnavailableCause::RingFull),
        None if ring.is_shedding() => {
            let capacity = ring.capacity();
            let (events, bytes) = (
                capacity.events / SHED_UNTIL_ONE_FREE_IN,
                capacity.bytes / SHED_UNTIL_ONE_FREE_IN,
            );
            if ring.fits(events, bytes).is_ok() {
                ring.set_shedding(false);
                None
            } else {
                Some(UnavailableCause::RingFull)
            }
        }
        None => None,
        // Durable mode: the ring's room counts only while nothing waits on disk.
        Some(log) if !log.has_backlog() && !ring_refuses => None,
        Some(log) if !log.has_room(framed_bytes(smallest, 1)) => Some(UnavailableCause::LogFull),
        Some(log) if log.is_shedding() => {
            if log.has_free_part(SHED_UNTIL_ONE_FREE_IN as u64) {
                log.set_shedding(false);
                None
            } else {
                Some(UnavailableCause::LogFull)
            }
        }
        Some(_) => None,
    }
}

fn slices<'a>(chunk: &'a Bytes, ends: &'a [usize]) -> impl Iterator<Item = Bytes> + 'a {
    let mut start = 0;
    ends.iter().map(move |&end| {
        let event = chunk.slice(start..end);
        start = end;
        event
    })
}

/// Takes a hot-key token for every event; `None` if no event is over its user's limit.
fn split_hot(
    hot_keys: &mut HotKeys,
    ring: &Ring,
    chunk: &Bytes,
    ends: &[usize],
) -> Option<SpillPlan> {
    let now = Instant::now();
    let mut over_limit = Vec::new();
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        let user = user_id_bytes(&chunk[start..end]).unwrap_or_default();
        if !hot_keys.admit(user, now) {
            over_limit.push(i);
        }
        start = end;
    }
    if over_limit.is_empty() {
        return None;
    }
    let (mut hot, mut rest) = (Vec::new(), Vec::new());
    let mut next_hot = over_limit.iter().peekable();
    for (i, event) in slices(chunk, ends).enumerate() {
        if next_hot.peek() == Some(&&i) {
            next_hot.next();
            hot.push(event);
        } else {
            rest.push(event);
        }
    }
    let rest_bytes = rest.iter().map(Bytes::len).sum();
    // If the ring cannot take the rest now, one spill of everything beats two.
    let rest_to_ring = ring.fits(rest.len(), rest_bytes).is_ok();
    Some(SpillPlan {
        hot,
        rest,
        rest_to_ring,
    })
}

/// What a completed spill kept, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    /// Events acknowledged by the broker.
    pub events: usize,
    /// Of those, events sent there by the hot-key limit.
    pub hot_key_events: usize,
    /// From the first produce to the last acknowledgement.
    pub elapsed: Duration,
}

/// Finishes a request that needs the overflow: spills, then offers the rest to the ring
/// (spilling it as well if the ring has filled meanwhile). The ring is re-checked after the
/// await: shutdown may have begun, or other requests filled it.
pub async fn spill(
    plan: SpillPlan,
    shard: usize,
    overflow: &impl OverflowTopic,
    ring: &ShardRing,
    log: Option<&ShardLog>,
) -> Result<Spilled, UnavailableCause> {
    let SpillPlan {
        mut hot,
        rest,
        rest_to_ring,
    } = plan;
    let hot_key_events = hot.len();
    if !rest_to_ring {
        hot.extend(rest);
        let elapsed = overflow.send(shard, &hot).await?;
        return Ok(Spilled {
            events: hot.len(),
            hot_key_events,
            elapsed,
        });
    }
    let mut elapsed = overflow.send(shard, &hot).await?;
    let mut events = hot.len();
    match push_rest(ring, &rest, log).await {
        Ok(()) => {}
        Err(UnavailableCause::RingFull) => match overflow.send(shard, &rest).await {
            Ok(more) => {
                elapsed += more;
                events += rest.len();
            }
            Err(why) => {
                overflow.orphaned(hot.len());
                return Err(why.into());
            }
        },
        Err(cause) => {
            overflow.orphaned(hot.len());
            return Err(cause);
        }
    }
    Ok(Spilled {
        events,
        hot_key_events,
        elapsed,
    })
}

/// The part of a spilled request the ring was to take, after the spill's await (through
/// the write-ahead log first, when it is on).
async fn push_rest(
    ring: &ShardRing,
    rest: &[Bytes],
    log: Option<&ShardLog>,
) -> Result<(), UnavailableCause> {
    use crate::writer::BatchSource as _;
    if ring.is_closing() {
        return Err(UnavailableCause::ShuttingDown);
    }
    let bytes = rest.iter().map(Bytes::len).sum();
    ring.borrow_mut()
        .reserve(rest.len(), bytes)
        .map_err(|_| UnavailableCause::RingFull)?;
    let generation = match log {
        None => None,
        Some(log) => match log.commit(rest.iter().map(|e| &e[..]), false).await {
            Ok(committed) => Some(committed),
            Err(_) => {
                ring.borrow_mut().unreserve(rest.len(), bytes);
                return Err(UnavailableCause::LogUnavailable);
            }
        },
    };
    let was_empty = ring.is_empty();
    let mut r = ring.borrow_mut();
    r.unreserve(rest.len(), bytes);
    r.push_events(rest)
        .expect("reserved room is kept for the request");
    drop(r);
    if let (Some(log), Some(committed)) = (log, generation) {
        log.pushed(rest.len(), committed.generation, committed.bytes);
    }
    ring.notify_pushed(was_empty);
    Ok(())
}

/// Finishes a durable admission ([`Admission::Reserved`] or [`Admission::DiskOnly`]):
/// waits for the write-ahead log to sync the request, then moves it from its reservation
/// into the ring, or (disk only) wakes the writer to read it back. A request whose sync
/// failed gets 503 `log_unavailable` and leaves nothing behind.
pub async fn commit(
    log: &ShardLog,
    ring: &ShardRing,
    chunk: &Bytes,
    ends: &[usize],
    admission: &Admission,
) -> Result<(), UnavailableCause> {
    use crate::writer::BatchSource as _;
    let disk_only = matches!(admission, Admission::DiskOnly);
    let mut start = 0;
    let events = ends.iter().map(|&end| {
        let event = &chunk[start..end];
        start = end;
        event
    });
    let committed = log.commit(events, disk_only).await;
    if !disk_only {
        ring.borrow_mut().unreserve(ends.len(), chunk.len());
    }
    let committed = committed.map_err(|_| UnavailableCause::LogUnavailable)?;
    if disk_only {
        ring.notify_pushed(true);
        return Ok(());
    }
    if ring.is_closing() {
        // On disk but too late for this run's writer: the next start replays it.
        log.abandoned(committed.generation);
        return Ok(());
    }
    let mut r = ring.borrow_mut();
    let was_empty = r.is_empty();
    r.push_all(chunk, ends)
        .expect("reserved room is kept for the request");
    drop(r);
    log.pushed(ends.len(), committed.generation, committed.bytes);
    ring.notify_pushed(was_empty);
    Ok(())
}
