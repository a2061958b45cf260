//! Compiled Kubernetes RBAC, indexed by subject.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use foldhash::HashMap as FastMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::rule::{CompiledRule, RequestProbe};
use super::selector::selects;
use super::tiers::Tier;
use crate::identity::service_account_username;
use crate::text::{aggregate, go_quote};
use crate::{Attributes, Authorizer, Decision, Identity, PolicyError};

/// `(binding index, subject index)`, sorted, per user name or group name.
type Entry = (u32, u32);

#[derive(Debug, Default)]
struct SubjectIndex {
    users: FastMap<Box<str>, Vec<Entry>>,
    groups: FastMap<Box<str>, Vec<Entry>>,
}

impl SubjectIndex {
    fn add(
        &mut self,
        binding: u32,
        subject_index: u32,
        subject: &Subject,
        binding_namespace: &str,
    ) {
        let entry = (binding, subject_index);
        match subject.kind.as_str() {
            "User" => self
                .users
                .entry(subject.name.as_str().into())
                .or_default()
                .push(entry),
            "Group" => self
                .groups
                .entry(subject.name.as_str().into())
                .or_default()
                .push(entry),
            "ServiceAccount" => {
                let namespace = subject
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(binding_namespace);
                // kube-apiserver: an SA subject with no namespace in a ClusterRoleBinding matches nobody.
                if !namespace.is_empty() {
                    let user = service_account_username(namespace, &subject.name);
                    self.users.entry(user.into()).or_default().push(entry);
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Binding {
    /// Index into `Policy::rule_sets`, or the resolution error kube-apiserver reports.
    role: Result<u32, Box<str>>,
    /// `RBAC: allowed by …` per subject index, precomputed so the allow path allocates nothing.
    reasons: Box<[Box<str>]>,
    tier: Option<Tier>,
}

#[derive(Debug, Default)]
struct Bindings {
    bindings: Vec<Binding>,
    index: SubjectIndex,
}

/// Kubernetes RBAC compiled from k8s-openapi `Role`, `ClusterRole` (aggregation resolved),
/// `RoleBinding` and `ClusterRoleBinding` objects, indexed by subject.
///
/// Answers exactly like kube-apiserver's RBAC authorizer: `Allow` with reason
/// `RBAC: allowed by <binding> of <role> to <subject>`, or `NoOpinion` with reason `""` or
/// `RBAC: <errors>` when a binding that applies to the user refers to a missing role or an
/// unsupported role kind. It never denies. The ClusterRoles `kubegate:viewer`,
/// `kubegate:operator` and `kubegate:admin` are built in ([`Tier`]).
#[derive(Debug, Default)]
pub struct Policy {
    rule_sets: Vec<Vec<CompiledRule>>,
    cluster_bindings: Bindings,
    namespaced: FastMap<Box<str>, Bindings>,
    rule_count: usize,
}

fn required<'a>(
    value: Option<&'a String>,
    kind: &'static str,
    field: &'static str,
) -> Result<&'a str, PolicyError> {
    value
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(PolicyError::MissingField { kind, field })
}

fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let namespace = subject
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(binding_namespace);
        format!(
            "{} {}",
            subject.kind,
            go_quote(&format!("{}/{}", subject.name, namespace))
        )
    } else {
        format!("{} {}", subject.kind, go_quote(&subject.name))
    }
}

fn not_found(resource: &str, name: &str) -> Box<str> {
    format!(
        "{resource}.rbac.authorization.k8s.io {} not found",
        go_quote(name)
    )
    .into()
}

/// Resolve `aggregationRule`s the way the clusterrole-aggregation controller converges:
/// an aggregated role's rules are the union (first occurrence kept, roles in name order) of
/// the rules of every other ClusterRole its selectors select, iterated to a fixed point so
/// aggregated roles may select aggregated roles.
fn aggregate_cluster_roles(
    cluster_roles: &[ClusterRole],
) -> Result<BTreeMap<&str, Cow<'_, [PolicyRule]>>, PolicyError> {
    let mut effective: BTreeMap<&str, Cow<'_, [PolicyRule]>> = BTreeMap::new();
    let mut labels: BTreeMap<&str, &BTreeMap<String, String>> = BTreeMap::new();
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    for role in cluster_roles {
        let name = required(role.metadata.name.as_ref(), "ClusterRole", "metadata.name")?;
        if Tier::from_cluster_role_name(name).is_some() {
            return Err(PolicyError::ReservedName {
                name: name.to_owned(),
            });
        }
        if effective
            .insert(
                name,
                Cow::Borrowed(role.rules.as_deref().unwrap_or_default()),
            )
            .is_some()
        {
            return Err(PolicyError::Duplicate {
                kind: "ClusterRole",
                name: name.to_owned(),
            });
        }
        labels.insert(name, role.metadata.labels.as_ref().unwrap_or(&NO_LABELS));
    }
    // Which roles each aggregated role selects never changes; compute it once.
    let mut selections: Vec<(&str, Vec<&str>)> = Vec::new();
    for role in cluster_roles {
        let Some(rule) = &role.aggregation_rule else {
            continue;
        };
        let name = required(role.metadata.name.as_ref(), "ClusterRole", "metadata.name")?;
        let mut selected = Vec::new();
        for (candidate, candidate_labels) in &labels {
            if *candidate == name {
                continue;
            }
            let mut any = false;
            for selector in rule.cluster_role_selectors.iter().flatten() {
                any |= selects(name, selector, candidate_labels)?;
            }
            if any {
                selected.push(*candidate);
            }
        }
        selections.push((name, selected));
    }
    for _ in 0..=selections.len() {
        let mut changed = false;
        for (name, selected) in &selections {
            let mut rules: Vec<PolicyRule> = Vec::new();
            for source in selected {
                for rule in effective.get(*source).map(|r| &**r).unwrap_or_default() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
            if effective.get(*name).map(|r| &**r) != Some(rules.as_slice()) {
                effective.insert(name, Cow::Owned(rules));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(effective)
}

impl Policy {
    /// A policy with no bindings (answers `NoOpinion` to everything).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Compile RBAC objects. Objects must have names (and, for namespaced kinds, namespaces);
    /// names must be unique; the tier names are reserved. Bindings to missing roles or with
    /// unsupported `roleRef` kinds are **not** errors here: like kube-apiserver, they surface as
    /// `NoOpinion` reasons when they apply to a request.
    pub fn compile(
        roles: &[Role],
        cluster_roles: &[ClusterRole],
        role_bindings: &[RoleBinding],
        cluster_role_bindings: &[ClusterRoleBinding],
    ) -> Result<Self, PolicyError> {
        let mut policy = Policy::default();
        let mut cluster_role_sets: HashMap<String, u32> = HashMap::new();
        let mut tier_sets: HashMap<Tier, u32> = HashMap::new();
        for tier in Tier::ALL {
            tier_sets.insert(tier, policy.add_rule_set(tier.compiled_rules()));
        }
        for (name, rules) in aggregate_cluster_roles(cluster_roles)? {
            let set = policy.add_rule_set(rules.iter().map(CompiledRule::new).collect());
            cluster_role_sets.insert(name.to_owned(), set);
        }
        let mut role_sets: HashMap<(String, String), u32> = HashMap::new();
        for role in roles {
            let name = required(role.metadata.name.as_ref(), "Role", "metadata.name")?;
            let namespace = required(
                role.metadata.namespace.as_ref(),
                "Role",
                "metadata.namespace",
            )?;
            let rules = role.rules.iter().flatten().map(CompiledRule::new).collect();
            let set = policy.add_rule_set(rules);
            if role_sets
                .insert((namespace.to_owned(), name.to_owned()), set)
                .is_some()
            {
                return Err(PolicyError::Duplicate {
                    kind: "Role",
                    name: format!("{namespace}/{name}"),
                });
            }
        }
        let resolve =
            |role_ref: &RoleRef, namespace: &str| -> (Result<u32, Box<str>>, Option<Tier>) {
                match role_ref.kind.as_str() {
                    "ClusterRole" => match Tier::from_cluster_role_name(&role_ref.name) {
                        Some(tier) => (
                            tier_sets
                                .get(&tier)
                                .copied()
                                .ok_or_else(|| not_found("clusterrole", &role_ref.name)),
                            Some(tier),
                        ),
                        None => (
                            cluster_role_sets
                                .get(&role_ref.name)
                                .copied()
                                .ok_or_else(|| not_found("clusterrole", &role_ref.name)),
                            None,
                        ),
                    },
                    "Role" => (
                        role_sets
                            .get(&(namespace.to_owned(), role_ref.name.clone()))
                            .copied()
                            .ok_or_else(|| not_found("role", &role_ref.name)),
                        None,
                    ),
                    other => (
                        Err(format!("unsupported role reference kind: {}", go_quote(other)).into()),
                        None,
                    ),
                }
            };

        let mut seen: HashSet<String> = HashSet::new();
        for binding in cluster_role_bindings {
            let name = required(
                binding.metadata.name.as_ref(),
                "ClusterRoleBinding",
                "metadata.name",
            )?;
            if !seen.insert(name.to_owned()) {
                return Err(PolicyError::Duplicate {
                    kind: "ClusterRoleBinding",
                    name: name.to_owned(),
                });
            }
            let (role, tier) = resolve(&binding.role_ref, "");
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            let prefix = format!(
                "RBAC: allowed by ClusterRoleBinding {} of {} {} to ",
                go_quote(name),
                binding.role_ref.kind,
                go_quote(&binding.role_ref.name)
            );
            let reasons = subjects
                .iter()
                .map(|s| format!("{prefix}{}", describe_subject(s, "")).into())
                .collect();
            policy.cluster_bindings.push(
                Binding {
                    role,
                    reasons,
                    tier,
                },
                subjects,
                "",
            );
        }

        let mut seen: HashSet<(String, String)> = HashSet::new();
        for binding in role_bindings {
            let name = required(
                binding.metadata.name.as_ref(),
                "RoleBinding",
                "metadata.name",
            )?;
            let namespace = required(
                binding.metadata.namespace.as_ref(),
                "RoleBinding",
                "metadata.namespace",
            )?;
            if !seen.insert((namespace.to_owned(), name.to_owned())) {
                return Err(PolicyError::Duplicate {
                    kind: "RoleBinding",
                    name: format!("{namespace}/{name}"),
                });
            }
            let (role, tier) = resolve(&binding.role_ref, namespace);
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            let prefix = format!(
                "RBAC: allowed by RoleBinding {} of {} {} to ",
                go_quote(&format!("{name}/{namespace}")),
                binding.role_ref.kind,
                go_quote(&binding.role_ref.name)
            );
            let reasons = subjects
                .iter()
                .map(|s| format!("{prefix}{}", describe_subject(s, namespace)).into())
                .collect();
            policy.namespaced.entry(namespace.into()).or_default().push(
                Binding {
                    role,
                    reasons,
                    tier,
                },
                subjects,
                namespace,
            );
        }
        Ok(policy)
    }

    fn add_rule_set(&mut self, rules: Vec<CompiledRule>) -> u32 {
        self.rule_count += rules.len();
        self.rule_sets.push(rules);
        u32::try_from(self.rule_sets.len() - 1).unwrap_or(u32::MAX)
    }

    /// Number of compiled rules (built-in tier rules included).
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Number of bindings (cluster-wide and namespaced).
    pub fn binding_count(&self) -> usize {
        self.cluster_bindings.bindings.len()
            + self
                .namespaced
                .values()
                .map(|b| b.bindings.len())
                .sum::<usize>()
    }

    /// The RBAC decision for `a` (kube-apiserver `RBACAuthorizer.Authorize`).
    pub fn decide<'s>(&'s self, a: &Attributes<'_>) -> Decision<'s> {
        let mut errors: Vec<&'s str> = Vec::new();
        let probe = RequestProbe::new(a);
        let mut allowed = |bindings: &'s Bindings| -> Option<&'s str> {
            visit(bindings, a.user, |binding, subject| {
                match binding.role {
                    Err(ref error) => errors.push(error),
                    Ok(set) => {
                        let rules = self
                            .rule_sets
                            .get(set as usize)
                            .map(Vec::as_slice)
                            .unwrap_or_default();
                        if rules.iter().any(|rule| rule.allows(a, &probe)) {
                            return binding.reasons.get(subject as usize).map(|r| &**r);
                        }
                    }
                }
                None
            })
        };
        if let Some(reason) = allowed(&self.cluster_bindings) {
            return Decision::allow(reason);
        }
        if !a.namespace.is_empty()
            && let Some(bindings) = self.namespaced.get(a.namespace)
            && let Some(reason) = allowed(bindings)
        {
            return Decision::allow(reason);
        }
        if errors.is_empty() {
            Decision::no_opinion("")
        } else {
            Decision::no_opinion(Cow::Owned(format!("RBAC: {}", aggregate(errors))))
        }
    }

    /// The rules that apply to `user` in `namespace` (cluster-wide bindings, then the
    /// namespace's bindings), and the resolution errors met on the way — kube-apiserver's
    /// `RulesFor`. Tier rules are listed without their exclusions.
    pub fn rules_for(&self, user: &Identity, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let mut collect = |bindings: &Bindings| {
            visit(bindings, user, |binding, _| {
                match &binding.role {
                    Err(error) => errors.push(error.to_string()),
                    Ok(set) => rules.extend(
                        self.rule_sets
                            .get(*set as usize)
                            .into_iter()
                            .flatten()
                            .map(CompiledRule::to_policy_rule),
                    ),
                }
                None::<()>
            });
        };
        collect(&self.cluster_bindings);
        if !namespace.is_empty()
            && let Some(bindings) = self.namespaced.get(namespace)
        {
            collect(bindings);
        }
        (rules, errors)
    }

    /// The highest [`Tier`] `user` is bound to, cluster-wide or in `namespace`.
    pub fn tier_of(&self, user: &Identity, namespace: &str) -> Option<Tier> {
        let mut best = None;
        let mut look = |bindings: &Bindings| {
            visit(bindings, user, |binding, _| {
                if binding.role.is_ok() && binding.tier > best {
                    best = binding.tier;
                }
                None::<()>
            });
        };
        look(&self.cluster_bindings);
        if !namespace.is_empty()
            && let Some(bindings) = self.namespaced.get(namespace)
        {
            look(bindings);
        }
        best
    }
}

impl Bindings {
    fn push(&mut self, binding: Binding, subjects: &[Subject], namespace: &str) {
        let index = u32::try_from(self.bindings.len()).unwrap_or(u32::MAX);
        for (i, subject) in subjects.iter().enumerate() {
            self.index.add(
                index,
                u32::try_from(i).unwrap_or(u32::MAX),
                subject,
                namespace,
            );
        }
        self.bindings.push(binding);
    }
}

/// Lists merged at once without allocating; users in more groups fall back to a `Vec`.
const INLINE_LISTS: usize = 16;

/// Visit the bindings that apply to `user`, in binding order, each once, with the index of
/// its first matching subject — what kube-apiserver's visitor sees, found through the subject
/// index instead of a scan. Stops at the first `Some`.
fn visit<'b, T>(
    bindings: &'b Bindings,
    user: &Identity,
    mut f: impl FnMut(&'b Binding, u32) -> Option<T>,
) -> Option<T> {
    let mut inline: [&[Entry]; INLINE_LISTS] = [&[]; INLINE_LISTS];
    let mut spill: Vec<&[Entry]> = Vec::new();
    let mut count = 0;
    let lists = std::iter::once(bindings.index.users.get(user.name.as_str()))
        .chain(
            user.groups
                .iter()
                .map(|g| bindings.index.groups.get(g.as_str())),
        )
        .flatten()
        .filter(|l| !l.is_empty());
    for list in lists {
        if count < INLINE_LISTS {
            inline[count] = list;
        } else {
            if spill.is_empty() {
                spill.extend_from_slice(&inline);
            }
            spill.push(list);
        }
        count += 1;
    }
    let heads: &mut [&[Entry]] = if count <= INLINE_LISTS {
        &mut inline[..count]
    } else {
        &mut spill
    };
    loop {
        let mut next: Option<Entry> = None;
        for head in heads.iter() {
            if let Some(&entry) = head.first()
                && next.is_none_or(|n| entry < n)
            {
                next = Some(entry);
            }
        }
        let (binding_index, subject) = next?;
        for head in heads.iter_mut() {
            while head.first().is_some_and(|e| e.0 == binding_index) {
                *head = &head[1..];
            }
        }
        if let Some(binding) = bindings.bindings.get(binding_index as usize)
            && let Some(result) = f(binding, subject)
        {
            return Some(result);
        }
    }
}

impl Authorizer for Policy {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        self.decide(attributes)
    }
}
