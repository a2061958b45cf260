#![no_main]
//! Arbitrary bytes → access-key scope JSON → compiled scope → decisions and `narrows`.
//! Never panics; a typed scope round-trips through JSON unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubegate_api::AccessKeyScope;
use kubegate_authz::{Attributes, CompiledScope, Identity};
use kubegate_routing::{RequestInfo, Router};

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Layout: <scope JSON> 0x00 <parent scope JSON> 0x00 <method byte><path>
    let mut parts = data.splitn(3, |b| *b == 0);
    let child_json = parts.next().unwrap_or_default();
    let parent_json = parts.next().unwrap_or_default();
    let request = parts.next().unwrap_or_default();

    if let Ok(scope) = serde_json::from_slice::<AccessKeyScope>(child_json) {
        let encoded = serde_json::to_vec(&scope).unwrap();
        let again: AccessKeyScope = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(again, scope, "scope changed through a JSON round trip");
    }
    let child = CompiledScope::from_json(child_json).unwrap_or_default();
    let parent = CompiledScope::from_json(parent_json).unwrap_or_default();
    let narrows = child.narrows(&parent);
    assert!(child.narrows(&child), "narrows must be reflexive");

    let (method, path) = match request.split_first() {
        Some((m, rest)) => (
            METHODS[usize::from(*m) % METHODS.len()],
            String::from_utf8_lossy(rest),
        ),
        None => ("GET", "/kubernetes/cluster/prod/api/v1/pods".into()),
    };
    let user = Identity::new("fuzz", vec!["system:authenticated".into()]);
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path.into_owned(), None),
    };
    for router in [Router::central(), Router::agent("prod").unwrap()] {
        let Ok(route) = router.route(&path, query.as_deref()) else {
            continue;
        };
        let Ok(info) = RequestInfo::parse(method, &route.rest, route.query) else {
            continue;
        };
        let a = Attributes::from_request_info(&user, &info);
        let child_admits = child.admits(&route.target, &a);
        let parent_admits = parent.admits(&route.target, &a);
        if narrows && child_admits {
            assert!(
                parent_admits,
                "narrowed scope admitted a request its parent refuses"
            );
        }
        let _ = child.decide(&route.target, &a);
    }
});
