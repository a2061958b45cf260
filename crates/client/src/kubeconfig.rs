//! Kubeconfig generation and merging. Entries kubegate writes are named after the context
//! (cluster, user and context share one name, as loftctl does); merging replaces only entries of
//! those names and leaves every other cluster, user, context and unknown field as it was.

use std::fmt;
use std::path::Path;

use base64::Engine;
use kube_client::config::{
    AuthInfo, Context, ExecConfig, ExecInteractiveMode, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use secrecy::SecretString;

use crate::exec::EXEC_API_VERSION;
use crate::{ContextNaming, Credential, Error, GatewayClient, Target};

/// How a generated kubeconfig entry authenticates.
#[derive(Clone)]
pub enum KubeconfigAuth {
    /// A static bearer token (an access key or a minted token).
    Token(SecretString),
    /// An exec credential plugin (`client.authentication.k8s.io/v1`, never interactive).
    Exec {
        /// Absolute path of the plugin.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl fmt::Debug for KubeconfigAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeconfigAuth::Token(_) => f.write_str("Token(<redacted>)"),
            KubeconfigAuth::Exec { command, args } => f
                .debug_struct("Exec")
                .field("command", command)
                .field("args", args)
                .finish(),
        }
    }
}

/// One context to write: its name, server, trust and credential.
#[derive(Clone, Debug)]
pub struct KubeconfigEntry {
    /// Context name; also the name of its cluster and user entries.
    pub name: String,
    /// Server URL including the target prefix.
    pub server: String,
    /// CA bundle (PEM) to verify the server with; `None` = system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Credential.
    pub auth: KubeconfigAuth,
    /// Default namespace of the context.
    pub namespace: Option<String>,
}

impl GatewayClient {
    /// The kubeconfig entry for `target`, named by `naming`. `auth` `None` reuses this client's
    /// credential (a bearer token is embedded; an exec plugin is referenced).
    pub fn kubeconfig_entry(
        &self,
        target: &Target,
        naming: &ContextNaming,
        auth: Option<KubeconfigAuth>,
    ) -> Result<KubeconfigEntry, Error> {
        let server = self.server_url(target)?;
        let auth = match auth {
            Some(a) => a,
            None => match self.credential() {
                Credential::Bearer(token) => KubeconfigAuth::Token(token.clone()),
                Credential::Exec(exec) => KubeconfigAuth::Exec {
                    command: exec.command.clone().unwrap_or_default(),
                    args: exec.args.clone().unwrap_or_default(),
                },
            },
        };
        // A space is one namespace; pointing the context there makes `kubectl get pods` work.
        let namespace = match target {
            Target::ProjectSpace { space, .. } => Some(space.clone()),
            _ => None,
        };
        Ok(KubeconfigEntry {
            name: target.context_name(naming),
            server,
            ca_pem: self.ca_pem().map(<[u8]>::to_vec),
            insecure: self.accepts_invalid_certs(),
            auth,
            namespace,
        })
    }
}

impl KubeconfigEntry {
    fn cluster(&self) -> NamedCluster {
        let ca = self
            .ca_pem
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
        NamedCluster {
            name: self.name.clone(),
            cluster: Some(kube_client::config::Cluster {
                server: Some(self.server.clone()),
                certificate_authority_data: ca,
                insecure_skip_tls_verify: self.insecure.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn user(&self) -> NamedAuthInfo {
        let auth_info = match &self.auth {
            KubeconfigAuth::Token(token) => AuthInfo {
                token: Some(token.clone()),
                ..Default::default()
            },
            KubeconfigAuth::Exec { command, args } => AuthInfo {
                exec: Some(ExecConfig {
                    api_version: Some(EXEC_API_VERSION.to_owned()),
                    command: Some(command.clone()),
                    args: Some(args.clone()),
                    // v1 requires the mode; the plugin never prompts.
                    interactive_mode: Some(ExecInteractiveMode::Never),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        NamedAuthInfo {
            name: self.name.clone(),
            auth_info: Some(auth_info),
            ..Default::default()
        }
    }

    fn context(&self) -> NamedContext {
        NamedContext {
            name: self.name.clone(),
            context: Some(Context {
                cluster: self.name.clone(),
                user: Some(self.name.clone()),
                namespace: self.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Puts `entries` into `config`, replacing clusters, users and contexts of the same names in
/// place and appending new ones; nothing else changes. `current` (a context name) becomes the
/// current context when given.
pub fn merge_kubeconfig(
    mut config: Kubeconfig,
    entries: &[KubeconfigEntry],
    current: Option<&str>,
) -> Kubeconfig {
    for entry in entries {
        upsert(&mut config.clusters, entry.cluster(), |c| &c.name);
        upsert(&mut config.auth_infos, entry.user(), |u| &u.name);
        upsert(&mut config.contexts, entry.context(), |c| &c.name);
    }
    if config.api_version.is_none() {
        config.api_version = Some("v1".to_owned());
    }
    if config.kind.is_none() {
        config.kind = Some("Config".to_owned());
    }
    if let Some(current) = current {
        config.current_context = Some(current.to_owned());
    }
    config
}

fn upsert<T>(list: &mut Vec<T>, item: T, name: impl Fn(&T) -> &String) {
    match list.iter().position(|x| name(x) == name(&item)) {
        Some(i) => list[i] = item,
        None => list.push(item),
    }
}

/// Reads the kubeconfig at `path` (missing or empty = empty), merges `entries` (see
/// [`merge_kubeconfig`]) and replaces the file atomically. A new file is owner-only. The whole
/// read-merge-write holds `<path>.lock` (client-go's convention; waits up to 10 s), so concurrent
/// merges do not lose each other's entries.
pub fn merge_into_file(
    path: &Path,
    entries: &[KubeconfigEntry],
    current: Option<&str>,
) -> Result<(), Error> {
    let _lock = crate::fsutil::FileLock::acquire(path, std::time::Duration::from_secs(10))?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Kubeconfig::from_yaml(&text).map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kubeconfig::default(),
        Err(source) => {
            return Err(Error::Io {
                context: "reading",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let merged = merge_kubeconfig(existing, entries, current);
    let text = serde_saphyr::to_string(&merged).map_err(|e| Error::Encoding {
        context: "kubeconfig",
        message: e.to_string(),
    })?;
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_ours_and_keeps_the_rest() {
        let existing = Kubeconfig::from_yaml(
            r#"
apiVersion: v1
kind: Config
current-context: theirs
custom-top: kept
clusters:
- name: theirs
  cluster: {server: "https://elsewhere:6443", custom-cluster: kept}
- name: loft_a
  cluster: {server: "https://old"}
users:
- name: theirs
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: aws, args: [eks, get-token]}
contexts:
- name: theirs
  context: {cluster: theirs, user: theirs, namespace: "007"}
"#,
        )
        .unwrap();
        let gw = GatewayClient::new("https://gw:8443", Credential::bearer("kgak_1")).unwrap();
        let entry = gw
            .kubeconfig_entry(&Target::cluster("a"), &ContextNaming::default(), None)
            .unwrap();
        let merged = merge_kubeconfig(existing.clone(), &[entry], Some("loft_a"));
        assert_eq!(merged.current_context.as_deref(), Some("loft_a"));
        assert_eq!(merged.clusters.len(), 2);
        assert_eq!(
            merged.clusters[1]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .as_deref(),
            Some("https://gw:8443/kubernetes/cluster/a")
        );
        let text = serde_saphyr::to_string(&merged).unwrap();
        let reparsed = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(json(&reparsed.clusters[0]), json(&existing.clusters[0]));
        assert_eq!(json(&reparsed.auth_infos[0]), json(&existing.auth_infos[0]));
        assert_eq!(json(&reparsed.contexts[0]), json(&existing.contexts[0]));
        assert_eq!(
            reparsed.other.get("custom-top"),
            existing.other.get("custom-top")
        );
        assert_eq!(
            reparsed.contexts[0]
                .context
                .as_ref()
                .unwrap()
                .namespace
                .as_deref(),
            Some("007")
        );
        assert!(text.contains("kgak_1"));
    }

    #[test]
    fn concurrent_merges_keep_every_entry() {
        let dir = std::env::temp_dir().join(format!("kubegate-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kubeconfig");
        let gw = GatewayClient::new("https://gw:8443", Credential::bearer("k")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                let entry = gw
                    .kubeconfig_entry(
                        &Target::cluster(format!("c{i}")),
                        &ContextNaming::default(),
                        None,
                    )
                    .unwrap();
                std::thread::spawn(move || merge_into_file(&path, &[entry], None).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let merged = Kubeconfig::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut names: Vec<_> = merged.contexts.iter().map(|c| c.name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            (0..8).map(|i| format!("loft_c{i}")).collect::<Vec<_>>()
        );
        assert!(!dir.join("kubeconfig.lock").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn json(value: &impl serde::Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }
}
