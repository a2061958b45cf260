//! Authorization of a request to a target: the credential's scope, the gateway's RBAC (target
//! access and the request itself), the write gate and the project-space namespace fence.

use std::borrow::Cow;

use kubegate_authz::{
    Attributes, Authorizer, Forbidden, Identity, Policy, SCOPE_DENIED_REASON, WriteGate, forbidden,
};
use kubegate_proxy::Status;
use kubegate_proxy::audit::IdentitySlot;
use kubegate_proxy::ext::AuditAnnotations;
use kubegate_proxy::status::StatusDetails;
use kubegate_routing::{RequestInfo, Target};

use crate::authn::Caller;

/// The project namespace prefix (Loft's `projectNamespacePrefix`).
pub const PROJECT_NAMESPACE_PREFIX: &str = "p-";

/// The management API group the gateway's own access rules are written in.
pub const MANAGEMENT_GROUP: &str = "management.loft.sh";

/// A refused request: kube-apiserver's 403 for the request's attributes, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The 403's message and details.
    pub forbidden: Forbidden,
    /// Why, as the audit event's `authorization.k8s.io/reason` says it.
    pub reason: String,
}

impl Refusal {
    fn new(a: &Attributes<'_>, reason: &str) -> Refusal {
        Refusal {
            forbidden: forbidden(a, reason),
            reason: reason.to_owned(),
        }
    }

    /// The 403 Status.
    pub fn status(&self) -> Status {
        forbidden_status(&self.forbidden)
    }

    /// Reports the refusal to the request's audit event (decision `forbid`).
    pub fn audit<B>(&self, req: &http::Request<B>) {
        audit_decision(req, false, Cow::Borrowed(&self.reason));
    }
}

/// Reports an authorization decision to the request's audit event, as kube-apiserver's
/// authorization filter does ([`AuditAnnotations::authorization`]). A later report replaces an
/// earlier one: a request that RBAC allowed and a project space's fence refused says `forbid`.
pub fn audit_decision<B>(req: &http::Request<B>, allowed: bool, reason: Cow<'_, str>) {
    if let Some(slot) = req.extensions().get::<IdentitySlot>() {
        slot.annotate(AuditAnnotations::authorization(
            allowed,
            reason.into_owned(),
        ));
    }
}

/// kube-apiserver's 403 Status body for a [`Forbidden`].
pub fn forbidden_status(f: &Forbidden) -> Status {
    Status {
        code: 403,
        message: f.message.clone(),
        reason: "Forbidden".into(),
        details: Some(StatusDetails {
            name: f.name.clone(),
            group: f.group.clone(),
            kind: f.kind.clone(),
            ..StatusDetails::default()
        }),
        type_meta: true,
    }
}

/// The attributes whose `use` grants access to a target: verb `use` on the matching
/// `management.loft.sh` resource (clusters, virtualclusters, spaceinstances,
/// virtualclusterinstances), named after the target; project objects live in `p-<project>`.
pub fn target_use<'a>(
    user: &'a Identity,
    target: &Target<'a>,
    project_namespace: &'a str,
) -> Option<Attributes<'a>> {
    let a = |resource: &'a str| Attributes::resource(user, "use", MANAGEMENT_GROUP, resource);
    Some(match *target {
        Target::Cluster { cluster } => a("clusters").named(cluster),
        Target::VirtualCluster {
            namespace, name, ..
        } => a("virtualclusters").in_namespace(namespace).named(name),
        Target::ProjectSpace { space, .. } => a("spaceinstances")
            .in_namespace(project_namespace)
            .named(space),
        Target::ProjectVirtualCluster {
            virtual_cluster, ..
        } => a("virtualclusterinstances")
            .in_namespace(project_namespace)
            .named(virtual_cluster),
        _ => return None,
    })
}

/// The namespace a project's objects live in.
pub fn project_namespace(project: &str) -> String {
    format!("{PROJECT_NAMESPACE_PREFIX}{project}")
}

/// What the gateway checks before looking a Kubernetes target up, in order: scope, target
/// access, the write gate, the request itself against gateway RBAC. They need only the
/// target's name, so they run before the lookup, as kube-apiserver authorizes before it reads:
/// a caller without access gets the same 403 whether the target exists or not, and cannot
/// probe for target names. A project space's namespace fence ([`check_fence`]) comes after.
/// Allowed, it returns RBAC's reason (kube's `authorization.k8s.io/reason` audit annotation),
/// borrowed from the policy: it is copied only when an audit event wants it.
pub fn authorize_upstream<'p>(
    policy: &'p Policy,
    write_gate: &WriteGate,
    caller: &Caller,
    identity: &Identity,
    target: &Target<'_>,
    info: &RequestInfo<'_>,
) -> Result<Cow<'p, str>, Refusal> {
    let attrs = Attributes::from_request_info(identity, info);
    if !caller.scope.admits(target, &attrs) {
        return Err(Refusal::new(
            &attrs,
            &format!("{SCOPE_DENIED_REASON} to {}", describe(target)),
        ));
    }
    let project_ns = match target {
        Target::ProjectSpace { project, .. } | Target::ProjectVirtualCluster { project, .. } => {
            project_namespace(project)
        }
        _ => String::new(),
    };
    if let Some(use_attrs) = target_use(identity, target, &project_ns)
        && !policy.decide(&use_attrs).is_allowed()
    {
        return Err(Refusal::new(
            &attrs,
            &format!("access to {} is not granted", describe(target)),
        ));
    }
    // The write gate answers Deny or NoOpinion; a Deny wins before RBAC, as in kube's union.
    let gate = write_gate.authorize(&attrs);
    if gate.verdict == kubegate_authz::Verdict::Deny {
        return Err(Refusal::new(&attrs, &gate.reason));
    }
    let allowed = policy.decide(&attrs);
    if !allowed.is_allowed() {
        return Err(Refusal::new(&attrs, &allowed.reason));
    }
    if attrs.also_needs_create() {
        // A WebSocket exec is a `get`, yet it runs commands: kube-apiserver (since 1.35,
        // `AuthorizePodWebsocketUpgradeCreatePermission`) also requires `create`, and so do
        // the scope and the write gate, which would otherwise let a shell through a
        // read-only gateway.
        let create = attrs.with_verb("create");
        let refused = |reason: &str| Refusal {
            forbidden: kubegate_authz::forbidden_reason_only(&create, reason),
            reason: reason.to_owned(),
        };
        if !caller.scope.admits(target, &create) {
            return Err(refused(&format!(
                "{SCOPE_DENIED_REASON} to {}",
                describe(target)
            )));
        }
        let gate = write_gate.authorize(&create);
        if gate.verdict == kubegate_authz::Verdict::Deny {
            return Err(refused(&gate.reason));
        }
        let decision = policy.decide(&create);
        if !decision.is_allowed() {
            return Err(refused(&decision.reason));
        }
    }
    // kube-apiserver's audit annotation is the request's own decision; the `create` check
    // comes later there, in the pod handlers.
    Ok(allowed.reason)
}

/// A project space's fence: its requests stay in the space's `namespace` ([`within_fence`]).
pub fn check_fence(
    identity: &Identity,
    target: &Target<'_>,
    info: &RequestInfo<'_>,
    namespace: &str,
) -> Result<(), Refusal> {
    if within_fence(info, namespace) {
        return Ok(());
    }
    Err(Refusal::new(
        &Attributes::from_request_info(identity, info),
        &format!(
            "requests to {} must stay in namespace {namespace:?}",
            describe(target)
        ),
    ))
}

/// Refuses a request to a target of identity mode `passthrough` that impersonates someone
/// (`kubectl --as`). Such a target is sent the caller's own token and no `Impersonate-*`
/// headers, so it would run the request as the caller, while the gateway authorized and
/// audited it as the impersonated user: a caller allowed to impersonate someone who may use
/// the target, but not allowed there itself, would get in.
pub fn refuse_passthrough_impersonation(
    caller: &Identity,
    target: &Target<'_>,
    info: &RequestInfo<'_>,
) -> Refusal {
    Refusal::new(
        &Attributes::from_request_info(caller, info),
        &format!(
            "requests to {} cannot impersonate: it is sent the caller's own token (identity mode passthrough)",
            describe(target)
        ),
    )
}

/// Whether a request stays inside a space's namespace: non-resource requests (discovery,
/// `/version`, OpenAPI), self-subject reviews, and reading the namespace itself are allowed too.
/// Changing or deleting the Namespace object is not: the space owns its namespace (it goes
/// with the space, through the management API), although kube's RequestInfo puts
/// `/api/v1/namespaces/<ns>` in namespace `<ns>`.
pub fn within_fence(info: &RequestInfo<'_>, namespace: &str) -> bool {
    if !info.is_resource_request {
        return true;
    }
    let namespace_object = info.api_group.is_empty() && info.resource == "namespaces";
    if info.namespace == namespace && !namespace_object {
        return true;
    }
    let self_review = matches!(
        (info.api_group, info.resource),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        ) | ("authentication.k8s.io", "selfsubjectreviews")
    );
    if self_review {
        return true;
    }
    namespace_object
        && info.name == namespace
        && info.subresource.is_empty()
        && matches!(&*info.verb, "get" | "list" | "watch")
}

/// A target named the way error messages talk about it.
pub fn describe(target: &Target<'_>) -> String {
    match target {
        Target::Management => "the management API".into(),
        Target::Cluster { cluster } => format!("cluster {cluster:?}"),
        Target::VirtualCluster {
            cluster,
            namespace,
            name,
        } => format!("virtual cluster {name:?} in namespace {namespace:?} of cluster {cluster:?}"),
        Target::ProjectSpace { project, space } => {
            format!("space {space:?} of project {project:?}")
        }
        Target::ProjectVirtualCluster {
            project,
            virtual_cluster,
        } => format!("virtual cluster {virtual_cluster:?} of project {project:?}"),
        Target::Auth => "/auth".into(),
        Target::Oidc => "/oidc".into(),
        Target::Grafana { cluster } => format!("the Grafana of cluster {cluster:?}"),
        Target::Ops(_) => "the gateway".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_keeps_requests_in_the_space_namespace() {
        #[rustfmt::skip]
        let cases = [
            ("GET", "/api/v1/namespaces/s1/pods", None, true),
            ("DELETE", "/api/v1/namespaces/s1/configmaps/x", None, true),
            ("GET", "/api/v1/namespaces/default/pods", None, false),
            ("GET", "/api/v1/pods", None, false),
            ("GET", "/api", None, true),
            ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None, true),
            // The Namespace object itself: read, never changed.
            ("GET", "/api/v1/namespaces/s1", None, true),
            ("GET", "/api/v1/namespaces", Some("fieldSelector=metadata.name%3Ds1"), true),
            ("GET", "/api/v1/namespaces", Some("watch=true&fieldSelector=metadata.name%3Ds1"), true),
            ("GET", "/api/v1/namespaces", None, false),
            ("DELETE", "/api/v1/namespaces/s1", None, false),
            ("PUT", "/api/v1/namespaces/s1", None, false),
            ("PATCH", "/api/v1/namespaces/s1", None, false),
            ("PUT", "/api/v1/namespaces/s1/finalize", None, false),
            ("PUT", "/api/v1/namespaces/s1/status", None, false),
            ("GET", "/api/v1/namespaces/s1/status", None, false),
            ("GET", "/api/v1/namespaces/other", None, false),
        ];
        for (method, path, query, inside) in cases {
            let info = RequestInfo::parse(method, path, query).unwrap();
            assert_eq!(
                within_fence(&info, "s1"),
                inside,
                "{method} {path} {query:?}"
            );
        }
    }
}
