//! kubegate-authz decision and compile costs (issue 3, item 7).
//!
//! Policies are synthetic but shaped like real clusters: every user has its own ClusterRole
//! of 10 rules, most bindings are RoleBindings spread over namespaces, and every user is in
//! `system:authenticated` plus a team group bound in its namespace.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubegate::api::AccessKeyScope;
use kubegate::authz::{
    Attributes, Chain, CompiledScope, Identity, Policy, Superuser, WriteGate, authorize_scoped,
};
use kubegate::routing::Target;

const RULES_PER_ROLE: usize = 10;
const NAMESPACES: usize = 100;

struct Objects {
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

fn meta(name: String, namespace: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        ..Default::default()
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

/// `bindings` bindings (10% cluster-wide), one 10-rule ClusterRole per binding.
fn objects(bindings: usize) -> Objects {
    let resources = [
        "pods",
        "services",
        "configmaps",
        "deployments",
        "statefulsets",
        "jobs",
        "cronjobs",
        "ingresses",
        "events",
        "secrets",
    ];
    let cluster_roles = (0..bindings)
        .map(|i| ClusterRole {
            metadata: meta(format!("role-{i}"), None),
            rules: Some(
                (0..RULES_PER_ROLE)
                    .map(|r| PolicyRule {
                        verbs: strings(&["get", "list", "watch"]),
                        api_groups: Some(strings(&["", "apps", "batch"])),
                        resources: Some(vec![
                            format!("{}-{i}", resources[r]),
                            resources[r].to_owned(),
                        ]),
                        resource_names: None,
                        non_resource_urls: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        })
        .collect();
    let role_ref = |i: usize| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: format!("role-{i}"),
    };
    let subjects = |i: usize| {
        Some(vec![
            Subject {
                kind: "User".into(),
                name: format!("user-{i}"),
                ..Default::default()
            },
            Subject {
                kind: "Group".into(),
                name: format!("team-{}", i % 37),
                ..Default::default()
            },
            Subject {
                kind: "ServiceAccount".into(),
                name: format!("sa-{i}"),
                namespace: Some(format!("ns-{}", i % NAMESPACES)),
                ..Default::default()
            },
        ])
    };
    let cluster_count = bindings.div_ceil(10);
    let cluster_role_bindings = (0..cluster_count)
        .map(|i| ClusterRoleBinding {
            metadata: meta(format!("crb-{i}"), None),
            role_ref: role_ref(i),
            subjects: subjects(i),
        })
        .collect();
    let role_bindings = (cluster_count..bindings)
        .map(|i| RoleBinding {
            metadata: meta(format!("rb-{i}"), Some(format!("ns-{}", i % NAMESPACES))),
            role_ref: role_ref(i),
            subjects: subjects(i),
        })
        .collect();
    Objects {
        cluster_roles,
        role_bindings,
        cluster_role_bindings,
    }
}

fn compile(o: &Objects) -> Policy {
    Policy::compile(
        &[],
        &o.cluster_roles,
        &o.role_bindings,
        &o.cluster_role_bindings,
    )
    .unwrap()
}

fn decisions(c: &mut Criterion) {
    let scope: AccessKeyScope = serde_json::from_value(serde_json::json!({
        "clusters": [{"cluster": "staging"}],
        "projects": [{"project": "team-a"}],
        "rules": [{"verbs": ["get", "list", "watch"], "cluster": "prod", "namespaces": ["ns-7", "ns-8"]}]
    }))
    .unwrap();
    let scope = CompiledScope::new(Some(&scope));
    let target = Target::Cluster { cluster: "prod" };

    for bindings in [10usize, 1_000] {
        let policy = Arc::new(compile(&objects(bindings)));
        // A namespaced user (its binding is a RoleBinding in ns-7), matching its last rule.
        let user_index = if bindings == 10 { 7 } else { 507 };
        let user = Identity::authenticated(
            format!("user-{user_index}"),
            "",
            vec![format!("team-{}", user_index % 37)],
            Default::default(),
        );
        let a = Attributes::resource(&user, "list", "", "secrets").in_namespace("ns-7");
        assert!(policy.decide(&a).is_allowed());
        let denied = Attributes::resource(&user, "delete", "", "secrets").in_namespace("ns-7");
        assert!(!policy.decide(&denied).is_allowed());
        let chain = Chain::new()
            .with(Superuser)
            .with(WriteGate::new(policy.clone(), true))
            .with(policy.clone());

        let mut group = c.benchmark_group(format!(
            "authz/{bindings} bindings, {} rules",
            bindings * RULES_PER_ROLE
        ));
        group.bench_function("rbac allow", |b| {
            b.iter(|| black_box(policy.decide(black_box(&a))).is_allowed())
        });
        group.bench_function("rbac no-opinion", |b| {
            b.iter(|| black_box(policy.decide(black_box(&denied))).is_allowed())
        });
        group.bench_function("scope + rbac allow", |b| {
            b.iter(|| {
                black_box(authorize_scoped(
                    Some(&scope),
                    black_box(&target),
                    black_box(&a),
                    &*policy,
                ))
                .is_allowed()
            })
        });
        group.bench_function("scope + chain(superuser, write gate, rbac) allow", |b| {
            b.iter(|| {
                black_box(authorize_scoped(
                    Some(&scope),
                    black_box(&target),
                    black_box(&a),
                    &chain,
                ))
                .is_allowed()
            })
        });
        group.finish();
    }
}

fn compile_cost(c: &mut Criterion) {
    let objects = objects(1_000);
    let mut group = c.benchmark_group("authz/compile");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("1,000 bindings, 10,000 rules", |b| {
        b.iter(|| black_box(compile(black_box(&objects))).rule_count())
    });
    group.finish();
}

criterion_group!(benches, decisions, compile_cost);
criterion_main!(benches);
