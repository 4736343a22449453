//! Edits and deletes over real sockets: live `message_updated` frames, history and sync with changes folded in, and who may change what.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use schemas::{ChangeKind, ErrorCode, Message, MessageUpdate, ServerFrame};
use serde_json::{json, Value};
use testkit::{Api, TestSystem, WsClient};

const WAIT: Duration = Duration::from_secs(10);

/// Sends a change frame and returns its ack's `seq`, or the error code it was refused with.
pub(crate) async fn change(client: &mut WsClient, mut frame: Value) -> anyhow::Result<Result<u64, ErrorCode>> {
    let id = client.fresh_id();
    frame["id"] = json!(id);
    client.send_json(frame).await?;
    match client.reply_to(&id, WAIT).await? {
        ServerFrame::Ack { seq, .. } => Ok(Ok(seq)),
        ServerFrame::Error { code, .. } => Ok(Err(code)),
        other => anyhow::bail!("expected an ack or an error, got {other:?}"),
    }
}

/// The `message_updated` frame with the change `seq`; other frames stay queued.
pub(crate) async fn update_with_seq(client: &mut WsClient, seq: u64) -> anyhow::Result<(MessageUpdate, Option<Message>)> {
    let frames = client.frames_until(WAIT, |frame| matches!(frame, ServerFrame::MessageUpdated { update, .. } if update.seq == seq)).await?;
    match frames.into_iter().last() {
        Some(ServerFrame::MessageUpdated { update, message }) => Ok((update, message)),
        other => anyhow::bail!("expected message_updated {seq}, got {other:?}"),
    }
}

/// Every frame of a `sync` up to `synced`.
pub(crate) async fn sync_frames(client: &mut WsClient, cursors: Value) -> anyhow::Result<Vec<ServerFrame>> {
    let id = client.fresh_id();
    client.send_json(json!({"type": "sync", "id": id, "cursors": cursors})).await?;
    client.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Synced { .. })).await
}

async fn history_seqs(api: &Api, conversation: &str) -> anyhow::Result<Vec<u64>> {
    Ok(api.history(conversation, "").await?.messages.iter().map(|message| message.seq).collect())
}

#[tokio::test]
async fn the_sender_edits_and_deletes_and_every_read_path_shows_it() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice_api = system.api(0, "alice");
    let group = alice_api.create_group("edits", &["bob"]).await?.id;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    alice.send_text(&group, "m1", "helo world").await?;
    alice.send_text(&group, "m2", "my password is hunter2").await?;
    bob.messages_until(&group, 2, WAIT).await?;

    let edit = change(&mut alice, json!({"type": "edit", "conversation_id": group, "client_msg_id": "e1", "seq": 1, "body": {"text": "hello world"}})).await?;
    assert_eq!(edit, Ok(3), "an edit is acked with its own seq");
    let (update, message) = update_with_seq(&mut bob, 3).await?;
    assert_eq!((update.kind, update.target_seq, update.sender.as_str()), (ChangeKind::Edit, 1, "alice"));
    let message = message.expect("the edited message rides along");
    assert_eq!((message.seq, message.body.text.as_deref()), (1, Some("hello world")));
    assert!(message.edited_at.is_some() && message.revision.is_some());

    let (status, body) = alice_api.request(Method::DELETE, &format!("/v1/conversations/{group}/messages/2?client_msg_id=d1"), None).await?;
    assert_eq!((status, body["seq"].as_u64()), (StatusCode::CREATED, Some(4)), "{body}");
    let (status, again) = alice_api.request(Method::DELETE, &format!("/v1/conversations/{group}/messages/2?client_msg_id=d1"), None).await?;
    assert_eq!((status, again["seq"].as_u64(), again["duplicate"].as_bool()), (StatusCode::OK, Some(4), Some(true)), "a resend is the same delete");
    let (update, tombstone) = update_with_seq(&mut bob, 4).await?;
    assert_eq!((update.kind, update.target_seq), (ChangeKind::Delete, 2));
    let tombstone = tombstone.expect("the tombstone rides along");
    assert!(tombstone.deleted && tombstone.body == schemas::Body::default(), "{tombstone:?}");

    // History lists messages only, with their changes folded in; the changes' seqs are not listed.
    let page = system.api(0, "bob").history(&group, "").await?.messages;
    assert_eq!(page.iter().map(|message| message.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(page[0].body.text.as_deref(), Some("hello world"));
    assert!(page[1].deleted && page[1].body.text.is_none());
    let (_, raw) = alice_api.get(&format!("/v1/conversations/{group}/messages")).await?;
    assert!(!raw.to_string().contains("hunter2"), "the deleted body is gone from history: {raw}");
    assert!(raw["messages"][1].get("body").is_some_and(|body| body == &json!({})), "{raw}");

    // A device syncing after the delete: every entry, messages as they now stand, changes as frames.
    let mut tablet = system.connect_resuming(0, "bob", "tablet").await?;
    let frames = sync_frames(&mut tablet, json!({ group.clone(): 0 })).await?;
    assert!(!serde_json::to_string(&frames)?.contains("hunter2"), "nothing of the deleted body reaches a syncing device");
    let kinds: Vec<String> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { message } => Some(format!("message {} deleted={}", message.seq, message.deleted)),
            ServerFrame::MessageUpdated { update, .. } => Some(format!("update {} -> {}", update.seq, update.target_seq)),
            ServerFrame::Synced { cursors, .. } => Some(format!("synced {}", cursors[&group])),
            _ => None, // presence of the other members
        })
        .collect();
    assert_eq!(kinds, ["message 1 deleted=false", "message 2 deleted=true", "update 3 -> 1", "update 4 -> 2", "synced 4"]);
    // A device that held 1..2 gets the two changes with the messages they changed.
    let mut laptop = system.connect_resuming(0, "bob", "laptop").await?;
    let frames = sync_frames(&mut laptop, json!({ group.clone(): 2 })).await?;
    let updated: Vec<(u64, bool, Option<String>)> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::MessageUpdated { update, message: Some(message) } => Some((update.seq, message.deleted, message.body.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(updated, vec![(3, false, Some("hello world".to_owned())), (4, true, None)]);
    Ok(())
}

#[tokio::test]
async fn only_the_sender_edits_and_only_the_sender_or_owner_deletes() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let owner = system.api(0, "olga");
    let group = owner.create_group("rules", &["alice", "bob"]).await?.id;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    let mut mallory = system.connect(0, "mallory", "phone").await?;
    alice.send_text(&group, "a1", "alice's words").await?;
    bob.send_text(&group, "b1", "bob's words").await?;
    let edit = |client_msg_id: &str, seq: u64| json!({"type": "edit", "conversation_id": group, "client_msg_id": client_msg_id, "seq": seq, "body": {"text": "changed"}});
    let delete = |client_msg_id: &str, seq: u64| json!({"type": "delete", "conversation_id": group, "client_msg_id": client_msg_id, "seq": seq});

    assert_eq!(change(&mut bob, edit("x1", 1)).await?, Err(ErrorCode::Forbidden), "bob edits alice's message");
    assert_eq!(change(&mut bob, delete("x2", 1)).await?, Err(ErrorCode::Forbidden), "bob deletes alice's message");
    assert_eq!(change(&mut mallory, edit("x3", 1)).await?, Err(ErrorCode::Forbidden), "a non-member edits");
    assert_eq!(change(&mut mallory, delete("x4", 1)).await?, Err(ErrorCode::Forbidden), "a non-member deletes");
    assert_eq!(change(&mut alice, edit("x5", 9)).await?, Err(ErrorCode::NotFound), "no message 9");
    assert_eq!(change(&mut alice, edit("x6", 0)).await?, Err(ErrorCode::Invalid), "seq 0");
    let with_media = json!({"type": "edit", "conversation_id": group, "client_msg_id": "x7", "seq": 1, "body": {"media_id": "m1"}});
    assert_eq!(change(&mut alice, with_media).await?, Err(ErrorCode::Invalid), "an edit cannot swap media");
    let sealed = json!({"type": "edit", "conversation_id": group, "client_msg_id": "x8", "seq": 1, "body": {"ciphertext": "AAEC"}});
    assert_eq!(change(&mut alice, sealed).await?, Err(ErrorCode::Invalid), "ciphertext in a plaintext conversation");
    assert_eq!(history_seqs(&owner, &group).await?, vec![1, 2], "nothing refused was stored");

    assert_eq!(change(&mut alice, edit("a-edit", 1)).await?, Ok(3));
    assert_eq!(change(&mut alice, edit("a-edit-2", 3)).await?, Err(ErrorCode::Invalid), "an edit is not a message");
    let (status, body) = owner.request(Method::DELETE, &format!("/v1/conversations/{group}/messages/2"), None).await?;
    assert_eq!(status, StatusCode::CREATED, "the owner deletes bob's message: {body}");
    assert_eq!(change(&mut bob, edit("b-edit", 2)).await?, Err(ErrorCode::NotFound), "a deleted message cannot be edited");
    assert_eq!(change(&mut bob, delete("b-delete", 2)).await?, Err(ErrorCode::NotFound), "nor deleted twice");
    let react = json!({"type": "react", "conversation_id": group, "client_msg_id": "b-react", "seq": 2, "emoji": "👍"});
    assert_eq!(change(&mut bob, react).await?, Err(ErrorCode::NotFound), "nor reacted to");
    let page = owner.history(&group, "").await?;
    assert_eq!(page.messages[1].deleted_by.as_deref(), Some("olga"));
    Ok(())
}

#[tokio::test]
async fn an_edit_after_the_window_is_refused_but_a_resend_of_an_earlier_edit_is_answered() -> anyhow::Result<()> {
    let window = Duration::from_secs(2);
    let system = TestSystem::builder().gateway_config(|config| config.limits.edit_window = window).start().await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    let sent = alice.send_text_ok(&direct, "m1", "typo").await?;
    let patch = |client_msg_id: &str| (format!("/v1/conversations/{direct}/messages/1"), json!({"client_msg_id": client_msg_id, "body": {"text": "fixed"}}));
    let (path, body) = patch("e1");
    let (status, answer) = alice.request(Method::PATCH, &path, Some(body)).await?;
    assert_eq!((status, answer["seq"].as_u64()), (StatusCode::CREATED, Some(2)), "{answer}");

    // The rule under test is about time: let the window pass (this waits for no other task).
    let closes_at = sent.sent_at + window;
    let remaining = closes_at - time::OffsetDateTime::now_utc();
    if remaining.is_positive() {
        tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(50)).await;
    }
    let (path, body) = patch("e2");
    let (status, answer) = alice.request(Method::PATCH, &path, Some(body)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("edited for 2 s"), "{answer}");
    let (path, body) = patch("e1");
    let (status, answer) = alice.request(Method::PATCH, &path, Some(body)).await?;
    assert_eq!((status, answer["seq"].as_u64(), answer["duplicate"].as_bool()), (StatusCode::OK, Some(2), Some(true)), "the stored edit's resend: {answer}");
    Ok(())
}

#[tokio::test]
async fn a_page_short_of_messages_reads_past_the_changes() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let api = system.api(0, "alice");
    let direct = api.create_direct("bob").await?.id;
    for index in 1..=5 {
        alice.send_text(&direct, &format!("m{index}"), &format!("message {index}")).await?;
    }
    // Ten reactions after message 5 take seqs 6..=15.
    for index in 0..10 {
        let action = if index % 2 == 0 { "add" } else { "remove" };
        let react = json!({"type": "react", "conversation_id": direct, "client_msg_id": format!("r{index}"), "seq": 5, "emoji": "🎉", "action": action});
        assert_eq!(change(&mut alice, react).await?, Ok(6 + index));
    }
    let latest = api.history(&direct, "limit=3").await?;
    assert_eq!(latest.messages.iter().map(|message| message.seq).collect::<Vec<_>>(), vec![3, 4, 5], "three messages, not three reactions");
    assert!(latest.has_more);
    assert!(latest.messages[2].reactions.is_empty(), "added and removed five times: none left");
    let after = api.history(&direct, "after=4&limit=3").await?;
    assert_eq!((after.messages.iter().map(|message| message.seq).collect::<Vec<_>>(), after.has_more), (vec![5], false));
    Ok(())
}

#[tokio::test]
async fn the_inbox_shows_the_last_message_as_it_now_stands_not_a_change() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice_api = system.api(0, "alice");
    let direct = alice_api.create_direct("bob").await?.id;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    alice.send_text(&direct, "m1", "first").await?;
    alice.send_text(&direct, "m2", "meet at the old mill").await?;
    let react = json!({"type": "react", "conversation_id": direct, "client_msg_id": "r1", "seq": 1, "emoji": "👍"});
    assert_eq!(change(&mut bob, react).await?, Ok(3));
    let inbox = |api: Api| async move {
        let (status, body) = api.get("/v1/conversations").await?;
        anyhow::ensure!(status == StatusCode::OK, "inbox: {status} {body}");
        Ok::<Value, anyhow::Error>(body["conversations"][0]["last_message"].clone())
    };
    let last = inbox(alice_api.clone()).await?;
    assert_eq!((last["seq"].as_u64(), last["body"]["text"].as_str()), (Some(2), Some("meet at the old mill")), "a reaction is not the last message: {last}");

    assert_eq!(change(&mut alice, json!({"type": "delete", "conversation_id": direct, "client_msg_id": "d1", "seq": 2})).await?, Ok(4));
    let last = inbox(system.api(0, "bob")).await?;
    assert_eq!((last["seq"].as_u64(), last["deleted"].as_bool()), (Some(2), Some(true)), "{last}");
    assert!(!last.to_string().contains("old mill"), "the inbox shows a tombstone: {last}");
    Ok(())
}
