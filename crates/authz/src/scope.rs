//! Access-key scopes compiled for fast decisions (kubegate's published semantics,
//! `spec/loft-api.md` §5).

use kubegate_api::{AccessKeyScope, AccessKeyScopeRoleName, AccessKeyScopeRule, RequestTarget};
use kubegate_routing::{OpsPath, Target};

use crate::rbac::rule::{non_resource_url_matches, resource_matches};
use crate::{Attributes, Authorizer, Decision, Error};

/// The reason a scope gives when it refuses a request.
pub const SCOPE_DENIED_REASON: &str = "the access key's scope does not allow this request";

/// Target kinds as bits, for rule coverage.
const MANAGEMENT: u8 = 1;
const CLUSTER: u8 = 2;
const VIRTUAL_CLUSTER: u8 = 4;
const PROJECT_SPACE: u8 = 8;
const PROJECT_VIRTUAL_CLUSTER: u8 = 16;
const UPSTREAMS: u8 = CLUSTER | VIRTUAL_CLUSTER | PROJECT_SPACE | PROJECT_VIRTUAL_CLUSTER;

/// Management resources the `loft-cli` role may `get`/`list`.
const LOFT_CLI_READABLE: [&str; 4] = [
    "projects",
    "clusters",
    "virtualclusterinstances",
    "spaceinstances",
];
const MANAGEMENT_GROUP: &str = "management.loft.sh";

type Str = Box<str>;

#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupResources {
    group: Str,
    resources: Box<[Str]>,
    resource_names: Box<[Str]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct VirtualClusterRef {
    name: Str,
    namespace: Str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ScopeRule {
    all_verbs: bool,
    verbs: Box<[Str]>,
    resources: Box<[GroupResources]>,
    namespaces: Box<[Str]>,
    non_resource_urls: Box<[Str]>,
    targets: u8,
    cluster: Option<Str>,
    virtual_clusters: Box<[VirtualClusterRef]>,
}

fn strs(values: &[String]) -> Box<[Str]> {
    values.iter().map(|v| v.as_str().into()).collect()
}

fn target_bit(target: &RequestTarget) -> u8 {
    match target {
        RequestTarget::Management => MANAGEMENT,
        RequestTarget::Cluster => CLUSTER,
        RequestTarget::VirtualCluster => VIRTUAL_CLUSTER,
        RequestTarget::ProjectSpace => PROJECT_SPACE,
        RequestTarget::ProjectVirtualCluster => PROJECT_VIRTUAL_CLUSTER,
        RequestTarget::Unknown(_) => 0,
    }
}

fn contains(list: &[Str], value: &str) -> bool {
    list.iter().any(|v| &**v == value)
}

fn subset(child: &[Str], parent: &[Str]) -> bool {
    child.iter().all(|c| contains(parent, c))
}

impl ScopeRule {
    fn new(rule: &AccessKeyScopeRule) -> Self {
        Self {
            all_verbs: rule.verbs.is_empty() || rule.verbs.iter().any(|v| v == "*"),
            verbs: strs(&rule.verbs),
            resources: rule
                .resources
                .iter()
                .map(|gr| GroupResources {
                    group: gr.group.as_str().into(),
                    resources: strs(&gr.resources),
                    resource_names: strs(&gr.resource_names),
                })
                .collect(),
            namespaces: strs(&rule.namespaces),
            non_resource_urls: strs(&rule.non_resource_urls),
            // Empty = every upstream target; Management must be named explicitly.
            targets: if rule.request_targets.is_empty() {
                UPSTREAMS
            } else {
                rule.request_targets
                    .iter()
                    .map(target_bit)
                    .fold(0, |a, b| a | b)
            },
            cluster: (!rule.cluster.is_empty()).then(|| rule.cluster.as_str().into()),
            virtual_clusters: rule
                .virtual_clusters
                .iter()
                .map(|vc| VirtualClusterRef {
                    name: vc.name.as_str().into(),
                    namespace: vc.namespace.as_str().into(),
                })
                .collect(),
        }
    }

    fn admits_resources(&self) -> bool {
        self.non_resource_urls.is_empty()
    }

    fn admits_non_resources(&self) -> bool {
        self.resources.is_empty() && (self.namespaces.is_empty() || contains(&self.namespaces, ""))
    }

    fn admits(&self, target: &Target<'_>, a: &Attributes<'_>) -> bool {
        let bit = match target {
            Target::Management => MANAGEMENT,
            Target::Cluster { .. } => CLUSTER,
            Target::VirtualCluster { .. } => VIRTUAL_CLUSTER,
            Target::ProjectSpace { .. } => PROJECT_SPACE,
            Target::ProjectVirtualCluster { .. } => PROJECT_VIRTUAL_CLUSTER,
            _ => 0,
        };
        if self.targets & bit == 0 {
            return false;
        }
        if let Some(cluster) = &self.cluster
            && !matches!(target, Target::Cluster { cluster: c } if *c == &**cluster)
        {
            return false;
        }
        if !self.virtual_clusters.is_empty() {
            let Target::VirtualCluster {
                namespace, name, ..
            } = target
            else {
                return false;
            };
            if !self.virtual_clusters.iter().any(|vc| {
                (vc.name.is_empty() || &*vc.name == *name)
                    && (vc.namespace.is_empty() || &*vc.namespace == *namespace)
            }) {
                return false;
            }
        }
        if !self.all_verbs && !contains(&self.verbs, a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() && !contains(&self.namespaces, a.namespace) {
            return false;
        }
        if a.is_resource_request {
            self.admits_resources()
                && (self.resources.is_empty()
                    || self.resources.iter().any(|gr| {
                        &*gr.group == a.api_group
                            && (gr.resources.is_empty()
                                || resource_matches(&gr.resources, a.resource, a.subresource))
                            && (gr.resource_names.is_empty()
                                || contains(&gr.resource_names, a.name))
                    }))
        } else {
            self.resources.is_empty()
                && (self.non_resource_urls.is_empty()
                    || non_resource_url_matches(&self.non_resource_urls, a.path))
        }
    }

    /// Whether every request `child` admits, `self` admits (sufficient, not necessary).
    fn covers(&self, child: &ScopeRule) -> bool {
        if child.targets & !self.targets != 0 {
            return false;
        }
        if let Some(cluster) = &self.cluster
            && child.cluster.as_ref() != Some(cluster)
        {
            return false;
        }
        if !self.virtual_clusters.is_empty()
            && (child.virtual_clusters.is_empty()
                || !child.virtual_clusters.iter().all(|c| {
                    self.virtual_clusters.iter().any(|p| {
                        (p.name.is_empty() || p.name == c.name)
                            && (p.namespace.is_empty() || p.namespace == c.namespace)
                    })
                }))
        {
            return false;
        }
        if !self.all_verbs && (child.all_verbs || !subset(&child.verbs, &self.verbs)) {
            return false;
        }
        if !self.namespaces.is_empty()
            && (child.namespaces.is_empty() || !subset(&child.namespaces, &self.namespaces))
        {
            return false;
        }
        if child.admits_resources() {
            if !self.admits_resources() {
                return false;
            }
            if !self.resources.is_empty()
                && (child.resources.is_empty()
                    || !child
                        .resources
                        .iter()
                        .all(|c| self.resources.iter().any(|p| group_resources_cover(p, c))))
            {
                return false;
            }
        }
        if child.admits_non_resources() {
            if !self.admits_non_resources() {
                return false;
            }
            if !self.non_resource_urls.is_empty()
                && (child.non_resource_urls.is_empty()
                    || !child
                        .non_resource_urls
                        .iter()
                        .all(|c| self.non_resource_urls.iter().any(|p| url_covers(p, c))))
            {
                return false;
            }
        }
        true
    }
}

fn group_resources_cover(parent: &GroupResources, child: &GroupResources) -> bool {
    parent.group == child.group
        && (parent.resources.is_empty()
            || (!child.resources.is_empty()
                && child
                    .resources
                    .iter()
                    .all(|c| parent.resources.iter().any(|p| resource_covers(p, c)))))
        && (parent.resource_names.is_empty()
            || (!child.resource_names.is_empty()
                && subset(&child.resource_names, &parent.resource_names)))
}

/// Whether RBAC resource pattern `parent` matches every request `child` matches.
fn resource_covers(parent: &str, child: &str) -> bool {
    if parent == "*" || parent == child {
        return true;
    }
    // `*/sub` covers `res/sub` for a plain `res` (one slash, not `*`).
    match (parent.strip_prefix("*/"), child.split_once('/')) {
        (Some(sub), Some((resource, child_sub))) => {
            resource != "*" && !resource.is_empty() && !child_sub.contains('/') && sub == child_sub
        }
        _ => false,
    }
}

/// Whether non-resource URL pattern `parent` matches every path `child` matches.
fn url_covers(parent: &str, child: &str) -> bool {
    if parent == "*" || parent == child {
        return true;
    }
    if !parent.ends_with('*') {
        return false;
    }
    let parent_prefix = parent.trim_end_matches('*');
    let child_prefix = if child == "*" {
        ""
    } else {
        child.trim_end_matches('*')
    };
    child_prefix.starts_with(parent_prefix)
}

/// An [`AccessKeyScope`] compiled once for fast decisions on `(Target, Attributes)`.
///
/// Semantics (kubegate's, since Loft's evaluator is closed source — `spec/loft-api.md` §5):
///
/// - no scope, or `{}`: unrestricted;
/// - otherwise a request passes only if at least one entry admits it:
///   - `clusters[{cluster}]` — every request to `Cluster{cluster}` and to legacy
///     `VirtualCluster`s on that host cluster (`*` = all clusters);
///   - `projects[{project}]` — every request to that project's spaces and virtual clusters;
///   - `spaces[{project, space}]` — `ProjectSpace{project, space}` (`space: *` = all of the project);
///   - `virtualClusters[{project, virtualCluster}]` — `ProjectVirtualCluster{…}` (`*` likewise);
///   - `rules[…]` — when every constraint the rule sets holds: verbs (`*` ok), resources
///     (group exact; resources with Kubernetes RBAC matching incl. `*/sub`; resourceNames),
///     namespaces (`""` = cluster scope), nonResourceURLs (trailing `*`), requestTargets
///     (empty = every upstream target; **Management only when listed**), cluster (only
///     `Cluster{cluster}` requests), virtualClusters (only legacy `VirtualCluster` requests
///     matching an entry; empty name/namespace = any);
///   - role `loft-cli` / `allowLoftCli` — only: create `selves`; get/list `projects`,
///     `clusters`, `virtualclusterinstances`, `spaceinstances` (group `management.loft.sh`,
///     no subresource) on the Management target; `get /version` on Management or the
///     `/version` ops endpoint;
///   - every other role (known or not) admits nothing;
/// - `project: "*"` inside `spaces`/`virtualClusters` entries is not a wildcard;
/// - `Auth`, `Oidc`, `Grafana` and other ops targets are admitted by no entry.
///
/// A scope never grants anything: the identity's own authorization still applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledScope {
    restrictive: bool,
    all_clusters: bool,
    clusters: Box<[Str]>,
    all_projects: bool,
    projects: Box<[Str]>,
    spaces: Box<[(Str, Str)]>,
    virtual_clusters: Box<[(Str, Str)]>,
    rules: Box<[ScopeRule]>,
    loft_cli: bool,
}

impl CompiledScope {
    /// The unrestricted scope (what a credential without a scope has).
    pub fn unrestricted() -> Self {
        Self::default()
    }

    /// Compile `scope`; `None` is unrestricted.
    pub fn new(scope: Option<&AccessKeyScope>) -> Self {
        let Some(scope) = scope else {
            return Self::unrestricted();
        };
        let names = |values: &mut dyn Iterator<Item = &str>| -> Box<[Str]> {
            values.map(Into::into).collect()
        };
        Self {
            restrictive: !scope.is_unrestricted(),
            all_clusters: scope.clusters.iter().any(|c| c.cluster == "*"),
            clusters: names(&mut scope.clusters.iter().map(|c| c.cluster.as_str())),
            all_projects: scope.projects.iter().any(|p| p.project == "*"),
            projects: names(&mut scope.projects.iter().map(|p| p.project.as_str())),
            spaces: scope
                .spaces
                .iter()
                .map(|s| (s.project.as_str().into(), s.space.as_str().into()))
                .collect(),
            virtual_clusters: scope
                .virtual_clusters
                .iter()
                .map(|v| (v.project.as_str().into(), v.virtual_cluster.as_str().into()))
                .collect(),
            rules: scope.rules.iter().map(ScopeRule::new).collect(),
            loft_cli: scope.contains_role(&AccessKeyScopeRoleName::LoftCli),
        }
    }

    /// Parse a JSON `AccessKeyScope` and compile it (`null` is unrestricted).
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        // Parse to a value first: serde's derived struct decoding also accepts a JSON array
        // (`[]` would become an unrestricted scope); only an object or `null` is a scope.
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::InvalidScope(e.to_string()))?;
        match value {
            serde_json::Value::Null => Ok(Self::unrestricted()),
            value @ serde_json::Value::Object(_) => {
                let scope: AccessKeyScope = serde_json::from_value(value)
                    .map_err(|e| Error::InvalidScope(e.to_string()))?;
                Ok(Self::new(Some(&scope)))
            }
            _ => Err(Error::InvalidScope(
                "a scope must be a JSON object or null".to_owned(),
            )),
        }
    }

    /// Whether this scope restricts anything.
    pub fn is_restrictive(&self) -> bool {
        self.restrictive
    }

    /// Whether the scope admits this request to `target`. Allocation-free.
    pub fn admits(&self, target: &Target<'_>, a: &Attributes<'_>) -> bool {
        if !self.restrictive {
            return true;
        }
        let cluster_listed = |cluster: &str| self.all_clusters || contains(&self.clusters, cluster);
        let project_listed = |project: &str| self.all_projects || contains(&self.projects, project);
        let pair_listed = |pairs: &[(Str, Str)], project: &str, name: &str| {
            pairs
                .iter()
                .any(|(p, n)| &**p == project && (&**n == "*" || &**n == name))
        };
        let by_entries = match target {
            Target::Cluster { cluster } | Target::VirtualCluster { cluster, .. } => {
                cluster_listed(cluster)
            }
            Target::ProjectSpace { project, space } => {
                project_listed(project) || pair_listed(&self.spaces, project, space)
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => {
                project_listed(project)
                    || pair_listed(&self.virtual_clusters, project, virtual_cluster)
            }
            _ => false,
        };
        by_entries
            || (self.loft_cli && loft_cli_admits(target, a))
            || self.rules.iter().any(|rule| rule.admits(target, a))
    }

    /// A [`Decision`]: `Deny` with [`SCOPE_DENIED_REASON`] when the scope refuses, else
    /// `NoOpinion` (a scope never grants).
    pub fn decide(&self, target: &Target<'_>, a: &Attributes<'_>) -> Decision<'static> {
        if self.admits(target, a) {
            Decision::no_opinion("")
        } else {
            Decision::deny(SCOPE_DENIED_REASON)
        }
    }

    /// Whether every request this scope admits, `parent` admits — the check for minting a
    /// token or key from a scoped credential. Conservative: `false` when unsure (each entry
    /// of `self` must be covered by a single entry of `parent`).
    pub fn narrows(&self, parent: &CompiledScope) -> bool {
        if !parent.restrictive {
            return true;
        }
        if !self.restrictive {
            return false;
        }
        let cluster_covered = |cluster: &str| {
            parent.all_clusters
                || (cluster != "*" && contains(&parent.clusters, cluster))
                || (cluster == "*" && contains(&parent.clusters, "*"))
        };
        let project_covered = |project: &str| {
            parent.all_projects || (project != "*" && contains(&parent.projects, project))
        };
        let pair_covered = |pairs: &[(Str, Str)], project: &str, name: &str| {
            project_covered(project)
                || pairs
                    .iter()
                    .any(|(p, n)| &**p == project && (&**n == "*" || (name != "*" && &**n == name)))
        };
        self.clusters.iter().all(|c| cluster_covered(c))
            && self.projects.iter().all(|p| project_covered(p))
            && self
                .spaces
                .iter()
                .all(|(p, s)| pair_covered(&parent.spaces, p, s))
            && self
                .virtual_clusters
                .iter()
                .all(|(p, v)| pair_covered(&parent.virtual_clusters, p, v))
            && self
                .rules
                .iter()
                .all(|c| parent.rules.iter().any(|p| p.covers(c)))
            && (!self.loft_cli || parent.loft_cli)
    }
}

fn loft_cli_admits(target: &Target<'_>, a: &Attributes<'_>) -> bool {
    match target {
        Target::Management if a.is_resource_request => {
            a.api_group == MANAGEMENT_GROUP
                && a.subresource.is_empty()
                && match a.verb {
                    "create" => a.resource == "selves",
                    "get" | "list" => LOFT_CLI_READABLE.contains(&a.resource),
                    _ => false,
                }
        }
        Target::Management | Target::Ops(OpsPath::Version) => {
            !a.is_resource_request && a.verb == "get" && a.path == "/version"
        }
        _ => false,
    }
}

/// Scope first, then the authorizer: `Deny` when `scope` refuses, else whatever `authorizer`
/// decides. This is the whole per-request decision of the gateway's authorization layer.
pub fn authorize_scoped<'s, A: Authorizer + ?Sized>(
    scope: Option<&CompiledScope>,
    target: &Target<'_>,
    attributes: &Attributes<'_>,
    authorizer: &'s A,
) -> Decision<'s> {
    match scope {
        Some(scope) if !scope.admits(target, attributes) => Decision::deny(SCOPE_DENIED_REASON),
        _ => authorizer.authorize(attributes),
    }
}
