//! kubegate's built-in role tiers and the global write gate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::rule::{CompiledRule, Exclusions};
use crate::{Attributes, Authorizer, Decision, Policy};

/// A built-in ClusterRole tier. Bind it like any ClusterRole (`roleRef: {kind: ClusterRole,
/// name: kubegate:viewer}`) from a ClusterRoleBinding or a RoleBinding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// `kubegate:viewer`: `get`/`list`/`watch` on every resource except `secrets` (core group)
    /// and the `exec`, `attach`, `portforward` and `proxy` subresources; `get` on every
    /// non-resource URL (discovery, `/version`).
    Viewer,
    /// `kubegate:operator`: the viewer tier plus `create`, `update`, `patch`, `delete` and
    /// `deletecollection` on every resource, and `get` on `pods/exec`, `pods/attach`,
    /// `pods/portforward` (WebSocket upgrades are GETs). Reading secrets stays excluded.
    Operator,
    /// `kubegate:admin`: every verb on every resource and non-resource URL; exempt from the
    /// write gate.
    Admin,
}

const VIEWER_EXCLUSIONS: Exclusions = Exclusions {
    resources: &[("", "secrets")],
    subresources: &["exec", "attach", "portforward", "proxy"],
};

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], urls: &[&str]) -> PolicyRule {
    let list = |values: &[&str]| {
        (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect())
    };
    PolicyRule {
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        api_groups: list(groups),
        resources: list(resources),
        non_resource_urls: list(urls),
        resource_names: None,
    }
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Viewer, Tier::Operator, Tier::Admin];

    /// The ClusterRole name (`kubegate:viewer`, `kubegate:operator`, `kubegate:admin`).
    pub fn cluster_role_name(self) -> &'static str {
        match self {
            Tier::Viewer => "kubegate:viewer",
            Tier::Operator => "kubegate:operator",
            Tier::Admin => "kubegate:admin",
        }
    }

    /// The tier a ClusterRole name denotes.
    pub fn from_cluster_role_name(name: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.cluster_role_name() == name)
    }

    pub(crate) fn compiled_rules(self) -> Vec<CompiledRule> {
        let viewer = || {
            vec![
                CompiledRule::with_exclusions(
                    &rule(&["get", "list", "watch"], &["*"], &["*"], &[]),
                    VIEWER_EXCLUSIONS,
                ),
                CompiledRule::new(&rule(&["get"], &[], &[], &["*"])),
            ]
        };
        match self {
            Tier::Viewer => viewer(),
            Tier::Operator => {
                let mut rules = viewer();
                rules.push(CompiledRule::new(&rule(
                    &["create", "update", "patch", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                    &[],
                )));
                rules.push(CompiledRule::new(&rule(
                    &["get"],
                    &[""],
                    &["pods/exec", "pods/attach", "pods/portforward"],
                    &[],
                )));
                rules
            }
            Tier::Admin => vec![
                CompiledRule::new(&rule(&["*"], &["*"], &["*"], &[])),
                CompiledRule::new(&rule(&["*"], &[], &[], &["*"])),
            ],
        }
    }
}

/// The reason the write gate gives.
pub const READ_ONLY_REASON: &str = "the gateway is read-only: only kubegate:admin may make changes";

/// The global write gate: while enabled, every mutating request
/// ([`Attributes::is_mutating`]) is **denied** unless the user is in `system:masters` or bound
/// to [`Tier::Admin`] (cluster-wide, or in the request's namespace). Otherwise no opinion.
/// Put it before the policy in a [`Chain`](crate::Chain).
#[derive(Debug)]
pub struct WriteGate {
    policy: Arc<Policy>,
    enabled: AtomicBool,
}

impl WriteGate {
    /// A gate over `policy` (used to find admins), initially `enabled`.
    pub fn new(policy: Arc<Policy>, enabled: bool) -> Self {
        Self {
            policy,
            enabled: AtomicBool::new(enabled),
        }
    }

    /// Turn the gate on or off.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the gate is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

impl Authorizer for WriteGate {
    fn authorize<'s>(&'s self, a: &Attributes<'_>) -> Decision<'s> {
        if !self.is_enabled() || !a.is_mutating() || a.user.is_superuser() {
            return Decision::no_opinion("");
        }
        if self.policy.tier_of(a.user, a.namespace) == Some(Tier::Admin) {
            Decision::no_opinion("")
        } else {
            Decision::deny(READ_ONLY_REASON)
        }
    }
}
