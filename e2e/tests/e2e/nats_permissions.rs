//! Least privilege on NATS: with `nats-config/users.conf` every role works on its own user, and each is refused every subject outside its lists.

use std::collections::BTreeSet;
use std::time::Duration;

use subjects::permissions::{self, Role, example_subject, layout_streams, stream_delete_subject, stream_purge_subject};
use testkit::role_users::{connect_as, connect_as_with, start_nats_with_role_users};

use reqwest::StatusCode;
use schemas::MediaStatus;
use serde_json::json;
use testkit::push_standins;
use testkit::{TestSystem, wait_until};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn every_role_on_its_own_user_delivers_indexes_and_violates_nothing() -> anyhow::Result<()> {
    // Three log shards, and a group outside shard 0: every shard's stream, buckets and consumers, and the search feed, are reached.
    let system = TestSystem::builder().with_role_users().with_search().message_shards(3).start().await?;
    let (alice, bob) = (system.api(0, "alice"), system.api(0, "bob"));
    let mut group = alice.create_group("least privilege", &["bob"]).await?;
    while crate::sharding::shard_of(&system, &group.id).await? == subjects::Shard::FIRST {
        group = alice.create_group("least privilege", &["bob"]).await?;
    }
    let mut bob_phone = system.connect(0, "bob", "phone").await?;
    alice.send_text_ok(&group.id, "m1", "through the gateway and the fanout").await?;
    let messages = bob_phone.messages_until(&group.id, 1, WAIT).await?;
    assert_eq!(messages[0].body.text.as_deref(), Some("through the gateway and the fanout"));

    // The indexer followed the log on its own consumer and answers the gateway's search request.
    crate::search::wait_until_indexed(&system, 1).await?;
    let found = crate::search::hits(&bob, "fanout").await?;
    assert_eq!(found.len(), 1, "bob finds the message through svc.search");

    // History reads (direct gets) and the inbox (batch gets) on the gateway's user.
    assert_eq!(bob.history(&group.id, "").await?.messages.len(), 1);

    // A change: the gateway folds it, the fanout reads the message and its state, the indexer rewrites the document.
    let edit = json!({"client_msg_id": "e1", "body": {"text": "edited on least privilege"}});
    let (status, body) = alice.request(reqwest::Method::PATCH, &format!("/v1/conversations/{}/messages/1", group.id), Some(edit)).await?;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let (update, message) = crate::message_changes::update_with_seq(&mut bob_phone, 2).await?;
    assert_eq!((update.target_seq, message.and_then(|message| message.body.text)), (1, Some("edited on least privilege".to_owned())));
    testkit::wait_until("the edit is searchable", WAIT, || async { crate::search::hits(&bob, "privilege").await.is_ok_and(|found| found.len() == 1) }).await?;
    assert!(bob.get("/v1/conversations").await?.0.is_success(), "the inbox follows a change's pointer on the gateway's user");

    let log = std::fs::read_to_string(system.nats.server().log_path())?;
    // nats-server logs each refusal as `… "$G/user:<role>" - Publish Violation - Subject "…"` (or Subscription).
    let violations: Vec<&str> = log.lines().filter(|line| line.contains(" Violation - ")).collect();
    assert!(violations.is_empty(), "a role needed more than its permissions:\n{}", violations.join("\n"));
    Ok(())
}

#[tokio::test]
async fn media_and_push_workers_do_their_jobs_on_their_own_users() -> anyhow::Result<()> {
    const SERVICE_ACCOUNT: &str = "natter-push@natter-test.iam.gserviceaccount.com";
    let fcm_stand_in = push_standins::start_fcm(SERVICE_ACCOUNT).await?;
    let fcm = push_standins::fcm_settings(&fcm_stand_in, SERVICE_ACCOUNT);
    let system = TestSystem::builder()
        .with_role_users()
        .with_media()
        .with_push(|config| {
            config.fcm = Some(fcm);
            config.coalesce_window = Duration::from_millis(200);
        })
        .start()
        .await?;
    let (alice, bob) = (system.api(0, "alice"), system.api(0, "bob"));
    let group = alice.create_group("jobs", &["bob"]).await?.id;

    // Bob has no socket open, so the fanout queues a push job and the push worker sends it.
    let (status, body) = bob.post("/v1/devices/phone/push", json!({"provider": "fcm", "token": "bob-phone-token"})).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    alice.send_text_ok(&group, "m1", "are you there?").await?;
    wait_until("the push reaches the FCM stand-in", WAIT, || async { !fcm_stand_in.requests().is_empty() }).await?;

    let media = crate::media::upload(&alice, "image/png", crate::media::png_with_alpha(64, 64)).await?;
    let scanned = crate::media::wait_for_scan(&alice, &media).await?;
    assert_eq!(scanned.status, MediaStatus::Ready, "scanned and thumbnailed by the media worker");

    let log = std::fs::read_to_string(system.nats.server().log_path())?;
    let violations: Vec<&str> = log.lines().filter(|line| line.contains(" Violation - ")).collect();
    assert!(violations.is_empty(), "a role needed more than its permissions:\n{}", violations.join("\n"));
    Ok(())
}

#[tokio::test]
async fn no_role_can_connect_without_its_password_or_as_nobody() -> anyhow::Result<()> {
    let store = tempfile::tempdir()?;
    let server = start_nats_with_role_users(store.path()).await?;
    let anonymous = tokio::time::timeout(WAIT, async_nats::connect(server.client_url())).await?;
    assert!(anonymous.is_err(), "anonymous clients are refused");
    let wrong = async_nats::ConnectOptions::new().user_and_password("gateway".into(), "guess".into()).connect(server.client_url());
    assert!(tokio::time::timeout(WAIT, wrong).await?.is_err(), "a wrong password is refused");
    Ok(())
}

/// Every role, tried on every subject some other role may use but it may not, and on the broad
/// ones nobody may: each publish and each subscription is answered by a permissions violation.
#[tokio::test]
async fn each_role_is_refused_everything_outside_its_lists() -> anyhow::Result<()> {
    let store = tempfile::tempdir()?;
    let server = start_nats_with_role_users(store.path()).await?;
    for role in Role::ALL {
        let own = permissions::permissions(role);
        let (publish_probes, subscribe_probes) = probes_for(role);
        assert!(publish_probes.len() > 20 && subscribe_probes.len() > 5, "{role:?}: too few probes to mean anything");
        let (violations_tx, mut violations_rx) = mpsc::unbounded_channel();
        let options = async_nats::ConnectOptions::new().event_callback(move |event| {
            let violations_tx = violations_tx.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event {
                    let _ = violations_tx.send(text);
                }
            }
        });
        let client = connect_as_with(&server.client_url(), role, options).await?;
        for subject in &publish_probes {
            assert!(!own.allows_publish(subject), "{role:?}: probe {subject} is allowed by its own list");
            client.publish(subject.clone(), "probe".into()).await?;
            client.flush().await?;
            expect_violation(&mut violations_rx, role, "publish", subject).await?;
        }
        for subject in &subscribe_probes {
            let _subscription = client.subscribe(subject.clone()).await?;
            client.flush().await?;
            expect_violation(&mut violations_rx, role, "subscription", subject).await?;
        }
    }
    Ok(())
}

/// The examples the permissions exist for, through the JetStream API as a compromised role would try them.
#[tokio::test]
async fn roles_cannot_delete_streams_or_take_over_consumers() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_role_users().start().await?;
    // A refused API request is never answered: a short timeout makes the refusal quick.
    let short = |client: async_nats::Client| {
        let mut jetstream = async_nats::jetstream::new(client);
        jetstream.set_timeout(Duration::from_millis(500));
        jetstream
    };
    let gateway = short(connect_as(&system.nats.client_urls(), Role::Gateway).await?);
    assert!(gateway.delete_stream(subjects::MESSAGE_STREAM).await.is_err(), "the gateway deletes the log");
    let indexer = short(connect_as(&system.nats.client_urls(), Role::Indexer).await?);
    let messages = indexer.get_stream(subjects::MESSAGE_STREAM).await?;
    assert!(messages.delete_consumer(subjects::FANOUT_CONSUMER).await.is_err(), "the indexer deletes the fanout's consumer");
    let push = short(connect_as(&system.nats.client_urls(), Role::Push).await?);
    let config = subjects::fanout_consumer_config(Duration::from_secs(30));
    assert!(push.create_consumer_on_stream(config, subjects::MESSAGE_STREAM).await.is_err(), "the push worker reads the log as the fanout");

    let provisioner = async_nats::jetstream::new(system.connect_nats().await?);
    let log = provisioner.get_stream(subjects::MESSAGE_STREAM).await?;
    assert!(log.consumer_info(subjects::FANOUT_CONSUMER).await.is_ok(), "the log and its consumer are still there");
    Ok(())
}

/// (publish probes, subscribe probes) for `role`, derived from every other role's lists.
fn probes_for(role: Role) -> (BTreeSet<String>, BTreeSet<String>) {
    let own = permissions::permissions(role);
    let mut publish = BTreeSet::new();
    let mut subscribe = BTreeSet::new();
    for other in Role::ALL.into_iter().filter(|other| *other != role) {
        let theirs = permissions::permissions(other);
        publish.extend(theirs.publish_allow.iter().map(|pattern| example_subject(pattern)));
        subscribe.extend(theirs.subscribe_allow.iter().map(|pattern| example_subject(pattern)));
        subscribe.insert(format!("{}.>", other.inbox_prefix()));
    }
    for stream in layout_streams() {
        publish.insert(stream_delete_subject(&stream));
        publish.insert(stream_purge_subject(&stream));
    }
    publish.extend([">", "$JS.API.>", "$JS.API.STREAM.CREATE.EVIL", "$JS.API.ACCOUNT.PURGE.x"].map(str::to_owned));
    subscribe.extend([">", "_INBOX.>", "$JS.API.>", "$JS.ACK.>", "msg.*"].map(str::to_owned));
    publish.retain(|subject| !own.allows_publish(subject));
    subscribe.retain(|subject| !own.allows_subscribe(subject) && !own.subscribe_allow.contains(subject));
    (publish, subscribe)
}

/// Waits for the server's `Permissions Violation for <kind> to "<subject>"`; other roles' stray errors are skipped.
async fn expect_violation(violations_rx: &mut mpsc::UnboundedReceiver<String>, role: Role, kind: &str, subject: &str) -> anyhow::Result<()> {
    let wanted = format!("permissions violation for {kind} to \"{subject}\"");
    let found = tokio::time::timeout(WAIT, async {
        while let Some(text) = violations_rx.recv().await {
            if text.to_lowercase().contains(&wanted.to_lowercase()) {
                return true;
            }
        }
        false
    })
    .await;
    anyhow::ensure!(matches!(found, Ok(true)), "{role:?} was not refused {kind} to {subject}");
    Ok(())
}
