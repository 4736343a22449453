//! The indexer survives kill -9 without duplicates or holes, and messages the log expires leave the index too.

use std::process::Stdio;
use std::time::Duration;

use schemas::SearchResponse;
use testkit::{wait_until, Api, TestSystem};

use crate::search::{encode, search, WAIT};

/// A real indexer process (the `natter-indexer` role), so that killing it is a real SIGKILL.
struct IndexerProcess {
    child: tokio::process::Child,
}

impl IndexerProcess {
    fn start(system: &TestSystem) -> anyhow::Result<IndexerProcess> {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_role_process")).arg("indexer")
            .env("NATTER_NATS_URL", system.nats.client_urls())
            .env("NATTER_SEARCH_INDEX_DIR", system.index_dir(0))
            .env("NATTER_SEARCH_REPLICA", "killed")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(IndexerProcess { child })
    }

    /// SIGKILL: no commit, no goodbye.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

async fn send_batch(api: &Api, conversation: &str, numbers: std::ops::Range<u32>) -> anyhow::Result<()> {
    for number in numbers {
        api.send_text_ok(conversation, &format!("m{number}"), &format!("resume check {number}")).await?;
    }
    Ok(())
}

/// Every `seq` found for `q`, following `next_cursor` to the end.
async fn every_hit(api: &Api, q: &str) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = search(api, &format!("q={}&limit=50{cursor}", encode(q))).await?;
        anyhow::ensure!(status.is_success(), "search: {status} {body}");
        let page: SearchResponse = serde_json::from_value(body)?;
        seqs.extend(page.hits.iter().map(|hit| hit.message.seq));
        match page.next_cursor {
            Some(next) => cursor = format!("&cursor={}", encode(&next)),
            None => return Ok(seqs),
        }
    }
}

#[tokio::test]
async fn an_indexer_killed_between_and_during_batches_resumes_without_duplicates_or_holes() -> anyhow::Result<()> {
    let system = TestSystem::builder().start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("resume", &["bob"]).await?.id;
    let indexer = IndexerProcess::start(&system)?;
    wait_until("the indexer answers", WAIT, || async { system.search_status().await.is_ok() }).await?;

    send_batch(&alice, &group, 0..30).await?;
    wait_until("the first batch is committed", WAIT, || async { system.search_status().await.is_ok_and(|status| status.documents == 30 && status.lag == 0) }).await?;
    indexer.kill().await?;

    // Sent while no indexer runs, then more right after a restart, killed again before it can commit.
    send_batch(&alice, &group, 30..60).await?;
    let indexer = IndexerProcess::start(&system)?;
    send_batch(&alice, &group, 60..90).await?;
    indexer.kill().await?;

    let _indexer = IndexerProcess::start(&system)?;
    wait_until("everything is indexed again", WAIT, || async { system.search_status().await.is_ok_and(|status| status.documents == 90 && status.lag == 0) }).await?;
    let mut seqs = every_hit(&alice, "resume").await?;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=90).collect::<Vec<u64>>(), "each message exactly once");
    Ok(())
}

#[tokio::test]
async fn messages_the_log_expires_disappear_from_search() -> anyhow::Result<()> {
    // Every process provisions the log with the same settings (JetStream wants the duplicate window inside max_age).
    let short_lived = |storage: &mut subjects::StorageSettings| {
        storage.message_ttl = Duration::from_secs(2);
        storage.duplicate_window = Duration::from_secs(1);
    };
    let system = TestSystem::builder()
        .gateway_config(move |config| short_lived(&mut config.storage))
        .fanout_config(move |config| short_lived(&mut config.storage))
        .indexer_config(move |config| {
            short_lived(&mut config.storage);
            config.commit_policy.retention_check_interval = Duration::from_millis(200);
        })
        .with_search()
        .start()
        .await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    alice.send_text_ok(&direct, "m1", "ephemeral words").await?;
    wait_until("the message is found", WAIT, || async { crate::search::hits(&alice, "ephemeral").await.is_ok_and(|found| found.len() == 1) }).await?;
    wait_until("the expired message is gone from search", WAIT, || async { crate::search::hits(&alice, "ephemeral").await.is_ok_and(|found| found.is_empty()) }).await?;
    let status = system.search_status().await?;
    assert_eq!(status.documents, 0);
    assert!(status.stream_first_seq > 1, "the log itself expired it: {status:?}");
    Ok(())
}
