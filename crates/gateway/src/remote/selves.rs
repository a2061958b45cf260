//! Access keys of the central gateway, validated at the agent by asking the central who the key
//! belongs to (`POST …/selves` with the key as bearer) and caching the answer.
//!
//! Anyone can send a bearer, so what one may make the agent do is bounded:
//! - only bearers shaped like access keys ([`is_access_key_shaped`]) are asked about; anything
//!   else is refused at once, without a call;
//! - concurrent checks of one key share one call;
//! - at most [`MAX_CONCURRENT_CALLS`] calls are in flight at once. A check of an unknown key that
//!   finds them all busy does not queue: it gets [`SelfAnswer::Unavailable`] (a 503 clients
//!   retry), so a flood of made-up keys costs the central at most that many calls at a time
//!   and queues nothing at the agent. Since anyone can cause it, this is logged at debug level
//!   only, and not as the central being unreachable;
//! - a key the central accepted before is re-checked with permits of its own
//!   ([`MAX_CONCURRENT_CALLS`] more, waited for up to [`RECHECK_WAIT`]), which made-up keys
//!   cannot take: a flood cannot make the agent skip asking about a key the central may have
//!   revoked since. A check that was not asked (every permit taken, or the central answering
//!   429) is never answered from the stale cache: that is for a central that cannot answer.
//!
//! Cache rules (entries are keyed by the SHA-256 of the key; the key itself is never stored):
//! - an answer is reused for [`FRESH_FOR`] (30 s), then re-validated on the next use;
//! - a key the central refused is refused again for [`REFUSED_FOR`] without asking. Refusals
//!   live in a cache of their own ([`REFUSED_CAPACITY`] entries, the oldest making room), so
//!   made-up keys can never push out a key the central accepted;
//! - accepted keys: at most [`CAPACITY`], the one validated longest ago making room;
//! - while the central cannot be reached, an accepted key keeps working until
//!   [`STALE_IF_ERROR`] (10 min) after its last successful validation; a key the cache does not
//!   hold gets [`SelfAnswer::Unavailable`].
//!
//! Every lookup and insertion is O(1) (amortised): nothing scans the cache per request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kubegate_api::Self_;
use sha2::Digest;
use tokio::sync::{OnceCell, Semaphore};

use super::FetchError;
use super::client::HttpsClient;

/// What a client is told when its credential cannot be checked with the central now (a 503):
/// nothing of the central's address or of why, which are in the agent's log.
pub const UNAVAILABLE: &str =
    "the central gateway cannot check this credential now; try again later";

/// How long an answer of the central is used without asking again.
pub const FRESH_FOR: Duration = Duration::from_secs(30);
/// How long a refusal of the central is remembered.
pub const REFUSED_FOR: Duration = Duration::from_secs(5);
/// How long an accepted key keeps working after its last validation while the central is down.
pub const STALE_IF_ERROR: Duration = Duration::from_secs(600);
/// How long the central, once found unreachable, is not asked again. Checks meanwhile are
/// answered from the caches at once (a hung central would otherwise hold every check whose key
/// needs asking for the call's full timeout); then one check asks again while the others go on
/// being answered from the caches.
pub const DOWN_FOR: Duration = Duration::from_secs(5);
/// Most accepted keys remembered; beyond it, the one validated longest ago is dropped.
pub const CAPACITY: usize = 10_000;
/// Most refused keys remembered; beyond it, the oldest refusal is dropped (never an accepted
/// key: refusals are kept apart).
pub const REFUSED_CAPACITY: usize = 1_024;
/// Most `selves` calls in flight at once per pool (keys, tokens, re-checks of accepted
/// credentials); a check that finds its pool busy is not answered now (see the module
/// documentation).
pub const MAX_CONCURRENT_CALLS: usize = 32;
/// How long a re-check of a key the central accepted before waits for one of its own permits
/// when every one is taken.
pub const RECHECK_WAIT: Duration = Duration::from_secs(2);

/// Length of a Loft access key: 64 random alphanumeric characters (`vcluster platform create
/// accesskey --in-cluster`; see spec/loft-api.md).
const LOFT_KEY_LEN: usize = 64;

/// The `selves` request body.
const SELF_REQUEST: &[u8] = br#"{"apiVersion":"management.loft.sh/v1","kind":"Self","spec":{}}"#;

/// Whether `bearer` has the shape of an access key the central may hold: one kubegate generates
/// (`kgak_` and 43 base64url characters) or one Loft generates (64 ASCII letters and digits).
/// Anything else cannot be a key of the central, so the agent need not ask about it. (A key
/// configured at the central by digest alone must have one of these shapes to be usable at an
/// agent.)
pub fn is_access_key_shaped(bearer: &str) -> bool {
    kubegate_tokens::is_generated_access_key(bearer)
        || (bearer.len() == LOFT_KEY_LEN && bearer.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// What the central said about a key.
#[derive(Debug, Clone)]
pub enum SelfAnswer {
    /// The key is valid; this is who it belongs to.
    Valid(Arc<Self_>),
    /// The central refused the key, or it is not shaped like a key (the reason is for logs).
    Refused(String),
    /// The central cannot be reached and the key is not cached (the message says why).
    Unavailable(String),
}

/// SHA-256 of a key: what the caches are keyed by.
type KeyDigest = [u8; 32];

/// A map that remembers at most `capacity` entries and drops the one inserted (or replaced)
/// longest ago to make room, in amortised O(1): `order` lists insertions oldest first, and an
/// insertion whose entry was replaced or removed since is skipped when it comes up.
#[derive(Debug)]
struct Recent<V> {
    entries: HashMap<KeyDigest, Slot<V>>,
    order: VecDeque<(KeyDigest, u64)>,
    next_seq: u64,
    capacity: usize,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    at: Instant,
    seq: u64,
}

impl<V: Clone> Recent<V> {
    fn new(capacity: usize) -> Self {
        Recent {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    fn get(&self, digest: &KeyDigest) -> Option<(V, Instant)> {
        self.entries
            .get(digest)
            .map(|slot| (slot.value.clone(), slot.at))
    }

    fn insert(&mut self, digest: KeyDigest, value: V, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(digest, Slot { value, at, seq });
        self.order.push_back((digest, seq));
        while self.entries.len() > self.capacity {
            let Some((oldest, oldest_seq)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&oldest)
                .is_some_and(|s| s.seq == oldest_seq)
            {
                self.entries.remove(&oldest);
            }
        }
        // Re-validations leave superseded insertions behind; drop them once they outnumber the
        // live ones, which costs O(capacity) at most once per `capacity` insertions.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(d, seq)| entries.get(d).is_some_and(|s| s.seq == *seq));
        }
    }

    fn remove(&mut self, digest: &KeyDigest) {
        self.entries.remove(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug)]
struct Caches {
    accepted: Recent<Arc<Self_>>,
    refused: Recent<String>,
}

/// Validates access keys against the central gateway's `selves`.
#[derive(Debug)]
pub struct SelfCache {
    client: HttpsClient,
    url: String,
    central: String,
    windows: Windows,
    caches: Mutex<Caches>,
    /// One cell per key being validated: whoever comes first fills it, the others wait for it.
    in_flight: Mutex<HashMap<KeyDigest, Arc<OnceCell<SelfAnswer>>>>,
    /// Permits for calls to the central about access keys.
    calls: Semaphore,
    /// Permits for calls about bearers verified as the central's (its tokens): a pool of
    /// their own, so a flood of made-up key-shaped bearers, which fills `calls`, cannot keep
    /// the central's tokens from being checked.
    verified_calls: Semaphore,
    /// Permits for re-checks of keys and tokens the central accepted before (past their fresh
    /// window): made-up bearers never reach this pool, so they cannot keep the agent from
    /// asking whether an accepted credential was revoked since.
    rechecks: Semaphore,
    /// Set while the central is taken to be unreachable.
    outage: Mutex<Option<Outage>>,
}

#[derive(Debug, Clone, Copy)]
struct Windows {
    fresh: Duration,
    refused: Duration,
    stale: Duration,
    down: Duration,
}

/// What [`SelfCache::outage`] says of asking the central now.
enum Outlook {
    /// No outage: ask.
    Up,
    /// Taken to be unreachable: do not ask (why).
    Down(String),
    /// The outage's window is over: this caller asks again for everyone (the probe's number).
    Probe(u64),
}

/// A probe under way: if it ends without an answer recorded (its request was dropped), the
/// window ends at once, so the next check probes instead of everyone waiting out the
/// stretched window.
struct Probing<'a> {
    cache: &'a SelfCache,
    probe: u64,
    done: bool,
}

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut outage = self
            .cache
            .outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the window this probe stretched: not one a later outage opened.
        if let Some(current) = outage.as_mut()
            && current.probe == self.probe
        {
            current.until = Instant::now();
        }
    }
}

/// Why a call to the central gave no usable answer, and whether that says it cannot be
/// reached (no connection, TLS, timeout) rather than that it answered badly (a 5xx, a 429, a
/// malformed body), which is no reason to stop asking about other keys.
#[derive(Debug)]
struct Unanswered {
    cause: String,
    unreachable: bool,
    /// The central answered 429: it was not asked, as when every permit is taken. Not a
    /// central that cannot answer, so no stale answer stands in (anyone who can spend the
    /// central's rate limit could otherwise keep a revoked key working).
    throttled: bool,
}

/// The central found unreachable: why, and until when it is not asked.
#[derive(Debug)]
struct Outage {
    cause: String,
    until: Instant,
    /// Which probe stretched the window last (`0`: none yet).
    probe: u64,
}

/// A check's membership in the flight of its key. Dropping the last one (the flight finished,
/// or every request waiting on it went away) forgets the flight, so abandoned flights do not
/// pile up.
struct Flight<'a> {
    flights: &'a Mutex<HashMap<KeyDigest, Arc<OnceCell<SelfAnswer>>>>,
    digest: KeyDigest,
    /// `None` only once dropped: the clone must be released under the map's lock.
    cell: Option<Arc<OnceCell<SelfAnswer>>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let Some(ours) = self.cell.take() else {
            return;
        };
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        let current = flights
            .get(&self.digest)
            .is_some_and(|cell| Arc::ptr_eq(cell, &ours));
        // Clones are only made and released under this lock, so the count is exact: 1 means
        // only the map still holds the cell.
        drop(ours);
        if current
            && flights
                .get(&self.digest)
                .is_some_and(|cell| Arc::strong_count(cell) == 1)
        {
            flights.remove(&self.digest);
        }
    }
}

impl SelfCache {
    /// Validates keys at `<central_url>/kubernetes/management/apis/management.loft.sh/v1/selves`.
    pub fn new(client: HttpsClient, central_url: &str) -> SelfCache {
        let central = central_url.trim_end_matches('/').to_owned();
        SelfCache {
            client,
            url: format!("{central}/kubernetes/management/apis/management.loft.sh/v1/selves"),
            central,
            windows: Windows {
                fresh: FRESH_FOR,
                refused: REFUSED_FOR,
                stale: STALE_IF_ERROR,
                down: DOWN_FOR,
            },
            caches: Mutex::new(Caches {
                accepted: Recent::new(CAPACITY),
                refused: Recent::new(REFUSED_CAPACITY),
            }),
            in_flight: Mutex::new(HashMap::new()),
            calls: Semaphore::new(MAX_CONCURRENT_CALLS),
            verified_calls: Semaphore::new(MAX_CONCURRENT_CALLS),
            rechecks: Semaphore::new(MAX_CONCURRENT_CALLS),
            outage: Mutex::new(None),
        }
    }

    /// The same cache with other time windows than [`FRESH_FOR`], [`REFUSED_FOR`] and
    /// [`STALE_IF_ERROR`].
    pub fn with_windows(mut self, fresh: Duration, refused: Duration, stale: Duration) -> Self {
        self.windows = Windows {
            fresh,
            refused,
            stale,
            down: self.windows.down,
        };
        self
    }

    /// The same cache with another time than [`DOWN_FOR`] for which an unreachable central is
    /// not asked again.
    pub fn with_down_window(mut self, down: Duration) -> Self {
        self.windows.down = down;
        self
    }

    /// Whether to ask the central now: not while it is taken to be unreachable (`Down`, with
    /// why). Past the window, the caller that finds it over asks again (`Probe`), and the
    /// window is stretched over that call so the others go on being answered from the caches
    /// meanwhile.
    fn outage(&self) -> Outlook {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let Some(current) = outage.as_mut() else {
            return Outlook::Up;
        };
        if now < current.until {
            return Outlook::Down(current.cause.clone());
        }
        current.until = now + super::client::CALL_TIMEOUT + self.windows.down;
        current.probe += 1;
        Outlook::Probe(current.probe)
    }

    /// Records how a call went: an unreachable central starts (or goes on with) an outage, any
    /// answer ends one. Each change is logged once, not each check.
    fn record_call(&self, unreachable: Option<&str>, probed: bool) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        match unreachable {
            Some(cause) => {
                if outage.is_none() {
                    tracing::warn!(central = %self.central, error = %cause, "the central gateway cannot be reached; validations it gave go on working for their stale window");
                }
                let until = Instant::now() + self.windows.down;
                match outage.as_mut() {
                    // The probe's own failure opens the next window; a late failure of a
                    // call begun before leaves a probe's stretched window as it is.
                    Some(current) => {
                        current.cause = cause.to_owned();
                        current.until = if probed {
                            until
                        } else {
                            current.until.max(until)
                        };
                    }
                    None => {
                        *outage = Some(Outage {
                            cause: cause.to_owned(),
                            until,
                            probe: 0,
                        })
                    }
                }
            }
            None => {
                if outage.take().is_some() {
                    tracing::info!(central = %self.central, "the central gateway answers again");
                }
            }
        }
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer the caches give without asking, if they give one.
    fn cached_answer(&self, digest: &KeyDigest) -> Option<SelfAnswer> {
        let caches = self.caches();
        if let Some((me, at)) = caches.accepted.get(digest)
            && at.elapsed() < self.windows.fresh
        {
            return Some(SelfAnswer::Valid(me));
        }
        if let Some((why, at)) = caches.refused.get(digest)
            && at.elapsed() < self.windows.refused
        {
            return Some(SelfAnswer::Refused(why));
        }
        None
    }

    /// Joins the flight validating `digest`, or starts one. A flight whose answer is already
    /// out is over: a later check starts a new one (which looks at the caches first), so an
    /// answer is never handed out longer than the caches would keep it.
    fn join(&self, digest: KeyDigest) -> Flight<'_> {
        let mut flights = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cell = match flights.get(&digest) {
            Some(cell) if !cell.initialized() => Arc::clone(cell),
            _ => {
                let cell = Arc::new(OnceCell::new());
                flights.insert(digest, Arc::clone(&cell));
                cell
            }
        };
        Flight {
            flights: &self.in_flight,
            digest,
            cell: Some(cell),
        }
    }

    /// Says who `key` belongs to, from the cache or by asking the central.
    pub async fn check(&self, key: &str) -> SelfAnswer {
        if !is_access_key_shaped(key) {
            return SelfAnswer::Refused("not shaped like an access key".into());
        }
        self.lookup(key, &self.calls).await
    }

    /// The same for a bearer the agent has verified to be the central's own: a token whose
    /// signature, issuer, audience and lifetime checked out against the central's keys. It
    /// has no key's shape to check, and only the central can make one, so made-up bearers
    /// never reach this. The central's answer says what the agent cannot see: whether the
    /// token was revoked, its user's token generation raised or the user replaced, or the key
    /// it was made from deleted. Calls about such bearers have permits of their own.
    pub async fn check_verified(&self, bearer: &str) -> SelfAnswer {
        self.lookup(bearer, &self.verified_calls).await
    }

    /// The cached answer for `key`, or the answer of the one call its concurrent checks share,
    /// made with a permit of `permits`.
    async fn lookup(&self, key: &str, permits: &Semaphore) -> SelfAnswer {
        let digest: KeyDigest = sha2::Sha256::digest(key.as_bytes()).into();
        if let Some(answer) = self.cached_answer(&digest) {
            return answer;
        }
        let flight = self.join(digest);
        match flight.cell.as_deref() {
            Some(cell) => cell
                .get_or_init(|| self.validate(key, digest, permits))
                .await
                .clone(),
            // Not reached (only dropping the flight empties it); validating alone is correct.
            None => self.validate(key, digest, permits).await,
        }
    }

    /// Asks the central about `key` (unless a flight that just ended has cached the answer, or
    /// every call permit is taken) and records what it said.
    async fn validate(&self, key: &str, digest: KeyDigest, permits: &Semaphore) -> SelfAnswer {
        if let Some(answer) = self.cached_answer(&digest) {
            return answer;
        }
        let known = self.caches().accepted.get(&digest).is_some();
        let _permit = match permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) if known => {
                match tokio::time::timeout(RECHECK_WAIT, self.rechecks.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return self.busy(),
                }
            }
            Err(_) => return self.busy(),
        };
        let mut probing = match self.outage() {
            Outlook::Down(cause) => return self.unreachable(&digest, &cause),
            Outlook::Probe(probe) => Some(Probing {
                cache: self,
                probe,
                done: false,
            }),
            Outlook::Up => None,
        };
        let answer = self.ask(key).await;
        self.record_call(
            match &answer {
                Err(Unanswered {
                    cause,
                    unreachable: true,
                    ..
                }) => Some(cause.as_str()),
                _ => None,
            },
            probing.is_some(),
        );
        if let Some(probing) = probing.as_mut() {
            probing.done = true;
        }
        match answer {
            Err(Unanswered {
                throttled: true, ..
            }) => self.busy(),
            Err(Unanswered { cause, .. }) => self.unreachable(&digest, &cause),
            Ok(answer) => self.record(digest, answer),
        }
    }

    /// Caches what the central said about the credential with `digest`.
    fn record(&self, digest: KeyDigest, answer: Result<Self_, String>) -> SelfAnswer {
        match answer {
            Ok(me) => {
                let me = Arc::new(me);
                let mut caches = self.caches();
                caches.refused.remove(&digest);
                caches
                    .accepted
                    .insert(digest, Arc::clone(&me), Instant::now());
                SelfAnswer::Valid(me)
            }
            Err(why) => {
                let mut caches = self.caches();
                // A key the central now refuses (disabled, deleted) must not outlive the refusal
                // through the stale window.
                caches.accepted.remove(&digest);
                caches.refused.insert(digest, why.clone(), Instant::now());
                SelfAnswer::Refused(why)
            }
        }
    }

    /// The answer when the central was not asked (every permit taken, or it answered 429):
    /// [`SelfAnswer::Unavailable`], never a stale validation, since anyone can cause it (with
    /// made-up keys, or by spending the central's rate limit), and the credential may have
    /// been revoked since. Nothing says the central is down, so this logs at debug level, not
    /// the warning of [`unreachable`](Self::unreachable).
    fn busy(&self) -> SelfAnswer {
        tracing::debug!(central = %self.central, "the central gateway is not asked now (every call to it is taken, or it asked for fewer); a credential is not checked now");
        SelfAnswer::Unavailable(UNAVAILABLE.into())
    }

    /// The answer while the central cannot answer: the last accepted validation within the
    /// stale window, or [`SelfAnswer::Unavailable`].
    fn unreachable(&self, digest: &KeyDigest, cause: &str) -> SelfAnswer {
        let mut caches = self.caches();
        match caches.accepted.get(digest) {
            Some((me, at)) if at.elapsed() < self.windows.stale => {
                // The outage itself was logged once, when it began.
                tracing::debug!(central = %self.central, error = %cause, "the central gateway cannot be reached; using a cached validation");
                SelfAnswer::Valid(me)
            }
            _ => {
                caches.accepted.remove(digest);
                tracing::debug!(central = %self.central, error = %cause, "the central gateway cannot be reached; a credential it does not hold is not checked now");
                SelfAnswer::Unavailable(UNAVAILABLE.into())
            }
        }
    }

    /// `Ok(Ok(self))`: valid; `Ok(Err(why))`: the central refused it; `Err(_)`: no usable
    /// answer.
    async fn ask(&self, key: &str) -> Result<Result<Self_, String>, Unanswered> {
        let bad = |cause: String| Unanswered {
            cause,
            unreachable: false,
            throttled: false,
        };
        let reply = match self
            .client
            .post_json(&self.url, key, SELF_REQUEST.to_vec())
            .await
        {
            Ok(r) => r,
            Err(FetchError::Invalid(why)) => return Ok(Err(why)),
            Err(e) => {
                return Err(Unanswered {
                    cause: e.to_string(),
                    unreachable: true,
                    throttled: false,
                });
            }
        };
        let status = reply.status;
        if status.is_success() {
            return match serde_json::from_slice::<Self_>(&reply.body) {
                Ok(me)
                    if me
                        .status
                        .as_ref()
                        .is_some_and(|s| !s.subject.is_empty() || s.user.is_some()) =>
                {
                    Ok(Ok(me))
                }
                Ok(_) => Err(bad("the selves answer names no user".into())),
                Err(e) => Err(bad(format!("the selves answer is not a Self object: {e}"))),
            };
        }
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(Unanswered {
                cause: format!("{} answered {status}", self.url),
                unreachable: false,
                throttled: true,
            });
        }
        if status.is_server_error() {
            return Err(bad(format!("{} answered {status}", self.url)));
        }
        Ok(Err(format!(
            "the central gateway answered {status} for the credential"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Self_ {
        Self_ {
            status: Some(kubegate_api::SelfStatus {
                subject: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn digest(key: &str) -> KeyDigest {
        sha2::Sha256::digest(key.as_bytes()).into()
    }

    /// A key of the shape kubegate generates, told apart by `n`.
    fn key(n: usize) -> String {
        format!("kgak_{n:0>43}")
    }

    fn accept(cache: &SelfCache, key: &str, name: &str) {
        cache
            .caches()
            .accepted
            .insert(digest(key), Arc::new(named(name)), Instant::now());
    }

    fn refuse(cache: &SelfCache, key: &str) {
        cache
            .caches()
            .refused
            .insert(digest(key), "refused".into(), Instant::now());
    }

    /// A cache whose central is a port nothing listens on.
    async fn unreachable(fresh: Duration, stale: Duration) -> (SelfCache, String) {
        let client = super::super::test_support::client_trusting_nothing();
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", dead.local_addr().unwrap());
        drop(dead);
        let cache = SelfCache::new(client, &url).with_windows(fresh, REFUSED_FOR, stale);
        (cache, url)
    }

    #[test]
    fn generated_and_loft_keys_are_shaped_like_keys_and_nothing_else_is() {
        let generated = kubegate_tokens::AccessKeySecret::generate().unwrap();
        assert!(is_access_key_shaped(generated.expose()));
        assert!(is_access_key_shaped(&"aZ09".repeat(16)));
        for not_a_key in [
            "",
            "kgak_short",
            &format!("kgak_{}", "a".repeat(42)),
            &format!("kgak_{}", "a".repeat(44)),
            &format!("kgak_{}.", "a".repeat(42)),
            &"a".repeat(63),
            &"a".repeat(65),
            &format!("{}-", "a".repeat(63)),
            "a.b.c",
        ] {
            assert!(!is_access_key_shaped(not_a_key), "{not_a_key:?}");
        }
    }

    #[test]
    fn recent_drops_the_oldest_insertion_and_keeps_its_queue_bounded() {
        let mut recent = Recent::new(3);
        let now = Instant::now();
        for n in 0..3 {
            recent.insert(digest(&key(n)), n, now);
        }
        // Replacing 0 makes it the newest: 1 is dropped first, then 2.
        recent.insert(digest(&key(0)), 10, now);
        recent.insert(digest(&key(3)), 3, now);
        assert!(recent.get(&digest(&key(1))).is_none());
        recent.insert(digest(&key(4)), 4, now);
        assert!(recent.get(&digest(&key(2))).is_none());
        assert_eq!(recent.get(&digest(&key(0))).map(|(v, _)| v), Some(10));
        assert_eq!(recent.len(), 3);
        // Re-inserting one key over and over does not grow the queue without bound.
        for n in 0..100 {
            recent.insert(digest(&key(0)), n, now);
        }
        assert!(recent.order.len() <= 2 * 3);
        assert_eq!(recent.len(), 3);
    }

    /// A central that takes connections and drops them, counting them.
    async fn dropping() -> (SelfCache, Arc<std::sync::atomic::AtomicUsize>) {
        let client = super::super::test_support::client_trusting_nothing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&taken);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(tcp);
            }
        });
        let cache =
            SelfCache::new(client, &url).with_windows(Duration::ZERO, REFUSED_FOR, STALE_IF_ERROR);
        (cache, taken)
    }

    /// A central that answers every call with `status`, counting the calls.
    async fn answering(
        status: http::StatusCode,
    ) -> (SelfCache, Arc<std::sync::atomic::AtomicUsize>) {
        let (listener, url, acceptor, client) = super::super::test_support::tls_listener().await;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req: http::Request<_>| {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut res = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        ));
                        *res.status_mut() = status;
                        async move { Ok::<_, std::convert::Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let cache =
            SelfCache::new(client, &url).with_windows(Duration::ZERO, REFUSED_FOR, STALE_IF_ERROR);
        (cache, calls)
    }

    /// A central that answers badly (a 503, a 429) is reachable: each check still asks it,
    /// as before, rather than every key it has not cached being refused for the window. A
    /// 503 is a central that cannot answer, so a key it accepted before keeps working in its
    /// stale window; a 429 is a central not asked, and anyone able to spend its rate limit
    /// could cause it, so no stale answer stands in.
    #[tokio::test]
    async fn a_central_that_answers_badly_is_not_taken_to_be_down() {
        use std::sync::atomic::Ordering;
        for (status, stale_served) in [
            (http::StatusCode::SERVICE_UNAVAILABLE, true),
            (http::StatusCode::TOO_MANY_REQUESTS, false),
        ] {
            let (cache, calls) = answering(status).await;
            accept(&cache, &key(1), "alice");
            match cache.check(&key(1)).await {
                SelfAnswer::Valid(_) => assert!(stale_served, "{status}: a stale answer"),
                SelfAnswer::Unavailable(why) => {
                    assert!(!stale_served, "{status}: {why}");
                    assert_eq!(why, UNAVAILABLE);
                }
                other => panic!("{status}: got {other:?}"),
            }
            for n in 2..5 {
                match cache.check(&key(n)).await {
                    // Nothing of the central's address or answer for the client.
                    SelfAnswer::Unavailable(why) => assert_eq!(why, UNAVAILABLE),
                    other => panic!("{status}: expected Unavailable, got {other:?}"),
                }
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                4,
                "{status}: each check asked"
            );
            assert!(cache.outage.lock().unwrap().is_none());
        }
    }

    /// A probe whose request goes away (a client's reset) ends the window it stretched, so
    /// the next check probes instead of everyone waiting out the call's timeout; the window of
    /// an outage opened since is left alone.
    #[tokio::test]
    async fn a_probe_that_goes_away_ends_its_window() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        // Takes connections and never answers: a hung central.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let client = super::super::test_support::client_trusting_nothing();
        let cache = Arc::new(SelfCache::new(client, &url));
        *cache.outage.lock().unwrap() = Some(Outage {
            cause: "down".into(),
            until: Instant::now(),
            probe: 0,
        });
        let probe = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.check(&key(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            matches!(cache.outage(), Outlook::Down(_)),
            "the probe's call stretched the window"
        );
        probe.abort();
        let _ = probe.await;
        assert!(
            matches!(cache.outage(), Outlook::Probe(2)),
            "the next check probes"
        );
        // A probe gone after a new outage began does not end that one.
        let stale = Probing {
            cache: &cache,
            probe: 1,
            done: false,
        };
        drop(stale);
        assert!(matches!(cache.outage(), Outlook::Down(_)));
    }

    /// An unreachable central is not asked again for [`DOWN_FOR`]: checks meanwhile are
    /// answered from the caches at once (a hung central held each of them for the call's
    /// 10 s timeout), however many keys they are for. Past the window one check asks again.
    #[tokio::test]
    async fn an_unreachable_central_is_not_asked_again_for_a_while() {
        use std::sync::atomic::Ordering;
        let (cache, taken) = dropping().await;
        accept(&cache, &key(1), "alice");
        assert!(matches!(cache.check(&key(1)).await, SelfAnswer::Valid(_)));
        assert_eq!(taken.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            assert!(matches!(cache.check(&key(1)).await, SelfAnswer::Valid(_)));
            assert!(matches!(
                cache.check(&key(2)).await,
                SelfAnswer::Unavailable(_)
            ));
        }
        assert_eq!(taken.load(Ordering::SeqCst), 1, "asked once in the window");

        let (probing, taken) = dropping().await;
        let probing = probing.with_down_window(Duration::ZERO);
        accept(&probing, &key(1), "alice");
        for _ in 0..3 {
            assert!(matches!(probing.check(&key(1)).await, SelfAnswer::Valid(_)));
        }
        assert_eq!(
            taken.load(Ordering::SeqCst),
            3,
            "past the window, each asks again"
        );
    }

    #[tokio::test]
    async fn validated_keys_outlive_an_unreachable_central_until_the_stale_window_ends() {
        let (cache, url) = unreachable(Duration::ZERO, STALE_IF_ERROR).await;
        accept(&cache, &key(1), "alice");
        match cache.check(&key(1)).await {
            SelfAnswer::Valid(me) => assert_eq!(me.status.as_ref().unwrap().subject, "alice"),
            other => panic!("expected the cached answer, got {other:?}"),
        }
        match cache.check(&key(2)).await {
            // The client is told nothing of the central's address or of why.
            SelfAnswer::Unavailable(message) => {
                assert_eq!(message, UNAVAILABLE);
                assert!(!message.contains(&url));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }

        let (expired, _) = unreachable(Duration::ZERO, Duration::ZERO).await;
        accept(&expired, &key(1), "alice");
        assert!(matches!(
            expired.check(&key(1)).await,
            SelfAnswer::Unavailable(_)
        ));
        assert!(expired.caches().accepted.get(&digest(&key(1))).is_none());
        // Every flight is forgotten once it is over.
        assert!(expired.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn fresh_answers_and_refusals_are_served_without_asking() {
        // No stale window: only the fresh-cache path can answer while the central is down.
        let (cache, _) = unreachable(FRESH_FOR, Duration::ZERO).await;
        accept(&cache, &key(1), "bob");
        refuse(&cache, &key(2));
        assert!(matches!(cache.check(&key(1)).await, SelfAnswer::Valid(_)));
        assert!(matches!(cache.check(&key(2)).await, SelfAnswer::Refused(_)));
    }

    #[tokio::test]
    async fn refusals_never_push_out_accepted_keys() {
        let (cache, _) = unreachable(Duration::ZERO, STALE_IF_ERROR).await;
        accept(&cache, &key(0), "carol");
        for n in 1..=2 * REFUSED_CAPACITY {
            refuse(&cache, &key(n));
        }
        assert_eq!(cache.caches().refused.len(), REFUSED_CAPACITY);
        assert!(matches!(cache.check(&key(0)).await, SelfAnswer::Valid(_)));
    }

    /// Log lines written while it is alive (this thread only).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        }
    }

    /// Made-up key-shaped bearers can take every permit for key checks; a token the agent
    /// verified is still asked about, with a permit of its own pool.
    #[tokio::test]
    async fn verified_tokens_are_checked_while_key_checks_are_all_taken() {
        let (cache, calls) = answering(http::StatusCode::UNAUTHORIZED).await;
        let _all = cache
            .calls
            .try_acquire_many(MAX_CONCURRENT_CALLS as u32)
            .unwrap();
        // Asked (and refused): not left unchecked for want of a permit.
        assert!(matches!(
            cache.check_verified("header.claims.signature").await,
            SelfAnswer::Refused(_)
        ));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Anyone can take every permit for key checks with made-up keys. A key the central
    /// accepted before is then re-checked with a permit of its own pool, so a revocation is
    /// still seen; with that pool taken too, it is not checked now (never answered from the
    /// stale cache, which would let a flood keep a revoked key working for ten minutes). An
    /// unknown key gets Unavailable at once, without a call. None of it reports the central
    /// down, or warns.
    #[tokio::test]
    async fn checks_beyond_the_call_limit_never_keep_a_revoked_key_working() {
        use std::sync::atomic::Ordering;
        let logs = Logs::default();
        let writer = logs.clone();
        let _logging = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        // The central has revoked everything since.
        let (cache, calls) = answering(http::StatusCode::UNAUTHORIZED).await;
        // Accepted before, and past the fresh window: the stale cache holds it.
        accept(&cache, &key(1), "dave");
        let _all = cache
            .calls
            .try_acquire_many(MAX_CONCURRENT_CALLS as u32)
            .unwrap();
        assert!(matches!(cache.check(&key(1)).await, SelfAnswer::Refused(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the re-check asked");
        // Another key accepted before, with the re-check pool taken too.
        accept(&cache, &key(3), "erin");
        let _rechecks = cache
            .rechecks
            .try_acquire_many(MAX_CONCURRENT_CALLS as u32)
            .unwrap();
        match cache.check(&key(3)).await {
            SelfAnswer::Unavailable(message) => assert_eq!(message, UNAVAILABLE),
            other => panic!("expected Unavailable (never the stale answer), got {other:?}"),
        }
        match cache.check(&key(2)).await {
            SelfAnswer::Unavailable(message) => assert_eq!(message, UNAVAILABLE),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing else asked");
        let text = logs.text();
        assert!(!text.contains("cannot be reached"), "{text}");
        assert!(!text.contains("WARN"), "{text}");
        assert!(
            text.contains("DEBUG") && text.contains("the central gateway is not asked now"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bearers_not_shaped_like_keys_are_refused_without_a_flight() {
        let (cache, _) = unreachable(FRESH_FOR, STALE_IF_ERROR).await;
        assert!(matches!(
            cache.check("not-a-key").await,
            SelfAnswer::Refused(_)
        ));
        assert_eq!(cache.caches().refused.len(), 0);
    }
}
