#![doc = include_str!("../README.md")]

mod cache;
mod client;
mod exec;
mod fsutil;
mod kubeconfig;
mod management;
mod target;

use std::path::PathBuf;

pub use cache::{CachedToken, RefreshPolicy, TokenCache, TokenSource};
pub use client::{
    Credential, DIRECT_ENDPOINT_ANNOTATION, DIRECT_ENDPOINT_CA_ANNOTATION,
    DIRECT_ENDPOINT_INSECURE_ANNOTATION, Endpoint, GatewayClient,
};
pub use exec::{EXEC_API_VERSION, EXEC_API_VERSION_V1BETA1, ExecCredential, ExecCredentialStatus};
pub use kubeconfig::{KubeconfigAuth, KubeconfigEntry, merge_into_file, merge_kubeconfig};
pub use management::{AccessKeyRequest, Management};
pub use target::{ContextNaming, Target};

/// Re-exported so callers name the exact kube-client this crate builds on.
pub use kube_client;
/// Re-exported wire types (`management.loft.sh/v1`, `storage.loft.sh/v1`).
pub use kubegate_api as api;

/// Everything that can go wrong in this crate. Requests the gateway answered with an error keep
/// the kube-apiserver `Status` inside [`Error::Kube`]; see [`Error::status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway URL is not an absolute `https://` (or `http://`) URL.
    #[error("invalid gateway URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with any userinfo and query replaced by `<redacted>`.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A cluster, project, space or virtual cluster name is not a valid Kubernetes name.
    #[error("invalid {what} name {name:?}: it must be a lowercase RFC 1123 name")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// The CA bundle holds no usable PEM certificate.
    #[error("invalid CA bundle: {0}")]
    InvalidCa(String),
    /// A direct cluster endpoint does not serve the management API.
    #[error("a direct cluster endpoint serves no management API; use the central gateway URL")]
    NoManagementOnDirectEndpoint,
    /// kube-client failed: building a client, or a request the gateway refused (with its Status).
    #[error(transparent)]
    Kube(#[from] kube_client::Error),
    /// An existing kubeconfig could not be parsed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube_client::config::KubeconfigError,
    },
    /// A file could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serializing or parsing JSON/YAML failed.
    #[error("{context}: {message}")]
    Encoding {
        /// What was being encoded or decoded.
        context: &'static str,
        /// The encoder's message (never contains a credential).
        message: String,
    },
    /// The gateway answered a token request without a token.
    #[error("the gateway returned no token")]
    NoToken,
    /// No token could be obtained and no cached token is still valid.
    #[error(
        "no valid token: the gateway could not issue one ({source}) and no cached token is still valid"
    )]
    NoValidToken {
        /// Why the gateway could not be asked.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The kube-apiserver `Status` the gateway answered with, when this error is one.
    pub fn status(&self) -> Option<&kube_client::core::Status> {
        match self {
            Error::Kube(kube_client::Error::Api(status)) => Some(status),
            Error::NoValidToken { source } => source.status(),
            _ => None,
        }
    }
}
