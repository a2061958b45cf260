//! RBAC from `kubegate-authz` behind the [`Authorizer`] seam, replaceable while the server
//! runs, with kube-apiserver's bootstrap discovery roles.

use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kubegate_authz::{Identity, Policy, Verdict};
use serde_json::json;

use crate::Error;
use crate::authz::{Attributes, Authorizer, Decision};

/// RBAC objects (k8s-openapi types).
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    /// Roles.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl Rbac {
    /// kube-apiserver's bootstrap `system:discovery`, `system:public-info-viewer` and
    /// `system:basic-user` roles and bindings: every authenticated user may read discovery,
    /// OpenAPI, health and version and create SelfSubjectAccessReviews; unauthenticated users
    /// may read health and version.
    pub fn bootstrap() -> Self {
        let role = |name: &str, urls: &[&str]| -> Result<ClusterRole, serde_json::Error> {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "rules": [{"nonResourceURLs": urls, "verbs": ["get"]}],
            }))
        };
        let binding = |name: &str,
                       groups: &[&str]|
         -> Result<ClusterRoleBinding, serde_json::Error> {
            let subjects: Vec<_> = groups
                .iter()
                .map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}))
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": subjects,
            }))
        };
        let discovery = [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/openapi",
            "/openapi/*",
            "/readyz",
            "/version",
            "/version/",
        ];
        let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
        // These literals are valid RBAC objects; a failure here is a bug in this file.
        let basic_user = serde_json::from_value::<ClusterRole>(json!({
            "metadata": {"name": "system:basic-user"},
            "rules": [{"apiGroups": ["authorization.k8s.io"],
                       "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                       "verbs": ["create"]}],
        }));
        let (Ok(r1), Ok(r2), Ok(r3), Ok(b1), Ok(b2), Ok(b3)) = (
            role("system:discovery", &discovery),
            role("system:public-info-viewer", &public),
            basic_user,
            binding("system:discovery", &["system:authenticated"]),
            binding(
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"],
            ),
            binding("system:basic-user", &["system:authenticated"]),
        ) else {
            return Self::default();
        };
        Self {
            roles: Vec::new(),
            cluster_roles: vec![r1, r2, r3],
            role_bindings: Vec::new(),
            cluster_role_bindings: vec![b1, b2, b3],
        }
    }

    /// Lets `user` impersonate any user, group, service account, UID and user extra — what a
    /// gateway's upstream identity needs (ClusterRole + ClusterRoleBinding named
    /// `testkit-impersonator-<user>`).
    pub fn with_impersonator(self, user: &str) -> Result<Self, Error> {
        let name = format!("testkit-impersonator-{user}");
        self.with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": [
                {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["*"], "verbs": ["impersonate"]},
            ]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]}),
        ])
    }

    /// Adds objects from JSON (each with its `kind`: Role, ClusterRole, RoleBinding,
    /// ClusterRoleBinding).
    pub fn with_objects(mut self, objects: &[serde_json::Value]) -> Result<Self, Error> {
        for o in objects {
            match o["kind"].as_str().unwrap_or("") {
                "Role" => self.roles.push(serde_json::from_value(o.clone())?),
                "ClusterRole" => self.cluster_roles.push(serde_json::from_value(o.clone())?),
                "RoleBinding" => self.role_bindings.push(serde_json::from_value(o.clone())?),
                "ClusterRoleBinding" => {
                    self.cluster_role_bindings
                        .push(serde_json::from_value(o.clone())?);
                }
                other => return Err(Error::Rbac(format!("not an RBAC kind: {other:?}"))),
            }
        }
        Ok(self)
    }

    fn compile(&self) -> Result<Policy, Error> {
        Policy::compile(
            &self.roles,
            &self.cluster_roles,
            &self.role_bindings,
            &self.cluster_role_bindings,
        )
        .map_err(|e| Error::Rbac(e.to_string()))
    }
}

/// Kubernetes RBAC (`kubegate_authz::Policy`), swappable at run time with [`Self::set`].
#[derive(Debug)]
pub struct RbacAuthorizer {
    policy: RwLock<Arc<Policy>>,
}

impl RbacAuthorizer {
    /// Compiles `rbac`.
    pub fn new(rbac: &Rbac) -> Result<Self, Error> {
        Ok(Self {
            policy: RwLock::new(Arc::new(rbac.compile()?)),
        })
    }

    /// Replaces the policy; requests already being decided finish with the old one.
    pub fn set(&self, rbac: &Rbac) -> Result<(), Error> {
        let policy = Arc::new(rbac.compile()?);
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
        Ok(())
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, a: &Attributes<'_>) -> Decision {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let user = Identity {
            name: a.user.name.clone(),
            uid: a.user.uid.clone(),
            groups: a.user.groups.clone(),
            extra: a.user.extra.clone(),
        };
        let attrs = kubegate_authz::Attributes {
            user: &user,
            verb: a.verb,
            is_resource_request: a.resource_request,
            path: a.path,
            api_group: a.api_group,
            api_version: a.api_version,
            resource: a.resource,
            subresource: a.subresource,
            namespace: a.namespace,
            name: a.name,
        };
        let d = policy.decide(&attrs);
        match d.verdict {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny => Decision::Deny(d.reason.into_owned()),
            Verdict::NoOpinion => Decision::NoOpinion(d.reason.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserInfo;

    fn attrs<'a>(
        user: &'a UserInfo,
        verb: &'a str,
        resource: &'a str,
        ns: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            resource_request: true,
            path: "",
            api_group: "",
            api_version: "v1",
            resource,
            subresource: "",
            namespace: ns,
            name: "",
        }
    }

    #[test]
    fn impersonator_may_impersonate_everything() {
        let authz = RbacAuthorizer::new(&Rbac::default().with_impersonator("gw").unwrap()).unwrap();
        let gw = UserInfo::new("gw");
        for (group, resource, sub) in [
            ("", "users", ""),
            ("", "groups", ""),
            ("", "serviceaccounts", ""),
            ("authentication.k8s.io", "uids", ""),
            ("authentication.k8s.io", "userextras", "scopes"),
        ] {
            let a = Attributes {
                api_group: group,
                subresource: sub,
                ..attrs(&gw, "impersonate", resource, "")
            };
            assert_eq!(authz.authorize(&a), Decision::Allow, "{resource}/{sub}");
        }
        let other = UserInfo::new("other");
        assert_ne!(
            authz.authorize(&attrs(&other, "impersonate", "users", "")),
            Decision::Allow
        );
    }

    #[test]
    fn bindings_decide_and_can_be_replaced() {
        let rbac = Rbac::bootstrap()
            .with_objects(&[
                json!({"kind": "Role", "metadata": {"name": "cm-reader", "namespace": "default"},
                       "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
                json!({"kind": "RoleBinding", "metadata": {"name": "alice-reads", "namespace": "default"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                       "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
            ])
            .unwrap();
        let authz = RbacAuthorizer::new(&rbac).unwrap();
        let alice = UserInfo::new("alice").with_group("system:authenticated");
        assert_eq!(
            authz.authorize(&attrs(&alice, "list", "configmaps", "default")),
            Decision::Allow
        );
        assert_eq!(
            authz.authorize(&attrs(&alice, "list", "configmaps", "other")),
            Decision::NoOpinion(String::new())
        );
        let discovery = Attributes {
            resource_request: false,
            path: "/apis",
            ..attrs(&alice, "get", "", "")
        };
        assert_eq!(authz.authorize(&discovery), Decision::Allow);
        authz.set(&Rbac::bootstrap()).unwrap();
        assert_eq!(
            authz.authorize(&attrs(&alice, "list", "configmaps", "default")),
            Decision::NoOpinion(String::new())
        );
    }
}
