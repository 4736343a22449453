//! The Lua scripts that keep presence in Redis, and how to queue them in a pipeline.
//!
//! Each script reads Redis' own clock (`TIME`), so gateways with skewed clocks still agree on
//! what has expired, and each runs atomically, so "this was the user's first (or last) live
//! device" is decided once, globally, however many gateways race. A user's presence set holds
//! one member per device connection, scored by its expiry in unix milliseconds; a member whose
//! score is not in the future no longer counts.

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};
use subjects::redis_keys;
use subjects::Id;

/// Redis' clock in milliseconds; every script starts with it.
const NOW: &str = "
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
";

/// Adds or refreshes one connection. KEYS: presence set, expiry index. ARGV: member, ttl ms, user.
/// Returns 1 if the user had no live device before (they just came online), else 0.
const CONNECT: &str = "
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local was_online = redis.call('ZCARD', KEYS[1]) > 0
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], newest[2])
redis.call('ZADD', KEYS[2], 'GT', expiry, ARGV[3])
if was_online then return 0 end
return 1
";

/// Removes one connection. KEYS: presence set, last-seen key, expiry index. ARGV: member, user.
/// Returns 1 if no live device is left (the user just went offline; last seen is set), else 0.
/// "No live device left" counts even when the member was already gone (Redis restarted, or it
/// expired): announcing offline twice is harmless, never announcing it leaves contacts wrong.
const DISCONNECT: &str = "
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest > 0 then
  redis.call('ZADD', KEYS[3], newest[2], ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], newest[2])
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], now)
return 1
";

/// Finds users whose every device expired (their gateway died or lost Redis) and retires them.
/// KEYS: expiry index. ARGV: presence key prefix, last-seen key prefix, most users per call.
/// Returns the users that just went offline. Keys are built from prefixes here, which a Redis
/// Cluster would refuse; Natter uses one Redis (or a primary with replicas) for presence.
const SWEEP: &str = "
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local gone = {}
for _, user in ipairs(due) do
  local key = ARGV[1] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest > 0 then
    redis.call('ZADD', KEYS[1], newest[2], user)
  else
    redis.call('ZREM', KEYS[1], user)
    redis.call('SET', ARGV[2] .. user, now)
    gone[#gone + 1] = user
  end
end
return gone
";

/// Reads users' presence. KEYS: presence set and last-seen key, in pairs, one pair per user.
/// Returns, per user, the number of live devices and the last-seen millis ('' if never seen).
const STATUS: &str = "
local result = {}
for i = 1, #KEYS, 2 do
  result[#result + 1] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
  result[#result + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return result
";

/// Most users one sweep retires; the next tick takes the rest.
pub const SWEEP_BATCH: usize = 1000;

pub struct PresenceScripts {
    connect: Script,
    disconnect: Script,
    sweep: Script,
    status: Script,
}

impl Default for PresenceScripts {
    fn default() -> Self {
        let with_clock = |body: &str| Script::new(&format!("{NOW}{body}"));
        PresenceScripts { connect: with_clock(CONNECT), disconnect: with_clock(DISCONNECT), sweep: with_clock(SWEEP), status: with_clock(STATUS) }
    }
}

impl PresenceScripts {
    pub fn queue_connect(&self, pipe: &mut Pipeline, user: &Id, member: &str, ttl_millis: u64) {
        let mut invocation = self.connect.prepare_invoke();
        invocation.key(redis_keys::presence_key(user)).key(redis_keys::PRESENCE_EXPIRY_INDEX_KEY).arg(member).arg(ttl_millis).arg(user.as_str());
        pipe.invoke_script(&invocation);
    }

    pub fn queue_disconnect(&self, pipe: &mut Pipeline, user: &Id, member: &str) {
        let mut invocation = self.disconnect.prepare_invoke();
        invocation
            .key(redis_keys::presence_key(user))
            .key(redis_keys::last_seen_key(user))
            .key(redis_keys::PRESENCE_EXPIRY_INDEX_KEY)
            .arg(member)
            .arg(user.as_str());
        pipe.invoke_script(&invocation);
    }

    pub fn queue_sweep(&self, pipe: &mut Pipeline) {
        let mut invocation = self.sweep.prepare_invoke();
        invocation
            .key(redis_keys::PRESENCE_EXPIRY_INDEX_KEY)
            .arg(redis_keys::PRESENCE_KEY_PREFIX)
            .arg(redis_keys::LAST_SEEN_KEY_PREFIX)
            .arg(SWEEP_BATCH);
        pipe.invoke_script(&invocation);
    }

    pub fn queue_status(&self, pipe: &mut Pipeline, users: &[Id]) {
        let mut invocation = self.status.prepare_invoke();
        for user in users {
            invocation.key(redis_keys::presence_key(user)).key(redis_keys::last_seen_key(user));
        }
        pipe.invoke_script(&invocation);
    }

    /// Runs a pipeline of these scripts; after a Redis restart (scripts gone) loads them and runs it once more.
    ///
    /// Safe to repeat: when the scripts are missing every invocation in the pipeline failed, so none ran.
    pub async fn query<T: FromRedisValue>(&self, redis: &mut ConnectionManager, pipe: &Pipeline) -> RedisResult<T> {
        match pipe.query_async(redis).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut load = redis::pipe();
                for script in [&self.connect, &self.disconnect, &self.sweep, &self.status] {
                    load.load_script(script).ignore();
                }
                load.query_async::<()>(redis).await?;
                pipe.query_async(redis).await
            }
            other => other,
        }
    }
}
