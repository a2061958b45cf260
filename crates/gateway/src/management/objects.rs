//! `clusters`, `projects`, `spaceinstances`, `virtualclusterinstances`: get and list, showing
//! only what the caller may use (gateway RBAC `use` on the object, and a scope that admits it).

use crate::service::RequestBody;
use http::{Request, Response};
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubegate_api::{
    Cluster, ClusterRef, ClusterSpec, InstanceStatus, PhaseStatus, Project, ProjectSpec,
    ProjectStatus, SpaceInstance, SpaceInstanceSpec, VirtualClusterInstance,
    VirtualClusterInstanceSpec,
};
use kubegate_authz::Attributes;
use kubegate_proxy::ProxyBody;
use kubegate_routing::Target;
use std::collections::BTreeMap;

use super::discovery::GROUP;
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

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        uid: Some(uid(&[namespace.unwrap_or(""), name])),
        ..ObjectMeta::default()
    }
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

/// What an instance the caller may use says of it: listed only when usable, so `canUse`.
fn usable_instance() -> Option<InstanceStatus> {
    Some(InstanceStatus {
        phase: PhaseStatus {
            phase: "Ready".to_owned(),
            ..PhaseStatus::default()
        },
        can_use: true,
        ..InstanceStatus::default()
    })
}

fn phase(phase: &str) -> Option<PhaseStatus> {
    Some(PhaseStatus {
        phase: phase.to_owned(),
        ..PhaseStatus::default()
    })
}

fn clusters(ctx: &Ctx<'_>) -> Vec<Cluster> {
    ctx.runtime
        .directory
        .clusters()
        .filter(|c| usable(ctx, &Target::Cluster { cluster: &c.name }, ""))
        .map(|c| {
            let mut metadata = meta(&c.name, None);
            if let Some(endpoint) = &c.direct_endpoint {
                // Where clients find the cluster's agent, and how to trust it (Loft's
                // annotations).
                let mut annotations = BTreeMap::from([(
                    "loft.sh/direct-cluster-endpoint".to_owned(),
                    endpoint.clone(),
                )]);
                if let Some(ca) = &c.direct_endpoint_ca_data {
                    annotations.insert(
                        "loft.sh/direct-cluster-endpoint-ca-data".to_owned(),
                        ca.trim().to_owned(),
                    );
                }
                if c.direct_endpoint_insecure {
                    annotations.insert(
                        "loft.sh/direct-cluster-endpoint-insecure".to_owned(),
                        "true".to_owned(),
                    );
                }
                metadata.annotations = Some(annotations);
            }
            Cluster {
                metadata,
                spec: ClusterSpec {
                    display_name: c.display_name.clone().unwrap_or_default(),
                    ..ClusterSpec::default()
                },
                status: phase("Initialized"),
            }
        })
        .collect()
}

fn spaces(ctx: &Ctx<'_>) -> Vec<SpaceInstance> {
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
        .map(|s| SpaceInstance {
            metadata: meta(&s.name, Some(&project_namespace(&s.project))),
            spec: SpaceInstanceSpec {
                cluster_ref: Some(ClusterRef {
                    cluster: s.cluster.clone(),
                    namespace: s.namespace.clone(),
                }),
                ..SpaceInstanceSpec::default()
            },
            status: usable_instance(),
        })
        .collect()
}

fn virtual_clusters(ctx: &Ctx<'_>) -> Vec<VirtualClusterInstance> {
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
        .map(|(project, name)| VirtualClusterInstance {
            metadata: meta(name, Some(&project_namespace(project))),
            spec: VirtualClusterInstanceSpec::default(),
            status: usable_instance(),
        })
        .collect()
}

fn projects(ctx: &Ctx<'_>) -> Vec<Project> {
    let spaces = spaces(ctx);
    let vcs = virtual_clusters(ctx);
    let visible = |project: &str| {
        let ns = Some(project_namespace(project));
        spaces.iter().any(|o| o.metadata.namespace == ns)
            || vcs.iter().any(|o| o.metadata.namespace == ns)
    };
    ctx.runtime
        .directory
        .projects()
        .filter(|p| visible(&p.name))
        .map(|p| Project {
            metadata: meta(&p.name, None),
            spec: ProjectSpec {
                display_name: p.display_name.clone().unwrap_or_default(),
                ..ProjectSpec::default()
            },
            // Loft's `ProjectStatus` is a struct field: Go writes it even when empty.
            status: Some(ProjectStatus::default()),
        })
        .collect()
}

/// Serves get and list of the read-only resources.
pub(super) fn read(ctx: &Ctx<'_>, req: &Request<RequestBody>) -> Response<ProxyBody> {
    match ctx.resource.plural {
        "clusters" => answer(ctx, req, clusters(ctx)),
        "projects" => answer(ctx, req, projects(ctx)),
        "spaceinstances" => answer(ctx, req, spaces(ctx)),
        "virtualclusterinstances" => answer(ctx, req, virtual_clusters(ctx)),
        _ => answer::<Cluster>(ctx, req, Vec::new()),
    }
}

/// The list, or the one object the request names, of what the caller may see.
fn answer<T>(ctx: &Ctx<'_>, req: &Request<RequestBody>, mut items: Vec<T>) -> Response<ProxyBody>
where
    T: k8s_openapi::ListableResource
        + Metadata<Ty = ObjectMeta>
        + kubegate_api::ListItem
        + serde::Serialize
        + Clone,
{
    let named = |o: &T, name: &str| o.metadata().name.as_deref() == Some(name);
    if ctx.resource.namespaced && !ctx.namespace.is_empty() {
        items.retain(|o| o.metadata().namespace.as_deref() == Some(ctx.namespace.as_str()));
        if !ctx.namespace.starts_with(PROJECT_NAMESPACE_PREFIX) {
            items.clear();
        }
    }
    if ctx.verb == "list" {
        if !ctx.name.is_empty() {
            // A `metadata.name` field selector pinned the name.
            items.retain(|o| named(o, &ctx.name));
        }
        return list_or_table(req, &items);
    }
    match items.into_iter().find(|o| named(o, &ctx.name)) {
        Some(object) => object_or_table(req, &object),
        None => respond(
            &kubegate_proxy::Status::not_found(GROUP, ctx.resource.plural, &ctx.name),
            req,
        ),
    }
}
