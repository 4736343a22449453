//! Read and delivered receipts: validating `read` frames and `POST /v1/receipts`, coalescing delivered watermarks, and telling members.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use schemas::{ReceiptKind, ServerFrame};
use store::{MembershipCache, Receipts};
use subjects::Id;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api_error::{parse_id, ApiError};
use crate::send::require_member;
use crate::state::AppState;

/// Watermark changes waiting for the next flush; beyond this many distinct keys, updates are dropped (a later one covers them).
const COALESCER_QUEUE: usize = 65_536;

/// Watermark writes in flight at once during a flush.
const FLUSH_CONCURRENCY: usize = 64;

/// A device holds (delivered) or has shown (read) a conversation up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkUpdate {
    pub conversation: Id,
    pub user: Id,
    pub device: Id,
    pub kind: ReceiptKind,
    pub seq: u64,
}

/// Where the delivery path and the send path drop watermark changes; never blocks them.
#[derive(Clone)]
pub struct WatermarkSink {
    updates_tx: mpsc::Sender<WatermarkUpdate>,
}

impl WatermarkSink {
    pub fn record(&self, update: WatermarkUpdate) {
        // A full queue means the writer is behind; the next update for the key carries a higher seq anyway.
        let _ = self.updates_tx.try_send(update);
    }
}

/// Applies a client's `read` (WS) or `POST /v1/receipts` at once: validated, monotonic, announced.
pub async fn apply_client_receipt(state: &AppState, user: &Id, device: &Id, conversation_id: &str, seq: u64, kind: ReceiptKind) -> Result<(), ApiError> {
    let conversation = parse_id("conversation_id", conversation_id)?;
    require_member(state, &conversation, user).await?;
    let last = state.reader.last_seq(&conversation).await?;
    if seq == 0 || seq > last {
        return Err(ApiError::invalid(format!("seq must be between 1 and {last}, the conversation's last message")));
    }
    let update = WatermarkUpdate { conversation, user: user.clone(), device: device.clone(), kind, seq };
    apply(&state.receipts, &state.membership, &state.nats, &update).await?;
    Ok(())
}

/// Moves the watermark and tells the members with a `receipt` frame: for reads whenever the
/// device's watermark moved (the user's other devices clear their badges too); for deliveries
/// only when the user's folded watermark moved, and not to the user, since "delivered to bob"
/// is news to the others once, not once per device.
async fn apply(receipts: &Receipts, membership: &MembershipCache, nats: &async_nats::Client, update: &WatermarkUpdate) -> Result<(), store::StoreError> {
    let moved = receipts.advance(&update.conversation, &update.user, &update.device, update.kind, update.seq).await?;
    let announce = match update.kind {
        ReceiptKind::Read => moved.device_moved,
        ReceiptKind::Delivered => moved.user_moved,
    };
    if !announce {
        return Ok(());
    }
    let frame = ServerFrame::Receipt {
        conversation_id: update.conversation.to_string(),
        user: update.user.to_string(),
        device: Some(update.device.to_string()),
        kind: update.kind,
        seq: update.seq,
    };
    for member in membership.members(&update.conversation).await?.keys() {
        if update.kind == ReceiptKind::Delivered && *member == update.user {
            continue;
        }
        store::publish_event(nats, member, &frame).await?;
    }
    Ok(())
}

/// Starts the task that writes coalesced watermarks every `interval`: one write per key per interval, not one per message.
pub fn start_coalescer(
    receipts: Receipts,
    membership: std::sync::Arc<MembershipCache>,
    nats: async_nats::Client,
    interval: Duration,
    shutdown: CancellationToken,
) -> (WatermarkSink, tokio::task::JoinHandle<()>) {
    let (updates_tx, updates_rx) = mpsc::channel(COALESCER_QUEUE);
    let task = tokio::spawn(run_coalescer(receipts, membership, nats, interval, updates_rx, shutdown));
    (WatermarkSink { updates_tx }, task)
}

type WatermarkKey = (Id, Id, Id, ReceiptKind);

async fn run_coalescer(
    receipts: Receipts,
    membership: std::sync::Arc<MembershipCache>,
    nats: async_nats::Client,
    interval: Duration,
    mut updates_rx: mpsc::Receiver<WatermarkUpdate>,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<WatermarkKey, u64> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            update = updates_rx.recv() => match update {
                Some(update) => {
                    let seq = pending.entry((update.conversation, update.user, update.device, update.kind)).or_insert(0);
                    *seq = (*seq).max(update.seq);
                }
                None => break,
            },
            _ = ticker.tick() => flush(&receipts, &membership, &nats, &mut pending).await,
            _ = shutdown.cancelled() => break,
        }
    }
    // Whatever was seen before shutdown is still worth keeping.
    flush(&receipts, &membership, &nats, &mut pending).await;
}

async fn flush(receipts: &Receipts, membership: &MembershipCache, nats: &async_nats::Client, pending: &mut HashMap<WatermarkKey, u64>) {
    let updates = pending.drain().map(|((conversation, user, device, kind), seq)| WatermarkUpdate { conversation, user, device, kind, seq });
    // Keys are independent: write many at once, so a flush costs a few round trips, not one per key.
    futures::stream::iter(updates)
        .for_each_concurrent(FLUSH_CONCURRENCY, |update| async move {
            if let Err(error) = apply(receipts, membership, nats, &update).await {
                tracing::warn!(%error, conversation = %update.conversation, "failed to write a watermark; a later one will cover it");
            }
        })
        .await;
}
