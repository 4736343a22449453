//! The benchmark's `--smoke` run against a real nats-server: every message indexed, every query answered, figures that make sense.

use indexer::bench::{run_benchmark, BenchOptions};

#[tokio::test]
async fn the_smoke_benchmark_indexes_every_message_and_times_every_query() -> anyhow::Result<()> {
    let work_dir = tempfile::tempdir()?;
    let mut nats_server = devservers::NatsServer::start(&work_dir.path().join("nats")).await?;
    let nats = async_nats::connect(nats_server.client_url()).await?;
    let options = BenchOptions::smoke();
    let report = run_benchmark(nats, work_dir.path().join("index"), &options, |_| {}).await;
    nats_server.stop().await;
    let report = report?;
    assert_eq!(report.documents, options.messages);
    assert_eq!(report.queries, options.queries);
    assert!(report.queries_with_hits > 0, "frequent words match somewhere: {report:?}");
    assert!(report.index_messages_per_second > 0.0);
    assert!(0.0 < report.query_p50_ms && report.query_p50_ms <= report.query_p99_ms && report.query_p99_ms <= report.query_max_ms, "{report:?}");
    assert!(report.to_markdown().contains(&report.documents.to_string()));
    Ok(())
}
