//! `natter-push`: one push worker (FCM HTTP v1, APNs, Web Push) against the NATS in `NATTER_NATS_URL`, with the `NATTER_PUSH_*` credentials.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    natter::run_single_role(natter::Role::Push).await
}
