//! The request mix the routing bench and `examples/routing_probe.rs` share.

/// What kubectl, controllers and the loft CLI send through a gateway.
pub(crate) const MIX: &[(&str, &str, Option<&str>)] = &[
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods",
        Some("limit=500"),
    ),
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods/web-7d9f-abcde",
        None,
    ),
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods",
        Some("allowWatchBookmarks=true&resourceVersion=123456&timeoutSeconds=420&watch=true"),
    ),
    (
        "POST",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods/web-1/exec",
        Some("command=sh&container=web&stdin=true&stdout=true&tty=true"),
    ),
    ("GET", "/kubernetes/cluster/prod/apis", None),
    (
        "GET",
        "/kubernetes/management/apis/management.loft.sh/v1/clusters",
        None,
    ),
    (
        "GET",
        "/kubernetes/virtualcluster/prod/team-a/vc1/apis/apps/v1/namespaces/x/deployments",
        Some("labelSelector=app%3Dweb"),
    ),
    (
        "PATCH",
        "/kubernetes/project/team-a/space/dev/apis/apps/v1/namespaces/dev/deployments/web",
        Some("fieldManager=kubectl-client-side-apply"),
    ),
    (
        "GET",
        "/kubernetes/project/team-a/virtualcluster/vc2/api/v1/nodes",
        Some("fieldSelector=metadata.name%3Dnode-1"),
    ),
    ("GET", "/healthz", None),
];
