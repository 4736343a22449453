//! `typing`: relayed to the other members' devices at most once per (user, conversation) per window, never stored.
//!
//! The window is kept in Redis (`SET key 1 NX PX`), so it holds across every gateway. Without
//! Redis, or while Redis does not answer, each gateway keeps it in memory instead: then a user
//! typing on devices connected to different gateways can be relayed once per window per gateway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use schemas::ServerFrame;
use subjects::{redis_keys, Id};
use tokio::time::Instant;

use crate::api_error::{parse_id, ApiError};
use crate::send::require_member;
use crate::state::AppState;

/// At most one typing event per user and conversation is relayed in this window.
pub const TYPING_WINDOW: Duration = Duration::from_secs(2);
/// A typing event is worthless late: if Redis is this slow, decide locally instead.
const REDIS_TYPING_TIMEOUT: Duration = Duration::from_millis(250);
/// The local map is pruned of expired windows when it grows past this.
const LOCAL_WINDOWS_BEFORE_PRUNE: usize = 10_000;

pub struct TypingLimiter {
    redis: Option<ConnectionManager>,
    /// (conversation, user) → end of the window. A std mutex, held only for a lookup, never across an await.
    local_windows: Mutex<HashMap<(Id, Id), Instant>>,
}

impl TypingLimiter {
    pub fn new(redis: Option<ConnectionManager>) -> TypingLimiter {
        TypingLimiter { redis, local_windows: Mutex::new(HashMap::new()) }
    }

    /// True if this typing event opens a new window and should be relayed.
    pub async fn allow(&self, conversation: &Id, user: &Id) -> bool {
        if let Some(redis) = &self.redis {
            let mut redis = redis.clone();
            let window_millis = u64::try_from(TYPING_WINDOW.as_millis()).unwrap_or(u64::MAX);
            let mut set = redis::cmd("SET");
            set.arg(redis_keys::typing_key(conversation, user)).arg(1).arg("NX").arg("PX").arg(window_millis);
            match tokio::time::timeout(REDIS_TYPING_TIMEOUT, set.query_async::<Option<String>>(&mut redis)).await {
                Ok(Ok(reply)) => return reply.is_some(),
                Ok(Err(error)) => tracing::debug!(%error, "typing limit in redis failed; limiting locally"),
                Err(_) => tracing::debug!("typing limit in redis timed out; limiting locally"),
            }
        }
        self.allow_locally(conversation, user)
    }

    fn allow_locally(&self, conversation: &Id, user: &Id) -> bool {
        let now = Instant::now();
        let mut windows = self.local_windows.lock().expect("typing windows lock poisoned");
        if windows.len() >= LOCAL_WINDOWS_BEFORE_PRUNE {
            windows.retain(|_, window_end| *window_end > now);
        }
        let key = (conversation.clone(), user.clone());
        if windows.get(&key).is_some_and(|window_end| *window_end > now) {
            return false;
        }
        windows.insert(key, now + TYPING_WINDOW);
        true
    }
}

/// Validates, authorises and (once per window) relays a `typing` frame to the conversation's other members.
pub async fn relay_typing(state: &AppState, user: &Id, conversation_id: &str) -> Result<(), ApiError> {
    let conversation = parse_id("conversation_id", conversation_id)?;
    require_member(state, &conversation, user).await?;
    if !state.typing.allow(&conversation, user).await {
        return Ok(());
    }
    let members = state.membership.members(&conversation).await?;
    let frame = ServerFrame::Typing { conversation_id: conversation.to_string(), user: user.to_string() };
    for member in members.keys().filter(|member| *member != user) {
        store::publish_event(&state.nats, member, &frame).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TypingLimiter;
    use subjects::Id;

    fn id(text: &str) -> Id {
        Id::parse(text).expect("test ids are valid")
    }

    #[tokio::test]
    async fn without_redis_one_event_per_window_per_user_and_conversation() {
        let limiter = TypingLimiter::new(None);
        let check = |conversation: &str, user: &str, expected: bool| {
            assert_eq!(limiter.allow_locally(&id(conversation), &id(user)), expected, "{conversation} {user}");
        };
        check("c1", "alice", true);
        check("c1", "alice", false);
        check("c1", "bob", true);
        check("c2", "alice", true);
        check("c1", "alice", false);
    }
}
