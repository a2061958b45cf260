//! Agent mode (direct cluster endpoint): a central gateway and an agent gateway in front of its
//! own fake kube-apiserver. Credentials of the central — a `DirectClusterEndpointToken` created
//! with `kubectl create -f`, and an access key — work at the agent, and keep working from the
//! agent's cache when the central goes away; a credential the agent never saw then gets a 503
//! that names the central.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use common::*;
use kubegate_gateway::{Config, Gateway, ServerLimits};
use kubegate_testkit::{Decision, FnAuthorizer, TestApiServer, TestApiServerConfig};

const MGMT: &str = "/kubernetes/management";
/// Agent mode serves the one cluster without a name in the path.
const AGENT_CLUSTER: &str = "/kubernetes/cluster";

struct Agent {
    upstream: TestApiServer,
    url: String,
    ca_pem: Vec<u8>,
    dir: PathBuf,
    _gateway: Gateway,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Agent {
    /// An agent serving cluster `a` (the central's name for it) in front of a fresh testkit
    /// server, trusting `central` for its credentials. Its own RBAC makes `admin` a gateway admin.
    async fn start(central: &Env) -> Agent {
        let allow_all = FnAuthorizer(|_: &kubegate_testkit::Attributes<'_>| Decision::Allow);
        let upstream = TestApiServer::start(TestApiServerConfig::new(allow_all))
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("kubegate-agent-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // The central's serving certificate is self-signed: it is its own CA.
        let central_ca = dir.join("central-ca.crt");
        std::fs::write(&central_ca, &central.ca_pem).unwrap();
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
mode: agent
stateDir: {state}
agent:
  cluster: a
  upstream: {{server: "{up}", caData: "{up_ca}", token: "{up_tok}"}}
  centralUrl: "{central}"
  centralCaFile: "{central_ca}"
rbac:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: admins}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:admin"}}
    subjects: [{{kind: User, name: admin, apiGroup: rbac.authorization.k8s.io}}]
"#,
            state = dir.join("state").display(),
            up = upstream.url(),
            up_ca = base64::engine::general_purpose::STANDARD.encode(upstream.ca_pem()),
            up_tok = upstream.admin_token(),
            central = central.url,
            central_ca = central_ca.display(),
        );
        let config = Config::parse(&yaml, Path::new("agent.yaml")).unwrap();
        let gateway = Gateway::new(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let ca_pem = std::fs::read(&gateway.serving_cert().cert_file).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serving = gateway.clone();
        tokio::spawn(async move {
            serving
                .serve(listener, ServerLimits::default(), async {
                    let _ = rx.await;
                })
                .await;
        });
        Agent {
            upstream,
            url,
            ca_pem,
            dir,
            _gateway: gateway,
            shutdown: Some(tx),
        }
    }

    async fn kubectl(&self, token: &str, args: &[&str]) -> Output {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "agent", "cluster": {"server": format!("{}{AGENT_CLUSTER}", self.url), "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "agent", "user": "u", "namespace": "default"}}],
            "current-context": "c",
        });
        let kubeconfig = self.dir.join(format!("kc-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&kubeconfig, doc.to_string()).unwrap();
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("kubectl runs")
    }

    fn last_pods_user(&self) -> String {
        let last = self
            .upstream
            .last_request_to("/pods")
            .expect("the agent's upstream saw a pods request");
        last.effective_user().unwrap().name.clone()
    }
}

/// Creates a DirectClusterEndpointToken at the central with `kubectl create -f`.
async fn direct_cluster_endpoint_token(central: &Env) -> String {
    let file = central.dir.join("dcet.yaml");
    std::fs::write(
        &file,
        "apiVersion: management.loft.sh/v1\nkind: DirectClusterEndpointToken\nspec: {}\n",
    )
    .unwrap();
    let out = central
        .kubectl(
            ADMIN_KEY,
            MGMT,
            &["create", "-f", file.to_str().unwrap(), "-o", "json"],
        )
        .await;
    let created: serde_json::Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    created["status"]["token"].as_str().unwrap().to_owned()
}

/// Waits until nothing accepts connections at `url` any more.
async fn wait_until_down(url: &str) {
    let addr = url.trim_start_matches("https://").to_owned();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url} still accepts connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn central_credentials_work_at_the_agent_and_survive_the_central_going_away() {
    if !has_kubectl() {
        panic!("kubectl is required for the end-to-end tests");
    }
    let central = Env::start().await;
    let agent = Agent::start(&central).await;
    let central_url = central.url.clone();

    // A token minted by the central, used with kubectl at the agent.
    let token = direct_cluster_endpoint_token(&central).await;
    assert_ok(&agent.kubectl(&token, &["get", "pods"]).await);
    assert_eq!(agent.last_pods_user(), "admin");

    // An access key of the central, validated through the central's `selves`.
    assert_ok(&agent.kubectl(ADMIN_KEY, &["get", "pods"]).await);
    assert_eq!(agent.last_pods_user(), "admin");

    // An access key the central does not know is refused with 401.
    let client = reqwest_like::Client::new(&agent.ca_pem);
    let pods = format!(
        "{}{AGENT_CLUSTER}/api/v1/namespaces/default/pods",
        agent.url
    );
    let reply = client
        .get(&pods, "kgak_not_a_key_of_the_central_000000000000000", &[])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    // The agent's own RBAC still applies: viewer is known to the central but has no binding
    // at the agent.
    let reply = client.get(&pods, VIEWER_KEY, &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // The central goes away.
    drop(central);
    wait_until_down(&central_url).await;

    // Cached credentials keep working.
    assert_ok(&agent.kubectl(&token, &["get", "pods"]).await);
    assert_eq!(agent.last_pods_user(), "admin");
    assert_ok(&agent.kubectl(ADMIN_KEY, &["get", "pods"]).await);

    // A key the agent never saw cannot be checked: 503, and the Status says why.
    let reply = client.get(&pods, OPERATOR_KEY, &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(status["kind"], "Status");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "the central gateway at {central_url} cannot be reached"
        )),
        "{message}"
    );
}
