#![doc = include_str!("../README.md")]

mod access_key;
mod alg;
mod b64;
mod cache;
mod claims;
mod discovery;
mod jwk;
mod jws;
mod key;
mod keyset;
mod minter;
mod oidc;
mod revocation;
mod verifier;

pub use access_key::{
    ACCESS_KEY_PREFIX, AccessKeyDigest, AccessKeyIndex, AccessKeyLimits, AccessKeyPolicy,
    AccessKeySecret, is_generated_access_key,
};
pub use alg::Algorithm;
pub use claims::{Audience, Claims, LoftClaim, SubjectKind};
pub use discovery::{DISCOVERY_PATH, DiscoveryDocument};
pub use jwk::{Jwk, JwkSet};
pub use key::{SecretPem, SigningKey, VerifyingKey};
pub use keyset::KeySet;
pub use minter::{MintRequest, MintedToken, Minter};
pub use oidc::{ExternalIdentity, OidcIssuer, OidcIssuerConfig, UsernamePrefix};
pub use revocation::RevocationSet;
pub use verifier::Verifier;

/// Seconds since the Unix epoch, the time unit of every API here (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything that can go wrong in this crate. Messages name the reason only: no variant
/// carries token text, key material or a claim value taken from a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- keys
    /// The PEM input holds no usable private key.
    #[error("invalid key PEM: {0}")]
    KeyPem(&'static str),
    /// The crypto library refused the key.
    #[error("key rejected: {0}")]
    KeyRejected(&'static str),
    /// The key's type, size or curve is not supported.
    #[error("unsupported key: {0}")]
    UnsupportedKey(&'static str),
    /// Key generation or serialization failed.
    #[error("key generation failed")]
    KeyGeneration,
    /// Two keys of a set share a `kid`.
    #[error("duplicate key id in key set")]
    DuplicateKeyId,
    /// The active key cannot be retired; rotate first.
    #[error("the active signing key cannot be retired")]
    RetireActiveKey,
    /// A JWKS document is unusable.
    #[error("invalid JWKS: {0}")]
    Jwks(&'static str),
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,

    // --- minting
    /// A requested lifetime is unusable.
    #[error("invalid token lifetime: {0}")]
    InvalidTtl(&'static str),
    /// Claims could not be encoded.
    #[error("claims could not be encoded")]
    Encode,
    /// Signing failed.
    #[error("signing failed")]
    Signing,

    // --- verification (all map to 401 Unauthorized)
    /// The token exceeds the configured maximum length.
    #[error("token is {len} bytes, more than the {max} allowed")]
    TokenTooLarge {
        /// Length of the presented token.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The token is not a well-formed JWS of the expected shape.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none`: unsigned tokens are never accepted.
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgorithmNone,
    /// `HS*`: symmetric algorithms are never accepted.
    #[error("symmetric (HS*) algorithms are not accepted")]
    SymmetricAlgorithm,
    /// An algorithm this verifier does not accept.
    #[error("unsupported or disallowed signature algorithm")]
    UnsupportedAlgorithm,
    /// No `kid` while several keys could have signed.
    #[error("token has no kid and the key set has several keys")]
    MissingKeyId,
    /// The `kid` names no known key.
    #[error("token kid names no known key")]
    UnknownKeyId,
    /// The header's `alg` is not the algorithm bound to the key the `kid` names.
    #[error("token alg {token} does not match the {key} key named by its kid")]
    AlgorithmMismatch {
        /// Algorithm in the token header.
        token: Algorithm,
        /// Algorithm of the named key.
        key: Algorithm,
    },
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// Verification time.
        now: u64,
    },
    /// `nbf` is still in the future (beyond the leeway).
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// Verification time.
        now: u64,
    },
    /// `iss` is not the expected issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// No audience of the token is accepted.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The `jti` is revoked.
    #[error("token has been revoked")]
    Revoked,
    /// The token's generation differs from the subject's current one.
    #[error("token generation {token} is not the subject's current generation {current}")]
    GenerationMismatch {
        /// `gen` in the token.
        token: i64,
        /// The subject's current generation.
        current: i64,
    },
    /// The subject has no current generation (unknown user or team).
    #[error("token subject is unknown")]
    UnknownSubject,
    /// A configured claim is absent (name from configuration, not from the token).
    #[error("required claim {0:?} is missing")]
    MissingClaim(String),
    /// A configured claim has the wrong type or is empty.
    #[error("claim {0:?} has an unusable value")]
    InvalidClaim(String),
    /// A `--oidc-required-claim` does not have the required value.
    #[error("required claim {0:?} does not have the required value")]
    RequiredClaim(String),
    /// Username claim `email` with `email_verified` not true.
    #[error("email is not verified")]
    EmailNotVerified,

    // --- access keys
    /// Not a stored access-key digest.
    #[error("malformed access key digest")]
    AccessKeyFormat,
    /// The access key is disabled.
    #[error("access key is disabled")]
    AccessKeyDisabled,
    /// The access key's TTL has passed.
    #[error("access key has expired")]
    AccessKeyExpired,
}
