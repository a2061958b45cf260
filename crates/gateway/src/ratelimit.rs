//! Token-bucket rate limits per identity and per target.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Buckets not touched for this long are forgotten (a full bucket is the same as no bucket).
const IDLE_EVICTION_SECS: f64 = 300.0;
/// Prune at most this often.
const PRUNE_EVERY: usize = 4096;
/// Buckets kept at most. Past it, idle ones are pruned at once, and if every bucket is in use
/// they are all forgotten (each key starts again from a full bucket): memory stays bounded
/// whatever keys callers bring.
pub const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A set of token buckets keyed by name, all with the same rate and burst.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<(HashMap<String, Bucket>, usize)>,
}

impl Limiter {
    /// A limiter with `limit` per key.
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says when to retry when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u32> {
        let rate = self.limit.requests_per_second.max(f64::MIN_POSITIVE);
        let burst = f64::from(self.limit.burst.max(1));
        let mut guard = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (buckets, ops) = &mut *guard;
        *ops += 1;
        if *ops % PRUNE_EVERY == 0 {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < IDLE_EVICTION_SECS);
        }
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < IDLE_EVICTION_SECS);
            if buckets.len() >= MAX_BUCKETS {
                tracing::warn!(
                    buckets = buckets.len(),
                    "rate limiter full of active keys; starting every bucket afresh"
                );
                buckets.clear();
            }
        }
        let bucket = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: burst,
                updated: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rate).ceil();
            Err(wait.clamp(1.0, f64::from(u32::MAX)) as u32)
        }
    }
}

/// The configured limits.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Per authenticated identity.
    pub per_identity: Option<Limiter>,
    /// Per target.
    pub per_target: Option<Limiter>,
}

impl RateLimits {
    /// Limits from config.
    pub fn new(config: &crate::config::RateLimitConfig) -> RateLimits {
        RateLimits {
            per_identity: config.per_identity.map(Limiter::new),
            per_target: config.per_target.map(Limiter::new),
        }
    }

    /// Takes a token from `user`'s bucket; `Err(retry_after)` when it is empty. No limit
    /// configured (the default): not even a clock read.
    pub fn check_identity(&self, user: &str) -> Result<(), u32> {
        match &self.per_identity {
            Some(l) => l.check(user, Instant::now()),
            None => Ok(()),
        }
    }

    /// Takes a token from `target`'s bucket; `Err(retry_after)` when it is empty.
    pub fn check_target(&self, target: &str) -> Result<(), u32> {
        match &self.per_target {
            Some(l) => l.check(target, Instant::now()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = Limiter::new(RateLimit {
            requests_per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        assert_eq!(l.check("a", t0), Err(1));
        assert_eq!(l.check("b", t0), Ok(()), "keys are independent");
        assert_eq!(l.check("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_err());
        assert_eq!(l.check("a", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded_whatever_keys_arrive() {
        let l = Limiter::new(RateLimit {
            requests_per_second: 1.0,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS + 10 {
            assert_eq!(l.check(&format!("k{i}"), t0), Ok(()));
        }
        let len = l.buckets.lock().unwrap().0.len();
        assert!(len <= MAX_BUCKETS, "{len}");
    }

    #[test]
    fn slow_rates_ask_for_longer_waits() {
        let l = Limiter::new(RateLimit {
            requests_per_second: 0.1,
            burst: 1,
        });
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert_eq!(l.check("a", t0), Err(10));
    }
}
