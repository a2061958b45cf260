//! The OpenID Connect discovery document of the gateway as a token issuer.

use serde::{Deserialize, Serialize};

use crate::KeySet;

/// Where an OIDC client looks for [`DiscoveryDocument`], relative to the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// `/.well-known/openid-configuration` for the gateway's issuer, with the same fields
/// kube-apiserver serves for service-account tokens. Pointing a kube-apiserver's
/// `--oidc-issuer-url` at the issuer makes it fetch this, then `jwks_uri`, and trust the
/// tokens the gateway mints (with `--oidc-client-id` set to their audience and
/// `--oidc-signing-algs` covering the key set's algorithms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryDocument {
    /// The issuer URL; equal to the `iss` of minted tokens.
    pub issuer: String,
    /// Where the JWK Set is served.
    pub jwks_uri: String,
    /// `["id_token"]`.
    pub response_types_supported: Vec<String>,
    /// `["public"]`.
    pub subject_types_supported: Vec<String>,
    /// The algorithms of the key set.
    pub id_token_signing_alg_values_supported: Vec<String>,
}

impl DiscoveryDocument {
    /// The document for `issuer` serving its keys at `jwks_uri`.
    pub fn new(
        issuer: impl Into<String>,
        jwks_uri: impl Into<String>,
        keys: &KeySet,
    ) -> DiscoveryDocument {
        DiscoveryDocument {
            issuer: issuer.into(),
            jwks_uri: jwks_uri.into(),
            response_types_supported: vec!["id_token".into()],
            subject_types_supported: vec!["public".into()],
            id_token_signing_alg_values_supported: keys
                .algorithms()
                .into_iter()
                .map(|a| a.name().to_owned())
                .collect(),
        }
    }

    /// The document for `issuer` with keys at `<issuer>/openid/v1/jwks`, kube-apiserver's layout.
    pub fn for_issuer(issuer: &str, keys: &KeySet) -> DiscoveryDocument {
        let jwks_uri = format!("{}/openid/v1/jwks", issuer.trim_end_matches('/'));
        DiscoveryDocument::new(issuer, jwks_uri, keys)
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
