//! `/metrics`, `/healthz` and `/readyz` on the gateway and on every worker: they answer, counters move when the thing they count happens, and readiness follows NATS, streams and consumers.

use std::time::Duration;

use gateway::rate_limit::{ActionLimits, Bucket};
use push::providers::WebPushSettings;
use reqwest::StatusCode;
use testkit::push_standins::{self, fixture, WebPushSubscriber};
use testkit::{sample_value, scrape_metrics, wait_until, OperationsEndpoint, TestSystem, WorkerRole};

const WAIT: Duration = Duration::from_secs(30);

async fn get(url: &str) -> anyhow::Result<(StatusCode, String)> {
    let response = reqwest::get(url).await?;
    Ok((response.status(), response.text().await?))
}

async fn is_ready(base_url: &str) -> bool {
    get(&format!("{base_url}/readyz")).await.is_ok_and(|(status, _)| status == StatusCode::OK)
}

async fn is_not_ready(base_url: &str) -> bool {
    get(&format!("{base_url}/readyz")).await.is_ok_and(|(status, _)| status == StatusCode::SERVICE_UNAVAILABLE)
}

/// The sample's value now, 0 when the series has not appeared yet (a labelled counter appears on its first increment).
async fn current(base_url: &str, series: &str) -> anyhow::Result<f64> {
    Ok(sample_value(&scrape_metrics(base_url).await?, series).unwrap_or(0.0))
}

async fn wait_until_above(base_url: &str, series: &str, floor: f64) -> anyhow::Result<()> {
    wait_until(&format!("{series} rises above {floor}"), WAIT, || async move { current(base_url, series).await.is_ok_and(|value| value > floor) }).await
}

fn webpush_only() -> WebPushSettings {
    WebPushSettings { vapid_key_pem: fixture("vapid.key.pem"), vapid_subject: "mailto:ops@natter.test".to_owned(), allow_http_endpoints: true }
}

/// Every role running, each worker with its operations endpoint: the system, the endpoints (kept alive), and every base URL, the gateway's first.
pub async fn every_role_with_operations() -> anyhow::Result<(TestSystem, Vec<OperationsEndpoint>, Vec<String>)> {
    let system = TestSystem::builder().with_media().with_search().with_push(|config| config.webpush = Some(webpush_only())).start().await?;
    let mut base_urls = vec![system.http_url(0)];
    let mut workers = Vec::new();
    for role in [WorkerRole::Fanout, WorkerRole::Media, WorkerRole::Push, WorkerRole::Indexer] {
        let endpoint = system.serve_worker_operations(role).await?;
        base_urls.push(endpoint.url.clone());
        workers.push(endpoint);
    }
    Ok((system, workers, base_urls))
}

#[tokio::test]
async fn the_gateway_and_every_worker_serve_metrics_health_and_readiness() -> anyhow::Result<()> {
    let (system, _workers, endpoints) = every_role_with_operations().await?;
    for base_url in &endpoints {
        assert_eq!(get(&format!("{base_url}/healthz")).await?, (StatusCode::OK, "ok".to_owned()), "{base_url}");
        wait_until(&format!("{base_url} is ready"), WAIT, || is_ready(base_url)).await?;
        let response = reqwest::get(format!("{base_url}/metrics")).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str()?.to_owned();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        let scrape = response.text().await?;
        assert!(scrape.trim_end().ends_with("# EOF"), "a complete OpenMetrics exposition from {base_url}");
        assert!(scrape.contains("# TYPE natter_connections gauge"), "{scrape}");
    }
    // Each worker's backlog sampler reports its own durable consumer.
    for series in [
        "natter_consumer_pending{stream=\"MESSAGES\",consumer=\"fanout\"}",
        "natter_consumer_pending{stream=\"MEDIA_JOBS\",consumer=\"media\"}",
        "natter_consumer_pending{stream=\"PUSH\",consumer=\"push\"}",
    ] {
        let gateway = system.http_url(0);
        wait_until(&format!("{series} is sampled"), WAIT, || {
            let gateway = gateway.clone();
            async move { scrape_metrics(&gateway).await.is_ok_and(|scrape| sample_value(&scrape, series).is_some()) }
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_delivered_message_moves_the_delivery_publish_ack_and_connection_metrics() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let gateway = system.http_url(0);
    let deliveries_before = current(&gateway, "natter_delivery_latency_seconds_count").await?;
    let publish_acks_before = current(&gateway, "natter_publish_ack_latency_seconds_count").await?;
    let connects_before = current(&gateway, "natter_connects_total").await?;
    let disconnects_before = current(&gateway, "natter_disconnects_total").await?;

    let alice = system.api(0, "alice");
    let group = alice.create_group("metered", &["bob"]).await?.id;
    let mut bob = system.connect(0, "bob", "phone").await?;
    wait_until_above(&gateway, "natter_connections", 0.0).await?;
    assert!(current(&gateway, "natter_connects_total").await? > connects_before);
    alice.send_text_ok(&group, "m1", "hello").await?;
    bob.messages_until(&group, 1, WAIT).await?;

    wait_until_above(&gateway, "natter_delivery_latency_seconds_count", deliveries_before).await?;
    assert!(current(&gateway, "natter_publish_ack_latency_seconds_count").await? > publish_acks_before, "the append's PubAck was timed");
    let scrape = scrape_metrics(&gateway).await?;
    let latency_sum = sample_value(&scrape, "natter_delivery_latency_seconds_sum").expect("the histogram has a sum");
    assert!(latency_sum < 30.0, "a local delivery takes far less than the test's whole wait, got {latency_sum} s");

    drop(bob);
    wait_until_above(&gateway, "natter_disconnects_total", disconnects_before).await?;
    wait_until("no connection is left open", WAIT, || async { current(&gateway, "natter_connections").await.is_ok_and(|open| open == 0.0) }).await?;
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_refusal_is_counted_by_action() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| config.rate_limits.send = ActionLimits { per_user: Some(Bucket { burst: 1, per_second: 0.01 }), per_address: None })
        .start()
        .await?;
    let gateway = system.http_url(0);
    let series = "natter_rate_limit_refusals_total{action=\"send\"}";
    let before = current(&gateway, series).await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("limited", &["bob"]).await?.id;
    alice.send_text_ok(&group, "m1", "one").await?;
    let (status, body) = alice.send_text(&group, "m2", "two").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(current(&gateway, series).await?, before + 1.0, "exactly the one refusal");
    Ok(())
}

#[tokio::test]
async fn a_device_closed_for_falling_behind_is_counted_by_reason() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateway_config(|config| config.limits.outbound_queue_frames = 16).start().await?;
    let gateway = system.http_url(0);
    let series = "natter_slow_consumer_disconnects_total{reason=\"queue_full\"}";
    let before = current(&gateway, series).await?;
    let ann = system.api(0, "ann");
    let group = ann.create_group("firehose", &["sid"]).await?;
    // Connected and never read from: the socket buffers fill, then the bounded queue behind them.
    let mut sleepy = system.connect(0, "sid", "phone").await?;
    let text = "z".repeat(60 * 1024);
    let mut index = 0;
    while current(&gateway, series).await? <= before {
        index += 1;
        anyhow::ensure!(index <= 2_000, "2,000 large messages never overflowed a 16-frame queue");
        ann.send_text_ok(&group.id, &format!("m{index}"), &text).await?;
    }
    let (_, close) = sleepy.frames_until_closed(WAIT).await?;
    assert_eq!(close.map(|close| u16::from(close.code)), Some(1013), "the counted disconnect is the one the device saw");
    Ok(())
}

#[tokio::test]
async fn readiness_waits_for_streams_and_consumers_and_follows_nats_down_and_back() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().gateways(0).fanouts(0).start().await?;
    let fanout = system.serve_worker_operations(WorkerRole::Fanout).await?;
    let (status, body) = get(&format!("{}/readyz", fanout.url)).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no stream yet: {body}");
    assert!(body.contains("stream MESSAGES"), "{body}");

    // The gateway provisions the streams; the fanout's durable consumer is still missing.
    system.add_gateway().await?;
    let gateway = system.http_url(0);
    wait_until("the gateway is ready", WAIT, || is_ready(&gateway)).await?;
    let (status, body) = get(&format!("{}/readyz", fanout.url)).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no consumer yet: {body}");
    assert!(body.contains("consumer MESSAGES/fanout"), "{body}");
    system.add_fanout().await?;
    wait_until("the fanout is ready", WAIT, || is_ready(&fanout.url)).await?;

    system.nats.server_mut().kill().await;
    wait_until("the gateway reports NATS down", WAIT, || is_not_ready(&gateway)).await?;
    wait_until("the fanout reports NATS down", WAIT, || is_not_ready(&fanout.url)).await?;
    let (_, body) = get(&format!("{gateway}/readyz")).await?;
    assert!(body.contains("nats"), "{body}");
    // Liveness is not readiness: the process is alive and says so.
    assert_eq!(get(&format!("{gateway}/healthz")).await?.0, StatusCode::OK);

    system.nats.server_mut().restart().await?;
    wait_until("the gateway is ready again", WAIT, || is_ready(&gateway)).await?;
    wait_until("the fanout is ready again", WAIT, || is_ready(&fanout.url)).await?;
    Ok(())
}

#[tokio::test]
async fn readiness_names_redis_while_it_is_down_for_the_roles_that_use_it() -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    let gateway = system.http_url(0);
    let fanout = system.serve_worker_operations(WorkerRole::Fanout).await?;
    for base_url in [gateway.as_str(), fanout.url.as_str()] {
        wait_until(&format!("{base_url} is ready"), WAIT, || is_ready(base_url)).await?;
    }
    system.redis().kill().await;
    for base_url in [gateway.as_str(), fanout.url.as_str()] {
        wait_until(&format!("{base_url} reports Redis down"), WAIT, || is_not_ready(base_url)).await?;
        let (_, body) = get(&format!("{base_url}/readyz")).await?;
        assert!(body.contains("redis"), "{base_url}: {body}");
    }
    system.redis().restart().await?;
    for base_url in [gateway.as_str(), fanout.url.as_str()] {
        wait_until(&format!("{base_url} is ready again"), WAIT, || is_ready(base_url)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_delivered_push_is_counted_by_provider_and_outcome() -> anyhow::Result<()> {
    let webpush_service = push_standins::start_webpush().await?;
    let system = TestSystem::builder()
        .with_push(|config| {
            config.webpush = Some(webpush_only());
            config.coalesce_window = Duration::from_millis(100);
        })
        .start()
        .await?;
    let gateway = system.http_url(0);
    let series = "natter_push_outcomes_total{provider=\"webpush\",outcome=\"sent\"}";
    assert_eq!(sample_value(&scrape_metrics(&gateway).await?, series), Some(0.0), "declared at zero before the first push");
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    let endpoint = format!("{}/push/bob-laptop", webpush_service.base_url);
    let registration = serde_json::json!({"provider": "webpush", "subscription": WebPushSubscriber::new(3).subscription_json(&endpoint)});
    let (status, body) = system.api(0, "bob").post("/v1/devices/laptop/push", registration).await?;
    anyhow::ensure!(status == StatusCode::NO_CONTENT, "register: {status} {body}");
    // Bob is offline; the fanout learns of his registration through a KV watch, so early sends may pass it by.
    let mut sends = 0;
    wait_until("a push is sent and counted", WAIT, || {
        sends += 1;
        let alice = alice.clone();
        let direct = direct.clone();
        let gateway = gateway.clone();
        async move {
            if sends % 20 == 1 {
                let _ = alice.send_text_ok(&direct, &format!("m{sends}"), "are you there?").await;
            }
            current(&gateway, series).await.is_ok_and(|sent| sent >= 1.0)
        }
    })
    .await?;
    assert!(!webpush_service.requests().is_empty(), "the counted push reached the push service");
    Ok(())
}
