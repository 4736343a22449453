//! Retries what a role does once at start (creating or opening streams and buckets) while NATS is still forming a cluster or electing leaders.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StoreError;

/// How long a role keeps trying before it gives up and exits with the last error.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds or [`STARTUP_PATIENCE`] runs out.
///
/// Every failure is retried, not only timeouts: a cluster that is still forming answers "no suitable
/// peers for placement" or "JetStream not enabled" for a while, and roles start beside their NATS
/// nodes (compose, Kubernetes) rather than after them. A real misconfiguration is logged at every
/// attempt and still ends the role, a minute later.
pub async fn retry_at_startup<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up_at = Instant::now() + STARTUP_PATIENCE;
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() + pause < give_up_at => {
                tracing::warn!(%error, what, retry_in = ?pause, "a start-up step failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}
