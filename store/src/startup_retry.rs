//! Retries what a role does once at start (creating or opening streams and buckets) while NATS is still forming a cluster or electing leaders.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StoreError;

/// How long a role keeps trying before it gives up and exits with the last error.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// What a cluster that is still forming answers for a while, beside timeouts and missing leaders.
const FORMING_CLUSTER_ANSWERS: [&str; 2] = ["no suitable peers", "jetstream not enabled"];

/// Runs `attempt` until it succeeds, fails for good, or [`STARTUP_PATIENCE`] runs out.
///
/// Roles start beside their NATS nodes (compose, Kubernetes) rather than after them, so what a
/// forming cluster answers — timeouts, no leader yet, "no suitable peers for placement" — is retried.
/// Anything else (a layout that was never provisioned, a configuration NATS refuses) ends the role at
/// once, with its reason.
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
            Err(error) if is_transient(&error) && Instant::now() + pause < give_up_at => {
                tracing::warn!(%error, what, retry_in = ?pause, "a start-up step failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

fn is_transient(error: &StoreError) -> bool {
    let text = error.to_string().to_lowercase();
    matches!(error, StoreError::Unavailable(_)) || FORMING_CLUSTER_ANSWERS.iter().any(|answer| text.contains(answer))
}
