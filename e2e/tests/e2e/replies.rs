//! Replies and threads: `reply_to` over both send paths and in every read path, its validation, and thread listing.

use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use schemas::{ErrorCode, HistoryPage, Message, ServerFrame};
use serde_json::{json, Value};
use testkit::{Api, TestSystem};

const WAIT: Duration = Duration::from_secs(10);

async fn post_reply(api: &Api, conversation: &str, client_msg_id: &str, reply_to: Value) -> anyhow::Result<(StatusCode, Value)> {
    api.post("/v1/messages", json!({"conversation_id": conversation, "client_msg_id": client_msg_id, "body": {"text": "re"}, "reply_to": reply_to})).await
}

async fn thread(api: &Api, conversation: &str, parent: u64, query: &str) -> anyhow::Result<HistoryPage> {
    let (status, body) = api.get(&format!("/v1/conversations/{conversation}/messages/{parent}/replies?{query}")).await?;
    anyhow::ensure!(status == StatusCode::OK, "thread: {status} {body}");
    Ok(serde_json::from_value(body)?)
}

fn replies_of(messages: &[Message]) -> Vec<(u64, Option<u64>)> {
    messages.iter().map(|message| (message.seq, message.reply_to)).collect()
}

#[tokio::test]
async fn reply_to_travels_over_both_send_paths_into_frames_history_and_sync() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("threads", &["bob"]).await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    alice.send_text_ok(&group.id, "parent", "what's for lunch?").await?;
    let (status, reply) = post_reply(&alice, &group.id, "http-reply", json!(1)).await?;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["seq"], 2);
    bob.send_json(json!({"type": "send", "id": "s1", "conversation_id": group.id, "client_msg_id": "ws-reply", "body": {"text": "soup"}, "reply_to": 1})).await?;
    match bob.reply_to("s1", WAIT).await? {
        ServerFrame::Ack { seq, .. } => assert_eq!(seq, 3),
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }

    let expected = vec![(1, None), (2, Some(1)), (3, Some(1))];
    assert_eq!(replies_of(&bob.messages_until(&group.id, 3, WAIT).await?), expected, "live message frames");
    assert_eq!(replies_of(&alice.history(&group.id, "").await?.messages), expected, "history");
    let mut tablet = system.connect_resuming(0, "bob", "tablet").await?;
    let (synced, _) = tablet.sync(json!({ group.id.clone(): 0 })).await?;
    assert_eq!(replies_of(&synced), expected, "sync");
    // Additive: a plain message has no `reply_to` key at all.
    let (_, raw) = alice.get(&format!("/v1/conversations/{}/messages", group.id)).await?;
    assert!(raw["messages"][0].get("reply_to").is_none(), "{raw}");
    assert_eq!(raw["messages"][1]["reply_to"], 1);
    Ok(())
}

#[tokio::test]
async fn an_encrypted_conversation_takes_replies_too() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let (status, group) = alice.post("/v1/conversations", json!({"kind":"group","title":"sealed","members":["bob"],"encrypted":true})).await?;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_id = group["id"].as_str().expect("an id").to_owned();
    let sealed = |client_msg_id: &str, reply_to: Option<u64>| json!({"conversation_id": group_id, "client_msg_id": client_msg_id, "body": {"ciphertext": "b64:AAEC"}, "reply_to": reply_to});
    assert_eq!(alice.post("/v1/messages", sealed("e1", None)).await?.0, StatusCode::CREATED);
    let (status, reply) = alice.post("/v1/messages", sealed("e2", Some(1))).await?;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(replies_of(&thread(&alice, &group_id, 1, "").await?.messages), vec![(2, Some(1))]);
    Ok(())
}

#[tokio::test]
async fn an_invalid_reply_to_is_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("strict", &["bob"]).await?;
    alice.send_text_ok(&group.id, "only", "the only message").await?;

    for (client_msg_id, reply_to) in [("zero", json!(0)), ("beyond", json!(2)), ("far", json!(u64::MAX)), ("word", json!("one")), ("negative", json!(-1))] {
        let (status, body) = post_reply(&alice, &group.id, client_msg_id, reply_to.clone()).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "reply_to {reply_to}: {body}");
        assert_eq!(body["error"]["code"], "invalid", "reply_to {reply_to}: {body}");
    }
    let mut socket = system.connect(0, "alice", "phone").await?;
    for (id, reply_to) in [("w0", json!(0)), ("w2", json!(2)), ("wx", json!("one"))] {
        socket.send_json(json!({"type": "send", "id": id, "conversation_id": group.id, "client_msg_id": id, "body": {"text": "re"}, "reply_to": reply_to})).await?;
        match socket.reply_to(id, WAIT).await? {
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Invalid, "reply_to {reply_to}"),
            other => anyhow::bail!("reply_to {reply_to}: expected an error, got {other:?}"),
        }
    }
    assert_eq!(alice.history(&group.id, "").await?.messages.len(), 1, "a refused reply stores nothing");
    assert_eq!(alice.send_text_ok(&group.id, "next", "and on").await?.seq, 2, "the log goes on gapless");

    let (status, body) = post_reply(&system.api(0, "mallory"), &group.id, "intruder", json!(1)).await?;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_thread_lists_exactly_its_replies_in_order_with_paging() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let group = alice.create_group("busy", &["bob"]).await?;
    alice.send_text_ok(&group.id, "first", "parent one").await?;
    bob.send_text_ok(&group.id, "second", "parent two").await?;
    // Interleaved: replies to 1 and to 2 and plain messages, past seq 10 so text order would differ from seq order.
    let mut thread_one = Vec::new();
    let mut thread_two = Vec::new();
    for index in 0..12u64 {
        let (api, client_msg_id) = if index % 2 == 0 { (&alice, format!("a{index}")) } else { (&bob, format!("b{index}")) };
        let (status, ack) = post_reply(api, &group.id, &client_msg_id, json!(1)).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "{ack}");
        thread_one.push(ack["seq"].as_u64().expect("a seq"));
        let (status, ack) = post_reply(api, &group.id, &format!("{client_msg_id}-two"), json!(2)).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "{ack}");
        thread_two.push(ack["seq"].as_u64().expect("a seq"));
        alice.send_text_ok(&group.id, &format!("plain{index}"), "aside").await?;
    }

    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let page = thread(&bob, &group.id, 1, &format!("after={after}&limit=5")).await?;
        assert!(page.messages.iter().all(|message| message.reply_to == Some(1)));
        listed.extend(page.messages.iter().map(|message| message.seq));
        after = *listed.last().expect("a page is never empty while more follow");
        if !page.has_more {
            break;
        }
    }
    assert_eq!(listed, thread_one);
    let whole = thread(&alice, &group.id, 2, "").await?;
    assert_eq!(whole.messages.iter().map(|message| message.seq).collect::<Vec<_>>(), thread_two);
    assert!(!whole.has_more);
    assert!(thread(&alice, &group.id, 3, "").await?.messages.is_empty(), "a message without replies has an empty thread");

    let (status, body) = system.api(0, "mallory").get(&format!("/v1/conversations/{}/messages/1/replies", group.id)).await?;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")), "{body}");
    for bad in ["0/replies", "x/replies", "-1/replies", "1/replies?limit=0", "1/replies?limit=201", "1/replies?after=x"] {
        let (status, body) = alice.get(&format!("/v1/conversations/{}/messages/{bad}", group.id)).await?;
        assert_eq!((status, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid")), "{bad}: {body}");
    }
    let (status, body) = alice.get("/v1/conversations/not.an.id/messages/1/replies").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_resent_reply_is_stored_once_and_repairs_its_thread_entry() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("flaky", &["bob"]).await?;
    alice.send_text_ok(&group.id, "parent", "question").await?;
    let (status, first) = post_reply(&alice, &group.id, "answer", json!(1)).await?;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = post_reply(&alice, &group.id, "answer", json!(1)).await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(replies_of(&thread(&alice, &group.id, 1, "").await?.messages), vec![(2, Some(1))], "one thread entry");

    // As if the thread entry's put had failed beside the other records: a resend writes it again.
    let jetstream = jetstream::new(system.connect_nats().await?);
    let threads = jetstream.get_key_value(subjects::THREAD_INDEX_BUCKET).await?;
    threads.purge(subjects::thread_index_key(&subjects::Id::parse(&group.id)?, 1, 2)).await?;
    assert!(thread(&alice, &group.id, 1, "").await?.messages.is_empty());
    let (status, repaired) = post_reply(&alice, &group.id, "answer", json!(1)).await?;
    assert_eq!(status, StatusCode::OK, "{repaired}");
    assert_eq!(replies_of(&thread(&alice, &group.id, 1, "").await?.messages), vec![(2, Some(1))], "the resend repaired the thread");
    assert_eq!(alice.history(&group.id, "").await?.messages.len(), 2, "nothing stored twice");
    Ok(())
}
