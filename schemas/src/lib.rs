//! Every type that crosses a wire or lands in storage: client and server frames, REST bodies, and version-tagged stored records.
//!
//! This is the only crate that derives serde. Wire types follow PROTOCOL.md exactly; stored
//! records carry a `v` and every past version stays readable (see `golden/`).

mod client_frames;
mod error_code;
mod media;
mod message;
mod message_change;
mod push;
pub mod push_providers;
mod records;
mod rest;
mod search;
mod server_frames;

pub use client_frames::{parse_client_frame, ClientFrame, FrameError, FrameId};
pub use error_code::ErrorCode;
pub use media::{
    CreateMediaRequest, CreateMediaResponse, DownloadGrantQuery, MediaInfo, MediaJob, MediaRecord, MediaShareRecord, MediaStatus, ThumbnailInfo,
    UploadGrantQuery,
};
pub use message::{Body, BodyError, Message};
pub use message_change::{
    fold_message, server_folds, validate_emoji, Change, ChangeKind, DeleteState, EditState, MessageStateRecord, MessageUpdate, ReactionAction,
    ReactionState, ReactionSummary, MAX_EMOJIS_PER_MESSAGE, MAX_EMOJI_BYTES,
};
pub use push::{
    ConversationSettings, ConversationSettingsRequest, NotificationSettings, PushJob, PushNotification, PushProvider, PushRegistrationRecord,
    RegisterPushRequest, SilenceRecord, WebPushKeys, WebPushSubscription,
};
pub use records::{
    decode_stored_message, encode_stored_message, ClientMsgIdRecord, ConversationKind, ConversationRecord, MemberRecord,
    MulticastRecord, ReceiptRecord, RecordError, Role, StoredMessage,
};
pub use rest::*;
pub use search::*;
pub use server_frames::{PresenceStatus, ServerFrame};

/// RFC 3339 timestamps, as every `*_at` field on the wire and in storage.
pub type Timestamp = time::OffsetDateTime;

/// A golden file's bytes: every stored version of a record must stay readable.
#[cfg(test)]
pub(crate) fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}
