//! A WebSocket test client speaking PROTOCOL.md over a real socket, buffering frames so tests can wait for the one they need.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use schemas::{Message, ServerFrame};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
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

    /// Every frame up to and including the first one `wanted` accepts, in arrival order; later frames stay queued.
    pub async fn frames_until(&mut self, timeout: Duration, wanted: impl Fn(&ServerFrame) -> bool) -> anyhow::Result<Vec<ServerFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let frame = match self.pending.pop_front() {
                Some(frame) => frame,
                None => match self.read_frame(deadline).await {
                    Ok(frame) => frame,
                    Err(error) => {
                        let seen = frames.len();
                        self.pending = frames.into();
                        return Err(error.context(format!("{seen} frames arrived, none of them the one wanted")));
                    }
                },
            };
            let done = wanted(&frame);
            frames.push(frame);
            if done {
                return Ok(frames);
            }
        }
    }

    /// The next `presence` frame about `user`; other frames stay queued.
    pub async fn next_presence_of(&mut self, user: &str, timeout: Duration) -> anyhow::Result<ServerFrame> {
        let is_about_user = |frame: &ServerFrame| matches!(frame, ServerFrame::Presence { user: about, .. } if about == user);
        if let Some(position) = self.pending.iter().position(is_about_user) {
            return Ok(self.pending.remove(position).expect("position is in range"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = self.read_frame(deadline).await.with_context(|| format!("waiting for a presence frame about {user}"))?;
            if is_about_user(&frame) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// From now on this device neither reads nor writes, as a phone that lost its network: no close,
    /// no FIN, and no pongs (tungstenite answers pings only while polled). The socket stays open
    /// until the returned value is dropped; it can still read what the server sent, raw.
    pub fn stop_answering(self) -> SilentSocket {
        SilentSocket { stream: self.socket.into_inner() }
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

/// A WebSocket whose client went silent (see [`WsClient::stop_answering`]): it never answers pings.
pub struct SilentSocket {
    stream: MaybeTlsStream<TcpStream>,
}

impl SilentSocket {
    /// Reads, without answering anything, what the server sent until its close frame; returns the close code and reason.
    ///
    /// Frames are parsed from the raw bytes, so nothing (not even a pong) is written back.
    pub async fn server_close(&mut self, timeout: Duration) -> anyhow::Result<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut received = Vec::new();
        loop {
            let mut offset = 0;
            while let Some((opcode, payload, length)) = parse_unmasked_frame(&received[offset..]) {
                if opcode == 0x8 {
                    anyhow::ensure!(payload.len() >= 2, "close frame without a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Ok((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
                offset += length;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| anyhow::anyhow!("no close frame within {timeout:?}"))?
                .context("reading the silent socket failed")?;
            if read == 0 {
                bail!("the server ended the connection without a close frame");
            }
            received.extend_from_slice(&chunk[..read]);
        }
    }
}

/// One whole server-to-client frame at the start of `bytes`: (opcode, payload, total length), or None if incomplete.
fn parse_unmasked_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let opcode = bytes.first()? & 0x0f;
    let short_length = bytes.get(1)? & 0x7f;
    let (payload_length, header_length) = match short_length {
        126 => (u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize, 10),
        length => (length as usize, 2),
    };
    let payload = bytes.get(header_length..header_length + payload_length)?;
    Some((opcode, payload, header_length + payload_length))
}
