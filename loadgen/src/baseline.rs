//! The raw-NATS baseline: the same shape as a Natter send with no Natter code in the path.
//!
//! publisher (JetStream publish to `bench.msg.<group>` with Nats-Expected-Last-Subject-Sequence, one
//! in flight per conversation) → durable pull consumer `bench-fanout` (core publish to
//! `bench.deliver.<user>` for every member, then ack) → one NATS subscriber per user. These
//! subjects belong to the benchmark, not to Natter, which is why they are spelled here and not in
//! `subjects`.

use std::sync::Arc;

use anyhow::Context;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::clock::unix_nanos_now;
use crate::natter_clients::{CurrentPhase, MESSAGE_TEXT};
use crate::plan::{ClientSpec, Phase, Population};
use crate::recorder::{Recorder, Sample};

const STREAM: &str = "BENCH";
const CONSUMER: &str = "bench-fanout";

fn message_subject(group: usize) -> String {
    format!("bench.msg.{group}")
}

fn deliver_subject(user: &str) -> String {
    format!("bench.deliver.{user}")
}

/// `<client_msg_id> <sender client> <text>`: about the size of a Natter message frame's payload.
fn payload(phase_tag: &str, index: u64, sender: usize) -> bytes::Bytes {
    format!("{} {sender} {MESSAGE_TEXT}{MESSAGE_TEXT}", crate::plan::client_msg_id(phase_tag, index)).into()
}

/// A fresh stream, like MESSAGES: file storage, direct gets on; an old one from an earlier run is replaced.
pub async fn provision(nats_url: &str) -> anyhow::Result<()> {
    let jetstream = jetstream::new(async_nats::connect(nats_url).await.context("baseline: connect to NATS")?);
    let _ = jetstream.delete_stream(STREAM).await;
    jetstream
        .create_stream(jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["bench.msg.>".to_owned()],
            storage: jetstream::stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .context("baseline: create the stream")?;
    Ok(())
}

/// The publisher: one task per conversation keeps that conversation's last stream sequence and has one publish in flight.
pub struct BaselinePublisher {
    conversations: Vec<mpsc::UnboundedSender<(Phase, u64)>>,
    tasks: JoinSet<()>,
    population: Population,
}

impl BaselinePublisher {
    pub async fn start(population: Population, nats_url: &str, recorder: Arc<Recorder>) -> anyhow::Result<BaselinePublisher> {
        let jetstream = jetstream::new(async_nats::connect(nats_url).await.context("baseline publisher: connect")?);
        let mut tasks = JoinSet::new();
        let mut conversations = Vec::new();
        for group in 0..population.groups {
            let (sends_tx, sends_rx) = mpsc::unbounded_channel();
            tasks.spawn(publish_conversation(jetstream.clone(), group, sends_rx, recorder.clone()));
            conversations.push(sends_tx);
        }
        Ok(BaselinePublisher { conversations, tasks, population })
    }

    pub async fn run_sends(&self, phase: &Phase, recorder: &Recorder) {
        for index in 0..phase.total_sends() {
            crate::clock::sleep_until_unix(phase.due_unix_nanos(index)).await;
            let group = self.population.group_of(self.population.sender_of(index));
            recorder.note_send_made();
            if phase.is_measured(index) {
                recorder.count_send();
            }
            let _ = self.conversations[group].send((phase.clone(), index));
        }
    }

    pub fn close(mut self) {
        self.conversations.clear();
        self.tasks.abort_all();
    }
}

async fn publish_conversation(jetstream: jetstream::Context, group: usize, mut sends_rx: mpsc::UnboundedReceiver<(Phase, u64)>, recorder: Arc<Recorder>) {
    let subject = message_subject(group);
    let mut last_stream_seq = 0u64;
    while let Some((phase, index)) = sends_rx.recv().await {
        let sender = phase.population.sender_of(index);
        loop {
            let publish = PublishMessage::build().payload(payload(&phase.tag, index, sender)).expected_last_subject_sequence(last_stream_seq);
            let outcome = match jetstream.send_publish(subject.clone(), publish).await {
                Ok(ack_future) => ack_future.await,
                Err(error) => {
                    recorder.count_error(|| format!("baseline publish: {error}"));
                    break;
                }
            };
            match outcome {
                Ok(ack) => {
                    last_stream_seq = ack.sequence;
                    let latency = unix_nanos_now() as i64 - phase.due_unix_nanos(index) as i64;
                    recorder.note_ack(latency);
                    if phase.is_measured(index) {
                        recorder.record(Sample::Ack, latency);
                    }
                    break;
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    // Only after a restart with an old stream; reload the tail as the gateway would.
                    last_stream_seq = last_sequence_of(&jetstream, &subject).await;
                }
                Err(error) => {
                    recorder.count_error(|| format!("baseline publish ack: {error}"));
                    break;
                }
            }
        }
    }
}

async fn last_sequence_of(jetstream: &jetstream::Context, subject: &str) -> u64 {
    let Ok(stream) = jetstream.get_stream(STREAM).await else { return 0 };
    stream.get_last_raw_message_by_subject(subject).await.map(|message| message.sequence).unwrap_or(0)
}

/// The fanout analogue: pull, core-publish to each member, ack; one message at a time, as Natter's worker does.
pub async fn run_fanout(population: Population, nats_url: &str) -> anyhow::Result<()> {
    let nats = async_nats::connect(nats_url).await.context("baseline fanout: connect")?;
    let jetstream = jetstream::new(nats.clone());
    let stream = jetstream.get_stream(STREAM).await.context("baseline fanout: the stream")?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            jetstream::consumer::pull::Config { durable_name: Some(CONSUMER.to_owned()), ack_policy: jetstream::consumer::AckPolicy::Explicit, ..Default::default() },
        )
        .await
        .context("baseline fanout: the consumer")?;
    let mut messages = consumer.messages().await.context("baseline fanout: pull")?;
    let users: Vec<String> = (0..population.clients()).map(|client| deliver_subject(&crate::plan::user_name(client))).collect();
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(_) => continue,
        };
        let Some(group) = message.subject.as_str().strip_prefix("bench.msg.").and_then(|group| group.parse::<usize>().ok()) else {
            let _ = message.ack().await;
            continue;
        };
        for member in population.members_of(group) {
            let _ = nats.publish(users[member].clone(), message.payload.clone()).await;
        }
        let _ = message.ack().await;
    }
    Ok(())
}

/// One NATS connection per user, as a client would have, subscribed to its delivery subject.
pub async fn subscribe_all(nats_url: &str, clients: Vec<ClientSpec>, recorder: Arc<Recorder>, phase: CurrentPhase) -> (JoinSet<()>, crate::natter_clients::ConnectOutcome) {
    let mut tasks = JoinSet::new();
    let mut outcome = crate::natter_clients::ConnectOutcome { connected: 0, failed: 0, first_error: None };
    for spec in clients {
        let subscribed = async {
            let client = async_nats::connect(nats_url).await?;
            let subscriber = client.subscribe(deliver_subject(&spec.user)).await?;
            client.flush().await?;
            anyhow::Ok((client, subscriber))
        }
        .await;
        match subscribed {
            Ok((client, subscriber)) => {
                outcome.connected += 1;
                tasks.spawn(receive_deliveries(client, subscriber, spec.client, recorder.clone(), phase.clone()));
            }
            Err(error) => {
                outcome.failed += 1;
                outcome.first_error.get_or_insert_with(|| format!("subscriber {}: {error:#}", spec.user));
            }
        }
    }
    (tasks, outcome)
}

async fn receive_deliveries(_client: async_nats::Client, mut subscriber: async_nats::Subscriber, me: usize, recorder: Arc<Recorder>, phase: CurrentPhase) {
    while let Some(message) = subscriber.next().await {
        let arrived = unix_nanos_now();
        let text = String::from_utf8_lossy(&message.payload);
        let mut words = text.splitn(3, ' ');
        let (Some(client_msg_id), Some(sender)) = (words.next(), words.next()) else { continue };
        let phase_guard = phase.read().expect("phase lock is never poisoned");
        let Some(phase) = phase_guard.as_ref() else { continue };
        let Some(index) = crate::plan::send_index_of(&phase.tag, client_msg_id) else { continue };
        recorder.count_frame();
        if phase.is_measured(index) {
            let sample = if sender.parse::<usize>().ok() == Some(me) { Sample::OwnEcho } else { Sample::Delivery };
            recorder.record(sample, arrived as i64 - phase.due_unix_nanos(index) as i64);
        }
    }
}
