//! Harness: two fake kube-apiservers, a gateway in front of them (restartable on the same
//! address), kubectl, and the CLI example.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use kubegate_client::{Credential, GatewayClient};
use kubegate_gateway::{Config, Gateway, ServerLimits};
use kubegate_testkit::{Decision, FnAuthorizer, TestApiServer, TestApiServerConfig};
use sha2::Digest;

/// Access keys of the test users (known secrets; the config stores their digests).
pub const ADMIN_KEY: &str = "kgak_test_admin_0000000000000000000000000000000";
pub const VIEWER_KEY: &str = "kgak_test_viewer_000000000000000000000000000000";
pub const SCOPED_KEY: &str = "kgak_test_scoped_000000000000000000000000000000";
pub const SPACE_KEY: &str = "kgak_test_space_0000000000000000000000000000000";

pub fn sha(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Env {
    pub a: TestApiServer,
    pub b: TestApiServer,
    pub url: String,
    pub addr: SocketAddr,
    /// Bound to `addr` for the whole test and never listening: while the gateway is stopped,
    /// connections to `addr` are refused as they would be with nothing there, and no other
    /// socket on the machine (an outgoing connection's ephemeral port, another test's
    /// listener) can take the port before [`Env::restart`] listens on it again.
    _reserved: socket2::Socket,
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub config: Config,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(r) = self.running.get_mut().take() {
            let _ = r.shutdown.send(());
            r.task.abort();
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

fn config_yaml(a: &TestApiServer, b: &TestApiServer, dir: &Path) -> String {
    let ca = |s: &TestApiServer| base64::engine::general_purpose::STANDARD.encode(s.ca_pem());
    format!(
        r#"
listen: 127.0.0.1:0
stateDir: {state}
clusters:
  - name: a
    upstream: {{server: "{a_url}", caData: "{a_ca}", token: "{a_tok}"}}
  - name: b
    upstream: {{server: "{b_url}", caData: "{b_ca}", token: "{b_tok}"}}
virtualClusters:
  - cluster: a
    namespace: team
    name: vc1
    upstream: {{server: "{b_url}", caData: "{b_ca}", token: "{b_tok}"}}
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
  - name: scoped
  - name: spaceuser
accessKeys:
  - {{name: admin, user: admin, sha256: {admin}}}
  - {{name: viewer, user: viewer, sha256: {viewer}}}
  - {{name: scoped, user: scoped, sha256: {scoped}, scope: {{clusters: [{{cluster: a}}], rules: [{{requestTargets: [Management]}}]}}}}
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
    metadata: {{name: use-all}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: use-all-targets}}
    subjects: [{{kind: User, name: viewer, apiGroup: rbac.authorization.k8s.io}}, {{kind: User, name: scoped, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: viewers}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:viewer"}}
    subjects: [{{kind: User, name: viewer, apiGroup: rbac.authorization.k8s.io}}]
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: operators}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:operator"}}
    subjects: [{{kind: User, name: scoped, apiGroup: rbac.authorization.k8s.io}}, {{kind: User, name: spaceuser, apiGroup: rbac.authorization.k8s.io}}]
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
        scoped = sha(SCOPED_KEY),
        space = sha(SPACE_KEY),
    )
}

/// A socket bound to `addr` with `SO_REUSEPORT` and without `SO_REUSEADDR`: the listeners of
/// one [`Env`] (`SO_REUSEPORT` too, same user) may share its port, and no other socket may bind
/// it, not even one with `SO_REUSEADDR` (tokio's listeners) while no listener is there.
fn reserve(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listener on `addr` (port 0: a free one) that shares its port with [`reserve`]'s socket:
/// only a listening socket takes connections, so it gets every one. `SO_REUSEADDR` lets it
/// bind beside the last listener's connections in TIME_WAIT.
fn listen_sharing(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

async fn serve(config: &Config, listener: tokio::net::TcpListener) -> (Gateway, Running) {
    let gateway = Gateway::new(config.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let serving = gateway.clone();
    let limits = ServerLimits {
        // A restart in the tests must not wait for idle keep-alive connections.
        shutdown_grace: Duration::from_millis(200),
        ..ServerLimits::default()
    };
    let task = tokio::spawn(async move {
        serving
            .serve(listener, limits, async {
                let _ = rx.await;
            })
            .await;
    });
    (gateway, Running { shutdown: tx, task })
}

impl Env {
    pub async fn start() -> Env {
        let a = upstream().await;
        let b = upstream().await;
        let dir =
            std::env::temp_dir().join(format!("kubegate-client-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = config_yaml(&a, &b, &dir);
        let config = Config::parse(&yaml, Path::new("e2e.yaml")).unwrap();
        let listener = listen_sharing(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let reserved = reserve(addr).unwrap();
        let (gateway, running) = serve(&config, listener).await;
        let ca_pem = std::fs::read(&gateway.serving_cert().cert_file).unwrap();
        Env {
            a,
            b,
            url: format!("https://{addr}"),
            addr,
            _reserved: reserved,
            dir,
            ca_pem,
            config,
            running: tokio::sync::Mutex::new(Some(running)),
        }
    }

    /// Stops the gateway and waits until its listener is closed.
    pub async fn stop(&self) {
        if let Some(r) = self.running.lock().await.take() {
            let _ = r.shutdown.send(());
            let _ = r.task.await;
        }
    }

    /// Starts a new gateway process-equivalent on the same address and state directory (same
    /// signing key and serving certificate, as a restarted binary would have).
    pub async fn restart(&self) {
        self.stop().await;
        let listener = listen_sharing(self.addr)
            .unwrap_or_else(|e| panic!("listening on {} again: {e}", self.addr));
        let (_gateway, running) = serve(&self.config, listener).await;
        *self.running.lock().await = Some(running);
    }

    pub fn gateway(&self, key: &str) -> GatewayClient {
        GatewayClient::new(&self.url, Credential::bearer(key))
            .unwrap()
            .with_ca_pem(&self.ca_pem)
            .unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs kubectl with `kubeconfig` (and nothing from the environment).
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        cmd.output().await.expect("kubectl runs")
    }

    /// Runs the CLI example with its config and kubeconfig inside this environment's directory.
    pub async fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[]).await
    }

    pub async fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(cli_path());
        cmd.args(args)
            .env("KUBEGATE_CLI_CONFIG", self.cli_config())
            .env("KUBECONFIG", self.path("kubeconfig"))
            .env("HOME", self.path("home"))
            .env_remove("KUBEGATE_ACCESS_KEY")
            .env_remove("KUBERNETES_EXEC_INFO")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        cmd.output().await.expect("the CLI runs")
    }

    pub fn cli_config(&self) -> PathBuf {
        self.path("cli/config.json")
    }

    pub fn ca_file(&self) -> PathBuf {
        let path = self.path("gateway-ca.pem");
        if !path.exists() {
            std::fs::write(&path, &self.ca_pem).unwrap();
        }
        path
    }

    /// Logs the CLI in with `key`.
    pub async fn login(&self, key: &str) {
        let ca = self.ca_file();
        let out = self
            .cli(&[
                "login",
                &self.url,
                "--access-key",
                key,
                "--ca-file",
                ca.to_str().unwrap(),
            ])
            .await;
        assert_ok(&out);
    }
}

/// A gateway in agent mode (a direct cluster endpoint for cluster `a`) that verifies tokens with
/// the central gateway's signing key.
pub struct Agent {
    pub url: String,
    pub ca_pem: Vec<u8>,
    running: Option<Running>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            r.task.abort();
        }
    }
}

impl Env {
    pub async fn start_agent(&self) -> Agent {
        let dir = self.dir.join("agent");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(self.a.ca_pem());
        let yaml = format!(
            "{}\nmode: agent\nagent:\n  cluster: a\n  upstream: {{server: \"{}\", caData: \"{ca}\", token: \"{}\"}}\n  centralUrl: \"{}\"\nsigningKeys: [\"{}\"]\n",
            config_yaml(&self.a, &self.b, &dir),
            self.a.url(),
            self.a.admin_token(),
            self.url,
            self.dir.join("state/signing-key.pem").display(),
        );
        let config = Config::parse(&yaml, Path::new("agent.yaml")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (gateway, running) = serve(&config, listener).await;
        let ca_pem = std::fs::read(&gateway.serving_cert().cert_file).unwrap();
        Agent {
            url,
            ca_pem,
            running: Some(running),
        }
    }
}

/// The CLI example binary, built by `cargo test -p kubegate-client` beside this test binary.
pub fn cli_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("kubegate-cli{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test -p kubegate-client`, which builds the examples",
        path.display()
    );
    path
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
        "command failed ({:?}): {}\nstdout: {}",
        o.status.code(),
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    assert!(
        stderr(o).contains(needle),
        "expected {needle:?} in: {}",
        stderr(o)
    );
}

/// Seeds a pod named `web` in `namespace` of `server` (ignoring "already exists").
pub fn seed_pod(server: &TestApiServer, namespace: &str) {
    let _ = server.create(
        "pods",
        namespace,
        serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
}

/// The user the upstream last acted for on a request whose path ends with `suffix`.
pub fn last_user(server: &TestApiServer, suffix: &str) -> String {
    server
        .requests()
        .iter()
        .rev()
        .find(|r| r.path.ends_with(suffix))
        .and_then(|r| r.effective_user().map(|u| u.name.clone()))
        .unwrap_or_default()
}
