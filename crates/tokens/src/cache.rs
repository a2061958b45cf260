//! A bounded cache of verified tokens, keyed by the SHA-256 of the token (never the token).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;

use crate::Claims;

const SHARDS: usize = 16;

/// SHA-256 of a token. Uniformly distributed already, so it hashes itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenHash([u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> TokenHash {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }

    fn shard(&self) -> usize {
        usize::from(self.0[31]) % SHARDS
    }
}

impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(w));
    }
}

/// Passes the `u64` written by [`TokenHash`] through; SipHash over a SHA-256 output buys nothing.
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
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
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
