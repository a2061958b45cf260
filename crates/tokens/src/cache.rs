//! A bounded cache of verified tokens, keyed by a keyed 128-bit hash of the token (never the
//! token itself).
//!
//! The hash is GMAC (AES-128-GCM over an empty plaintext with the token as associated data)
//! under a random key drawn when the cache is built. It never leaves the process, so the
//! fixed nonce is harmless: a forged token maps to a cached entry only if its GHASH polynomial
//! collides under a key the attacker never observes (probability ≈ length/2^128). It costs about
//! a third of SHA-256 on a ~700-byte token, which is most of a cache hit's budget.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use rand::Rng;

use crate::Claims;

const SHARDS: usize = 16;

/// Keyed hash of a token. Uniformly distributed already, so it hashes itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenHash([u8; 16]);

impl TokenHash {
    fn shard(&self) -> usize {
        usize::from(self.0[15]) % SHARDS
    }
}

impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(w));
    }
}

/// The per-cache GMAC key.
pub(crate) struct TokenHasher(LessSafeKey);

impl TokenHasher {
    fn new() -> Option<TokenHasher> {
        let mut k = [0u8; 16];
        rand::rng().fill_bytes(&mut k);
        UnboundKey::new(&AES_128_GCM, &k)
            .ok()
            .map(|k| TokenHasher(LessSafeKey::new(k)))
    }

    /// `None` only for inputs beyond GCM's length limit, far above any token length cap.
    pub(crate) fn hash(&self, token: &str) -> Option<TokenHash> {
        let mut empty = [0u8; 0];
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(token.as_bytes()),
                &mut empty,
            )
            .ok()?;
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        Some(TokenHash(out))
    }
}

/// Passes the `u64` written by [`TokenHash`] through; SipHash over a keyed hash buys nothing.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

struct Entry {
    claims: Arc<Claims>,
    /// Last second (inclusive) at which the token still verifies: `exp + leeway`.
    valid_until: u64,
}

type Shard = HashMap<TokenHash, Entry, BuildHasherDefault<PassThrough>>;

/// Sharded so concurrent verifications rarely contend; each shard holds at most
/// `capacity / SHARDS` entries (at least one).
pub(crate) struct VerifiedCache {
    hasher: TokenHasher,
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl VerifiedCache {
    /// `None` if no hash key could be made; the verifier then runs uncached.
    pub(crate) fn new(capacity: usize) -> Option<VerifiedCache> {
        Some(VerifiedCache {
            hasher: TokenHasher::new()?,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        })
    }

    pub(crate) fn key(&self, token: &str) -> Option<TokenHash> {
        self.hasher.hash(token)
    }

    pub(crate) fn get(&self, key: &TokenHash, now: u64) -> Option<Arc<Claims>> {
        let shard = self.shards.get(key.shard())?.read().ok()?;
        let e = shard.get(key)?;
        (now <= e.valid_until).then(|| Arc::clone(&e.claims))
    }

    pub(crate) fn insert(&self, key: TokenHash, claims: Arc<Claims>, valid_until: u64, now: u64) {
        let Some(lock) = self.shards.get(key.shard()) else {
            return;
        };
        let Ok(mut shard) = lock.write() else {
            return;
        };
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.valid_until >= now);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop the one closest to expiry.
                if let Some(victim) = shard
                    .iter()
                    .min_by_key(|(_, e)| e.valid_until)
                    .map(|(k, _)| *k)
                {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                claims,
                valid_until,
            },
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    pub(crate) fn clear(&self) {
        for s in &self.shards {
            if let Ok(mut s) = s.write() {
                s.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hash_is_deterministic_per_cache_and_differs_across_caches() {
        let a = VerifiedCache::new(8).unwrap();
        let b = VerifiedCache::new(8).unwrap();
        let t = "header.payload.signature";
        assert!(a.key(t) == a.key(t));
        assert!(a.key(t) != a.key("header.payload.signaturf"));
        assert!(a.key(t) != a.key("header.payload.signature."));
        // A fresh random key per cache: hashes are not predictable across processes.
        assert!(a.key(t) != b.key(t));
    }
}
