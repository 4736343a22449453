//! When to try a failed push again: exponential backoff with jitter, or the provider's own `Retry-After`.

use std::time::Duration;

use rand::Rng;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// Backoff for the attempt after `failed_attempt` (1-based): `base × 2^(n-1)`, capped at `max`, then
/// up to 25 % longer at random so that jobs which failed together do not all come back together.
/// The jitter only ever adds, so each delay is still longer than the one before.
pub fn backoff_delay(failed_attempt: u64, base: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(failed_attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(30);
    let delay = base.saturating_mul(1u32 << exponent).min(max);
    delay.mul_f64(1.0 + rand::rng().random_range(0.0..0.25))
}

/// A `Retry-After` value: delta-seconds or an HTTP-date (RFC 9110), capped at `max`; `None` when unreadable.
pub fn parse_retry_after(value: &str, now: OffsetDateTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is an RFC 2822 date with the obsolete GMT zone.
            let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
            Duration::try_from(at - now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Option<Duration>) {
        let now = time::macros::datetime!(2026-11-28 10:00:00 UTC);
        assert_eq!(parse_retry_after(value, now, Duration::from_secs(3600)), expected, "{value:?}");
    }

    #[test]
    fn retry_after_values() {
        check("2", Some(Duration::from_secs(2)));
        check(" 120 ", Some(Duration::from_secs(120)));
        check("99999", Some(Duration::from_secs(3600)));
        check("Sat, 28 Nov 2026 10:00:30 GMT", Some(Duration::from_secs(30)));
        check("Sat, 28 Nov 2026 09:00:00 GMT", Some(Duration::ZERO));
        check("soon", None);
        check("-1", None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..=3u64 {
            let delay = backoff_delay(attempt, base, max);
            let floor = base * (1 << (attempt - 1));
            assert!(delay >= floor && delay < floor.mul_f64(1.25), "attempt {attempt}: {delay:?}");
        }
        assert!(backoff_delay(40, base, max) < max.mul_f64(1.25));
    }
}
