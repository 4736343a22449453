//! Workers' operations endpoints (`/metrics`, `/healthz`, `/readyz`) on port 0 for tests, and reading samples out of a scrape.

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestSystem;

/// Which worker's readiness checks the endpoint runs.
#[derive(Debug, Clone, Copy)]
pub enum WorkerRole {
    Fanout,
    Media,
    Push,
    Indexer,
}

/// A running operations endpoint; stopped when dropped.
pub struct OperationsEndpoint {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for OperationsEndpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl TestSystem {
    /// What `natter-<role>` serves on `NATTER_METRICS_LISTEN`, against this system's NATS, on a free port.
    pub async fn serve_worker_operations(&self, role: WorkerRole) -> anyhow::Result<OperationsEndpoint> {
        let nats = self.connect_nats().await?;
        let readiness = match role {
            // The system's fanouts read presence from the gateways' Redis.
            WorkerRole::Fanout => fanout::readiness(nats, self.gateway_config().redis_url.as_deref(), &self.gateway_config().storage)?,
            WorkerRole::Media => media::readiness(nats),
            WorkerRole::Push => push::readiness(nats),
            WorkerRole::Indexer => indexer::readiness(nats, &self.gateway_config().storage),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("failed to bind an operations port")?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(telemetry::serve_operations(listener, readiness, shutdown.clone()));
        Ok(OperationsEndpoint { url, shutdown, task })
    }
}

/// The body of `GET <base_url>/metrics`, failing on any status but 200.
pub async fn scrape_metrics(base_url: &str) -> anyhow::Result<String> {
    let response = reqwest::get(format!("{base_url}/metrics")).await.context("failed to scrape /metrics")?;
    anyhow::ensure!(response.status() == reqwest::StatusCode::OK, "/metrics answered {}", response.status());
    Ok(response.text().await?)
}

/// The value of the sample whose name and labels are exactly `series` (e.g. `natter_connects_total` or
/// `natter_rate_limit_refusals_total{action="send"}`), if the scrape has it.
pub fn sample_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The families a scrape declares (`# TYPE <name> <type>`), which is what a dashboard or rule refers to, less suffixes.
pub fn declared_families(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape.lines().filter_map(|line| line.strip_prefix("# TYPE ")).filter_map(|rest| rest.split_whitespace().next()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# TYPE natter_connects counter\nnatter_connects_total 3\n# TYPE natter_rate_limit_refusals counter\nnatter_rate_limit_refusals_total{action=\"send\"} 2\n# EOF\n";

    fn check(series: &str, expected: Option<f64>) {
        assert_eq!(sample_value(SCRAPE, series), expected, "{series}");
    }

    #[test]
    fn samples_are_found_by_exact_series() {
        check("natter_connects_total", Some(3.0));
        check("natter_rate_limit_refusals_total{action=\"send\"}", Some(2.0));
        check("natter_rate_limit_refusals_total", None);
        check("natter_connects", None);
        assert_eq!(declared_families(SCRAPE).into_iter().collect::<Vec<_>>(), ["natter_connects", "natter_rate_limit_refusals"]);
    }
}
