//! First run without a config file: import the user's kubeconfig contexts as connected clusters,
//! create an `admin` user bound to `kubegate:admin` with a fresh access key, and write a
//! kubeconfig with one context per target. The generated config is kept in the state directory
//! and reused on later runs (delete the directory to start over).

use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_client::config::Kubeconfig;
use kubegate_tokens::AccessKeySecret;

use crate::config::{
    ClusterConfig, Config, RbacObject, StaticAccessKey, UpstreamConfig, UserConfig,
};

/// The generated config's file name inside the state directory.
pub const GENERATED_CONFIG: &str = "kubegate.yaml";
/// The generated kubeconfig's file name inside the state directory.
pub const GENERATED_KUBECONFIG: &str = "kubeconfig.yaml";
/// The bootstrap admin's user name.
pub const ADMIN_USER: &str = "admin";

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Serialising the generated config failed.
    #[error("writing the generated config: {0}")]
    Serialize(String),
    /// The access key could not be generated.
    #[error("generating the admin access key: {0}")]
    Key(String),
}

/// What a first run produced.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The configuration to run with.
    pub config: Config,
    /// Where it was written.
    pub config_path: PathBuf,
    /// The kubeconfig with a context per target (holds the admin key: keep it private).
    pub kubeconfig_path: PathBuf,
    /// The admin key, only on the run that created it.
    pub admin_key: Option<AccessKeySecret>,
    /// Contexts that could not be imported, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The kubeconfig that was read, if one was found.
    pub source_kubeconfig: Option<PathBuf>,
}

/// Where the user's kubeconfig is: the first entry of `$KUBECONFIG`, else `~/.kube/config`.
pub fn user_kubeconfig_path() -> Option<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        return std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty());
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube").join("config"))
}

/// Loads the generated config from `state_dir`, or creates it (with a new admin key) from the
/// user's kubeconfig.
pub fn load_or_create(
    state_dir: &Path,
    listen: std::net::SocketAddr,
) -> Result<Bootstrapped, BootstrapError> {
    let config_path = state_dir.join(GENERATED_CONFIG);
    let kubeconfig_path = state_dir.join(GENERATED_KUBECONFIG);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BootstrapError::Io { path, source }
    };
    if config_path.exists() {
        let config =
            Config::load(&config_path).map_err(|e| BootstrapError::Serialize(e.to_string()))?;
        return Ok(Bootstrapped {
            config,
            config_path,
            kubeconfig_path,
            admin_key: None,
            skipped: Vec::new(),
            source_kubeconfig: None,
        });
    }
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let source = user_kubeconfig_path().filter(|p| p.exists());
    let (clusters, skipped) = match &source {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(kc) => import(&kc),
            Err(e) => (
                Vec::new(),
                vec![(path.display().to_string(), e.to_string())],
            ),
        },
        None => (Vec::new(), Vec::new()),
    };
    let key = AccessKeySecret::generate().map_err(|e| BootstrapError::Key(e.to_string()))?;
    let config = Config {
        listen,
        state_dir: state_dir.to_owned(),
        clusters,
        users: vec![UserConfig {
            name: ADMIN_USER.into(),
            uid: None,
            token_generation: 0,
            groups: Vec::new(),
            password_hash: None,
        }],
        access_keys: vec![StaticAccessKey {
            name: "admin-bootstrap".into(),
            user: ADMIN_USER.into(),
            sha256: key.digest().to_hex(),
            scope: None,
        }],
        rbac: vec![RbacObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("admin-is-kubegate-admin".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: kubegate_authz::Tier::Admin.cluster_role_name().into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: ADMIN_USER.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            }]),
        })],
        ..Config::default()
    };
    let yaml =
        serde_saphyr::to_string(&config).map_err(|e| BootstrapError::Serialize(e.to_string()))?;
    let header =
        "# Generated by kubegate on first run. Edit freely; delete the directory to start over.\n";
    crate::tls::write_private(&config_path, format!("{header}{yaml}").as_bytes())
        .map_err(io(&config_path))?;
    Ok(Bootstrapped {
        config,
        config_path,
        kubeconfig_path,
        admin_key: Some(key),
        skipped,
        source_kubeconfig: source,
    })
}

/// Turns kubeconfig contexts into clusters; contexts whose credentials the gateway cannot use
/// (exec plugins, auth providers, basic auth) are skipped with the reason.
pub fn import(kc: &Kubeconfig) -> (Vec<ClusterConfig>, Vec<(String, String)>) {
    let mut clusters = Vec::new();
    let mut skipped = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for ctx in &kc.contexts {
        let Some(context) = &ctx.context else {
            skipped.push((ctx.name.clone(), "context has no body".into()));
            continue;
        };
        let name = cluster_name(&ctx.name);
        if name.is_empty() || !names.insert(name.clone()) {
            skipped.push((
                ctx.name.clone(),
                "no unique cluster name can be derived".into(),
            ));
            continue;
        }
        let Some(cluster) = kc
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
        else {
            skipped.push((
                ctx.name.clone(),
                format!("cluster {:?} not found", context.cluster),
            ));
            continue;
        };
        let Some(server) = cluster.server.clone() else {
            skipped.push((ctx.name.clone(), "cluster has no server".into()));
            continue;
        };
        let auth = context
            .user
            .as_ref()
            .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u))
            .and_then(|a| a.auth_info.as_ref());
        let mut upstream = UpstreamConfig {
            server,
            ca_file: cluster.certificate_authority.as_ref().map(PathBuf::from),
            ca_data: cluster.certificate_authority_data.clone(),
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            token: None,
            token_file: None,
            client_cert_file: None,
            client_key_file: None,
            client_cert_data: None,
            client_key_data: None,
            identity_mode: Default::default(),
            oidc_audience: None,
            http2: None,
            http2_max_streams_per_connection: None,
            http1_connections_for_short_requests: None,
        };
        if let Some(auth) = auth {
            if auth.exec.is_some() || auth.auth_provider.is_some() {
                skipped.push((
                    ctx.name.clone(),
                    "exec and auth-provider credentials are not supported for upstreams".into(),
                ));
                continue;
            }
            use secrecy::ExposeSecret;
            upstream.token = auth.token.as_ref().map(|t| t.expose_secret().to_owned());
            upstream.token_file = auth.token_file.as_ref().map(PathBuf::from);
            upstream.client_cert_file = auth.client_certificate.as_ref().map(PathBuf::from);
            upstream.client_cert_data = auth.client_certificate_data.clone();
            upstream.client_key_file = auth.client_key.as_ref().map(PathBuf::from);
            upstream.client_key_data = auth
                .client_key_data
                .as_ref()
                .map(|k| k.expose_secret().to_owned());
        }
        // kubectl refuses some of these too (a CA with insecure-skip-tls-verify); one such
        // context must not keep the gateway from starting on the others.
        if let Some(problem) = crate::config::upstream_problem(&upstream) {
            skipped.push((ctx.name.clone(), problem));
            continue;
        }
        clusters.push(ClusterConfig {
            name,
            display_name: Some(ctx.name.clone()),
            upstream,
            grafana: None,
            direct_endpoint: None,
            direct_endpoint_ca_data: None,
            direct_endpoint_insecure: false,
            audit_level: None,
        });
    }
    (clusters, skipped)
}

/// A kubeconfig context name as an RFC 1123 label (`kind-dev` stays, `arn:aws:…/prod` becomes
/// `arn-aws-…-prod`).
pub fn cluster_name(context: &str) -> String {
    let mut out = String::new();
    for c in context.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    trimmed.trim_end_matches('-').to_owned()
}

/// Writes a kubeconfig with a `kubegate-management` context and a `kubegate_<cluster>` context
/// per cluster, all using `token` against `server` and trusting `ca_pem`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &[u8],
    token: &str,
    config: &Config,
) -> Result<(), BootstrapError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut targets = vec![(
        "kubegate-management".to_owned(),
        format!("{server}/kubernetes/management"),
    )];
    for c in &config.clusters {
        targets.push((
            format!("kubegate_{}", c.name),
            format!("{server}/kubernetes/cluster/{}", c.name),
        ));
    }
    let clusters: Vec<_> = targets
        .iter()
        .map(|(name, url)| serde_json::json!({"name": name, "cluster": {"server": url, "certificate-authority-data": ca}}))
        .collect();
    let contexts: Vec<_> = targets
        .iter()
        .map(|(name, _)| serde_json::json!({"name": name, "context": {"cluster": name, "user": "kubegate-admin"}}))
        .collect();
    let current = targets
        .get(1)
        .or_else(|| targets.first())
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "current-context": current,
        "users": [{"name": "kubegate-admin", "user": {"token": token}}],
    });
    let text =
        serde_json::to_string_pretty(&doc).map_err(|e| BootstrapError::Serialize(e.to_string()))?;
    crate::tls::write_private(path, text.as_bytes()).map_err(|source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_become_labels() {
        assert_eq!(cluster_name("kind-dev"), "kind-dev");
        assert_eq!(
            cluster_name("arn:aws:eks:eu-west-1:123:cluster/Prod"),
            "arn-aws-eks-eu-west-1-123-cluster-prod"
        );
        assert_eq!(cluster_name("--"), "");
        assert_eq!(cluster_name(&"a".repeat(80)).len(), 63);
    }

    /// A context whose settings a config could not load with is skipped with the reason, so
    /// it cannot keep the gateway from starting on the others.
    #[test]
    fn contexts_a_config_would_refuse_are_skipped() {
        let kc = Kubeconfig::from_yaml(
            r#"
apiVersion: v1
kind: Config
clusters:
- name: good
  cluster: {server: "https://good.example:6443", certificate-authority-data: "Y2E="}
- name: both
  cluster: {server: "https://both.example:6443", certificate-authority-data: "Y2E=", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: t}
contexts:
- name: good
  context: {cluster: good, user: u}
- name: both
  context: {cluster: both, user: u}
"#,
        )
        .unwrap();
        let (clusters, skipped) = import(&kc);
        assert_eq!(
            clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].0, "both");
        assert!(
            skipped[0]
                .1
                .contains("with insecureSkipTlsVerify is not allowed"),
            "{skipped:?}"
        );
    }
}
