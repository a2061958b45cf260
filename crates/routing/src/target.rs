//! Where a request goes: the gateway-level destination named by the URL prefix.

/// The destination a gateway URL prefix names.
///
/// Names are borrowed from the request path (or, in agent mode, from the [`Router`](crate::Router)
/// that knows which cluster it serves). Every name has been validated as an RFC 1123 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target<'a> {
    /// `/kubernetes/management/…`: the gateway's own `management.loft.sh` API.
    Management,
    /// `/kubernetes/cluster/$CLUSTER/…` (central) or `/kubernetes/cluster/…` (agent).
    Cluster {
        /// Connected cluster name.
        cluster: &'a str,
    },
    /// Legacy virtual cluster addressed by its host cluster and namespace:
    /// `/kubernetes/virtualcluster/$CLUSTER/$NAMESPACE/$VCLUSTER/…` (central) or
    /// `/kubernetes/virtualcluster/$NAMESPACE/$VCLUSTER/…` (agent).
    VirtualCluster {
        /// Host cluster name.
        cluster: &'a str,
        /// Namespace of the virtual cluster on its host cluster.
        namespace: &'a str,
        /// Virtual cluster name.
        name: &'a str,
    },
    /// `/kubernetes/project/$PROJECT/space/$SPACE/…`: a project space instance.
    ProjectSpace {
        /// Project name.
        project: &'a str,
        /// Space name.
        space: &'a str,
    },
    /// `/kubernetes/project/$PROJECT/virtualcluster/$VC/…`: a project virtual cluster instance.
    ProjectVirtualCluster {
        /// Project name.
        project: &'a str,
        /// Virtual cluster instance name.
        virtual_cluster: &'a str,
    },
    /// `/auth/…`: login and session endpoints.
    Auth,
    /// `/oidc/…`: the gateway's OIDC provider (discovery document, JWKS).
    Oidc,
    /// `/grafana/$CLUSTER/…`: the Grafana of a connected cluster.
    Grafana {
        /// Connected cluster name.
        cluster: &'a str,
    },
    /// The gateway's own operational endpoints.
    Ops(OpsPath),
}

impl Target<'_> {
    /// Whether requests to this target are forwarded to a Kubernetes API server upstream
    /// (as opposed to being answered by the gateway itself).
    pub fn is_kubernetes_upstream(&self) -> bool {
        matches!(
            self,
            Target::Cluster { .. }
                | Target::VirtualCluster { .. }
                | Target::ProjectSpace { .. }
                | Target::ProjectVirtualCluster { .. }
        )
    }

    /// The Loft `RequestTarget` name of this target (`Management`, `Cluster`, `VirtualCluster`,
    /// `ProjectSpace`, `ProjectVirtualCluster`), or `None` for gateway-only targets.
    pub fn request_target(&self) -> Option<&'static str> {
        match self {
            Target::Management => Some("Management"),
            Target::Cluster { .. } => Some("Cluster"),
            Target::VirtualCluster { .. } => Some("VirtualCluster"),
            Target::ProjectSpace { .. } => Some("ProjectSpace"),
            Target::ProjectVirtualCluster { .. } => Some("ProjectVirtualCluster"),
            Target::Auth | Target::Oidc | Target::Grafana { .. } | Target::Ops(_) => None,
        }
    }
}

/// The gateway's operational endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpsPath {
    /// `/healthz` (and `/healthz/…`).
    Healthz,
    /// `/livez` (and `/livez/…`).
    Livez,
    /// `/readyz` (and `/readyz/…`).
    Readyz,
    /// `/version`.
    Version,
    /// `/metrics`.
    Metrics,
}
