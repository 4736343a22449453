//! The WebSocket side of a worker: connects its share of clients to the gateways, sends their sends on the timetable, and times every frame that comes back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use schemas::{Body, ClientFrame, ServerFrame};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::clock::unix_nanos_now;
use crate::plan::{ClientSpec, Phase, Population};
use crate::recorder::{Recorder, Sample};

/// A body about the size of a short chat line, so frames are realistic rather than minimal.
pub const MESSAGE_TEXT: &str = "The quick brown fox jumps over the lazy dog; load generator line, about a hundred bytes long.";

/// How many clients one worker connects at a time; enough to be quick, few enough not to swamp a gateway.
const CONNECT_CONCURRENCY: usize = 32;

/// The phase the clients are in, read by every reader task for each frame.
pub type CurrentPhase = Arc<RwLock<Option<Phase>>>;

pub struct NatterClients {
    /// Per client index: the channel its writer task sends from, and its conversation.
    writers: HashMap<usize, (mpsc::UnboundedSender<WsMessage>, String)>,
    tasks: JoinSet<()>,
    pub population: Population,
}

pub struct ConnectOutcome {
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

impl NatterClients {
    pub async fn connect_all(population: Population, clients: Vec<ClientSpec>, recorder: Arc<Recorder>, phase: CurrentPhase) -> (NatterClients, ConnectOutcome) {
        let mut pending = JoinSet::new();
        let mut clients = clients.into_iter();
        let mut tasks = JoinSet::new();
        let mut writers = HashMap::new();
        let mut outcome = ConnectOutcome { connected: 0, failed: 0, first_error: None };
        loop {
            while pending.len() < CONNECT_CONCURRENCY {
                let Some(spec) = clients.next() else { break };
                pending.spawn(async move {
                    let result = connect_one(&spec).await;
                    (spec, result)
                });
            }
            let Some(joined) = pending.join_next().await else { break };
            let (spec, result) = joined.expect("connect tasks do not panic");
            match result {
                Ok(socket) => {
                    let (sink, stream) = socket.split();
                    let (writer_tx, writer_rx) = mpsc::unbounded_channel();
                    tasks.spawn(write_frames(sink, writer_rx));
                    tasks.spawn(read_frames(stream, spec.user.clone(), recorder.clone(), phase.clone()));
                    writers.insert(spec.client, (writer_tx, spec.conversation.clone()));
                    outcome.connected += 1;
                }
                Err(error) => {
                    outcome.failed += 1;
                    outcome.first_error.get_or_insert_with(|| format!("client {}: {error:#}", spec.user));
                }
            }
        }
        (NatterClients { writers, tasks, population }, outcome)
    }

    /// Sends every send of `phase` that one of this worker's clients makes, each at its due time.
    ///
    /// Frames are handed to the client's writer without waiting, so a slow socket delays only its
    /// own frames, and their latency still counts from the due time.
    pub async fn run_sends(&self, phase: &Phase, recorder: &Recorder) {
        for index in 0..phase.total_sends() {
            let sender = self.population.sender_of(index);
            let Some((writer_tx, conversation)) = self.writers.get(&sender) else { continue };
            crate::clock::sleep_until_unix(phase.due_unix_nanos(index)).await;
            let frame = ClientFrame::Send {
                id: None,
                conversation_id: conversation.clone(),
                client_msg_id: crate::plan::client_msg_id(&phase.tag, index),
                body: Body::text(MESSAGE_TEXT),
                reply_to: None,
                mentions: None,
            };
            let text = serde_json::to_string(&frame).expect("client frames serialize");
            recorder.note_send_made();
            if phase.is_measured(index) {
                recorder.count_send();
            }
            if writer_tx.send(WsMessage::text(text)).is_err() {
                recorder.count_error(|| format!("client {sender}: socket gone before send {index}"));
            }
        }
    }

    /// How many measured deliveries this worker's clients should get in `phase` (group-mates and own echoes).
    pub fn expected_frames(&self, phase: &Phase) -> u64 {
        let mut local_members_per_group = vec![0u64; self.population.groups];
        for &client in self.writers.keys() {
            local_members_per_group[self.population.group_of(client)] += 1;
        }
        let first = phase.total_sends() - phase.measured_sends();
        (first..phase.total_sends()).map(|index| local_members_per_group[self.population.group_of(self.population.sender_of(index))]).sum()
    }

    pub fn close(mut self) {
        self.writers.clear();
        self.tasks.abort_all();
    }
}

/// Binds the chosen 127.0.0.x source address first: one source address has only ~28k ports.
async fn connect_one(spec: &ClientSpec) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    connect_websocket(&spec.ws_url, &spec.source_ip, None).await
}

/// A WebSocket to `ws_url` (`ws://host:port/…`) from `source_ip`, with tungstenite's `config` (`None` = its defaults).
pub async fn connect_websocket(
    ws_url: &str,
    source_ip: &str,
    config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let host_and_port = ws_url.strip_prefix("ws://").and_then(|rest| rest.split('/').next()).context("ws url must be ws://host:port/…")?;
    let gateway: SocketAddr = host_and_port.parse().with_context(|| format!("gateway address {host_and_port:?}"))?;
    let socket = TcpSocket::new_v4()?;
    socket.set_nodelay(true)?;
    let source: SocketAddr = format!("{source_ip}:0").parse().context("source address")?;
    socket.bind(source).with_context(|| format!("failed to bind {source}"))?;
    let stream = socket.connect(gateway).await.with_context(|| format!("failed to connect to {gateway}"))?;
    let (socket, _response) = tokio_tungstenite::client_async_with_config(ws_url, stream, config).await.context("websocket handshake failed")?;
    Ok(socket)
}

async fn write_frames(
    mut sink: futures::stream::SplitSink<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, WsMessage>,
    mut frames_rx: mpsc::UnboundedReceiver<WsMessage>,
) {
    while let Some(frame) = frames_rx.recv().await {
        if sink.send(frame).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn read_frames(
    mut stream: futures::stream::SplitStream<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>,
    user: String,
    recorder: Arc<Recorder>,
    phase: CurrentPhase,
) {
    while let Some(next) = stream.next().await {
        let text = match next {
            Ok(WsMessage::Text(text)) => text,
            Ok(WsMessage::Close(frame)) => {
                recorder.count_error(|| format!("{user}: server closed the socket: {frame:?}"));
                return;
            }
            Ok(_) => continue,
            Err(error) => {
                recorder.count_error(|| format!("{user}: socket error: {error}"));
                return;
            }
        };
        let arrived = unix_nanos_now();
        let frame: ServerFrame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                recorder.count_error(|| format!("{user}: unparseable frame: {error}"));
                continue;
            }
        };
        let phase_guard = phase.read().expect("phase lock is never poisoned");
        let Some(phase) = phase_guard.as_ref() else { continue };
        match frame {
            ServerFrame::Message { message } => {
                let Some(index) = crate::plan::send_index_of(&phase.tag, &message.client_msg_id) else { continue };
                recorder.count_frame();
                if phase.is_measured(index) {
                    let latency = arrived as i64 - phase.due_unix_nanos(index) as i64;
                    let sample = if message.sender == user { Sample::OwnEcho } else { Sample::Delivery };
                    recorder.record(sample, latency);
                }
            }
            ServerFrame::Ack { client_msg_id, .. } => {
                if let Some(index) = crate::plan::send_index_of(&phase.tag, &client_msg_id) {
                    let latency = arrived as i64 - phase.due_unix_nanos(index) as i64;
                    recorder.note_ack(latency);
                    if phase.is_measured(index) {
                        recorder.record(Sample::Ack, latency);
                    }
                }
            }
            ServerFrame::Error { code, message, .. } => recorder.count_error(|| format!("{user}: error frame {code:?}: {message}")),
            _ => {}
        }
    }
    recorder.count_error(|| format!("{user}: socket ended"));
}
