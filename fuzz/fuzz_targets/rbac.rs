#![no_main]
//! Arbitrary RBAC objects and requests → `Policy::compile` → decisions, rule listing, tiers,
//! 403 messages and impersonation. Never panics.
//!
//! Input starting with `{` is read as JSON `{"roles":[…],"clusterRoles":[…],"roleBindings":[…],
//! "clusterRoleBindings":[…]}` of k8s-openapi objects; anything else drives a small generator
//! over a fixed vocabulary so the fuzzer reaches deep policy shapes quickly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kubegate_authz::{
    Attributes, Authorizer, Chain, Identity, ImpersonationRequest, Policy, Superuser, forbidden,
    impersonate,
};

const NAMES: [&str; 8] = [
    "a",
    "b",
    "admin",
    "view",
    "kubegate:viewer",
    "kubegate:admin",
    "",
    "*",
];
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "*",
    "impersonate",
    "GET",
];
const GROUPS: [&str; 4] = ["", "apps", "*", "authentication.k8s.io"];
const RESOURCES: [&str; 10] = [
    "pods", "pods/log", "*", "*/scale", "pods/*", "users", "groups", "secrets", "a/b/c", "",
];
const URLS: [&str; 5] = ["/healthz", "/api/*", "*", "/apis", "/x**"];
const KINDS: [&str; 5] = ["User", "Group", "ServiceAccount", "Robot", "Role"];
const NAMESPACES: [&str; 3] = ["", "ns1", "ns2"];
const OPERATORS: [&str; 5] = ["In", "NotIn", "Exists", "DoesNotExist", "Near"];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
    fn some<T>(&mut self, max: u8, mut f: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.byte() % (max + 1);
        (0..n).map(|_| f(self)).collect()
    }
    fn strings(&mut self, items: &[&str], max: u8) -> Vec<String> {
        self.some(max, |b| b.pick(items).to_owned())
    }
    fn maybe_strings(&mut self, items: &[&str], max: u8) -> Option<Vec<String>> {
        if self.byte() % 3 == 0 {
            None
        } else {
            Some(self.strings(items, max))
        }
    }
    fn meta(&mut self, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: (self.byte() % 8 != 0)
                .then(|| format!("{}{}", self.pick(&NAMES), self.byte() % 4)),
            namespace: (namespaced && self.byte() % 8 != 0)
                .then(|| self.pick(&NAMESPACES[1..]).to_owned()),
            labels: (self.byte() % 2 == 0).then(|| {
                BTreeMap::from([(self.pick(&NAMES).to_owned(), self.pick(&NAMES).to_owned())])
            }),
            ..Default::default()
        }
    }
    fn rule(&mut self) -> PolicyRule {
        PolicyRule {
            verbs: self.strings(&VERBS, 3),
            api_groups: self.maybe_strings(&GROUPS, 2),
            resources: self.maybe_strings(&RESOURCES, 3),
            resource_names: self.maybe_strings(&NAMES, 2),
            non_resource_urls: self.maybe_strings(&URLS, 2),
        }
    }
    fn role_ref(&mut self) -> RoleRef {
        RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: self.pick(&["ClusterRole", "Role", "Widget"]).to_owned(),
            name: format!("{}{}", self.pick(&NAMES), self.byte() % 4),
        }
    }
    fn subjects(&mut self) -> Option<Vec<Subject>> {
        Some(self.some(3, |b| Subject {
            kind: b.pick(&KINDS).to_owned(),
            name: b.pick(&NAMES).to_owned(),
            namespace: (b.byte() % 2 == 0).then(|| b.pick(&NAMESPACES).to_owned()),
            api_group: None,
        }))
    }
    fn selector(&mut self) -> LabelSelector {
        LabelSelector {
            match_labels: (self.byte() % 2 == 0).then(|| {
                BTreeMap::from([(self.pick(&NAMES).to_owned(), self.pick(&NAMES).to_owned())])
            }),
            match_expressions: (self.byte() % 2 == 0).then(|| {
                self.some(2, |b| LabelSelectorRequirement {
                    key: b.pick(&NAMES).to_owned(),
                    operator: b.pick(&OPERATORS).to_owned(),
                    values: b.maybe_strings(&NAMES, 2),
                })
            }),
        }
    }
}

#[derive(Default)]
struct Objects {
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let objects = if data.first() == Some(&b'{') {
        let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(data) else {
            return;
        };
        let mut take = |key: &str| {
            map.remove(key)
                .unwrap_or(serde_json::Value::Array(Vec::new()))
        };
        let (Ok(roles), Ok(cluster_roles), Ok(role_bindings), Ok(cluster_role_bindings)) = (
            serde_json::from_value(take("roles")),
            serde_json::from_value(take("clusterRoles")),
            serde_json::from_value(take("roleBindings")),
            serde_json::from_value(take("clusterRoleBindings")),
        ) else {
            return;
        };
        Objects {
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
        }
    } else {
        Objects {
            roles: b.some(4, |b| Role {
                metadata: b.meta(true),
                rules: Some(b.some(3, Bytes::rule)),
            }),
            cluster_roles: b.some(5, |b| ClusterRole {
                metadata: b.meta(false),
                rules: Some(b.some(3, Bytes::rule)),
                aggregation_rule: (b.byte() % 3 == 0).then(|| AggregationRule {
                    cluster_role_selectors: Some(b.some(2, Bytes::selector)),
                }),
            }),
            role_bindings: b.some(5, |b| RoleBinding {
                metadata: b.meta(true),
                role_ref: b.role_ref(),
                subjects: b.subjects(),
            }),
            cluster_role_bindings: b.some(4, |b| ClusterRoleBinding {
                metadata: b.meta(false),
                role_ref: b.role_ref(),
                subjects: b.subjects(),
            }),
        }
    };
    let Ok(policy) = Policy::compile(
        &objects.roles,
        &objects.cluster_roles,
        &objects.role_bindings,
        &objects.cluster_role_bindings,
    ) else {
        return;
    };
    let policy = std::sync::Arc::new(policy);
    let chain = Chain::new().with(Superuser).with(policy.clone());
    for _ in 0..4 {
        let user = Identity::new(b.pick(&NAMES), b.strings(&NAMES, 3));
        let namespace = b.pick(&NAMESPACES);
        let a = if b.byte() % 4 == 0 {
            Attributes::non_resource(
                &user,
                b.pick(&VERBS),
                b.pick(&["/healthz", "/api/v1", "/apis", "/x", ""]),
            )
        } else {
            Attributes::resource(
                &user,
                b.pick(&VERBS),
                b.pick(&GROUPS),
                b.pick(&["pods", "deployments", "a/b", "users", "*"]),
            )
            .on_subresource(b.pick(&["", "log", "scale", "c", "b/c"]))
            .in_namespace(namespace)
            .named(b.pick(&NAMES))
        };
        let decision = policy.decide(&a);
        let _ = chain.authorize(&a);
        let _ = forbidden(&a, &decision.reason).status_json();
        let (rules, _errors) = policy.rules_for(&user, namespace);
        if decision.is_allowed() {
            assert!(!rules.is_empty(), "allowed without any applicable rule");
        }
        let _ = policy.tier_of(&user, namespace);
        let headers: Vec<(&str, &str)> = (0..b.byte() % 4)
            .map(|_| {
                (
                    b.pick(&[
                        "Impersonate-User",
                        "impersonate-group",
                        "Impersonate-Uid",
                        "Impersonate-Extra-Scopes",
                        "Impersonate-Extra-a%2Fb%zz",
                        "Impersonate-Extra-",
                    ]),
                    b.pick(&NAMES),
                )
            })
            .collect();
        let request = ImpersonationRequest::from_headers(headers);
        let _ = impersonate(&user, &request, &*policy);
    }
});
