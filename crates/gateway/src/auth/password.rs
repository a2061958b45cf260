//! Password verification against the argon2 PHC strings of `users[].passwordHash`.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on the blocking pool. A user
//! that does not exist or has no password is checked against a fixed dummy hash, so the answer
//! takes as long as for a real user and does not tell which names exist.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Password checks that may run at once. Each one holds a blocking thread for tens of
/// milliseconds and argon2's memory cost (19 MiB with the default parameters): unbounded, a
/// burst of logins, which need no credential, could take hundreds of threads and gigabytes.
fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cpus.clamp(1, 8))
    });
    &SLOTS
}

/// How long a login waits for a free check slot before it is told to come back.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// The right to run one password check, held by the check itself: given back when argon2 is
/// done, even when the login that asked is gone (a client that resets its stream must not free
/// the slot while the work goes on, or the bound on checks at once would not hold).
pub(crate) struct CheckSlot(#[allow(dead_code)] tokio::sync::SemaphorePermit<'static>);

/// Waits (at most [`SLOT_WAIT`]) for a check slot; `None` when every slot stayed busy.
pub(crate) async fn check_slot() -> Option<CheckSlot> {
    slot_of(slots()).await
}

async fn slot_of(slots: &'static tokio::sync::Semaphore) -> Option<CheckSlot> {
    tokio::time::timeout(SLOT_WAIT, slots.acquire())
        .await
        .ok()?
        .ok()
        .map(CheckSlot)
}

/// An argon2 instance with the algorithm, version and parameters of `template`.
fn argon2_like(template: &PasswordHash) -> Option<Argon2<'static>> {
    let algorithm = Algorithm::try_from(template.algorithm.as_str()).ok()?;
    let version = match template.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(template).ok()?;
    Some(Argon2::new(algorithm, version, params))
}

/// A hash of a random password nobody knows, made with the parameters of `template` (a
/// configured user's hash) so checking it costs what checking that user's password costs; with
/// the defaults when there is no usable template. Computed once per parameter set.
fn dummy_hash(template: Option<&str>) -> Option<String> {
    static DUMMIES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let parsed = template.and_then(|t| PasswordHash::new(t).ok());
    let hasher = parsed.as_ref().and_then(argon2_like).unwrap_or_default();
    let key = match &parsed {
        Some(p) => format!("{}${:?}${}", p.algorithm, p.version, p.params),
        None => String::new(),
    };
    let mut dummies = DUMMIES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hash) = dummies.get(&key) {
        return Some(hash.clone());
    }
    let secret = kubegate_tokens::AccessKeySecret::generate().ok()?;
    let hash = hasher
        .hash_password(secret.expose().as_bytes())
        .ok()?
        .to_string();
    dummies.insert(key, hash.clone());
    Some(hash)
}

/// Verifies `password` against `hash` (a PHC string), or, when `hash` is `None`, against a
/// dummy hash with the parameters of `template`; `true` only for a real hash that matches.
/// Comparison is the argon2 crate's constant-time one. The check holds `slot` until it ends.
pub(crate) async fn verify(
    slot: CheckSlot,
    password: String,
    hash: Option<String>,
    template: Option<String>,
) -> bool {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        verify_blocking(password.as_bytes(), hash.as_deref(), template.as_deref())
    })
    .await
    .unwrap_or(false)
}

fn verify_blocking(password: &[u8], hash: Option<&str>, template: Option<&str>) -> bool {
    match hash {
        Some(hash) => {
            let Ok(parsed) = PasswordHash::new(hash) else {
                // A malformed configured hash fails like a wrong password; the hash itself is
                // never logged.
                tracing::warn!("a configured password hash is not a valid PHC string");
                return false;
            };
            Argon2::default().verify_password(password, &parsed).is_ok()
        }
        None => {
            if let Some(dummy) = dummy_hash(template) {
                let _ = Argon2::default().verify_password(password, dummy.as_str());
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_login_waits_for_a_check_slot_at_most_two_seconds() {
        let one: &'static tokio::sync::Semaphore =
            Box::leak(Box::new(tokio::sync::Semaphore::new(1)));
        let held = slot_of(one).await.expect("a free slot is taken at once");
        let started = tokio::time::Instant::now();
        assert!(
            slot_of(one).await.is_none(),
            "no slot while the only one is held"
        );
        assert_eq!(started.elapsed(), SLOT_WAIT);
        // A slot given back within the wait is taken.
        let waiting = tokio::spawn(slot_of(one));
        tokio::time::sleep(SLOT_WAIT / 2).await;
        drop(held);
        assert!(waiting.await.unwrap().is_some());
    }

    /// A login whose client goes away mid-check (an HTTP/2 stream reset drops its future)
    /// does not give the slot back while argon2 still runs: the bound on checks at once holds.
    #[tokio::test]
    async fn a_check_holds_its_slot_until_argon2_is_done_even_when_its_login_is_gone() {
        let one: &'static tokio::sync::Semaphore =
            Box::leak(Box::new(tokio::sync::Semaphore::new(1)));
        let hash = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let slot = slot_of(one).await.unwrap();
        let login = tokio::spawn(verify(slot, "guess".into(), Some(hash), None));
        // Let the login start its check, then drop it as a reset stream would.
        tokio::task::yield_now().await;
        login.abort();
        assert!(login.await.unwrap_err().is_cancelled());
        assert_eq!(one.available_permits(), 0, "the slot went with the login");
        // Given back when the check ends.
        let _slot = tokio::time::timeout(Duration::from_secs(60), one.acquire())
            .await
            .expect("the slot comes back once argon2 is done")
            .unwrap();
    }

    #[test]
    fn verifies_phc_strings() {
        let hash = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify_blocking(b"correct horse", Some(&hash), None));
        assert!(!verify_blocking(b"wrong", Some(&hash), None));
        assert!(!verify_blocking(b"correct horse", Some("not a hash"), None));
        assert!(!verify_blocking(b"correct horse", None, Some(&hash)));
        assert!(!verify_blocking(b"correct horse", None, None));
    }

    #[test]
    fn dummy_hash_copies_the_template_parameters() {
        let params = Params::new(1024, 1, 1, None).unwrap();
        let template = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"x")
            .unwrap()
            .to_string();
        let dummy = dummy_hash(Some(&template)).unwrap();
        let (t, d) = (
            PasswordHash::new(&template).unwrap(),
            PasswordHash::new(&dummy).unwrap(),
        );
        assert_eq!(t.algorithm, d.algorithm);
        assert_eq!(t.version, d.version);
        assert_eq!(t.params, d.params);
        assert_ne!(t.salt, d.salt);
        assert_eq!(dummy_hash(Some(&template)).unwrap(), dummy, "cached");
    }
}
