//! One WebSocket connection's protocol state: dispatches client frames and counts protocol errors.

use schemas::{parse_client_frame, ClientFrame, ErrorCode, FrameId, ReceiptKind, ServerFrame};
use subjects::Id;
use tokio::sync::mpsc;

use crate::api_error::ApiError;
use crate::changes::{change_message, ChangeAction, ChangeRequest};
use crate::delivery_hub::ConnectionId;
use crate::outbound::{close_codes, Outbound};
use crate::receipts::apply_client_receipt;
use crate::send::{send_message, SendRequest};
use crate::state::AppState;
use crate::sync::{sync_device, SyncAborted};
use crate::typing::relay_typing;

/// What the reader does after a frame.
pub enum Flow {
    Continue,
    Close { code: u16, reason: String },
}

pub struct Session {
    pub state: AppState,
    pub user: Id,
    pub device: Id,
    pub connection: ConnectionId,
    pub outbound: mpsc::Sender<Outbound>,
    /// The peer's address, which per-address rate limits count.
    pub address: std::net::IpAddr,
    /// Unique across gateways (a ULID per connection): the id this connection's sends carry to the workers.
    pub request_id: String,
    protocol_errors: u32,
}

impl Session {
    pub fn new(state: AppState, user: Id, device: Id, connection: ConnectionId, outbound: mpsc::Sender<Outbound>, address: std::net::IpAddr, request_id: String) -> Session {
        Session { state, user, device, connection, outbound, address, request_id, protocol_errors: 0 }
    }

    pub async fn handle_text(&mut self, text: &str) -> Flow {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(error) => return self.protocol_error(error.id, ApiError::invalid(error.message)).await,
        };
        match frame {
            ClientFrame::Ping { id } => self.reply(ServerFrame::Pong { id }).await,
            ClientFrame::Send { id, conversation_id, client_msg_id, body, reply_to, mentions } => {
                let request = SendRequest { conversation_id: &conversation_id, client_msg_id: &client_msg_id, body, reply_to, mentions };
                let outcome = send_message(&self.state, &self.user, &self.device, self.address, request, &self.request_id).await;
                return self.acknowledge(id, conversation_id, client_msg_id, outcome).await;
            }
            ClientFrame::Edit { id, conversation_id, client_msg_id, seq, body } => {
                return self.change(id, conversation_id, client_msg_id, seq, ChangeAction::Edit { body }).await;
            }
            ClientFrame::Delete { id, conversation_id, client_msg_id, seq } => {
                return self.change(id, conversation_id, client_msg_id, seq, ChangeAction::Delete).await;
            }
            ClientFrame::React { id, conversation_id, client_msg_id, seq, emoji, action, body } => {
                return self.change(id, conversation_id, client_msg_id, seq, ChangeAction::React { emoji, action, body }).await;
            }
            ClientFrame::Sync { id, cursors } => {
                if let Err(SyncAborted(reason)) = sync_device(self, id, cursors).await {
                    telemetry::gateway_metrics().count_slow_consumer_disconnect("sync_aborted");
                    return Flow::Close { code: close_codes::TRY_AGAIN_LATER, reason: reason.to_owned() };
                }
            }
            ClientFrame::Read { id, conversation_id, seq } => {
                let applied = apply_client_receipt(&self.state, &self.user, &self.device, &conversation_id, seq, ReceiptKind::Read).await;
                if let Err(error) = applied {
                    return self.request_error(id, error).await;
                }
            }
            ClientFrame::Typing { id, conversation_id } => {
                if let Err(error) = relay_typing(&self.state, &self.user, &conversation_id).await {
                    return self.request_error(id, error).await;
                }
            }
        }
        Flow::Continue
    }

    async fn change(&mut self, id: Option<FrameId>, conversation_id: String, client_msg_id: String, target_seq: u64, action: ChangeAction) -> Flow {
        let request = ChangeRequest { conversation_id: &conversation_id, client_msg_id: &client_msg_id, target_seq, action };
        let outcome = change_message(&self.state, &self.user, &self.device, self.address, request, &self.request_id).await;
        self.acknowledge(id, conversation_id, client_msg_id, outcome).await
    }

    /// A send or change is answered with `ack` (its `seq` in the log) or an error.
    async fn acknowledge(&mut self, id: Option<FrameId>, conversation_id: String, client_msg_id: String, outcome: Result<store::AppendOutcome, ApiError>) -> Flow {
        match outcome {
            Ok(outcome) => {
                self.reply(ServerFrame::Ack { id, conversation_id, client_msg_id, seq: outcome.seq, sent_at: outcome.sent_at, duplicate: outcome.duplicate }).await;
                Flow::Continue
            }
            Err(error) => self.request_error(id, error).await,
        }
    }

    /// A frame that broke the protocol (malformed, oversized): answered, counted, and past the budget the socket closes.
    pub async fn protocol_error(&mut self, id: Option<FrameId>, error: ApiError) -> Flow {
        self.protocol_errors += 1;
        self.reply(error.to_frame(id)).await;
        if self.protocol_errors > self.state.config.limits.max_protocol_errors {
            return Flow::Close { code: close_codes::POLICY_VIOLATION, reason: "too many protocol errors".to_owned() };
        }
        Flow::Continue
    }

    /// A well-formed request that was refused (forbidden, too large, …); malformed content counts against the budget.
    async fn request_error(&mut self, id: Option<FrameId>, error: ApiError) -> Flow {
        if matches!(error.code, ErrorCode::Invalid | ErrorCode::TooLarge) {
            return self.protocol_error(id, error).await;
        }
        self.reply(error.to_frame(id)).await;
        Flow::Continue
    }

    /// Queues a reply; a device whose queue stays full is dealt with by the sync timeout and the hub.
    pub async fn reply(&self, frame: ServerFrame) {
        let _ = self.send_or_abort(Outbound::frame(&frame)).await;
    }

    /// Queues a frame, waiting for room up to the sync timeout; past it the device is too slow.
    pub async fn send_or_abort(&self, frame: Outbound) -> Result<(), SyncAborted> {
        let timeout = self.state.config.limits.sync_send_timeout;
        match tokio::time::timeout(timeout, self.outbound.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SyncAborted("connection closed")),
            Err(_) => Err(SyncAborted("device is not reading; resume with sync")),
        }
    }
}
