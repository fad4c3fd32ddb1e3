//! The one place where tidegate decides to answer 503.
//!
//! A validated request is admitted only if its shard can take every one of its events now;
//! otherwise nothing of it is kept and the client is told to retry. Each reason for
//! refusing is an [`UnavailableCause`], so the metrics, the response body and the logs all
//! name the same cause. The Kafka overflow stage slots in here: between "the ring is full"
//! and "503" it will try the spill before giving up.

use bytes::Bytes;

use crate::ring::Ring;

/// Why a request was refused with 503. Every 503 tidegate sends has exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableCause {
    /// The shard's ring cannot hold the whole request (events or bytes).
    RingFull,
    /// The server is shutting down and accepts nothing new.
    ShuttingDown,
    /// The shard already serves its maximum number of connections.
    ConnectionLimit,
}

impl UnavailableCause {
    pub const ALL: [UnavailableCause; 3] = [
        UnavailableCause::RingFull,
        UnavailableCause::ShuttingDown,
        UnavailableCause::ConnectionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableCause::RingFull => "ring_full",
            UnavailableCause::ShuttingDown => "shutting_down",
            UnavailableCause::ConnectionLimit => "connection_limit",
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
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Admits a request's events into the shard's ring, all of them or none.
pub fn admit(
    ring: &mut Ring,
    chunk: &Bytes,
    ends: &[usize],
    shutting_down: bool,
) -> Result<(), UnavailableCause> {
    if shutting_down {
        return Err(UnavailableCause::ShuttingDown);
    }
    ring.push_all(chunk, ends)
        .map_err(|_| UnavailableCause::RingFull)
}
