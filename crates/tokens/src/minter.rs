//! Minting kubegate tokens with the active key of a [`KeySet`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kubegate_api::AccessKeyScope;
use rand::Rng;

use crate::claims::{Audience, Claims, LoftClaim, SubjectKind};
use crate::{Error, KeySet, b64, jws};

/// Mints signed tokens. Cheap to share (`Arc` inside); signing keys are parsed once, so a mint
/// is one JSON encode plus one signature.
#[derive(Clone, Debug)]
pub struct Minter {
    keys: Arc<KeySet>,
    issuer: String,
    audience: Audience,
    default_ttl: Duration,
    max_ttl: Duration,
}

/// Who a token is for and what it may do. The scope must already be checked against the
/// caller's own scope (see `kubegate_authz::CompiledScope::narrows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    /// `sub`: the Kubernetes user name.
    pub subject: String,
    /// Kubernetes groups.
    pub groups: Vec<String>,
    /// UID of the user or team.
    pub uid: String,
    /// Object name of the user or team.
    pub name: String,
    /// User, Team or LoftAdmin.
    pub kind: SubjectKind,
    /// The subject's current token generation.
    pub generation: i64,
    /// The scope the token is limited to.
    pub scope: Option<AccessKeyScope>,
    /// Requested lifetime; `None` = the minter's default. Capped at the minter's maximum.
    pub ttl: Option<Duration>,
    /// The access key (uid) the token is made from, if any ([`LoftClaim::parent`]).
    pub parent: Option<String>,
    /// Marks the token as a login's session ([`LoftClaim::login`]).
    pub login: bool,
}

/// A freshly minted token. `Debug` redacts the token text.
#[derive(Clone)]
pub struct MintedToken {
    token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's `jti`, for revocation.
    pub jti: String,
    /// `kid` of the signing key.
    pub kid: String,
}

impl MintedToken {
    /// The compact JWS, to hand to the client.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Consumes the value, returning the compact JWS.
    pub fn into_token(self) -> String {
        self.token
    }
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("jti", &self.jti)
            .field("kid", &self.kid)
            .finish()
    }
}

impl Minter {
    /// Default lifetime when a request names none: 1 hour.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
    /// Default cap on any lifetime: 24 hours.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

    /// A minter for `issuer` and `audience` signing with `keys.active()`.
    pub fn new(keys: Arc<KeySet>, issuer: impl Into<String>, audience: Audience) -> Minter {
        Minter {
            keys,
            issuer: issuer.into(),
            audience,
            default_ttl: Minter::DEFAULT_TTL,
            max_ttl: Minter::DEFAULT_MAX_TTL,
        }
    }

    /// Sets the lifetime used when a request names none (capped by the maximum).
    pub fn with_default_ttl(mut self, ttl: Duration) -> Minter {
        self.default_ttl = ttl;
        self
    }

    /// Sets the cap on every lifetime.
    pub fn with_max_ttl(mut self, ttl: Duration) -> Minter {
        self.max_ttl = ttl;
        self
    }

    /// The key set this minter signs with.
    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// The lifetime a request would get: requested (or default) capped at the maximum.
    pub fn effective_ttl(&self, requested: Option<Duration>) -> Result<Duration, Error> {
        let ttl = requested.unwrap_or(self.default_ttl).min(self.max_ttl);
        if ttl.as_secs() == 0 {
            return Err(Error::InvalidTtl("a token must live at least one second"));
        }
        Ok(ttl)
    }

    /// Mints a token valid from `now` (Unix seconds) for the effective TTL.
    pub fn mint(&self, req: &MintRequest, now: u64) -> Result<MintedToken, Error> {
        self.mint_for(req, &self.audience, now)
    }

    /// Mints a token like [`Minter::mint`] but for another audience: a token meant for one
    /// relying party (an upstream API server) that this minter's own audience, and every
    /// other party's, refuses.
    pub fn mint_for(
        &self,
        req: &MintRequest,
        audience: &Audience,
        now: u64,
    ) -> Result<MintedToken, Error> {
        let ttl = self.effective_ttl(req.ttl)?;
        let expires_at = now
            .checked_add(ttl.as_secs())
            .ok_or(Error::InvalidTtl("expiry overflows"))?;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let jti = b64::encode(&id);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: req.subject.clone(),
            aud: audience.clone(),
            exp: expires_at,
            nbf: Some(now),
            iat: now,
            jti,
            groups: req.groups.clone(),
            loft: LoftClaim {
                uid: req.uid.clone(),
                name: req.name.clone(),
                kind: req.kind,
                generation: req.generation,
                scope: req.scope.clone(),
                parent: req.parent.clone(),
                login: req.login,
            },
        };
        let key = self.keys.active();
        let token = jws::sign(key, &claims)?;
        Ok(MintedToken {
            token,
            expires_at,
            jti: claims.jti,
            kid: key.kid().to_owned(),
        })
    }
}
