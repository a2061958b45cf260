//! Discovery and OpenAPI documents of the management API (`management.loft.sh/v1`), shaped as
//! kube-apiserver serves them (spec/kubernetes-edges.md §6).

use serde::Serialize;
use serde_json::{Value, json};

/// The API group served under `/kubernetes/management`.
pub const GROUP: &str = "management.loft.sh";
/// Its only version.
pub const VERSION: &str = "v1";
/// `group/version`.
pub const GROUP_VERSION: &str = "management.loft.sh/v1";
/// Content type of aggregated discovery.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One resource of the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Plural resource name.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Supported verbs.
    pub verbs: &'static [&'static str],
}

/// Every resource the management API serves.
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        plural: "clusters",
        singular: "cluster",
        kind: "Cluster",
        namespaced: false,
        verbs: &["get", "list"],
    },
    ResourceInfo {
        plural: "directclusterendpointtokens",
        singular: "directclusterendpointtoken",
        kind: "DirectClusterEndpointToken",
        namespaced: false,
        verbs: &["create"],
    },
    ResourceInfo {
        plural: "ownedaccesskeys",
        singular: "ownedaccesskey",
        kind: "OwnedAccessKey",
        namespaced: false,
        verbs: &["create", "delete", "get", "list"],
    },
    ResourceInfo {
        plural: "projects",
        singular: "project",
        kind: "Project",
        namespaced: false,
        verbs: &["get", "list"],
    },
    ResourceInfo {
        plural: "selves",
        singular: "self",
        kind: "Self",
        namespaced: false,
        verbs: &["create"],
    },
    ResourceInfo {
        plural: "spaceinstances",
        singular: "spaceinstance",
        kind: "SpaceInstance",
        namespaced: true,
        verbs: &["get", "list"],
    },
    ResourceInfo {
        plural: "virtualclusterinstances",
        singular: "virtualclusterinstance",
        kind: "VirtualClusterInstance",
        namespaced: true,
        verbs: &["get", "list"],
    },
];

/// Looks a resource up by plural name.
pub fn resource(plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// Whether an `Accept` header asks for aggregated discovery v2 (the only version kube-apiserver
/// still recognises; `v2beta1` falls back to the legacy document).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        if !base.eq_ignore_ascii_case("application/json") {
            return false;
        }
        let (mut g, mut v, mut r#as) = (false, false, false);
        for param in parts {
            match param.split_once('=') {
                Some(("g", "apidiscovery.k8s.io")) => g = true,
                Some(("v", "v2")) => v = true,
                Some(("as", "APIGroupDiscoveryList")) => r#as = true,
                _ => {}
            }
        }
        g && v && r#as
    })
}

// The documents below are written in the field order of their Go structs (k8s.io/apimachinery
// `metav1` and k8s.io/api `apidiscovery/v2`), as kube-apiserver writes them: serde writes a
// struct's fields in declaration order, where a `serde_json::Value` map would sort them.

/// `metav1.APIVersions`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiVersions {
    kind: &'static str,
    versions: [&'static str; 0],
    // Not `omitempty` in Go: a nil slice is written as `null`.
    #[serde(rename = "serverAddressByClientCIDRs")]
    server_address_by_client_cidrs: Option<()>,
}

/// `metav1.GroupVersionForDiscovery`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupVersion {
    group_version: &'static str,
    version: &'static str,
}

const THE_VERSION: GroupVersion = GroupVersion {
    group_version: GROUP_VERSION,
    version: VERSION,
};

/// `metav1.APIGroup`; `kind` and `apiVersion` are empty (left out) inside a list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroup {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_version: &'static str,
    name: &'static str,
    versions: [GroupVersion; 1],
    preferred_version: GroupVersion,
}

/// `metav1.APIGroupList`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroupList {
    kind: &'static str,
    api_version: &'static str,
    groups: [ApiGroup; 1],
}

/// `metav1.APIResource` (the fields kubegate fills in).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiResource {
    name: &'static str,
    singular_name: &'static str,
    namespaced: bool,
    kind: &'static str,
    verbs: &'static [&'static str],
}

/// `metav1.APIResourceList`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceList {
    kind: &'static str,
    api_version: &'static str,
    group_version: &'static str,
    resources: Vec<ApiResource>,
}

/// `apidiscovery/v2.APIGroupDiscoveryList`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDiscoveryList {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    items: Vec<GroupDiscovery>,
}

/// `{}`: an empty `ListMeta`.
#[derive(Debug, Serialize)]
struct Empty {}

/// `apidiscovery/v2.APIGroupDiscovery`.
#[derive(Debug, Serialize)]
struct GroupDiscovery {
    metadata: GroupName,
    versions: [VersionDiscovery; 1],
}

/// The group's `ObjectMeta`: its name only.
#[derive(Debug, Serialize)]
struct GroupName {
    name: &'static str,
}

/// `apidiscovery/v2.APIVersionDiscovery`.
#[derive(Debug, Serialize)]
struct VersionDiscovery {
    version: &'static str,
    resources: Vec<ResourceDiscovery>,
    freshness: &'static str,
}

/// `apidiscovery/v2.APIResourceDiscovery` (the fields kubegate fills in).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDiscovery {
    resource: &'static str,
    response_kind: GroupVersionKind,
    scope: &'static str,
    singular_resource: &'static str,
    verbs: &'static [&'static str],
}

/// `metav1.GroupVersionKind`.
#[derive(Debug, Serialize)]
struct GroupVersionKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

/// `GET /api` (legacy): the management API serves no core group.
pub fn legacy_core_versions() -> ApiVersions {
    ApiVersions {
        kind: "APIVersions",
        versions: [],
        server_address_by_client_cidrs: None,
    }
}

fn group(kind: &'static str, api_version: &'static str) -> ApiGroup {
    ApiGroup {
        kind,
        api_version,
        name: GROUP,
        versions: [THE_VERSION],
        preferred_version: THE_VERSION,
    }
}

/// `GET /apis` (legacy).
pub fn legacy_group_list() -> ApiGroupList {
    ApiGroupList {
        kind: "APIGroupList",
        api_version: "v1",
        groups: [group("", "")],
    }
}

/// `GET /apis/management.loft.sh` (legacy group document).
pub fn legacy_group() -> ApiGroup {
    group("APIGroup", "v1")
}

/// `GET /apis/management.loft.sh/v1`.
pub fn resource_list() -> ApiResourceList {
    let resources = RESOURCES
        .iter()
        .map(|r| ApiResource {
            name: r.plural,
            singular_name: r.singular,
            namespaced: r.namespaced,
            kind: r.kind,
            verbs: r.verbs,
        })
        .collect();
    ApiResourceList {
        kind: "APIResourceList",
        api_version: "v1",
        group_version: GROUP_VERSION,
        resources,
    }
}

/// Aggregated discovery for `/apis` (`core == false`) or `/api` (`core == true`, empty).
pub fn aggregated(core: bool) -> GroupDiscoveryList {
    let items = if core {
        Vec::new()
    } else {
        let resources = RESOURCES
            .iter()
            .map(|r| ResourceDiscovery {
                resource: r.plural,
                response_kind: GroupVersionKind {
                    group: GROUP,
                    version: VERSION,
                    kind: r.kind,
                },
                scope: if r.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                },
                singular_resource: r.singular,
                verbs: r.verbs,
            })
            .collect();
        vec![GroupDiscovery {
            metadata: GroupName { name: GROUP },
            versions: [VersionDiscovery {
                version: VERSION,
                resources,
                freshness: "Current",
            }],
        }]
    };
    GroupDiscoveryList {
        kind: "APIGroupDiscoveryList",
        api_version: "apidiscovery.k8s.io/v2",
        metadata: Empty {},
        items,
    }
}

/// `GET /openapi/v3`: the paths index.
pub fn openapi_index() -> Value {
    json!({"paths": {
        format!("apis/{GROUP_VERSION}"): {"serverRelativeURL": format!("/openapi/v3/apis/{GROUP_VERSION}?hash={}", openapi_hash())},
    }})
}

/// A stable hash of the group-version document, so clients may cache it.
pub fn openapi_hash() -> String {
    use sha2::Digest;
    let doc = openapi_group_version();
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let digest = sha2::Sha256::digest(&bytes);
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

/// `GET /openapi/v3/apis/management.loft.sh/v1`: enough for kubectl's field-validation probe and
/// `kubectl explain`: every kind has a schema, and a PATCH operation tagged with its GVK that
/// takes the `fieldValidation` parameter (the server honours `Strict`, `Warn` and `Ignore`).
pub fn openapi_group_version() -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in RESOURCES {
        let gvk = json!({"group": GROUP, "version": VERSION, "kind": r.kind});
        let schema_name = format!(
            "com.github.loft-sh.api.v4.pkg.apis.management.v1.{}",
            r.kind
        );
        schemas.insert(
            schema_name.clone(),
            json!({
                "description": format!("{} of management.loft.sh/v1.", r.kind),
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": {"type": "object"},
                    "status": {"type": "object"},
                },
                "x-kubernetes-group-version-kind": [gvk.clone()],
            }),
        );
        let item = if r.namespaced {
            format!(
                "/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{}/{{name}}",
                r.plural
            )
        } else {
            format!("/apis/{GROUP_VERSION}/{}/{{name}}", r.plural)
        };
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}ManagementLoftShV1{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk.clone(),
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
                     "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict."},
                ],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}},
            })
        };
        paths.insert(item, json!({"patch": operation("patch")}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "kubegate management API", "version": VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `version.Info`, the document kube clients read from `/version`, in its Go field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    major: &'static str,
    minor: &'static str,
    git_version: &'static str,
    git_commit: &'static str,
    git_tree_state: &'static str,
    build_date: &'static str,
    go_version: &'static str,
    compiler: &'static str,
    platform: String,
}

/// The Kubernetes version the management API reports (`gitVersion` of its `/version`).
pub(crate) const KUBE_GIT_VERSION: &str = concat!("v1.37.0-kubegate.", env!("CARGO_PKG_VERSION"));

/// The management API's `/version` (Kubernetes `version.Info`).
pub fn version_info() -> VersionInfo {
    VersionInfo {
        major: "1",
        minor: "37",
        git_version: KUBE_GIT_VERSION,
        git_commit: "",
        git_tree_state: "clean",
        build_date: "1970-01-01T00:00:00Z",
        go_version: "",
        compiler: "rustc",
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vectors §V6.1/§V6.2: the Accept kubectl sends selects aggregated discovery.
    #[test]
    fn aggregated_accept() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn openapi_has_a_fieldvalidation_patch_per_kind() {
        let doc = openapi_group_version();
        let paths = doc["paths"].as_object().unwrap();
        for r in RESOURCES {
            let found = paths.values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == r.kind
                    && p["patch"]["parameters"][0]["name"] == "fieldValidation"
            });
            assert!(found, "{}", r.kind);
        }
        let index = openapi_index();
        let url = index["paths"][format!("apis/{GROUP_VERSION}")]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.ends_with(&openapi_hash()));
    }
}
