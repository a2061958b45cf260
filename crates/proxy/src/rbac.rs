//! [`RbacAuthorizer`]: [`AuthzLayer`](crate::AuthzLayer)'s decisions made by kubegate-authz.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use kubegate_authz::{Attributes, CompiledScope, Identity, Verdict, authorize_scoped};
use kubegate_routing::Router;

use crate::authz::{Authorizer, Decision};
use crate::ext::{ObjectRef, RequestMeta};
use crate::status::Status;

/// Decides as the gateway does: the credential's access-key scope first, then a kubegate-authz
/// authorizer — a [`kubegate_authz::Policy`] compiled from Kubernetes RBAC objects, or a
/// `Chain` ending in one. It is the authorizer to give [`AuthzLayer`](crate::AuthzLayer)
/// when the layers protect Kubernetes traffic in a server of your own.
///
/// It reads, from the request's extensions: the [`Identity`] the authentication layer set
/// (none: a 500 `no user found for request`, kube-apiserver's answer to a request that
/// carries no user), the [`RequestMeta`] routing set (verb and objectRef), and an
/// `Arc<CompiledScope>` when the authenticator gave one as the credential's scope. The
/// request path is routed again with the router given here for the target the scope is
/// checked against and for the path non-resource rules match (the decoded rest below the
/// target's prefix, as kube-apiserver matches `nonResourceURLs` against its decoded path).
///
/// A request no authorizer allows gets kube-apiserver's 403 with its exact message
/// (`User "jane" cannot delete resource "namespaces" in API group "" at the cluster scope`,
/// the reason after it); the reason of an allowed one goes to the audit annotation.
pub struct RbacAuthorizer<A> {
    router: Router,
    authorizer: Arc<A>,
}

impl<A> fmt::Debug for RbacAuthorizer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacAuthorizer").finish_non_exhaustive()
    }
}

impl<A> RbacAuthorizer<A> {
    /// Decides with `authorizer` for requests routed by `router` (the one that set the
    /// requests' [`RequestMeta`]).
    pub fn new(router: Router, authorizer: A) -> Self {
        RbacAuthorizer {
            router,
            authorizer: Arc::new(authorizer),
        }
    }

    /// Shares an authorizer with its other holders (one compiled policy behind several
    /// layers or servers).
    pub fn from_arc(router: Router, authorizer: Arc<A>) -> Self {
        RbacAuthorizer { router, authorizer }
    }
}

impl<A> RbacAuthorizer<A>
where
    A: kubegate_authz::Authorizer,
{
    /// The decision for a request head (what [`Authorizer::authorize`] returns, ready).
    pub fn decide(&self, req: &Parts) -> Decision {
        let Some(user) = req.extensions.get::<Identity>() else {
            return Decision::Error("no user found for request".into());
        };
        let Some(meta) = req.extensions.get::<RequestMeta>() else {
            return Decision::Error("request was not routed".into());
        };
        let Ok(route) = self.router.route(req.uri.path(), req.uri.query()) else {
            return Decision::Error("request was not routed".into());
        };
        // What `Attributes::from_request_info` builds: the objectRef holds RequestInfo's
        // resource fields.
        let object = meta.object_ref.as_ref();
        let field = |f: fn(&ObjectRef) -> &str| object.map_or("", f);
        let attributes = Attributes {
            user,
            verb: &meta.verb,
            is_resource_request: object.is_some(),
            path: &route.rest,
            api_group: field(ObjectRef::api_group),
            api_version: field(ObjectRef::api_version),
            resource: field(ObjectRef::resource),
            subresource: field(ObjectRef::subresource),
            namespace: field(ObjectRef::namespace),
            name: field(ObjectRef::name),
        };
        let scope = req.extensions.get::<Arc<CompiledScope>>().map(|s| &**s);
        let decision = authorize_scoped(scope, &route.target, &attributes, &*self.authorizer);
        match decision.verdict {
            Verdict::Allow => Decision::Allow {
                reason: decision.reason.into_owned(),
            },
            Verdict::Deny | Verdict::NoOpinion => Decision::Deny {
                status: Status::from(kubegate_authz::forbidden(&attributes, &decision.reason)),
                reason: decision.reason.into_owned(),
            },
        }
    }
}

impl<A> Authorizer for RbacAuthorizer<A>
where
    A: kubegate_authz::Authorizer + Send + Sync + 'static,
{
    type Future = std::future::Ready<Decision>;

    fn authorize(&self, req: &Parts) -> Self::Future {
        std::future::ready(self.decide(req))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::ext::RequestMeta;
    use kubegate_authz::Policy;
    use kubegate_routing::RequestInfo;

    /// `jane` may read configmaps everywhere and `GET /version`.
    fn policy() -> Policy {
        let role = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reader"},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
                {"nonResourceURLs": ["/version"], "verbs": ["get"]},
            ],
        }))
        .unwrap();
        let binding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "jane-reads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}],
        }))
        .unwrap();
        Policy::compile(&[], &[role], &[], &[binding]).unwrap()
    }

    /// A request head as routing and authentication leave it.
    fn head(method: &str, uri: &str, user: Option<&str>, scope: Option<CompiledScope>) -> Parts {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        let router = Router::central();
        let route = router.route(parts.uri.path(), parts.uri.query()).unwrap();
        let info = RequestInfo::parse(method, &route.rest, route.query).unwrap();
        parts
            .extensions
            .insert(RequestMeta::new(&route.target, &info));
        if let Some(user) = user {
            parts.extensions.insert(Identity::new(user, vec![]));
        }
        if let Some(scope) = scope {
            parts.extensions.insert(Arc::new(scope));
        }
        parts
    }

    #[test]
    fn decides_with_rbac_and_denies_with_kubes_message() {
        let z = RbacAuthorizer::new(Router::central(), policy());
        const CM: &str = "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps";
        for (method, uri, user, allowed) in [
            ("GET", CM, "jane", true),
            ("GET", "/kubernetes/cluster/prod/version", "jane", true),
            ("GET", "/kubernetes/cluster/prod/healthz", "jane", false),
            ("POST", CM, "jane", false),
            ("GET", CM, "bob", false),
        ] {
            let decision = z.decide(&head(method, uri, Some(user), None));
            match (allowed, decision) {
                (true, Decision::Allow { reason }) => assert!(
                    reason.contains("ClusterRoleBinding \"jane-reads\""),
                    "{reason}"
                ),
                (false, Decision::Deny { status, .. }) => assert_eq!(status.code, 403),
                (_, other) => panic!("{method} {uri} as {user}: {other:?}"),
            }
        }
        let Decision::Deny { status, .. } = z.decide(&head("POST", CM, Some("jane"), None)) else {
            panic!("allowed");
        };
        assert_eq!(
            status.message,
            "configmaps is forbidden: User \"jane\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
        );
    }

    #[test]
    fn the_credentials_scope_comes_first() {
        let z = RbacAuthorizer::new(Router::central(), policy());
        let only_staging =
            || CompiledScope::from_json(br#"{"clusters":[{"cluster":"staging"}]}"#).unwrap();
        const CM: &str = "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps";
        let Decision::Deny { reason, .. } =
            z.decide(&head("GET", CM, Some("jane"), Some(only_staging())))
        else {
            panic!("a key scoped to staging read prod");
        };
        assert_eq!(reason, kubegate_authz::SCOPE_DENIED_REASON);
    }

    #[test]
    fn unauthenticated_or_unrouted_requests_are_errors() {
        let z = RbacAuthorizer::new(Router::central(), policy());
        let uri = "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps";
        assert!(matches!(
            z.decide(&head("GET", uri, None, None)),
            Decision::Error(e) if e == "no user found for request"
        ));
        let (mut parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
        parts.extensions.insert(Identity::new("jane", vec![]));
        assert!(matches!(z.decide(&parts), Decision::Error(_)));
    }
}
