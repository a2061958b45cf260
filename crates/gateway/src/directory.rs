//! The configured world, indexed for lookups on the request path: users and their groups,
//! clusters, legacy virtual clusters, projects with spaces and virtual clusters.

use std::collections::BTreeMap;

use kubegate_proxy::AuditLevel;
use kubegate_proxy::ext::target_label;
use kubegate_routing::Target;

use crate::config::{Config, UpstreamConfig};

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
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: foldhash::HashMap<String, UserEntry>,
    clusters: BTreeMap<String, crate::config::ClusterConfig>,
    legacy_vclusters: BTreeMap<(String, String, String), UpstreamConfig>,
    spaces: BTreeMap<(String, String), SpaceEntry>,
    project_vclusters: BTreeMap<(String, String), UpstreamConfig>,
    projects: BTreeMap<String, crate::config::ProjectConfig>,
    /// Targets with their own audit level, by metric/audit label.
    audit_levels: foldhash::HashMap<String, AuditLevel>,
    default_audit_level: AuditLevel,
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
        /// The connected cluster a project space lives on (`None` for other targets).
        space_cluster: Option<&'a str>,
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
        let mut clusters: BTreeMap<String, crate::config::ClusterConfig> = config
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        // An agent serves the cluster it runs in under the name the central gateway uses.
        if let Some(agent) = &config.agent {
            clusters
                .entry(agent.cluster.clone())
                .or_insert_with(|| crate::config::ClusterConfig {
                    name: agent.cluster.clone(),
                    display_name: None,
                    upstream: agent.upstream.clone(),
                    grafana: None,
                    direct_endpoint: None,
                    audit_level: None,
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
        let legacy_vclusters = config
            .virtual_clusters
            .iter()
            .map(|v| {
                (
                    (v.cluster.clone(), v.namespace.clone(), v.name.clone()),
                    v.upstream.clone(),
                )
            })
            .collect();
        let mut spaces = BTreeMap::new();
        let mut project_vclusters = BTreeMap::new();
        for p in &config.projects {
            for s in &p.spaces {
                spaces.insert(
                    (p.name.clone(), s.name.clone()),
                    SpaceEntry {
                        project: p.name.clone(),
                        name: s.name.clone(),
                        cluster: s.cluster.clone(),
                        namespace: s.namespace().to_owned(),
                    },
                );
            }
            for v in &p.virtual_clusters {
                project_vclusters.insert((p.name.clone(), v.name.clone()), v.upstream.clone());
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
        self.clusters.values()
    }

    /// A connected cluster.
    pub fn cluster(&self, name: &str) -> Option<&crate::config::ClusterConfig> {
        self.clusters.get(name)
    }

    /// Projects, by name.
    pub fn projects(&self) -> impl Iterator<Item = &crate::config::ProjectConfig> {
        self.projects.values()
    }

    /// Project spaces.
    pub fn spaces(&self) -> impl Iterator<Item = &SpaceEntry> {
        self.spaces.values()
    }

    /// Project virtual cluster names as `(project, name)`.
    pub fn project_virtual_clusters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.project_vclusters
            .keys()
            .map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// Where a Kubernetes target's requests go, or `None` if nothing by that name is configured.
    pub fn destination(&self, target: &Target<'_>) -> Option<Destination<'_>> {
        match *target {
            Target::Cluster { cluster } => {
                self.clusters.get(cluster).map(|c| Destination::Upstream {
                    upstream: &c.upstream,
                    fence: None,
                    space_cluster: None,
                })
            }
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => self
                .legacy_vclusters
                .get(&(cluster.to_owned(), namespace.to_owned(), name.to_owned()))
                .map(|upstream| Destination::Upstream {
                    upstream,
                    fence: None,
                    space_cluster: None,
                }),
            Target::ProjectSpace { project, space } => {
                let entry = self.spaces.get(&(project.to_owned(), space.to_owned()))?;
                let cluster = self.clusters.get(&entry.cluster)?;
                Some(Destination::Upstream {
                    upstream: &cluster.upstream,
                    fence: Some(&entry.namespace),
                    space_cluster: Some(&entry.cluster),
                })
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => self
                .project_vclusters
                .get(&(project.to_owned(), virtual_cluster.to_owned()))
                .map(|upstream| Destination::Upstream {
                    upstream,
                    fence: None,
                    space_cluster: None,
                }),
            _ => None,
        }
    }
}
