//! Push delivery through real nats-server and redis-server to local FCM, APNs and Web Push stand-ins: coalescing, who gets none, retries, Retry-After, dead letters, invalid tokens, payloads and credentials.

use std::time::Duration;

use push::providers::WebPushSettings;
use push::PushWorkerConfig;
use reqwest::StatusCode;
use schemas::push_providers::{ApnsPayload, FcmSendRequest};
use schemas::PushJob;
use serde_json::{json, Value};
use subjects::Id;
use testkit::push_standins::{self, fcm_unregistered, fixture, ScriptedAnswer, StandIn, WebPushSubscriber};
use testkit::{Api, TestSystem};

const WAIT: Duration = Duration::from_secs(20);
const SERVICE_ACCOUNT: &str = "natter-push@natter-test.iam.gserviceaccount.com";
const APNS_KEY_ID: &str = "KEY1234567";
const APNS_TEAM_ID: &str = "TEAM123456";
const APNS_TOPIC: &str = "chat.natter.app";
const BOB_APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

struct StandIns {
    fcm: StandIn,
    apns: StandIn,
    webpush: StandIn,
}

/// A system whose push worker talks to fresh stand-ins of all three providers.
async fn start(change: impl FnOnce(&mut PushWorkerConfig)) -> anyhow::Result<(TestSystem, StandIns)> {
    let stand_ins = StandIns {
        fcm: push_standins::start_fcm(SERVICE_ACCOUNT).await?,
        apns: push_standins::start_apns(APNS_KEY_ID, APNS_TEAM_ID).await?,
        webpush: push_standins::start_webpush().await?,
    };
    let fcm = push_standins::fcm_settings(&stand_ins.fcm, SERVICE_ACCOUNT);
    let apns = push_standins::apns_settings(&stand_ins.apns, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC);
    let webpush = WebPushSettings { vapid_key_pem: fixture("vapid.key.pem"), vapid_subject: "mailto:ops@natter.test".to_owned(), allow_http_endpoints: true };
    let system = TestSystem::builder()
        .with_push(|config| {
            config.fcm = Some(fcm);
            config.apns = Some(apns);
            config.webpush = Some(webpush);
            change(config);
        })
        .start()
        .await?;
    Ok((system, stand_ins))
}

async fn register(api: &Api, device: &str, body: Value) -> anyhow::Result<()> {
    let (status, answer) = api.post(&format!("/v1/devices/{device}/push"), body).await?;
    anyhow::ensure!(status == StatusCode::NO_CONTENT, "register {device}: {status} {answer}");
    Ok(())
}

async fn requests_reach(stand_in: &StandIn, count: usize) -> anyhow::Result<()> {
    testkit::wait_until(&format!("{count} requests reach the stand-in"), WAIT, || async move { stand_in.requests().len() >= count }).await
}

fn fcm_message(body: &[u8]) -> FcmSendRequest {
    serde_json::from_slice(body).expect("the worker sends FCM v1 JSON")
}

#[tokio::test]
async fn an_offline_device_gets_one_push_per_burst_and_online_muted_silenced_and_senders_get_none() -> anyhow::Result<()> {
    let (system, stand_ins) = start(|config| config.coalesce_window = Duration::from_millis(1500)).await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("friends", &["bob", "carol", "dave", "erin"]).await?.id;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        register(&system.api(0, user), "phone", json!({"provider": "fcm", "token": format!("{user}-phone-token")})).await?;
    }
    let mut carol_online = system.connect(0, "carol", "phone").await?;
    carol_online.ping().await?;
    let muted_until = (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339)?;
    let (status, _) = system.api(0, "dave").request(reqwest::Method::PUT, &format!("/v1/conversations/{group}/settings"), Some(json!({"muted_until": muted_until}))).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = system.api(0, "erin").request(reqwest::Method::PUT, "/v1/settings/notifications", Some(json!({"do_not_disturb_until": muted_until}))).await?;
    assert_eq!(status, StatusCode::OK);

    for index in 1..=3 {
        alice.send_text_ok(&group, &format!("burst-{index}"), &format!("message {index}")).await?;
    }
    requests_reach(&stand_ins.fcm, 1).await?;
    system.wait_until_push_settled(WAIT).await?;

    let requests = stand_ins.fcm.requests();
    assert_eq!(requests.len(), 1, "one push for the burst, to bob only: {requests:?}");
    let request = &requests[0];
    assert_eq!(request.path, "/v1/projects/natter-test/messages:send");
    assert_eq!(request.credentials, Ok(()), "the bearer is one the token endpoint issued");
    let bearer = request.headers["authorization"].to_str()?.strip_prefix("Bearer ").unwrap_or_default().to_owned();
    assert!(stand_ins.fcm.issued_tokens().contains(&bearer), "{bearer} came from the OAuth stand-in");
    let message = fcm_message(&request.body).message;
    assert_eq!(message.token, "bob-phone-token");
    assert_eq!(message.android.collapse_key, group);
    assert_eq!(message.data.get("count").map(String::as_str), Some("3"), "{:?}", message.data);
    assert_eq!(message.data.get("seq").map(String::as_str), Some("3"));
    assert_eq!(message.data.get("conversation_id"), Some(&group));
    assert!(!message.data.contains_key("text") && message.notification.is_none(), "content-free by default: {message:?}");
    let fcm = system.push_metrics.snapshot_of(schemas::PushProvider::Fcm);
    assert_eq!((fcm.sent, fcm.failed, fcm.retried, fcm.dead_lettered), (1, 0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn apns_500_then_200_is_retried_with_growing_delays_under_a_valid_es256_token() -> anyhow::Result<()> {
    let backoff_base = Duration::from_millis(300);
    let (system, stand_ins) = start(|config| {
        config.backoff_base = backoff_base;
        config.coalesce_window = Duration::from_millis(100);
    })
    .await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    register(&system.api(0, "bob"), "tablet", json!({"provider": "apns", "token": BOB_APNS_TOKEN})).await?;
    stand_ins.apns.script([ScriptedAnswer::status(500), ScriptedAnswer::status(500)]);

    alice.send_text_ok(&direct, "m1", "hello").await?;
    requests_reach(&stand_ins.apns, 3).await?;
    system.wait_until_push_settled(WAIT).await?;

    let requests = stand_ins.apns.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for request in &requests {
        assert_eq!(request.credentials, Ok(()), "ES256 provider token with kid and iss");
        assert_eq!(request.version, axum_version_http2(), "APNs is HTTP/2 only");
        assert_eq!(request.path, format!("/3/device/{BOB_APNS_TOKEN}"));
        assert_eq!(request.headers["apns-topic"], APNS_TOPIC);
        assert_eq!(request.headers["apns-collapse-id"], direct.as_str());
    }
    let first_gap = requests[1].received_at - requests[0].received_at;
    let second_gap = requests[2].received_at - requests[1].received_at;
    assert!(first_gap >= backoff_base.mul_f64(0.9), "first retry after the base delay: {first_gap:?}");
    assert!(second_gap > first_gap, "delays grow: {first_gap:?} then {second_gap:?}");
    let payload: ApnsPayload = serde_json::from_slice(&requests[2].body)?;
    assert_eq!((payload.notification.count, payload.notification.seq), (1, 1));
    assert_eq!(payload.aps.alert.body, "New message", "content-free alert");
    let apns = system.push_metrics.snapshot_of(schemas::PushProvider::Apns);
    assert_eq!((apns.sent, apns.failed, apns.retried, apns.dead_lettered), (1, 2, 2, 0));
    Ok(())
}

fn axum_version_http2() -> axum::http::Version {
    axum::http::Version::HTTP_2
}

#[tokio::test]
async fn web_push_honours_retry_after_and_the_payload_decrypts_with_the_subscription_key() -> anyhow::Result<()> {
    let (system, stand_ins) = start(|config| {
        config.backoff_base = Duration::from_millis(50);
        config.coalesce_window = Duration::from_millis(100);
        config.content_free = false;
    })
    .await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    let subscriber = WebPushSubscriber::new(9);
    let endpoint = format!("{}/push/bob-laptop", stand_ins.webpush.base_url);
    register(&system.api(0, "bob"), "laptop", json!({"provider": "webpush", "subscription": subscriber.subscription_json(&endpoint)})).await?;
    stand_ins.webpush.script([ScriptedAnswer::status(503).with_header("Retry-After", "2")]);

    alice.send_text_ok(&direct, "m1", "hello bob").await?;
    requests_reach(&stand_ins.webpush, 2).await?;
    system.wait_until_push_settled(WAIT).await?;
    let requests = stand_ins.webpush.requests();
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_millis(1900), "Retry-After: 2 was honoured over the 50 ms backoff: {gap:?}");
    let delivered = &requests[1];
    assert_eq!(delivered.credentials, Ok(()), "VAPID token signed by our key, for this origin");
    assert_eq!(delivered.headers["content-encoding"], "aes128gcm");
    assert_eq!(delivered.headers["topic"].len(), 32);
    let notification: Value = serde_json::from_slice(&subscriber.decrypt(&delivered.body)?)?;
    assert_eq!(notification, json!({"type": "message", "conversation_id": direct, "count": 1, "seq": 1, "sender": "alice", "text": "hello bob"}));

    // End-to-end encrypted: never any content, whatever the configuration says.
    let (status, answer) = alice.post("/v1/messages", json!({"conversation_id": direct, "client_msg_id": "m2", "body": {"ciphertext": "c2VjcmV0"}})).await?;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    requests_reach(&stand_ins.webpush, 3).await?;
    let encrypted = &stand_ins.webpush.requests()[2];
    let notification: Value = serde_json::from_slice(&subscriber.decrypt(&encrypted.body)?)?;
    assert_eq!(notification, json!({"type": "message", "conversation_id": direct, "count": 2, "seq": 2}));
    Ok(())
}

#[tokio::test]
async fn a_provider_that_always_fails_ends_in_the_dead_letter_stream_after_max_deliver() -> anyhow::Result<()> {
    let (system, stand_ins) = start(|config| {
        config.max_attempts = 3;
        config.backoff_base = Duration::from_millis(100);
        config.coalesce_window = Duration::from_millis(100);
    })
    .await?;
    let nats = system.connect_nats().await?;
    let mut dead_letters = nats.subscribe("push-dead.>").await?;
    nats.flush().await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    register(&system.api(0, "bob"), "phone", json!({"provider": "fcm", "token": "bob-phone-token"})).await?;
    stand_ins.fcm.always(ScriptedAnswer::status(500).with_body(r#"{"error":{"code":500,"status":"INTERNAL"}}"#));

    alice.send_text_ok(&direct, "m1", "hello").await?;
    let dead_letter = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut dead_letters)).await?.expect("subscription open");
    assert_eq!(dead_letter.subject.as_str(), format!("push-dead.bob.phone.{direct}"));
    let headers = dead_letter.headers.expect("dead letters carry headers");
    let reason = headers.get(subjects::HEADER_PUSH_FAILURE_REASON).expect("a reason").to_string();
    assert!(reason.contains("gave up after 3 attempts") && reason.contains("500"), "{reason}");
    assert_eq!(headers.get(subjects::HEADER_PUSH_PROVIDER).map(ToString::to_string).as_deref(), Some("fcm"));
    let job = PushJob::from_bytes(&dead_letter.payload)?;
    assert_eq!((job.user.as_str(), job.device.as_str(), job.conversation_id.as_str()), ("bob", "phone", direct.as_str()));
    system.wait_until_push_settled(WAIT).await?;
    assert_eq!(stand_ins.fcm.requests().len(), 3, "max_deliver attempts, no more");
    let fcm = system.push_metrics.snapshot_of(schemas::PushProvider::Fcm);
    assert_eq!((fcm.sent, fcm.failed, fcm.retried, fcm.dead_lettered), (0, 3, 2, 1));
    Ok(())
}

#[tokio::test]
async fn invalid_token_answers_delete_the_registration() -> anyhow::Result<()> {
    let (system, stand_ins) = start(|config| config.coalesce_window = Duration::from_millis(100)).await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let direct = alice.create_direct("bob").await?.id;
    let subscriber = WebPushSubscriber::new(5);
    register(&bob, "phone", json!({"provider": "fcm", "token": "bob-phone-token"})).await?;
    register(&bob, "tablet", json!({"provider": "apns", "token": BOB_APNS_TOKEN})).await?;
    let endpoint = format!("{}/push/bob-laptop", stand_ins.webpush.base_url);
    register(&bob, "laptop", json!({"provider": "webpush", "subscription": subscriber.subscription_json(&endpoint)})).await?;
    stand_ins.fcm.script([fcm_unregistered()]);
    stand_ins.apns.script([ScriptedAnswer::status(410).with_body(r#"{"reason":"Unregistered","timestamp":1700000000000}"#)]);
    stand_ins.webpush.script([ScriptedAnswer::status(410)]);

    alice.send_text_ok(&direct, "m1", "hello").await?;
    let push = system.push_storage().await?;
    let (push, bob_id) = (&push, &Id::parse("bob")?);
    testkit::wait_until("every registration of bob is gone", WAIT, || async move { push.registrations_of(bob_id).await.is_ok_and(|left| left.is_empty()) }).await?;
    system.wait_until_push_settled(WAIT).await?;
    for provider in schemas::PushProvider::ALL {
        let counters = system.push_metrics.snapshot_of(provider);
        assert_eq!((counters.invalid_tokens, counters.sent, counters.dead_lettered), (1, 0, 0), "{counters:?}");
    }

    // With the registrations gone, the next message is pushed nowhere.
    alice.send_text_ok(&direct, "m2", "still there?").await?;
    system.wait_until_push_settled(WAIT).await?;
    assert_eq!(stand_ins.fcm.requests().len() + stand_ins.apns.requests().len() + stand_ins.webpush.requests().len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_message_deleted_before_its_push_goes_out_is_not_previewed() -> anyhow::Result<()> {
    let (system, stand_ins) = start(|config| {
        config.coalesce_window = Duration::from_millis(1500);
        config.content_free = false;
    })
    .await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    register(&system.api(0, "bob"), "phone", json!({"provider": "fcm", "token": "bob-phone-token"})).await?;
    alice.send_text_ok(&direct, "m1", "the secret plan").await?;
    // Well inside the coalescing window: the worker reads the conversation only when the window ends.
    let (status, body) = alice.request(reqwest::Method::DELETE, &format!("/v1/conversations/{direct}/messages/1"), None).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    requests_reach(&stand_ins.fcm, 1).await?;
    system.wait_until_push_settled(WAIT).await?;
    let requests = stand_ins.fcm.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let message = fcm_message(&requests[0].body).message;
    assert!(!String::from_utf8_lossy(&requests[0].body).contains("secret"), "{message:?}");
    assert!(!message.data.contains_key("text"), "{message:?}");
    Ok(())
}
