//! `management.loft.sh/v1` objects a gateway serves or reads.

use serde::{Deserialize, Serialize};

use crate::{AccessKeyScope, AccessKeySpec, AccessKeyStatus, AccessKeyType};

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

api_object! {
    /// LEGACY short-lived token for a direct cluster endpoint (`directclusterendpointtokens`,
    /// cluster-scoped, created with `POST` and an empty body `{}`).
    DirectClusterEndpointToken {
        spec: DirectClusterEndpointTokenSpec,
        status: DirectClusterEndpointTokenStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "DirectClusterEndpointToken",
        plural: "directclusterendpointtokens",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// DirectClusterEndpointToken spec (empty in the first Loft version, still valid).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectClusterEndpointTokenSpec {
    /// Lifetime in seconds; 0 = the server default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: i64,
    /// Scope of the minted token; `None` inherits the caller's scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AccessKeyScope>,
}

/// DirectClusterEndpointToken status. `Debug` redacts the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectClusterEndpointTokenStatus {
    /// The minted bearer token (secret).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub token: String,
}

impl std::fmt::Debug for DirectClusterEndpointTokenStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectClusterEndpointTokenStatus")
            .field("token", &crate::storage::redacted(&self.token))
            .finish()
    }
}

api_object! {
    /// `selves` (POST): who the caller (or `spec.accessKey`) is, and with which scope.
    /// Named `Self_` because `Self` is a Rust keyword.
    Self_ {
        spec: SelfSpec,
        status: SelfStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "Self",
        plural: "selves",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// Self spec. `Debug` redacts the access key.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfSpec {
    /// Validate this key instead of the caller's credential (secret).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub access_key: String,
}

impl std::fmt::Debug for SelfSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSpec")
            .field("access_key", &crate::storage::redacted(&self.access_key))
            .finish()
    }
}

/// Self status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfStatus {
    /// The user, if the caller is a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// The team, if the caller is a team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<EntityInfo>,
    /// Name of the access key used (not the key itself).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub access_key: String,
    /// Scope of that access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_scope: Option<AccessKeyScope>,
    /// Type of that access key.
    #[serde(default, skip_serializing_if = "AccessKeyType::is_none")]
    pub access_key_type: AccessKeyType,
    /// Kubernetes subject name the caller is forwarded as.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// UID of the user or team.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
    /// Groups of the caller.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// Instance ID of the platform.
    #[serde(
        rename = "instanceID",
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
    /// Public host of the platform.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub loft_host: String,
    /// Namespace prefix of project namespaces (`loft-p-`).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub project_namespace_prefix: String,
}

/// A user, as reported by `selves`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// Kubernetes name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// User name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub username: String,
    /// E-mail.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub email: String,
    /// Subject (Kubernetes user name).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// Icon URL.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub icon: String,
}

/// A team (or other entity), as reported by `selves`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityInfo {
    /// Kubernetes name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// User name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub username: String,
    /// Icon URL.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub icon: String,
}

api_object! {
    /// `ownedaccesskeys`: the current user's own access keys (spec/status are the storage types inline).
    OwnedAccessKey {
        spec: AccessKeySpec,
        status: AccessKeyStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "OwnedAccessKey",
        plural: "ownedaccesskeys",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// A user or a team that owns an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOrTeam {
    /// Owning user.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// Owning team.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub team: String,
}

/// Loft `Access`: who may use an object with which verbs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Name of this entry.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Allowed verbs (`*` = all).
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Allowed subresources.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subresources: Vec<String>,
    /// Users (`*` = all).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub users: Vec<String>,
    /// Teams.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub teams: Vec<String>,
}

/// Reference to a Secret holding a kubeconfig.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub secret_name: String,
    /// Secret namespace.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub secret_namespace: String,
    /// Key in the secret.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub key: String,
}

/// Phase, reason and message, the status shape shared by clusters and instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseStatus {
    /// Phase (`Initialized`, `Ready`, `Sleeping`, `Failed`, …; kept as sent).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub phase: String,
    /// Machine-readable reason.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub reason: String,
    /// Human-readable message.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub message: String,
}

/// Status of a `VirtualClusterInstance` or `SpaceInstance`: the stored phase, and what the
/// requester may do with the instance, which management v1 works out per request. The
/// `vcluster platform` CLI lists only instances whose `canUse` is true.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Phase, reason and message, as stored.
    #[serde(flatten)]
    pub phase: PhaseStatus,
    /// The requester may use the instance.
    #[serde(default, skip_serializing_if = "is_false")]
    pub can_use: bool,
    /// The requester may update the instance.
    #[serde(default, skip_serializing_if = "is_false")]
    pub can_update: bool,
    /// A virtual cluster instance without an agent has a network peer available (not on
    /// space instances).
    #[serde(default, skip_serializing_if = "is_false")]
    pub online: bool,
}

api_object! {
    /// `clusters`: a connected cluster (cluster-scoped). The direct endpoint lives in the
    /// `loft.sh/direct-cluster-endpoint*` annotations of `metadata`.
    Cluster {
        spec: ClusterSpec,
        status: PhaseStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "Cluster",
        plural: "clusters",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// Cluster spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Description.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserOrTeam>,
    /// Secret with the kubeconfig used to reach the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SecretRef>,
    /// The cluster the platform itself runs in.
    #[serde(default, skip_serializing_if = "is_false")]
    pub local: bool,
    /// Whether the cluster joins the network peer mesh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network_peer: bool,
    /// Namespace of the agent.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub management_namespace: String,
    /// Marked unusable: no new instances are scheduled on it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unusable: bool,
    /// Who may access it.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub access: Vec<Access>,
}

api_object! {
    /// `projects` (cluster-scoped).
    Project {
        spec: ProjectSpec,
        status: ProjectStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "Project",
        plural: "projects",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// Project spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Description.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserOrTeam>,
    /// Clusters instances of this project may run on (`*` = all).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_clusters: Vec<AllowedCluster>,
    /// Members and their cluster roles.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub members: Vec<Member>,
    /// Who may access the project object.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub access: Vec<Access>,
}

/// A cluster a project may use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedCluster {
    /// Cluster name (`*` = all).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
}

/// A project member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// `User` or `Team`.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// API group of the kind.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub group: String,
    /// Member name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Cluster role granted inside the project (e.g. `loft-management-project-user`).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_role: String,
}

/// Project status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// Human-readable message.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub message: String,
}

/// Reference to a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Template name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Template version.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    /// Apply the template only once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync_once: bool,
}

api_object! {
    /// `virtualclusterinstances` (namespaced, in the project namespace).
    VirtualClusterInstance {
        spec: VirtualClusterInstanceSpec,
        status: InstanceStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "VirtualClusterInstance",
        plural: "virtualclusterinstances",
        scope: k8s_openapi::NamespaceResourceScope,
    }
}

/// VirtualClusterInstance spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterInstanceSpec {
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Description.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserOrTeam>,
    /// Template it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    /// Where the virtual cluster runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<VirtualClusterClusterRef>,
    /// Template parameters (YAML text).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub parameters: String,
    /// Who may access it.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub access: Vec<Access>,
    /// Whether it joins the network peer mesh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network_peer: bool,
    /// Not managed by the platform.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// DEPRECATED: `true` means `forwardTokenMode: TokenReview`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_token: bool,
    /// `Off` (default: impersonate), `TokenReview` or `Passthrough`; kept as sent.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub forward_token_mode: String,
}

/// Where a virtual cluster instance runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterClusterRef {
    /// Host cluster.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster: String,
    /// Host namespace.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// Virtual cluster name on the host.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub virtual_cluster: String,
}

api_object! {
    /// `spaceinstances` (namespaced, in the project namespace).
    SpaceInstance {
        spec: SpaceInstanceSpec,
        status: InstanceStatus,
        group: "management.loft.sh",
        version: "v1",
        kind: "SpaceInstance",
        plural: "spaceinstances",
        scope: k8s_openapi::NamespaceResourceScope,
    }
}

/// SpaceInstance spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceInstanceSpec {
    /// Display name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Description.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserOrTeam>,
    /// Template it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    /// Where the space (a namespace) lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// Template parameters (YAML text).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub parameters: String,
    /// Who may access it.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub access: Vec<Access>,
}

/// A namespace on a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Cluster name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster: String,
    /// Namespace.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
}
