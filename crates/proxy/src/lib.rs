#![doc = include_str!("../README.md")]

pub mod audit;
pub mod authn;
pub mod authz;
mod body;
pub mod ext;
pub mod forward;
mod gate;
mod headers;
pub mod metrics;
mod pool;
pub mod rbac;
pub mod runtime;
pub mod status;
mod upgrade;
pub mod upstream;

pub use audit::{
    AuditBody, AuditEvent, AuditLayer, AuditLevel, AuditSink, BackgroundJsonLines, JsonLinesSink,
    MicroTime,
};
pub use authn::{Authenticated, Authenticator, AuthnError, AuthnLayer};
pub use authz::{Authorizer, AuthzLayer, Decision};
pub use body::{
    BodyError, ConnectionResponses, GuardedBody, InFlightSlot, ProxyBody, ResponseWatch,
};
pub use ext::{
    ClientAddr, Identity, LongRunning, ObjectRef, RequestMeta, ScopeAttached, SessionEnd,
    UpgradeSession, UpstreamPath,
};
pub use forward::ForwardService;
pub use headers::{
    UnforwardableIdentity, check_impersonable, check_impersonable_name, check_impersonable_value,
};
pub use metrics::MetricsLayer;
pub use rbac::RbacAuthorizer;
pub use status::{FieldError, Status};
pub use upstream::{
    Credential, DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS,
    DEFAULT_HTTP2_MAX_STREAMS_PER_CONNECTION, IdentityMode, Upstream, UpstreamBuilder,
};

/// Errors raised while configuring the proxy (request-time failures become [`Status`] responses).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The upstream URL could not be parsed or is not `http(s)://host[:port][/base/path]`.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with its userinfo, query and fragment replaced by `<redacted>`:
        /// they may hold a credential (`https://admin:password@host`, `?token=…`).
        url: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The CA bundle held no usable certificate.
    #[error("invalid CA bundle for upstream {upstream:?}: {reason}")]
    InvalidCaBundle {
        /// Upstream name.
        upstream: String,
        /// What was wrong (never contains key material).
        reason: String,
    },
    /// An `https` upstream needs a CA bundle unless verification is explicitly turned off.
    #[error("upstream {0:?} uses https but has no CA bundle and TLS verification is on")]
    MissingCaBundle(String),
    /// The client certificate or key could not be parsed or does not match.
    #[error("invalid client certificate or key for upstream {upstream:?}: {reason}")]
    InvalidClientCert {
        /// Upstream name.
        upstream: String,
        /// What was wrong (never contains key material).
        reason: String,
    },
    /// A token is not a valid HTTP header value (the token itself is never shown).
    #[error("the bearer token for upstream {0:?} contains characters not allowed in a header")]
    InvalidToken(String),
    /// `Passthrough` forwards the client's bearer token; a gateway client certificate would
    /// authenticate the gateway instead and silently change who the upstream sees.
    #[error(
        "upstream {0:?}: identity mode passthrough cannot be combined with a client certificate"
    )]
    PassthroughWithClientCert(String),
    /// An `http://` upstream without [`UpstreamBuilder::allow_plaintext`](upstream::UpstreamBuilder::allow_plaintext):
    /// the credential, the identity headers and every body would cross the network in
    /// cleartext.
    #[error(
        "upstream {0:?} uses http://, which sends its credential and the callers' identities in cleartext; allow it explicitly (allow_plaintext) if that is meant"
    )]
    Plaintext(String),
    /// `Impersonate` mode with no credential: every request would reach the upstream as an
    /// anonymous caller asking to impersonate, and be refused there.
    #[error(
        "upstream {0:?} impersonates callers but has no credential of its own (token, token file or client certificate)"
    )]
    NoCredentialToImpersonateWith(String),
    /// A client certificate on an `http://` upstream: it would never be presented.
    #[error("upstream {0:?}: a client certificate is only presented over https")]
    ClientCertOverPlaintext(String),
    /// A CA bundle with verification off: one of the two is a mistake (client-go refuses the
    /// same combination).
    #[error(
        "upstream {0:?}: specifying a CA bundle with TLS verification turned off is not allowed"
    )]
    InsecureWithCaBundle(String),
    /// The TLS configuration could not be built.
    #[error("TLS configuration for upstream {upstream:?}: {source}")]
    Tls {
        /// Upstream name.
        upstream: String,
        /// rustls error.
        #[source]
        source: rustls::Error,
    },
    /// An [`UpstreamPath`] could not be built from a route.
    #[error("invalid upstream path: {0}")]
    InvalidUpstreamPath(#[from] http::uri::InvalidUri),
}
