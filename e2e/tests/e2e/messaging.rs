//! Sending and receiving: acks after durability, every device of every member, idempotent resends, history pages.

use std::time::Duration;

use reqwest::StatusCode;
use schemas::ServerFrame;
use serde_json::json;
use testkit::TestSystem;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_direct_chat_reaches_every_device_of_both_members() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let conversation = system.api(0, "alice").create_direct("bob").await?;
    let again = system.api(0, "bob").create_direct("alice").await?;
    assert_eq!(conversation.id, again.id, "one direct conversation per pair, from either side");

    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    let mut alice_laptop = system.connect(0, "alice", "laptop").await?;
    let mut bob_phone = system.connect(0, "bob", "phone").await?;

    let (seq, duplicate) = alice_phone.send_text(&conversation.id, "m-1", "hello bob").await?;
    assert_eq!((seq, duplicate), (1, false));
    for device in [&mut alice_phone, &mut alice_laptop, &mut bob_phone] {
        let messages = device.messages_until(&conversation.id, 1, WAIT).await?;
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert_eq!((message.seq, message.sender.as_str(), message.sender_device.as_str()), (1, "alice", "phone"));
        assert_eq!(message.client_msg_id, "m-1");
        assert_eq!(message.body.text.as_deref(), Some("hello bob"));
    }

    let (seq, _) = bob_phone.send_text(&conversation.id, "m-2", "hi alice").await?;
    assert_eq!(seq, 2, "seq is gapless per conversation");
    let messages = alice_laptop.messages_until(&conversation.id, 2, WAIT).await?;
    assert_eq!(messages.iter().map(|message| message.seq).collect::<Vec<_>>(), vec![2]);
    Ok(())
}

#[tokio::test]
async fn a_resend_is_acked_with_the_original_seq_and_stored_once() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("team", &["bob"]).await?;

    let (status, first) = alice.send_text(&group.id, "same-id", "once").await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, second) = alice.send_text(&group.id, "same-id", "once").await?;
    assert_eq!(status, StatusCode::OK, "a resend answers 200: {second}");
    assert_eq!(first["seq"], second["seq"]);
    assert_eq!(second["duplicate"], json!(true));

    let mut socket = system.connect(0, "alice", "phone").await?;
    let (seq, duplicate) = socket.send_text(&group.id, "same-id", "once").await?;
    assert_eq!((seq, duplicate), (1, true), "the WebSocket path shares the same idempotency");
    let (seq, duplicate) = socket.send_text(&group.id, "next-id", "twice").await?;
    assert_eq!((seq, duplicate), (2, false));

    let page = alice.history(&group.id, "").await?;
    assert_eq!(page.messages.iter().map(|message| message.client_msg_id.as_str()).collect::<Vec<_>>(), vec!["same-id", "next-id"]);
    Ok(())
}

#[tokio::test]
async fn history_pages_before_after_and_latest() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("history", &["bob"]).await?;
    for index in 1..=25 {
        alice.send_text_ok(&group.id, &format!("m{index}"), &format!("message {index}")).await?;
    }
    let seqs = |page: &schemas::HistoryPage| page.messages.iter().map(|message| message.seq).collect::<Vec<_>>();

    let latest = alice.history(&group.id, "limit=10").await?;
    assert_eq!(seqs(&latest), (16..=25).collect::<Vec<_>>());
    assert!(latest.has_more);

    let before = alice.history(&group.id, "before=16&limit=10").await?;
    assert_eq!(seqs(&before), (6..=15).collect::<Vec<_>>());
    assert!(before.has_more);
    let oldest = alice.history(&group.id, "before=6&limit=10").await?;
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(!oldest.has_more);

    let after = alice.history(&group.id, "after=20&limit=3").await?;
    assert_eq!(seqs(&after), vec![21, 22, 23]);
    assert!(after.has_more);
    let tail = alice.history(&group.id, "after=23").await?;
    assert_eq!(seqs(&tail), vec![24, 25]);
    assert!(!tail.has_more);
    assert_eq!(tail.messages[1].body.text.as_deref(), Some("message 25"));
    let exactly_to_the_end = alice.history(&group.id, "after=22&limit=3").await?;
    assert_eq!(seqs(&exactly_to_the_end), vec![23, 24, 25]);
    assert!(!exactly_to_the_end.has_more, "nothing after 25");
    let past_the_end = alice.history(&group.id, "after=25").await?;
    assert!(past_the_end.messages.is_empty() && !past_the_end.has_more);
    let before_beyond_the_end = alice.history(&group.id, "before=100&limit=10").await?;
    assert_eq!(seqs(&before_beyond_the_end), (16..=25).collect::<Vec<_>>(), "clamped to the tail");
    assert!(before_beyond_the_end.has_more);

    let bob = system.api(0, "bob");
    assert_eq!(seqs(&bob.history(&group.id, "limit=1").await?), vec![25], "members read the same log");
    for bad in ["limit=0", "limit=201", "before=3&after=1", "limit=abc"] {
        let (status, body) = alice.get(&format!("/v1/conversations/{}/messages?{bad}", group.id)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn the_inbox_lists_conversations_newest_activity_first() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let older = alice.create_group("older", &["bob"]).await?;
    let direct = alice.create_direct("carol").await?;
    alice.send_text_ok(&older.id, "m1", "first").await?;
    alice.send_text_ok(&direct.id, "m1", "latest").await?;

    let (status, inbox) = alice.get("/v1/conversations").await?;
    assert_eq!(status, StatusCode::OK);
    let inbox: schemas::Inbox = serde_json::from_value(inbox)?;
    let ids: Vec<&str> = inbox.conversations.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(ids, vec![direct.id.as_str(), older.id.as_str()]);
    assert_eq!(inbox.conversations[0].last_message.as_ref().and_then(|message| message.body.text.as_deref()), Some("latest"));

    let (_, bob_inbox) = system.api(0, "bob").get("/v1/conversations").await?;
    assert_eq!(bob_inbox["conversations"].as_array().map(Vec::len), Some(1), "bob is only in the group: {bob_inbox}");
    Ok(())
}

#[tokio::test]
async fn ping_is_answered_and_the_reply_carries_the_id() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut socket = system.connect(0, "alice", "phone").await?;
    socket.send_json(json!({"type": "ping", "id": 42})).await?;
    assert_eq!(socket.next_frame(WAIT).await?, ServerFrame::Pong { id: Some(json!(42)) });
    Ok(())
}
