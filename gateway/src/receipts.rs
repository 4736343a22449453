//! Read and delivered receipts: validating `read` frames and `POST /v1/receipts`, moving watermarks, and telling members.

use std::collections::BTreeSet;

use schemas::{ReceiptKind, ServerFrame};
use store::{MembershipCache, Receipts};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::send::require_member;
use crate::state::AppState;

/// A device holds (delivered) or has shown (read) a conversation up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkUpdate {
    pub conversation: Id,
    pub user: Id,
    pub device: Id,
    pub kind: ReceiptKind,
    pub seq: u64,
    pub audience: Audience,
}

/// Which members hear, by a `receipt` frame, that a watermark moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member: a read the user reported, or a delivery reported without naming messages.
    Members,
    /// Only these members. "Delivered to bob" is news to the authors of the messages it covers,
    /// not to the whole group: told to everyone, a group of 10 got 9 receipt frames per member
    /// per message, more frames than messages (measured by the load generator).
    Only(BTreeSet<Id>),
}

/// Applies a client's `read` (WS) or `POST /v1/receipts` at once: validated, monotonic, announced.
pub async fn apply_client_receipt(state: &AppState, user: &Id, device: &Id, conversation_id: &str, seq: u64, kind: ReceiptKind) -> Result<(), ApiError> {
    let conversation = parse_id("conversation_id", conversation_id)?;
    require_member(state, &conversation, user).await?;
    let last = state.reader.last_seq(&conversation).await?;
    if seq == 0 || seq > last {
        return Err(ApiError::invalid(format!("seq must be between 1 and {last}, the conversation's last message")));
    }
    let update = WatermarkUpdate { conversation, user: user.clone(), device: device.clone(), kind, seq, audience: Audience::Members };
    apply(&state.receipts, &state.membership, &state.nats, &update).await?;
    Ok(())
}

/// Moves the watermark and tells the update's audience with a `receipt` frame: for reads whenever
/// the device's watermark moved (the user's other devices clear their badges too); for deliveries
/// only when the user's folded watermark moved, and not to the user, since "delivered to bob"
/// is news to the others once, not once per device.
pub(crate) async fn apply(receipts: &Receipts, membership: &MembershipCache, nats: &async_nats::Client, update: &WatermarkUpdate) -> Result<(), store::StoreError> {
    let moved = receipts.advance(&update.conversation, &update.user, &update.device, update.kind, update.seq).await?;
    let worth_telling = match update.kind {
        ReceiptKind::Read => moved.device_moved,
        ReceiptKind::Delivered => moved.user_moved,
    };
    if worth_telling {
        announce(membership, nats, update).await?;
    }
    Ok(())
}

/// Sends the `receipt` frame for a watermark move to the members in its audience.
pub(crate) async fn announce(membership: &MembershipCache, nats: &async_nats::Client, update: &WatermarkUpdate) -> Result<(), store::StoreError> {
    let frame = ServerFrame::Receipt {
        conversation_id: update.conversation.to_string(),
        user: update.user.to_string(),
        device: Some(update.device.to_string()),
        kind: update.kind,
        seq: update.seq,
    };
    let members = membership.members(&update.conversation).await?;
    let audience: Vec<&Id> = match &update.audience {
        Audience::Members => members.keys().collect(),
        // The few authors, each checked against the member set: walking a large group's members per update cost more than the update.
        Audience::Only(users) => users.iter().filter(|user| members.contains_key(*user)).collect(),
    };
    for member in audience {
        if update.kind == ReceiptKind::Delivered && *member == update.user {
            continue;
        }
        store::publish_event(nats, member, &frame).await?;
    }
    Ok(())
}
