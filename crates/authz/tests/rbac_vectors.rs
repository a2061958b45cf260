//! spec/vectors/kubernetes.md §V2 (RBAC), one table-driven test per upstream test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kubegate_authz::{Attributes, Decision, Identity, Policy, Verdict};

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..Default::default()
    }
}

/// Upstream `newRule(verbs, groups, resources, urls)`: each argument split on `,` (Go: `""` → `[""]`).
fn new_rule(verbs: &str, groups: &str, resources: &str, urls: &str) -> PolicyRule {
    let split = |s: &str| Some(s.split(',').map(str::to_owned).collect::<Vec<_>>());
    PolicyRule {
        verbs: s_split(verbs),
        api_groups: split(groups),
        resources: split(resources),
        non_resource_urls: split(urls),
        resource_names: None,
    }
}

fn s_split(s: &str) -> Vec<String> {
    s.split(',').map(str::to_owned).collect()
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        verbs: v(verbs),
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        ..Default::default()
    }
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        verbs: v(verbs),
        non_resource_urls: Some(v(urls)),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules),
        ..Default::default()
    }
}

fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.map(Into::into),
        api_group: None,
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

fn crb(name: &str, role: RoleRef, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: role,
        subjects: Some(subjects),
    }
}

fn rb(name: &str, namespace: &str, role: RoleRef, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(namespace)),
        role_ref: role,
        subjects: Some(subjects),
    }
}

/// A policy whose only rule is `rule`, bound cluster-wide to user `u`: `decide` then is `RuleAllows`.
fn rule_allows(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    let policy = Policy::compile(
        &[],
        &[cluster_role("r", vec![rule.clone()])],
        &[],
        &[crb(
            "b",
            role_ref("ClusterRole", "r"),
            vec![subject("User", "u", None)],
        )],
    )
    .unwrap();
    policy.decide(a).is_allowed()
}

#[test]
fn test_rule_matches() {
    let user = Identity::new("u", vec![]);
    struct Case {
        name: &'static str,
        rule: PolicyRule,
        requests: Vec<(&'static str, &'static str, &'static str, &'static str, bool)>,
    }
    let cases = vec![
        Case {
            name: "star verb, exact match other",
            rule: rule(&["*"], &["group1"], &["resource1"]),
            requests: vec![
                ("verb1", "group1", "resource1", "", true),
                ("verb1", "group2", "resource1", "", false),
                ("verb1", "group1", "resource2", "", false),
                ("verb1", "group2", "resource2", "", false),
                ("verb2", "group1", "resource1", "", true),
                ("verb2", "group2", "resource1", "", false),
                ("verb2", "group1", "resource2", "", false),
                ("verb2", "group2", "resource2", "", false),
            ],
        },
        Case {
            name: "star group, exact match other",
            rule: rule(&["verb1"], &["*"], &["resource1"]),
            requests: vec![
                ("verb1", "group1", "resource1", "", true),
                ("verb1", "group2", "resource1", "", true),
                ("verb1", "group1", "resource2", "", false),
                ("verb1", "group2", "resource2", "", false),
                ("verb2", "group1", "resource1", "", false),
                ("verb2", "group2", "resource1", "", false),
                ("verb2", "group1", "resource2", "", false),
                ("verb2", "group2", "resource2", "", false),
            ],
        },
        Case {
            name: "star resource, exact match other",
            rule: rule(&["verb1"], &["group1"], &["*"]),
            requests: vec![
                ("verb1", "group1", "resource1", "", true),
                ("verb1", "group2", "resource1", "", false),
                ("verb1", "group1", "resource2", "", true),
                ("verb1", "group2", "resource2", "", false),
                ("verb2", "group1", "resource1", "", false),
                ("verb2", "group2", "resource1", "", false),
                ("verb2", "group1", "resource2", "", false),
                ("verb2", "group2", "resource2", "", false),
            ],
        },
        Case {
            name: "tuple expansion",
            rule: rule(
                &["verb1", "verb2"],
                &["group1", "group2"],
                &["resource1", "resource2"],
            ),
            requests: vec![
                ("verb1", "group1", "resource1", "", true),
                ("verb1", "group2", "resource1", "", true),
                ("verb1", "group1", "resource2", "", true),
                ("verb1", "group2", "resource2", "", true),
                ("verb2", "group1", "resource1", "", true),
                ("verb2", "group2", "resource1", "", true),
                ("verb2", "group1", "resource2", "", true),
                ("verb2", "group2", "resource2", "", true),
            ],
        },
        Case {
            name: "subresource expansion",
            rule: rule(&["*"], &["*"], &["resource1/subresource1"]),
            requests: vec![
                ("verb1", "group1", "resource1", "subresource1", true),
                ("verb1", "group2", "resource1", "subresource2", false),
                ("verb1", "group1", "resource2", "subresource1", false),
                ("verb1", "group2", "resource2", "subresource1", false),
                ("verb2", "group1", "resource1", "subresource1", true),
                ("verb2", "group2", "resource1", "subresource2", false),
                ("verb2", "group1", "resource2", "subresource1", false),
                ("verb2", "group2", "resource2", "subresource1", false),
            ],
        },
    ];
    for case in &cases {
        for (verb, group, resource, subresource, expected) in &case.requests {
            let a = Attributes::resource(&user, verb, group, resource).on_subresource(subresource);
            assert_eq!(
                rule_allows(&case.rule, &a),
                *expected,
                "{}: {verb} {group} {resource}/{subresource}",
                case.name
            );
        }
    }

    let paths = [
        "/foo",
        "/foo/bar",
        "/foo/baz",
        "/foo/bar/one",
        "/foo/baz/one",
    ];
    let not_paths = [
        "/notfoo",
        "/notfoo/bar",
        "/notfoo/baz",
        "/notfoo/bar/one",
        "/notfoo/baz/one",
    ];
    let mut url_cases: Vec<(&str, PolicyRule, &str, &str, bool)> = Vec::new();
    for path in paths {
        url_cases.push((
            "star nonresource, exact match other",
            url_rule(&["verb1"], &["*"]),
            "verb1",
            path,
            true,
        ));
        url_cases.push((
            "star nonresource, exact match other",
            url_rule(&["verb1"], &["*"]),
            "verb2",
            path,
            false,
        ));
    }
    for (path, expected) in [
        ("/foo", false),
        ("/foo/bar", true),
        ("/foo/baz", true),
        ("/foo/bar/one", true),
        ("/foo/baz/one", true),
    ] {
        url_cases.push((
            "star nonresource subpath",
            url_rule(&["verb1"], &["/foo/*"]),
            "verb1",
            path,
            expected,
        ));
    }
    for path in not_paths {
        url_cases.push((
            "star nonresource subpath",
            url_rule(&["verb1"], &["/foo/*"]),
            "verb1",
            path,
            false,
        ));
    }
    for verb in ["verb1", "verb2"] {
        for (path, expected) in [
            ("/foo", true),
            ("/foo/bar", false),
            ("/foo/baz", false),
            ("/foo/bar/one", true),
            ("/foo/baz/one", false),
        ] {
            url_cases.push((
                "star verb, exact nonresource",
                url_rule(&["*"], &["/foo", "/foo/bar/one"]),
                verb,
                path,
                expected,
            ));
        }
    }
    for (name, rule, verb, path, expected) in &url_cases {
        let a = Attributes::non_resource(&user, verb, path);
        assert_eq!(rule_allows(rule, &a), *expected, "{name}: {verb} {path}");
    }
}

fn groups(spec: &str) -> Vec<String> {
    // Upstream `defaultAttributes` splits its groups string on ",": "" → [""].
    spec.split(',').map(str::to_owned).collect()
}

#[test]
fn test_authorizer() {
    // Case 0
    let policy = Policy::compile(
        &[],
        &[cluster_role("admin", vec![new_rule("*", "*", "*", "*")])],
        &[rb(
            "admin",
            "ns1",
            role_ref("ClusterRole", "admin"),
            vec![
                subject("User", "admin", None),
                subject("Group", "admins", None),
            ],
        )],
        &[],
    )
    .unwrap();
    for (user, group_spec, verb, resource, ns, expected) in [
        ("admin", "", "get", "Pods", "ns1", true),
        ("admin", "", "watch", "Pods", "ns1", true),
        ("admin", "group1", "watch", "Foobar", "ns1", true),
        ("joe", "admins", "watch", "Foobar", "ns1", true),
        ("joe", "group1,admins", "watch", "Foobar", "ns1", true),
        ("admin", "", "GET", "Pods", "ns2", false),
        ("admin", "", "GET", "Nodes", "", false),
        ("admin", "admins", "GET", "Pods", "ns2", false),
        ("admin", "admins", "GET", "Nodes", "", false),
    ] {
        let identity = Identity::new(user, groups(group_spec));
        let a = Attributes::resource(&identity, verb, "", resource).in_namespace(ns);
        assert_eq!(
            policy.decide(&a).is_allowed(),
            expected,
            "case 0: {user} {group_spec} {verb} {resource} {ns}"
        );
    }

    // Case 1: non-resource URLs
    let policy = Policy::compile(
        &[],
        &[
            cluster_role(
                "non-resource-url-getter",
                vec![new_rule("get", "", "", "/apis")],
            ),
            cluster_role("non-resource-url", vec![new_rule("*", "", "", "/apis")]),
            cluster_role(
                "non-resource-url-prefix",
                vec![new_rule("get", "", "", "/apis/*")],
            ),
        ],
        &[],
        &[
            crb(
                "non-resource-url-getter",
                role_ref("ClusterRole", "non-resource-url-getter"),
                vec![subject("User", "foo", None), subject("Group", "bar", None)],
            ),
            crb(
                "non-resource-url",
                role_ref("ClusterRole", "non-resource-url"),
                vec![
                    subject("User", "admin", None),
                    subject("Group", "admin", None),
                ],
            ),
            crb(
                "non-resource-url-prefix",
                role_ref("ClusterRole", "non-resource-url-prefix"),
                vec![
                    subject("User", "prefixed", None),
                    subject("Group", "prefixed", None),
                ],
            ),
        ],
    )
    .unwrap();
    for (user, group, verb, path, expected) in [
        ("foo", None, "get", "/apis", true),
        ("", Some("bar"), "get", "/apis", true),
        ("admin", None, "get", "/apis", true),
        ("", Some("admin"), "get", "/apis", true),
        ("admin", None, "watch", "/apis", true),
        ("", Some("admin"), "watch", "/apis", true),
        ("prefixed", None, "get", "/apis/v1", true),
        ("", Some("prefixed"), "get", "/apis/v1", true),
        ("prefixed", None, "get", "/apis/v1/foobar", true),
        ("", Some("prefixed"), "get", "/apis/v1/foorbar", true),
        ("foo", None, "watch", "/apis", false),
        ("", Some("bar"), "watch", "/apis", false),
        ("foo", None, "get", "/api/v1", false),
        ("", Some("bar"), "get", "/api/v1", false),
        ("admin", None, "get", "/api/v1", false),
        ("", Some("admin"), "get", "/api/v1", false),
        ("prefixed", None, "get", "/api/v1", false),
        ("", Some("prefixed"), "get", "/api/v1", false),
    ] {
        let identity = Identity::new(user, group.map(|g| vec![g.to_owned()]).unwrap_or_default());
        let a = Attributes::non_resource(&identity, verb, path);
        assert_eq!(
            policy.decide(&a).is_allowed(),
            expected,
            "case 1: {user} {group:?} {verb} {path}"
        );
    }

    // Case 2: `pods` does not cover `pods/status`
    let binding = || {
        vec![rb(
            "admin",
            "ns1",
            role_ref("ClusterRole", "admin"),
            vec![
                subject("User", "admin", None),
                subject("Group", "admins", None),
            ],
        )]
    };
    let policy = Policy::compile(
        &[],
        &[cluster_role("admin", vec![new_rule("*", "*", "pods", "*")])],
        &binding(),
        &[],
    )
    .unwrap();
    let admin = Identity::new("admin", groups(""));
    for (resource, sub, expected) in [("pods", "", true), ("pods", "status", false)] {
        let a = Attributes::resource(&admin, "get", "", resource)
            .on_subresource(sub)
            .in_namespace("ns1");
        assert_eq!(
            policy.decide(&a).is_allowed(),
            expected,
            "case 2: {resource}/{sub}"
        );
    }

    // Case 3: `pods/status` and `*/scale`
    let policy = Policy::compile(
        &[],
        &[cluster_role(
            "admin",
            vec![
                new_rule("*", "*", "pods/status", "*"),
                new_rule("*", "*", "*/scale", "*"),
            ],
        )],
        &binding(),
        &[],
    )
    .unwrap();
    for (resource, sub, expected) in [
        ("pods", "status", true),
        ("pods", "scale", true),
        ("deployments", "scale", true),
        ("anything", "scale", true),
        ("pods", "", false),
    ] {
        let a = Attributes::resource(&admin, "get", "", resource)
            .on_subresource(sub)
            .in_namespace("ns1");
        assert_eq!(
            policy.decide(&a).is_allowed(),
            expected,
            "case 3: {resource}/{sub}"
        );
    }
}

fn describe(s: &Subject, ns: &str) -> String {
    if s.kind == "ServiceAccount" {
        format!(
            "{} \"{}/{}\"",
            s.kind,
            s.name,
            s.namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(ns)
        )
    } else {
        format!("{} \"{}\"", s.kind, s.name)
    }
}

#[test]
fn test_applies_to() {
    // (name, subjects, user, groups, namespace, applies, index)
    type Case = (
        &'static str,
        Vec<Subject>,
        &'static str,
        Vec<&'static str>,
        &'static str,
        bool,
        usize,
    );
    let cases: Vec<Case> = vec![
        (
            "single subject that matches username",
            vec![subject("User", "foobar", None)],
            "foobar",
            vec![],
            "",
            true,
            0,
        ),
        (
            "multiple subjects, one that matches username",
            vec![
                subject("User", "barfoo", None),
                subject("User", "foobar", None),
            ],
            "foobar",
            vec![],
            "",
            true,
            1,
        ),
        (
            "multiple subjects, none that match username",
            vec![
                subject("User", "barfoo", None),
                subject("User", "foobar", None),
            ],
            "zimzam",
            vec![],
            "",
            false,
            0,
        ),
        (
            "multiple subjects, one that matches group",
            vec![
                subject("User", "barfoo", None),
                subject("Group", "foobar", None),
            ],
            "zimzam",
            vec!["foobar"],
            "",
            true,
            1,
        ),
        (
            "multiple subjects, one that matches group, should ignore namespace",
            vec![
                subject("User", "barfoo", None),
                subject("Group", "foobar", None),
            ],
            "zimzam",
            vec!["foobar"],
            "namespace1",
            true,
            1,
        ),
        (
            "multiple subjects, one that matches group, one that matches service account",
            vec![
                subject("User", "barfoo", None),
                subject("Group", "foobar", None),
                subject("ServiceAccount", "default", Some("kube-system")),
            ],
            "system:serviceaccount:kube-system:default",
            vec![],
            "default",
            true,
            2,
        ),
        (
            "user-star",
            vec![subject("User", "*", None)],
            "foobar",
            vec![],
            "default",
            false,
            0,
        ),
        (
            "user-star-groups",
            vec![
                subject("Group", "system:authenticated", None),
                subject("Group", "system:unauthenticated", None),
            ],
            "foobar",
            vec!["system:authenticated"],
            "default",
            true,
            0,
        ),
        (
            "user-star-groups (anonymous)",
            vec![
                subject("Group", "system:authenticated", None),
                subject("Group", "system:unauthenticated", None),
            ],
            "system:anonymous",
            vec!["system:unauthenticated"],
            "default",
            true,
            1,
        ),
    ];
    for (name, subjects, user, user_groups, ns, applies, index) in cases {
        let role = role_ref("ClusterRole", "all");
        let roles = [cluster_role("all", vec![new_rule("*", "*", "*", "*")])];
        let (policy, expected_reason) = if ns.is_empty() {
            let reason = format!(
                "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"all\" to {}",
                describe(&subjects[index], "")
            );
            (
                Policy::compile(&[], &roles, &[], &[crb("b", role, subjects.clone())]).unwrap(),
                reason,
            )
        } else {
            let reason = format!(
                "RBAC: allowed by RoleBinding \"b/{ns}\" of ClusterRole \"all\" to {}",
                describe(&subjects[index], ns)
            );
            (
                Policy::compile(&[], &roles, &[rb("b", ns, role, subjects.clone())], &[]).unwrap(),
                reason,
            )
        };
        let identity = Identity::new(user, user_groups.iter().map(|g| (*g).to_owned()).collect());
        let a = Attributes::resource(&identity, "get", "", "pods").in_namespace(ns);
        let decision = policy.decide(&a);
        assert_eq!(decision.is_allowed(), applies, "{name}");
        if applies {
            assert_eq!(decision.reason, expected_reason, "{name}");
        } else {
            assert_eq!(decision, Decision::no_opinion(""), "{name}");
        }
    }
}

#[test]
fn test_default_rule_resolver() {
    let rule_read_pods = rule(&["GET", "WATCH"], &["v1"], &["pods"]);
    let rule_read_services = rule(&["GET", "WATCH"], &["v1"], &["services"]);
    let rule_admin = rule(&["*"], &["*"], &["*"]);
    let rule_write_nodes = rule(&["PUT", "CREATE", "UPDATE"], &["v1"], &["nodes"]);
    let policy = Policy::compile(
        &[Role {
            metadata: meta("readthings", Some("namespace1")),
            rules: Some(vec![rule_read_pods.clone(), rule_read_services.clone()]),
        }],
        &[
            cluster_role("cluster-admin", vec![rule_admin.clone()]),
            cluster_role("write-nodes", vec![rule_write_nodes]),
        ],
        &[rb(
            "readthings",
            "namespace1",
            role_ref("Role", "readthings"),
            vec![
                subject("User", "foobar", None),
                subject("Group", "group1", None),
            ],
        )],
        &[crb(
            "cluster-admins",
            role_ref("ClusterRole", "cluster-admin"),
            vec![
                subject("User", "admin", None),
                subject("Group", "admin", None),
            ],
        )],
    )
    .unwrap();
    for (user, user_groups, ns, expected) in [
        (
            "foobar",
            vec![],
            "namespace1",
            vec![rule_read_pods, rule_read_services],
        ),
        ("foobar", vec![], "namespace2", vec![]),
        ("foobar", vec!["admin"], "", vec![rule_admin]),
        ("", vec![], "", vec![]),
    ] {
        let identity = Identity::new(
            user,
            user_groups.iter().map(|g: &&str| (*g).to_owned()).collect(),
        );
        let (rules, errors) = policy.rules_for(&identity, ns);
        assert!(errors.is_empty());
        let as_set = |r: &[PolicyRule]| {
            let mut v: Vec<String> = r.iter().map(|x| format!("{x:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(
            as_set(&rules),
            as_set(&expected),
            "{user} {user_groups:?} {ns}"
        );
    }
}

#[test]
fn reasons_and_errors_match_kube_apiserver() {
    let policy = Policy::compile(
        &[Role {
            metadata: meta("pod-reader", Some("dev")),
            rules: Some(vec![rule(&["get"], &[""], &["pods"])]),
        }],
        &[cluster_role(
            "view",
            vec![rule(&["get", "list"], &["*"], &["*"])],
        )],
        &[
            rb(
                "missing-role",
                "dev",
                role_ref("Role", "nope"),
                vec![subject("User", "jane", None)],
            ),
            rb(
                "missing-cr",
                "dev",
                role_ref("ClusterRole", "gone"),
                vec![subject("Group", "devs", None)],
            ),
            rb(
                "weird",
                "dev",
                role_ref("Widget", "w"),
                vec![subject("User", "jane", None)],
            ),
            rb(
                "readers",
                "dev",
                role_ref("Role", "pod-reader"),
                vec![subject("ServiceAccount", "builder", None)],
            ),
        ],
        &[
            crb(
                "role-in-crb",
                role_ref("Role", "pod-reader"),
                vec![subject("User", "jane", None)],
            ),
            crb(
                "viewers",
                role_ref("ClusterRole", "view"),
                vec![subject("Group", "viewers", None)],
            ),
        ],
    )
    .unwrap();

    // Errors in visit order (cluster bindings first), duplicates dropped, `[a, b]` for several.
    let jane = Identity::new("jane", vec!["devs".into()]);
    let a = Attributes::resource(&jane, "delete", "", "pods").in_namespace("dev");
    assert_eq!(
        policy.decide(&a),
        Decision::no_opinion(
            "RBAC: [role.rbac.authorization.k8s.io \"pod-reader\" not found, role.rbac.authorization.k8s.io \"nope\" not found, clusterrole.rbac.authorization.k8s.io \"gone\" not found, unsupported role reference kind: \"Widget\"]"
        )
    );
    // Outside the namespace only the cluster binding's error applies: a single error, no brackets.
    let a = Attributes::resource(&jane, "get", "", "pods").in_namespace("prod");
    assert_eq!(
        policy.decide(&a).reason,
        "RBAC: role.rbac.authorization.k8s.io \"pod-reader\" not found"
    );
    // Someone no binding applies to: empty reason.
    let nobody = Identity::new("nobody", vec![]);
    assert_eq!(
        policy.decide(&Attributes::resource(&nobody, "get", "", "pods")),
        Decision::no_opinion("")
    );

    // A service account subject with no namespace takes the RoleBinding's.
    let sa = Identity::service_account("dev", "builder");
    let a = Attributes::resource(&sa, "get", "", "pods")
        .in_namespace("dev")
        .named("p1");
    let d = policy.decide(&a);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        d.reason,
        "RBAC: allowed by RoleBinding \"readers/dev\" of Role \"pod-reader\" to ServiceAccount \"builder/dev\""
    );

    let viewer = Identity::new("v", vec!["viewers".into()]);
    let a = Attributes::resource(&viewer, "list", "apps", "deployments");
    assert_eq!(
        policy.decide(&a).reason,
        "RBAC: allowed by ClusterRoleBinding \"viewers\" of ClusterRole \"view\" to Group \"viewers\""
    );
}

#[test]
fn service_account_subject_without_namespace_in_cluster_binding_matches_nobody() {
    let policy = Policy::compile(
        &[],
        &[cluster_role("all", vec![rule(&["*"], &["*"], &["*"])])],
        &[],
        &[crb(
            "b",
            role_ref("ClusterRole", "all"),
            vec![subject("ServiceAccount", "default", None)],
        )],
    )
    .unwrap();
    let sa = Identity::service_account("default", "default");
    assert!(
        !policy
            .decide(&Attributes::resource(&sa, "get", "", "pods"))
            .is_allowed()
    );
}

#[test]
fn resource_names_only_match_named_requests() {
    let mut r = rule(&["get", "list"], &[""], &["configmaps"]);
    r.resource_names = Some(vec!["cfg".into()]);
    let user = Identity::new("u", vec![]);
    assert!(rule_allows(
        &r,
        &Attributes::resource(&user, "get", "", "configmaps").named("cfg")
    ));
    assert!(!rule_allows(
        &r,
        &Attributes::resource(&user, "get", "", "configmaps").named("other")
    ));
    assert!(!rule_allows(
        &r,
        &Attributes::resource(&user, "list", "", "configmaps")
    ));
    // A list narrowed by a metadata.name field selector carries the name (RequestInfo step 10).
    assert!(rule_allows(
        &r,
        &Attributes::resource(&user, "list", "", "configmaps").named("cfg")
    ));
}

#[test]
fn first_allowing_binding_and_first_matching_subject_are_reported() {
    let policy = Policy::compile(
        &[],
        &[
            cluster_role("none", vec![]),
            cluster_role("all", vec![rule(&["*"], &["*"], &["*"])]),
        ],
        &[],
        &[
            crb(
                "a-first-but-empty",
                role_ref("ClusterRole", "none"),
                vec![subject("User", "u", None)],
            ),
            crb(
                "b",
                role_ref("ClusterRole", "all"),
                vec![subject("User", "u", None), subject("Group", "g", None)],
            ),
            crb(
                "c",
                role_ref("ClusterRole", "all"),
                vec![subject("User", "u", None)],
            ),
        ],
    )
    .unwrap();
    let user = Identity::new("u", vec!["g".into(), "g".into()]);
    let d = policy.decide(&Attributes::resource(&user, "get", "", "pods"));
    assert_eq!(
        d.reason,
        "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"all\" to User \"u\""
    );
    let group_only = Identity::new("x", vec!["g".into()]);
    let d = policy.decide(&Attributes::resource(&group_only, "get", "", "pods"));
    assert_eq!(
        d.reason,
        "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"all\" to Group \"g\""
    );
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[test]
fn aggregation_rule_is_resolved_at_compile_time() {
    let aggregated = |name: &str, selectors: Vec<LabelSelector>| ClusterRole {
        metadata: meta(name, None),
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(selectors),
        }),
        rules: Some(vec![rule(&["stale"], &["*"], &["*"])]),
    };
    let labelled = |name: &str, l: &[(&str, &str)], r: PolicyRule| ClusterRole {
        metadata: ObjectMeta {
            labels: labels(l),
            ..meta(name, None)
        },
        rules: Some(vec![r]),
        ..Default::default()
    };
    let select = |k: &str, v: &str| LabelSelector {
        match_labels: labels(&[(k, v)]),
        match_expressions: None,
    };
    let policy = Policy::compile(
        &[],
        &[
            aggregated(
                "monitoring",
                vec![select("rbac.example.com/aggregate-to-monitoring", "true")],
            ),
            labelled(
                "read-pods",
                &[("rbac.example.com/aggregate-to-monitoring", "true")],
                rule(&["get"], &[""], &["pods"]),
            ),
            labelled(
                "read-nodes",
                &[
                    ("rbac.example.com/aggregate-to-monitoring", "true"),
                    ("tier", "x"),
                ],
                rule(&["get"], &[""], &["nodes"]),
            ),
            labelled(
                "unrelated",
                &[("other", "true")],
                rule(&["get"], &[""], &["secrets"]),
            ),
            // An aggregated role selected by another aggregated role (nested aggregation).
            ClusterRole {
                metadata: ObjectMeta {
                    labels: labels(&[("outer", "true")]),
                    ..meta("middle", None)
                },
                aggregation_rule: Some(AggregationRule {
                    cluster_role_selectors: Some(vec![LabelSelector {
                        match_labels: None,
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "tier".into(),
                            operator: "In".into(),
                            values: Some(vec!["x".into()]),
                        }]),
                    }]),
                }),
                rules: None,
            },
            aggregated("outer", vec![select("outer", "true")]),
        ],
        &[],
        &[
            crb(
                "m",
                role_ref("ClusterRole", "monitoring"),
                vec![subject("User", "m", None)],
            ),
            crb(
                "o",
                role_ref("ClusterRole", "outer"),
                vec![subject("User", "o", None)],
            ),
        ],
    )
    .unwrap();
    let m = Identity::new("m", vec![]);
    assert!(
        policy
            .decide(&Attributes::resource(&m, "get", "", "pods"))
            .is_allowed()
    );
    assert!(
        policy
            .decide(&Attributes::resource(&m, "get", "", "nodes"))
            .is_allowed()
    );
    assert!(
        !policy
            .decide(&Attributes::resource(&m, "get", "", "secrets"))
            .is_allowed()
    );
    // The aggregated role's own (stale) rules are replaced, as the controller does.
    assert!(
        !policy
            .decide(&Attributes::resource(&m, "stale", "", "pods"))
            .is_allowed()
    );
    let o = Identity::new("o", vec![]);
    assert!(
        policy
            .decide(&Attributes::resource(&o, "get", "", "nodes"))
            .is_allowed()
    );
    assert!(
        !policy
            .decide(&Attributes::resource(&o, "get", "", "pods"))
            .is_allowed()
    );
}

#[test]
fn bad_input_gives_typed_errors() {
    let nameless = ClusterRole::default();
    assert!(matches!(
        Policy::compile(&[], &[nameless], &[], &[]),
        Err(kubegate_authz::Error::MissingField {
            kind: "ClusterRole",
            ..
        })
    ));
    let no_ns = Role {
        metadata: meta("r", None),
        rules: None,
    };
    assert!(matches!(
        Policy::compile(&[no_ns], &[], &[], &[]),
        Err(kubegate_authz::Error::MissingField {
            kind: "Role",
            field: "metadata.namespace"
        })
    ));
    let dup = cluster_role("x", vec![]);
    assert!(matches!(
        Policy::compile(&[], &[dup.clone(), dup], &[], &[]),
        Err(kubegate_authz::Error::Duplicate {
            kind: "ClusterRole",
            ..
        })
    ));
    assert!(matches!(
        Policy::compile(&[], &[cluster_role("kubegate:admin", vec![])], &[], &[]),
        Err(kubegate_authz::Error::ReservedName { .. })
    ));
    let bad_selector = ClusterRole {
        metadata: meta("agg", None),
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "Near".into(),
                    values: None,
                }]),
            }]),
        }),
        rules: None,
    };
    let err = Policy::compile(
        &[],
        &[bad_selector, cluster_role("other", vec![])],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(err, kubegate_authz::Error::InvalidSelector { .. }),
        "{err}"
    );
}

/// kubernetes-edges §2.2: the `RuleAllows` quirks the spec states, each as a concrete request
/// against a one-rule policy.
#[test]
fn rule_allows_edges() {
    let user = Identity::new("u", vec![]);
    let res = |verb: &'static str,
               group: &'static str,
               resource: &'static str,
               sub: &'static str| { (verb, group, resource, sub) };
    #[rustfmt::skip]
    let resource_cases = [
        // rule (verbs, groups, resources), request (verb, group, resource, subresource), allowed
        ((&["get"][..], &[""][..], &["pods/*"][..]), res("get", "", "pods", "status"), false), // not a wildcard
        ((&["get"], &[""], &["pods/*"]), res("get", "", "pods", "*"), true),                     // a subresource named `*`
        ((&["get"], &[""], &["*/*"]), res("get", "", "pods", "status"), false),                   // not special
        ((&["get"], &[""], &["pods"]), res("get", "", "pods", "status"), false),                  // no subresources
        ((&["get"], &[""], &["*"]), res("get", "", "pods", "status"), true),                      // everything
        ((&["get"], &["*"], &["*/status"]), res("get", "apps", "deployments", "status"), true),
        ((&["get"], &[""], &["*/status"]), res("get", "", "pods", ""), false),                    // needs a subresource
        ((&["get"], &[""], &["*/status"]), res("get", "", "pods", "statusx"), false),
        ((&["GET"], &[""], &["pods"]), res("get", "", "pods", ""), false),                        // verbs are case-sensitive
        ((&["*"], &[""], &["pods"]), res("get", "", "pods", ""), true),
        ((&["get"], &[""], &["pods"]), res("get", "apps", "pods", ""), false),                    // "" is core only
        ((&["get"], &["*"], &["pods"]), res("get", "apps", "pods", ""), true),
    ];
    for ((verbs, groups, resources), (verb, group, resource, sub), want) in resource_cases {
        let a = Attributes::resource(&user, verb, group, resource).on_subresource(sub);
        assert_eq!(
            rule_allows(&rule(verbs, groups, resources), &a),
            want,
            "rule {verbs:?} {groups:?} {resources:?}, request {verb} {group}/{resource}/{sub}"
        );
    }
    #[rustfmt::skip]
    let url_cases = [
        ("/apis/*", "get", "/apis/", true),
        ("/apis/*", "get", "/apis/v1/x", true),
        ("/apis/*", "get", "/apis", false),
        ("/apis/**", "get", "/apis/", true),  // every trailing `*` removed
        ("/healthz*", "get", "/healthzfoo", true),
        ("/healthz", "get", "/healthz/", false),
        ("*", "get", "/anything/at/all", true),
        ("/metrics", "get", "/metrics", true),
        ("/metrics", "post", "/metrics", false),
    ];
    for (url, verb, path, want) in url_cases {
        let a = Attributes::non_resource(&user, verb, path);
        assert_eq!(
            rule_allows(&url_rule(&["get"], &[url]), &a),
            want,
            "rule {url}, request {verb} {path}"
        );
    }
}

/// kubernetes-edges §2.3: which subjects apply to which users.
#[test]
fn subject_matching_edges() {
    let all = cluster_role("all", vec![rule(&["*"], &["*"], &["*"])]);
    #[rustfmt::skip]
    let cases = [
        // subject, in a RoleBinding in "dev" (else a ClusterRoleBinding), user, groups, allowed
        (subject("User", "jane", None), false, "jane", &[][..], true),
        (subject("User", "*", None), false, "jane", &[], false),            // `*` is not a wildcard
        (subject("User", "Jane", None), false, "jane", &[], false),         // exact
        (subject("Group", "devs", None), false, "jane", &["devs"][..], true),
        (subject("Group", "Devs", None), false, "jane", &["devs"], false),
        (subject("Group", "*", None), false, "jane", &["devs"], false),
        (subject("ServiceAccount", "sa", Some("dev")), false, "system:serviceaccount:dev:sa", &[], true),
        (subject("ServiceAccount", "sa", None), false, "system:serviceaccount:dev:sa", &[], false), // no namespace in a CRB
        (subject("ServiceAccount", "sa", None), true, "system:serviceaccount:dev:sa", &[], true),   // the binding's namespace
        (subject("ServiceAccount", "sa", Some("prod")), true, "system:serviceaccount:dev:sa", &[], false),
        (subject("Robot", "jane", None), false, "jane", &[], false),          // other kinds never apply
        (subject("Robot", "jane", None), true, "jane", &[], false),
    ];
    for (subject, namespaced, user, groups, want) in cases {
        let what = format!("{subject:?} namespaced={namespaced} user={user} groups={groups:?}");
        let (rbs, crbs) = if namespaced {
            (
                vec![rb(
                    "b",
                    "dev",
                    role_ref("ClusterRole", "all"),
                    vec![subject],
                )],
                vec![],
            )
        } else {
            (
                vec![],
                vec![crb("b", role_ref("ClusterRole", "all"), vec![subject])],
            )
        };
        let policy = Policy::compile(&[], std::slice::from_ref(&all), &rbs, &crbs).unwrap();
        let identity = Identity::new(user, groups.iter().map(|g| (*g).to_owned()).collect());
        let a = Attributes::resource(&identity, "get", "", "pods").in_namespace("dev");
        assert_eq!(policy.decide(&a).is_allowed(), want, "{what}");
    }
}
