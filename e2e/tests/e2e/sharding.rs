//! The message log over several shards, on one server and on a 3-node cluster: conversations spread over them keep their order and reach every device, every read path finds them, and raising the shard count moves nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use subjects::{Shard, StorageSettings};
use testkit::{wait_until, Api, TestSystem};

use crate::search::{hits, wait_until_indexed};

const WAIT: Duration = Duration::from_secs(30);
/// At least this many conversations, more until every shard holds one.
const CONVERSATIONS: usize = 9;
const PER_CONVERSATION: u64 = 12;

/// Which shard the conversation's record names, read as a gateway reads it.
pub async fn shard_of(system: &TestSystem, conversation: &str) -> anyhow::Result<Shard> {
    let jetstream = async_nats::jetstream::new(system.connect_role(subjects::permissions::Role::Gateway).await?);
    let records = jetstream.get_key_value(subjects::CONVERSATIONS_BUCKET).await?;
    let record = records.get(conversation).await?.ok_or_else(|| anyhow::anyhow!("{conversation} has no record"))?;
    Ok(Shard(schemas::ConversationRecord::from_bytes(&record)?.shard))
}

async fn stream_messages(system: &TestSystem, stream: &str) -> anyhow::Result<u64> {
    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    Ok(jetstream.get_stream(stream).await?.info().await?.state.messages)
}

/// Sends `count` messages to each conversation, interleaved across them, through alternating gateways.
async fn send_interleaved(senders: &[Api], conversations: &[String], first: u64, count: u64) -> anyhow::Result<()> {
    for n in first..first + count {
        for (index, conversation) in conversations.iter().enumerate() {
            let sender = &senders[(n as usize + index) % senders.len()];
            let seq = sender.send_text_ok(conversation, &format!("m{n}"), &format!("note {n} of {conversation}")).await?.seq;
            assert_eq!(seq, n, "{conversation}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn conversations_spread_over_shards_keep_their_order_and_every_read_path_finds_them() -> anyhow::Result<()> {
    let system = TestSystem::builder().message_shards(3).gateways(2).fanouts(2).with_search().start().await?;
    spread_over_shards(&system).await
}

#[tokio::test]
async fn on_a_3_node_cluster_conversations_spread_over_shards_keep_their_order_and_every_read_path_finds_them() -> anyhow::Result<()> {
    let system = TestSystem::builder().on_nats_cluster().message_shards(3).gateways(2).fanouts(2).with_search().start().await?;
    spread_over_shards(&system).await
}

async fn spread_over_shards(system: &TestSystem) -> anyhow::Result<()> {
    let alice = [system.api(0, "alice"), system.api(1, "alice")];
    let mut bob = system.connect(1, "bob", "phone").await?;
    // Placement is a hash of a random id: groups are made until every shard has one (the spread itself is a unit test's).
    let mut conversations = Vec::new();
    let mut per_shard: BTreeMap<Shard, usize> = BTreeMap::new();
    while conversations.len() < CONVERSATIONS || per_shard.len() < 3 {
        anyhow::ensure!(conversations.len() < 60, "60 groups and still a shard without one: {per_shard:?}");
        let conversation = alice[conversations.len() % 2].create_group(&format!("g{}", conversations.len()), &["bob"]).await?.id;
        *per_shard.entry(shard_of(system, &conversation).await?).or_default() += 1;
        conversations.push(conversation);
    }

    send_interleaved(&alice, &conversations, 1, PER_CONVERSATION).await?;
    for conversation in &conversations {
        let seqs: Vec<u64> = bob.messages_until(conversation, PER_CONVERSATION, WAIT).await?.iter().map(|message| message.seq).collect();
        assert_eq!(seqs, (1..=PER_CONVERSATION).collect::<Vec<_>>(), "bob's device, {conversation}");
    }
    for (shard, count) in &per_shard {
        let stored = stream_messages(system, &shard.message_stream()).await?;
        assert_eq!(stored, *count as u64 * PER_CONVERSATION, "{} holds exactly its conversations' messages", shard.message_stream());
    }

    // History, a fold (its state lives in the shard's own bucket), the inbox and a resend, in a shard other than 0.
    let mut elsewhere = None;
    for conversation in &conversations {
        if shard_of(system, conversation).await? != Shard::FIRST {
            elsewhere = Some(conversation.clone());
            break;
        }
    }
    let elsewhere = elsewhere.expect("a conversation outside shard 0");
    let page = system.api(0, "bob").history(&elsewhere, "limit=5").await?;
    assert_eq!(page.messages.iter().map(|message| message.seq).collect::<Vec<_>>(), (PER_CONVERSATION - 4..=PER_CONVERSATION).collect::<Vec<_>>());
    let (status, body) = alice[0].request(Method::PATCH, &format!("/v1/conversations/{elsewhere}/messages/3"), Some(json!({"client_msg_id": "e1", "body": {"text": "rewritten"}}))).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = alice[1].post(&format!("/v1/conversations/{elsewhere}/messages/3/reactions"), json!({"client_msg_id": "r1", "emoji": "👍"})).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let page = system.api(1, "bob").history(&elsewhere, &format!("before={}&limit=1", 4)).await?;
    let third = &page.messages[0];
    assert_eq!((third.seq, third.body.text.as_deref(), third.reactions.len()), (3, Some("rewritten"), 1), "{third:?}");
    let resent = alice[1].send_text_ok(&elsewhere, "m5", "a resend through the other gateway").await?;
    assert!(resent.duplicate && resent.seq == 5, "{resent:?}");
    let (status, inbox) = system.api(0, "bob").get("/v1/conversations").await?;
    assert_eq!(status, StatusCode::OK, "{inbox}");
    let entries = inbox["conversations"].as_array().expect("an inbox");
    assert_eq!(entries.len(), conversations.len());
    for entry in entries {
        // The edit and the reaction are entries of their own: the latest message is still 12, the unread entries 14.
        let changes = if entry["id"] == json!(elsewhere) { 2 } else { 0 };
        assert_eq!(entry["last_message"]["seq"], json!(PER_CONVERSATION), "{entry}");
        assert_eq!(entry["unread"], json!(PER_CONVERSATION + changes), "{entry}");
    }

    // Search reads one feed of every shard: every conversation's messages are found.
    wait_until_indexed(system, conversations.len() as u64 * PER_CONVERSATION).await?;
    let found = hits(&system.api(0, "bob"), "note 7").await?;
    let mut found_in: Vec<&str> = found.iter().filter(|(message, _)| message.seq == 7).map(|(message, _)| message.conversation_id.as_str()).collect();
    found_in.sort_unstable();
    let mut expected: Vec<&str> = conversations.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(found_in, expected);
    Ok(())
}

#[tokio::test]
async fn raising_the_shard_count_moves_nothing_and_it_never_shrinks() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().with_search().start().await?;
    let old: Vec<String> = vec![
        system.api(0, "alice").create_group("before", &["bob"]).await?.id,
        system.api(0, "alice").create_direct("bob").await?.id,
    ];
    send_interleaved(&[system.api(0, "alice")], &old, 1, 3).await?;
    wait_until_indexed(&system, 6).await?;

    // A rolling change: workers first, then the gateway, every new process with three shards.
    system.set_message_shards(3);
    system.stop_indexer(0).await?;
    system.kill_fanout(0);
    system.add_fanout().await?;
    system.add_indexer().await?;
    system.stop_gateway(0).await?;
    let gateway = system.add_gateway().await?;
    let alice = system.api(gateway, "alice");
    let mut bob = system.connect(gateway, "bob", "phone").await?;

    for conversation in &old {
        assert_eq!(shard_of(&system, conversation).await?, Shard::FIRST, "{conversation} stays where it was");
    }
    // New conversations go to all three shards: groups are made until each has one.
    let mut new = Vec::new();
    let mut new_shards = std::collections::BTreeSet::new();
    while new_shards.len() < 3 {
        anyhow::ensure!(new.len() < 60, "60 new groups and still a shard without one: {new_shards:?}");
        let conversation = alice.create_group(&format!("after {}", new.len()), &["bob"]).await?.id;
        new_shards.insert(shard_of(&system, &conversation).await?);
        new.push(conversation);
    }

    // The old conversations keep their history and take new messages after it; the new ones start at 1.
    send_interleaved(std::slice::from_ref(&alice), &old, 4, 2).await?;
    send_interleaved(std::slice::from_ref(&alice), &new, 1, 2).await?;
    for conversation in &old {
        let seqs: Vec<u64> = system.api(gateway, "bob").history(conversation, "").await?.messages.iter().map(|message| message.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "{conversation}");
        let live: Vec<u64> = bob.messages_until(conversation, 5, WAIT).await?.iter().map(|message| message.seq).collect();
        assert_eq!(live, vec![4, 5], "{conversation}");
    }
    for conversation in &new {
        let live: Vec<u64> = bob.messages_until(conversation, 2, WAIT).await?.iter().map(|message| message.seq).collect();
        assert_eq!(live, vec![1, 2], "{conversation}");
    }
    // The indexer now follows the feed of all shards: it starts over and finds old and new alike.
    wait_until_indexed(&system, (old.len() * 5 + new.len() * 2) as u64).await?;
    wait_until("search finds an old and a new conversation's message", WAIT, || async {
        let bob = system.api(gateway, "bob");
        hits(&bob, "note 2").await.is_ok_and(|found| found.len() == old.len() + new.len())
    })
    .await?;

    // Fewer shards would strand the conversations placed in the others: provisioning refuses.
    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    let fewer = StorageSettings { message_shards: 2, ..StorageSettings::default() };
    let refused = store::Storage::provision(jetstream, &fewer).await.err().expect("shrinking the shard count is refused");
    assert!(refused.to_string().contains("never shrink"), "{refused}");
    Ok(())
}
