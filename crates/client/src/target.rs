//! What a client talks to through the gateway: the management API or one of the four kinds of
//! Kubernetes API servers behind it, and the URL prefix and kubeconfig context name of each.

use std::fmt;

use crate::Error;

/// One API server reachable through a gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The gateway's own `management.loft.sh/v1` API: `/kubernetes/management`.
    Management,
    /// A connected cluster: `/kubernetes/cluster/<cluster>`.
    Cluster {
        /// Cluster name.
        cluster: String,
    },
    /// A legacy virtual cluster, addressed by host cluster and namespace:
    /// `/kubernetes/virtualcluster/<cluster>/<namespace>/<name>`.
    VirtualCluster {
        /// Host cluster.
        cluster: String,
        /// Namespace on the host cluster.
        namespace: String,
        /// Virtual cluster name.
        name: String,
    },
    /// A project space: `/kubernetes/project/<project>/space/<space>`.
    ProjectSpace {
        /// Project name.
        project: String,
        /// Space name.
        space: String,
    },
    /// A project virtual cluster: `/kubernetes/project/<project>/virtualcluster/<virtual_cluster>`.
    ProjectVirtualCluster {
        /// Project name.
        project: String,
        /// Virtual cluster instance name.
        virtual_cluster: String,
    },
}

impl Target {
    /// A connected cluster.
    pub fn cluster(cluster: impl Into<String>) -> Target {
        Target::Cluster {
            cluster: cluster.into(),
        }
    }

    /// A legacy virtual cluster on `cluster` in `namespace`.
    pub fn virtual_cluster(
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Target {
        Target::VirtualCluster {
            cluster: cluster.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A space of a project.
    pub fn project_space(project: impl Into<String>, space: impl Into<String>) -> Target {
        Target::ProjectSpace {
            project: project.into(),
            space: space.into(),
        }
    }

    /// A virtual cluster instance of a project.
    pub fn project_virtual_cluster(
        project: impl Into<String>,
        virtual_cluster: impl Into<String>,
    ) -> Target {
        Target::ProjectVirtualCluster {
            project: project.into(),
            virtual_cluster: virtual_cluster.into(),
        }
    }

    /// Checks every name segment, so a name can never change which prefix a URL points at.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Target::Management => Ok(()),
            Target::Cluster { cluster } => segment("cluster", cluster),
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => {
                segment("cluster", cluster)?;
                segment("namespace", namespace)?;
                segment("virtual cluster", name)
            }
            Target::ProjectSpace { project, space } => {
                segment("project", project)?;
                segment("space", space)
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => {
                segment("project", project)?;
                segment("virtual cluster", virtual_cluster)
            }
        }
    }

    /// The URL path prefix on a central gateway, without a trailing slash.
    pub fn path(&self) -> String {
        match self {
            Target::Management => "/kubernetes/management".to_owned(),
            Target::Cluster { cluster } => format!("/kubernetes/cluster/{cluster}"),
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => format!("/kubernetes/virtualcluster/{cluster}/{namespace}/{name}"),
            Target::ProjectSpace { project, space } => {
                format!("/kubernetes/project/{project}/space/{space}")
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => format!("/kubernetes/project/{project}/virtualcluster/{virtual_cluster}"),
        }
    }

    /// The URL path prefix on a direct cluster endpoint (an agent that *is* one cluster), which
    /// drops the cluster segment (spec/loft-api.md §2); `None` for the management API, which an
    /// agent does not serve.
    pub fn direct_path(&self) -> Option<String> {
        match self {
            Target::Management => None,
            Target::Cluster { .. } => Some("/kubernetes/cluster".to_owned()),
            Target::VirtualCluster {
                namespace, name, ..
            } => Some(format!("/kubernetes/virtualcluster/{namespace}/{name}")),
            Target::ProjectSpace { .. } | Target::ProjectVirtualCluster { .. } => Some(self.path()),
        }
    }

    /// The kubeconfig context name under `naming` (loftctl's by default, spec/loft-api.md §3).
    pub fn context_name(&self, naming: &ContextNaming) -> String {
        let p = naming.prefix.as_str();
        match self {
            Target::Management => format!("{p}-management"),
            Target::Cluster { cluster } => format!("{p}_{cluster}"),
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => format!("{p}-vcluster_{name}_{namespace}_{cluster}"),
            Target::ProjectSpace { project, space } => format!("{p}_{space}_{project}"),
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => format!("{p}-vcluster_{virtual_cluster}_{project}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Management => f.write_str("the management API"),
            Target::Cluster { cluster } => write!(f, "cluster {cluster:?}"),
            Target::VirtualCluster {
                cluster,
                namespace,
                name,
            } => write!(
                f,
                "virtual cluster {name:?} in namespace {namespace:?} of cluster {cluster:?}"
            ),
            Target::ProjectSpace { project, space } => {
                write!(f, "space {space:?} of project {project:?}")
            }
            Target::ProjectVirtualCluster {
                project,
                virtual_cluster,
            } => write!(
                f,
                "virtual cluster {virtual_cluster:?} of project {project:?}"
            ),
        }
    }
}

/// How kubeconfig contexts are named. The default, prefix `loft`, reproduces loftctl's names
/// (`loft-management`, `loft_<cluster>`, `loft_<space>_<project>`, `loft-vcluster_<vc>_<project>`,
/// `loft-vcluster_<vc>_<namespace>_<cluster>`), so scripts written for loftctl keep working;
/// any other prefix replaces `loft` in each of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextNaming {
    /// Replaces `loft` in loftctl's names.
    pub prefix: String,
}

impl ContextNaming {
    /// loftctl's naming.
    pub fn loftctl() -> ContextNaming {
        ContextNaming {
            prefix: "loft".to_owned(),
        }
    }

    /// loftctl's scheme with `prefix` instead of `loft` (e.g. `kubegate`).
    pub fn with_prefix(prefix: impl Into<String>) -> Result<ContextNaming, Error> {
        let prefix = prefix.into();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::InvalidName {
                what: "context prefix",
                name: prefix,
            });
        }
        Ok(ContextNaming { prefix })
    }
}

impl Default for ContextNaming {
    fn default() -> Self {
        ContextNaming::loftctl()
    }
}

/// Kubernetes object names (RFC 1123) are all a gateway accepts in a prefix; anything else could
/// smuggle `/`, `..` or an escape into the URL.
fn segment(what: &'static str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// loftctl's names, `pkg/kubeconfig/kubeconfig.go` and `cmd/loftctl/cmd/use/*.go` (spec §3).
    #[test]
    fn loftctl_context_names_and_prefixes() {
        let naming = ContextNaming::loftctl();
        let cases = [
            (
                Target::Management,
                "loft-management",
                "/kubernetes/management",
                None,
            ),
            (
                Target::cluster("prod"),
                "loft_prod",
                "/kubernetes/cluster/prod",
                Some("/kubernetes/cluster"),
            ),
            (
                Target::virtual_cluster("prod", "team", "vc1"),
                "loft-vcluster_vc1_team_prod",
                "/kubernetes/virtualcluster/prod/team/vc1",
                Some("/kubernetes/virtualcluster/team/vc1"),
            ),
            (
                Target::project_space("p1", "s1"),
                "loft_s1_p1",
                "/kubernetes/project/p1/space/s1",
                Some("/kubernetes/project/p1/space/s1"),
            ),
            (
                Target::project_virtual_cluster("p1", "pv1"),
                "loft-vcluster_pv1_p1",
                "/kubernetes/project/p1/virtualcluster/pv1",
                Some("/kubernetes/project/p1/virtualcluster/pv1"),
            ),
        ];
        for (target, context, path, direct) in cases {
            assert_eq!(target.context_name(&naming), context);
            assert_eq!(target.path(), path);
            assert_eq!(target.direct_path().as_deref(), direct);
            target.validate().unwrap();
        }
        let own = ContextNaming::with_prefix("kubegate").unwrap();
        assert_eq!(Target::Management.context_name(&own), "kubegate-management");
        assert_eq!(
            Target::project_virtual_cluster("p1", "pv1").context_name(&own),
            "kubegate-vcluster_pv1_p1"
        );
        assert!(ContextNaming::with_prefix("a/b").is_err());
        assert!(ContextNaming::with_prefix("").is_err());
    }

    #[test]
    fn names_that_would_escape_the_prefix_are_refused() {
        for bad in ["", "..", "a/b", "A", "-a", "a-", "a%2fb", "a b", "a?b"] {
            assert!(Target::cluster(bad).validate().is_err(), "{bad:?}");
            assert!(
                Target::project_space("p", bad).validate().is_err(),
                "{bad:?}"
            );
        }
        Target::cluster("a.b-1").validate().unwrap();
    }
}
