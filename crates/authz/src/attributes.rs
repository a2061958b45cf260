//! What is being asked: kube-apiserver's `authorizer.Attributes`, borrowed.

use kubegate_routing::RequestInfo;

use crate::Identity;

/// The attributes an authorizer decides on: a user plus the request fields of a
/// [`RequestInfo`]. Everything is borrowed, so building one allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// Who is asking.
    pub user: &'a Identity,
    /// Kubernetes verb (`get`, `list`, …) or, for non-resource requests, the lowercase method.
    pub verb: &'a str,
    /// Whether this is a resource request (else a non-resource URL request).
    pub is_resource_request: bool,
    /// Decoded request path (what non-resource rules match).
    pub path: &'a str,
    /// API group (`""` = core).
    pub api_group: &'a str,
    /// API version.
    pub api_version: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource.
    pub subresource: &'a str,
    /// Namespace (`""` = cluster scope).
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl<'a> Attributes<'a> {
    /// Attributes of a parsed request (what kube-apiserver's `GetAuthorizerAttributes` builds).
    pub fn from_request_info(user: &'a Identity, info: &'a RequestInfo<'_>) -> Self {
        Self {
            user,
            verb: &info.verb,
            is_resource_request: info.is_resource_request,
            path: info.path,
            api_group: info.api_group,
            api_version: info.api_version,
            resource: info.resource,
            subresource: info.subresource,
            namespace: info.namespace,
            name: &info.name,
        }
    }

    /// A resource request: `verb` on `resource` in `api_group`, cluster scope, no name.
    pub fn resource(
        user: &'a Identity,
        verb: &'a str,
        api_group: &'a str,
        resource: &'a str,
    ) -> Self {
        Self {
            user,
            verb,
            is_resource_request: true,
            path: "",
            api_group,
            api_version: "",
            resource,
            subresource: "",
            namespace: "",
            name: "",
        }
    }

    /// A non-resource request: `verb` (lowercase method) on `path`.
    pub fn non_resource(user: &'a Identity, verb: &'a str, path: &'a str) -> Self {
        Self {
            user,
            verb,
            is_resource_request: false,
            path,
            api_group: "",
            api_version: "",
            resource: "",
            subresource: "",
            namespace: "",
            name: "",
        }
    }

    /// The same attributes in namespace `namespace`.
    pub fn in_namespace(self, namespace: &'a str) -> Self {
        Self { namespace, ..self }
    }

    /// The same attributes naming object `name`.
    pub fn named(self, name: &'a str) -> Self {
        Self { name, ..self }
    }

    /// The same attributes on subresource `subresource`.
    pub fn on_subresource(self, subresource: &'a str) -> Self {
        Self {
            subresource,
            ..self
        }
    }

    /// The same attributes with API version `api_version`.
    pub fn with_api_version(self, api_version: &'a str) -> Self {
        Self {
            api_version,
            ..self
        }
    }

    /// The same request asked with another verb (e.g. the extra `create` check of pod
    /// exec/attach/portforward over WebSocket).
    pub fn with_verb(self, verb: &'a str) -> Self {
        Self { verb, ..self }
    }

    /// Pod `exec`, `attach` or `portforward` asked with a verb other than `create`: a
    /// WebSocket upgrade is a `GET` (SPDY's is a `POST`, already `create`), yet it runs
    /// commands or opens ports. kube-apiserver (since 1.35,
    /// `AuthorizePodWebsocketUpgradeCreatePermission`) then also requires `create`:
    /// authorize [`with_verb("create")`](Self::with_verb) too.
    pub fn also_needs_create(&self) -> bool {
        self.is_resource_request
            && self.api_group.is_empty()
            && self.resource == "pods"
            && matches!(self.subresource, "exec" | "attach" | "portforward")
            && self.verb != "create"
    }

    /// The same request asked by another user.
    pub fn as_user(self, user: &'a Identity) -> Self {
        Self { user, ..self }
    }

    /// Whether the verb changes state: `create`, `update`, `patch`, `delete`,
    /// `deletecollection` for resources; `post`, `put`, `patch`, `delete` for non-resource URLs.
    pub fn is_mutating(&self) -> bool {
        if self.is_resource_request {
            matches!(
                self.verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
        } else {
            matches!(self.verb, "post" | "put" | "patch" | "delete")
        }
    }
}
