//! The search side of a `TestSystem`: indexers started in-process, their index directories and the search status.

use std::time::Duration;

use anyhow::Context;
use indexer::IndexerConfig;
use subjects::permissions::Role;
use subjects::Provisioning;
use tokio_util::sync::CancellationToken;

use crate::system::Running;
use crate::TestSystem;

impl TestSystem {
    /// Starts another search indexer with its own index directory; returns its index once the search service answers.
    pub async fn add_indexer(&mut self) -> anyhow::Result<usize> {
        let mut config = IndexerConfig::new(self.index_dir(self.indexers.len()));
        config.storage.message_shards = self.gateway_config.storage.message_shards;
        config.storage.replicas = self.gateway_config.storage.replicas;
        if let Some(change) = &self.indexer_config_change {
            change(&mut config);
        }
        if self.role_users {
            config.storage.provisioning = Provisioning::OpenExisting;
        }
        let nats = self.connect_role(Role::Indexer).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(indexer::run(config, nats, shutdown.clone()));
        self.indexers.push(Running { address: None, shutdown, task: Some(task) });
        // Asked as the gateways ask.
        let nats = self.connect_role(Role::Gateway).await?;
        crate::wait_until("the search service answers", Duration::from_secs(20), || {
            let nats = nats.clone();
            async move { nats.request(subjects::SEARCH_STATUS_SUBJECT, bytes::Bytes::new()).await.is_ok() }
        })
        .await?;
        Ok(self.indexers.len() - 1)
    }

    /// Where indexer `number` of this system keeps (or would keep) its index; child processes may use it too.
    pub fn index_dir(&self, number: usize) -> std::path::PathBuf {
        self.store.path().join(format!("search-index-{number}"))
    }

    /// The status of whichever indexer answers `svc.search.status`.
    pub async fn search_status(&self) -> anyhow::Result<schemas::SearchStatus> {
        let nats = self.connect_role(Role::Gateway).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), nats.request(subjects::SEARCH_STATUS_SUBJECT, bytes::Bytes::new()))
            .await
            .context("the search status request timed out")??;
        Ok(serde_json::from_slice(&reply.payload)?)
    }

    /// Stops an indexer the orderly way (it commits what it read) and waits for it.
    pub async fn stop_indexer(&mut self, number: usize) -> anyhow::Result<()> {
        let running = &mut self.indexers[number];
        running.shutdown.cancel();
        if let Some(task) = running.task.take() {
            task.await.context("indexer task panicked")??;
        }
        Ok(())
    }
}
