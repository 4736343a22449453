//! Token-bucket rate limits per user and per client address for sends, connects and uploads, shared by every gateway through Redis.
//!
//! One script call takes a token from the user's bucket and the address's bucket together, or
//! from neither: a refused request costs its caller nothing, and the two checks need one round
//! trip. Without Redis, or while it does not answer, each gateway limits in memory instead, so
//! an abuser gets at most one allowance per gateway rather than an unlimited one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use subjects::{redis_keys, Id};
use tokio::time::Instant;

use crate::api_error::ApiError;

/// A limit is worthless if checking it stalls the request: past this, decide locally.
const REDIS_LIMIT_TIMEOUT: Duration = Duration::from_millis(250);
/// The local buckets are pruned of full (idle) ones when there are more than this many.
const LOCAL_BUCKETS_BEFORE_PRUNE: usize = 50_000;

/// Refills each bucket from the time elapsed (Redis's own clock, so gateways agree), takes one
/// token from every bucket if all have one, else reports how long until they would. Keys expire
/// once a bucket would be full again, so idle users cost no memory.
const TAKE_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local levels = {}
local wait = 0
for index, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * index - 1])
  local per_ms = tonumber(ARGV[2 * index]) / 1000
  local stored = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(stored[1]) or capacity
  local at = tonumber(stored[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
  if tokens < 1 then
    wait = math.max(wait, math.ceil((1 - tokens) / per_ms))
  end
  levels[index] = tokens
end
if wait > 0 then
  return wait
end
for index, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * index - 1])
  local per_ms = tonumber(ARGV[2 * index]) / 1000
  redis.call('HSET', key, 'tokens', tostring(levels[index] - 1), 'at', now)
  redis.call('PEXPIRE', key, math.ceil(capacity / per_ms) + 1000)
end
return 0
";

/// What is being limited; each has its own pair of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedAction {
    Send,
    Connect,
    Upload,
}

impl LimitedAction {
    const ALL: [LimitedAction; 3] = [LimitedAction::Send, LimitedAction::Connect, LimitedAction::Upload];

    fn name(self) -> &'static str {
        match self {
            LimitedAction::Send => "send",
            LimitedAction::Connect => "connect",
            LimitedAction::Upload => "upload",
        }
    }
}

/// A bucket of `burst` tokens refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub burst: u32,
    pub per_second: f64,
}

impl Bucket {
    /// `"<burst>/<per_second>"`, e.g. `30/10`; `off` for no limit.
    pub fn parse(text: &str) -> anyhow::Result<Option<Bucket>> {
        if text == "off" {
            return Ok(None);
        }
        let (burst, per_second) = text.split_once('/').context("expected <burst>/<per second>, e.g. 30/10, or off")?;
        let bucket = Bucket {
            burst: burst.trim().parse().context("the burst must be a whole number")?,
            per_second: per_second.trim().parse().context("the rate must be a number per second")?,
        };
        anyhow::ensure!(bucket.burst >= 1, "the burst must be at least 1");
        anyhow::ensure!(bucket.per_second.is_finite() && bucket.per_second > 0.0, "the rate must be positive");
        Ok(Some(bucket))
    }
}

/// The limits of one action: per user, and per client address (which many users may share
/// behind one NAT, so it is the looser of the two by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActionLimits {
    pub per_user: Option<Bucket>,
    pub per_address: Option<Bucket>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub send: ActionLimits,
    pub connect: ActionLimits,
    pub upload: ActionLimits,
}

impl Default for RateLimits {
    fn default() -> Self {
        let bucket = |burst, per_second| Some(Bucket { burst, per_second });
        RateLimits {
            send: ActionLimits { per_user: bucket(50, 20.0), per_address: bucket(2_000, 1_000.0) },
            connect: ActionLimits { per_user: bucket(20, 2.0), per_address: bucket(2_000, 200.0) },
            upload: ActionLimits { per_user: bucket(20, 1.0), per_address: bucket(200, 20.0) },
        }
    }
}

impl RateLimits {
    fn of(&self, action: LimitedAction) -> ActionLimits {
        match action {
            LimitedAction::Send => self.send,
            LimitedAction::Connect => self.connect,
            LimitedAction::Upload => self.upload,
        }
    }

    /// `NATTER_RATE_<ACTION>_PER_USER` / `_PER_ADDRESS` = `<burst>/<per second>` or `off`.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<RateLimits> {
        let mut limits = RateLimits::default();
        for (action, target) in [("SEND", &mut limits.send), ("CONNECT", &mut limits.connect), ("UPLOAD", &mut limits.upload)] {
            for (scope, bucket) in [("USER", &mut target.per_user), ("ADDRESS", &mut target.per_address)] {
                let name = format!("NATTER_RATE_{action}_PER_{scope}");
                if let Some(value) = environment.get(&name).filter(|value| !value.is_empty()) {
                    *bucket = Bucket::parse(value).with_context(|| format!("{name}={value:?}"))?;
                }
            }
        }
        Ok(limits)
    }
}

struct LocalBucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    redis: Option<ConnectionManager>,
    limits: RateLimits,
    script: redis::Script,
    /// Bucket key → level; a std mutex held for arithmetic only, never across an await.
    local: Mutex<HashMap<String, LocalBucket>>,
}

impl RateLimiter {
    pub fn new(redis: Option<ConnectionManager>, limits: RateLimits) -> RateLimiter {
        telemetry::gateway_metrics().declare_rate_limited_actions(&LimitedAction::ALL.map(LimitedAction::name));
        RateLimiter { redis, limits, script: redis::Script::new(TAKE_SCRIPT), local: Mutex::new(HashMap::new()) }
    }

    /// Takes one `action` token for `user` at `address`, or answers `rate_limited` with how long to wait.
    pub async fn check(&self, action: LimitedAction, user: &Id, address: IpAddr) -> Result<(), ApiError> {
        let limits = self.limits.of(action);
        let mut buckets = Vec::with_capacity(2);
        if let Some(bucket) = limits.per_user {
            buckets.push((redis_keys::rate_limit_user_key(action.name(), user), bucket));
        }
        if let Some(bucket) = limits.per_address {
            buckets.push((redis_keys::rate_limit_address_key(action.name(), &address.to_string()), bucket));
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let wait_millis = match self.take_in_redis(&buckets).await {
            Some(wait_millis) => wait_millis,
            None => self.take_locally(&buckets),
        };
        if wait_millis == 0 {
            return Ok(());
        }
        telemetry::gateway_metrics().count_rate_limit_refusal(action.name());
        Err(ApiError::rate_limited(format!("too many {} requests; retry in {wait_millis} ms", action.name()), wait_millis))
    }

    /// The wait in milliseconds (0 = allowed), or None when Redis could not say in time.
    async fn take_in_redis(&self, buckets: &[(String, Bucket)]) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        let mut invocation = self.script.prepare_invoke();
        for (key, bucket) in buckets {
            invocation.key(key).arg(bucket.burst).arg(bucket.per_second);
        }
        let mut connection = redis.clone();
        match tokio::time::timeout(REDIS_LIMIT_TIMEOUT, invocation.invoke_async::<u64>(&mut connection)).await {
            Ok(Ok(wait_millis)) => Some(wait_millis),
            Ok(Err(error)) => {
                tracing::debug!(%error, "rate limit in redis failed; limiting locally");
                None
            }
            Err(_) => {
                tracing::debug!("rate limit in redis timed out; limiting locally");
                None
            }
        }
    }

    fn take_locally(&self, buckets: &[(String, Bucket)]) -> u64 {
        let now = Instant::now();
        let mut local = self.local.lock().expect("rate limit lock poisoned");
        if local.len() >= LOCAL_BUCKETS_BEFORE_PRUNE {
            // A bucket idle long enough to be full again is the same as no bucket.
            local.retain(|_, level| now.duration_since(level.at) < Duration::from_secs(600));
        }
        let mut levels = Vec::with_capacity(buckets.len());
        let mut wait_seconds: f64 = 0.0;
        for (key, bucket) in buckets {
            let capacity = f64::from(bucket.burst);
            let tokens = match local.get(key) {
                Some(level) => (level.tokens + now.duration_since(level.at).as_secs_f64() * bucket.per_second).min(capacity),
                None => capacity,
            };
            if tokens < 1.0 {
                wait_seconds = wait_seconds.max((1.0 - tokens) / bucket.per_second);
            }
            levels.push(tokens);
        }
        if wait_seconds > 0.0 {
            return (wait_seconds * 1000.0).ceil() as u64;
        }
        for ((key, _), tokens) in buckets.iter().zip(levels) {
            local.insert(key.clone(), LocalBucket { tokens: tokens - 1.0, at: now });
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::{ActionLimits, Bucket, LimitedAction, RateLimiter, RateLimits};

    fn user(name: &str) -> subjects::Id {
        subjects::Id::parse(name).expect("test ids are valid")
    }

    #[test]
    fn limits_parse_from_the_environment() {
        let environment: HashMap<String, String> =
            [("NATTER_RATE_SEND_PER_USER", "5/2.5"), ("NATTER_RATE_CONNECT_PER_ADDRESS", "off")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        let limits = RateLimits::from_environment(&environment).unwrap();
        assert_eq!(limits.send.per_user, Some(Bucket { burst: 5, per_second: 2.5 }));
        assert_eq!(limits.connect.per_address, None);
        assert_eq!(limits.upload, RateLimits::default().upload);
        for bad in ["5", "0/1", "5/0", "5/-1", "x/1", "5/NaN"] {
            let environment: HashMap<String, String> = [("NATTER_RATE_UPLOAD_PER_USER".to_owned(), bad.to_owned())].into();
            assert!(RateLimits::from_environment(&environment).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_a_burst_then_the_refill_rate_and_a_refusal_takes_nothing() {
        let limits = RateLimits {
            send: ActionLimits { per_user: Some(Bucket { burst: 3, per_second: 10.0 }), per_address: Some(Bucket { burst: 4, per_second: 10.0 }) },
            ..RateLimits::default()
        };
        let limiter = RateLimiter::new(None, limits);
        let address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..3 {
            limiter.check(LimitedAction::Send, &user("alice"), address).await.unwrap();
        }
        let refused = limiter.check(LimitedAction::Send, &user("alice"), address).await.unwrap_err();
        assert_eq!(refused.retry_after_ms(), Some(100), "one token comes back in 100 ms");
        // Alice's refusal took nothing from the shared address: bob still gets its last token.
        limiter.check(LimitedAction::Send, &user("bob"), address).await.unwrap();
        assert!(limiter.check(LimitedAction::Send, &user("carol"), address).await.is_err(), "the address is spent");
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        limiter.check(LimitedAction::Send, &user("alice"), address).await.unwrap();
        assert!(limiter.check(LimitedAction::Connect, &user("alice"), address).await.is_ok(), "actions have their own buckets");
    }
}
