//! The content policy for readable (not end-to-end encrypted) text: a configurable deny-list of patterns and a spam signal.
//!
//! The spam signal is the classic one: the same text sent by one user into many different
//! conversations within a short window. Counting is in Redis (a set of conversations per
//! user and text digest, expiring with the window), so it holds across gateways; without Redis,
//! or while it does not answer, each gateway counts in memory.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use regex::RegexSet;
use sha2::{Digest, Sha256};
use subjects::{redis_keys, Id};
use tokio::time::Instant;

use crate::api_error::ApiError;
use schemas::ErrorCode;

/// A policy check must not stall a send: past this, count locally.
const REDIS_SPAM_TIMEOUT: Duration = Duration::from_millis(250);
/// The local counts are pruned of expired windows when there are more than this many.
const LOCAL_WINDOWS_BEFORE_PRUNE: usize = 50_000;
/// Texts shorter than this are not counted: "ok" and "thanks" go everywhere, legitimately.
const MIN_COUNTED_CHARS: usize = 20;

/// Adds the conversation to the (user, text) set, starts its window on first use, and returns the set's size.
const COUNT_SCRIPT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SCARD', KEYS[1])
";

#[derive(Debug, Clone, PartialEq)]
pub struct ContentPolicy {
    /// Case-insensitive regular expressions; a text matching any is refused.
    pub deny_patterns: Vec<String>,
    /// The same text into more than this many conversations within `spam_window` is refused; 0 = off.
    pub spam_max_conversations: usize,
    pub spam_window: Duration,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy { deny_patterns: Vec::new(), spam_max_conversations: 5, spam_window: Duration::from_secs(60) }
    }
}

impl ContentPolicy {
    /// `NATTER_CONTENT_DENYLIST` (a file, one pattern per line, `#` comments), `NATTER_SPAM_MAX_CONVERSATIONS`, `NATTER_SPAM_WINDOW_SECS`.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<ContentPolicy> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let mut policy = ContentPolicy::default();
        if let Some(path) = get("NATTER_CONTENT_DENYLIST") {
            policy.deny_patterns = read_patterns(Path::new(path))?;
        }
        if let Some(count) = get("NATTER_SPAM_MAX_CONVERSATIONS") {
            policy.spam_max_conversations = count.parse().context("NATTER_SPAM_MAX_CONVERSATIONS must be a count (0 = off)")?;
        }
        if let Some(seconds) = get("NATTER_SPAM_WINDOW_SECS") {
            let seconds: u64 = seconds.parse().context("NATTER_SPAM_WINDOW_SECS must be whole seconds")?;
            anyhow::ensure!(seconds > 0, "NATTER_SPAM_WINDOW_SECS must be at least 1");
            policy.spam_window = Duration::from_secs(seconds);
        }
        Ok(policy)
    }
}

fn read_patterns(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read the content deny-list {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(str::to_owned).collect())
}

pub struct ContentFilter {
    deny: RegexSet,
    policy: ContentPolicy,
    redis: Option<ConnectionManager>,
    script: redis::Script,
    /// (user, text digest) → conversations seen and when the window ends; never held across an await.
    local: Mutex<HashMap<(Id, String), (HashSet<Id>, Instant)>>,
}

impl ContentFilter {
    pub fn new(policy: ContentPolicy, redis: Option<ConnectionManager>) -> anyhow::Result<ContentFilter> {
        let deny = regex::RegexSetBuilder::new(&policy.deny_patterns)
            .case_insensitive(true)
            .size_limit(8 << 20)
            .build()
            .context("a content deny-list pattern is not a valid regular expression")?;
        Ok(ContentFilter { deny, policy, redis, script: redis::Script::new(COUNT_SCRIPT), local: Mutex::new(HashMap::new()) })
    }

    /// `content_refused` when `text` matches the deny-list or is being spread as spam.
    pub async fn check(&self, sender: &Id, conversation: &Id, text: &str) -> Result<(), ApiError> {
        if self.deny.is_match(text) {
            return Err(ApiError::new(ErrorCode::ContentRefused, "the message was refused by this server's content policy"));
        }
        let max = self.policy.spam_max_conversations;
        if max == 0 || text.chars().count() < MIN_COUNTED_CHARS {
            return Ok(());
        }
        let digest = hex_digest(text);
        let count = match self.count_in_redis(sender, &digest, conversation).await {
            Some(count) => count,
            None => self.count_locally(sender, digest, conversation),
        };
        if count > max {
            let window = self.policy.spam_window.as_secs();
            return Err(ApiError::new(
                ErrorCode::ContentRefused,
                format!("the same text went to more than {max} conversations within {window} s; it looks like spam"),
            ));
        }
        Ok(())
    }

    async fn count_in_redis(&self, sender: &Id, digest: &str, conversation: &Id) -> Option<usize> {
        let redis = self.redis.as_ref()?;
        let mut invocation = self.script.prepare_invoke();
        let window_millis = u64::try_from(self.policy.spam_window.as_millis()).unwrap_or(u64::MAX);
        invocation.key(redis_keys::spam_key(sender, digest)).arg(conversation.as_str()).arg(window_millis);
        let mut connection = redis.clone();
        match tokio::time::timeout(REDIS_SPAM_TIMEOUT, invocation.invoke_async::<usize>(&mut connection)).await {
            Ok(Ok(count)) => Some(count),
            Ok(Err(error)) => {
                tracing::debug!(%error, "spam count in redis failed; counting locally");
                None
            }
            Err(_) => None,
        }
    }

    fn count_locally(&self, sender: &Id, digest: String, conversation: &Id) -> usize {
        let now = Instant::now();
        let mut local = self.local.lock().expect("spam counts lock poisoned");
        if local.len() >= LOCAL_WINDOWS_BEFORE_PRUNE {
            local.retain(|_, (_, window_end)| *window_end > now);
        }
        let entry = local.entry((sender.clone(), digest)).or_insert_with(|| (HashSet::new(), now + self.policy.spam_window));
        if entry.1 <= now {
            *entry = (HashSet::new(), now + self.policy.spam_window);
        }
        entry.0.insert(conversation.clone());
        entry.0.len()
    }
}

/// The text's identity without keeping the text: normalised for case and spacing, so trivial variations count as the same.
fn hex_digest(text: &str) -> String {
    let normalised: String = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    Sha256::digest(normalised.as_bytes())[..16].iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{ContentFilter, ContentPolicy};
    use schemas::ErrorCode;
    use subjects::Id;

    fn id(text: &str) -> Id {
        Id::parse(text).expect("test ids are valid")
    }

    #[tokio::test]
    async fn deny_patterns_ignore_case_and_bad_patterns_are_refused_at_start() {
        let policy = ContentPolicy { deny_patterns: vec![r"\bbuy cheap pills\b".to_owned()], ..ContentPolicy::default() };
        let filter = ContentFilter::new(policy, None).unwrap();
        let refused = filter.check(&id("eve"), &id("g-1"), "BUY CHEAP PILLS now").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::ContentRefused);
        assert!(filter.check(&id("eve"), &id("g-1"), "cheap pills are not for sale").await.is_ok());
        assert!(ContentFilter::new(ContentPolicy { deny_patterns: vec!["(".to_owned()], ..ContentPolicy::default() }, None).is_err());
    }

    #[tokio::test]
    async fn without_redis_one_text_into_too_many_conversations_is_refused() {
        let policy = ContentPolicy { spam_max_conversations: 2, ..ContentPolicy::default() };
        let filter = ContentFilter::new(policy, None).unwrap();
        let text = "Congratulations, you have won a prize! Click here";
        assert!(filter.check(&id("eve"), &id("g-1"), text).await.is_ok());
        assert!(filter.check(&id("eve"), &id("g-1"), text).await.is_ok(), "the same conversation again is not spreading");
        assert!(filter.check(&id("eve"), &id("g-2"), "congratulations,  YOU have won a prize! click here").await.is_ok());
        assert_eq!(filter.check(&id("eve"), &id("g-3"), text).await.unwrap_err().code, ErrorCode::ContentRefused);
        assert!(filter.check(&id("ann"), &id("g-3"), text).await.is_ok(), "counted per sender");
        assert!(filter.check(&id("eve"), &id("g-4"), "ok").await.is_ok(), "short texts are not counted");
    }
}
