//! Retrying a store step with a doubling pause until a deadline: what a role does once at start, and the records of a message the log already holds.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StoreError;

/// How long a role keeps trying before it gives up and exits with the last error.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// What a cluster that is still forming answers for a while, beside timeouts and missing leaders.
const FORMING_CLUSTER_ANSWERS: [&str; 2] = ["no suitable peers", "jetstream not enabled"];

/// How long to keep trying and how to pace it.
pub(crate) struct Patience {
    pub budget: Duration,
    pub first_pause: Duration,
    pub longest_pause: Duration,
}

/// Runs `attempt` until it succeeds, fails in a way `worth_retrying` rejects, or the budget runs out;
/// `on_retry` hears of each failure that will be retried and the pause before the next attempt.
pub(crate) async fn retry_with_patience<T, F, Fut>(
    patience: Patience,
    worth_retrying: impl Fn(&StoreError) -> bool,
    on_retry: impl Fn(&StoreError, Duration),
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up_at = Instant::now() + patience.budget;
    let mut pause = patience.first_pause;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if worth_retrying(&error) && Instant::now() + pause < give_up_at => {
                on_retry(&error, pause);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(patience.longest_pause);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or [`STARTUP_PATIENCE`] runs out.
///
/// Roles start beside their NATS nodes (compose, Kubernetes) rather than after them, so what a
/// forming cluster answers — timeouts, no leader yet, "no suitable peers for placement" — is retried.
/// Anything else (a layout that was never provisioned, a configuration NATS refuses) ends the role at
/// once, with its reason.
pub async fn retry_at_startup<T, F, Fut>(what: &str, attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let patience = Patience { budget: STARTUP_PATIENCE, first_pause: Duration::from_millis(100), longest_pause: Duration::from_secs(2) };
    let on_retry = |error: &StoreError, pause: Duration| tracing::warn!(%error, what, retry_in = ?pause, "a start-up step failed; retrying");
    retry_with_patience(patience, is_transient, on_retry, attempt).await
}

fn is_transient(error: &StoreError) -> bool {
    let text = error.to_string().to_lowercase();
    matches!(error, StoreError::Unavailable(_)) || FORMING_CLUSTER_ANSWERS.iter().any(|answer| text.contains(answer))
}
