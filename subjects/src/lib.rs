//! The one place that spells NATS names (subjects, streams, consumers, KV buckets, headers) and Redis keys, and the id rules that keep client input out of them.
//!
//! Every token that reaches a subject goes through [`Id::parse`], so a client can never
//! put `.`, `*` or `>` into a subject: the builders here take [`Id`], not `&str`.

mod ids;
mod layout;
mod media;
pub mod permissions;
mod push;
pub mod redis_keys;
mod search;
mod shards;
mod users_conf;

pub use ids::{Id, InvalidId};
pub use layout::*;
pub use media::*;
pub use push::*;
pub use search::*;
pub use shards::{parse_message_subject, Shard, MAX_MESSAGE_SHARDS};
pub use users_conf::users_conf;
