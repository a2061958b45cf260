//! The configured world, indexed for lookups on the request path: users and their groups,
//! clusters, legacy virtual clusters, projects with spaces and virtual clusters.

use std::collections::BTreeMap;

use kubegate_proxy::AuditLevel;
use kubegate_proxy::ext::target_label;
use kubegate_routing::Target;

use crate::config::{Config, UpstreamConfig};
use crate::upstreams::UpstreamKey;

/// A user with everything needed to build its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// User name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Configured groups plus the names of the teams the user belongs to (and those teams' groups).
    pub groups: Vec<String>,
}

/// A project space: a namespace on a connected cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceEntry {
    /// Project name.
    pub project: String,
    /// Space name.
    pub name: String,
    /// Host cluster.
    pub cluster: String,
    /// The namespace requests are fenced to.
    pub namespace: String,
}

/// Lookups over the configuration.
///
/// Targets named by more than one name (a space is a project and a name) are kept in nested
/// maps, one level per name: a request looks its target up by the `&str`s its path holds,
/// without building an owned key, and listings still come out ordered by those names.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: foldhash::HashMap<String, UserEntry>,
    clusters: BTreeMap<String, Routed<crate::config::ClusterConfig>>,
    /// cluster → namespace → name.
    legacy_vclusters: BTreeMap<String, BTreeMap<String, BTreeMap<String, Routed<UpstreamConfig>>>>,
    /// project → space.
    spaces: BTreeMap<String, BTreeMap<String, Routed<SpaceEntry>>>,
    /// project → virtual cluster.
    project_vclusters: BTreeMap<String, BTreeMap<String, Routed<UpstreamConfig>>>,
    projects: BTreeMap<String, crate::config::ProjectConfig>,
    /// Targets with their own audit level, by metric/audit label.
    audit_levels: foldhash::HashMap<String, AuditLevel>,
    default_audit_level: AuditLevel,
}

/// A configured target with the key of the forwarding service its requests go to, made once
/// with the configuration instead of on every request.
#[derive(Debug, Clone)]
struct Routed<T> {
    entry: T,
    key: UpstreamKey,
}

/// Where a target's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A Kubernetes API server, with an optional namespace fence (project spaces).
    Upstream {
        /// The upstream's config.
        upstream: &'a UpstreamConfig,
        /// The only namespace resource requests may touch, for project spaces.
        fence: Option<&'a str>,
        /// The forwarding service's key: a project space's is its host cluster's.
        key: &'a UpstreamKey,
    },
}

impl Directory {
    /// Indexes a validated configuration.
    pub fn new(config: &Config) -> Directory {
        let mut users: foldhash::HashMap<String, UserEntry> = config
            .users
            .iter()
            .map(|u| {
                let entry = UserEntry {
                    name: u.name.clone(),
                    uid: u.uid.clone().unwrap_or_else(|| u.name.clone()),
                    groups: u.groups.clone(),
                };
                (u.name.clone(), entry)
            })
            .collect();
        for team in &config.teams {
            for member in &team.members {
                if let Some(user) = users.get_mut(member) {
                    user.groups.push(team.name.clone());
                    user.groups.extend(team.groups.iter().cloned());
                }
            }
        }
        for user in users.values_mut() {
            let mut seen = std::collections::HashSet::new();
            user.groups.retain(|g| seen.insert(g.clone()));
        }
        let cluster_key = |name: &str| UpstreamKey::Cluster(name.to_owned());
        let mut clusters: BTreeMap<String, Routed<crate::config::ClusterConfig>> = config
            .clusters
            .iter()
            .map(|c| {
                let routed = Routed {
                    entry: c.clone(),
                    key: cluster_key(&c.name),
                };
                (c.name.clone(), routed)
            })
            .collect();
        // An agent serves the cluster it runs in under the name the central gateway uses.
        if let Some(agent) = &config.agent {
            clusters
                .entry(agent.cluster.clone())
                .or_insert_with(|| Routed {
                    entry: crate::config::ClusterConfig {
                        name: agent.cluster.clone(),
                        display_name: None,
                        upstream: agent.upstream.clone(),
                        grafana: None,
                        direct_endpoint: None,
                        direct_endpoint_ca_data: None,
                        direct_endpoint_insecure: false,
                        audit_level: None,
                    },
                    key: cluster_key(&agent.cluster),
                });
        }
        let mut audit_levels = foldhash::HashMap::default();
        let mut set_level = |target: Target<'_>, level: Option<AuditLevel>| {
            if let Some(level) = level {
                audit_levels.insert(target_label(&target), level);
            }
        };
        for c in &config.clusters {
            set_level(Target::Cluster { cluster: &c.name }, c.audit_level);
        }
        for v in &config.virtual_clusters {
            let target = Target::VirtualCluster {
                cluster: &v.cluster,
                namespace: &v.namespace,
                name: &v.name,
            };
            set_level(target, v.audit_level);
        }
        for p in &config.projects {
            for s in &p.spaces {
                let target = Target::ProjectSpace {
                    project: &p.name,
                    space: &s.name,
                };
                set_level(target, s.audit_level);
            }
            for v in &p.virtual_clusters {
                let target = Target::ProjectVirtualCluster {
                    project: &p.name,
                    virtual_cluster: &v.name,
                };
                set_level(target, v.audit_level);
            }
        }
        let mut legacy_vclusters: BTreeMap<String, BTreeMap<String, BTreeMap<_, _>>> =
            BTreeMap::new();
        for v in &config.virtual_clusters {
            let key =
                UpstreamKey::VirtualCluster(v.cluster.clone(), v.namespace.clone(), v.name.clone());
            legacy_vclusters
                .entry(v.cluster.clone())
                .or_default()
                .entry(v.namespace.clone())
                .or_default()
                .insert(
                    v.name.clone(),
                    Routed {
                        entry: v.upstream.clone(),
                        key,
                    },
                );
        }
        let mut spaces: BTreeMap<String, BTreeMap<_, _>> = BTreeMap::new();
        let mut project_vclusters: BTreeMap<String, BTreeMap<_, _>> = BTreeMap::new();
        for p in &config.projects {
            for s in &p.spaces {
                let entry = SpaceEntry {
                    project: p.name.clone(),
                    name: s.name.clone(),
                    cluster: s.cluster.clone(),
                    namespace: s.namespace().to_owned(),
                };
                let key = cluster_key(&s.cluster);
                spaces
                    .entry(p.name.clone())
                    .or_default()
                    .insert(s.name.clone(), Routed { entry, key });
            }
            for v in &p.virtual_clusters {
                let key = UpstreamKey::ProjectVirtualCluster(p.name.clone(), v.name.clone());
                project_vclusters.entry(p.name.clone()).or_default().insert(
                    v.name.clone(),
                    Routed {
                        entry: v.upstream.clone(),
                        key,
                    },
                );
            }
        }
        let projects = config
            .projects
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Directory {
            users,
            clusters,
            legacy_vclusters,
            spaces,
            project_vclusters,
            projects,
            audit_levels,
            default_audit_level: config.audit.level,
        }
    }

    /// The audit level of a request to `target`, whose audit label is `label`. Only Kubernetes
    /// API targets follow the configuration: `/auth` carries passwords and tokens, and Grafana
    /// and the gateway's own endpoints are not Kubernetes objects, so those stay at `Metadata`.
    pub fn audit_level(&self, target: &Target<'_>, label: &str) -> AuditLevel {
        match target {
            Target::Auth | Target::Oidc | Target::Grafana { .. } | Target::Ops(_) => {
                AuditLevel::Metadata.min(self.default_audit_level)
            }
            _ => self
                .audit_levels
                .get(label)
                .copied()
                .unwrap_or(self.default_audit_level),
        }
    }

    /// A configured user.
    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(name)
    }

    /// Connected clusters, by name.
    pub fn clusters(&self) -> impl Iterator<Item = &crate::config::ClusterConfig> {
        self.clusters.values().map(|c| &c.entry)
    }

    /// A connected cluster.
    pub fn cluster(&self, name: &str) -> Option<&crate::config::ClusterConfig> {
        self.clusters.get(name).map(|c| &c.entry)
    }

    /// Projects, by name.
    pub fn projects(&self) -> impl Iterator<Item = &crate::config::ProjectConfig> {
        self.projects.values()
    }

    /// Project spaces.
    pub fn spaces(&self) -> impl Iterator<Item = &SpaceEntry> {
        self.spaces
            .values()
            .flat_map(BTreeMap::values)
            .map(|s| &s.entry)
    }

    /// Project virtual cluster names as `(project, name)`.
    pub fn project_virtual_clusters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.project_vclusters
            .iter()
            .flat_map(|(p, vclusters)| vclusters.keys().map(move |v| (p.as_str(), v.as_str())))
    }

    /// Whether the target names something configured: always for the gateway's own
    /// endpoints; for a Kubernetes target or a Grafana, only if it is configured.
    pub fn knows(&self, target: &Target<'_>) -> bool {
        match *target {
            Target::Cluster { .. }
            | Target::VirtualCluster { .. }
            | Target::ProjectSpace { .. }
            | Target::ProjectVirtualCluster { .. } => self.destination(target).is_some(),
            Target::Grafana { cluster } => self.clusters.contains_key(cluster),
            _ => true,
        }
    }

    /// Where a Kubernetes target's requests go, or `None` if nothing by that name is configured.
    pub fn destination(&self, target: &Target<'_>) -> Option<Destination<'_>> {
        fn upstream(routed: &Routed<UpstreamConfig>) -> Destination<'_> {
            Destination::Upstream {
                upstream: &routed.entry,
                fence: None,
                key: &routed.key,
            }
        }
        match *target {
            Target::Cluster { cluster } => {
                let routed = self.clusters.get(cluster)?;
                Some(Destination::Upstream {
                    upstream: &routed.entry.upstream,
                    fence: None,
                    key: &routed.key,
                })
            }
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => self
                .legacy_vclusters
                .get(cluster)?
                .get(namespace)?
                .get(name)
                .map(upstream),
            Target::ProjectSpace { project, space } => {
                let space = self.spaces.get(project)?.get(space)?;
                let cluster = self.clusters.get(&space.entry.cluster)?;
                Some(Destination::Upstream {
                    upstream: &cluster.entry.upstream,
                    fence: Some(&space.entry.namespace),
                    key: &space.key,
                })
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => self
                .project_vclusters
                .get(project)?
                .get(virtual_cluster)
                .map(upstream),
            _ => None,
        }
    }
}
