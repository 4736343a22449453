//! Mentions: `@id` parsed on send into `mentions`, pushes through a mute but not do-not-disturb, the inbox's unread-mention count, and client-named mentions for ciphertext.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use schemas::push_providers::{ApnsPayload, FcmSendRequest};
use schemas::{Message, ServerFrame};
use serde_json::{json, Value};
use subjects::Id;
use testkit::push_standins::{self, StandIn};
use testkit::{Api, TestSystem};

const WAIT: Duration = Duration::from_secs(20);
const SERVICE_ACCOUNT: &str = "natter-push@natter-test.iam.gserviceaccount.com";
const APNS_KEY_ID: &str = "KEY1234567";
const APNS_TEAM_ID: &str = "TEAM123456";
const BOB_APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn mentions_of(messages: &[Message]) -> Vec<(u64, Vec<String>)> {
    messages.iter().map(|message| (message.seq, message.mentions.clone())).collect()
}

fn an_hour_from_now() -> anyhow::Result<String> {
    Ok((time::OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339)?)
}

/// The caller's inbox entry for `conversation`: (`unread`, `unread_mentions`).
async fn inbox_counts(api: &Api, conversation: &str) -> anyhow::Result<(u64, u64)> {
    let (status, inbox) = api.get("/v1/conversations").await?;
    anyhow::ensure!(status == StatusCode::OK, "inbox: {status} {inbox}");
    let entry = inbox["conversations"].as_array().into_iter().flatten().find(|entry| entry["id"] == conversation);
    let entry = entry.ok_or_else(|| anyhow::anyhow!("{conversation} is not in the inbox: {inbox}"))?;
    Ok((entry["unread"].as_u64().unwrap_or(u64::MAX), entry["unread_mentions"].as_u64().unwrap_or(u64::MAX)))
}

async fn read_up_to(api: &Api, conversation: &str, seq: u64) -> anyhow::Result<()> {
    let (status, body) = api.post("/v1/receipts", json!({"conversation_id": conversation, "seq": seq, "kind": "read"})).await?;
    anyhow::ensure!(status == StatusCode::NO_CONTENT, "read: {status} {body}");
    Ok(())
}

#[tokio::test]
async fn at_mentions_of_members_travel_in_frames_history_and_sync() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("mentions", &["bob", "carol"]).await?.id;
    let mut bob = system.connect(0, "bob", "phone").await?;
    bob.ping().await?;

    // A non-member, the sender herself, an e-mail address and a repeat are not mentions.
    alice.send_text_ok(&group, "m1", "@bob hi, @mallory and @alice; mail x@carol.com or (@bob)").await?;
    alice.send_text_ok(&group, "m2", "no one in particular").await?;
    bob.send_json(json!({"type": "send", "id": "s3", "conversation_id": group, "client_msg_id": "m3", "body": {"text": "@carol @alice @carol!"}})).await?;
    match bob.reply_to("s3", WAIT).await? {
        ServerFrame::Ack { seq, .. } => assert_eq!(seq, 3),
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }

    let expected = vec![(1, vec!["bob".to_owned()]), (2, vec![]), (3, vec!["carol".to_owned(), "alice".to_owned()])];
    assert_eq!(mentions_of(&bob.messages_until(&group, 3, WAIT).await?), expected, "live message frames");
    assert_eq!(mentions_of(&alice.history(&group, "").await?.messages), expected, "history");
    let mut tablet = system.connect_resuming(0, "carol", "tablet").await?;
    let (synced, _) = tablet.sync(json!({ group.clone(): 0 })).await?;
    assert_eq!(mentions_of(&synced), expected, "sync");
    // Additive: a message without mentions has no `mentions` key at all.
    let (_, raw) = alice.get(&format!("/v1/conversations/{group}/messages")).await?;
    assert_eq!(raw["messages"][0]["mentions"], json!(["bob"]), "{raw}");
    assert!(raw["messages"][1].get("mentions").is_none(), "{raw}");

    // Mentions of a readable text are the server's to find: a client list beside one is refused, and nothing is stored.
    let named = json!({"conversation_id": group, "client_msg_id": "m5", "body": {"text": "hi"}, "mentions": ["bob"]});
    let (status, answer) = alice.post("/v1/messages", named).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{answer}");
    assert_eq!(alice.history(&group, "").await?.messages.len(), 3);
    Ok(())
}

#[tokio::test]
async fn the_inbox_counts_unread_mentions_until_they_are_read() -> anyhow::Result<()> {
    // On its own NATS user the gateway writes, lists and purges mention keys: the permissions hold.
    let system = TestSystem::builder().with_role_users().start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let group = alice.create_group("counts", &["bob", "carol"]).await?.id;
    alice.send_text_ok(&group, "m1", "@bob first").await?;
    alice.send_text_ok(&group, "m2", "between").await?;
    alice.send_text_ok(&group, "m3", "@bob @carol second").await?;

    assert_eq!(inbox_counts(&bob, &group).await?, (3, 2));
    assert_eq!(inbox_counts(&system.api(0, "carol"), &group).await?, (3, 1));
    assert_eq!(inbox_counts(&alice, &group).await?, (0, 0), "the sender mentioned no one of her own messages");

    read_up_to(&bob, &group, 1).await?;
    assert_eq!(inbox_counts(&bob, &group).await?, (2, 1));
    let nats = system.connect_role(subjects::permissions::Role::Gateway).await?;
    let mentions = async_nats::jetstream::new(nats).get_key_value(subjects::MENTIONS_BUCKET).await?;
    let (bob_id, group_id) = (Id::parse("bob")?, Id::parse(&group)?);
    assert_eq!(mentions.get(subjects::mention_key(&bob_id, &group_id, 1)).await?, None, "a read mention is purged");
    assert!(mentions.get(subjects::mention_key(&bob_id, &group_id, 3)).await?.is_some());

    // A resend of a mention repairs a lost key, like the history index.
    mentions.purge(subjects::mention_key(&bob_id, &group_id, 3)).await?;
    assert_eq!(inbox_counts(&bob, &group).await?, (2, 0));
    let (status, _) = alice.send_text(&group, "m3", "@bob @carol second").await?;
    assert_eq!(status, StatusCode::OK, "a resend");
    assert_eq!(inbox_counts(&bob, &group).await?, (2, 1));

    read_up_to(&bob, &group, 3).await?;
    assert_eq!(inbox_counts(&bob, &group).await?, (0, 0));
    assert_eq!(mentions.get(subjects::mention_key(&bob_id, &group_id, 3)).await?, None);

    // Sending moves the sender's watermark without a read receipt: the inbox finds the stale key and purges it.
    alice.send_text_ok(&group, "m4", "@bob again").await?;
    assert_eq!(inbox_counts(&bob, &group).await?, (1, 1));
    bob.send_text_ok(&group, "b1", "seen it").await?;
    assert_eq!(inbox_counts(&bob, &group).await?, (0, 0));
    assert_eq!(mentions.get(subjects::mention_key(&bob_id, &group_id, 4)).await?, None, "purged by the inbox listing");
    Ok(())
}

#[tokio::test]
async fn an_encrypted_conversation_takes_mentions_named_by_the_sender() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let (status, group) = alice.post("/v1/conversations", json!({"kind": "group", "title": "sealed", "members": ["bob", "carol"], "encrypted": true})).await?;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group = group["id"].as_str().expect("an id").to_owned();
    let sealed = |client_msg_id: &str, mentions: Value| json!({"conversation_id": group, "client_msg_id": client_msg_id, "body": {"ciphertext": "b64:QGJvYg=="}, "mentions": mentions});
    let mut carol = system.connect(0, "carol", "phone").await?;
    carol.ping().await?;

    let (status, answer) = alice.post("/v1/messages", sealed("e1", json!(["bob", "mallory", "alice", "bob"]))).await?;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let too_many: Vec<String> = (0..51).map(|index| format!("u{index}")).collect();
    for (client_msg_id, mentions) in [("bad-id", json!(["not an id"])), ("too-many", json!(too_many)), ("not-a-list", json!("bob"))] {
        let (status, answer) = alice.post("/v1/messages", sealed(client_msg_id, mentions.clone())).await?;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{mentions}: {answer}");
    }
    carol.send_json(json!({"type": "send", "id": "s2", "conversation_id": group, "client_msg_id": "e2", "body": {"ciphertext": "b64:QGFsaWNl"}, "mentions": ["alice"]})).await?;
    match carol.reply_to("s2", WAIT).await? {
        ServerFrame::Ack { seq, .. } => assert_eq!(seq, 2),
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }
    let expected = vec![(1, vec!["bob".to_owned()]), (2, vec!["alice".to_owned()])];
    assert_eq!(mentions_of(&carol.messages_until(&group, 2, WAIT).await?), expected, "live message frames");
    assert_eq!(mentions_of(&alice.history(&group, "").await?.messages), expected, "history");
    assert_eq!(inbox_counts(&system.api(0, "bob"), &group).await?, (2, 1));
    assert_eq!(inbox_counts(&alice, &group).await?, (1, 1));
    Ok(())
}

struct StandIns {
    fcm: StandIn,
    apns: StandIn,
}

/// A system whose push worker talks to FCM and APNs stand-ins, with a short coalescing window.
async fn start_with_push() -> anyhow::Result<(TestSystem, StandIns)> {
    let stand_ins = StandIns { fcm: push_standins::start_fcm(SERVICE_ACCOUNT).await?, apns: push_standins::start_apns(APNS_KEY_ID, APNS_TEAM_ID).await? };
    let fcm = push_standins::fcm_settings(&stand_ins.fcm, SERVICE_ACCOUNT);
    let apns = push_standins::apns_settings(&stand_ins.apns, APNS_KEY_ID, APNS_TEAM_ID, "chat.natter.app");
    // Role users: the push worker may read the mentions it counts into the notification.
    let system = TestSystem::builder()
        .with_role_users()
        .with_push(|config| {
            config.fcm = Some(fcm);
            config.apns = Some(apns);
            config.coalesce_window = Duration::from_millis(300);
        })
        .start()
        .await?;
    Ok((system, stand_ins))
}

#[tokio::test]
async fn a_mention_in_a_muted_conversation_pushes_once_but_never_during_do_not_disturb() -> anyhow::Result<()> {
    let (system, stand_ins) = start_with_push().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let group = alice.create_group("muted", &["bob", "carol"]).await?.id;
    for (device, body) in [("phone", json!({"provider": "fcm", "token": "bob-phone-token"})), ("tablet", json!({"provider": "apns", "token": BOB_APNS_TOKEN}))] {
        let (status, answer) = bob.post(&format!("/v1/devices/{device}/push"), body).await?;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    }
    let (status, answer) = bob.request(Method::PUT, &format!("/v1/conversations/{group}/settings"), Some(json!({"muted_until": an_hour_from_now()?}))).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pushes = || stand_ins.fcm.requests().len() + stand_ins.apns.requests().len();

    alice.send_text_ok(&group, "plain-1", "muted chatter").await?;
    system.wait_until_push_settled(WAIT).await?;
    assert_eq!(pushes(), 0, "a muted conversation's plain message pushes nothing");

    alice.send_text_ok(&group, "mention", "@bob your turn").await?;
    let both = || async { stand_ins.fcm.requests().len() >= 1 && stand_ins.apns.requests().len() >= 1 };
    testkit::wait_until("the mention reaches both of bob's devices", WAIT, both).await?;
    system.wait_until_push_settled(WAIT).await?;
    let fcm_requests = stand_ins.fcm.requests();
    assert_eq!(fcm_requests.len(), 1, "one push per device: {fcm_requests:?}");
    let message = serde_json::from_slice::<FcmSendRequest>(&fcm_requests[0].body)?.message;
    assert_eq!(message.token, "bob-phone-token");
    assert_eq!((message.data.get("count").map(String::as_str), message.data.get("mentions").map(String::as_str)), (Some("2"), Some("1")), "{:?}", message.data);
    let apns_requests = stand_ins.apns.requests();
    assert_eq!(apns_requests.len(), 1, "{apns_requests:?}");
    let payload: ApnsPayload = serde_json::from_slice(&apns_requests[0].body)?;
    assert_eq!((payload.notification.count, payload.notification.mentions), (2, 1));
    assert_eq!(payload.aps.alert.body, "You were mentioned", "the content-free alert says why it came through a mute");

    alice.send_text_ok(&group, "plain-2", "more muted chatter").await?;
    system.wait_until_push_settled(WAIT).await?;
    assert_eq!(pushes(), 2, "the mute still holds for plain messages");

    let (status, answer) = bob.request(Method::PUT, "/v1/settings/notifications", Some(json!({"do_not_disturb_until": an_hour_from_now()?}))).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    alice.send_text_ok(&group, "mention-dnd", "@bob are you there?").await?;
    system.wait_until_push_settled(WAIT).await?;
    assert_eq!(pushes(), 2, "do-not-disturb silences mentions too");
    assert_eq!(inbox_counts(&bob, &group).await?, (4, 2), "still counted as unread mentions");
    Ok(())
}
