//! `storage.loft.sh/v1` AccessKeyScope and its sub-types.

use serde::{Deserialize, Serialize};

fn is_false(value: &bool) -> bool {
    !*value
}

/// What an access key (or a token minted from one) may reach. `None`/`{}` means unrestricted;
/// see `kubegate-authz` for how kubegate evaluates it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScope {
    /// Managed permission sets applied to the key (`loft-cli`, `vcluster`, …).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub roles: Vec<AccessKeyScopeRole>,
    /// Projects the key may access (`*` = all).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub projects: Vec<AccessKeyScopeProject>,
    /// Spaces the key may access.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub spaces: Vec<AccessKeyScopeSpace>,
    /// Project virtual clusters the key may access.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub virtual_clusters: Vec<AccessKeyScopeVirtualCluster>,
    /// Clusters the key may access (`*` = all).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub clusters: Vec<AccessKeyScopeCluster>,
    /// DEPRECATED in Loft ("use projects, spaces and virtualClusters instead"), still honoured.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rules: Vec<AccessKeyScopeRule>,
    /// Deprecated spelling of `roles: [{role: loft-cli}]`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_loft_cli: bool,
}

impl AccessKeyScope {
    /// Whether no field restricts anything (`{}`): such a scope admits every request.
    pub fn is_unrestricted(&self) -> bool {
        self.roles.is_empty()
            && self.projects.is_empty()
            && self.spaces.is_empty()
            && self.virtual_clusters.is_empty()
            && self.clusters.is_empty()
            && self.rules.is_empty()
            && !self.allow_loft_cli
    }

    /// Loft's `ContainsRole`: `allowLoftCli` implies `loft-cli`, and `vcluster`, `agent` or
    /// `runner` imply `network-peer`.
    pub fn contains_role(&self, role: &AccessKeyScopeRoleName) -> bool {
        if self.allow_loft_cli && *role == AccessKeyScopeRoleName::LoftCli {
            return true;
        }
        self.roles.iter().any(|entry| {
            entry.role == *role
                || (*role == AccessKeyScopeRoleName::NetworkPeer
                    && matches!(
                        entry.role,
                        AccessKeyScopeRoleName::VCluster
                            | AccessKeyScopeRoleName::Agent
                            | AccessKeyScopeRoleName::Runner
                    ))
        })
    }
}

/// One managed role of a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeRole {
    /// Role name; unknown names are kept verbatim.
    #[serde(default, skip_serializing_if = "AccessKeyScopeRoleName::is_empty")]
    pub role: AccessKeyScopeRoleName,
    /// Projects the role applies to.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub projects: Vec<String>,
    /// Virtual clusters the role applies to.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub virtual_clusters: Vec<String>,
}

string_enum! {
    /// `AccessKeyScopeRoleName`: the role constants of loft-sh/api (all versions), unknown names kept.
    AccessKeyScopeRoleName {
        /// `agent`
        Agent => "agent",
        /// `vcluster`
        VCluster => "vcluster",
        /// `network-peer`
        NetworkPeer => "network-peer",
        /// `loft-cli` (the Go comment says `loftCLI`; the constant is `loft-cli`)
        LoftCli => "loft-cli",
        /// `runner` (absent from v4.11)
        Runner => "runner",
        /// `workspace`
        Workspace => "workspace",
        /// `metrics-writer`
        MetricsWriter => "metrics-writer",
        /// `metrics-reader`
        MetricsReader => "metrics-reader",
    }
}

impl AccessKeyScopeRoleName {
    /// Whether the name is the empty string (Go's zero value; omitted on output).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

impl Default for AccessKeyScopeRoleName {
    fn default() -> Self {
        Self::Unknown(String::new())
    }
}

/// A project entry of a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeProject {
    /// Project name; `*` = every project.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub project: String,
}

/// A space entry of a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeSpace {
    /// Project name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub project: String,
    /// Space name; `*` = every space of the project.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub space: String,
}

/// A project virtual cluster entry of a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeVirtualCluster {
    /// Project name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub project: String,
    /// Virtual cluster name; `*` = every virtual cluster of the project.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub virtual_cluster: String,
}

/// A cluster entry of a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeCluster {
    /// Cluster name; `*` = every cluster.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster: String,
}

/// A deprecated scope rule. Every constraint it sets must hold for it to admit a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyScopeRule {
    /// Verbs; empty = every verb.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub verbs: Vec<String>,
    /// Resources; empty = every resource in every group.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<GroupResources>,
    /// Namespaces; `""` = cluster-scoped resources; empty = every namespace.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub namespaces: Vec<String>,
    /// Non-resource URL paths; `*` only as the final character.
    #[serde(
        rename = "nonResourceURLs",
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
    /// Request targets; empty = every target.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_targets: Vec<RequestTarget>,
    /// Cluster; when set, only requests to that cluster pass.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster: String,
    /// Legacy virtual clusters; empty = no restriction.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub virtual_clusters: Vec<AccessKeyVirtualCluster>,
}

/// A legacy virtual cluster reference in a scope rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyVirtualCluster {
    /// Virtual cluster name; empty = all.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Host namespace; empty = all.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
}

/// Resource kinds in one API group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    /// API group; `""` = core.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub group: String,
    /// Resources (`pods`, `pods/log`, `*`, `*/scale`); empty = all in the group.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// Instance names; empty = all.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
}

string_enum! {
    /// `storage.loft.sh/v1` RequestTarget, including the removed `VirtualCluster` value.
    RequestTarget {
        /// `Management`
        Management => "Management",
        /// `Cluster`
        Cluster => "Cluster",
        /// `VirtualCluster` (removed from loft-sh/api in 2024-06, still accepted)
        VirtualCluster => "VirtualCluster",
        /// `ProjectSpace`
        ProjectSpace => "ProjectSpace",
        /// `ProjectVirtualCluster`
        ProjectVirtualCluster => "ProjectVirtualCluster",
    }
}
