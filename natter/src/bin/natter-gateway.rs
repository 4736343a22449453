//! `natter-gateway`: one gateway against the NATS in `NATTER_NATS_URL`, configured by `NATTER_CONFIG` and `NATTER_*`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    natter::run_single_role(natter::Role::Gateway).await
}
