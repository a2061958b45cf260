//! Failed-login counting: at most `max` failures per key (a user name, a source address) within
//! a sliding window. In memory, per process; bounded in size.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys tracked at most; beyond this the entries whose latest failure is oldest are dropped, so
/// a flood of distinct user names cannot grow memory without bound.
const MAX_KEYS: usize = 10_000;

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LoginKey {
    /// The SHA-256 of a user name as sent (known or not: unknown names are limited the same
    /// way). A digest, so a flood of long made-up names costs 32 bytes per key, not the name.
    User([u8; 32]),
    /// The client's address: an IPv4 address, or an IPv6 address's /64 network (see
    /// [`LoginKey::source`]).
    Source(IpAddr),
}

impl LoginKey {
    /// The key of a client at `ip`. An IPv6 client is counted by its /64 network, the block a
    /// single host or customer is routinely given: one address per attempt would otherwise
    /// give each attempt a fresh allowance. An IPv4-mapped address counts as its IPv4 one.
    pub(crate) fn source(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => LoginKey::Source(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    LoginKey::Source(IpAddr::V6(std::net::Ipv6Addr::from(network)))
                }
            },
            v4 => LoginKey::Source(v4),
        }
    }

    /// The key of user name `name`.
    pub(crate) fn user(name: &str) -> Self {
        use sha2::Digest;
        LoginKey::User(sha2::Sha256::digest(name.as_bytes()).into())
    }
}

/// Failed logins per key within a sliding window.
#[derive(Debug, Default)]
pub(crate) struct LoginLimiter {
    failures: Mutex<HashMap<LoginKey, VecDeque<Instant>>>,
    /// When each attempt still running began, per key: counted among the failures already,
    /// and kept there by [`clear`](Self::clear), whose success is another attempt's.
    running: Mutex<Failures>,
}

/// A login attempt [`LoginLimiter::begin_attempt`] counted. Dropped, it stays counted as a
/// failure (it failed, or whoever made it went away); [`succeeded`](Self::succeeded) takes
/// its count back.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: Vec<LoginKey>,
    at: Instant,
}

impl Attempt<'_> {
    /// The attempt succeeded: its count is taken back.
    pub(crate) fn succeeded(self) {
        let mut failures = self
            .limiter
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        forget_one(&mut failures, &self.keys, self.at);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut running = self
            .limiter
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        forget_one(&mut running, &self.keys, self.at);
    }
}

/// Takes one `at` out of each of `keys`' times, and keys left with none out of `map`.
fn forget_one(map: &mut Failures, keys: &[LoginKey], at: Instant) {
    for key in keys {
        if let Some(times) = map.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                map.remove(key);
            }
        }
    }
}

impl LoginLimiter {
    /// If any of `keys` already has `max` failures within `window`, how long until the oldest of
    /// them leaves the window. A `max` of 0 counts as 1, as in [`record_failure`](Self::record_failure).
    pub(crate) fn locked_for(
        &self,
        keys: &[LoginKey],
        max: u32,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        locked_in(&map, keys, max, window, now)
    }

    /// Records one failure against each of `keys`.
    pub(crate) fn record_failure(
        &self,
        keys: &[LoginKey],
        max: u32,
        window: Duration,
        now: Instant,
    ) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        count_failure(&mut map, keys, max, window, now);
    }

    /// Starts an attempt whose outcome takes a while (a password check): unless one of `keys`
    /// is locked already (`Err`: how long), counts the attempt as a failure at once. Attempts
    /// in flight so count against the limit as they run, and no number of logins checked side
    /// by side gets more than `max` tries into a window; one that succeeds takes its count back
    /// ([`Attempt::succeeded`]). The check and the count are one step under the lock.
    pub(crate) fn begin_attempt(
        &self,
        keys: &[LoginKey],
        max: u32,
        window: Duration,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wait) = locked_in(&map, keys, max, window, now) {
            return Err(wait);
        }
        count_failure(&mut map, keys, max, window, now);
        // Marked running before the `failures` lock is let go: `clear`, which holds both, sees
        // this attempt's count and its mark together or neither.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            running.entry(key.clone()).or_default().push_back(now);
        }
        drop(running);
        drop(map);
        Ok(Attempt {
            limiter: self,
            keys: keys.to_vec(),
            at: now,
        })
    }

    /// Forgets the failures of `key` (a successful login of that user), except the counts of
    /// attempts still running: a guess in flight when the real user logs in stays counted.
    pub(crate) fn clear(&self, key: &LoginKey) {
        // Both locks at once, in `begin_attempt`'s order: an attempt either counted and marked
        // running before this (kept), or begins after it (counted afresh).
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let running = running.get(key);
        if let Some(times) = map.get_mut(key) {
            times.retain(|t| running.is_some_and(|r| r.contains(t)));
            if times.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Number of keys tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

type Failures = HashMap<LoginKey, VecDeque<Instant>>;

/// [`LoginLimiter::locked_for`] over the map, held locked by the caller.
fn locked_in(
    map: &Failures,
    keys: &[LoginKey],
    max: u32,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    let max = max.max(1) as usize;
    keys.iter()
        .filter_map(|key| {
            let times = map.get(key)?;
            let recent: Vec<&Instant> = times
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < window)
                .collect();
            // The window reopens when the oldest failure that still counts expires (none
            // when fewer than `max` count).
            let oldest = recent.get(recent.len().checked_sub(max)?)?;
            Some(window.saturating_sub(now.saturating_duration_since(**oldest)))
        })
        .max()
}

/// [`LoginLimiter::record_failure`] over the map, held locked by the caller.
fn count_failure(map: &mut Failures, keys: &[LoginKey], max: u32, window: Duration, now: Instant) {
    for key in keys {
        let times = map.entry(key.clone()).or_default();
        times.retain(|t| now.saturating_duration_since(*t) < window);
        times.push_back(now);
        // Only the last `max` failures can ever decide a lockout.
        while times.len() > max.max(1) as usize {
            times.pop_front();
        }
    }
    prune(map, window, now);
}

fn prune(map: &mut Failures, window: Duration, now: Instant) {
    map.retain(|_, times| {
        times
            .back()
            .is_some_and(|t| now.saturating_duration_since(*t) < window)
    });
    if map.len() <= MAX_KEYS {
        return;
    }
    let mut latest: Vec<(Instant, LoginKey)> = map
        .iter()
        .filter_map(|(k, times)| times.back().map(|t| (*t, k.clone())))
        .collect();
    latest.sort_by_key(|(t, _)| *t);
    // Evict down to 90% so a sustained flood pays for the sort once per thousand new keys, not
    // on every failure.
    let excess = map.len() - MAX_KEYS * 9 / 10;
    for (_, key) in latest.into_iter().take(excess) {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    /// Eight checks begun side by side (one per check slot) before any has failed: only `max`
    /// get to run, and one that succeeds gives its place back.
    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let limiter = LoginLimiter::default();
        let keys = [
            LoginKey::user("alice"),
            LoginKey::Source("192.0.2.1".parse().unwrap()),
        ];
        let now = Instant::now();
        let begun: Vec<_> = (0..8)
            .map(|i| limiter.begin_attempt(&keys, 5, WINDOW, now + Duration::from_millis(i)))
            .collect();
        assert_eq!(begun.iter().filter(|b| b.is_ok()).count(), 5, "{begun:?}");
        assert!(begun[5..].iter().all(Result::is_err));
        // One of them succeeds: its count is taken back, and another attempt may begin.
        let mut begun = begun;
        let Ok(attempt) = begun.remove(2) else {
            unreachable!()
        };
        attempt.succeeded();
        let later = now + Duration::from_millis(10);
        assert!(limiter.begin_attempt(&keys, 5, WINDOW, later).is_ok());
        assert!(limiter.begin_attempt(&keys, 5, WINDOW, later).is_err());
        // The rest failed: the window holds the user until the first of them leaves it.
        assert!(limiter.locked_for(&keys[..1], 5, WINDOW, later).is_some());
    }

    /// The real user logging in clears their failures, but not the attempts still running:
    /// guesses in flight stay counted, and do not get a fresh allowance.
    #[test]
    fn a_success_does_not_clear_attempts_still_running() {
        let limiter = LoginLimiter::default();
        let user = LoginKey::user("alice");
        let keys = [user.clone()];
        let now = Instant::now();
        let guesses: Vec<_> = (0..3)
            .map(|i| limiter.begin_attempt(&keys, 3, WINDOW, now + Duration::from_millis(i)))
            .collect::<Result<_, _>>()
            .unwrap();
        // A failure recorded before, its attempt over.
        drop(limiter.begin_attempt(&keys, 4, WINDOW, now + Duration::from_millis(3)));
        let real = now + Duration::from_millis(4);
        limiter.clear(&user);
        assert!(
            limiter.locked_for(&keys, 3, WINDOW, real).is_some(),
            "the three guesses in flight still count"
        );
        drop(guesses);
        assert!(
            limiter.locked_for(&keys, 3, WINDOW, real).is_some(),
            "and failed"
        );
        limiter.clear(&user);
        assert!(limiter.locked_for(&keys, 3, WINDOW, real).is_none());
    }

    #[test]
    fn locks_after_max_failures_and_reopens_after_the_window() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let keys = [LoginKey::user("alice")];
        for i in 0..3 {
            assert_eq!(l.locked_for(&keys, 3, WINDOW, t0), None, "attempt {i}");
            l.record_failure(&keys, 3, WINDOW, t0 + Duration::from_secs(i));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            l.locked_for(&keys, 3, WINDOW, at),
            Some(Duration::from_secs(50))
        );
        // The first failure leaves the window at t0+60; two remain, so logins may be tried again.
        assert_eq!(
            l.locked_for(&keys, 3, WINDOW, t0 + Duration::from_secs(60)),
            None
        );
        // Other keys are unaffected.
        assert_eq!(l.locked_for(&[LoginKey::user("bob")], 3, WINDOW, at), None);
    }

    /// An IPv6 client is counted by its /64: rotating through the addresses of one network
    /// (which a host is routinely given whole) earns no fresh allowance.
    #[test]
    fn sources_in_one_ipv6_64_share_a_key() {
        let key = |s: &str| LoginKey::source(s.parse().unwrap());
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            l.record_failure(&[key(&format!("2001:db8::{i}"))], 3, WINDOW, t0);
        }
        assert!(
            l.locked_for(&[key("2001:db8::ff")], 3, WINDOW, t0)
                .is_some()
        );
    }

    #[test]
    fn any_locked_key_locks() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let source = LoginKey::Source(IpAddr::from([10, 0, 0, 1]));
        for name in ["a", "b"] {
            l.record_failure(&[LoginKey::user(name), source.clone()], 2, WINDOW, t0);
        }
        let keys = [LoginKey::user("c"), source];
        assert!(l.locked_for(&keys, 2, WINDOW, t0).is_some());
    }

    #[test]
    fn a_max_of_zero_locks_like_one() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let keys = [LoginKey::user("alice")];
        assert_eq!(l.locked_for(&keys, 0, WINDOW, t0), None);
        l.record_failure(&keys, 0, WINDOW, t0);
        for _ in 0..2 {
            assert_eq!(l.locked_for(&keys, 0, WINDOW, t0), Some(WINDOW));
            assert_eq!(l.locked_for(&keys, 1, WINDOW, t0), Some(WINDOW));
        }
    }

    #[test]
    fn clear_forgets_a_key() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let keys = [LoginKey::user("alice")];
        l.record_failure(&keys, 1, WINDOW, t0);
        assert!(l.locked_for(&keys, 1, WINDOW, t0).is_some());
        l.clear(&keys[0]);
        assert!(l.locked_for(&keys, 1, WINDOW, t0).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 500) {
            l.record_failure(&[LoginKey::user(&format!("u{i}"))], 5, WINDOW, t0);
        }
        assert!(l.len() <= MAX_KEYS);
        // Expired entries are dropped on the next write.
        l.record_failure(&[LoginKey::user("late")], 5, WINDOW, t0 + WINDOW);
        assert_eq!(l.len(), 1);
    }
}
