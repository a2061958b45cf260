#![doc = include_str!("../README.md")]

#[macro_use]
mod macros;
mod auth;
mod management;
mod meta;
mod object;
mod scope;
mod storage;

pub use auth::PlatformVersion;
pub use management::{
    Access, AllowedCluster, Cluster, ClusterRef, ClusterSpec, DirectClusterEndpointToken,
    DirectClusterEndpointTokenSpec, DirectClusterEndpointTokenStatus, EntityInfo, InstanceStatus,
    Member, OwnedAccessKey, PhaseStatus, Project, ProjectSpec, ProjectStatus, SecretRef, Self_,
    SelfSpec, SelfStatus, SpaceInstance, SpaceInstanceSpec, TemplateRef, UserInfo, UserOrTeam,
    VirtualClusterClusterRef, VirtualClusterInstance, VirtualClusterInstanceSpec,
};
pub use meta::GoObjectMeta;
pub use object::{ListItem, ListItems};
pub use scope::{
    AccessKeyScope, AccessKeyScopeCluster, AccessKeyScopeProject, AccessKeyScopeRole,
    AccessKeyScopeRoleName, AccessKeyScopeRule, AccessKeyScopeSpace, AccessKeyScopeVirtualCluster,
    AccessKeyVirtualCluster, GroupResources, RequestTarget,
};
pub use storage::{
    AccessKey, AccessKeyIdentity, AccessKeyOidc, AccessKeyOidcProvider, AccessKeySpec,
    AccessKeyStatus, AccessKeyType,
};
