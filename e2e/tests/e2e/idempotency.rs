//! Idempotent sends after JetStream's duplicate window has passed, and after a gateway died between the PubAck and its records.

use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use testkit::TestSystem;

const WINDOW: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_resend_after_the_duplicate_window_is_still_recognised() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateway_config(|config| config.storage.duplicate_window = WINDOW).start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("slow network", &["bob"]).await?;
    let original = alice.send_text_ok(&group.id, "late-retry", "hello").await?;
    // The behaviour under test is time-based: JetStream forgets a Nats-Msg-Id once the window has passed.
    tokio::time::sleep(WINDOW * 2).await;
    let (status, resent) = alice.send_text(&group.id, "late-retry", "hello").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resent["seq"], serde_json::json!(original.seq));
    assert_eq!(alice.history(&group.id, "").await?.messages.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_resend_after_a_crash_between_pub_ack_and_records_is_recognised() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().gateway_config(|config| config.storage.duplicate_window = WINDOW).start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("crashy", &["bob"]).await?;
    alice.send_text_ok(&group.id, "m1", "one").await?;
    let original = alice.send_text_ok(&group.id, "m2", "two").await?;

    // Make it look as if the gateway died right after JetStream acked m2: its records are missing.
    let jetstream = jetstream::new(system.connect_nats().await?);
    let index = jetstream.get_key_value(subjects::MESSAGE_INDEX_BUCKET).await?;
    let records = jetstream.get_key_value(subjects::CLIENT_MSG_ID_BUCKET).await?;
    let conversation = subjects::Id::parse(&group.id)?;
    index.purge(subjects::message_index_key(&conversation, 2)).await?;
    records.purge(subjects::client_msg_id_key(&conversation, &subjects::Id::parse("m2")?)).await?;
    system.kill_gateway(0);
    system.add_gateway().await?;
    tokio::time::sleep(WINDOW * 2).await;

    let alice = system.api(1, "alice");
    let (status, resent) = alice.send_text(&group.id, "m2", "two").await?;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!(resent["seq"], serde_json::json!(original.seq));
    let page = alice.history(&group.id, "").await?;
    assert_eq!(page.messages.iter().map(|message| message.client_msg_id.as_str()).collect::<Vec<_>>(), vec!["m1", "m2"]);
    assert_eq!(alice.send_text_ok(&group.id, "m3", "three").await?.seq, 3, "and the log goes on gapless");
    Ok(())
}

#[tokio::test]
async fn a_resend_repairs_the_history_index_when_only_the_idempotency_record_was_written() -> anyhow::Result<()> {
    // As when a NATS node is lost between the two side-by-side record writes (found by cluster_faults).
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("half written", &["bob"]).await?;
    alice.send_text_ok(&group.id, "m1", "one").await?;
    let original = alice.send_text_ok(&group.id, "m2", "two").await?;
    let jetstream = jetstream::new(system.connect_nats().await?);
    let index = jetstream.get_key_value(subjects::MESSAGE_INDEX_BUCKET).await?;
    index.purge(subjects::message_index_key(&subjects::Id::parse(&group.id)?, original.seq)).await?;
    // Far enough from the tail that history no longer finds m2 by walking back from it.
    const LATER: u64 = 70;
    for index in 3..3 + LATER {
        alice.send_text_ok(&group.id, &format!("m{index}"), "later").await?;
    }

    let (status, resent) = alice.send_text(&group.id, "m2", "two").await?;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!(resent["seq"], serde_json::json!(original.seq));
    let page = alice.history(&group.id, "after=0&limit=200").await?;
    assert_eq!(page.messages.iter().map(|message| message.seq).collect::<Vec<_>>(), (1..3 + LATER).collect::<Vec<_>>(), "history has no hole at m2");
    Ok(())
}
