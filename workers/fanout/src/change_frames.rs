//! The `message_updated` frames of one edit, delete or reaction: the change, and the message as each member now sees it.
//!
//! The change is folded in first (a no-op unless the gateway that appended it died before doing
//! so), so the frame never shows a state without it. Members see the same frame except for
//! reactions' `me`: those who react get one of their own, everyone else shares one payload.

use std::collections::HashMap;

use bytes::Bytes;
use schemas::{fold_message, MessageUpdate, ServerFrame, StoredMessage};
use store::{LogReader, MemberSet};
use subjects::Id;

use crate::FanoutError;

pub(crate) struct ChangePayloads {
    shared: Bytes,
    personal: HashMap<Id, Bytes>,
}

impl ChangePayloads {
    /// The frame of everyone who does not react to the message (`me` false throughout).
    pub(crate) fn shared(&self) -> Bytes {
        self.shared.clone()
    }

    pub(crate) fn for_user(&self, user: &Id) -> Bytes {
        self.personal.get(user).unwrap_or(&self.shared).clone()
    }
}

pub(crate) async fn payloads(reader: &LogReader, conversation: &Id, entry: &StoredMessage, members: &MemberSet) -> Result<ChangePayloads, FanoutError> {
    let change = entry.change.as_ref().expect("called for changes only");
    let retry = |error: store::StoreError| FanoutError::Retry(error.to_string());
    let (state, target) = tokio::try_join!(reader.states().apply(conversation, entry), reader.get_by_seq(conversation, change.target_seq)).map_err(retry)?;
    // A change naming another change, or a target retention removed, goes out without a message.
    let target = target.filter(|target| target.change.is_none()).map(|target| target.message);
    let update = MessageUpdate::new(&entry.message, change);
    let frame_for = |reader_id: Option<&str>| {
        let message = target.clone().map(|message| fold_message(message, state.as_ref().map(|(state, revision)| (state, *revision)), reader_id));
        Bytes::from(ServerFrame::MessageUpdated { update: update.clone(), message }.to_json())
    };
    let reactors: Vec<&Id> = match &state {
        Some((state, _)) if !state.is_deleted() => {
            members.keys().filter(|user| state.reactions.values().any(|by_user| by_user.get(user.as_str()).is_some_and(|reaction| reaction.on))).collect()
        }
        _ => Vec::new(),
    };
    let personal = reactors.into_iter().map(|user| (user.clone(), frame_for(Some(user.as_str())))).collect();
    Ok(ChangePayloads { shared: frame_for(None), personal })
}
