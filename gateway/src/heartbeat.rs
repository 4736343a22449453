//! When a socket last heard from its peer, shared by its reader (which records) and its writer (which pings and times out).
//!
//! An atomic rather than a lock: the reader records after every frame and the writer reads it
//! between writes, and neither may ever wait on the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A socket silent for this many heartbeat intervals is closed.
pub const SILENT_INTERVALS_BEFORE_TIMEOUT: u32 = 2;

pub struct ActivityClock {
    origin: Instant,
    /// Milliseconds after `origin` of the last frame received.
    last_activity_millis: AtomicU64,
}

impl ActivityClock {
    /// A clock that counts the connection's start as activity.
    pub fn start() -> ActivityClock {
        ActivityClock { origin: Instant::now(), last_activity_millis: AtomicU64::new(0) }
    }

    /// Any frame from the peer (data, ping, pong, close) proves it is still there.
    pub fn record_activity(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_millis.fetch_max(millis, Ordering::Relaxed);
    }

    /// The moment the last frame arrived (to the millisecond).
    pub fn last_activity(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_activity_millis.load(Ordering::Relaxed))
    }
}

