//! A request id made by the gateway rides on the appended log entry and on the fanout's deliveries, so one send can be followed through every role's logs.

use std::time::Duration;

use futures::StreamExt;
use subjects::Id;
use testkit::{wait_until, TestSystem};

const WAIT: Duration = Duration::from_secs(20);

fn request_id_of(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    headers?.get(subjects::HEADER_REQUEST_ID).map(|value| value.as_str().to_owned())
}

#[tokio::test]
async fn a_sends_request_id_is_on_its_log_entry_and_on_every_delivery() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let nats = system.connect_nats().await?;
    let mut bob_deliveries = nats.subscribe(subjects::deliver_subject(&Id::parse("bob")?)).await?;
    nats.flush().await?;

    let alice = system.api(0, "alice");
    let group = alice.create_group("traced", &["bob"]).await?.id;
    // One send over HTTP and one over a socket: each path names its own request.
    alice.send_text_ok(&group, "http-1", "over http").await?;
    let mut socket = system.connect(0, "alice", "laptop").await?;
    socket.send_text(&group, "ws-1", "over the socket").await?;

    let stream = async_nats::jetstream::new(nats.clone()).get_stream(subjects::MESSAGE_STREAM).await?;
    let mut logged = Vec::new();
    for stream_seq in 1..=2 {
        let entry = stream.get_raw_message(stream_seq).await?;
        let request_id = request_id_of(Some(&entry.headers)).expect("every appended entry names its request");
        assert!(ulid_like(&request_id), "{request_id}");
        logged.push(request_id);
    }
    assert_ne!(logged[0], logged[1], "an HTTP send and a socket's sends are different requests");

    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let delivery = tokio::time::timeout(WAIT, bob_deliveries.next()).await?.expect("the subscription stays open");
        // The same subject carries events (membership, receipts); only message deliveries have a `seq` header.
        if delivery.headers.as_ref().is_some_and(|headers| headers.get(subjects::HEADER_SEQ).is_some()) {
            delivered.push(request_id_of(delivery.headers.as_ref()).expect("the fanout passes the request id on"));
        }
    }
    delivered.sort();
    logged.sort();
    assert_eq!(delivered, logged, "each delivery carries its own entry's id");
    Ok(())
}

fn ulid_like(text: &str) -> bool {
    text.len() == 26 && text.chars().all(|character| character.is_ascii_alphanumeric())
}

#[tokio::test]
async fn a_push_job_names_the_send_that_began_its_burst() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("pushed", &["bob"]).await?.id;
    // Bob has a phone registered for pushes and no connection: he is offline, so his messages are pushed.
    let (status, body) = system.api(0, "bob").post("/v1/devices/phone/push", serde_json::json!({"provider": "fcm", "token": "bob-token"})).await?;
    anyhow::ensure!(status == reqwest::StatusCode::NO_CONTENT, "register: {status} {body}");

    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    let push_jobs = jetstream.get_stream(subjects::PUSH_STREAM).await?;
    // The fanout learns of a registration through a KV watch: a send in the first milliseconds may miss it.
    let mut sends = 0;
    wait_until("a push job is queued", WAIT, || {
        sends += 1;
        let alice = alice.clone();
        let group = group.clone();
        let mut push_jobs = push_jobs.clone();
        async move {
            let sent = alice.send_text_ok(&group, &format!("m{sends}"), "are you there?").await.is_ok();
            sent && push_jobs.info().await.is_ok_and(|info| info.state.messages > 0)
        }
    })
    .await?;

    let job = push_jobs.get_raw_message(push_jobs.clone().info().await?.state.first_sequence).await?;
    let job_request_id = request_id_of(Some(&job.headers)).expect("the push job names its request");
    let log = jetstream.get_stream(subjects::MESSAGE_STREAM).await?;
    let mut log_request_ids = Vec::new();
    for stream_seq in 1..=log.clone().info().await?.state.last_sequence {
        log_request_ids.extend(request_id_of(Some(&log.get_raw_message(stream_seq).await?.headers)));
    }
    assert!(log_request_ids.contains(&job_request_id), "{job_request_id} is one of the sends' ids {log_request_ids:?}");
    Ok(())
}
