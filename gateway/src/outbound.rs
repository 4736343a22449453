//! What a connection's writer task sends: text frames shared between devices, or a close with a reason.

use bytes::Bytes;
use schemas::ServerFrame;

#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server frame; `Bytes` so one delivery is shared by every device without copying.
    Text(Bytes),
    Close { code: u16, reason: String },
    /// Replies the WebSocket protocol obliges us to send: a pong, or the echo of the peer's close.
    Pong(Vec<u8>),
    CloseEcho(Vec<u8>),
    /// The heartbeat: the peer's pong (or any frame) proves it is still there.
    Ping,
}

impl Outbound {
    pub fn frame(frame: &ServerFrame) -> Outbound {
        Outbound::Text(Bytes::from(frame.to_json()))
    }
}

/// WebSocket close codes Natter uses, each with the reason text a client can show or log.
pub mod close_codes {
    /// RFC 6455 1001: the server is shutting down or draining; reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455 1008: the client kept breaking the protocol.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// RFC 6455 1009: a message exceeded the frame cap.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// RFC 6455 1013: the device fell too far behind; reconnect with `?resume=1` and `sync`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
