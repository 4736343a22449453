//! Presence (first device online, last device offline, vanished devices, Redis restarts, several gateways) and typing relays.

use std::collections::BTreeMap;
use std::time::Duration;

use schemas::{PresenceStatus, ServerFrame};
use serde_json::json;
use testkit::{TestSystem, WsClient};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(10);
/// Heartbeat for the tests that wait on it: short, but long enough for a busy 2-core machine to answer pings.
const SHORT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Time allowed on top of a protocol deadline for the server to act on it and the frame to travel.
const PROCESSING_ALLOWANCE: Duration = Duration::from_millis(750);

/// (user, status, last_seen present) of a presence frame, or a failure naming what came instead.
fn presence(frame: &ServerFrame) -> (String, PresenceStatus, bool) {
    match frame {
        ServerFrame::Presence { user, status, last_seen } => (user.clone(), *status, last_seen.is_some()),
        other => panic!("expected a presence frame, got {other:?}"),
    }
}

/// The presence a fresh connection knows by the reply to its first frame: its snapshot, plus any
/// change announced meanwhile (a contact's own "online" can arrive just after the snapshot, saying
/// the same thing again), as (user, status) in user order, the latest status per user.
async fn snapshot(client: &mut WsClient) -> anyhow::Result<Vec<(String, PresenceStatus)>> {
    let id = client.fresh_id();
    client.send_json(json!({"type": "ping", "id": id})).await?;
    let expected = Some(json!(id));
    let frames = client.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Pong { id } if *id == expected)).await?;
    let known: BTreeMap<String, PresenceStatus> =
        frames.iter().filter(|frame| matches!(frame, ServerFrame::Presence { .. })).map(presence).map(|(user, status, _)| (user, status)).collect();
    Ok(known.into_iter().collect())
}

/// Polls with fresh devices of `user` on `gateway` until one's snapshot equals `expected`.
async fn wait_for_snapshot(system: &TestSystem, user: &str, expected: Vec<(String, PresenceStatus)>, deadline: Duration) -> anyhow::Result<()> {
    testkit::wait_until(&format!("a new device of {user}'s sees {expected:?}"), deadline, || {
        let expected = expected.clone();
        async move {
            let Ok(mut probe) = system.connect(0, user, "probe").await else { return false };
            snapshot(&mut probe).await.is_ok_and(|seen| seen == expected)
        }
    })
    .await
}

/// A clean close from the client side, waiting for the server's answer.
async fn close(mut client: WsClient) -> anyhow::Result<()> {
    client.send_ws_message(WsMessage::Close(None)).await?;
    client.closed(WAIT).await?;
    Ok(())
}

async fn send_typing(client: &mut WsClient, conversation: &str) -> anyhow::Result<()> {
    client.send_json(json!({"type": "typing", "conversation_id": conversation})).await
}

/// Frames until the message `seq` of `conversation` arrives; returns the typing frames among them.
async fn typing_before_message(client: &mut WsClient, conversation: &str, seq: u64) -> anyhow::Result<Vec<ServerFrame>> {
    let frames = client
        .frames_until(WAIT, |frame| matches!(frame, ServerFrame::Message { message } if message.conversation_id == conversation && message.seq >= seq))
        .await?;
    Ok(frames.into_iter().filter(|frame| matches!(frame, ServerFrame::Typing { .. })).collect())
}

#[tokio::test]
async fn presence_follows_the_first_and_the_last_device_of_a_user() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.api(0, "alice").create_direct("bob").await?;
    system.api(0, "alice").create_group("team", &["carol", "dave"]).await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    assert_eq!(snapshot(&mut bob).await?, vec![], "nobody bob knows is online yet");

    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    assert_eq!(presence(&bob.next_presence_of("alice", WAIT).await?), ("alice".to_owned(), PresenceStatus::Online, false));
    assert_eq!(snapshot(&mut alice_phone).await?, vec![("bob".to_owned(), PresenceStatus::Online)], "only online contacts, never herself");

    let mut alice_laptop = system.connect(0, "alice", "laptop").await?;
    assert_eq!(snapshot(&mut alice_laptop).await?, vec![("bob".to_owned(), PresenceStatus::Online)]);
    let mut carol = system.connect(0, "carol", "phone").await?;
    assert_eq!(snapshot(&mut carol).await?, vec![("alice".to_owned(), PresenceStatus::Online)], "bob is no contact of carol's; dave is offline");

    close(alice_phone).await?;
    let before_last_device_left = time::OffsetDateTime::now_utc();
    close(alice_laptop).await?;
    let offline = bob.next_presence_of("alice", WAIT).await?;
    let ServerFrame::Presence { status: PresenceStatus::Offline, last_seen: Some(last_seen), .. } = offline else {
        panic!("alice's last device left: expected offline with last_seen, got {offline:?}");
    };
    let tolerance = time::Duration::milliseconds(5);
    assert!(last_seen + tolerance >= before_last_device_left && last_seen <= time::OffsetDateTime::now_utc() + tolerance, "last_seen {last_seen}");
    assert_eq!(presence(&carol.next_presence_of("alice", WAIT).await?).1, PresenceStatus::Offline);

    // The next frame about alice must be this reconnect's: had the phone's departure announced her
    // offline while the laptop was still there, a second offline would come first.
    let _alice_again = system.connect(0, "alice", "tablet").await?;
    for observer in [&mut bob, &mut carol] {
        assert_eq!(presence(&observer.next_presence_of("alice", WAIT).await?).1, PresenceStatus::Online);
    }
    Ok(())
}

#[tokio::test]
async fn presence_is_one_state_across_two_gateways() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateways(2).start().await?;
    system.api(0, "alice").create_group("team", &["bob", "dave"]).await?;
    // Each observer past its snapshot, so what follows are the announcements.
    let mut bob = system.connect(0, "bob", "phone").await?;
    assert_eq!(snapshot(&mut bob).await?, vec![]);
    let mut dave = system.connect(1, "dave", "phone").await?;
    assert_eq!(snapshot(&mut dave).await?, vec![("bob".to_owned(), PresenceStatus::Online)]);

    let alice_phone = system.connect(0, "alice", "phone").await?;
    for observer in [&mut bob, &mut dave] {
        assert_eq!(presence(&observer.next_presence_of("alice", WAIT).await?).1, PresenceStatus::Online);
    }
    let mut alice_laptop = system.connect(1, "alice", "laptop").await?;
    // A device that has had a reply counts as online everywhere.
    alice_laptop.ping().await?;
    close(alice_phone).await?;
    close(alice_laptop).await?;
    // The next frame is this offline: a gateway deciding alone would have announced the laptop as a
    // second "online", or the phone's departure while the laptop was still there.
    for observer in [&mut bob, &mut dave] {
        let offline = presence(&observer.next_presence_of("alice", WAIT).await?);
        assert_eq!((offline.1, offline.2), (PresenceStatus::Offline, true), "offline with last_seen");
    }
    let _alice_again = system.connect(1, "alice", "phone").await?;
    for observer in [&mut bob, &mut dave] {
        assert_eq!(presence(&observer.next_presence_of("alice", WAIT).await?).1, PresenceStatus::Online);
    }
    Ok(())
}

#[tokio::test]
async fn a_device_that_vanishes_goes_offline_within_two_heartbeats() -> anyhow::Result<()> {
    let system = TestSystem::builder().heartbeat(SHORT_HEARTBEAT).start().await?;
    system.api(0, "alice").create_direct("bob").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    assert_eq!(snapshot(&mut bob).await?, vec![]);
    let alice = system.connect(0, "alice", "phone").await?;
    assert_eq!(presence(&bob.next_presence_of("alice", WAIT).await?).1, PresenceStatus::Online);

    let mut vanished = alice.stop_answering();
    let vanished_at = Instant::now();
    let offline = presence(&bob.next_presence_of("alice", 2 * SHORT_HEARTBEAT + WAIT).await?);
    let took = vanished_at.elapsed();
    assert_eq!((offline.1, offline.2), (PresenceStatus::Offline, true));
    assert!(took <= 2 * SHORT_HEARTBEAT + PROCESSING_ALLOWANCE, "offline after {took:?}, heartbeat {SHORT_HEARTBEAT:?}");
    // Her last pong was at most one interval before she vanished, so the timeout cannot fire sooner than this.
    assert!(took >= SHORT_HEARTBEAT / 2, "offline after only {took:?}: not the heartbeat timeout");
    assert_eq!(vanished.server_close(WAIT).await?, (1001, "heartbeat timeout".to_owned()));

    // Bob kept reading (and so answering pings) through more than two intervals: still connected.
    bob.ping().await?;
    Ok(())
}

#[tokio::test]
async fn presence_is_whole_again_within_one_heartbeat_after_redis_restarts() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().heartbeat(SHORT_HEARTBEAT).start().await?;
    system.api(0, "alice").create_direct("bob").await?;
    let alice = system.connect(0, "alice", "phone").await?;
    // Alice's socket must keep answering pings while the test looks elsewhere.
    let alice_reading = tokio::spawn(async move {
        let mut alice = alice;
        alice.frames_until_closed(Duration::from_secs(120)).await
    });
    let alice_online = vec![("alice".to_owned(), PresenceStatus::Online)];
    wait_for_snapshot(&system, "bob", alice_online.clone(), WAIT).await?;

    system.redis().kill().await;
    system.redis().restart().await?;
    // Redis came back empty; within one interval the gateway has put alice back.
    wait_for_snapshot(&system, "bob", alice_online, SHORT_HEARTBEAT + PROCESSING_ALLOWANCE).await?;

    // Redis works fully again (the scripts were reloaded): alice leaving is announced.
    let mut bob = system.connect(0, "bob", "phone").await?;
    snapshot(&mut bob).await?;
    alice_reading.abort();
    let frames = bob.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Presence { user, status: PresenceStatus::Offline, .. } if user == "alice")).await?;
    assert!(matches!(frames.last(), Some(ServerFrame::Presence { last_seen: Some(_), .. })), "{frames:?}");
    Ok(())
}

#[tokio::test]
async fn devices_of_a_crashed_gateway_are_announced_offline_once_they_expire() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().heartbeat(SHORT_HEARTBEAT).start().await?;
    system.api(0, "erin").create_direct("bob").await?;
    // What a gateway that died without a goodbye leaves behind: erin's device, expiring in 1.5 s.
    let redis_client = redis::Client::open(system.redis().url())?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut redis).await?;
    let expiry = seconds * 1000 + micros / 1000 + 1500;
    let erin = subjects::Id::parse("erin")?;
    redis::pipe()
        .zadd(subjects::redis_keys::presence_key(&erin), "crashed-gateway:1", expiry)
        .zadd(subjects::redis_keys::PRESENCE_EXPIRY_INDEX_KEY, "erin", expiry)
        .exec_async(&mut redis)
        .await?;

    let mut bob = system.connect(0, "bob", "phone").await?;
    assert_eq!(snapshot(&mut bob).await?, vec![("erin".to_owned(), PresenceStatus::Online)]);
    // Swept on the first tick after the expiry: within 1.5 s plus one interval.
    let offline = presence(&bob.next_presence_of("erin", Duration::from_millis(1500) + SHORT_HEARTBEAT + WAIT).await?);
    assert_eq!((offline.1, offline.2), (PresenceStatus::Offline, true));
    Ok(())
}

#[tokio::test]
async fn typing_reaches_the_other_members_once_per_two_seconds_across_gateways() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateways(2).start().await?;
    let group = system.api(0, "alice").create_group("team", &["bob", "carol"]).await?;
    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    let mut alice_laptop = system.connect(1, "alice", "laptop").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    let mut carol = system.connect(1, "carol", "phone").await?;

    let first_typing_sent_at = Instant::now();
    for _ in 0..5 {
        send_typing(&mut alice_phone, &group.id).await?;
        send_typing(&mut alice_laptop, &group.id).await?;
    }
    // Each gateway relays a device's frames in order, on one NATS connection, before the message
    // that follows them; so every typing event relayed is in front of these messages.
    alice_phone.send_text(&group.id, "after-typing-1", "barrier").await?;
    alice_laptop.send_text(&group.id, "after-typing-2", "barrier").await?;
    // One window holds them all unless a loaded machine took longer than a window to send ten frames;
    // then each window that passed may relay one more, never more than that.
    let windows_spanned = first_typing_sent_at.elapsed().as_secs() / 2 + 1;
    for observer in [&mut bob, &mut carol] {
        let typing = typing_before_message(observer, &group.id, 2).await?;
        assert!(!typing.is_empty() && typing.len() as u64 <= windows_spanned, "ten typing frames from two gateways within {windows_spanned} window(s), one relayed per window: {typing:?}");
        assert!(matches!(&typing[0], ServerFrame::Typing { conversation_id, user } if *conversation_id == group.id && user == "alice"));
    }
    for typer in [&mut alice_phone, &mut alice_laptop] {
        assert_eq!(typing_before_message(typer, &group.id, 2).await?, vec![], "the typer's own devices get nothing");
    }

    // The window lifts after two seconds, not before.
    let mut seq = 2;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let relayed_again_after = loop {
        pace.tick().await;
        anyhow::ensure!(first_typing_sent_at.elapsed() < Duration::from_secs(2) + WAIT, "typing was never relayed again");
        let sent_at = first_typing_sent_at.elapsed();
        send_typing(&mut alice_phone, &group.id).await?;
        seq = alice_phone.send_text(&group.id, &format!("probe-{seq}"), "barrier").await?.0;
        match typing_before_message(&mut bob, &group.id, seq).await?.len() {
            0 => continue,
            1 => break sent_at,
            more => anyhow::bail!("{more} typing frames relayed in one window"),
        }
    };
    assert!(relayed_again_after >= Duration::from_millis(1900), "relayed again after only {relayed_again_after:?}");
    assert!(relayed_again_after <= Duration::from_secs(2) + PROCESSING_ALLOWANCE, "relayed again only after {relayed_again_after:?}");

    let history = system.api(0, "bob").history(&group.id, "").await?;
    assert!(history.messages.iter().all(|message| message.body.text.as_deref() == Some("barrier")), "typing is never stored");
    Ok(())
}

#[tokio::test]
async fn typing_is_refused_to_non_members_and_for_bad_ids() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let group = system.api(0, "alice").create_group("team", &["bob"]).await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    let mut alice = system.connect(0, "alice", "phone").await?;
    let mut mallory = system.connect(0, "mallory", "phone").await?;

    for (conversation, expected) in [(group.id.as_str(), schemas::ErrorCode::Forbidden), ("g-missing", schemas::ErrorCode::Forbidden), ("not an id!", schemas::ErrorCode::Invalid), ("", schemas::ErrorCode::Invalid)] {
        let id = mallory.fresh_id();
        mallory.send_json(json!({"type": "typing", "id": id, "conversation_id": conversation})).await?;
        match mallory.reply_to(&id, WAIT).await? {
            ServerFrame::Error { code, .. } => assert_eq!(code, expected, "typing in {conversation:?}"),
            other => panic!("typing in {conversation:?}: expected an error, got {other:?}"),
        }
    }
    mallory.ping().await?;
    // Mallory's refused typing was handled before alice's message was sent, on the same gateway: nothing reached bob.
    alice.send_text(&group.id, "m-1", "hello").await?;
    assert_eq!(typing_before_message(&mut bob, &group.id, 1).await?, vec![]);
    Ok(())
}

#[tokio::test]
async fn without_redis_there_is_no_presence_and_typing_is_limited_per_gateway() -> anyhow::Result<()> {
    let system = TestSystem::builder().without_redis().start().await?;
    let conversation = system.api(0, "alice").create_direct("bob").await?;
    let mut bob = system.connect(0, "bob", "phone").await?;
    let mut alice = system.connect(0, "alice", "phone").await?;
    assert_eq!(snapshot(&mut alice).await?, vec![], "no presence without redis");
    for _ in 0..5 {
        send_typing(&mut alice, &conversation.id).await?;
    }
    alice.send_text(&conversation.id, "m-1", "hello").await?;
    let frames = bob.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Message { .. })).await?;
    let kinds: Vec<&str> = frames
        .iter()
        .map(|frame| match frame {
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Message { .. } => "message",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["typing", "message"], "one typing relayed, and no presence at all");
    Ok(())
}
