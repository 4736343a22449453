//! `sync`: sends a device exactly the log entries it missed, in order (messages as they now stand, changes as `message_updated`), then `synced`, with live traffic held at the seam.

use std::collections::{BTreeMap, BTreeSet};

use schemas::{FrameId, ServerFrame};
use store::MAX_PAGE;
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::outbound::Outbound;
use crate::send::require_member;
use crate::session::Session;

/// Conversations one `sync` may name.
const MAX_SYNC_CONVERSATIONS: usize = 10_000;

/// Why a sync stopped part-way: the device must reconnect and resume.
pub struct SyncAborted(pub &'static str);

pub async fn sync_device(session: &Session, id: Option<FrameId>, cursors: BTreeMap<String, u64>) -> Result<(), SyncAborted> {
    let checked = match check_cursors(session, cursors).await {
        Ok(checked) => checked,
        Err(error) => {
            // Release a device that connected with ?resume=1: its live frames must not stay held.
            session.state.hub.end_sync(&session.user, session.connection, BTreeMap::new()).await;
            session.reply(error.to_frame(id)).await;
            return Ok(());
        }
    };
    let state = &session.state;
    state.hub.begin_sync(&session.user, session.connection).await;
    let mut reached = BTreeMap::new();
    for (conversation, held) in checked {
        let last = state.reader.last_seq(&conversation).await.map_err(|_| SyncAborted("could not read the log during sync; resume again"))?;
        let mut next = held + 1;
        let mut senders = BTreeSet::new();
        while next <= last {
            let chunk_end = last.min(next + MAX_PAGE - 1);
            let items = state
                .reader
                .folded_range(&conversation, next, chunk_end, &session.user)
                .await
                .map_err(|_| SyncAborted("could not read the log during sync; resume again"))?;
            for item in items {
                if let Ok(sender) = Id::parse(item.sender()) {
                    senders.insert(sender);
                }
                session.send_or_abort(Outbound::frame(&item.into_frame())).await?;
            }
            next = chunk_end + 1;
        }
        if last > held {
            state.delivered.record(&conversation, &session.user, &session.device, last, Some(&senders));
        }
        reached.insert(conversation, last);
    }
    let cursors = reached.iter().map(|(conversation, seq)| (conversation.to_string(), *seq)).collect();
    session.send_or_abort(Outbound::frame(&ServerFrame::Synced { id, cursors })).await?;
    state.hub.end_sync(&session.user, session.connection, reached).await;
    Ok(())
}

async fn check_cursors(session: &Session, cursors: BTreeMap<String, u64>) -> Result<Vec<(Id, u64)>, ApiError> {
    if cursors.len() > MAX_SYNC_CONVERSATIONS {
        return Err(ApiError::invalid(format!("a sync may name at most {MAX_SYNC_CONVERSATIONS} conversations")));
    }
    let mut checked = Vec::with_capacity(cursors.len());
    for (conversation, held) in cursors {
        let conversation = parse_id("cursors", &conversation)?;
        require_member(&session.state, &conversation, &session.user).await?;
        checked.push((conversation, held));
    }
    Ok(checked)
}
