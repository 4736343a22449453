//! `natter-indexer reindex` (rebuild from the log with a progress bar) and `natter-indexer bench` (index throughput and query latency on a throwaway NATS).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use indexer::bench::{BenchOptions, BenchReport};
use indexer::reindex::ReindexProgress;

use crate::config::NatterConfig;
use crate::roles::connect_nats;

/// Width of the bar in characters.
const BAR_WIDTH: usize = 30;
/// Without a terminal (logs, CI), progress is a plain line this often instead of a redrawn bar.
const PLAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Rebuilds the configured index from the log; run it while no indexer uses the directory.
pub async fn run_reindex(config: &NatterConfig) -> anyhow::Result<()> {
    let indexer_config = indexer::IndexerConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, subjects::permissions::Role::Indexer).await?;
    let mut bar = ProgressBar::new();
    eprintln!("rebuilding {} from the log", indexer_config.index_dir.display());
    let summary = indexer::reindex::reindex(&indexer_config, nats.clone(), |progress| bar.show(&progress)).await?;
    bar.finish();
    nats.flush().await.context("failed to flush NATS")?;
    println!(
        "reindexed {} log entries through stream sequence {} in {:.1} s ({:.0} entries/s)",
        summary.entries_read,
        summary.indexed_stream_seq,
        summary.elapsed.as_secs_f64(),
        summary.entries_read as f64 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Starts a nats-server of its own (never the configured one: the benchmark writes synthetic messages), then benchmarks.
pub async fn run_bench(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let work_dir = tempfile::tempdir().context("failed to create a benchmark directory")?;
    let mut nats_server = devservers::NatsServer::start(&work_dir.path().join("nats")).await?;
    let nats = async_nats::connect(nats_server.client_url()).await.context("failed to connect to the benchmark's nats-server")?;
    let report = indexer::bench::run_benchmark(nats, work_dir.path().join("index"), options, |line| eprintln!("{line}")).await;
    nats_server.stop().await;
    report
}

struct ProgressBar {
    on_terminal: bool,
    last_plain_line: Option<Instant>,
}

impl ProgressBar {
    fn new() -> ProgressBar {
        ProgressBar { on_terminal: std::io::stderr().is_terminal(), last_plain_line: None }
    }

    fn show(&mut self, progress: &ReindexProgress) {
        let line = render(progress);
        if self.on_terminal {
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if self.last_plain_line.is_none_or(|last| last.elapsed() >= PLAIN_PROGRESS_INTERVAL) {
            eprintln!("{line}");
            self.last_plain_line = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if self.on_terminal {
            eprintln!();
        }
    }
}

/// `[#########.....................]  31%  310000/1000000 entries  52340/s  ETA 13 s`
fn render(progress: &ReindexProgress) -> String {
    let fraction = if progress.entries_total == 0 { 1.0 } else { (progress.entries_read as f64 / progress.entries_total as f64).min(1.0) };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let rate = progress.entries_per_second();
    let remaining = progress.entries_total.saturating_sub(progress.entries_read) as f64;
    let eta = if rate > 0.0 { format!("ETA {:.0} s", remaining / rate) } else { "ETA -".to_owned() };
    format!(
        "[{}{}] {:>3.0}%  {}/{} entries  {:.0}/s  {eta}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        fraction * 100.0,
        progress.entries_read,
        progress.entries_total,
        rate
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(read: u64, total: u64, seconds: u64, expected: &str) {
        let progress = ReindexProgress { entries_read: read, entries_total: total, elapsed: Duration::from_secs(seconds) };
        assert_eq!(render(&progress), expected);
    }

    #[test]
    fn the_bar_shows_share_rate_and_time_left() {
        check(500, 1000, 10, "[###############...............]  50%  500/1000 entries  50/s  ETA 10 s");
        check(0, 0, 0, "[##############################] 100%  0/0 entries  0/s  ETA -");
        check(0, 10, 1, "[..............................]   0%  0/10 entries  0/s  ETA -");
    }
}
