//! Rate limits: sends, connects and uploads per user and per address, shared across gateways, refused with `rate_limited` and a wait, storing nothing.

use std::time::Duration;

use gateway::rate_limit::{ActionLimits, Bucket};
use reqwest::StatusCode;
use schemas::{ErrorCode, ServerFrame};
use serde_json::json;
use testkit::TestSystem;

use crate::auth::websocket_status;

const WAIT: Duration = Duration::from_secs(10);

/// A bucket that refills far slower than a test runs, so what it allows is exactly its burst.
fn burst_of(burst: u32) -> Option<Bucket> {
    Some(Bucket { burst, per_second: 0.2 })
}

#[tokio::test]
async fn a_users_sends_are_limited_across_gateways_and_a_refusal_says_how_long_to_wait() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateways(2)
        .gateway_config(|config| config.rate_limits.send = ActionLimits { per_user: burst_of(3), per_address: None })
        .start()
        .await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("chatty", &["bob"]).await?.id;
    // Two sends through one gateway and one through the other spend one shared bucket.
    alice.send_text_ok(&group, "m1", "one").await?;
    alice.send_text_ok(&group, "m2", "two").await?;
    system.api(1, "alice").send_text_ok(&group, "m3", "three").await?;

    let (status, body) = system.api(1, "alice").send_text(&group, "m4", "four").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let wait = body["error"]["retry_after_ms"].as_u64().expect("a rate_limited error says how long to wait");
    assert!((1..=5_000).contains(&wait), "one token at 0.2/s comes back within 5 s, got {wait} ms");

    let mut socket = system.connect(0, "alice", "phone").await?;
    socket.send_json(json!({"type":"send","id":"s5","conversation_id": group,"client_msg_id":"m5","body":{"text":"five"}})).await?;
    match socket.reply_to("s5", WAIT).await? {
        ServerFrame::Error { code, retry_after_ms, .. } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(retry_after_ms.is_some_and(|wait| wait > 0));
        }
        other => anyhow::bail!("expected rate_limited, got {other:?}"),
    }
    socket.ping().await?;

    let stored = alice.history(&group, "").await?.messages;
    assert_eq!(stored.iter().map(|message| message.client_msg_id.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3"], "refused sends store nothing");
    // Bob has his own bucket.
    system.api(0, "bob").send_text_ok(&group, "b1", "mine").await?;
    Ok(())
}

#[tokio::test]
async fn one_address_shares_a_bucket_across_users() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| config.rate_limits.send = ActionLimits { per_user: None, per_address: burst_of(2) })
        .start()
        .await?;
    let group = system.api(0, "alice").create_group("office", &["bob", "carol"]).await?.id;
    system.api(0, "alice").send_text_ok(&group, "a1", "from the office").await?;
    system.api(0, "bob").send_text_ok(&group, "b1", "same office").await?;
    let (status, body) = system.api(0, "carol").send_text(&group, "c1", "behind the same NAT").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    Ok(())
}

#[tokio::test]
async fn connects_and_uploads_are_limited_before_any_work() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| {
            config.rate_limits.connect = ActionLimits { per_user: burst_of(2), per_address: None };
            config.rate_limits.upload = ActionLimits { per_user: burst_of(1), per_address: None };
        })
        .start()
        .await?;
    let _first = system.connect(0, "alice", "phone").await?;
    let _second = system.connect(0, "alice", "laptop").await?;
    let status = websocket_status(&system, &system.token("alice")).await;
    assert_eq!(status, Some(429), "the third connect is refused before the upgrade");
    system.connect(0, "bob", "phone").await?;

    let alice = system.api(0, "alice");
    let grant = json!({"content_type":"image/png","size":100});
    assert_eq!(alice.post("/v1/media", grant.clone()).await?.0, StatusCode::CREATED);
    let (status, body) = alice.post("/v1/media", grant).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    Ok(())
}

#[tokio::test]
async fn caps_on_group_size_conversations_per_user_and_devices_refuse_and_change_nothing() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| {
            config.limits.conversations = gateway::ConversationLimits { max_group_members: 3, max_conversations_per_user: 2 };
            config.limits.max_devices_per_user = 2;
        })
        .start()
        .await?;
    let alice = system.api(0, "alice");
    let (status, body) = alice.post("/v1/conversations", json!({"kind":"group","title":"crowd","members":["bob","carol","dave"]})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "four members is one too many: {body}");
    let group = alice.create_group("trio", &["bob", "carol"]).await?.id;
    let (status, body) = alice.post(&format!("/v1/conversations/{group}/members"), json!({"user":"dave"})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "the group is full: {body}");

    // Bob is in one conversation; a second is allowed, a third is not, and the refusal leaves nothing behind.
    alice.create_direct("bob").await?;
    let (status, body) = system.api(0, "erin").post("/v1/conversations", json!({"kind":"group","title":"more","members":["bob"]})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, inbox) = system.api(0, "bob").get("/v1/conversations").await?;
    assert_eq!(inbox["conversations"].as_array().map(Vec::len), Some(2));
    let (_, erins) = system.api(0, "erin").get("/v1/conversations").await?;
    assert_eq!(erins["conversations"].as_array().map(Vec::len), Some(0));

    let _phone = system.connect(0, "carol", "phone").await?;
    let _laptop = system.connect(0, "carol", "laptop").await?;
    let status = websocket_status(&system, &system.token("carol")).await;
    assert_eq!(status, Some(403), "a third device is refused before the upgrade");
    Ok(())
}

#[tokio::test]
async fn the_content_policy_refuses_denied_text_and_one_text_spread_over_many_conversations() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateways(2)
        .gateway_config(|config| {
            config.content_policy = gateway::content_filter::ContentPolicy {
                deny_patterns: vec![r"\bcheap\s+pills\b".to_owned()],
                spam_max_conversations: 2,
                spam_window: Duration::from_secs(60),
            };
        })
        .start()
        .await?;
    let eve = system.api(0, "eve");
    let groups = [eve.create_group("one", &["ann"]).await?.id, eve.create_group("two", &["ann"]).await?.id, eve.create_group("three", &["ann"]).await?.id];

    let (status, body) = eve.send_text(&groups[0], "d1", "Buy CHEAP   pills here").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "content_refused");

    let pitch = "You have won a prize, click the link to claim it";
    eve.send_text_ok(&groups[0], "s1", pitch).await?;
    // The count is shared: the second conversation through the other gateway still counts.
    system.api(1, "eve").send_text_ok(&groups[1], "s2", pitch).await?;
    let mut socket = system.connect(0, "eve", "phone").await?;
    socket.send_json(json!({"type":"send","id":"s3","conversation_id": groups[2],"client_msg_id":"s3","body":{"text": pitch}})).await?;
    match socket.reply_to("s3", WAIT).await? {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::ContentRefused),
        other => anyhow::bail!("expected content_refused, got {other:?}"),
    }
    assert!(eve.history(&groups[2], "").await?.messages.is_empty(), "a refused message is not stored");
    assert!(eve.history(&groups[0], "").await?.messages.iter().all(|message| message.client_msg_id != "d1"));
    // Different text, and the same text from someone else, go through.
    socket.send_text(&groups[2], "s4", "a perfectly ordinary message to the third group").await?;
    system.api(0, "ann").send_text_ok(&groups[2], "a1", pitch).await?;
    Ok(())
}
