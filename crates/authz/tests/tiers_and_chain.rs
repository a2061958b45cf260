//! Identity rules (kubernetes-edges §2.3), role tiers, the write gate, and the union chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubegate_authz::{
    Attributes, Authorizer, Chain, Decision, Identity, Policy, READ_ONLY_REASON, Superuser, Tier,
    Verdict, WriteGate, forbidden, split_service_account_username,
};

#[test]
fn authenticated_group_adder() {
    for (name, groups, expected) in [
        ("jane", vec![], vec!["system:authenticated"]),
        ("jane", vec!["devs"], vec!["devs", "system:authenticated"]),
        (
            "jane",
            vec!["system:authenticated"],
            vec!["system:authenticated"],
        ),
        (
            "jane",
            vec!["system:unauthenticated"],
            vec!["system:unauthenticated"],
        ),
        (
            "system:anonymous",
            vec!["system:unauthenticated"],
            vec!["system:unauthenticated"],
        ),
        ("system:anonymous", vec![], vec![]),
    ] {
        let identity = Identity::authenticated(
            name,
            "",
            groups.iter().map(|g| (*g).to_owned()).collect(),
            BTreeMap::new(),
        );
        assert_eq!(identity.groups, expected, "{name} {groups:?}");
    }
    let anonymous = Identity::anonymous();
    assert_eq!(
        (anonymous.name.as_str(), anonymous.groups.as_slice()),
        (
            "system:anonymous",
            &["system:unauthenticated".to_owned()][..]
        )
    );
    let sa = Identity::service_account("kube-system", "default");
    assert_eq!(sa.name, "system:serviceaccount:kube-system:default");
    assert_eq!(
        sa.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated"
        ]
    );
    assert_eq!(
        split_service_account_username("system:serviceaccount:ns:name"),
        Some(("ns", "name"))
    );
    for bad in [
        "system:serviceaccount:ns",
        "system:serviceaccount::n",
        "system:serviceaccount:Ns:n",
        "system:serviceaccount:ns:a:b",
        "jane",
    ] {
        assert_eq!(split_service_account_username(bad), None, "{bad}");
    }
}

fn binding_to(tier: Tier, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{subject}-{}", tier.cluster_role_name())),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: tier.cluster_role_name().into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: subject.into(),
            ..Default::default()
        }]),
    }
}

fn tier_policy() -> Policy {
    let ns_admin = RoleBinding {
        metadata: ObjectMeta {
            name: Some("team-admin".into()),
            namespace: Some("team".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "kubegate:admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "lead".into(),
            ..Default::default()
        }]),
    };
    Policy::compile(
        &[],
        &[],
        &[ns_admin],
        &[
            binding_to(Tier::Viewer, "vera"),
            binding_to(Tier::Operator, "otto"),
            binding_to(Tier::Admin, "ada"),
            binding_to(Tier::Viewer, "lead"),
        ],
    )
    .unwrap()
}

#[test]
fn role_tiers() {
    let policy = tier_policy();
    let vera = Identity::new("vera", vec![]);
    let otto = Identity::new("otto", vec![]);
    let ada = Identity::new("ada", vec![]);
    let allowed = |who: &Identity, verb: &str, group: &str, resource: &str, sub: &str| {
        let a = Attributes::resource(who, verb, group, resource)
            .on_subresource(sub)
            .in_namespace("default");
        policy.decide(&a).is_allowed()
    };
    for (verb, group, resource, sub, viewer, operator, admin) in [
        ("get", "", "pods", "", true, true, true),
        ("list", "apps", "deployments", "", true, true, true),
        ("watch", "", "configmaps", "", true, true, true),
        ("get", "", "pods", "log", true, true, true),
        ("get", "", "secrets", "", false, false, true),
        ("list", "", "secrets", "", false, false, true),
        ("get", "", "pods", "exec", false, true, true),
        ("get", "", "services", "proxy", false, false, true),
        ("create", "", "pods", "", false, true, true),
        ("create", "", "pods", "exec", false, true, true),
        ("delete", "apps", "deployments", "", false, true, true),
        ("patch", "", "secrets", "", false, true, true),
        ("impersonate", "", "users", "", false, false, true),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            false,
            false,
            true,
        ),
    ] {
        assert_eq!(
            allowed(&vera, verb, group, resource, sub),
            viewer,
            "viewer {verb} {resource}/{sub}"
        );
        assert_eq!(
            allowed(&otto, verb, group, resource, sub),
            operator,
            "operator {verb} {resource}/{sub}"
        );
        assert_eq!(
            allowed(&ada, verb, group, resource, sub),
            admin,
            "admin {verb} {resource}/{sub}"
        );
    }
    let discovery = Attributes::non_resource(&vera, "get", "/apis");
    assert!(policy.decide(&discovery).is_allowed());
    assert!(
        !policy
            .decide(&Attributes::non_resource(&vera, "post", "/apis"))
            .is_allowed()
    );
    assert_eq!(
        policy
            .decide(&Attributes::resource(&vera, "get", "", "pods"))
            .reason,
        "RBAC: allowed by ClusterRoleBinding \"vera-kubegate:viewer\" of ClusterRole \"kubegate:viewer\" to User \"vera\""
    );
    assert_eq!(policy.tier_of(&vera, ""), Some(Tier::Viewer));
    assert_eq!(policy.tier_of(&otto, "x"), Some(Tier::Operator));
    let lead = Identity::new("lead", vec![]);
    assert_eq!(policy.tier_of(&lead, ""), Some(Tier::Viewer));
    assert_eq!(policy.tier_of(&lead, "team"), Some(Tier::Admin));
    assert_eq!(policy.tier_of(&Identity::new("x", vec![]), "team"), None);
    assert_eq!(
        Tier::from_cluster_role_name("kubegate:operator"),
        Some(Tier::Operator)
    );
}

#[test]
fn write_gate_denies_mutations_for_non_admins() {
    let policy = Arc::new(tier_policy());
    let gate = WriteGate::new(policy.clone(), true);
    let chain = Chain::new().with(Superuser).with(gate).with(policy.clone());
    let otto = Identity::new("otto", vec![]);
    let ada = Identity::new("ada", vec![]);
    let lead = Identity::new("lead", vec![]);
    let root = Identity::new("root", vec!["system:masters".into()]);

    let create = |who| Attributes::resource(who, "create", "", "pods").in_namespace("team");
    let d = chain.authorize(&create(&otto));
    assert_eq!(d, Decision::deny(READ_ONLY_REASON));
    assert_eq!(
        forbidden(&create(&otto), &d.reason).message,
        format!(
            "pods is forbidden: User \"otto\" cannot create resource \"pods\" in API group \"\" in the namespace \"team\": {READ_ONLY_REASON}"
        )
    );
    assert!(
        chain
            .authorize(&Attributes::resource(&otto, "get", "", "pods"))
            .is_allowed()
    );
    assert!(chain.authorize(&create(&ada)).is_allowed());
    assert!(
        chain.authorize(&create(&lead)).is_allowed(),
        "namespace admin in its namespace"
    );
    let elsewhere = Attributes::resource(&lead, "create", "", "pods").in_namespace("other");
    assert_eq!(chain.authorize(&elsewhere).verdict, Verdict::Deny);
    assert!(chain.authorize(&create(&root)).is_allowed());
    assert_eq!(
        chain
            .authorize(&Attributes::non_resource(&otto, "post", "/logs"))
            .verdict,
        Verdict::Deny
    );

    let gate = WriteGate::new(policy, false);
    assert_eq!(gate.authorize(&create(&otto)), Decision::no_opinion(""));
    gate.set_enabled(true);
    assert!(gate.is_enabled());
    assert_eq!(gate.authorize(&create(&otto)).verdict, Verdict::Deny);
}

struct Fixed(Verdict, &'static str, Option<&'static str>);

impl Authorizer for Fixed {
    fn authorize<'s>(&'s self, _: &Attributes<'_>) -> Decision<'s> {
        let d = Decision {
            verdict: self.0,
            reason: self.1.into(),
            error: None,
        };
        match self.2 {
            Some(e) => d.with_error(e),
            None => d,
        }
    }
}

#[test]
fn union_semantics() {
    let user = Identity::new("u", vec![]);
    let a = Attributes::resource(&user, "get", "", "pods");
    let chain = Chain::new()
        .with(Fixed(Verdict::NoOpinion, "first", None))
        .with(Fixed(Verdict::Deny, "denied", None))
        .with(Fixed(Verdict::Allow, "never reached", None));
    assert_eq!(chain.authorize(&a), Decision::deny("denied"));
    let chain = Chain::new()
        .with(Fixed(Verdict::NoOpinion, "", Some("e1")))
        .with(Fixed(Verdict::Allow, "ok", None));
    assert_eq!(chain.authorize(&a), Decision::allow("ok"));
    let chain = Chain::new()
        .with(Fixed(Verdict::NoOpinion, "one", Some("e1")))
        .with(Fixed(Verdict::NoOpinion, "", None))
        .with_named("RBAC", Fixed(Verdict::NoOpinion, "two", Some("e2")))
        .with(Fixed(Verdict::NoOpinion, "three", Some("e1")));
    let d = chain.authorize(&a);
    assert_eq!(d.verdict, Verdict::NoOpinion);
    assert_eq!(d.reason, "one\nRBAC: two\nthree");
    assert_eq!(d.error.as_deref(), Some("[e1, e2]"));
    assert_eq!(Chain::new().authorize(&a), Decision::no_opinion(""));
    assert_eq!(chain.len(), 4);
    let masters = Identity::new("m", vec!["system:masters".into()]);
    assert_eq!(
        Superuser.authorize(&Attributes::resource(&masters, "delete", "", "nodes")),
        Decision::allow("")
    );
    assert_eq!(Superuser.authorize(&a), Decision::no_opinion(""));
}
