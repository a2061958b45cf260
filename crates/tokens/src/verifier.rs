//! Verifying kubegate tokens against a [`KeySet`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::VerifiedCache;
use crate::claims::{Claims, LoftClaim};
use crate::{Error, KeySet, RevocationSet, jws};

/// Verifies kubegate tokens: signature by the key the `kid` names with that key's one
/// algorithm, then `iss`, `aud`, `exp`, `nbf` (with leeway), `jti` revocation and `gen`.
///
/// Successful verifications are cached under a keyed hash of the token (never the token)
/// until `exp + leeway`, so a repeat costs one hash and a map lookup; revocation and generation are still checked on
/// every call. The key set is fixed for the verifier's life: on rotation build a new
/// `Verifier` (its cache starts empty, so retired keys stop working at once).
///
/// What the verifier cannot know is left to its caller: a token minted from an access key
/// names that key in its `parent` claim ([`LoftClaim::parent`](crate::LoftClaim::parent)),
/// and is meant to be good only while the key is. Whether the key still exists, is enabled
/// and unexpired is in the caller's store, so after `verify` look the parent up and refuse
/// the token when it is gone (the reference gateway does). Likewise the user the token names
/// may have been removed; the verifier checks only what the token and the revocation set say.
pub struct Verifier {
    keys: Arc<KeySet>,
    issuer: String,
    audiences: Vec<String>,
    leeway: u64,
    max_token_len: usize,
    revocations: Arc<RevocationSet>,
    cache: Option<VerifiedCache>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("max_token_len", &self.max_token_len)
            .field("revoked", &self.revocations.len())
            .field("cached", &self.cache.as_ref().map(VerifiedCache::len))
            .finish()
    }
}

impl Verifier {
    /// Default clock-skew leeway for `exp` and `nbf`.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
    /// Default cap on a token's length; longer input is refused before any decoding.
    pub const DEFAULT_MAX_TOKEN_LEN: usize = 16 * 1024;
    /// Default number of cached verified tokens.
    pub const DEFAULT_CACHE_CAPACITY: usize = 16 * 1024;

    /// A verifier accepting tokens of `issuer` for `audience`, signed by a key of `keys`.
    pub fn new(
        keys: Arc<KeySet>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Verifier {
        Verifier {
            keys,
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            leeway: Verifier::DEFAULT_LEEWAY.as_secs(),
            max_token_len: Verifier::DEFAULT_MAX_TOKEN_LEN,
            revocations: Arc::new(RevocationSet::new()),
            cache: VerifiedCache::new(Verifier::DEFAULT_CACHE_CAPACITY),
        }
    }

    /// Also accepts tokens for `audience` (a token passes when any of its audiences is accepted).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Verifier {
        self.audiences.push(audience.into());
        self
    }

    /// Sets the clock-skew leeway for `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Duration) -> Verifier {
        self.leeway = leeway.as_secs();
        self
    }

    /// Sets the maximum accepted token length in bytes.
    pub fn with_max_token_len(mut self, max: usize) -> Verifier {
        self.max_token_len = max;
        self
    }

    /// Sets the cache capacity; 0 disables caching.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Verifier {
        self.cache = if capacity > 0 {
            VerifiedCache::new(capacity)
        } else {
            None
        };
        self
    }

    /// Shares an existing revocation set (e.g. one fed by the gateway's store).
    pub fn with_revocations(mut self, revocations: Arc<RevocationSet>) -> Verifier {
        self.revocations = revocations;
        self
    }

    /// The revocation set consulted on every verification.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// The key set.
    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Revokes a token by its claims until it would have expired (`exp + leeway`).
    pub fn revoke(&self, claims: &Claims, now: u64) {
        self.revocations.revoke(
            claims.jti.clone(),
            claims.exp.saturating_add(self.leeway),
            now,
        );
    }

    /// Number of tokens in the cache.
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, VerifiedCache::len)
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        if let Some(c) = &self.cache {
            c.clear();
        }
    }

    /// Verifies `token` at `now` (Unix seconds). `current_generation` returns the subject's
    /// current token generation (`User.spec.tokenGeneration`), or `None` if the subject is
    /// unknown, which refuses the token. A verifier that cannot know generations (an agent
    /// checking tokens of the central gateway) passes `|c| Some(c.generation)` and relies on
    /// short lifetimes and revocation instead.
    pub fn verify<G>(
        &self,
        token: &str,
        now: u64,
        current_generation: G,
    ) -> Result<Arc<Claims>, Error>
    where
        G: FnOnce(&LoftClaim) -> Option<i64>,
    {
        if token.len() > self.max_token_len {
            return Err(Error::TokenTooLarge {
                len: token.len(),
                max: self.max_token_len,
            });
        }
        let Some((cache, key)) = self
            .cache
            .as_ref()
            .and_then(|c| c.key(token).map(|k| (c, k)))
        else {
            let claims = Arc::new(self.verify_signed(token, now)?);
            self.check_dynamic(&claims, current_generation)?;
            return Ok(claims);
        };
        let claims = match cache.get(&key, now) {
            Some(c) => c,
            None => {
                let claims = Arc::new(self.verify_signed(token, now)?);
                let valid_until = claims.exp.saturating_add(self.leeway);
                cache.insert(key, Arc::clone(&claims), valid_until, now);
                claims
            }
        };
        self.check_dynamic(&claims, current_generation)?;
        Ok(claims)
    }

    /// Checks that can change while a token is cached.
    fn check_dynamic<G>(&self, claims: &Claims, current_generation: G) -> Result<(), Error>
    where
        G: FnOnce(&LoftClaim) -> Option<i64>,
    {
        if self.revocations.is_revoked(&claims.jti) {
            return Err(Error::Revoked);
        }
        let current = current_generation(&claims.loft).ok_or(Error::UnknownSubject)?;
        if claims.loft.generation != current {
            return Err(Error::GenerationMismatch {
                token: claims.loft.generation,
                current,
            });
        }
        Ok(())
    }

    /// Signature and the time-independent-of-state claims; the result may be cached.
    fn verify_signed(&self, token: &str, now: u64) -> Result<Claims, Error> {
        let unverified = jws::parse(token, self.max_token_len)?;
        let key = match unverified.kid.as_deref() {
            Some(kid) => self.keys.get(kid).ok_or(Error::UnknownKeyId)?,
            None => match self.keys.verifying_keys() {
                [only] => only,
                _ => return Err(Error::MissingKeyId),
            },
        };
        let payload = unverified.verify(key)?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| Error::Malformed("payload is not a kubegate claims object"))?;
        if claims.iss != self.issuer {
            return Err(Error::WrongIssuer);
        }
        if !self.audiences.iter().any(|a| claims.aud.contains(a)) {
            return Err(Error::WrongAudience);
        }
        check_times(claims.exp, claims.nbf, now, self.leeway)?;
        Ok(claims)
    }
}

/// `exp` must not have passed and `nbf` must have come, each within `leeway` seconds.
pub(crate) fn check_times(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), Error> {
    if now > exp.saturating_add(leeway) {
        return Err(Error::Expired { exp, now });
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(Error::NotYetValid { nbf, now });
    }
    Ok(())
}
