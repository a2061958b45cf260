//! Identities vouched for by someone else over the network: external OIDC issuers
//! ([`OidcIssuersAuthenticator`]) and, in agent mode, the central gateway
//! ([`CentralAuthenticator`]). Both are [`ExternalAuthenticator`]s.
//!
//! Order: issuers first (they recognise their tokens by `iss` without any network call), then
//! the central gateway (which asks the central about anything else).

pub mod agent;
pub mod client;
pub mod issuers;
pub mod keys;
pub mod selves;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;

pub use agent::CentralAuthenticator;
pub use issuers::OidcIssuersAuthenticator;

use crate::GatewayError;
use crate::authenticators::ExternalAuthenticator;
use crate::config::{Config, Mode};

/// A remote authenticator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// TLS trust for a remote endpoint could not be set up.
    #[error("{field}: {message}")]
    Tls {
        /// The configuration field (`agent.centralCaFile`, `oidcIssuers[0].caFile`).
        field: String,
        /// Why.
        message: String,
    },
    /// A setting is unusable.
    #[error("{field}: {message}")]
    Config {
        /// The configuration field.
        field: String,
        /// Why.
        message: String,
    },
}

/// A remote call failed. Messages name URLs and causes, never credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No usable answer: connection, TLS, timeout, or a 5xx.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that says no, or that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// The remote authenticators `config` asks for, in the order they are consulted.
pub fn from_config(config: &Config) -> Result<Vec<Arc<dyn ExternalAuthenticator>>, GatewayError> {
    let mode = |e: RemoteError| GatewayError::Mode(e.to_string());
    let mut out: Vec<Arc<dyn ExternalAuthenticator>> = Vec::new();
    if !config.oidc_issuers.is_empty() {
        out.push(Arc::new(
            OidcIssuersAuthenticator::new(&config.oidc_issuers).map_err(mode)?,
        ));
    }
    if config.mode == Mode::Agent
        && let Some(agent) = &config.agent
    {
        out.push(Arc::new(CentralAuthenticator::new(agent).map_err(mode)?));
    }
    Ok(out)
}
