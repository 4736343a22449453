//! Multicast for large groups over real sockets: a 2,000-member group gets one publish per message, every connected member sees each message once and in order on two gateways (on one server, and on a 3-node cluster with three log shards), and interest follows who is connected and who is a member.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use schemas::ServerFrame;
use serde_json::json;
use testkit::{Api, TestSystem, WsClient};

use crate::message_changes::{change, update_with_seq};

const WAIT: Duration = Duration::from_secs(20);
const GROUP_SIZE: usize = 2_000;
const MESSAGES: u64 = 20;

fn member(index: usize) -> String {
    format!("m{index:04}")
}

/// A group of `alice` and `GROUP_SIZE - 1` others: 999 named at creation over HTTP (the most a
/// creation takes; 1,000 members reach the threshold, so the group is flagged then), the rest
/// written straight into the membership buckets as `Conversations::put_member` writes them. Adding
/// them one by one over HTTP took a minute, each add answering with the whole member list.
async fn large_group(system: &TestSystem, alice: &Api) -> anyhow::Result<String> {
    let named: Vec<String> = (1..1000).map(member).collect();
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    let group = alice.create_group("everyone", &named).await?.id;
    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    let members = jetstream.get_key_value(subjects::MEMBERS_BUCKET).await?;
    let memberships = jetstream.get_key_value(subjects::MEMBERSHIPS_BUCKET).await?;
    let conversation = subjects::Id::parse(&group)?;
    let record = schemas::MemberRecord { v: 1, role: schemas::Role::Member, joined_at: time::OffsetDateTime::now_utc() }.to_bytes();
    let writes = futures::stream::iter(1000..GROUP_SIZE)
        .map(|index| {
            let (members, memberships, conversation, record) = (members.clone(), memberships.clone(), conversation.clone(), record.clone());
            async move {
                let user = subjects::Id::parse(&member(index))?;
                members.put(subjects::member_key(&conversation, &user), record.clone().into()).await?;
                memberships.put(subjects::membership_key(&user, &conversation), record.into()).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    writes.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(group)
}

fn seqs_of(messages: &[schemas::Message]) -> Vec<u64> {
    messages.iter().map(|message| message.seq).collect()
}

#[tokio::test]
async fn a_2000_member_group_gets_one_publish_per_message_and_every_member_here_sees_each_once_in_order() -> anyhow::Result<()> {
    // No grace: the group is flagged at creation, long before anyone connects, so nothing needs the per-member path.
    let system = TestSystem::builder().gateways(2).fanout_config(|config| config.multicast_grace = Duration::ZERO).start().await?;
    one_publish_per_message_reaches_every_member_once_in_order(&system).await
}

#[tokio::test]
async fn on_a_3_node_cluster_with_3_shards_a_2000_member_group_still_gets_one_publish_per_message() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .on_nats_cluster()
        .message_shards(3)
        .gateways(2)
        .fanout_config(|config| config.multicast_grace = Duration::ZERO)
        .start()
        .await?;
    one_publish_per_message_reaches_every_member_once_in_order(&system).await
}

async fn one_publish_per_message_reaches_every_member_once_in_order(system: &TestSystem) -> anyhow::Result<()> {
    let alice = system.api(0, "alice");
    let group = large_group(system, &alice).await?;
    let (status, described) = alice.get(&format!("/v1/conversations/{group}")).await?;
    assert_eq!((status, described["members"].as_array().map(Vec::len)), (StatusCode::OK, Some(GROUP_SIZE)));

    // Forty members connected, half on each gateway, and the sender's own phone.
    let mut devices: Vec<(String, WsClient)> = Vec::new();
    for index in 1..=40 {
        devices.push((member(index), system.connect(index % 2, &member(index), "phone").await?));
    }
    let mut alice_phone = system.connect(1, "alice", "phone").await?;
    let metrics = telemetry::fanout_metrics();
    let (multicast_before, per_user_before) = (metrics.publishes("multicast"), metrics.publishes("per_user"));

    for index in 1..=MESSAGES {
        alice.send_text_ok(&group, &format!("c{index}"), &format!("to everyone {index}")).await?;
    }
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    for (user, device) in devices.iter_mut() {
        assert_eq!(seqs_of(&device.messages_until(&group, MESSAGES, WAIT).await?), expected, "{user}: each once, in order");
    }
    assert_eq!(seqs_of(&alice_phone.messages_until(&group, MESSAGES, WAIT).await?), expected, "the sender's own device");
    assert_eq!(metrics.publishes("multicast") - multicast_before, MESSAGES, "one publish per message");
    assert_eq!(metrics.publishes("per_user") - per_user_before, 0, "none per member");

    // Reactions' `me` is each member's own although the frame was published once.
    let (reactor, watcher) = devices.split_at_mut(1);
    let react = json!({"type": "react", "conversation_id": group, "client_msg_id": "r1", "seq": 1, "emoji": "🎉"});
    let reaction_seq = change(&mut reactor[0].1, react).await?.map_err(|code| anyhow::anyhow!("react refused: {code:?}"))?;
    let (_, mine) = update_with_seq(&mut reactor[0].1, reaction_seq).await?;
    let (_, theirs) = update_with_seq(&mut watcher[0].1, reaction_seq).await?;
    let me = |message: Option<schemas::Message>| message.and_then(|message| message.reactions.first().map(|reaction| (reaction.count, reaction.me)));
    assert_eq!((me(mine), me(theirs)), (Some((1, true)), Some((1, false))));
    Ok(())
}

#[tokio::test]
async fn interest_follows_connections_and_membership() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| config.limits.multicast_min_members = 3)
        .fanout_config(|config| config.multicast_grace = Duration::ZERO)
        .start()
        .await?;
    let alice = system.api(0, "alice");
    let small = alice.create_group("small", &["bob"]).await?.id;
    let group = alice.create_group("large", &["bob", "carol"]).await?.id;
    let mut bob = system.connect(0, "bob", "phone").await?;
    assert_eq!(telemetry::gateway_metrics().multicast_subscriptions.get(), 1, "bob's large group, not the small one");
    let metrics = telemetry::fanout_metrics();
    let (multicast_before, per_user_before) = (metrics.publishes("multicast"), metrics.publishes("per_user"));
    alice.send_text_ok(&small, "s1", "below the threshold").await?;
    alice.send_text_ok(&group, "g1", "at the threshold").await?;
    bob.messages_until(&small, 1, WAIT).await?;
    bob.messages_until(&group, 1, WAIT).await?;
    assert_eq!((metrics.publishes("multicast") - multicast_before, metrics.publishes("per_user") - per_user_before), (1, 2), "per member below, once at the threshold");

    // Authors hear "delivered" per member in the small group only: in a large one that would be a frame per member per message.
    let delivered_to_alice = |conversation: &str, seq: u64| {
        let conversation = conversation.to_owned();
        move |frame: &ServerFrame| matches!(frame, ServerFrame::Receipt { conversation_id, kind: schemas::ReceiptKind::Delivered, seq: got, .. } if *conversation_id == conversation && *got >= seq)
    };
    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    alice_phone.send_text(&small, "s1b", "a receipt comes back for this").await?;
    alice_phone.send_text(&group, "g1b", "none for this").await?;
    bob.messages_until(&group, 2, WAIT).await?;
    let mut frames = alice_phone.frames_until(WAIT, delivered_to_alice(&small, 2)).await?;
    // A later announcement round: everything the first round sent arrived before it.
    alice_phone.send_text(&small, "s1c", "and for this").await?;
    frames.extend(alice_phone.frames_until(WAIT, delivered_to_alice(&small, 3)).await?);
    assert!(!frames.iter().any(delivered_to_alice(&group, 1)), "no per-member delivered receipt in a multicast group: {frames:?}");

    // Dave joins while connected: his gateway takes the group's deliveries from then on.
    let mut dave = system.connect(0, "dave", "phone").await?;
    let (status, body) = alice.post(&format!("/v1/conversations/{group}/members"), json!({"user": "dave"})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sent at once: the gateway may not have subscribed yet, and catches dave up from the log when it does.
    alice.send_text_ok(&group, "g2", "hello dave").await?;
    assert_eq!(seqs_of(&dave.messages_until(&group, 3, WAIT).await?), vec![3], "dave gets what is sent after he joined");

    // Bob leaves: he gets nothing more, dave still does; when the last member here goes, so does the interest.
    let (status, _) = system.api(0, "bob").request(Method::DELETE, &format!("/v1/conversations/{group}/members/bob"), None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    alice.send_text_ok(&group, "g3", "bob has left").await?;
    assert_eq!(seqs_of(&dave.messages_until(&group, 4, WAIT).await?), vec![4]);
    alice.send_text_ok(&small, "s2", "still in the small one").await?;
    let frames = bob.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Message { message } if message.conversation_id == small && message.seq == 4)).await?;
    assert!(!frames.iter().any(|frame| matches!(frame, ServerFrame::Message { message } if message.conversation_id == group && message.seq == 4)), "bob left before seq 4");
    drop(dave);
    drop(alice_phone);
    // One gateway in this process: the gauge is its count of groups it takes deliveries of (alice and dave were the last members here).
    let subscriptions = || telemetry::gateway_metrics().multicast_subscriptions.get();
    testkit::wait_until("the gateway drops the group once nobody here is a member", WAIT, || async { subscriptions() == 0 }).await?;
    Ok(())
}
