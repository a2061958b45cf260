//! The gateway's compiled RBAC: the configured objects plus the built-in self-service role every
//! authenticated user holds (discovery, `selves`, own access keys and tokens, listing what they
//! can use).

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubegate_authz::Policy;

use crate::access::MANAGEMENT_GROUP;
use crate::config::{Config, RbacObject};

/// Name of the built-in role bound to `system:authenticated`.
pub const SELF_SERVICE_ROLE: &str = "kubegate:self-service";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// The built-in self-service ClusterRole.
pub fn self_service_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(SELF_SERVICE_ROLE.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                &[MANAGEMENT_GROUP],
                &["selves", "directclusterendpointtokens"],
                &["create"],
            ),
            rule(
                &[MANAGEMENT_GROUP],
                &["ownedaccesskeys"],
                &["create", "get", "list", "delete"],
            ),
            rule(
                &[MANAGEMENT_GROUP],
                &[
                    "clusters",
                    "projects",
                    "spaceinstances",
                    "virtualclusterinstances",
                ],
                &["get", "list"],
            ),
            PolicyRule {
                non_resource_urls: Some(
                    [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/version",
                        "/openapi",
                        "/openapi/*",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            },
        ]),
        aggregation_rule: None,
    }
}

fn self_service_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(SELF_SERVICE_ROLE.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: SELF_SERVICE_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: kubegate_authz::ALL_AUTHENTICATED.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    }
}

/// Compiles the configured RBAC objects plus the built-ins.
pub fn compile(config: &Config) -> Result<Policy, kubegate_authz::PolicyError> {
    let (mut roles, mut cluster_roles, mut role_bindings, mut cluster_role_bindings) = (
        Vec::new(),
        vec![self_service_role()],
        Vec::new(),
        vec![self_service_binding()],
    );
    for object in &config.rbac {
        match object {
            RbacObject::Role(r) => roles.push(r.clone()),
            RbacObject::ClusterRole(r) => cluster_roles.push(r.clone()),
            RbacObject::RoleBinding(b) => role_bindings.push(b.clone()),
            RbacObject::ClusterRoleBinding(b) => cluster_role_bindings.push(b.clone()),
        }
    }
    Policy::compile(
        &roles,
        &cluster_roles,
        &role_bindings,
        &cluster_role_bindings,
    )
}
