//! Test support: real local servers, condition polling with a deadline, and test-friendly tracing.

use std::future::Future;
use std::sync::Once;
use std::time::Duration;

pub use devservers::{schemathesis_binary, ClamdServer, NatsCluster, NatsServer, NatsServerOptions, RedisServer, RedisServerOptions};

mod api;
pub mod chaos;
mod chaos_report;
mod chaos_device;
mod operations;
mod process_system;
pub mod push_standins;
mod role_process;
pub mod role_users;
mod system;
mod system_search;
mod test_nats;
mod ws_client;

pub use api::Api;
pub use chaos_device::{ChaosDevice, ScreenLog};
pub use operations::{declared_families, sample_value, scrape_metrics, OperationsEndpoint, WorkerRole};
pub use process_system::{ProcessSystem, ProcessSystemBuilder};
pub use role_process::{RoleName, RoleProcess};
pub use system::{SystemBuilder, TestSystem};
pub use test_nats::TestNats;
pub use ws_client::{SilentSocket, WsClient};

/// How often `wait_until` re-checks its condition.
const WAIT_UNTIL_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` every 10 ms until it returns true, failing with `what` once `deadline` has passed.
///
/// A condition that hangs is cut off at the deadline too, so a test never waits longer than it says.
pub async fn wait_until<F, Fut>(
    what: &str,
    deadline: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up_at = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(give_up_at, condition()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_elapsed) => break,
        }
        if tokio::time::Instant::now() >= give_up_at {
            break;
        }
        tokio::time::sleep(WAIT_UNTIL_POLL_INTERVAL).await;
    }
    anyhow::bail!("timed out after {deadline:?} waiting until {what}")
}

/// Installs a tracing subscriber once per test binary; `RUST_LOG` picks the levels (default: warnings).
///
/// Output goes through the test writer, so it is shown only for failing tests.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // Another crate's test may have installed a global subscriber already; theirs wins, which is fine.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::wait_until;

    #[tokio::test]
    async fn wait_until_returns_once_the_condition_holds() -> anyhow::Result<()> {
        let checks = Arc::new(AtomicUsize::new(0));
        wait_until("the third check", Duration::from_secs(5), || {
            let checks = checks.clone();
            async move { checks.fetch_add(1, Ordering::SeqCst) + 1 >= 3 }
        })
        .await?;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
        Ok(())
    }

    #[tokio::test]
    async fn wait_until_names_what_it_waited_for() {
        let error = wait_until("pigs fly", Duration::from_millis(50), || async { false })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("pigs fly"), "{error}");
    }

    #[tokio::test]
    async fn wait_until_cuts_off_a_hanging_condition() {
        let error = wait_until(
            "a hanging check",
            Duration::from_millis(50),
            std::future::pending::<bool>,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("a hanging check"), "{error}");
    }
}
