//! Asks the gateways' presence sets in Redis which users have a live connection right now.
//!
//! The sets are written by the gateways (`gateway/src/presence*.rs`): one member per device
//! connection, scored by its expiry in Redis' own clock. A user is live when any score is in the
//! future; the script reads `TIME` itself so a fanout with a skewed clock agrees with the gateways.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use subjects::{redis_keys, Id};

/// A push decision must not hold the fanout up for long; a slow Redis means no pushes for this message.
const PRESENCE_READ_TIMEOUT: Duration = Duration::from_secs(1);

const LIVE_CONNECTIONS_SCRIPT: &str = "
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local live = {}
for index, key in ipairs(KEYS) do
  live[index] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return live
";

#[derive(Clone)]
pub struct PresenceProbe {
    redis: ConnectionManager,
    script: redis::Script,
}

/// A lazy connection to the presence Redis: nothing is dialled until the first command.
pub(crate) fn lazy_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| format!("invalid NATTER_REDIS_URL {url:?}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(PRESENCE_READ_TIMEOUT))
        .set_response_timeout(Some(PRESENCE_READ_TIMEOUT))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).context("failed to set up the redis connection")
}

impl PresenceProbe {
    /// Connects lazily, so the fanout starts (and delivers) while Redis is down.
    pub fn connect(url: &str) -> anyhow::Result<PresenceProbe> {
        Ok(PresenceProbe { redis: lazy_connection(url)?, script: redis::Script::new(LIVE_CONNECTIONS_SCRIPT) })
    }

    /// The users among `users` with at least one live connection, in one round trip.
    pub async fn live_users(&self, users: &[Id]) -> anyhow::Result<BTreeSet<Id>> {
        if users.is_empty() {
            return Ok(BTreeSet::new());
        }
        let mut invocation = self.script.prepare_invoke();
        for user in users {
            invocation.key(redis_keys::presence_key(user));
        }
        let mut redis = self.redis.clone();
        let counts: Vec<i64> = tokio::time::timeout(PRESENCE_READ_TIMEOUT, invocation.invoke_async(&mut redis))
            .await
            .map_err(|_| anyhow::anyhow!("presence read timed out"))?
            .context("presence read failed")?;
        anyhow::ensure!(counts.len() == users.len(), "presence read returned {} counts for {} users", counts.len(), users.len());
        Ok(users.iter().zip(counts).filter(|(_, live)| *live > 0).map(|(user, _)| user.clone()).collect())
    }
}
