//! [`RbacAuthorizer`]: [`AuthzLayer`](crate::AuthzLayer)'s decisions made by kubegate-authz.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use kubegate_authz::{Attributes, CompiledScope, Identity, Verdict, authorize_scoped};
use kubegate_routing::{RequestInfo, Router};

use crate::authz::{Authorizer, Decision};
use crate::ext::ScopeAttached;
use crate::status::Status;

/// Decides as the gateway does: the credential's access-key scope first, then a kubegate-authz
/// authorizer — a [`kubegate_authz::Policy`] compiled from Kubernetes RBAC objects, or a
/// `Chain` ending in one. It is the authorizer to give [`AuthzLayer`](crate::AuthzLayer)
/// when the layers protect Kubernetes traffic in a server of your own.
///
/// It reads, from the request's extensions, the [`Identity`] the authentication layer set
/// (none: a 500 `no user found for request`, kube-apiserver's answer to a request that
/// carries no user) and the credential's scope: the authenticator's
/// [`Authenticated::scope`](crate::Authenticated::scope) as an `Arc<CompiledScope>` (or a
/// `CompiledScope`). A scope of any other type is refused with a 500 rather than ignored
/// ([`ScopeAttached`] tells it is there). What is asked comes from the request itself: its
/// path is routed again with the router given here, for the target the scope is checked
/// against, and the rest below the target's prefix is parsed into kube's RequestInfo (verb,
/// resource, namespace, name, and the decoded path non-resource rules match), so a
/// [`RequestMeta`](crate::RequestMeta) made for metrics labels decides nothing.
///
/// A WebSocket exec, attach or port-forward (a `GET`) also needs `create`, as kube-apiserver
/// asks since 1.35; the reference gateway decides so too.
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
    /// Decides with `authorizer` for requests routed by `router` (the router the server
    /// routes its requests with).
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
        let Ok(route) = self.router.route(req.uri.path(), req.uri.query()) else {
            return Decision::Error("request was not routed".into());
        };
        // Parsed here from the request itself, as kube-apiserver's authorization filter reads
        // the RequestInfo its own filter computed: a `RequestMeta` made for labels, or before
        // the request was rewritten, must not decide what is authorized.
        let info = match RequestInfo::parse(req.method.as_str(), &route.rest, route.query) {
            Ok(info) => info,
            Err(e) => return Decision::Error(e.to_string()),
        };
        let attributes = Attributes::from_request_info(user, &info);
        let scope = match (
            req.extensions.get::<Arc<CompiledScope>>(),
            req.extensions.get::<CompiledScope>(),
        ) {
            (Some(scope), _) => Some(&**scope),
            (None, Some(scope)) => Some(scope),
            (None, None) => {
                // The credential has a scope this authorizer cannot read: refused, never
                // decided as if the credential were unrestricted.
                if let Some(ScopeAttached(type_name)) = req.extensions.get::<ScopeAttached>() {
                    // The type is the embedder's business: logged, not told to the client.
                    tracing::error!(
                        scope_type = type_name,
                        "RbacAuthorizer cannot enforce this credential scope: it reads a kubegate_authz::CompiledScope"
                    );
                    return Decision::Error("the credential's scope cannot be enforced".into());
                }
                None
            }
        };
        let decision = authorize_scoped(scope, &route.target, &attributes, &*self.authorizer);
        if decision.verdict != Verdict::Allow {
            return Decision::Deny {
                status: Status::from(kubegate_authz::forbidden(&attributes, &decision.reason)),
                reason: decision.reason.into_owned(),
            };
        }
        if attributes.also_needs_create() {
            // A WebSocket exec, attach or port-forward is a `get` that runs commands: as
            // kube-apiserver since 1.35, `create` too (the scope's and RBAC's).
            let create = attributes.with_verb("create");
            let also = authorize_scoped(scope, &route.target, &create, &*self.authorizer);
            if also.verdict != Verdict::Allow {
                return Decision::Deny {
                    status: Status::from(kubegate_authz::forbidden_reason_only(
                        &create,
                        &also.reason,
                    )),
                    reason: also.reason.into_owned(),
                };
            }
        }
        // The audit annotation is the request's own decision, as kube-apiserver's.
        Decision::Allow {
            reason: decision.reason.into_owned(),
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
        jane_may(&serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"nonResourceURLs": ["/version"], "verbs": ["get"]},
        ]))
    }

    /// A policy that grants `jane` the RBAC `rules` (cluster-wide).
    fn jane_may(rules: &serde_json::Value) -> Policy {
        let role = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reader"},
            "rules": rules,
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
        let (mut parts, ()) = http::Request::get("/elsewhere/api/v1/configmaps")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(Identity::new("jane", vec![]));
        assert!(matches!(
            z.decide(&parts),
            Decision::Error(e) if e == "request was not routed"
        ));
    }

    /// The request itself is authorized, not what a `RequestMeta` says of it: one made for
    /// metrics labels (no objectRef), or left from before the request changed, decides nothing.
    #[test]
    fn the_request_decides_not_its_labels() {
        let z = RbacAuthorizer::new(Router::central(), policy());
        const SECRETS: &str = "/kubernetes/cluster/prod/api/v1/namespaces/kube-system/secrets";
        let mut parts = head("GET", SECRETS, Some("jane"), None);
        // Labels only: as if a non-resource GET of the path.
        parts.extensions.insert(RequestMeta {
            target: Arc::from("cluster/prod"),
            verb: "get".into(),
            object_ref: None,
        });
        let Decision::Deny { status, .. } = z.decide(&parts) else {
            panic!("jane read secrets");
        };
        assert_eq!(
            status.message,
            "secrets is forbidden: User \"jane\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        );
        // A stale one: says GET configmaps, the request deletes them.
        const CM: &str = "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps/x";
        let mut parts = head("GET", CM, Some("jane"), None);
        parts.method = http::Method::DELETE;
        assert!(matches!(z.decide(&parts), Decision::Deny { .. }));
        // None at all: decided all the same.
        parts.method = http::Method::GET;
        parts.extensions.remove::<RequestMeta>();
        assert!(matches!(z.decide(&parts), Decision::Allow { .. }));
    }

    /// A WebSocket exec is a `GET` that runs commands: `get` on pods/exec is not enough, it
    /// needs `create` too (kube-apiserver since 1.35); SPDY's `POST` is `create` already.
    #[test]
    fn a_websocket_exec_needs_create_too() {
        let get_only = jane_may(&serde_json::json!([
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]},
        ]));
        let z = RbacAuthorizer::new(Router::central(), get_only);
        const EXEC: &str =
            "/kubernetes/cluster/prod/api/v1/namespaces/default/pods/p/exec?command=sh";
        let Decision::Deny { status, .. } = z.decide(&head("GET", EXEC, Some("jane"), None)) else {
            panic!("a shell on get alone");
        };
        // kube's pod handler words this refusal with the authorizer's reason alone (RBAC
        // gives none).
        assert_eq!(status.message, "pods \"p\" is forbidden: ");
        // With `create` as well, the shell opens.
        let z = RbacAuthorizer::new(
            Router::central(),
            jane_may(&serde_json::json!([
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
            ])),
        );
        assert!(matches!(
            z.decide(&head("GET", EXEC, Some("jane"), None)),
            Decision::Allow { .. }
        ));
    }

    /// A credential's scope is enforced as the authenticator hands it over (shared or not);
    /// one of a type the authorizer cannot read refuses the request instead of being ignored.
    #[test]
    fn a_scope_it_cannot_read_refuses_the_request() {
        let z = RbacAuthorizer::new(Router::central(), policy());
        let only_staging =
            || CompiledScope::from_json(br#"{"clusters":[{"cluster":"staging"}]}"#).unwrap();
        const CM: &str = "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps";
        let mut parts = head("GET", CM, Some("jane"), None);
        parts.extensions.insert(only_staging());
        assert!(matches!(z.decide(&parts), Decision::Deny { .. }));

        #[derive(Clone)]
        struct OwnScope;
        let mut parts = head("GET", CM, Some("jane"), None);
        parts.extensions.insert(OwnScope);
        parts
            .extensions
            .insert(ScopeAttached(std::any::type_name::<OwnScope>()));
        match z.decide(&parts) {
            Decision::Error(e) => assert_eq!(e, "the credential's scope cannot be enforced"),
            other => panic!("{other:?}"),
        }
    }
}
