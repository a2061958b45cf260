//! ID tokens of an external OIDC issuer, verified against its JWKS document and mapped to a
//! Kubernetes user the way kube-apiserver's `--oidc-*` flags do.
//!
//! Fetching and refreshing the JWKS is the caller's job; this module parses and verifies.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::jwk::{Jwk, JwkSet};
use crate::verifier::check_times;
use crate::{Algorithm, Error, VerifyingKey, jws};

/// How the username claim is prefixed (`--oidc-username-prefix`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum UsernamePrefix {
    /// kube-apiserver's default: no prefix for the `email` claim, `"<issuer-url>#"` for any other.
    #[default]
    Default,
    /// No prefix (the flag value `-`).
    Disabled,
    /// This exact prefix.
    Custom(String),
}

/// Settings of one external issuer, mirroring kube-apiserver's OIDC flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIssuerConfig {
    /// `--oidc-issuer-url`: must equal the token's `iss` exactly.
    pub issuer_url: String,
    /// `--oidc-client-id`: must be one of the token's audiences.
    pub client_id: String,
    /// `--oidc-username-claim` (default `sub`).
    pub username_claim: String,
    /// `--oidc-username-prefix`.
    pub username_prefix: UsernamePrefix,
    /// `--oidc-groups-claim`; `None` = no groups from the token.
    pub groups_claim: Option<String>,
    /// `--oidc-groups-prefix` (default empty).
    pub groups_prefix: String,
    /// `--oidc-required-claim key=value` pairs; each must be present with that string value.
    pub required_claims: Vec<(String, String)>,
    /// `--oidc-signing-algs` (default `RS256`).
    pub signing_algs: Vec<Algorithm>,
    /// Clock-skew leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest token accepted, in bytes.
    pub max_token_len: usize,
}

impl OidcIssuerConfig {
    /// kube-apiserver defaults for `issuer_url` and `client_id`.
    pub fn new(issuer_url: impl Into<String>, client_id: impl Into<String>) -> OidcIssuerConfig {
        OidcIssuerConfig {
            issuer_url: issuer_url.into(),
            client_id: client_id.into(),
            username_claim: "sub".into(),
            username_prefix: UsernamePrefix::Default,
            groups_claim: None,
            groups_prefix: String::new(),
            required_claims: Vec::new(),
            signing_algs: vec![Algorithm::Rs256],
            leeway: Duration::from_secs(60),
            max_token_len: 16 * 1024,
        }
    }
}

/// Who an external ID token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The prefixed username.
    pub username: String,
    /// The prefixed groups.
    pub groups: Vec<String>,
    /// The token's `sub`.
    pub subject: String,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A verifier for one external issuer with a parsed key set.
#[derive(Clone)]
pub struct OidcIssuer {
    config: OidcIssuerConfig,
    keys: Vec<VerifyingKey>,
}

impl fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .finish()
    }
}

/// The algorithms (among `allowed`) a JWK may verify: its own `alg` if it names one, else
/// what its type and curve admit.
fn candidate_algs(jwk: &Jwk, allowed: &[Algorithm]) -> Vec<Algorithm> {
    if let Some(name) = &jwk.alg {
        return Algorithm::from_name(name)
            .filter(|a| allowed.contains(a))
            .into_iter()
            .collect();
    }
    allowed
        .iter()
        .copied()
        .filter(|a| match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => *a == Algorithm::Es256,
            ("EC", Some("P-384")) => *a == Algorithm::Es384,
            ("OKP", Some("Ed25519")) => *a == Algorithm::EdDsa,
            ("RSA", _) => a.is_rsa(),
            _ => false,
        })
        .collect()
}

impl OidcIssuer {
    /// Builds the verifier from the issuer's JWKS. Keys that are not signature keys, use an
    /// algorithm outside `signing_algs`, or are malformed or too weak are skipped, as
    /// OIDC libraries do; a set with no usable key is an error.
    pub fn new(config: OidcIssuerConfig, jwks: &JwkSet) -> Result<OidcIssuer, Error> {
        let mut keys = Vec::new();
        for jwk in &jwks.keys {
            for alg in candidate_algs(jwk, &config.signing_algs) {
                if let Ok(k) = VerifyingKey::from_jwk(jwk, alg) {
                    keys.push(k);
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::Jwks(
                "no usable signature key for the allowed algorithms",
            ));
        }
        Ok(OidcIssuer { config, keys })
    }

    /// Parses the JWKS JSON document and builds the verifier.
    pub fn from_jwks_json(config: OidcIssuerConfig, jwks: &[u8]) -> Result<OidcIssuer, Error> {
        OidcIssuer::new(config, &JwkSet::from_json(jwks)?)
    }

    /// The same issuer with a refreshed key set.
    pub fn with_jwks(&self, jwks: &JwkSet) -> Result<OidcIssuer, Error> {
        OidcIssuer::new(self.config.clone(), jwks)
    }

    /// The configuration.
    pub fn config(&self) -> &OidcIssuerConfig {
        &self.config
    }

    /// The usable keys, one per (kid, algorithm).
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, Error> {
        if !self.config.signing_algs.contains(&alg) {
            return Err(Error::UnsupportedAlgorithm);
        }
        let kid = match kid {
            Some(k) => k,
            None => {
                let first = self.keys.first().ok_or(Error::UnknownKeyId)?.kid();
                if self.keys.iter().any(|k| k.kid() != first) {
                    return Err(Error::MissingKeyId);
                }
                first
            }
        };
        let mut named = self.keys.iter().filter(|k| k.kid() == kid).peekable();
        let Some(first) = named.peek().copied() else {
            return Err(Error::UnknownKeyId);
        };
        named
            .find(|k| k.algorithm() == alg)
            .ok_or(Error::AlgorithmMismatch {
                token: alg,
                key: first.algorithm(),
            })
    }

    /// Verifies an ID token at `now` (Unix seconds) and maps it to a Kubernetes identity.
    pub fn verify(&self, token: &str, now: u64) -> Result<ExternalIdentity, Error> {
        let unverified = jws::parse(token, self.config.max_token_len)?;
        let key = self.select(unverified.kid.as_deref(), unverified.alg)?;
        let payload = unverified.verify(key)?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| Error::Malformed("payload is not a JSON object"))?;

        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.config.issuer_url => {}
            _ => return Err(Error::WrongIssuer),
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.config.client_id,
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(&self.config.client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(Error::WrongAudience);
        }
        let exp = numeric_date(&claims, "exp")?.ok_or(Error::MissingClaim("exp".into()))?;
        let nbf = numeric_date(&claims, "nbf")?;
        check_times(exp, nbf, now, self.config.leeway.as_secs())?;

        for (name, want) in &self.config.required_claims {
            match claims.get(name) {
                Some(Value::String(v)) if v == want => {}
                _ => return Err(Error::RequiredClaim(name.clone())),
            }
        }

        let claim = self.config.username_claim.as_str();
        let raw_user = match claims.get(claim) {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err(Error::InvalidClaim(claim.to_owned())),
            None => return Err(Error::MissingClaim(claim.to_owned())),
        };
        if claim == "email" {
            match claims.get("email_verified") {
                None | Some(Value::Bool(true)) => {}
                _ => return Err(Error::EmailNotVerified),
            }
        }
        let username = match &self.config.username_prefix {
            UsernamePrefix::Default if claim == "email" => raw_user.to_owned(),
            UsernamePrefix::Default => format!("{}#{raw_user}", self.config.issuer_url),
            UsernamePrefix::Disabled => raw_user.to_owned(),
            UsernamePrefix::Custom(p) => format!("{p}{raw_user}"),
        };

        let mut groups = Vec::new();
        if let Some(gc) = &self.config.groups_claim {
            match claims.get(gc) {
                None => {}
                Some(Value::String(g)) => groups.push(format!("{}{g}", self.config.groups_prefix)),
                Some(Value::Array(list)) => {
                    for g in list {
                        let g = g.as_str().ok_or_else(|| Error::InvalidClaim(gc.clone()))?;
                        groups.push(format!("{}{g}", self.config.groups_prefix));
                    }
                }
                Some(_) => return Err(Error::InvalidClaim(gc.clone())),
            }
        }

        let subject = match claims.get("sub") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::InvalidClaim("sub".into())),
            None => return Err(Error::MissingClaim("sub".into())),
        };
        Ok(ExternalIdentity {
            username,
            groups,
            subject,
            expires_at: exp,
        })
    }
}

/// A NumericDate claim; fractional seconds are truncated, negative or non-numeric values refused.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, Error> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                return Ok(Some(v));
            }
            match n.as_f64() {
                // The cast saturates for huge values, which the time check then treats as
                // far future or far past as appropriate.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                _ => Err(Error::InvalidClaim(name.into())),
            }
        }
        Some(_) => Err(Error::InvalidClaim(name.into())),
    }
}
