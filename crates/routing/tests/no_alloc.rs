//! Routing + RequestInfo of a request without escapes or selectors allocates nothing.
#![allow(clippy::unwrap_used)]

use kubegate_routing::{RequestInfo, Router};

const REQUESTS: &[(&str, &str, Option<&str>)] = &[
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods",
        Some("limit=500"),
    ),
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/namespaces/default/pods/web-1",
        None,
    ),
    (
        "GET",
        "/kubernetes/cluster/prod/api/v1/pods",
        Some("watch=true&resourceVersion=10&allowWatchBookmarks=true"),
    ),
    (
        "POST",
        "/kubernetes/project/p/space/s/api/v1/namespaces/s/pods/web/exec",
        Some("command=sh&stdin=true"),
    ),
    (
        "GET",
        "/kubernetes/management/apis/management.loft.sh/v1/clusters",
        None,
    ),
    ("GET", "/kubernetes/virtualcluster/prod/team/vc/apis", None),
    (
        "DELETE",
        "/kubernetes/cluster/prod/apis/apps/v1/namespaces/a/deployments/d",
        None,
    ),
    ("GET", "/healthz", None),
];

#[test]
fn hot_path_allocates_nothing() {
    let central = Router::central();
    let mut seen = 0;
    let info = allocation_counter::measure(|| {
        for &(method, path, query) in REQUESTS {
            let route = central.route(path, query).unwrap();
            let info = RequestInfo::parse(method, &route.rest, route.query).unwrap();
            seen += usize::from(info.is_resource_request) + info.name.len();
            std::hint::black_box(&info);
        }
    });
    assert!(seen > 0);
    assert_eq!(info.count_total, 0, "allocations on the hot path: {info:?}");
}

#[test]
fn escapes_allocate_but_only_a_little() {
    let central = Router::central();
    let info = allocation_counter::measure(|| {
        let route = central
            .route(
                "/kubernetes/cluster/prod/api/v1/namespaces/a/configmaps/x%20y",
                None,
            )
            .unwrap();
        let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
        std::hint::black_box(&info);
    });
    assert_eq!(info.count_total, 1, "{info:?}");
}

#[test]
fn selectors_allocate_only_to_decode_an_escaped_value() {
    let central = Router::central();
    let cases: &[(&str, usize, &str)] = &[
        // Written unescaped: checked and borrowed, nothing allocated.
        ("labelSelector=app=web,tier!=db", 0, ""),
        ("fieldSelector=metadata.name=node-1", 0, "node-1"),
        // Escaped: one allocation for the decoded value; a pinned name is borrowed from the
        // raw query rather than copied out of it.
        ("labelSelector=app%3Dweb", 1, ""),
        ("fieldSelector=metadata.name%3Dnode-1", 1, "node-1"),
    ];
    for &(query, allocations, name) in cases {
        let mut named = false;
        let info = allocation_counter::measure(|| {
            let route = central
                .route("/kubernetes/cluster/prod/api/v1/nodes", Some(query))
                .unwrap();
            let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
            assert_eq!(info.verb, "list", "{query}");
            named = info.name == name;
            std::hint::black_box(&info);
        });
        assert!(named, "name for {query}");
        assert_eq!(info.count_total, allocations as u64, "{query}: {info:?}");
    }
}

/// Deciding a Status's format runs for every forwarded request: for a client's `Accept` it
/// allocates nothing, whichever way it decides; only a header of more than 12 ranges, which
/// no client sends, is sorted in an allocated vector.
#[test]
fn protobuf_negotiation_allocates_nothing_for_a_clients_accept() {
    use kubegate_routing::accept::negotiates_protobuf;
    let cases = [
        ("application/vnd.kubernetes.protobuf, */*", true, false),
        (
            "application/json, application/vnd.kubernetes.protobuf",
            false,
            false,
        ),
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            false,
            false,
        ),
        // 13 ranges: sorted by q, so `*/*` (JSON) comes first.
        (
            "application/vnd.kubernetes.protobuf;q=0.1,*/*,*/*,*/*,*/*,*/*,*/*,*/*,*/*,*/*,*/*,*/*,*/*",
            false,
            true,
        ),
    ];
    for (accept, want, allocates) in cases {
        let mut got = None;
        let info = allocation_counter::measure(|| {
            got = Some(negotiates_protobuf(std::hint::black_box(accept)));
        });
        assert_eq!(got, Some(want), "{accept}");
        assert_eq!(info.count_total > 0, allocates, "{accept}: {info:?}");
    }
}
