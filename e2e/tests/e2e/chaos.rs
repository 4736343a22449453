//! Chaos with accounting on a single NATS node: gateways and every worker type (fanout, indexer, media, push) SIGKILLed mid-run, nats-server killed and restarted from its store, and a rolling restart of every gateway; every acked message must reach every member device once, in order.

use std::time::Duration;

use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::chaos::{offline_member, search_token, Chaos, ChaosPlan, ChaosReport};
use testkit::push_standins::{self, WebPushSubscriber};
use testkit::{wait_until, Api, ProcessSystem};

pub(crate) const ROLE_BINARY: &str = env!("CARGO_BIN_EXE_role_process");
/// Patience for a phase of the run on a busy 2-core machine; a healthy phase takes a second or two.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
/// Acked sends between faults, so that each fault lands in the middle of traffic.
const SENDS_PER_PHASE: usize = 150;

/// Stops the workload, prints its accounting, and fails (showing every role's log) unless nothing was lost.
pub(crate) async fn finish(chaos: Chaos, scenario: &str, system: &mut ProcessSystem) -> anyhow::Result<ChaosReport> {
    let report = chaos.finish(scenario, system).await?;
    println!("{report}");
    report.ensure_nothing_lost().inspect_err(|_| eprintln!("{}", system.log_tails()))?;
    system.ensure_all_running()?;
    Ok(report)
}

#[tokio::test]
async fn chaos_a_gateway_killed_mid_run_loses_nothing_and_its_clients_resume_on_another()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(3)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.gateways[1].kill().await;
    // Its clients carry on through the other two.
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.gateways[1].restart()?;
    system.wait_gateway_ready(1).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "gateway 1 of 3 SIGKILLed, then restarted",
        &mut system,
    )
    .await?;
    assert!(
        report.reconnects > 0,
        "the killed gateway's devices reconnected elsewhere: {report}"
    );
    Ok(())
}

#[tokio::test]
async fn chaos_a_rolling_restart_of_every_gateway_tells_clients_to_reconnect_and_loses_nothing()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(3)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    for gateway in 0..system.gateways.len() {
        chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
        system.gateways[gateway].terminate().await?;
        chaos
            .wait_for_acks(SENDS_PER_PHASE / 2, PHASE_DEADLINE)
            .await?;
        system.gateways[gateway].restart()?;
        system.wait_gateway_ready(gateway).await?;
    }
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "rolling restart (SIGTERM) of gateways 0, 1, 2",
        &mut system,
    )
    .await?;
    let going_away = report.server_closes.get(&1001).copied().unwrap_or(0);
    assert!(
        going_away > 0,
        "a stopping gateway closes its sockets with 1001 and a reason: {report}"
    );
    Ok(())
}

#[tokio::test]
async fn chaos_a_fanout_and_an_indexer_killed_mid_run_lose_nothing_and_search_finds_every_acked_message()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(2)
        .fanouts(2)
        .with_indexer()
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.fanouts[0].kill().await;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    // Both fanouts down: deliveries wait in the stream, sends go on.
    system.fanouts[1].kill().await;
    let indexer = system.indexer.as_mut().expect("started with an indexer");
    indexer.kill().await;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.fanouts[0].restart()?;
    system.fanouts[1].restart()?;
    system
        .indexer
        .as_mut()
        .expect("started with an indexer")
        .restart()?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "fanouts and indexer SIGKILLed, then restarted",
        &mut system,
    )
    .await?;

    // The restarted indexer resumes from its last commit: every acked message is searchable exactly once.
    for (conversation, client_msg_id) in &report.acked_messages {
        let sender = client_msg_id
            .split('-')
            .next()
            .expect("client_msg_ids start with the sender");
        let api = system.api(0, sender);
        let query = format!(
            "/v1/search?q={}&conversation_id={conversation}",
            search_token(client_msg_id)
        );
        wait_until(
            &format!("search finds {client_msg_id}"),
            PHASE_DEADLINE,
            || {
                let api = api.clone();
                let query = query.clone();
                async move {
                    let Ok((status, body)) = api.get(&query).await else {
                        return false;
                    };
                    let hits = body["hits"].as_array().cloned().unwrap_or_default();
                    status.is_success()
                        && hits.len() == 1
                        && hits[0]["message"]["client_msg_id"]
                            == Value::String(client_msg_id.clone())
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn chaos_nats_server_killed_and_restarted_from_its_store_loses_nothing() -> anyhow::Result<()>
{
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(2)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let failed_before = chaos.failed_attempts();
    system
        .nats
        .as_mut()
        .expect("the system started its own nats-server")
        .kill()
        .await;
    // Every sender retries every 100 ms: a hundred refusals make an outage of about a second.
    wait_until(
        "sends fail while nats-server is down",
        PHASE_DEADLINE,
        || async { chaos.failed_attempts() >= failed_before + 100 },
    )
    .await?;
    system
        .nats
        .as_mut()
        .expect("the system started its own nats-server")
        .restart()
        .await?;
    chaos
        .wait_for_acks(SENDS_PER_PHASE * 2, PHASE_DEADLINE)
        .await?;
    let report = finish(
        chaos,
        "nats-server SIGKILLed, restarted from its store",
        &mut system,
    )
    .await?;
    assert!(
        report.longest_send_failure > Duration::ZERO,
        "sends failed during the outage: {report}"
    );
    Ok(())
}

/// Grants and uploads a small text file as `api`'s user; returns the media id.
async fn upload_note(api: &Api, text: &str) -> anyhow::Result<String> {
    let (status, grant) = api.post("/v1/media", json!({"content_type": "text/plain", "size": text.len()})).await?;
    anyhow::ensure!(status == StatusCode::CREATED, "grant: {status} {grant}");
    let upload_url = grant["upload_url"].as_str().expect("grants carry an upload_url");
    let response = reqwest::Client::new().put(upload_url).body(text.to_owned()).send().await?;
    anyhow::ensure!(response.status() == StatusCode::CREATED, "upload: {}", response.status());
    Ok(grant["media_id"].as_str().expect("grants carry a media_id").to_owned())
}

async fn media_status(api: &Api, media_id: &str) -> Option<String> {
    let (status, body) = api.get(&format!("/v1/media/{media_id}")).await.ok()?;
    status.is_success().then(|| body["status"].as_str().unwrap_or_default().to_owned())
}

async fn stream_messages(jetstream: &async_nats::jetstream::Context, stream: &str) -> Option<u64> {
    Some(jetstream.get_stream(stream).await.ok()?.info().await.ok()?.state.messages)
}

#[tokio::test]
async fn chaos_media_and_push_workers_killed_mid_run_finish_every_job() -> anyhow::Result<()> {
    let webpush = push_standins::start_webpush().await?;
    let vapid_key = concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/fixtures/push/vapid.key.pem");
    let push_environment = [
        ("NATTER_PUSH_VAPID_KEY_FILE", vapid_key),
        ("NATTER_PUSH_VAPID_SUBJECT", "mailto:ops@natter.test"),
        ("NATTER_PUSH_WEBPUSH_ALLOW_HTTP", "true"),
        ("NATTER_PUSH_BACKOFF_BASE_MILLIS", "50"),
    ];
    let push_environment = push_environment.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
    let mut system = ProcessSystem::builder(ROLE_BINARY).gateways(2).with_media().with_push(push_environment).start().await?;
    let plan = ChaosPlan { offline_member_per_group: true, ..ChaosPlan::default() };
    for group in 0..plan.groups {
        let user = offline_member(group);
        let subscriber = WebPushSubscriber::new(group as u8 + 1);
        let endpoint = format!("{}/push/{user}", webpush.base_url);
        let (status, body) = system.api(0, &user).post("/v1/devices/phone/push", json!({"provider": "webpush", "subscription": subscriber.subscription_json(&endpoint)})).await?;
        anyhow::ensure!(status == StatusCode::NO_CONTENT, "register {user}: {status} {body}");
    }
    let uploader = system.api(1, "u0");
    let chaos = Chaos::start(&system, plan.clone()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;

    // Both workers die; uploads and notifications queue up behind them while the chat goes on.
    system.media.as_mut().expect("started with media").kill().await;
    system.push.as_mut().expect("started with push").kill().await;
    let mut uploads = Vec::new();
    for number in 0..5 {
        uploads.push(upload_note(&uploader, &format!("note {number} written while the media worker was dead")).await?);
    }
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let pushes_before_restart = webpush.requests().len();
    system.media.as_mut().expect("started with media").restart()?;
    system.push.as_mut().expect("started with push").restart()?;

    // Killed again with work in flight: the next uploads land while it restarts.
    let first = uploads[0].clone();
    wait_until("the restarted media worker finishes a job", PHASE_DEADLINE, || media_status(&uploader, &first).map(|status| status.as_deref() == Some("ready"))).await?;
    system.media.as_mut().expect("started with media").kill().await;
    for number in 0..3 {
        uploads.push(upload_note(&uploader, &format!("note {number} written around the second crash")).await?);
    }
    system.media.as_mut().expect("started with media").restart()?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    finish(chaos, "media and push workers SIGKILLed with jobs queued, then restarted", &mut system).await?;

    for media_id in &uploads {
        wait_until(&format!("upload {media_id} is scanned and ready"), PHASE_DEADLINE, || media_status(&uploader, media_id).map(|status| status.as_deref() == Some("ready"))).await?;
    }
    let jetstream = async_nats::jetstream::new(async_nats::connect(system.nats_urls()).await?);
    wait_until("every push job is done", PHASE_DEADLINE, || stream_messages(&jetstream, subjects::PUSH_STREAM).map(|messages| messages == Some(0))).await?;
    let dead_letters = stream_messages(&jetstream, subjects::PUSH_DEAD_LETTER_STREAM).await.unwrap_or(0);
    let requests = webpush.requests();
    for group in 0..plan.groups {
        let path = format!("/push/{}", offline_member(group));
        let after_restart = requests[pushes_before_restart..].iter().filter(|request| request.path == path).count();
        assert!(after_restart > 0, "{path} was notified of what was queued while the push worker was dead");
    }
    println!("workers: {} uploads, all ready; {} web pushes ({} after the push worker's restart), {dead_letters} dead letters, push queue empty", uploads.len(), requests.len(), requests.len() - pushes_before_restart);
    assert_eq!(dead_letters, 0, "no push job was given up on");
    Ok(())
}
