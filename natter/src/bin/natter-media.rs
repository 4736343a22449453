//! `natter-media`: one media worker (virus scan, thumbnails) against the NATS in `NATTER_NATS_URL` and the clamd in `NATTER_CLAMD_ADDRESS`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    natter::run_single_role(natter::Role::Media).await
}
