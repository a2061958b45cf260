//! ID tokens of external OIDC issuers (`oidcIssuers:` in the config), mapped to Kubernetes users
//! the way kube-apiserver's `--oidc-*` flags do:
//!
//! | config            | kube-apiserver flag       | default                                        |
//! |-------------------|---------------------------|------------------------------------------------|
//! | `issuerUrl`       | `--oidc-issuer-url`       | (required; must equal the token's `iss`)       |
//! | `clientId`        | `--oidc-client-id`        | (required; must be one of the token's `aud`)   |
//! | `caFile`          | `--oidc-ca-file`          | the system's trusted roots                     |
//! | `usernameClaim`   | `--oidc-username-claim`   | `sub`                                          |
//! | `usernamePrefix`  | `--oidc-username-prefix`  | `<issuerUrl>#`, none for `email`; `-` disables |
//! | `groupsClaim`     | `--oidc-groups-claim`     | no groups                                      |
//! | `groupsPrefix`    | `--oidc-groups-prefix`    | none                                           |
//!
//! Signing algorithms: those the issuer's discovery document lists
//! (`id_token_signing_alg_values_supported`, asymmetric ones only), or `RS256` when it lists
//! none (kube-apiserver's `--oidc-signing-algs` default).
//!
//! A token whose `iss` names no configured issuer is not this authenticator's business (skip);
//! a token of a configured issuer that does not verify is rejected (401). An issuer that cannot be
//! reached before its keys were ever fetched makes its tokens fail with 503.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kubegate_authz::{CompiledScope, Identity};
use kubegate_tokens::UsernamePrefix;

use super::RemoteError;
use super::client::HttpsClient;
use super::keys::{IssuerOrigin, KeyFailure, KeySource, peek_issuer};
use crate::authenticators::{AuthnInput, AuthnOutcome, ExternalAuthenticator};
use crate::authn::{Caller, CallerCredential};
use crate::config::OidcIssuerConfig;

/// The kubegate-tokens settings for a configured issuer.
pub fn issuer_settings(config: &OidcIssuerConfig) -> kubegate_tokens::OidcIssuerConfig {
    let mut settings =
        kubegate_tokens::OidcIssuerConfig::new(config.issuer_url.clone(), config.client_id.clone());
    if let Some(claim) = &config.username_claim {
        settings.username_claim = claim.clone();
    }
    settings.username_prefix = match config.username_prefix.as_deref() {
        None => UsernamePrefix::Default,
        Some("-") => UsernamePrefix::Disabled,
        Some(prefix) => UsernamePrefix::Custom(prefix.to_owned()),
    };
    settings.groups_claim = config.groups_claim.clone();
    settings.groups_prefix = config.groups_prefix.clone().unwrap_or_default();
    settings
}

#[derive(Debug)]
struct Issuer {
    url: String,
    keys: KeySource,
}

/// Accepts ID tokens of the configured external issuers.
#[derive(Debug)]
pub struct OidcIssuersAuthenticator {
    issuers: Vec<Issuer>,
}

impl OidcIssuersAuthenticator {
    /// One verifier per configured issuer (keys are fetched on first use).
    pub fn new(configs: &[OidcIssuerConfig]) -> Result<OidcIssuersAuthenticator, RemoteError> {
        let mut issuers = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            if !config.issuer_url.starts_with("https://") {
                return Err(RemoteError::Config {
                    field: format!("oidcIssuers[{i}].issuerUrl"),
                    message: format!("{:?} is not an https:// URL", config.issuer_url),
                });
            }
            if config.client_id.is_empty() {
                return Err(RemoteError::Config {
                    field: format!("oidcIssuers[{i}].clientId"),
                    message: "must not be empty".into(),
                });
            }
            let client = HttpsClient::new(
                config.ca_file.as_deref(),
                &format!("oidcIssuers[{i}].caFile"),
            )?;
            issuers.push(Issuer {
                url: config.issuer_url.clone(),
                keys: KeySource::new(
                    client,
                    &config.issuer_url,
                    IssuerOrigin::Configured,
                    issuer_settings(config),
                ),
            });
        }
        Ok(OidcIssuersAuthenticator { issuers })
    }

    async fn verify(&self, token: &str) -> AuthnOutcome {
        let Some(iss) = peek_issuer(token) else {
            return AuthnOutcome::Skip;
        };
        let Some(issuer) = self.issuers.iter().find(|i| i.url == iss) else {
            return AuthnOutcome::Skip;
        };
        match issuer.keys.verify(token, kubegate_tokens::unix_now()).await {
            Ok(external) => {
                let identity = Identity::authenticated(
                    external.username,
                    String::new(),
                    external.groups,
                    Default::default(),
                );
                AuthnOutcome::Authenticated(Box::new(Caller {
                    identity,
                    scope: Arc::new(CompiledScope::new(None)),
                    raw_scope: None,
                    // An ID token is not revocable by the gateway; there is no jti to record.
                    credential: CallerCredential::ExternalToken {
                        expires_at: external.expires_at,
                    },
                }))
            }
            Err(KeyFailure::Invalid(e)) => {
                AuthnOutcome::Rejected(format!("ID token of {}: {e}", issuer.url))
            }
            // The issuer is the one the token names; why it cannot be reached (addresses,
            // TLS reasons) is for the log, not for whoever sent a token.
            Err(KeyFailure::Unavailable(cause)) => {
                tracing::debug!(issuer = %issuer.url, error = %cause, "an OIDC issuer's keys cannot be had; an ID token is not checked now");
                AuthnOutcome::Unavailable(format!(
                    "the OIDC issuer {} cannot be reached now; try again later",
                    issuer.url
                ))
            }
        }
    }
}

impl ExternalAuthenticator for OidcIssuersAuthenticator {
    fn authenticate<'a>(&'a self, input: AuthnInput<'a>) -> BoxFuture<'a, AuthnOutcome> {
        Box::pin(async move {
            match input.bearer {
                Some(token) if token.bytes().filter(|&b| b == b'.').count() == 2 => {
                    self.verify(token).await
                }
                _ => AuthnOutcome::Skip,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: Option<&str>) -> OidcIssuerConfig {
        OidcIssuerConfig {
            issuer_url: "https://idp.example".into(),
            client_id: "kubegate".into(),
            ca_file: None,
            username_claim: Some("email".into()),
            username_prefix: prefix.map(str::to_owned),
            groups_claim: Some("groups".into()),
            groups_prefix: Some("idp:".into()),
        }
    }

    #[test]
    fn settings_follow_kube_apiserver_flags() {
        let s = issuer_settings(&config(None));
        assert_eq!(s.username_claim, "email");
        assert_eq!(s.username_prefix, UsernamePrefix::Default);
        assert_eq!(s.groups_claim.as_deref(), Some("groups"));
        assert_eq!(s.groups_prefix, "idp:");
        assert_eq!(
            issuer_settings(&config(Some("-"))).username_prefix,
            UsernamePrefix::Disabled
        );
        assert_eq!(
            issuer_settings(&config(Some("oidc:"))).username_prefix,
            UsernamePrefix::Custom("oidc:".into())
        );
        let bare = OidcIssuerConfig {
            username_claim: None,
            groups_prefix: None,
            ..config(None)
        };
        let s = issuer_settings(&bare);
        assert_eq!(s.username_claim, "sub");
        assert_eq!(s.groups_prefix, "");
    }
}
