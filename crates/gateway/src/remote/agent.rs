//! Agent mode: credentials of the central gateway, accepted at a direct cluster endpoint.
//!
//! - Tokens the central minted (e.g. a `DirectClusterEndpointToken`) are verified against the
//!   central's JWKS, discovered at `<centralUrl>/oidc/.well-known/openid-configuration`, with the
//!   issuer the central publishes there and audience `kubegate`. The keys are cached and
//!   refreshed when a token names an unknown `kid` (see [`super::keys`]). A token that
//!   verifies is then checked with the central's `selves`, as access keys are (and with the
//!   same cache): the central knows what the agent cannot — a revoked token, a raised token
//!   generation, a replaced user, a deleted parent key.
//! - Access keys of the central are validated by its `selves` endpoint (see [`super::selves`]):
//!   only bearers shaped like access keys (kubegate's `kgak_…` or Loft's 64-character keys, see
//!   [`super::selves::is_access_key_shaped`]) are asked about; any other bearer is refused at the
//!   agent without a call. Calls are bounded (one per key at a time, at most
//!   [`super::selves::MAX_CONCURRENT_CALLS`] at once in each of three pools: keys, tokens, and
//!   re-checks of credentials the central accepted before).
//!
//! The identity (user, uid, current groups) comes from the `selves` answer, for tokens too;
//! a token's scope comes from its signed claims. The user need not be configured at the agent. The agent then enforces its own gateway RBAC (its config's `rbac`)
//! and the credential's scope, as the central would.
//!
//! Limits: a credential the central revokes (an access key disabled or deleted, a token
//! revoked) keeps working at the agent for up to [`super::selves::FRESH_FOR`] after the agent
//! last asked about it, or [`super::selves::STALE_IF_ERROR`] while the central is down
//! (unreachable, or answering 5xx or something that is not a `Self`; never while it is merely
//! busy or answering 429). A
//! credential the agent has not validated before gets a 503 while the central cannot be
//! reached: without the central, revocation cannot be checked.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kubegate_authz::{CompiledScope, Identity};
use kubegate_tokens::{Claims, OidcIssuerConfig, UsernamePrefix};

use super::RemoteError;
use super::client::HttpsClient;
use super::keys::{IssuerOrigin, KeyFailure, KeySource, peek_issuer, verified_claims};
use super::selves::{SelfAnswer, SelfCache, is_access_key_shaped};
use crate::authenticators::{AuthnInput, AuthnOutcome, ExternalAuthenticator};
use crate::authn::{AccessKeyInfo, Caller, CallerCredential};
use crate::config::AgentConfig;

/// Every asymmetric algorithm the central may sign with (its discovery document narrows this).
const CENTRAL_ALGS: [kubegate_tokens::Algorithm; 4] = [
    kubegate_tokens::Algorithm::Es256,
    kubegate_tokens::Algorithm::Es384,
    kubegate_tokens::Algorithm::EdDsa,
    kubegate_tokens::Algorithm::Rs256,
];

/// Accepts the central gateway's tokens and access keys at an agent.
#[derive(Debug)]
pub struct CentralAuthenticator {
    central: String,
    keys: KeySource,
    selves: SelfCache,
}

impl CentralAuthenticator {
    /// An authenticator for the central gateway an agent's config names.
    pub fn new(agent: &AgentConfig) -> Result<CentralAuthenticator, RemoteError> {
        let central = agent.central_url.trim_end_matches('/').to_owned();
        if !central.starts_with("https://") {
            return Err(RemoteError::Config {
                field: "agent.centralUrl".into(),
                message: format!("{central:?} is not an https:// URL"),
            });
        }
        let client = HttpsClient::new(agent.central_ca_file.as_deref(), "agent.centralCaFile")?;
        let oidc = format!("{central}/oidc");
        let mut template = OidcIssuerConfig::new(oidc.clone(), crate::TOKEN_AUDIENCE);
        template.username_prefix = UsernamePrefix::Disabled;
        template.signing_algs = CENTRAL_ALGS.to_vec();
        let keys = KeySource::new(
            client.clone(),
            &oidc,
            IssuerOrigin::Discovered { base: oidc.clone() },
            template,
        );
        Ok(CentralAuthenticator {
            selves: SelfCache::new(client, &central),
            keys,
            central,
        })
    }

    async fn token(&self, token: &str) -> AuthnOutcome {
        let Some(iss) = peek_issuer(token) else {
            return AuthnOutcome::Skip;
        };
        if let Some(known) = self.keys.issuer()
            && known != iss
        {
            return AuthnOutcome::Skip;
        }
        let now = kubegate_tokens::unix_now();
        match self.keys.verify(token, now).await {
            Ok(_) => {}
            Err(KeyFailure::Invalid(kubegate_tokens::Error::WrongIssuer)) => {
                return AuthnOutcome::Skip;
            }
            Err(KeyFailure::Invalid(e)) => {
                return AuthnOutcome::Rejected(format!("central gateway token: {e}"));
            }
            Err(KeyFailure::Unavailable(cause)) => {
                return AuthnOutcome::Unavailable(self.unreachable(&cause));
            }
        }
        // The signature, issuer, audience and lifetime are verified; the kubegate claims say who.
        let Some(claims) = verified_claims::<Claims>(token) else {
            return AuthnOutcome::Rejected(
                "central gateway token: not a kubegate claims object".into(),
            );
        };
        // Whether the central still stands by it (revocation, generation, user, parent key),
        // and who the user is now: the central authenticates the token with the user's
        // current groups, not the ones written into it when it was minted, so the agent
        // impersonates those (a user taken out of a group loses it here when the central
        // says so, not when the token expires). The scope is the token's own, signed.
        let me = match self.selves.check_verified(token).await {
            SelfAnswer::Valid(me) => me,
            SelfAnswer::Refused(why) => {
                return AuthnOutcome::Rejected(format!("central gateway token: {why}"));
            }
            SelfAnswer::Unavailable(message) => return AuthnOutcome::Unavailable(message),
        };
        let Some(identity) = me.status.as_ref().map(identity_of) else {
            return AuthnOutcome::Rejected("the selves answer has no status".into());
        };
        if identity.name != claims.loft.name {
            return AuthnOutcome::Rejected(format!(
                "central gateway token: the central describes it as another user ({:?})",
                crate::service::clipped(&identity.name)
            ));
        }
        AuthnOutcome::Authenticated(Box::new(Caller {
            identity,
            scope: Arc::new(CompiledScope::new(claims.loft.scope.as_ref())),
            raw_scope: claims.loft.scope.clone().map(Arc::new),
            credential: CallerCredential::Token {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
                // Checked by the central through `selves`, above.
                parent: claims.loft.parent,
                session: false,
                login: claims.loft.login,
            },
        }))
    }

    async fn access_key(&self, key: &str) -> AuthnOutcome {
        match self.selves.check(key).await {
            SelfAnswer::Valid(me) => {
                let Some(status) = me.status.as_ref() else {
                    return AuthnOutcome::Rejected("the selves answer has no status".into());
                };
                let identity = identity_of(status);
                AuthnOutcome::Authenticated(Box::new(Caller {
                    identity,
                    scope: Arc::new(CompiledScope::new(status.access_key_scope.as_ref())),
                    raw_scope: status.access_key_scope.clone().map(Arc::new),
                    credential: CallerCredential::AccessKey(Arc::new(AccessKeyInfo {
                        name: status.access_key.clone(),
                        key_type: status.access_key_type.as_str().into(),
                        // The central's `selves` answer does not say; an agent mints nothing.
                        expires_at: None,
                        uid: String::new(),
                    })),
                }))
            }
            SelfAnswer::Refused(why) => AuthnOutcome::Rejected(why),
            SelfAnswer::Unavailable(message) => AuthnOutcome::Unavailable(message),
        }
    }

    /// The 503's message when the central's signing keys cannot be had: nothing of its
    /// address or of why for the client (an unauthenticated one, as often as not), the cause
    /// in the log.
    fn unreachable(&self, cause: &str) -> String {
        tracing::debug!(central = %self.central, error = %cause, "the central gateway's signing keys cannot be had; a token is not checked now");
        super::selves::UNAVAILABLE.to_owned()
    }
}

/// The identity the central's `selves` answer describes: the user (or subject), uid and the
/// user's current groups.
fn identity_of(status: &kubegate_api::SelfStatus) -> Identity {
    let name = status
        .user
        .as_ref()
        .map(|u| u.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| status.subject.clone());
    Identity::authenticated(
        name,
        status.uid.clone(),
        status.groups.clone(),
        Default::default(),
    )
}

impl ExternalAuthenticator for CentralAuthenticator {
    fn authenticate<'a>(&'a self, input: AuthnInput<'a>) -> BoxFuture<'a, AuthnOutcome> {
        Box::pin(async move {
            let Some(bearer) = input.bearer else {
                return AuthnOutcome::Skip;
            };
            if bearer.bytes().filter(|&b| b == b'.').count() == 2 {
                self.token(bearer).await
            } else if is_access_key_shaped(bearer) {
                self.access_key(bearer).await
            } else {
                // Anyone can send a bearer: one that cannot be a key of the central is refused
                // here, not passed on to the central for every request.
                AuthnOutcome::Rejected(
                    "neither a central gateway token nor shaped like an access key".into(),
                )
            }
        })
    }
}
