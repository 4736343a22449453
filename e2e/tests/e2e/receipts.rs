//! Read and delivered receipts per device, monotonic watermarks, unread counts across devices, and a 200-conversation inbox.

use std::time::Duration;

use reqwest::StatusCode;
use schemas::{Inbox, ReceiptKind, ServerFrame};
use serde_json::json;
use testkit::{Api, TestSystem, WsClient};

const WAIT: Duration = Duration::from_secs(10);

async fn inbox(api: &Api) -> anyhow::Result<Inbox> {
    let (status, body) = api.get("/v1/conversations").await?;
    anyhow::ensure!(status == StatusCode::OK, "inbox: {status} {body}");
    Ok(serde_json::from_value(body)?)
}

async fn unread(api: &Api, conversation: &str) -> anyhow::Result<u64> {
    let inbox = inbox(api).await?;
    let entry = inbox.conversations.iter().find(|entry| entry.id == conversation).ok_or_else(|| anyhow::anyhow!("{conversation} not in inbox"))?;
    Ok(entry.unread)
}

/// The next `receipt` frame matching `user`, `kind` and `seq`; other frames are skipped.
async fn receipt(socket: &mut WsClient, user: &str, kind: ReceiptKind, seq: u64) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match socket.next_frame(left).await? {
            ServerFrame::Receipt { user: who, kind: got, seq: at, device, .. } if who == user && got == kind && at == seq => return Ok(device),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn watermarks_only_move_forward_and_bad_receipts_change_nothing() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let group = alice.create_group("marks", &["bob"]).await?;
    for index in 1..=5 {
        alice.send_text_ok(&group.id, &format!("m{index}"), "x").await?;
    }
    assert_eq!(unread(&bob, &group.id).await?, 5);
    let receipt = |seq: u64| json!({"conversation_id": group.id, "seq": seq, "kind": "read"});
    assert_eq!(bob.post("/v1/receipts", receipt(3)).await?.0, StatusCode::NO_CONTENT);
    assert_eq!(unread(&bob, &group.id).await?, 2);
    assert_eq!(bob.post("/v1/receipts", receipt(2)).await?.0, StatusCode::NO_CONTENT, "a lower seq is accepted and ignored");
    assert_eq!(unread(&bob, &group.id).await?, 2, "and never moves the watermark back");

    for (body, expected) in [
        (receipt(6), StatusCode::BAD_REQUEST),
        (receipt(0), StatusCode::BAD_REQUEST),
        (json!({"conversation_id": "a.b", "seq": 1, "kind": "read"}), StatusCode::BAD_REQUEST),
        (json!({"conversation_id": "*", "seq": 1, "kind": "read"}), StatusCode::BAD_REQUEST),
        (json!({"conversation_id": group.id, "seq": 1, "kind": "seen"}), StatusCode::BAD_REQUEST),
        (json!({"conversation_id": "no-such-conversation", "seq": 1, "kind": "read"}), StatusCode::FORBIDDEN),
    ] {
        let (status, answer) = bob.post("/v1/receipts", body.clone()).await?;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _) = system.api(0, "eve").post("/v1/receipts", receipt(1)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(unread(&bob, &group.id).await?, 2);

    let mut socket = system.connect(0, "bob", "phone").await?;
    socket.send_json(json!({"type": "read", "id": "r1", "conversation_id": group.id, "seq": 99})).await?;
    match socket.reply_to("r1", WAIT).await? {
        ServerFrame::Error { code, .. } => assert_eq!(code, schemas::ErrorCode::Invalid),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(unread(&bob, &group.id).await?, 2);
    Ok(())
}

#[tokio::test]
async fn the_sender_sees_delivered_then_read() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let group = system.api(0, "alice").create_group("ticks", &["bob"]).await?;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "tablet").await?;

    let (seq, _) = alice.send_text(&group.id, "hello", "did you get this?").await?;
    bob.messages_until(&group.id, seq, WAIT).await?;
    let device = receipt(&mut alice, "bob", ReceiptKind::Delivered, seq).await?;
    assert_eq!(device.as_deref(), Some("tablet"), "delivered to bob's tablet");

    bob.send_json(json!({"type": "read", "conversation_id": group.id, "seq": seq})).await?;
    let device = receipt(&mut alice, "bob", ReceiptKind::Read, seq).await?;
    assert_eq!(device.as_deref(), Some("tablet"));
    Ok(())
}

#[tokio::test]
async fn delivered_is_told_to_the_author_only_and_read_to_everyone() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let group = system.api(0, "alice").create_group("trio", &["bob", "carol"]).await?;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "tablet").await?;
    let mut carol = system.connect(0, "carol", "laptop").await?;

    let (seq, _) = alice.send_text(&group.id, "q", "lunch?").await?;
    bob.messages_until(&group.id, seq, WAIT).await?;
    carol.messages_until(&group.id, seq, WAIT).await?;
    receipt(&mut alice, "bob", ReceiptKind::Delivered, seq).await?;

    // Receipts from one gateway reach a member in the order they were announced, so if carol had
    // been told of bob's delivery, that frame would come before this read.
    bob.send_json(json!({"type": "read", "conversation_id": group.id, "seq": seq})).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match carol.next_frame(left).await? {
            ServerFrame::Receipt { user, kind: ReceiptKind::Read, seq: at, .. } if user == "bob" && at == seq => break,
            ServerFrame::Receipt { user, kind: ReceiptKind::Delivered, .. } if user == "bob" => {
                panic!("carol was told of a delivery of alice's message to bob")
            }
            _ => continue,
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_read_on_one_device_clears_unread_on_the_others() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let bob_api = system.api(0, "bob");
    let group = alice.create_group("two screens", &["bob"]).await?;
    let mut phone = system.connect(0, "bob", "phone").await?;
    let mut laptop = system.connect(0, "bob", "laptop").await?;
    for index in 1..=3 {
        alice.send_text_ok(&group.id, &format!("m{index}"), "news").await?;
    }
    phone.messages_until(&group.id, 3, WAIT).await?;
    laptop.messages_until(&group.id, 3, WAIT).await?;
    assert_eq!(unread(&bob_api, &group.id).await?, 3);

    phone.send_json(json!({"type": "read", "conversation_id": group.id, "seq": 3})).await?;
    let device = receipt(&mut laptop, "bob", ReceiptKind::Read, 3).await?;
    assert_eq!(device.as_deref(), Some("phone"), "the laptop is told which device read");
    assert_eq!(unread(&bob_api, &group.id).await?, 0);

    // One's own messages never count as unread, even before any receipt is written.
    bob_api.send_text_ok(&group.id, "mine", "my reply").await?;
    assert_eq!(unread(&bob_api, &group.id).await?, 0);
    alice.send_text_ok(&group.id, "m5", "and another").await?;
    assert_eq!(unread(&bob_api, &group.id).await?, 1);
    Ok(())
}

#[tokio::test]
async fn an_inbox_of_200_conversations_comes_in_one_request_in_order_with_counts() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    const CONVERSATIONS: usize = 200;
    let mut ids = Vec::with_capacity(CONVERSATIONS);
    for index in 0..CONVERSATIONS {
        ids.push(alice.create_group(&format!("group {index}"), &["bob"]).await?.id);
    }
    // Activity order: the last conversation written to is the newest. Bob writes index % 3 + 1 messages to each.
    for (index, id) in ids.iter().enumerate() {
        for message in 0..(index % 3 + 1) {
            bob.send_text_ok(id, &format!("m{message}"), "hello").await?;
        }
    }
    let started = std::time::Instant::now();
    let inbox = inbox(&alice).await?;
    let elapsed = started.elapsed();
    assert_eq!(inbox.conversations.len(), CONVERSATIONS);
    let expected_order: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    let order: Vec<&str> = inbox.conversations.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(order, expected_order, "newest activity first");
    for entry in &inbox.conversations {
        let index = ids.iter().position(|id| *id == entry.id).unwrap();
        assert_eq!(entry.unread, (index % 3 + 1) as u64, "{}", entry.id);
        assert_eq!(entry.title.as_deref(), Some(format!("group {index}").as_str()));
        assert_eq!(entry.last_message.as_ref().map(|message| message.seq), Some((index % 3 + 1) as u64));
    }
    eprintln!("inbox of {CONVERSATIONS} conversations answered in {elapsed:?}");
    // Bob wrote everything himself: nothing is unread for him.
    assert!(inbox_all_read(&bob).await?);
    Ok(())
}

async fn inbox_all_read(api: &Api) -> anyhow::Result<bool> {
    Ok(inbox(api).await?.conversations.iter().all(|entry| entry.unread == 0))
}
