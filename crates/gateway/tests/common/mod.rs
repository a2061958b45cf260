//! Shared harness: two fake kube-apiservers, a gateway in front of them, and kubectl.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use kubegate_gateway::{Config, Gateway, ServerLimits};
use kubegate_testkit::{Decision, FnAuthorizer, TestApiServer, TestApiServerConfig};
use sha2::Digest;

/// Access keys of the test users (known secrets; the config stores their digests), shaped as
/// kubegate generates keys (`kgak_` and 43 characters), as an agent requires of central keys.
pub const ADMIN_KEY: &str = "kgak_test_admin_00000000000000000000000000000000";
pub const VIEWER_KEY: &str = "kgak_test_viewer_0000000000000000000000000000000";
pub const OPERATOR_KEY: &str = "kgak_test_operator_00000000000000000000000000000";
pub const SCOPED_KEY: &str = "kgak_test_scoped_0000000000000000000000000000000";
pub const CLUSTER_ONLY_KEY: &str = "kgak_test_clusteronly_00000000000000000000000000";
pub const SPACE_KEY: &str = "kgak_test_space_00000000000000000000000000000000";

pub fn sha(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct Env {
    pub a: TestApiServer,
    pub b: TestApiServer,
    pub gateway: Gateway,
    pub url: String,
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn upstream() -> TestApiServer {
    let allow_all = FnAuthorizer(|_: &kubegate_testkit::Attributes<'_>| Decision::Allow);
    let mut config = TestApiServerConfig::new(allow_all);
    config.namespaces.push("s1".into());
    TestApiServer::start(config).await.unwrap()
}

fn config_yaml(a: &TestApiServer, b: &TestApiServer, dir: &Path, extra: &str) -> String {
    let ca = |s: &TestApiServer| base64::engine::general_purpose::STANDARD.encode(s.ca_pem());
    format!(
        r#"
listen: 127.0.0.1:0
stateDir: {state}
audit:
  sink: file
  path: {state}/audit.log
clusters:
  - name: a
    upstream: {{server: "{a_url}", caData: "{a_ca}", token: "{a_tok}"}}
  - name: b
    upstream: {{server: "{b_url}", caData: "{b_ca}", token: "{b_tok}"}}
    grafana: {{server: "{a_url}/grafana-root", caData: "{a_ca}", token: "{a_tok}"}}
virtualClusters:
  - cluster: a
    namespace: team
    name: vc1
    upstream: {{server: "{b_url}", caData: "{b_ca}", token: "{b_tok}"}}
  - cluster: a
    namespace: team
    name: vc-oidc
    upstream: {{server: "{b_url}", caData: "{b_ca}", identityMode: oidc}}
projects:
  - name: p1
    spaces:
      - name: s1
        cluster: a
    virtualClusters:
      - name: pv1
        upstream: {{server: "{b_url}", caData: "{b_ca}", token: "{b_tok}"}}
users:
  - name: admin
  - name: viewer
  - name: operator
  - name: scoped
  - name: spaceuser
teams:
  - name: devs
    members: [viewer, operator]
accessKeys:
  - {{name: admin, user: admin, sha256: {admin}}}
  - {{name: viewer, user: viewer, sha256: {viewer}}}
  - {{name: operator, user: operator, sha256: {operator}}}
  - {{name: scoped, user: scoped, sha256: {scoped}, scope: {{clusters: [{{cluster: a}}], rules: [{{requestTargets: [Management]}}]}}}}
  - {{name: cluster-only, user: scoped, sha256: {cluster_only}, scope: {{clusters: [{{cluster: a}}]}}}}
  - {{name: spaceuser, user: spaceuser, sha256: {space}}}
rbac:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: admins}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:admin"}}
    subjects: [{{kind: User, name: admin, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata: {{name: use-all-targets}}
    rules:
      - apiGroups: [management.loft.sh]
        resources: [clusters, virtualclusters, spaceinstances, virtualclusterinstances]
        verbs: [use]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: devs-use}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: use-all-targets}}
    subjects: [{{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}}, {{kind: User, name: scoped, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: viewers}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:viewer"}}
    subjects: [{{kind: User, name: viewer, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: operators}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:operator"}}
    subjects: [{{kind: User, name: operator, apiGroup: rbac.authorization.k8s.io}}, {{kind: User, name: scoped, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata: {{name: space-s1, namespace: p-p1}}
    rules:
      - apiGroups: [management.loft.sh]
        resources: [spaceinstances]
        resourceNames: [s1]
        verbs: [use]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata: {{name: space-s1, namespace: p-p1}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: space-s1}}
    subjects: [{{kind: User, name: spaceuser, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: spaceuser-operator}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:operator"}}
    subjects: [{{kind: User, name: spaceuser, apiGroup: rbac.authorization.k8s.io}}]
{extra}
"#,
        state = dir.join("state").display(),
        a_url = a.url(),
        b_url = b.url(),
        a_ca = ca(a),
        b_ca = ca(b),
        a_tok = a.admin_token(),
        b_tok = b.admin_token(),
        admin = sha(ADMIN_KEY),
        viewer = sha(VIEWER_KEY),
        operator = sha(OPERATOR_KEY),
        scoped = sha(SCOPED_KEY),
        space = sha(SPACE_KEY),
        cluster_only = sha(CLUSTER_ONLY_KEY),
    )
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Env {
        Env::start_with_fn(|_, _| extra.to_owned()).await
    }

    /// Starts with extra config written by `extra(upstream a, test dir)` (e.g. after writing a
    /// file the config names).
    pub async fn start_with_fn(extra: impl FnOnce(&TestApiServer, &Path) -> String) -> Env {
        Env::start_with_limits(extra, ServerLimits::default()).await
    }

    /// [`start_with_fn`](Self::start_with_fn), serving with `limits`.
    pub async fn start_with_limits(
        extra: impl FnOnce(&TestApiServer, &Path) -> String,
        limits: ServerLimits,
    ) -> Env {
        let a = upstream().await;
        let b = upstream().await;
        let dir = std::env::temp_dir().join(format!("kubegate-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = extra(&a, &dir);
        let yaml = config_yaml(&a, &b, &dir, &extra);
        let config = Config::parse(&yaml, Path::new("e2e.yaml")).unwrap();
        let gateway = Gateway::new(config.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let ca_pem = std::fs::read(&gateway.serving_cert().cert_file).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serving = gateway.clone();
        let serving = tokio::spawn(async move {
            serving
                .serve(listener, limits, async {
                    let _ = rx.await;
                })
                .await;
        });
        Env {
            a,
            b,
            gateway,
            url,
            dir,
            ca_pem,
            config,
            shutdown: Some(tx),
            serving: Some(serving),
        }
    }

    /// Shuts the gateway down and waits until [`Gateway::serve`] has returned.
    pub async fn stop(&mut self) {
        self.shutdown();
        if let Some(serving) = self.serving.take() {
            serving.await.unwrap();
        }
    }

    /// Starts the gateway's graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Writes a kubeconfig for `token` against `prefix` (e.g. `/kubernetes/cluster/a`).
    pub fn kubeconfig(&self, token: &str, prefix: &str) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "gw", "cluster": {"server": format!("{}{prefix}", self.url), "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "gw", "user": "u", "namespace": "default"}}],
            "current-context": "c",
        });
        let path = self.dir.join(format!("kc-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    /// Runs kubectl with a kubeconfig for `token` at `prefix`.
    pub async fn kubectl(&self, token: &str, prefix: &str, args: &[&str]) -> Output {
        let kc = self.kubeconfig(token, prefix);
        let cache = self.dir.join("kubectl-cache");
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--request-timeout=20s")
            .args(args)
            .kill_on_drop(true);
        cmd.output().await.expect("kubectl runs")
    }

    /// An HTTPS client that trusts the gateway.
    pub fn client(&self) -> reqwest_like::Client {
        reqwest_like::Client::new(&self.ca_pem)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn assert_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

#[track_caller]
pub fn assert_forbidden(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got: {}", stdout(o));
    let err = stderr(o);
    assert!(
        (err.contains("Error from server (Forbidden)") || err.contains("is forbidden"))
            && err.contains(needle),
        "expected Forbidden containing {needle:?}, got: {err}"
    );
}

/// Fails the test when `kubectl` cannot run: the end-to-end tests drive the real client, and
/// the machine image promises it, so a missing one is a broken machine, not a skipped test.
pub fn require_kubectl() {
    let runs = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(runs, "kubectl is required for the end-to-end tests");
}

/// A tiny HTTPS client over hyper for raw requests (headers kubectl won't send).
pub mod reqwest_like {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    pub struct Client {
        inner: HyperClient<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Full<Bytes>,
        >,
    }

    pub struct Reply {
        pub status: u16,
        pub headers: http::HeaderMap,
        /// The body as text (lossy for binary bodies; see `bytes`).
        pub body: String,
        pub bytes: Bytes,
    }

    impl Client {
        pub fn new(ca_pem: &[u8]) -> Client {
            Client::build(ca_pem, None)
        }

        /// A client presenting `identity` as its TLS client certificate.
        pub fn with_identity(ca_pem: &[u8], identity: &kubegate_testkit::CertifiedKey) -> Client {
            Client::build(ca_pem, Some(identity))
        }

        fn build(ca_pem: &[u8], identity: Option<&kubegate_testkit::CertifiedKey>) -> Client {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let tls = match identity {
                Some(id) => builder
                    .with_client_auth_cert(vec![id.cert_der.clone()], id.private_key())
                    .unwrap(),
                None => builder.with_no_client_auth(),
            };
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .build();
            Client {
                inner: HyperClient::builder(TokioExecutor::new()).build(https),
            }
        }

        pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Reply {
            let res = self.inner.request(req).await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                bytes: body,
            }
        }

        /// Sends a request; `None` when the connection failed instead of answering.
        pub async fn try_send(&self, req: http::Request<Full<Bytes>>) -> Option<u16> {
            self.inner
                .request(req)
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }

        pub async fn get(&self, url: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
            let mut b = http::Request::get(url).header("authorization", format!("Bearer {token}"));
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            self.send(b.body(Full::new(Bytes::new())).unwrap()).await
        }

        /// GETs `url` every 50 ms until it answers `to`, asserting every answer before that
        /// is `from`; panics with `what` when `within` has passed first.
        pub async fn until_status_turns(
            &self,
            url: &str,
            token: &str,
            (from, to): (u16, u16),
            within: std::time::Duration,
            what: &str,
        ) {
            let deadline = std::time::Instant::now() + within;
            loop {
                let reply = self.get(url, token, &[]).await;
                if reply.status == to {
                    return;
                }
                assert_eq!(reply.status, from, "{}", reply.body);
                assert!(std::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }

        pub async fn post(
            &self,
            url: &str,
            token: &str,
            content_type: &str,
            body: Vec<u8>,
        ) -> Reply {
            let req = http::Request::post(url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", content_type)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            self.send(req).await
        }
    }
}
