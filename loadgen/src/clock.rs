//! The shared clock every load-generator process measures against: wall-clock unix nanoseconds, and the fixed timetable of sends.
//!
//! `Instant` (CLOCK_MONOTONIC) cannot be compared across processes, so the coordinator picks an
//! epoch in unix nanoseconds and every process derives the same due times from it. All processes
//! run on one machine, so they read the same kernel clock; an NTP step during a run would show up
//! as a latency jump, which is why runs are short.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the unix epoch, from CLOCK_REALTIME.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_nanos() as u64
}

/// When send `index` is due: `epoch + index / rate`. Latency is measured from here, not from when the
/// send actually left, so a stalled sender cannot hide the delay it caused (no coordinated omission).
pub fn due_unix_nanos(epoch_unix_nanos: u64, rate_per_second: f64, index: u64) -> u64 {
    epoch_unix_nanos + (index as f64 * 1e9 / rate_per_second) as u64
}

/// A tokio instant for a unix time, so timers can sleep until a due time that other processes share.
pub fn tokio_instant_at(unix_nanos: u64) -> tokio::time::Instant {
    let now_unix = unix_nanos_now();
    let now = tokio::time::Instant::now();
    if unix_nanos >= now_unix { now + Duration::from_nanos(unix_nanos - now_unix) } else { now.checked_sub(Duration::from_nanos(now_unix - unix_nanos)).unwrap_or(now) }
}

/// Sleeps until the given unix time (returns at once if it has passed).
pub async fn sleep_until_unix(unix_nanos: u64) {
    tokio::time::sleep_until(tokio_instant_at(unix_nanos)).await;
}
