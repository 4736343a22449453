//! A WebSocket test client speaking PROTOCOL.md over a real socket, buffering frames so tests can wait for the one they need.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use schemas::{Message, ServerFrame};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default patience for a frame that should arrive.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<ServerFrame>,
    closed: Option<Option<CloseFrame>>,
    next_id: u64,
}

impl WsClient {
    pub async fn connect(url: &str, token: &str, device: Option<&str>, resume: bool) -> anyhow::Result<WsClient> {
        let mut url = format!("{url}?token={token}");
        if let Some(device) = device {
            url.push_str(&format!("&device={device}"));
        }
        if resume {
            url.push_str("&resume=1");
        }
        let (socket, _) = tokio_tungstenite::connect_async(url).await.context("websocket connect failed")?;
        Ok(WsClient { socket, pending: VecDeque::new(), closed: None, next_id: 1 })
    }

    pub async fn send_json(&mut self, frame: Value) -> anyhow::Result<()> {
        self.send_raw(&frame.to_string()).await
    }

    pub async fn send_raw(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(WsMessage::text(text)).await.context("websocket send failed")
    }

    pub async fn send_ws_message(&mut self, message: WsMessage) -> anyhow::Result<()> {
        self.socket.send(message).await.context("websocket send failed")
    }

    /// Sends a text message and waits for its ack; returns the ack's `seq` and `duplicate`.
    pub async fn send_text(&mut self, conversation: &str, client_msg_id: &str, text: &str) -> anyhow::Result<(u64, bool)> {
        let id = self.fresh_id();
        self.send_json(json!({"type": "send", "id": id, "conversation_id": conversation, "client_msg_id": client_msg_id, "body": {"text": text}}))
            .await?;
        match self.reply_to(&id, FRAME_TIMEOUT).await? {
            ServerFrame::Ack { seq, duplicate, .. } => Ok((seq, duplicate)),
            other => bail!("expected an ack, got {other:?}"),
        }
    }

    /// Sends `sync` and returns the messages before `synced`, and the `synced` cursors.
    pub async fn sync(&mut self, cursors: Value) -> anyhow::Result<(Vec<Message>, Value)> {
        let id = self.fresh_id();
        self.send_json(json!({"type": "sync", "id": id, "cursors": cursors})).await?;
        let mut messages = Vec::new();
        loop {
            match self.next_frame(FRAME_TIMEOUT).await? {
                ServerFrame::Message { message } => messages.push(message),
                ServerFrame::Synced { cursors, .. } => return Ok((messages, serde_json::to_value(cursors)?)),
                ServerFrame::Error { code, message, .. } => bail!("sync failed: {code:?} {message}"),
                _ => {}
            }
        }
    }

    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    /// The next frame carrying `id` (ack, error, pong, synced); frames before it stay queued.
    pub async fn reply_to(&mut self, id: &str, timeout: Duration) -> anyhow::Result<ServerFrame> {
        let wanted = Some(Value::String(id.to_owned()));
        let matches = |frame: &ServerFrame| match frame {
            ServerFrame::Ack { id, .. } | ServerFrame::Error { id, .. } | ServerFrame::Pong { id } | ServerFrame::Synced { id, .. } => *id == wanted,
            _ => false,
        };
        if let Some(position) = self.pending.iter().position(matches) {
            return Ok(self.pending.remove(position).expect("position is in range"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = self.read_frame(deadline).await?;
            if matches(&frame) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// The next frame in arrival order.
    pub async fn next_frame(&mut self, timeout: Duration) -> anyhow::Result<ServerFrame> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        self.read_frame(tokio::time::Instant::now() + timeout).await
    }

    /// `message` frames of `conversation` until one with `seq >= last_seq` arrives; other frames stay queued.
    pub async fn messages_until(&mut self, conversation: &str, last_seq: u64, timeout: Duration) -> anyhow::Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut messages = Vec::new();
        let mut kept = VecDeque::new();
        let mut queued = std::mem::take(&mut self.pending);
        loop {
            let frame = match queued.pop_front() {
                Some(frame) => frame,
                None => match self.read_frame(deadline).await {
                    Ok(frame) => frame,
                    Err(error) => {
                        self.pending = kept;
                        let seen: Vec<u64> = messages.iter().map(|message: &Message| message.seq).collect();
                        return Err(error.context(format!("waiting for seq {last_seq} in {conversation}; got {seen:?}")));
                    }
                },
            };
            match frame {
                ServerFrame::Message { message } if message.conversation_id == conversation => {
                    let done = message.seq >= last_seq;
                    messages.push(message);
                    if done {
                        kept.extend(queued);
                        self.pending = kept;
                        return Ok(messages);
                    }
                }
                other => kept.push_back(other),
            }
        }
    }

    /// Waits for the server to close the socket; returns the close frame, if it sent one. Frames before it are discarded.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<Option<CloseFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(close) = &self.closed {
                return Ok(close.clone());
            }
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => bail!("socket still open after {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(WsMessage::Close(frame)))) => self.closed = Some(frame),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Every frame until the server closes the socket, and the close frame (None if the connection just ended).
    pub async fn frames_until_closed(&mut self, timeout: Duration) -> anyhow::Result<(Vec<ServerFrame>, Option<CloseFrame>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames: Vec<ServerFrame> = self.pending.drain(..).collect();
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.map_err(|_| anyhow::anyhow!("socket still open after {timeout:?}"))?;
            match next {
                None | Some(Err(_)) => return Ok((frames, None)),
                Some(Ok(WsMessage::Close(frame))) => {
                    self.closed = Some(frame.clone());
                    return Ok((frames, frame));
                }
                Some(Ok(WsMessage::Text(text))) => frames.push(serde_json::from_str(text.as_str())?),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Whether frames still flow: a ping is answered with its pong.
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        let id = self.fresh_id();
        self.send_json(json!({"type": "ping", "id": id})).await?;
        match self.reply_to(&id, FRAME_TIMEOUT).await? {
            ServerFrame::Pong { .. } => Ok(()),
            other => bail!("expected pong, got {other:?}"),
        }
    }

    async fn read_frame(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<ServerFrame> {
        loop {
            if let Some(close) = &self.closed {
                bail!("socket closed: {close:?}");
            }
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.map_err(|_| anyhow::anyhow!("no frame before the deadline"))?;
            match next {
                None => bail!("socket ended"),
                Some(Err(error)) => bail!("socket error: {error}"),
                Some(Ok(WsMessage::Text(text))) => {
                    return serde_json::from_str(text.as_str()).with_context(|| format!("unparseable server frame {text}"));
                }
                Some(Ok(WsMessage::Close(frame))) => self.closed = Some(frame),
                Some(Ok(_)) => {}
            }
        }
    }
}
