//! Prefix routing for both modes (spec/loft-api.md §3), and the attacks it must refuse.
#![allow(clippy::panic, clippy::type_complexity)]

use kubegate_routing::{NameKind, OpsPath, RouteError, Router, Target};

fn ok<'a>(router: &'a Router, path: &'a str) -> (Target<'a>, String) {
    let route = router
        .route(path, None)
        .unwrap_or_else(|e| panic!("{path}: {e:?}"));
    (route.target, route.rest.into_owned())
}

#[test]
fn central_prefixes() {
    let r = Router::central();
    #[rustfmt::skip]
    let cases = [
        ("/kubernetes/management", Target::Management, "/"),
        ("/kubernetes/management/", Target::Management, "/"),
        ("/kubernetes/management/apis/management.loft.sh/v1/selves", Target::Management, "/apis/management.loft.sh/v1/selves"),
        ("/kubernetes/cluster/prod", Target::Cluster { cluster: "prod" }, "/"),
        ("/kubernetes/cluster/prod/api/v1/pods", Target::Cluster { cluster: "prod" }, "/api/v1/pods"),
        ("/kubernetes/virtualcluster/prod/team-a/vc1/api", Target::VirtualCluster { cluster: "prod", namespace: "team-a", name: "vc1" }, "/api"),
        ("/kubernetes/project/p1/space/s1/api/v1/namespaces/s1/pods", Target::ProjectSpace { project: "p1", space: "s1" }, "/api/v1/namespaces/s1/pods"),
        ("/kubernetes/project/p1/virtualcluster/v1/version", Target::ProjectVirtualCluster { project: "p1", virtual_cluster: "v1" }, "/version"),
        ("/auth/password/login", Target::Auth, "/password/login"),
        ("/auth", Target::Auth, "/"),
        ("/oidc/.well-known/openid-configuration", Target::Oidc, "/.well-known/openid-configuration"),
        ("/grafana/prod/d/abc", Target::Grafana { cluster: "prod" }, "/d/abc"),
        ("/healthz", Target::Ops(OpsPath::Healthz), "/healthz"),
        ("/healthz/ping", Target::Ops(OpsPath::Healthz), "/healthz/ping"),
        ("/livez", Target::Ops(OpsPath::Livez), "/livez"),
        ("/readyz", Target::Ops(OpsPath::Readyz), "/readyz"),
        ("/version", Target::Ops(OpsPath::Version), "/version"),
        ("/metrics", Target::Ops(OpsPath::Metrics), "/metrics"),
    ];
    for (path, target, rest) in cases {
        assert_eq!(ok(&r, path), (target, rest.to_owned()), "{path}");
    }
}

/// Only a path that ends at the prefix is bare: its location below the prefix is empty, which
/// kube-apiserver's proxy handler treats apart (V5.5). A trailing `/` already names `/`.
#[test]
fn bare_prefixes() {
    let central = Router::central();
    let agent = Router::agent("local").unwrap();
    #[rustfmt::skip]
    let cases = [
        (&central, "/kubernetes/cluster/prod", true),
        (&central, "/kubernetes/cluster/prod/", false),
        (&central, "/kubernetes/cluster/prod/api", false),
        (&central, "/kubernetes/virtualcluster/prod/team-a/vc1", true),
        (&central, "/kubernetes/project/p1/space/s1", true),
        (&central, "/kubernetes/project/p1/virtualcluster/v1/", false),
        (&central, "/kubernetes/management", true),
        (&central, "/healthz", false),
        (&agent, "/kubernetes/cluster", true),
        (&agent, "/kubernetes/cluster/", false),
        (&agent, "/kubernetes/project/p/space/s", true),
    ];
    for (router, path, bare) in cases {
        let route = router
            .route(path, Some("a=b"))
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        assert_eq!(route.bare_prefix, bare, "{path}");
        if bare {
            assert_eq!((route.rest.as_ref(), route.raw_rest), ("/", "/"), "{path}");
        }
    }
}

#[test]
fn agent_prefixes() {
    let r = Router::agent("local").unwrap();
    #[rustfmt::skip]
    let cases = [
        ("/kubernetes/cluster", Target::Cluster { cluster: "local" }, "/"),
        ("/kubernetes/cluster/api/v1/pods", Target::Cluster { cluster: "local" }, "/api/v1/pods"),
        ("/kubernetes/virtualcluster/ns1/vc1/api", Target::VirtualCluster { cluster: "local", namespace: "ns1", name: "vc1" }, "/api"),
        ("/kubernetes/project/p/space/s", Target::ProjectSpace { project: "p", space: "s" }, "/"),
        ("/kubernetes/project/p/virtualcluster/v/apis", Target::ProjectVirtualCluster { project: "p", virtual_cluster: "v" }, "/apis"),
        ("/healthz", Target::Ops(OpsPath::Healthz), "/healthz"),
    ];
    for (path, target, rest) in cases {
        assert_eq!(ok(&r, path), (target, rest.to_owned()), "{path}");
    }
    for path in [
        "/kubernetes/management",
        "/auth/password/login",
        "/oidc/keys",
        "/grafana/local/",
    ] {
        assert_eq!(r.route(path, None), Err(RouteError::NotFound), "{path}");
    }
    assert!(Router::agent("Not_A_Label").is_err());
}

#[test]
fn query_is_kept_and_rest_is_decoded() {
    let r = Router::central();
    let route = r
        .route(
            "/kubernetes/cluster/c/api/v1/namespaces/a/configmaps/x%20y",
            Some("fieldSelector=a%3Db"),
        )
        .unwrap();
    assert_eq!(route.rest, "/api/v1/namespaces/a/configmaps/x y");
    assert_eq!(route.raw_rest, "/api/v1/namespaces/a/configmaps/x%20y");
    assert_eq!(route.query, Some("fieldSelector=a%3Db"));
}

#[test]
fn unknown_prefixes_are_not_found() {
    let r = Router::central();
    for path in [
        "/",
        "/kubernetes",
        "/kubernetes/",
        "/kubernetes/clusters/a",
        "/kubernetes/clusterfoo/a",
        "/kubernetes/cluster",
        "/kubernetes/cluster/",
        "/kubernetes/virtualcluster/a/b",
        "/kubernetes/project/p",
        "/kubernetes/project/p/spaces/s",
        "/kubernetes/project/p/space",
        "/grafana",
        "/authx",
        "/version/x",
        "/metricsx",
        "/api/v1/pods",
    ] {
        assert_eq!(r.route(path, None), Err(RouteError::NotFound), "{path}");
    }
}

/// Attacks from issue 2: nothing may let one prefix reach another target.
#[test]
fn attacks_are_refused() {
    let r = Router::central();
    #[rustfmt::skip]
    let cases: &[(&str, RouteError)] = &[
        ("/kubernetes/cluster/a/../../management/apis", RouteError::DotSegment),
        ("/kubernetes/cluster/a/%2e%2e/%2E%2E/management/apis", RouteError::DotSegment),
        ("/kubernetes/cluster/a/.%2e/b/api", RouteError::DotSegment),
        ("/kubernetes/cluster/./a/api", RouteError::DotSegment),
        ("/kubernetes/cluster/../management", RouteError::DotSegment),
        ("/kubernetes/cluster/a/api/v1/namespaces/x/pods/..", RouteError::DotSegment),
        ("/kubernetes//management", RouteError::EmptySegment),
        ("//kubernetes/management", RouteError::EmptySegment),
        ("/kubernetes/cluster//a/api", RouteError::EmptySegment),
        ("/kubernetes/cluster/a//api", RouteError::EmptySegment),
        ("/kubernetes/cluster/a%2Fb/api", RouteError::EncodedSlash),
        ("/kubernetes/cluster%2fa/api", RouteError::EncodedSlash),
        ("/kubernetes/cluster/a/api%2f..%2fmanagement", RouteError::EncodedSlash),
        ("/kubernetes/cluster/a\\b/api", RouteError::Backslash),
        ("/kubernetes/cluster/a/%5c/api", RouteError::Backslash),
        ("/kubernetes/cluster/a\0/api", RouteError::ControlCharacter),
        ("/kubernetes/cluster/a%00/api", RouteError::ControlCharacter),
        ("/kubernetes/cluster/a\n/api", RouteError::ControlCharacter),
        ("/kubernetes/cluster/a%0d%0a/api", RouteError::ControlCharacter),
        ("/kubernetes/cluster/a%7f/api", RouteError::ControlCharacter),
        ("/kubernetes/cluster/a%zz/api", RouteError::InvalidEscape),
        ("/kubernetes/cluster/a/api%", RouteError::InvalidEscape),
        ("kubernetes/cluster/a", RouteError::NotAbsolute),
        ("", RouteError::NotAbsolute),
        ("/kubernetes/cluster/Prod/api", RouteError::InvalidName { kind: NameKind::Cluster }),
        ("/kubernetes/cluster/%70rod/api", RouteError::InvalidName { kind: NameKind::Cluster }),
        ("/kubernetes/cluster/-a/api", RouteError::InvalidName { kind: NameKind::Cluster }),
        ("/kubernetes/cluster/a.b/api", RouteError::InvalidName { kind: NameKind::Cluster }),
        ("/kubernetes/virtualcluster/c/NS/v", RouteError::InvalidName { kind: NameKind::Namespace }),
        ("/kubernetes/virtualcluster/c/ns/v_1", RouteError::InvalidName { kind: NameKind::VirtualCluster }),
        ("/kubernetes/project/P/space/s", RouteError::InvalidName { kind: NameKind::Project }),
        ("/kubernetes/project/p/space/S", RouteError::InvalidName { kind: NameKind::Space }),
        ("/grafana/A/", RouteError::InvalidName { kind: NameKind::Cluster }),
        ("/kubernetes/cluster/a/api/v1/%ff", RouteError::InvalidUtf8),
    ];
    for (path, expected) in cases {
        assert_eq!(
            r.route(path, None).as_ref().err(),
            Some(expected),
            "{path:?}"
        );
    }
    let long = format!("/kubernetes/cluster/{}/api", "a".repeat(64));
    assert!(r.route(&long, None).is_err());
    // Uppercase prefix words are not the prefix.
    assert_eq!(
        r.route("/Kubernetes/management", None),
        Err(RouteError::NotFound)
    );
    assert_eq!(
        r.route("/kubernetes/Management", None),
        Err(RouteError::NotFound)
    );
}

#[test]
fn status_codes() {
    assert_eq!(RouteError::NotFound.status_code(), 404);
    assert_eq!(
        RouteError::InvalidName {
            kind: NameKind::Cluster
        }
        .status_code(),
        404
    );
    assert_eq!(RouteError::DotSegment.status_code(), 400);
    assert_eq!(RouteError::EncodedSlash.status_code(), 400);
}

/// Each target's Loft `RequestTarget` name (spec/loft-api.md §1), the one scope rules'
/// `requestTargets` list; the gateway's own endpoints have none.
#[test]
fn request_target_names() {
    let r = Router::central();
    #[rustfmt::skip]
    let cases = [
        ("/kubernetes/management/apis", Some("Management")),
        ("/kubernetes/cluster/prod/api", Some("Cluster")),
        ("/kubernetes/virtualcluster/prod/team-a/vc1/api", Some("VirtualCluster")),
        ("/kubernetes/project/p1/space/s1/api", Some("ProjectSpace")),
        ("/kubernetes/project/p1/virtualcluster/v1/api", Some("ProjectVirtualCluster")),
        ("/auth/password/login", None),
        ("/oidc/keys", None),
        ("/grafana/prod/d/abc", None),
        ("/healthz", None),
        ("/version", None),
    ];
    for (path, name) in cases {
        let (target, _) = ok(&r, path);
        assert_eq!(target.request_target(), name, "{path}");
        let requests_kubernetes = matches!(name, Some(n) if n != "Management");
        assert_eq!(
            target.is_kubernetes_upstream(),
            requests_kubernetes,
            "{path}"
        );
    }
}
