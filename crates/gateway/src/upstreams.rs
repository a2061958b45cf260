//! Turns configured upstreams into forwarding services, built once per configuration.

use crate::service::RequestBody;
use base64::Engine;
use kubegate_proxy::{Credential, ForwardService, IdentityMode, Upstream};

use crate::config::{self, Config, UpstreamConfig};

/// An upstream could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {message}")]
pub struct UpstreamError {
    /// Which upstream (`cluster/prod`, …).
    pub name: String,
    /// Why (never contains a credential).
    pub message: String,
}

/// Identifies a configured upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamKey {
    /// A connected cluster (also used by project spaces on it).
    Cluster(String),
    /// A legacy virtual cluster.
    VirtualCluster(String, String, String),
    /// A project virtual cluster.
    ProjectVirtualCluster(String, String),
    /// The Grafana of a connected cluster.
    Grafana(String),
}

impl UpstreamKey {
    /// A readable name for logs and error messages.
    pub fn describe(&self) -> String {
        match self {
            UpstreamKey::Cluster(c) => format!("cluster {c}"),
            UpstreamKey::VirtualCluster(c, n, v) => format!("virtual cluster {c}/{n}/{v}"),
            UpstreamKey::ProjectVirtualCluster(p, v) => {
                format!("virtual cluster {v} of project {p}")
            }
            UpstreamKey::Grafana(c) => format!("the Grafana of cluster {c}"),
        }
    }
}

/// Forwarding services for every configured upstream.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Keyed by configuration and looked up on every request (with the key the
    /// [`Directory`](crate::directory::Directory) holds for the target): foldhash, as for
    /// RBAC's subject index.
    services: foldhash::HashMap<UpstreamKey, ForwardService<RequestBody>>,
}

impl Upstreams {
    /// Builds one pooled forwarding service per configured upstream.
    pub fn build(config: &Config) -> Result<Upstreams, UpstreamError> {
        let mut services = foldhash::HashMap::default();
        let mut add = |key: UpstreamKey, upstream: &UpstreamConfig| -> Result<(), UpstreamError> {
            // Kubernetes API servers (some run by tenants: virtual clusters) may not redirect
            // the gateway's clients elsewhere; Grafana redirects by design (login, trailing
            // slashes) within its own site.
            let redirects_allowed = matches!(key, UpstreamKey::Grafana(_));
            let built = build_upstream(&key.describe(), upstream, redirects_allowed)?;
            services.insert(key, ForwardService::new(built));
            Ok(())
        };
        for c in &config.clusters {
            add(UpstreamKey::Cluster(c.name.clone()), &c.upstream)?;
            if let Some(grafana) = &c.grafana {
                // Grafana is not a Kubernetes API server: never pass the client's own
                // credential on, whatever the identity mode says.
                let mut grafana = grafana.clone();
                grafana.identity_mode = config::IdentityMode::Impersonate;
                add(UpstreamKey::Grafana(c.name.clone()), &grafana)?;
            }
        }
        if let Some(agent) = &config.agent {
            add(UpstreamKey::Cluster(agent.cluster.clone()), &agent.upstream)?;
        }
        for v in &config.virtual_clusters {
            add(
                UpstreamKey::VirtualCluster(v.cluster.clone(), v.namespace.clone(), v.name.clone()),
                &v.upstream,
            )?;
        }
        for p in &config.projects {
            for v in &p.virtual_clusters {
                add(
                    UpstreamKey::ProjectVirtualCluster(p.name.clone(), v.name.clone()),
                    &v.upstream,
                )?;
            }
        }
        Ok(Upstreams { services })
    }

    /// The service for a key.
    pub fn get(&self, key: &UpstreamKey) -> Option<&ForwardService<RequestBody>> {
        self.services.get(key)
    }

    /// Every upstream, for readiness probes.
    pub fn iter(&self) -> impl Iterator<Item = (&UpstreamKey, &ForwardService<RequestBody>)> {
        self.services.iter()
    }
}

fn build_upstream(
    name: &str,
    u: &UpstreamConfig,
    redirects_allowed: bool,
) -> Result<Upstream, UpstreamError> {
    let err = |message: String| UpstreamError {
        name: name.to_owned(),
        message,
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))
    };
    let b64 = |what: &str, data: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| err(format!("{what} is not valid base64: {e}")))
    };
    let mut builder = Upstream::builder(name, u.server.clone())
        .reject_forwarding_redirects(!redirects_allowed)
        .http2(u.http2.unwrap_or(true))
        .http2_max_streams_per_connection(
            u.http2_max_streams_per_connection
                .unwrap_or(kubegate_proxy::DEFAULT_HTTP2_MAX_STREAMS_PER_CONNECTION),
        )
        .http1_connections_for_short_requests(
            u.http1_connections_for_short_requests
                .unwrap_or(kubegate_proxy::DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS),
        )
        .insecure_skip_tls_verify(u.insecure_skip_tls_verify)
        .identity_mode(match u.identity_mode {
            config::IdentityMode::Impersonate => IdentityMode::Impersonate,
            // The gateway puts its own minted token in `Authorization` before forwarding.
            config::IdentityMode::Passthrough | config::IdentityMode::Oidc => {
                IdentityMode::Passthrough
            }
        });
    if let Some(path) = &u.ca_file {
        builder = builder.ca_bundle_pem(read(path)?);
    } else if let Some(data) = &u.ca_data {
        builder = builder.ca_bundle_pem(b64("caData", data)?);
    }
    let credential = if let Some(token) = &u.token {
        Credential::BearerToken(token.clone())
    } else if let Some(path) = &u.token_file {
        Credential::TokenFile(path.clone())
    } else {
        let cert = match (&u.client_cert_file, &u.client_cert_data) {
            (Some(p), _) => Some(read(p)?),
            (None, Some(d)) => Some(b64("clientCertData", d)?),
            _ => None,
        };
        let key = match (&u.client_key_file, &u.client_key_data) {
            (Some(p), _) => Some(read(p)?),
            (None, Some(d)) => Some(b64("clientKeyData", d)?),
            _ => None,
        };
        match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Credential::ClientCert { cert_pem, key_pem },
            _ => Credential::None,
        }
    };
    builder
        .credential(credential)
        .build()
        .map_err(|e| err(e.to_string()))
}
