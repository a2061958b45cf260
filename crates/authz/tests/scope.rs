//! CompiledScope: kubegate's published scope semantics (spec/loft-api.md §5) and `narrows`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubegate_api::AccessKeyScope;
use kubegate_authz::{
    Attributes, CompiledScope, Decision, NOBODY, Policy, SCOPE_DENIED_REASON, authorize_scoped,
};
use kubegate_routing::{OpsPath, RequestInfo, Target};
use proptest::prelude::*;
use serde_json::json;

fn scope(value: serde_json::Value) -> CompiledScope {
    let scope: AccessKeyScope = serde_json::from_value(value).unwrap();
    CompiledScope::new(Some(&scope))
}

fn get_pods(ns: &'static str) -> Attributes<'static> {
    Attributes::resource(&NOBODY, "list", "", "pods").in_namespace(ns)
}

const PROD: Target<'static> = Target::Cluster { cluster: "prod" };
const DEV: Target<'static> = Target::Cluster { cluster: "dev" };

#[test]
fn absent_and_empty_scopes_are_unrestricted() {
    for s in [
        CompiledScope::new(None),
        scope(json!({})),
        scope(json!({"roles": [], "allowLoftCli": false})),
    ] {
        assert!(!s.is_restrictive());
        assert!(s.admits(&Target::Management, &get_pods("")));
        assert!(s.admits(&Target::Auth, &get_pods("")));
    }
    assert!(!CompiledScope::from_json(b"null").unwrap().is_restrictive());
}

#[test]
fn malformed_json_is_a_typed_error() {
    for bad in [
        &b"{"[..],
        b"{\"clusters\": 3}",
        b"\"scope\"",
        b"{\"rules\":[{\"verbs\":\"get\"}]}",
        // serde would decode an array as a struct: `[]` must not become an unrestricted scope.
        b"[]",
        b"[[]]",
        b"7",
    ] {
        assert!(matches!(
            CompiledScope::from_json(bad),
            Err(kubegate_authz::Error::InvalidScope(_))
        ));
    }
}

#[test]
fn clusters_entries() {
    let s = scope(json!({"clusters": [{"cluster": "prod"}]}));
    assert!(s.admits(&PROD, &get_pods("default")));
    assert!(!s.admits(&DEV, &get_pods("default")));
    assert!(s.admits(
        &Target::VirtualCluster {
            cluster: "prod",
            namespace: "ns",
            name: "vc"
        },
        &get_pods("")
    ));
    assert!(!s.admits(
        &Target::VirtualCluster {
            cluster: "dev",
            namespace: "ns",
            name: "vc"
        },
        &get_pods("")
    ));
    assert!(!s.admits(&Target::Management, &get_pods("")));
    assert!(!s.admits(
        &Target::ProjectSpace {
            project: "p",
            space: "s"
        },
        &get_pods("")
    ));
    let all = scope(json!({"clusters": [{"cluster": "*"}]}));
    assert!(all.admits(&DEV, &get_pods("")));
    assert!(!all.admits(&Target::Grafana { cluster: "dev" }, &get_pods("")));
}

#[test]
fn projects_spaces_and_virtual_clusters_entries() {
    let s = scope(json!({
        "projects": [{"project": "a"}],
        "spaces": [{"project": "b", "space": "s1"}, {"project": "c", "space": "*"}],
        "virtualClusters": [{"project": "b", "virtualCluster": "v1"}, {"project": "d", "virtualCluster": "*"}]
    }));
    let r = get_pods("");
    for (target, expected) in [
        (
            Target::ProjectSpace {
                project: "a",
                space: "x",
            },
            true,
        ),
        (
            Target::ProjectVirtualCluster {
                project: "a",
                virtual_cluster: "x",
            },
            true,
        ),
        (
            Target::ProjectSpace {
                project: "b",
                space: "s1",
            },
            true,
        ),
        (
            Target::ProjectSpace {
                project: "b",
                space: "s2",
            },
            false,
        ),
        (
            Target::ProjectSpace {
                project: "c",
                space: "anything",
            },
            true,
        ),
        (
            Target::ProjectVirtualCluster {
                project: "c",
                virtual_cluster: "v",
            },
            false,
        ),
        (
            Target::ProjectVirtualCluster {
                project: "b",
                virtual_cluster: "v1",
            },
            true,
        ),
        (
            Target::ProjectVirtualCluster {
                project: "b",
                virtual_cluster: "v2",
            },
            false,
        ),
        (
            Target::ProjectVirtualCluster {
                project: "d",
                virtual_cluster: "v9",
            },
            true,
        ),
        (
            Target::ProjectSpace {
                project: "d",
                space: "s",
            },
            false,
        ),
        (Target::Cluster { cluster: "a" }, false),
        (Target::Management, false),
    ] {
        assert_eq!(s.admits(&target, &r), expected, "{target:?}");
    }
    let all = scope(json!({"projects": [{"project": "*"}]}));
    assert!(all.admits(
        &Target::ProjectVirtualCluster {
            project: "z",
            virtual_cluster: "v"
        },
        &r
    ));
    // `project: *` inside a spaces entry is not a wildcard.
    let literal = scope(json!({"spaces": [{"project": "*", "space": "s"}]}));
    assert!(!literal.admits(
        &Target::ProjectSpace {
            project: "p",
            space: "s"
        },
        &r
    ));
}

#[test]
fn rules_entries() {
    let s = scope(json!({"rules": [{
        "verbs": ["get", "list"],
        "resources": [{"group": "", "resources": ["pods", "pods/log", "*/scale"]}, {"group": "apps", "resources": ["deployments"], "resourceNames": ["web"]}],
        "namespaces": ["default", ""],
        "cluster": "prod"
    }]}));
    let user = &NOBODY;
    for (target, a, expected) in [
        (
            PROD,
            Attributes::resource(user, "list", "", "pods").in_namespace("default"),
            true,
        ),
        (
            PROD,
            Attributes::resource(user, "get", "", "pods")
                .on_subresource("log")
                .named("p")
                .in_namespace("default"),
            true,
        ),
        (
            PROD,
            Attributes::resource(user, "get", "", "pods")
                .on_subresource("exec")
                .named("p")
                .in_namespace("default"),
            false,
        ),
        (
            PROD,
            Attributes::resource(user, "get", "", "replicasets")
                .on_subresource("scale")
                .in_namespace(""),
            true,
        ),
        (
            PROD,
            Attributes::resource(user, "delete", "", "pods").in_namespace("default"),
            false,
        ),
        (
            PROD,
            Attributes::resource(user, "list", "", "pods").in_namespace("kube-system"),
            false,
        ),
        (
            PROD,
            Attributes::resource(user, "get", "apps", "deployments")
                .named("web")
                .in_namespace("default"),
            true,
        ),
        (
            PROD,
            Attributes::resource(user, "get", "apps", "deployments")
                .named("api")
                .in_namespace("default"),
            false,
        ),
        (
            PROD,
            Attributes::resource(user, "list", "apps", "deployments").in_namespace("default"),
            false,
        ),
        (
            DEV,
            Attributes::resource(user, "list", "", "pods").in_namespace("default"),
            false,
        ),
        (
            Target::VirtualCluster {
                cluster: "prod",
                namespace: "n",
                name: "v",
            },
            Attributes::resource(user, "list", "", "pods"),
            false,
        ),
        (
            PROD,
            Attributes::non_resource(user, "get", "/healthz"),
            false,
        ),
    ] {
        assert_eq!(s.admits(&target, &a), expected, "{target:?} {a:?}");
    }

    let urls =
        scope(json!({"rules": [{"nonResourceURLs": ["/healthz*", "/version"], "verbs": ["get"]}]}));
    assert!(urls.admits(
        &PROD,
        &Attributes::non_resource(user, "get", "/healthz/etcd")
    ));
    assert!(urls.admits(&DEV, &Attributes::non_resource(user, "get", "/version")));
    assert!(!urls.admits(&DEV, &Attributes::non_resource(user, "get", "/metrics")));
    assert!(!urls.admits(&DEV, &Attributes::resource(user, "get", "", "pods")));
    // Management only when listed.
    assert!(!urls.admits(
        &Target::Management,
        &Attributes::non_resource(user, "get", "/version")
    ));

    let mgmt = scope(json!({"rules": [{"requestTargets": ["Management"]}]}));
    assert!(mgmt.admits(
        &Target::Management,
        &Attributes::resource(user, "delete", "management.loft.sh", "projects")
    ));
    assert!(!mgmt.admits(&PROD, &get_pods("")));

    let legacy =
        scope(json!({"rules": [{"virtualClusters": [{"name": "vc1"}, {"namespace": "team-b"}]}]}));
    for (target, expected) in [
        (
            Target::VirtualCluster {
                cluster: "c",
                namespace: "team-a",
                name: "vc1",
            },
            true,
        ),
        (
            Target::VirtualCluster {
                cluster: "c",
                namespace: "team-b",
                name: "other",
            },
            true,
        ),
        (
            Target::VirtualCluster {
                cluster: "c",
                namespace: "team-a",
                name: "other",
            },
            false,
        ),
        (PROD, false),
    ] {
        assert_eq!(
            legacy.admits(&target, &get_pods("")),
            expected,
            "{target:?}"
        );
    }
    let targets = scope(json!({"rules": [{"requestTargets": ["ProjectSpace", "Nowhere"]}]}));
    assert!(targets.admits(
        &Target::ProjectSpace {
            project: "p",
            space: "s"
        },
        &get_pods("")
    ));
    assert!(!targets.admits(
        &Target::ProjectVirtualCluster {
            project: "p",
            virtual_cluster: "v"
        },
        &get_pods("")
    ));
}

#[test]
fn loft_cli_role() {
    for s in [
        scope(json!({"roles": [{"role": "loft-cli"}]})),
        scope(json!({"allowLoftCli": true})),
    ] {
        let user = &NOBODY;
        let m = "management.loft.sh";
        for (target, a, expected) in [
            (
                Target::Management,
                Attributes::resource(user, "create", m, "selves"),
                true,
            ),
            (
                Target::Management,
                Attributes::resource(user, "list", m, "projects"),
                true,
            ),
            (
                Target::Management,
                Attributes::resource(user, "get", m, "clusters").named("prod"),
                true,
            ),
            (
                Target::Management,
                Attributes::resource(user, "list", m, "virtualclusterinstances")
                    .in_namespace("loft-p-a"),
                true,
            ),
            (
                Target::Management,
                Attributes::resource(user, "get", m, "spaceinstances")
                    .named("s")
                    .in_namespace("loft-p-a"),
                true,
            ),
            (
                Target::Management,
                Attributes::resource(user, "watch", m, "projects"),
                false,
            ),
            (
                Target::Management,
                Attributes::resource(user, "delete", m, "projects").named("p"),
                false,
            ),
            (
                Target::Management,
                Attributes::resource(user, "create", m, "projects"),
                false,
            ),
            (
                Target::Management,
                Attributes::resource(user, "list", m, "users"),
                false,
            ),
            (
                Target::Management,
                Attributes::resource(user, "list", "", "projects"),
                false,
            ),
            (
                Target::Management,
                Attributes::resource(user, "get", m, "projects")
                    .named("p")
                    .on_subresource("members"),
                false,
            ),
            (
                Target::Management,
                Attributes::non_resource(user, "get", "/version"),
                true,
            ),
            (
                Target::Ops(OpsPath::Version),
                Attributes::non_resource(user, "get", "/version"),
                true,
            ),
            (
                Target::Ops(OpsPath::Metrics),
                Attributes::non_resource(user, "get", "/metrics"),
                false,
            ),
            (
                PROD,
                Attributes::resource(user, "list", m, "projects"),
                false,
            ),
        ] {
            assert_eq!(s.admits(&target, &a), expected, "{target:?} {a:?}");
        }
    }
}

#[test]
fn other_roles_admit_nothing() {
    for role in [
        "vcluster",
        "agent",
        "network-peer",
        "runner",
        "workspace",
        "metrics-reader",
        "from-the-future",
    ] {
        let s = scope(json!({"roles": [{"role": role}]}));
        assert!(s.is_restrictive());
        assert!(!s.admits(&PROD, &get_pods("")), "{role}");
        assert!(!s.admits(
            &Target::Management,
            &Attributes::resource(&NOBODY, "create", "management.loft.sh", "selves")
        ));
    }
}

#[test]
fn from_request_info_and_scoped_authorization() {
    let info = RequestInfo::parse("GET", "/api/v1/namespaces/default/pods", None).unwrap();
    let jane = kubegate_authz::Identity::new("jane", vec![]);
    let a = Attributes::from_request_info(&jane, &info);
    assert_eq!(
        (a.verb, a.resource, a.namespace, a.is_resource_request),
        ("list", "pods", "default", true)
    );
    let s = scope(json!({"clusters": [{"cluster": "prod"}]}));
    let policy = Policy::empty();
    assert_eq!(
        authorize_scoped(Some(&s), &DEV, &a, &policy),
        Decision::deny(SCOPE_DENIED_REASON)
    );
    assert_eq!(
        authorize_scoped(Some(&s), &PROD, &a, &policy),
        Decision::no_opinion("")
    );
    assert_eq!(s.decide(&DEV, &a), Decision::deny(SCOPE_DENIED_REASON));
}

#[test]
fn narrows_examples() {
    let parent = scope(json!({
        "projects": [{"project": "a"}],
        "clusters": [{"cluster": "prod"}],
        "rules": [{"verbs": ["get", "list", "watch"], "resources": [{"group": "", "resources": ["*"]}]}],
        "roles": [{"role": "loft-cli"}]
    }));
    for (child, expected) in [
        (json!({"spaces": [{"project": "a", "space": "s"}]}), true),
        (
            json!({"virtualClusters": [{"project": "a", "virtualCluster": "*"}]}),
            true,
        ),
        (
            json!({"projects": [{"project": "a"}], "clusters": [{"cluster": "prod"}]}),
            true,
        ),
        (json!({"allowLoftCli": true}), true),
        (json!({"roles": [{"role": "vcluster"}]}), true),
        (
            json!({"rules": [{"verbs": ["get"], "resources": [{"group": "", "resources": ["pods", "pods/log"]}]}]}),
            true,
        ),
        (json!({"rules": [{"verbs": ["get"]}]}), false),
        (
            json!({"rules": [{"verbs": ["delete"], "resources": [{"group": "", "resources": ["pods"]}]}]}),
            false,
        ),
        (json!({"projects": [{"project": "*"}]}), false),
        (json!({"spaces": [{"project": "b", "space": "s"}]}), false),
        (json!({"clusters": [{"cluster": "*"}]}), false),
        (json!({}), false),
    ] {
        assert_eq!(scope(child.clone()).narrows(&parent), expected, "{child}");
    }
    assert!(scope(json!({})).narrows(&CompiledScope::unrestricted()));
    assert!(parent.narrows(&parent));
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(values)
}

fn small_vec<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(s, 0..3)
}

fn arb_rule() -> impl Strategy<Value = serde_json::Value> {
    (
        small_vec(pick(&["get", "list", "create", "*"])),
        small_vec((
            pick(&["", "apps", "management.loft.sh"]),
            small_vec(pick(&["pods", "pods/log", "*", "*/scale", "deployments", "projects", "selves"])),
            small_vec(pick(&["x", "y"])),
        )),
        small_vec(pick(&["default", "", "other"])),
        small_vec(pick(&["/healthz*", "/version", "*", "/api/*", "/api"])),
        small_vec(pick(&["Management", "Cluster", "VirtualCluster", "ProjectSpace", "ProjectVirtualCluster", "Other"])),
        pick(&["", "a", "b"]),
        small_vec((pick(&["", "v", "w"]), pick(&["", "n"]))),
    )
        .prop_map(|(verbs, resources, namespaces, urls, targets, cluster, vcs)| {
            json!({
                "verbs": verbs,
                "resources": resources.into_iter().map(|(g, r, n)| json!({"group": g, "resources": r, "resourceNames": n})).collect::<Vec<_>>(),
                "namespaces": namespaces,
                "nonResourceURLs": urls,
                "requestTargets": targets,
                "cluster": cluster,
                "virtualClusters": vcs.into_iter().map(|(n, ns)| json!({"name": n, "namespace": ns})).collect::<Vec<_>>(),
            })
        })
}

fn arb_scope() -> impl Strategy<Value = serde_json::Value> {
    (
        small_vec(pick(&["a", "b", "*"])),
        small_vec(pick(&["p", "q", "*"])),
        small_vec((pick(&["p", "q"]), pick(&["s", "t", "*"]))),
        small_vec((pick(&["p", "q"]), pick(&["v", "w", "*"]))),
        proptest::collection::vec(arb_rule(), 0..3),
        small_vec(pick(&["loft-cli", "vcluster", "mystery"])),
        any::<bool>(),
    )
        .prop_map(|(clusters, projects, spaces, vcs, rules, roles, cli)| {
            json!({
                "clusters": clusters.into_iter().map(|c| json!({"cluster": c})).collect::<Vec<_>>(),
                "projects": projects.into_iter().map(|p| json!({"project": p})).collect::<Vec<_>>(),
                "spaces": spaces.into_iter().map(|(p, s)| json!({"project": p, "space": s})).collect::<Vec<_>>(),
                "virtualClusters": vcs.into_iter().map(|(p, v)| json!({"project": p, "virtualCluster": v})).collect::<Vec<_>>(),
                "rules": rules,
                "roles": roles.into_iter().map(|r| json!({"role": r})).collect::<Vec<_>>(),
                "allowLoftCli": cli,
            })
        })
}

#[derive(Clone, Debug)]
struct Request {
    target: Target<'static>,
    resource_request: bool,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    namespace: &'static str,
    name: &'static str,
    path: &'static str,
}

fn arb_request() -> impl Strategy<Value = Request> {
    let targets: &'static [Target<'static>] = &[
        Target::Management,
        Target::Cluster { cluster: "a" },
        Target::Cluster { cluster: "b" },
        Target::Cluster { cluster: "c" },
        Target::VirtualCluster {
            cluster: "a",
            namespace: "n",
            name: "v",
        },
        Target::VirtualCluster {
            cluster: "c",
            namespace: "m",
            name: "w",
        },
        Target::ProjectSpace {
            project: "p",
            space: "s",
        },
        Target::ProjectSpace {
            project: "q",
            space: "t",
        },
        Target::ProjectSpace {
            project: "r",
            space: "s",
        },
        Target::ProjectVirtualCluster {
            project: "p",
            virtual_cluster: "v",
        },
        Target::ProjectVirtualCluster {
            project: "q",
            virtual_cluster: "w",
        },
        Target::Ops(OpsPath::Version),
        Target::Auth,
    ];
    (
        pick(targets),
        any::<bool>(),
        pick(&["get", "list", "create", "delete", "watch"]),
        pick(&["", "apps", "management.loft.sh"]),
        pick(&["pods", "deployments", "projects", "selves", "clusters"]),
        pick(&["", "log", "scale"]),
        pick(&["", "default", "other"]),
        pick(&["", "x"]),
        pick(&["/version", "/healthz", "/healthz/etcd", "/api", "/api/v1"]),
    )
        .prop_map(
            |(
                target,
                resource_request,
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
                path,
            )| Request {
                target,
                resource_request,
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
                path,
            },
        )
}

fn attributes(r: &Request) -> Attributes<'static> {
    if r.resource_request {
        Attributes::resource(&NOBODY, r.verb, r.group, r.resource)
            .on_subresource(r.subresource)
            .in_namespace(r.namespace)
            .named(r.name)
    } else {
        Attributes::non_resource(&NOBODY, r.verb, r.path)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// `child.narrows(parent) && child admits r ⇒ parent admits r`.
    #[test]
    fn narrowing_never_widens(child in arb_scope(), parent in arb_scope(), requests in proptest::collection::vec(arb_request(), 16)) {
        let child = scope(child);
        let parent = scope(parent);
        prop_assert!(child.narrows(&child));
        if child.narrows(&parent) {
            for r in &requests {
                let a = attributes(r);
                if child.admits(&r.target, &a) {
                    prop_assert!(parent.admits(&r.target, &a), "child admits {r:?} but parent does not");
                }
            }
        }
    }

    /// A sub-list of a scope's entries always narrows it (so the property above is not vacuous).
    #[test]
    fn sub_scopes_narrow(parent in arb_scope(), keep in any::<u8>(), extra_rule in arb_rule(), requests in proptest::collection::vec(arb_request(), 16)) {
        let mut child = parent.clone();
        for (bit, field) in ["clusters", "projects", "spaces", "virtualClusters", "rules", "roles"].into_iter().enumerate() {
            if keep & (1 << bit) == 0 {
                child[field] = json!([]);
            }
        }
        child["allowLoftCli"] = json!(false);
        // A parent rule tightened by another rule's constraints still narrows when it is covered.
        if keep & 0x80 != 0 && let Some(first) = parent["rules"].get(0).cloned() {
            let mut tighter = first;
            if tighter["verbs"].as_array().is_some_and(|v| v.is_empty()) {
                tighter["verbs"] = extra_rule["verbs"].clone();
            }
            if tighter["namespaces"].as_array().is_some_and(|v| v.is_empty()) {
                tighter["namespaces"] = extra_rule["namespaces"].clone();
            }
            child["rules"] = json!([tighter]);
        }
        let (child, parent) = (scope(child), scope(parent));
        for r in &requests {
            let a = attributes(r);
            if child.narrows(&parent) && child.admits(&r.target, &a) {
                prop_assert!(parent.admits(&r.target, &a), "child admits {r:?} but parent does not");
            }
        }
        if child.is_restrictive() || !parent.is_restrictive() {
            prop_assert!(child.narrows(&parent));
        } else {
            // Dropping every entry makes the child unrestricted: broader, so never narrowing.
            prop_assert!(!child.narrows(&parent));
        }
    }
}

/// A rule applies to resources, or to non-resource URLs, or to neither, "never both"
/// (spec/loft-api.md §1): one that sets both admits nothing of either kind, while each half
/// alone admits its own kind.
#[test]
fn a_rule_with_resources_and_non_resource_urls_admits_nothing() {
    let both = scope(json!({"rules": [{
        "resources": [{"group": "", "resources": ["pods"]}],
        "nonResourceURLs": ["/healthz*"],
    }]}));
    let resources =
        scope(json!({"rules": [{"resources": [{"group": "", "resources": ["pods"]}]}]}));
    let urls = scope(json!({"rules": [{"nonResourceURLs": ["/healthz*"]}]}));
    let healthz = Attributes::non_resource(&NOBODY, "get", "/healthzfoo");
    #[rustfmt::skip]
    let cases = [
        (&both, get_pods("default"), false),
        (&both, healthz, false),
        (&resources, get_pods("default"), true),
        (&resources, healthz, false),
        (&urls, get_pods("default"), false),
        (&urls, healthz, true),
    ];
    for (i, (s, a, want)) in cases.into_iter().enumerate() {
        assert_eq!(s.admits(&PROD, &a), want, "case {i}");
    }
}
