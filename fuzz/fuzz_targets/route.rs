#![no_main]
//! Arbitrary bytes as a request path (and query): routing never panics, `rest` is a suffix of the
//! decoded path (a bare prefix maps to `/`), and the target's prefix is literally in the input.

use kubegate_routing::{Router, Target, decode_path};
use libfuzzer_sys::fuzz_target;

fn prefix(target: &Target<'_>, agent: bool) -> String {
    match *target {
        Target::Management => "/kubernetes/management".into(),
        Target::Cluster { .. } if agent => "/kubernetes/cluster".into(),
        Target::Cluster { cluster } => format!("/kubernetes/cluster/{cluster}"),
        Target::VirtualCluster { namespace, name, .. } if agent => {
            format!("/kubernetes/virtualcluster/{namespace}/{name}")
        }
        Target::VirtualCluster { cluster, namespace, name } => {
            format!("/kubernetes/virtualcluster/{cluster}/{namespace}/{name}")
        }
        Target::ProjectSpace { project, space } => {
            format!("/kubernetes/project/{project}/space/{space}")
        }
        Target::ProjectVirtualCluster { project, virtual_cluster } => {
            format!("/kubernetes/project/{project}/virtualcluster/{virtual_cluster}")
        }
        Target::Auth => "/auth".into(),
        Target::Oidc => "/oidc".into(),
        Target::Grafana { cluster } => format!("/grafana/{cluster}"),
        Target::Ops(_) => "/".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (path, query) = match input.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (input, None),
    };
    let agent = Router::agent("local").unwrap();
    for (router, is_agent) in [(Router::central(), false), (agent, true)] {
        if let Ok(route) = router.route(path, query) {
            let decoded = decode_path(path).expect("a routed path decodes");
            let prefix = prefix(&route.target, is_agent);
            assert!(route.rest.starts_with('/'));
            assert!(
                decoded.ends_with(&*route.rest) || (route.rest == "/" && decoded == prefix),
                "rest {:?} is not a suffix of {:?}",
                route.rest,
                decoded
            );
            assert!(path.starts_with(&prefix), "{path:?} does not start with {prefix:?}");
            assert_eq!(route.query, query);
        }
    }
});
