//! The allow path allocates nothing: RBAC decision, scope check, chain, attribute building.
//!
//! Runs without the libtest harness (`harness = false` in Cargo.toml): the counter sees every
//! thread, and this one is the only one, so nothing else allocates while a region is measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubegate_api::AccessKeyScope;
use kubegate_authz::{
    Attributes, Authorizer, Chain, CompiledScope, Identity, Policy, Superuser, WriteGate,
    authorize_scoped,
};
use kubegate_routing::{RequestInfo, Router};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..Default::default()
    }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn main() {
    allow_path_allocates_nothing();
}

fn allow_path_allocates_nothing() {
    let rule = |verbs: &[&str], resources: &[&str]| PolicyRule {
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        api_groups: Some(vec![String::new(), "apps".into()]),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        ..Default::default()
    };
    let roles: Vec<ClusterRole> = (0..50)
        .map(|i| ClusterRole {
            metadata: meta(&format!("role-{i}"), None),
            rules: Some(vec![
                rule(&["get"], &["configmaps"]),
                rule(&["get", "list", "watch"], &["pods", "deployments"]),
            ]),
            ..Default::default()
        })
        .collect();
    let role_ref = |name: String| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name,
    };
    let crbs: Vec<ClusterRoleBinding> = (0..50)
        .map(|i| ClusterRoleBinding {
            metadata: meta(&format!("crb-{i}"), None),
            role_ref: role_ref(format!("role-{i}")),
            subjects: Some(vec![
                subject("User", &format!("user-{i}")),
                subject("Group", &format!("group-{i}")),
            ]),
        })
        .collect();
    let rbs: Vec<RoleBinding> = (0..50)
        .map(|i| RoleBinding {
            metadata: meta(&format!("rb-{i}"), Some(&format!("ns-{}", i % 5))),
            role_ref: role_ref(format!("role-{i}")),
            subjects: Some(vec![subject("Group", "devs")]),
        })
        .collect();
    let policy = Arc::new(Policy::compile(&[], &roles, &rbs, &crbs).unwrap());
    let chain = Chain::new()
        .with(Superuser)
        .with(WriteGate::new(policy.clone(), true))
        .with(policy.clone());
    let scope: AccessKeyScope = serde_json::from_value(serde_json::json!({
        "clusters": [{"cluster": "dev"}],
        "rules": [{"verbs": ["get", "list"], "resources": [{"group": "", "resources": ["pods"]}], "cluster": "prod"}]
    }))
    .unwrap();
    let scope = CompiledScope::new(Some(&scope));
    let router = Router::central();
    let by_user = Identity::authenticated(
        "user-42",
        "",
        vec!["x".into(), "y".into()],
        Default::default(),
    );
    let by_ns_group =
        Identity::authenticated("someone", "", vec!["devs".into()], Default::default());

    // Warm up lazily initialised state (none expected, but measure only steady state).
    let path = "/kubernetes/cluster/prod/api/v1/namespaces/ns-3/pods";
    for _ in 0..2 {
        let route = router.route(path, Some("limit=500")).unwrap();
        let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
        let a = Attributes::from_request_info(&by_user, &info);
        assert!(authorize_scoped(Some(&scope), &route.target, &a, &chain).is_allowed());
    }

    let region = Region::new(GLOBAL);
    let mut allowed = 0;
    for _ in 0..1000 {
        let route = router.route(path, Some("limit=500")).unwrap();
        let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
        let a = Attributes::from_request_info(&by_user, &info);
        allowed +=
            usize::from(authorize_scoped(Some(&scope), &route.target, &a, &chain).is_allowed());
        allowed += usize::from(policy.decide(&a).is_allowed());
        let a = Attributes::from_request_info(&by_ns_group, &info);
        allowed += usize::from(chain.authorize(&a).is_allowed());
    }
    let change = region.change();
    assert_eq!(allowed, 3000);
    assert_eq!(change.allocations, 0, "allow path allocated: {change:?}");
    assert_eq!(
        change.reallocations, 0,
        "allow path reallocated: {change:?}"
    );

    // The counter does see allocations (so the zero above means something), e.g. a denial's reason.
    let region = Region::new(GLOBAL);
    let stranger = Identity::new("stranger", vec![]);
    let a = Attributes::resource(&stranger, "create", "", "pods").in_namespace("ns-1");
    assert!(!chain.authorize(&a).is_allowed());
    std::hint::black_box(vec![0u8; 16]);
    assert!(region.change().allocations >= 1);
}
