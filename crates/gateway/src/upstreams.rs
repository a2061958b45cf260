//! Turns configured upstreams into forwarding services, built once per configuration.

use std::sync::Arc;

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

    /// The target's path under `/kubernetes/` (`cluster/<name>`,
    /// `virtualcluster/<cluster>/<namespace>/<name>`, `project/<project>/virtualcluster/<name>`;
    /// `grafana/<cluster>`): how readiness logs and default audiences name the upstream.
    pub fn path(&self) -> String {
        match self {
            UpstreamKey::Cluster(c) => format!("cluster/{c}"),
            UpstreamKey::VirtualCluster(c, n, v) => format!("virtualcluster/{c}/{n}/{v}"),
            UpstreamKey::ProjectVirtualCluster(p, v) => format!("project/{p}/virtualcluster/{v}"),
            UpstreamKey::Grafana(c) => format!("grafana/{c}"),
        }
    }

    /// The audience of the tokens forwarded to this upstream in identity mode `oidc` when its
    /// config names none: `kubegate/` and [`UpstreamKey::path`], so it differs from the
    /// gateway's own audience and from every other upstream's.
    pub fn default_oidc_audience(&self) -> String {
        format!("kubegate/{}", self.path())
    }
}

/// Forwarding services for every configured upstream.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Keyed by configuration and looked up on every request (with the key the
    /// [`Directory`](crate::directory::Directory) holds for the target): foldhash, as for
    /// RBAC's subject index.
    services: foldhash::HashMap<UpstreamKey, Built>,
    /// The budgets of targets a reload took out: a target added back takes its budget up
    /// again while requests still hold (or may yet take) slots of it, so removing and
    /// re-adding it cannot double what it may hold. Dropped at the first rebuild after no slot
    /// and no older directory holds them.
    retired: foldhash::HashMap<UpstreamKey, Arc<crate::inflight::InFlight>>,
}

/// A forwarding service and what it was built from, so a reload can tell whether it would
/// build the same one.
#[derive(Clone)]
struct Built {
    service: ForwardService<RequestBody>,
    /// The target's own max-in-flight budget: kept across reloads (requests in flight hold
    /// slots of it), whatever else changed.
    in_flight: Arc<crate::inflight::InFlight>,
    config: UpstreamConfig,
    /// SHA-256 over the files the service was built from (a digest, so no copy of a client key
    /// is kept).
    files: [u8; 32],
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The files an upstream's TLS settings are read from (a token file is re-read by the
/// service itself whenever it changes).
struct Files {
    ca: Option<Vec<u8>>,
    client_cert: Option<Vec<u8>>,
    client_key: Option<Vec<u8>>,
}

impl Files {
    fn read(name: &str, u: &UpstreamConfig) -> Result<Files, UpstreamError> {
        let read = |path: &Option<std::path::PathBuf>| {
            path.as_deref()
                .map(|path| {
                    std::fs::read(path).map_err(|e| UpstreamError {
                        name: name.to_owned(),
                        message: format!("cannot read {}: {e}", path.display()),
                    })
                })
                .transpose()
        };
        let ca = read(&u.ca_file)?;
        // A client certificate is the credential only when no token is configured.
        let (client_cert, client_key) = if u.token.is_none() && u.token_file.is_none() {
            (read(&u.client_cert_file)?, read(&u.client_key_file)?)
        } else {
            (None, None)
        };
        Ok(Files {
            ca,
            client_cert,
            client_key,
        })
    }

    fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut sha = sha2::Sha256::new();
        for file in [&self.ca, &self.client_cert, &self.client_key] {
            match file {
                // Length-prefixed, so no two different sets of files hash alike by shifting
                // bytes from one file to the next.
                Some(bytes) => {
                    sha.update([1]);
                    sha.update((bytes.len() as u64).to_be_bytes());
                    sha.update(bytes);
                }
                None => sha.update([0]),
            }
        }
        sha.finalize().into()
    }
}

impl Upstreams {
    /// Builds one pooled forwarding service per configured upstream.
    pub fn build(config: &Config) -> Result<Upstreams, UpstreamError> {
        Upstreams::rebuild(config, None)
    }

    /// Builds the services for `config`, keeping `previous`'s service, with its pooled
    /// connections, for every upstream whose configuration and files (CA bundle, client
    /// certificate and key) are unchanged. So a reload that changes policy, keys or one
    /// cluster does not drop every other cluster's connections and dial them all again, as
    /// Envoy keeps the pools of clusters an update leaves alone. Files are read on every
    /// rebuild: replacing a CA file and reloading takes effect.
    pub fn rebuild(
        config: &Config,
        previous: Option<&Upstreams>,
    ) -> Result<Upstreams, UpstreamError> {
        let mut services = foldhash::HashMap::default();
        let mut add = |key: UpstreamKey, upstream: &UpstreamConfig| -> Result<(), UpstreamError> {
            let name = key.describe();
            let files = Files::read(&name, upstream)?;
            let digest = files.digest();
            let old = previous.and_then(|p| p.services.get(&key));
            let retired = previous.and_then(|p| p.retired.get(&key));
            let in_flight = old
                .map(|old| &old.in_flight)
                .or(retired)
                .map_or_else(Arc::default, Arc::clone);
            let unchanged = old.filter(|old| old.config == *upstream && old.files == digest);
            let service = match unchanged {
                Some(old) => old.service.clone(),
                None => {
                    let grafana = matches!(key, UpstreamKey::Grafana(_));
                    let built = build_upstream(&name, upstream, &files, grafana)?;
                    ForwardService::new(built)
                }
            };
            services.insert(
                key,
                Built {
                    service,
                    in_flight,
                    config: upstream.clone(),
                    files: digest,
                },
            );
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
        // Every budget this rebuild takes out is kept: a request that loaded the previous
        // directory before the reload may take a slot of it later (after authentication). One
        // kept before is let go once nothing holds a slot of it and nothing else holds it (no
        // older directory a request still works with).
        let retired = previous
            .map(|p| {
                let removed = p
                    .services
                    .iter()
                    .map(|(key, built)| (key, &built.in_flight));
                let still_held = p
                    .retired
                    .iter()
                    .filter(|(_, budget)| budget.in_use() || Arc::strong_count(budget) > 1);
                removed
                    .chain(still_held)
                    .filter(|(key, _)| !services.contains_key(*key))
                    .map(|(key, budget)| (key.clone(), Arc::clone(budget)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Upstreams { services, retired })
    }

    /// The service for a key.
    pub fn get(&self, key: &UpstreamKey) -> Option<&ForwardService<RequestBody>> {
        self.services.get(key).map(|built| &built.service)
    }

    /// The service for `key` and the target's own max-in-flight budget, with one lookup.
    pub(crate) fn get_with_budget(
        &self,
        key: &UpstreamKey,
    ) -> Option<(&ForwardService<RequestBody>, &crate::inflight::InFlight)> {
        self.services
            .get(key)
            .map(|built| (&built.service, &*built.in_flight))
    }

    /// Every upstream, for readiness probes.
    pub fn iter(&self) -> impl Iterator<Item = (&UpstreamKey, &ForwardService<RequestBody>)> {
        self.services
            .iter()
            .map(|(key, built)| (key, &built.service))
    }
}

/// One upstream built from its settings alone (its files read), as a reload would build it.
#[cfg(test)]
pub(crate) fn build_one_for_test(u: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
    build_upstream("test", u, &Files::read("test", u)?, false)
}

/// `grafana`: the upstream is a cluster's Grafana, not a Kubernetes API server. Kubernetes API
/// servers (some run by tenants: virtual clusters) may not redirect the gateway's clients
/// elsewhere, and without a credential to impersonate with they refuse every request (warned
/// about, not refused: a proxy in front may add one); Grafana redirects by design (login,
/// trailing slashes) within its own site, and may serve anonymous callers.
fn build_upstream(
    name: &str,
    u: &UpstreamConfig,
    files: &Files,
    grafana: bool,
) -> Result<Upstream, UpstreamError> {
    let err = |message: String| UpstreamError {
        name: name.to_owned(),
        message,
    };
    let b64 = |what: &str, data: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| err(format!("{what} is not valid base64: {e}")))
    };
    let mut builder = Upstream::builder(name, u.server.clone())
        // A redirect to the upstream itself (kube-apiserver's service and pod proxies send
        // them) is rewritten onto the target's prefix; one anywhere else is refused.
        .reject_forwarding_redirects(!grafana)
        .rewrite_redirects(!grafana)
        // Checked below, with a warning rather than a refusal: a proxy in front of the
        // upstream may add its own credential, and one bad target must not stop the rest.
        .allow_no_credential(true)
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
        // The config's author wrote `http://` for this upstream: that is the opt-in.
        .allow_plaintext(u.server.starts_with("http://"))
        .identity_mode(match u.identity_mode {
            config::IdentityMode::Impersonate => IdentityMode::Impersonate,
            // The gateway puts its own minted token in `Authorization` before forwarding.
            config::IdentityMode::Passthrough | config::IdentityMode::Oidc => {
                IdentityMode::Passthrough
            }
        });
    if let Some(pem) = &files.ca {
        builder = builder.ca_bundle_pem(pem.clone());
    } else if let Some(data) = &u.ca_data {
        builder = builder.ca_bundle_pem(b64("caData", data)?);
    }
    let credential = if let Some(token) = &u.token {
        Credential::BearerToken(token.clone())
    } else if let Some(path) = &u.token_file {
        Credential::TokenFile(path.clone())
    } else {
        let cert = match (&files.client_cert, &u.client_cert_data) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(d)) => Some(b64("clientCertData", d)?),
            _ => None,
        };
        let key = match (&files.client_key, &u.client_key_data) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(d)) => Some(b64("clientKeyData", d)?),
            _ => None,
        };
        match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Credential::ClientCert { cert_pem, key_pem },
            _ => Credential::None,
        }
    };
    let impersonating = u.identity_mode == config::IdentityMode::Impersonate;
    if impersonating && !grafana && matches!(credential, Credential::None) {
        tracing::warn!(
            upstream = name,
            "impersonates callers without a credential of its own (token, tokenFile or a client \
             certificate): a Kubernetes API server refuses every such request unless a proxy in \
             front of it adds one"
        );
    }
    builder
        .credential(credential)
        .build()
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(dir: &Path, token_b: &str) -> Config {
        let yaml = format!(
            "clusters:\n\
             \x20 - name: a\n\
             \x20   upstream: {{server: \"https://127.0.0.1:1\", caFile: {dir}/ca-a.pem, token: t}}\n\
             \x20 - name: b\n\
             \x20   upstream: {{server: \"https://127.0.0.1:2\", caFile: {dir}/ca-b.pem, token: {token_b}}}\n",
            dir = dir.display()
        );
        Config::parse(&yaml, Path::new("test.yaml")).expect("a valid config")
    }

    fn write_ca(dir: &Path, file: &str) {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        std::fs::write(dir.join(file), ca.cert.pem()).unwrap();
    }

    fn shared(old: &Upstreams, new: &Upstreams, cluster: &str) -> bool {
        let key = UpstreamKey::Cluster(cluster.into());
        old.get(&key)
            .unwrap()
            .shares_pool_with(new.get(&key).unwrap())
    }

    /// A fresh directory holding the CA files [`config`]'s clusters `a` and `b` name.
    fn dir_with_both_cas() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kubegate-upstreams-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        write_ca(&dir, "ca-a.pem");
        write_ca(&dir, "ca-b.pem");
        dir
    }

    /// An upstream without a credential of its own still builds (the gateway warns: a proxy in
    /// front of it may add one), a cluster's and a Grafana's alike; one such target does not
    /// stop the others from being served.
    #[test]
    fn upstreams_without_a_credential_build() {
        let u: UpstreamConfig = serde_json::from_value(serde_json::json!({
            "server": "https://127.0.0.1:1",
            "insecureSkipTlsVerify": true,
        }))
        .unwrap();
        let files = Files::read("x", &u).unwrap();
        assert!(build_upstream("cluster/a", &u, &files, false).is_ok());
        assert!(build_upstream("grafana/a", &u, &files, true).is_ok());
    }

    /// A rebuild keeps the services (and pools) of upstreams whose settings and files did not
    /// change, and builds anew those whose did: a setting, or a file's content at the same path.
    #[test]
    fn rebuilds_keep_the_pools_of_unchanged_upstreams() {
        let dir = dir_with_both_cas();
        let first = Upstreams::build(&config(&dir, "t")).unwrap();
        let same = Upstreams::rebuild(&config(&dir, "t"), Some(&first)).unwrap();
        assert!(shared(&first, &same, "a") && shared(&first, &same, "b"));
        let fresh = Upstreams::build(&config(&dir, "t")).unwrap();
        assert!(
            !shared(&first, &fresh, "a"),
            "no previous services: all built anew"
        );
        write_ca(&dir, "ca-a.pem"); // another CA, same path
        let new_ca = Upstreams::rebuild(&config(&dir, "t"), Some(&same)).unwrap();
        assert!(!shared(&same, &new_ca, "a") && shared(&same, &new_ca, "b"));
        let new_token = Upstreams::rebuild(&config(&dir, "t2"), Some(&new_ca)).unwrap();
        assert!(shared(&new_ca, &new_token, "a") && !shared(&new_ca, &new_token, "b"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A target a reload takes out while one of its requests holds a slot, and a later reload
    /// adds back, gets its old budget again, with the slot still counted: a fresh budget would
    /// let each remove-and-add double what the target may hold. Once the last slot is back,
    /// the removed budget is forgotten.
    #[test]
    fn a_target_added_back_keeps_the_budget_its_requests_still_hold() {
        use crate::inflight::Admission;
        let dir = dir_with_both_cas();
        let both = config(&dir, "t");
        let mut only_b = both.clone();
        only_b.clusters.retain(|c| c.name == "b");
        let a = UpstreamKey::Cluster("a".into());
        let admit = |upstreams: &Upstreams| {
            let (_, budget) = upstreams.get_with_budget(&a).unwrap();
            budget.admit("get", false, &[], (1, 1))
        };
        let first = Upstreams::build(&both).unwrap();
        let removed = Upstreams::rebuild(&only_b, Some(&first)).unwrap();
        assert!(removed.get(&a).is_none());
        // A request that loaded the directory before the reload takes its slot after it.
        let Admission::Admitted(Some(slot)) = admit(&first) else {
            panic!("the first read takes the only slot");
        };
        // Kept through a reload that leaves it out too.
        let still_removed = Upstreams::rebuild(&only_b, Some(&removed)).unwrap();
        let back = Upstreams::rebuild(&both, Some(&still_removed)).unwrap();
        assert!(
            matches!(admit(&back), Admission::Full),
            "the held slot counts in the budget the target got back"
        );
        drop(slot);
        assert!(matches!(admit(&back), Admission::Admitted(Some(_))));
        // With no slot held and no older directory holding it, a removed target's budget is
        // let go at the next rebuild.
        drop((first, removed, still_removed));
        let removed = Upstreams::rebuild(&only_b, Some(&back)).unwrap();
        assert_eq!(
            removed.retired.len(),
            1,
            "kept while `back` may still be in use"
        );
        drop(back);
        let again = Upstreams::rebuild(&only_b, Some(&removed)).unwrap();
        assert!(again.retired.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
