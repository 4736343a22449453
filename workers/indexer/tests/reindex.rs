//! Rebuilding an index from the log against a real nats-server: every entry read with progress, the result is what a fresh indexer serves, and a directory in use is refused.

use std::time::Duration;

use schemas::{Body, Message, SearchStatus, StoredMessage};
use subjects::Id;
use tokio_util::sync::CancellationToken;

async fn publish_messages(nats: &async_nats::Client, count: u64) -> anyhow::Result<()> {
    let jetstream = async_nats::jetstream::new(nats.clone());
    store::Storage::provision(jetstream.clone(), &subjects::StorageSettings::default()).await?;
    for seq in 1..=count {
        let message = Message::new(
            "g-1".to_owned(),
            seq,
            format!("m{seq}"),
            "alice".to_owned(),
            "phone".to_owned(),
            time::OffsetDateTime::now_utc(),
            Body::text(format!("rebuild me {seq}")),
            None,
        );
        let bytes = schemas::encode_stored_message(&StoredMessage::message(message, 0));
        jetstream.publish(subjects::Shard::FIRST.message_subject(&Id::parse("g-1")?), bytes.into()).await?.await?;
    }
    Ok(())
}

async fn status(nats: &async_nats::Client) -> anyhow::Result<SearchStatus> {
    let reply = tokio::time::timeout(Duration::from_secs(5), nats.request(subjects::SEARCH_STATUS_SUBJECT, bytes::Bytes::new())).await??;
    Ok(serde_json::from_slice(&reply.payload)?)
}

#[tokio::test]
async fn a_rebuild_reads_the_whole_log_and_refuses_a_directory_in_use() -> anyhow::Result<()> {
    let work_dir = tempfile::tempdir()?;
    let mut nats_server = devservers::NatsServer::start(&work_dir.path().join("nats")).await?;
    let nats = async_nats::connect(nats_server.client_url()).await?;
    publish_messages(&nats, 40).await?;
    let config = indexer::IndexerConfig::new(work_dir.path().join("index"));

    let mut reports = Vec::new();
    let summary = indexer::reindex::reindex(&config, nats.clone(), |progress| reports.push(progress)).await?;
    assert_eq!((summary.entries_read, summary.indexed_stream_seq), (40, 40));
    let last = reports.last().expect("progress is reported");
    assert_eq!((last.entries_read, last.entries_total), (40, 40));
    assert!(reports.windows(2).all(|pair| pair[0].entries_read <= pair[1].entries_read));

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(indexer::run(config.clone(), nats.clone(), shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let served = loop {
        if let Ok(status) = status(&nats).await {
            break status;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the indexer never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((served.indexed_stream_seq, served.documents, served.lag), (40, 40, 0), "a fresh start resumes after the rebuild");
    let refused = indexer::reindex::reindex(&config, nats.clone(), |_| {}).await.expect_err("the directory is in use");
    assert!(format!("{refused:#}").contains("another indexer"), "{refused:#}");
    shutdown.cancel();
    running.await??;
    nats_server.stop().await;
    Ok(())
}
