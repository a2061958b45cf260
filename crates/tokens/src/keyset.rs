//! The signing key set: one active key that signs, older keys that still verify.

use std::sync::Arc;

use crate::jwk::JwkSet;
use crate::{Algorithm, Error, SigningKey, VerifyingKey};

/// One active signing key plus verify-only keys (previous active keys during rotation, or
/// public keys of other issuers sharing this `iss`).
///
/// Rotation without invalidating live tokens: [`KeySet::rotate`] makes a new key active and
/// keeps the old one for verification until [`KeySet::retire`] drops it (after the longest
/// token lifetime has passed). Key sets are immutable values; a gateway swaps the whole set.
#[derive(Clone, Debug)]
pub struct KeySet {
    active: Arc<SigningKey>,
    /// Every key that verifies, the active key's public half first.
    verifying: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set with a single, active key.
    pub fn new(active: SigningKey) -> KeySet {
        let verifying = vec![active.verifying_key().clone()];
        KeySet {
            active: Arc::new(active),
            verifying,
        }
    }

    /// A set with one freshly generated key of `alg` (`ES256` is the recommended default).
    pub fn generate(alg: Algorithm) -> Result<KeySet, Error> {
        Ok(KeySet::new(SigningKey::generate(alg)?))
    }

    /// Adds a key that verifies but never signs. Refuses a `kid` already in the set.
    pub fn with_verify_only(mut self, key: VerifyingKey) -> Result<KeySet, Error> {
        if self.get(key.kid()).is_some() {
            return Err(Error::DuplicateKeyId);
        }
        self.verifying.push(key);
        Ok(self)
    }

    /// A new set where `next` signs and the current active key becomes verify-only.
    pub fn rotate(&self, next: SigningKey) -> KeySet {
        let mut verifying = vec![next.verifying_key().clone()];
        verifying.extend(
            self.verifying
                .iter()
                .filter(|k| k.kid() != next.kid())
                .cloned(),
        );
        KeySet {
            active: Arc::new(next),
            verifying,
        }
    }

    /// A new set without the verify-only key `kid`; tokens it signed stop verifying.
    pub fn retire(&self, kid: &str) -> Result<KeySet, Error> {
        if kid == self.active.kid() {
            return Err(Error::RetireActiveKey);
        }
        if self.get(kid).is_none() {
            return Err(Error::UnknownKeyId);
        }
        Ok(KeySet {
            active: Arc::clone(&self.active),
            verifying: self
                .verifying
                .iter()
                .filter(|k| k.kid() != kid)
                .cloned()
                .collect(),
        })
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The verifying key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.iter().find(|k| k.kid() == kid)
    }

    /// Every verifying key, the active one first.
    pub fn verifying_keys(&self) -> &[VerifyingKey] {
        &self.verifying
    }

    /// The distinct algorithms of the verifying keys, sorted.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = self.verifying.iter().map(VerifyingKey::algorithm).collect();
        algs.sort();
        algs.dedup();
        algs
    }

    /// The public keys as an RFC 7517 JWK Set (what `jwks_uri` serves).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.verifying.iter().map(|k| k.jwk().clone()).collect(),
        }
    }
}
