//! Route + RequestInfo over a mix of realistic requests (issue 2, item 4).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use kubegate::routing::{RequestInfo, Router};

/// What kubectl, controllers and the loft CLI send through a gateway.
const MIX: &[(&str, &str, Option<&str>)] = &[
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

fn route_and_request_info(c: &mut Criterion) {
    let router = Router::central();
    c.bench_function("route+request_info/mix (per request)", |b| {
        let mut i = 0;
        b.iter(|| {
            let (method, path, query) = MIX[i % MIX.len()];
            i += 1;
            let route = router.route(path, query).unwrap();
            let info = RequestInfo::parse(method, &route.rest, route.query).unwrap();
            std::hint::black_box((route.target, info.is_long_running(), info.verb.len()));
        })
    });
    c.bench_function("route+request_info/list pods", |b| {
        b.iter(|| {
            let route = router
                .route(std::hint::black_box(MIX[0].1), MIX[0].2)
                .unwrap();
            let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
            std::hint::black_box(info.resource);
        })
    });
}

criterion_group!(benches, route_and_request_info);
criterion_main!(benches);
