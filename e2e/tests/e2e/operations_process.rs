//! A single-role binary as a real process: `NATTER_METRICS_LISTEN` on port 0 serves its own metric families only, and `NATTER_LOG_FORMAT=json` makes every log line a JSON object.

use std::process::Stdio;
use std::time::Duration;

use testkit::{declared_families, scrape_metrics, wait_until, TestSystem};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_indexer_process_logs_json_and_serves_only_its_own_metrics_on_a_port_zero_listener() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_role_process")).arg("indexer")
        .env("NATTER_NATS_URL", system.nats.client_urls())
        .env("NATTER_SEARCH_INDEX_DIR", system.index_dir(0))
        .env("NATTER_METRICS_LISTEN", "127.0.0.1:0")
        .env("NATTER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stderr_lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    // The port is the kernel's choice: the process says which in its log, and every line must be JSON.
    let address = tokio::time::timeout(WAIT, async {
        while let Some(line) = stderr_lines.next_line().await? {
            let entry: serde_json::Value = serde_json::from_str(&line).map_err(|error| anyhow::anyhow!("not a JSON log line ({error}): {line}"))?;
            if entry["fields"]["message"].as_str().is_some_and(|message| message.starts_with("operations endpoint listening")) {
                return entry["fields"]["address"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no address field: {line}"));
            }
        }
        anyhow::bail!("the indexer exited before serving its operations endpoint")
    })
    .await??;
    // Keep reading so the process never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = stderr_lines.next_line().await {} });

    let base_url = format!("http://{address}");
    wait_until("the indexer is ready", WAIT, || {
        let url = format!("{base_url}/readyz");
        async move { reqwest::get(url).await.is_ok_and(|response| response.status() == reqwest::StatusCode::OK) }
    })
    .await?;
    // The indexer registers its families once its index is open, a moment after the endpoint answers.
    wait_until("the indexer exports its lag", WAIT, || {
        let base_url = base_url.clone();
        async move { scrape_metrics(&base_url).await.is_ok_and(|scrape| declared_families(&scrape).contains("natter_index_lag_messages")) }
    })
    .await?;
    let families = declared_families(&scrape_metrics(&base_url).await?);
    assert!(!families.contains("natter_connections"), "an indexer process exports no gateway metrics: {families:?}");
    child.start_kill()?;
    child.wait().await?;
    drain.abort();
    Ok(())
}
