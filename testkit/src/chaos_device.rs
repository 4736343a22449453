//! A chat device for chaos tests: one WebSocket at a time, resuming from what it holds after every reconnect, and a record of every message frame it was shown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use schemas::ServerFrame;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Replies = Arc<Mutex<HashMap<String, oneshot::Sender<ServerFrame>>>>;

/// What one device was shown, per conversation, in arrival order.
#[derive(Debug, Default)]
pub struct ScreenLog {
    /// conversation → (seq, client_msg_id) of every `message` frame, duplicates included.
    pub shown: HashMap<String, Vec<(u64, String)>>,
    /// The highest seq shown per conversation.
    highest: HashMap<String, u64>,
    /// Frames whose seq the device had already been shown.
    pub duplicates: u64,
    /// Frames that skipped past the next expected seq (a gap on screen).
    pub out_of_order: u64,
    /// Close codes the server sent, e.g. 1001 "reconnect elsewhere" during a rolling restart.
    pub server_closes: BTreeMap<u16, u64>,
}

impl ScreenLog {
    /// The highest seq shown: what the device tells `sync` it holds.
    pub fn held(&self, conversation: &str) -> u64 {
        self.highest.get(conversation).copied().unwrap_or(0)
    }

    fn record(&mut self, conversation: String, seq: u64, client_msg_id: String) {
        let held = self.held(&conversation);
        if seq <= held {
            self.duplicates += 1;
        } else if seq != held + 1 {
            self.out_of_order += 1;
        }
        let highest = self.highest.entry(conversation.clone()).or_default();
        *highest = (*highest).max(seq);
        self.shown
            .entry(conversation)
            .or_default()
            .push((seq, client_msg_id));
    }
}

struct Connection {
    writer: SplitSink<Socket, WsMessage>,
    replies: Replies,
    /// Cancelled when the reader sees the socket end.
    ended: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub struct ChaosDevice {
    pub user: String,
    pub device: String,
    token: String,
    conversations: Vec<String>,
    pub screen: Arc<Mutex<ScreenLog>>,
    connection: Option<Connection>,
    next_frame_id: u64,
    connected_once: bool,
    /// Successful connections after the first.
    pub reconnects: u64,
}

impl ChaosDevice {
    pub fn new(user: &str, device: &str, token: String, conversations: Vec<String>) -> ChaosDevice {
        ChaosDevice {
            user: user.to_owned(),
            device: device.to_owned(),
            token,
            conversations,
            screen: Arc::default(),
            connection: None,
            next_frame_id: 0,
            connected_once: false,
            reconnects: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|connection| !connection.ended.is_cancelled())
    }

    /// Resolves when the current socket ends (at once if there is none).
    pub async fn disconnected(&self) {
        if let Some(connection) = &self.connection {
            connection.ended.cancelled().await;
        }
    }

    /// Connects to `url` with `?resume=1` and syncs from what the screen holds; missed messages arrive before this returns.
    pub async fn connect(&mut self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        self.connection = None;
        let address = format!("{url}?token={}&device={}&resume=1", self.token, self.device);
        let (socket, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(address))
            .await
            .context("websocket connect timed out")??;
        let (writer, reader) = socket.split();
        let replies: Replies = Arc::default();
        let ended = CancellationToken::new();
        let reader = tokio::spawn(read_frames(
            reader,
            self.screen.clone(),
            replies.clone(),
            ended.clone(),
        ));
        self.connection = Some(Connection {
            writer,
            replies,
            ended,
            reader,
        });
        let cursors: BTreeMap<String, u64> = {
            let screen = self.screen.lock().expect("screen lock");
            self.conversations
                .iter()
                .map(|conversation| (conversation.clone(), screen.held(conversation)))
                .collect()
        };
        match self
            .request(json!({"type": "sync", "cursors": cursors}), timeout)
            .await?
        {
            ServerFrame::Synced { .. } => {}
            other => bail!("sync answered {other:?}"),
        }
        if self.connected_once {
            self.reconnects += 1;
        }
        self.connected_once = true;
        Ok(())
    }

    /// Sends a text and waits for its ack; returns the seq.
    pub async fn send_text(
        &mut self,
        conversation: &str,
        client_msg_id: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let frame = json!({"type": "send", "conversation_id": conversation, "client_msg_id": client_msg_id, "body": {"text": text}});
        match self.request(frame, timeout).await? {
            ServerFrame::Ack { seq, .. } => Ok(seq),
            ServerFrame::Error { code, message, .. } => bail!("send refused: {code:?} {message}"),
            other => bail!("send answered {other:?}"),
        }
    }

    async fn request(
        &mut self,
        mut frame: Value,
        timeout: Duration,
    ) -> anyhow::Result<ServerFrame> {
        self.next_frame_id += 1;
        let id = format!("c{}", self.next_frame_id);
        frame["id"] = Value::String(id.clone());
        let connection = self.connection.as_mut().context("not connected")?;
        let (reply_sender, reply) = oneshot::channel();
        connection
            .replies
            .lock()
            .expect("replies lock")
            .insert(id.clone(), reply_sender);
        let outcome = async {
            connection
                .writer
                .send(WsMessage::text(frame.to_string()))
                .await
                .context("websocket send failed")?;
            tokio::time::timeout(timeout, reply)
                .await
                .context("no reply in time")?
                .context("the socket ended before the reply")
        }
        .await;
        connection.replies.lock().expect("replies lock").remove(&id);
        outcome
    }
}

async fn read_frames(
    mut reader: futures::stream::SplitStream<Socket>,
    screen: Arc<Mutex<ScreenLog>>,
    replies: Replies,
    ended: CancellationToken,
) {
    while let Some(Ok(frame)) = reader.next().await {
        let text = match frame {
            WsMessage::Text(text) => text,
            WsMessage::Close(close) => {
                if let Some(close) = close {
                    *screen
                        .lock()
                        .expect("screen lock")
                        .server_closes
                        .entry(close.code.into())
                        .or_default() += 1;
                }
                break;
            }
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else {
            continue;
        };
        let reply_id = match &frame {
            ServerFrame::Message { message } => {
                screen.lock().expect("screen lock").record(
                    message.conversation_id.clone(),
                    message.seq,
                    message.client_msg_id.clone(),
                );
                None
            }
            ServerFrame::Ack { id, .. }
            | ServerFrame::Error { id, .. }
            | ServerFrame::Synced { id, .. }
            | ServerFrame::Pong { id } => id.as_ref().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        if let Some(reply_id) = reply_id {
            let waiting = replies.lock().expect("replies lock").remove(&reply_id);
            if let Some(waiting) = waiting {
                let _ = waiting.send(frame);
            }
        }
    }
    // Dropping the waiting senders tells every pending request that its reply will not come.
    replies.lock().expect("replies lock").clear();
    ended.cancel();
}
