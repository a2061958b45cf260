//! `clusters`, `projects`, `spaceinstances`, `virtualclusterinstances`: get and list, showing
//! only what the caller may use (gateway RBAC `use` on the object, and a scope that admits it).

use crate::service::RequestBody;
use http::{Request, Response};
use kubegate_authz::Attributes;
use kubegate_proxy::ProxyBody;
use kubegate_routing::Target;
use serde_json::{Value, json};

use super::discovery::{GROUP, GROUP_VERSION};
use super::request::{Ctx, list_or_table, object_or_table};
use crate::access::{PROJECT_NAMESPACE_PREFIX, project_namespace, target_use};
use crate::service::respond;

/// Whether the caller may use a target: its scope admits a discovery read there, and gateway
/// RBAC grants `use` on it.
fn usable(ctx: &Ctx<'_>, target: &Target<'_>, project_ns: &str) -> bool {
    let identity = &ctx.caller.identity;
    let probe = Attributes::non_resource(identity, "get", "/version");
    if !ctx.caller.scope.admits(target, &probe) {
        return false;
    }
    target_use(identity, target, project_ns)
        .is_some_and(|a| ctx.runtime.policy.decide(&a).is_allowed())
}

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({"name": name, "uid": uid(&[namespace.unwrap_or(""), name])});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// A stable UID derived from the object's identity (the configuration holds no UIDs).
fn uid(parts: &[&str]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(parts.join("/").as_bytes());
    let h: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn clusters(ctx: &Ctx<'_>) -> Vec<Value> {
    ctx.runtime
        .directory
        .clusters()
        .filter(|c| usable(ctx, &Target::Cluster { cluster: &c.name }, ""))
        .map(|c| {
            let mut metadata = meta(&c.name, None);
            if let Some(endpoint) = &c.direct_endpoint {
                // Where clients find the cluster's agent (Loft's annotation).
                metadata["annotations"] = json!({"loft.sh/direct-cluster-endpoint": endpoint});
            }
            json!({
                "apiVersion": GROUP_VERSION,
                "kind": "Cluster",
                "metadata": metadata,
                "spec": {"displayName": c.display_name.clone().unwrap_or_default()},
                "status": {"phase": "Initialized"},
            })
        })
        .collect()
}

fn spaces(ctx: &Ctx<'_>) -> Vec<Value> {
    ctx.runtime
        .directory
        .spaces()
        .filter(|s| {
            let target = Target::ProjectSpace {
                project: &s.project,
                space: &s.name,
            };
            usable(ctx, &target, &project_namespace(&s.project))
        })
        .map(|s| {
            json!({
                "apiVersion": GROUP_VERSION,
                "kind": "SpaceInstance",
                "metadata": meta(&s.name, Some(&project_namespace(&s.project))),
                "spec": {"clusterRef": {"cluster": s.cluster, "namespace": s.namespace}},
                "status": {"phase": "Ready"},
            })
        })
        .collect()
}

fn virtual_clusters(ctx: &Ctx<'_>) -> Vec<Value> {
    ctx.runtime
        .directory
        .project_virtual_clusters()
        .filter(|(project, name)| {
            let target = Target::ProjectVirtualCluster {
                project,
                virtual_cluster: name,
            };
            usable(ctx, &target, &project_namespace(project))
        })
        .map(|(project, name)| {
            json!({
                "apiVersion": GROUP_VERSION,
                "kind": "VirtualClusterInstance",
                "metadata": meta(name, Some(&project_namespace(project))),
                "spec": {},
                "status": {"phase": "Ready"},
            })
        })
        .collect()
}

fn projects(ctx: &Ctx<'_>) -> Vec<Value> {
    let spaces = spaces(ctx);
    let vcs = virtual_clusters(ctx);
    let visible = |project: &str| {
        let ns = project_namespace(project);
        spaces
            .iter()
            .chain(vcs.iter())
            .any(|o| o["metadata"]["namespace"] == ns.as_str())
    };
    ctx.runtime
        .directory
        .projects()
        .filter(|p| visible(&p.name))
        .map(|p| {
            json!({
                "apiVersion": GROUP_VERSION,
                "kind": "Project",
                "metadata": meta(&p.name, None),
                "spec": {"displayName": p.display_name.clone().unwrap_or_default()},
            })
        })
        .collect()
}

/// Serves get and list of the read-only resources.
pub(super) fn read(ctx: &Ctx<'_>, req: &Request<RequestBody>) -> Response<ProxyBody> {
    let kind = ctx.resource.kind;
    let mut items = match ctx.resource.plural {
        "clusters" => clusters(ctx),
        "projects" => projects(ctx),
        "spaceinstances" => spaces(ctx),
        "virtualclusterinstances" => virtual_clusters(ctx),
        _ => Vec::new(),
    };
    if ctx.resource.namespaced && !ctx.namespace.is_empty() {
        items.retain(|o| o["metadata"]["namespace"] == ctx.namespace.as_str());
        if !ctx.namespace.starts_with(PROJECT_NAMESPACE_PREFIX) {
            items.clear();
        }
    }
    if ctx.verb == "list" {
        if !ctx.name.is_empty() {
            // A `metadata.name` field selector pinned the name.
            items.retain(|o| o["metadata"]["name"] == ctx.name.as_str());
        }
        return list_or_table(req, kind, items);
    }
    match items
        .into_iter()
        .find(|o| o["metadata"]["name"] == ctx.name.as_str())
    {
        Some(object) => object_or_table(req, object),
        None => respond(
            &kubegate_proxy::Status::not_found(GROUP, ctx.resource.plural, &ctx.name),
            req,
        ),
    }
}
