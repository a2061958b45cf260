//! Revoked token ids, each kept only until the token it names would have expired anyway.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A set of revoked `jti`s. Shared between the verifier (reads on every request) and whatever
/// applies revocations (the gateway's store watcher).
#[derive(Debug, Default)]
pub struct RevocationSet {
    /// jti → the last second the revoked token could still verify (`exp + leeway`).
    entries: RwLock<HashMap<String, u64>>,
    /// Entry count mirrored outside the lock so the common case, nothing revoked, costs one
    /// atomic load on the request path.
    count: AtomicUsize,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Revokes `jti` until `until` (Unix seconds; pass the token's `exp` plus the verifier's
    /// leeway, or use [`crate::Verifier::revoke`] which does that). Purges entries that ended
    /// before `now`.
    pub fn revoke(&self, jti: impl Into<String>, until: u64, now: u64) {
        if let Ok(mut m) = self.entries.write() {
            m.retain(|_, u| *u >= now);
            let e = m.entry(jti.into()).or_insert(until);
            *e = (*e).max(until);
            self.count.store(m.len(), Ordering::Release);
        }
    }

    /// Revokes many `(jti, until)` at once: what [`revoke`](Self::revoke) does for each, with
    /// one purge and one write lock for them all. Re-applying a store's revocations after each
    /// change costs one pass over them, where a `revoke` each would purge the whole set once
    /// per entry.
    pub fn revoke_all<J: AsRef<str> + Into<String>>(
        &self,
        entries: impl IntoIterator<Item = (J, u64)>,
        now: u64,
    ) {
        if let Ok(mut m) = self.entries.write() {
            m.retain(|_, u| *u >= now);
            for (jti, until) in entries {
                // Held already (the usual case on a re-apply): no new key is made.
                match m.get_mut(jti.as_ref()) {
                    Some(held) => *held = (*held).max(until),
                    None => {
                        m.insert(jti.into(), until);
                    }
                }
            }
            self.count.store(m.len(), Ordering::Release);
        }
    }

    /// Whether `jti` is revoked. A poisoned lock reads as revoked: fail closed.
    pub fn is_revoked(&self, jti: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.entries.read().map_or(true, |m| m.contains_key(jti))
    }

    /// Drops entries whose token can no longer verify at `now`.
    pub fn purge(&self, now: u64) {
        if let Ok(mut m) = self.entries.write() {
            m.retain(|_, u| *u >= now);
            self.count.store(m.len(), Ordering::Release);
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the set holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_token() {
        let r = RevocationSet::new();
        r.revoke("a", 100, 0);
        r.revoke("b", 200, 0);
        assert!(r.is_revoked("a") && r.is_revoked("b"));
        r.purge(150);
        assert!(!r.is_revoked("a"));
        assert!(r.is_revoked("b"));
        r.revoke("c", 300, 201);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn revoking_many_at_once_is_revoking_each() {
        let each = RevocationSet::new();
        let all = RevocationSet::new();
        each.revoke("old", 50, 0);
        all.revoke("old", 50, 0);
        let entries = [("a", 100), ("b", 200), ("a", 150), ("gone", 90)];
        for (jti, until) in entries {
            each.revoke(jti, until, 100);
        }
        all.revoke_all(entries, 100);
        for jti in ["old", "a", "b", "gone"] {
            assert_eq!(each.is_revoked(jti), all.is_revoked(jti), "{jti}");
        }
        assert_eq!((all.len(), each.len()), (3, 3));
        all.purge(151);
        assert!(
            !all.is_revoked("a") && all.is_revoked("b"),
            "a kept its latest end"
        );
    }
}
