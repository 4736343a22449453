//! The raw-NATS baseline: the same shape as a Natter send with no Natter code in the path.
//!
//! publisher (JetStream publish to `bench.msg.<shard>.<group>` with Nats-Expected-Last-Subject-Sequence, one
//! in flight per conversation) → durable pull consumer `bench-fanout` on each shard's stream (core publish to
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
use serde::{Deserialize, Serialize};

const STREAM: &str = "BENCH";
const CONSUMER: &str = "bench-fanout";

/// How the baseline's log is laid out: like Natter's `MESSAGES`, `MESSAGES_1`…, a stream per shard
/// (`BENCH`, `BENCH_1`…) with `replicas` copies each; group `g` lives on shard `g mod shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineLayout {
    pub shards: usize,
    pub replicas: usize,
}

impl Default for BaselineLayout {
    fn default() -> BaselineLayout {
        BaselineLayout { shards: 1, replicas: 1 }
    }
}

impl BaselineLayout {
    fn shard_of(&self, group: usize) -> usize {
        group % self.shards.max(1)
    }

    fn message_subject(&self, group: usize) -> String {
        format!("bench.msg.{}.{group}", self.shard_of(group))
    }
}

fn stream_name(shard: usize) -> String {
    match shard {
        0 => STREAM.to_owned(),
        shard => format!("{STREAM}_{shard}"),
    }
}

fn deliver_subject(user: &str) -> String {
    format!("bench.deliver.{user}")
}

/// `<client_msg_id> <sender client> <text>`: about the size of a Natter message frame's payload.
fn payload(phase_tag: &str, index: u64, sender: usize) -> bytes::Bytes {
    format!("{} {sender} {MESSAGE_TEXT}{MESSAGE_TEXT}", crate::plan::client_msg_id(phase_tag, index)).into()
}

/// Fresh streams, like MESSAGES: file storage, direct gets on; old ones from an earlier run are replaced.
pub async fn provision(nats_url: &str, layout: BaselineLayout) -> anyhow::Result<()> {
    let jetstream = jetstream::new(devservers::connect_nats(nats_url).await.context("baseline: connect to NATS")?);
    for shard in 0..layout.shards.max(1) {
        let _ = jetstream.delete_stream(stream_name(shard)).await;
        jetstream
            .create_stream(jetstream::stream::Config {
                name: stream_name(shard),
                subjects: vec![format!("bench.msg.{shard}.>")],
                storage: jetstream::stream::StorageType::File,
                allow_direct: true,
                num_replicas: layout.replicas.max(1),
                ..Default::default()
            })
            .await
            .with_context(|| format!("baseline: create the stream {}", stream_name(shard)))?;
    }
    Ok(())
}

/// The publisher: one task per conversation keeps that conversation's last stream sequence and has one publish in flight.
pub struct BaselinePublisher {
    conversations: Vec<mpsc::UnboundedSender<(Phase, u64)>>,
    tasks: JoinSet<()>,
    population: Population,
}

impl BaselinePublisher {
    pub async fn start(population: Population, layout: BaselineLayout, nats_url: &str, recorder: Arc<Recorder>) -> anyhow::Result<BaselinePublisher> {
        let jetstream = jetstream::new(devservers::connect_nats(nats_url).await.context("baseline publisher: connect")?);
        let mut tasks = JoinSet::new();
        let mut conversations = Vec::new();
        for group in 0..population.groups {
            let (sends_tx, sends_rx) = mpsc::unbounded_channel();
            tasks.spawn(publish_conversation(jetstream.clone(), layout, group, sends_rx, recorder.clone()));
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

async fn publish_conversation(jetstream: jetstream::Context, layout: BaselineLayout, group: usize, mut sends_rx: mpsc::UnboundedReceiver<(Phase, u64)>, recorder: Arc<Recorder>) {
    let subject = layout.message_subject(group);
    let stream = stream_name(layout.shard_of(group));
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
                    last_stream_seq = last_sequence_of(&jetstream, &stream, &subject).await;
                }
                Err(error) => {
                    recorder.count_error(|| format!("baseline publish ack: {error}"));
                    break;
                }
            }
        }
    }
}

async fn last_sequence_of(jetstream: &jetstream::Context, stream: &str, subject: &str) -> u64 {
    let Ok(stream) = jetstream.get_stream(stream).await else { return 0 };
    stream.get_last_raw_message_by_subject(subject).await.map(|message| message.sequence).unwrap_or(0)
}

/// The fanout analogue: pull, core-publish to each member, ack; one message at a time per shard, as Natter's worker does.
pub async fn run_fanout(population: Population, layout: BaselineLayout, nats_url: &str) -> anyhow::Result<()> {
    let nats = devservers::connect_nats(nats_url).await.context("baseline fanout: connect")?;
    let mut shards = JoinSet::new();
    for shard in 0..layout.shards.max(1) {
        shards.spawn(relay_shard(nats.clone(), population, shard));
    }
    while let Some(relayed) = shards.join_next().await {
        relayed??;
    }
    Ok(())
}

async fn relay_shard(nats: async_nats::Client, population: Population, shard: usize) -> anyhow::Result<()> {
    let jetstream = jetstream::new(nats.clone());
    let stream = jetstream.get_stream(stream_name(shard)).await.context("baseline fanout: the stream")?;
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
        let Some(group) = message.subject.as_str().rsplit('.').next().and_then(|group| group.parse::<usize>().ok()) else {
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
            let client = devservers::connect_nats(nats_url).await?;
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
