#![doc = include_str!("../README.md")]

mod attributes;
mod decision;
mod forbidden;
mod identity;
mod impersonation;
mod rbac;
mod scope;
mod text;

pub use attributes::Attributes;
pub use decision::{Authorizer, Chain, Decision, Superuser, Verdict};
pub use forbidden::{Forbidden, forbidden, forbidden_reason_only, forbidden_user_message};
pub use identity::{
    ALL_AUTHENTICATED, ALL_SERVICE_ACCOUNTS, ALL_UNAUTHENTICATED, ANONYMOUS, Identity, NOBODY,
    SERVICE_ACCOUNT_USERNAME_PREFIX, SYSTEM_MASTERS, service_account_groups,
    service_account_username, split_service_account_username,
};
pub use impersonation::{
    IMPERSONATE_EXTRA_PREFIX, IMPERSONATE_GROUP, IMPERSONATE_UID, IMPERSONATE_USER, Impersonated,
    ImpersonatedKind, ImpersonationCheck, ImpersonationMode, ImpersonationModes,
    ImpersonationRequest, impersonate, impersonate_constrained,
};
pub use rbac::policy::Policy;
pub use rbac::tiers::{READ_ONLY_REASON, Tier, WriteGate};
pub use scope::{CompiledScope, SCOPE_DENIED_REASON, authorize_scoped};

/// Everything in this crate that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An RBAC object lacks a field kube-apiserver always sets.
    #[error("{kind} is missing {field}")]
    MissingField {
        /// Object kind.
        kind: &'static str,
        /// Missing field.
        field: &'static str,
    },
    /// Two RBAC objects of one kind share a name (and namespace).
    #[error("duplicate {kind} {name:?}")]
    Duplicate {
        /// Object kind.
        kind: &'static str,
        /// `name` or `namespace/name`.
        name: String,
    },
    /// A ClusterRole uses a built-in tier name (`kubegate:viewer`, `kubegate:operator`, `kubegate:admin`).
    #[error("ClusterRole name {name:?} is reserved for a built-in kubegate tier")]
    ReservedName {
        /// The name.
        name: String,
    },
    /// An `aggregationRule` selector is invalid.
    #[error("ClusterRole {cluster_role:?} has an invalid aggregation selector: {message}")]
    InvalidSelector {
        /// The aggregated ClusterRole.
        cluster_role: String,
        /// What is wrong.
        message: String,
    },
    /// An access-key scope could not be decoded.
    #[error("invalid access key scope: {0}")]
    InvalidScope(String),
    /// Impersonation of groups, extras or a UID without a user (kube-apiserver: 400 BadRequest).
    #[error("{message}")]
    ImpersonationWithoutUser {
        /// The Status message.
        message: String,
    },
    /// The requestor may not impersonate what it asked for (kube-apiserver: 403 Forbidden).
    #[error("{}", .0.message)]
    ImpersonationForbidden(Box<Forbidden>),
}

/// The error type of policy compilation (an alias kept for readability at call sites).
pub type PolicyError = Error;

impl Error {
    /// The HTTP status kube-apiserver answers with: 400 or 403 for impersonation, 500 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::ImpersonationWithoutUser { .. } => 400,
            Error::ImpersonationForbidden(_) => 403,
            _ => 500,
        }
    }
}
