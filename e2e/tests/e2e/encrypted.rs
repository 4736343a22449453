//! End-to-end encrypted conversations: fixed at creation, ciphertext only over both send paths, a plaintext attempt stores nothing.

use std::time::Duration;

use reqwest::StatusCode;
use schemas::{ErrorCode, ServerFrame};
use serde_json::json;
use testkit::TestSystem;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_encrypted_group_takes_only_ciphertext_and_a_refused_send_stores_nothing() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let (status, group) = alice.post("/v1/conversations", json!({"kind":"group","title":"sealed","members":["bob"],"encrypted":true})).await?;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["encrypted"], true);
    let group_id = group["id"].as_str().expect("an id").to_owned();
    let plain = alice.create_group("open", &["bob"]).await?;
    assert!(!plain.encrypted, "conversations are plain unless asked");

    // HTTP: text and media bodies are refused with `invalid`; nothing reaches the log.
    for (client_msg_id, body) in [("h1", json!({"text":"hello"})), ("h2", json!({"media_id":"m-1"})), ("h3", json!({"media_id":"m-1","text":"look"}))] {
        let (status, reply) = alice.post("/v1/messages", json!({"conversation_id": group_id, "client_msg_id": client_msg_id, "body": body})).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert_eq!(reply["error"]["code"], "invalid");
        assert!(reply["error"]["message"].as_str().unwrap_or_default().contains("encrypted"), "{reply}");
    }
    assert!(alice.history(&group_id, "").await?.messages.is_empty(), "a refused send stores nothing");

    // WebSocket: the same refusal as an error frame, and the socket stays usable.
    let mut socket = system.connect(0, "alice", "phone").await?;
    socket.send_json(json!({"type":"send","id":"w1","conversation_id": group_id,"client_msg_id":"w1","body":{"text":"hello"}})).await?;
    match socket.reply_to("w1", WAIT).await? {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Invalid),
        other => anyhow::bail!("expected an error, got {other:?}"),
    }
    socket.send_json(json!({"type":"send","id":"w2","conversation_id": group_id,"client_msg_id":"w2","body":{"ciphertext":"b64:AAEC"}})).await?;
    match socket.reply_to("w2", WAIT).await? {
        ServerFrame::Ack { seq, .. } => assert_eq!(seq, 1, "the refused sends took no seq"),
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }
    let history = alice.history(&group_id, "").await?.messages;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body.ciphertext.as_deref(), Some("b64:AAEC"));
    assert!(history[0].body.text.is_none());

    // The plain group beside it still takes text, and the inbox tells the two apart.
    alice.send_text_ok(&plain.id, "p1", "in the clear").await?;
    let (_, inbox) = alice.get("/v1/conversations").await?;
    let flag_of = |id: &str| inbox["conversations"].as_array().into_iter().flatten().find(|entry| entry["id"] == id).map(|entry| entry["encrypted"].clone());
    assert_eq!(flag_of(&group_id), Some(json!(true)));
    assert_eq!(flag_of(&plain.id), Some(json!(false)));
    Ok(())
}

#[tokio::test]
async fn an_encrypted_direct_chat_is_a_second_conversation_beside_the_plain_one() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let (alice, bob) = (system.api(0, "alice"), system.api(0, "bob"));
    let plain = alice.create_direct("bob").await?;
    let (status, sealed) = alice.post("/v1/conversations", json!({"kind":"direct","members":["bob"],"encrypted":true})).await?;
    assert_eq!(status, StatusCode::CREATED, "{sealed}");
    let sealed_id = sealed["id"].as_str().expect("an id");
    assert_ne!(sealed_id, plain.id, "asking for an encrypted chat never turns the plain one encrypted");
    assert_eq!(sealed["encrypted"], true);
    // Either side asking again lands in the same two conversations.
    let (_, from_bob) = bob.post("/v1/conversations", json!({"kind":"direct","members":["alice"],"encrypted":true})).await?;
    assert_eq!(from_bob["id"], sealed_id);
    assert_eq!(bob.create_direct("alice").await?.id, plain.id);
    let (status, _) = bob.send_text(sealed_id, "b1", "oops, plaintext").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bob.send_text(&plain.id, "b2", "fine here").await?.0, StatusCode::CREATED);
    Ok(())
}
