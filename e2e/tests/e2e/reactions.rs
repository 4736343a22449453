//! Reactions over real sockets: one per user and emoji under concurrent clicks from two devices on two gateways, and end-to-end encrypted changes the server does not fold.

use std::collections::HashMap;
use std::time::Duration;

use schemas::{ChangeKind, ErrorCode, Message, ReactionSummary, ServerFrame};
use serde_json::{json, Value};
use testkit::{TestSystem, WsClient};

use crate::message_changes::{change, update_with_seq};

const WAIT: Duration = Duration::from_secs(10);

fn react(conversation: &str, client_msg_id: &str, seq: u64, action: &str) -> Value {
    json!({"type": "react", "conversation_id": conversation, "client_msg_id": client_msg_id, "seq": seq, "emoji": "👍", "action": action})
}

fn thumbs(message: &Message) -> Option<&ReactionSummary> {
    message.reactions.iter().find(|reaction| reaction.emoji == "👍")
}

/// Clicks on two devices at once; returns both acks' seqs.
async fn click_both(phone: &mut WsClient, tablet: &mut WsClient, conversation: &str, label: &str, seq: u64, actions: [&str; 2]) -> anyhow::Result<[u64; 2]> {
    let (first, second) = tokio::join!(
        change(phone, react(conversation, &format!("{label}-phone"), seq, actions[0])),
        change(tablet, react(conversation, &format!("{label}-tablet"), seq, actions[1])),
    );
    match (first?, second?) {
        (Ok(first), Ok(second)) => Ok([first, second]),
        refused => anyhow::bail!("a click was refused: {refused:?}"),
    }
}

#[tokio::test]
async fn concurrent_clicks_from_two_devices_leave_exactly_one_reaction_or_none() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateways(2).start().await?;
    let alice_api = system.api(0, "alice");
    let group = alice_api.create_group("clicks", &["bob"]).await?.id;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut phone = system.connect(0, "bob", "phone").await?;
    let mut tablet = system.connect(1, "bob", "tablet").await?;
    // Alice's screen: the newest view of each message, by revision, as the frames bring them.
    let mut alice_view: HashMap<u64, Message> = HashMap::new();
    let mut last_change = 0;

    for round in 0..8u64 {
        let message_seq = alice.send_text(&group, &format!("m{round}"), &format!("round {round}")).await?.0;
        let both_add = click_both(&mut phone, &mut tablet, &group, &format!("add{round}"), message_seq, ["add", "add"]).await?;
        let page = system.api(0, "bob").history(&group, &format!("after={}&limit=1", message_seq - 1)).await?;
        assert_eq!(thumbs(&page.messages[0]), Some(&ReactionSummary { emoji: "👍".into(), count: 1, me: true }), "round {round}: two adds, one reaction");
        let seen_by_alice = alice_api.history(&group, &format!("after={}&limit=1", message_seq - 1)).await?;
        assert_eq!(thumbs(&seen_by_alice.messages[0]).map(|reaction| (reaction.count, reaction.me)), Some((1, false)));

        click_both(&mut phone, &mut tablet, &group, &format!("remove{round}"), message_seq, ["remove", "remove"]).await?;
        let page = alice_api.history(&group, &format!("after={}&limit=1", message_seq - 1)).await?;
        assert!(page.messages[0].reactions.is_empty(), "round {round}: two removes, none left");

        // An add racing a remove: whichever the log took last decides, on every read path.
        let [add_seq, remove_seq] = click_both(&mut phone, &mut tablet, &group, &format!("mixed{round}"), message_seq, ["add", "remove"]).await?;
        let expected = (add_seq > remove_seq).then_some(1);
        let page = alice_api.history(&group, &format!("after={}&limit=1", message_seq - 1)).await?;
        assert_eq!(thumbs(&page.messages[0]).map(|reaction| reaction.count), expected, "round {round}: add {add_seq}, remove {remove_seq}");
        last_change = last_change.max(add_seq).max(remove_seq).max(both_add[0]).max(both_add[1]);
        for seq in message_seq + 1..=last_change {
            let (update, message) = update_with_seq(&mut alice, seq).await?;
            assert_eq!(update.kind, ChangeKind::Reaction);
            let message = message.expect("the message reacted to");
            let newer = alice_view.get(&message.seq).is_none_or(|held| held.revision < message.revision);
            if newer {
                alice_view.insert(message.seq, message);
            }
        }
        assert_eq!(alice_view.get(&message_seq), Some(&page.messages[0]), "round {round}: the newest frame is what history says");
    }
    Ok(())
}

#[tokio::test]
async fn the_same_click_twice_changes_nothing_and_emojis_are_checked() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let api = system.api(0, "alice");
    let direct = api.create_direct("bob").await?.id;
    let mut bob = system.connect(0, "bob", "phone").await?;
    bob.send_text(&direct, "m1", "hi").await?;
    assert_eq!(change(&mut bob, react(&direct, "r1", 1, "add")).await?, Ok(2));
    assert_eq!(change(&mut bob, react(&direct, "r1", 1, "add")).await?, Ok(2), "a resend is the same reaction");
    assert_eq!(change(&mut bob, react(&direct, "r2", 1, "add")).await?, Ok(3), "a second click is stored and changes nothing");
    let page = api.history(&direct, "").await?;
    assert_eq!(page.messages[0].reactions, vec![ReactionSummary { emoji: "👍".into(), count: 1, me: false }]);
    for emoji in [json!(""), json!("two words"), json!("\u{7}"), json!("x".repeat(65)), json!(7)] {
        let frame = json!({"type": "react", "conversation_id": direct, "client_msg_id": "bad", "seq": 1, "emoji": emoji});
        assert_eq!(change(&mut bob, frame).await?, Err(ErrorCode::Invalid), "emoji {emoji}");
    }
    let neither = json!({"type": "react", "conversation_id": direct, "client_msg_id": "bad", "seq": 1});
    assert_eq!(change(&mut bob, neither).await?, Err(ErrorCode::Invalid));
    let (status, body) = api.post(&format!("/v1/conversations/{direct}/messages/1/reactions"), json!({"client_msg_id": "h1", "emoji": "🎉"})).await?;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let page = api.history(&direct, "").await?;
    let emojis: Vec<(&str, u64, bool)> = page.messages[0].reactions.iter().map(|reaction| (reaction.emoji.as_str(), reaction.count, reaction.me)).collect();
    assert_eq!(emojis, vec![("👍", 1, false), ("🎉", 1, true)], "in the order they were first put on");
    Ok(())
}

#[tokio::test]
async fn encrypted_edits_and_reactions_carry_ciphertext_and_are_not_folded() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice_api = system.api(0, "alice");
    let (status, group) = alice_api.post("/v1/conversations", json!({"kind": "group", "title": "sealed", "members": ["bob"], "encrypted": true})).await?;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{group}");
    let group = group["id"].as_str().expect("an id").to_owned();
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    let send = json!({"type": "send", "id": "s1", "conversation_id": group, "client_msg_id": "m1", "body": {"ciphertext": "b3JpZ2luYWw="}});
    alice.send_json(send).await?;
    alice.reply_to("s1", WAIT).await?;

    let plain_edit = json!({"type": "edit", "conversation_id": group, "client_msg_id": "e0", "seq": 1, "body": {"text": "readable"}});
    assert_eq!(change(&mut alice, plain_edit).await?, Err(ErrorCode::Invalid), "plaintext edit in an encrypted conversation");
    assert_eq!(change(&mut bob, react(&group, "r0", 1, "add")).await?, Err(ErrorCode::Invalid), "a readable emoji in an encrypted conversation");
    let edit = json!({"type": "edit", "conversation_id": group, "client_msg_id": "e1", "seq": 1, "body": {"ciphertext": "ZWRpdGVk"}});
    assert_eq!(change(&mut alice, edit).await?, Ok(2));
    let sealed_reaction = json!({"type": "react", "conversation_id": group, "client_msg_id": "r1", "seq": 1, "body": {"ciphertext": "8J+RjQ=="}});
    assert_eq!(change(&mut bob, sealed_reaction).await?, Ok(3));

    let (update, message) = update_with_seq(&mut bob, 2).await?;
    assert_eq!(update.body.and_then(|body| body.ciphertext).as_deref(), Some("ZWRpdGVk"), "the edit travels as ciphertext");
    let message = message.expect("the message");
    assert_eq!((message.body.ciphertext.as_deref(), message.edited_at), (Some("b3JpZ2luYWw="), None), "the server folded nothing");
    let page = alice_api.history(&group, "").await?;
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].body.ciphertext.as_deref(), Some("b3JpZ2luYWw="));
    let listed: Vec<(u64, ChangeKind)> = page.updates.iter().map(|update| (update.seq, update.kind)).collect();
    assert_eq!(listed, vec![(2, ChangeKind::Edit), (3, ChangeKind::Reaction)], "history lists what the client must fold");

    // A delete is metadata: the server does fold it, removing the ciphertext too.
    let delete = json!({"type": "delete", "conversation_id": group, "client_msg_id": "d1", "seq": 1});
    assert_eq!(change(&mut alice, delete).await?, Ok(4));
    let page = alice_api.history(&group, "").await?;
    assert!(page.messages[0].deleted && page.messages[0].body.ciphertext.is_none());
    let frames = bob.frames_until(WAIT, |frame| matches!(frame, ServerFrame::MessageUpdated { update, .. } if update.seq == 4)).await?;
    assert!(matches!(frames.last(), Some(ServerFrame::MessageUpdated { message: Some(message), .. }) if message.deleted));
    Ok(())
}
