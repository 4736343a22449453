//! Bad input gets a clear error and changes nothing: malformed frames, unknown types, bad ids, oversized bodies and frames, non-members, persistent abusers.

use std::time::Duration;

use reqwest::StatusCode;
use schemas::{ErrorCode, ServerFrame};
use serde_json::{json, Value};
use testkit::{TestSystem, WsClient};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(10);

async fn expect_error(socket: &mut WsClient, id: Option<&str>, code: ErrorCode) -> anyhow::Result<String> {
    let frame = match id {
        Some(id) => socket.reply_to(id, WAIT).await?,
        None => loop {
            // Deliveries and receipts of earlier sends may come first; an id-less error is the next other frame.
            match socket.next_frame(WAIT).await? {
                ServerFrame::Message { .. } | ServerFrame::Receipt { .. } | ServerFrame::Presence { .. } => continue,
                other => break other,
            }
        },
    };
    match frame {
        ServerFrame::Error { code: got, message, .. } if got == code => Ok(message),
        other => anyhow::bail!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_and_unknown_frames_are_invalid_and_the_socket_stays_open() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut socket = system.connect(0, "alice", "phone").await?;
    for (raw, id) in [
        ("{not json", None),
        ("[1,2,3]", None),
        (r#"{"id":"x1"}"#, Some("x1")),
        (r#"{"type":"teleport","id":"x2"}"#, Some("x2")),
        (r#"{"type":"send","id":"x3","conversation_id":"c"}"#, Some("x3")),
        (r#"{"type":"read","id":"x4","conversation_id":"c","seq":"seven"}"#, Some("x4")),
    ] {
        socket.send_raw(raw).await?;
        let message = expect_error(&mut socket, id, ErrorCode::Invalid).await?;
        assert!(!message.is_empty(), "{raw}: errors explain themselves");
    }
    socket.send_ws_message(WsMessage::binary(vec![1, 2, 3])).await?;
    expect_error(&mut socket, None, ErrorCode::Invalid).await?;
    socket.ping().await?;
    Ok(())
}

#[tokio::test]
async fn ids_that_could_reach_a_subject_are_invalid_everywhere() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("ids", &["bob"]).await?;
    let mut socket = system.connect(0, "alice", "phone").await?;
    let long = "x".repeat(65);
    for bad in ["a.b", "*", ">", "", "msg.>", long.as_str(), "a b"] {
        socket.send_json(json!({"type":"send","id":"s","conversation_id": bad,"client_msg_id":"m1","body":{"text":"x"}})).await?;
        expect_error(&mut socket, Some("s"), ErrorCode::Invalid).await?;
        socket.send_json(json!({"type":"send","id":"s","conversation_id": group.id,"client_msg_id": bad,"body":{"text":"x"}})).await?;
        expect_error(&mut socket, Some("s"), ErrorCode::Invalid).await?;
        let (status, body) = alice.send_text(bad, "m1", "x").await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], json!("invalid"));
        let (status, _) = alice.post("/v1/conversations", json!({"kind":"group","members":[bad]})).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "member {bad:?}");
    }
    for bad in ["a.b", "*", "%3E"] {
        let (status, _) = alice.get(&format!("/v1/conversations/{bad}/messages")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "history of {bad:?}");
    }
    let refused = WsClient::connect(&system.ws_url(0), &system.token("alice"), Some("dev.ice"), false).await;
    assert!(refused.is_err(), "a device id with a dot is refused before the upgrade");
    assert!(alice.history(&group.id, "").await?.messages.is_empty(), "nothing was stored");
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_are_too_large_and_oversized_frames_close_the_socket() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("big", &[]).await?;
    let limit = system.gateway_config().limits.max_body_bytes;
    let mut socket = system.connect(0, "alice", "phone").await?;

    let at_limit = "a".repeat(limit);
    assert_eq!(socket.send_text(&group.id, "fits", &at_limit).await?.0, 1);
    socket.send_json(json!({"type":"send","id":"big","conversation_id": group.id,"client_msg_id":"big","body":{"text": "a".repeat(limit + 1)}})).await?;
    expect_error(&mut socket, Some("big"), ErrorCode::TooLarge).await?;
    let (status, body) = alice.send_text(&group.id, "big-http", &"a".repeat(limit + 1)).await?;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::PAYLOAD_TOO_LARGE, json!("too_large")));
    let (status, _) = alice.send_text(&group.id, "huge-http", &"a".repeat(system.gateway_config().limits.max_frame_bytes + 10)).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    socket.ping().await?;

    // A frame over the cap is refused and the socket stays usable…
    let frame_cap = system.gateway_config().limits.max_frame_bytes;
    socket.send_raw(&format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(frame_cap))).await?;
    expect_error(&mut socket, None, ErrorCode::TooLarge).await?;
    socket.ping().await?;
    // …and so is one over the cap in fragments.
    let fragment = |opcode, fin, size: usize| {
        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(vec![b' '; size], opcode, fin)
    };
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    socket.send_ws_message(WsMessage::Frame(fragment(OpCode::Data(Data::Text), false, frame_cap / 2))).await?;
    socket.send_ws_message(WsMessage::Frame(fragment(OpCode::Data(Data::Continue), false, frame_cap / 2))).await?;
    socket.send_ws_message(WsMessage::Frame(fragment(OpCode::Data(Data::Continue), true, 16))).await?;
    expect_error(&mut socket, None, ErrorCode::TooLarge).await?;
    socket.ping().await?;
    // A frame far beyond the cap is not even read: the socket closes.
    // The server may reset the connection while this is still being written.
    let _ = socket.send_raw(&"x".repeat(frame_cap * 5)).await;
    if let Some(close) = socket.closed(WAIT).await? {
        assert_eq!(u16::from(close.code), 1009);
    }
    assert_eq!(alice.history(&group.id, "").await?.messages.len(), 1, "only the message at the limit was stored");
    Ok(())
}

#[tokio::test]
async fn a_client_that_keeps_breaking_the_protocol_is_closed_with_a_reason() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut socket = system.connect(0, "mallory", "bot").await?;
    let budget = system.gateway_config().limits.max_protocol_errors;
    for _ in 0..=budget {
        socket.send_raw("garbage").await?;
    }
    let close = socket.closed(WAIT).await?.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "too many protocol errors");
    Ok(())
}

#[tokio::test]
async fn non_members_cannot_send_read_or_sync_and_nothing_is_stored() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("members only", &["bob"]).await?;
    let eve = system.api(0, "eve");

    let (status, body) = eve.send_text(&group.id, "m1", "let me in").await?;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")));
    let (status, _) = eve.get(&format!("/v1/conversations/{}/messages", group.id)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = eve.get(&format!("/v1/conversations/{}", group.id)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "a conversation's existence is not revealed");
    let (status, _) = eve.post(&format!("/v1/conversations/{}/members", group.id), json!({"user": "eve"})).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut socket = system.connect(0, "eve", "laptop").await?;
    socket.send_json(json!({"type":"send","id":"s","conversation_id": group.id,"client_msg_id":"m2","body":{"text":"x"}})).await?;
    expect_error(&mut socket, Some("s"), ErrorCode::Forbidden).await?;
    let never: Value = json!({"type":"send","id":"n","conversation_id":"does-not-exist","client_msg_id":"m3","body":{"text":"x"}});
    socket.send_json(never).await?;
    expect_error(&mut socket, Some("n"), ErrorCode::Forbidden).await?;
    assert!(alice.history(&group.id, "").await?.messages.is_empty());
    Ok(())
}
