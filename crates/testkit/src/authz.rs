//! The authorizer seam: kube-apiserver's authorizer chain (the `system:masters` privileged
//! group first, then an [`Authorizer`] — RBAC from `kubegate-authz` by default).

use std::sync::Arc;

use crate::identity::{SYSTEM_MASTERS, UserInfo};

/// kube-apiserver's `authorizer.Attributes` for one check.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The user the request runs as.
    pub user: &'a UserInfo,
    /// Verb (`get`, `list`, `watch`, `create`, ..., `impersonate`; lowercase method for
    /// non-resource requests).
    pub verb: &'a str,
    /// Resource request (vs. non-resource path).
    pub resource_request: bool,
    /// Request path (decoded).
    pub path: &'a str,
    /// API group (`""` = core).
    pub api_group: &'a str,
    /// API version.
    pub api_version: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource.
    pub subresource: &'a str,
    /// Namespace (`""` = cluster scope).
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Explicitly denied, with a reason (appended to the Forbidden message when non-empty).
    Deny(String),
    /// No opinion (denied unless a later authorizer allows), with a reason.
    NoOpinion(String),
}

/// Something that decides requests, like one of kube-apiserver's authorizers.
pub trait Authorizer: Send + Sync + std::fmt::Debug + 'static {
    /// Decide one set of attributes.
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        (**self).authorize(attrs)
    }
}

/// Adapts a closure into an [`Authorizer`] (for tests that want a bespoke policy).
pub struct FnAuthorizer<F>(pub F);

impl<F> std::fmt::Debug for FnAuthorizer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnAuthorizer")
    }
}

impl<F> Authorizer for FnAuthorizer<F>
where
    F: Fn(&Attributes<'_>) -> Decision + Send + Sync + 'static,
{
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        (self.0)(attrs)
    }
}

/// The chain the server runs: `system:masters` is always allowed (kube-apiserver's
/// privileged-group authorizer), then the configured authorizer.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizerChain {
    pub(crate) inner: Arc<dyn Authorizer>,
}

impl AuthorizerChain {
    pub(crate) fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        if attrs.user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Decision::Allow;
        }
        self.inner.authorize(attrs)
    }
}
