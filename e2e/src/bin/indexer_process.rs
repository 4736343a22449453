//! The `natter-indexer` role as a process of its own, built beside the e2e tests so that they can SIGKILL a real indexer (cargo hands them its path).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    natter::run_single_role(natter::Role::Indexer).await
}
