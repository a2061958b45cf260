//! End to end: real `kubectl` (and raw hyper clients) → the full layer stack (routing, metrics,
//! audit, authn, authz, ForwardService) → kubegate-testkit's fake kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{Pki, body_string, front, front_tls, full, h1_client};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use kubegate_proxy::{
    AuditLayer, Authenticated, Authenticator, AuthnError, AuthnLayer, Authorizer, AuthzLayer,
    Credential, Decision, ForwardService, Identity, JsonLinesSink, LongRunning, MetricsLayer,
    RequestMeta, Status, Upstream, UpstreamPath,
};
use kubegate_routing::{RequestInfo, Router};
use kubegate_testkit::{Rbac, TestApiServer, TestApiServerConfig, UserInfo};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tower::ServiceBuilder;

/// Bound on any one client run, so a hang fails the test instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(60);
const JANE_TOKEN: &str = "jane-gateway-token";
const GATEWAY_USER: &str = "kubegate-gateway";

/// The gateway may impersonate anyone; jane (group devs) may work with configmaps and exec
/// into pods in `default`.
fn rbac() -> Rbac {
    Rbac::default()
        .with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "impersonator"},
                   "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
                             {"apiGroups": ["authentication.k8s.io"], "resources": ["uids", "userextras/team"], "verbs": ["impersonate"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "gateway-impersonates"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": GATEWAY_USER}]}),
            json!({"kind": "Role", "metadata": {"name": "dev", "namespace": "default"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
                             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                             {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "devs", "namespace": "default"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dev"},
                   "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]}),
        ])
        .unwrap()
}

/// Bearer tokens → identities (a stand-in for kubegate-tokens).
struct Tokens;
impl Authenticator for Tokens {
    type Scope = ();
    type Future = std::future::Ready<Result<Authenticated<()>, AuthnError>>;
    fn authenticate(&self, req: &http::request::Parts) -> Self::Future {
        std::future::ready(self.check(req))
    }
}
impl Tokens {
    fn check(&self, req: &http::request::Parts) -> Result<Authenticated<()>, AuthnError> {
        let token = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(JANE_TOKEN) => Ok(Authenticated {
                identity: Identity::authenticated(
                    "jane",
                    "uid-jane",
                    vec!["devs".into()],
                    [("team".to_owned(), vec!["blue".to_owned()])].into(),
                ),
                scope: None,
            }),
            _ => Err(AuthnError::Unauthorized),
        }
    }
}

/// The gateway-level check: no deleting namespaces through the gateway.
struct NoNamespaceDeletes;
impl Authorizer for NoNamespaceDeletes {
    type Future = std::future::Ready<Decision>;
    fn authorize(&self, req: &http::request::Parts) -> Self::Future {
        std::future::ready(self.decide(req))
    }
}
impl NoNamespaceDeletes {
    fn decide(&self, req: &http::request::Parts) -> Decision {
        let meta = req.extensions.get::<RequestMeta>();
        let deleting_ns = meta.is_some_and(|m| {
            m.verb == "delete"
                && m.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource() == "namespaces")
        });
        if !deleting_ns {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let user = req
            .extensions
            .get::<Identity>()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let name = meta
            .and_then(|m| m.object_ref.as_ref())
            .map(|o| o.name().to_owned())
            .unwrap_or_default();
        Decision::Deny {
            status: Status::forbidden(
                "",
                "namespaces",
                &name,
                &format!(
                    "User {user:?} cannot delete resource \"namespaces\" in API group \"\" at the cluster scope"
                ),
            ),
            reason: String::new(),
        }
    }
}

struct Env {
    api: TestApiServer,
    pki: Pki,
    tls_addr: std::net::SocketAddr,
    plain_addr: std::net::SocketAddr,
    audit_log: PathBuf,
    registry: Arc<std::sync::Mutex<Registry>>,
}

async fn env() -> Env {
    let api = TestApiServer::start(TestApiServerConfig::with_rbac(&rbac()).unwrap())
        .await
        .unwrap();
    api.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let upstream = Upstream::builder("prod", api.url())
        .ca_bundle_pem(api.ca_pem())
        .credential(Credential::BearerToken(
            api.mint_token(UserInfo::new(GATEWAY_USER)),
        ))
        .build()
        .unwrap();
    let audit_log = api.temp_dir().join("audit.log");
    let audit_file = std::fs::File::create(&audit_log).unwrap();
    let mut registry = Registry::default();
    let router = Arc::new(Router::central());
    let stack = ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().map(str::to_owned);
            let method = req.method().as_str().to_owned();
            let route = router.route(&path, query.as_deref()).unwrap();
            let info = RequestInfo::parse(&method, &route.rest, route.query).unwrap();
            let ext = req.extensions_mut();
            ext.insert(UpstreamPath::from_route(route.raw_rest, route.query).unwrap());
            ext.insert(LongRunning(info.is_long_running()));
            ext.insert(RequestMeta::new(&route.target, &info));
            req
        })
        .layer(MetricsLayer::new(&mut registry))
        .layer(AuditLayer::new(JsonLinesSink::new(audit_file)))
        .layer(AuthnLayer::new(Tokens))
        .layer(AuthzLayer::new(NoNamespaceDeletes))
        .service(ForwardService::new(upstream));
    let pki = Pki::new();
    let tls_addr = front_tls(&pki, stack.clone()).await;
    let plain_addr = front(stack).await;
    Env {
        api,
        pki,
        tls_addr,
        plain_addr,
        audit_log,
        registry: Arc::new(std::sync::Mutex::new(registry)),
    }
}

impl Env {
    fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self
            .api
            .temp_dir()
            .join(format!("gateway-{token}.kubeconfig"));
        kubegate_testkit::write_kubeconfig(
            &path,
            &format!(
                "https://127.0.0.1:{}/kubernetes/cluster/prod",
                self.tls_addr.port()
            ),
            &self.pki.ca_pem,
            &kubegate_testkit::Credential::Token(token.to_owned()),
        )
        .unwrap();
        path
    }

    fn kubectl(&self, kubeconfig: &Path) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.api.temp_dir().join("gateway-kube-cache"))
            .kill_on_drop(true)
            .stdin(Stdio::null());
        c
    }

    async fn jane(&self, args: &[&str]) -> (bool, String, String) {
        let mut c = self.kubectl(&self.kubeconfig(JANE_TOKEN));
        c.args(args);
        let out = tokio::time::timeout(LIMIT, c.output())
            .await
            .expect("kubectl timed out")
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every request the upstream saw was made by the gateway, as jane.
    fn assert_upstream_saw_only_gateway_as_jane(&self) {
        let requests = self.api.requests();
        assert!(!requests.is_empty());
        for r in requests {
            assert_eq!(
                r.authenticated.as_ref().map(|u| u.name.as_str()),
                Some(GATEWAY_USER),
                "{r:?}"
            );
            let imp = r
                .impersonated
                .as_ref()
                .unwrap_or_else(|| panic!("not impersonated: {r:?}"));
            assert_eq!(imp.name, "jane", "{r:?}");
            assert_eq!(imp.groups, ["devs", "system:authenticated"], "{r:?}");
            assert_eq!(imp.uid, "uid-jane");
            assert_eq!(imp.extra.get("team"), Some(&vec!["blue".to_owned()]));
            assert!(
                !r.header_values("authorization")
                    .iter()
                    .any(|v| v.contains(JANE_TOKEN))
            );
        }
    }
}

#[tokio::test]
async fn kubectl_get_create_apply_delete_through_the_gateway() {
    let e = env().await;
    // `create -f` sends JSON (the `create configmap` generator sends protobuf, which the
    // testkit upstream does not decode).
    let cm = e.api.temp_dir().join("through-gw.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: through-gw\ndata:\n  k: v\n",
    )
    .unwrap();
    let (ok, out, err) = e.jane(&["create", "-f", cm.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = e.jane(&["get", "configmaps"]).await;
    assert!(ok && out.contains("through-gw"), "{out}{err}");
    assert!(out.starts_with("NAME"), "Table output expected: {out}");

    let manifest = e.api.temp_dir().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: default\ndata:\n  a: b\n",
    )
    .unwrap();
    let (ok, out, err) = e.jane(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("configmap/applied"), "{out}{err}");
    assert_eq!(
        e.api
            .get("configmaps", "default", "applied")
            .unwrap()
            .unwrap()["data"]["a"],
        "b"
    );

    let (ok, out, err) = e.jane(&["delete", "configmap", "through-gw"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        e.api
            .get("configmaps", "default", "through-gw")
            .unwrap()
            .is_none()
    );

    // The upstream's RBAC applies to jane, not to the gateway's own identity.
    let (ok, out, err) = e.jane(&["get", "secrets"]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("Error from server (Forbidden): secrets is forbidden: User \"jane\" cannot list resource \"secrets\""), "{err}");

    // The gateway's own authorizer answers kube-style.
    let (ok, _, err) = e.jane(&["delete", "namespace", "default"]).await;
    assert!(!ok);
    assert!(err.contains("Error from server (Forbidden): namespaces \"default\" is forbidden: User \"jane\" cannot delete resource \"namespaces\""), "{err}");

    e.assert_upstream_saw_only_gateway_as_jane();

    let audit = std::fs::read_to_string(&e.audit_log).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|ev| ev["user"]["username"] == "jane" && ev["apiVersion"] == "audit.k8s.io/v1")
    );
    assert!(events.iter().any(|ev| ev["verb"] == "create"
        && ev["objectRef"]["resource"] == "configmaps"
        && ev["responseStatus"]["code"] == 201
        && ev["annotations"]["authorization.k8s.io/decision"] == "allow"));
    assert!(events.iter().any(|ev| ev["verb"] == "delete"
        && ev["responseStatus"]["code"] == 403
        && ev["annotations"]["authorization.k8s.io/decision"] == "forbid"));

    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &e.registry.lock().unwrap()).unwrap();
    assert!(
        metrics.contains(
            "kubegate_requests_total{target=\"cluster/prod\",verb=\"create\",code=\"201\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn kubectl_with_a_bad_token_gets_unauthorized() {
    let e = env().await;
    let mut c = e.kubectl(&e.kubeconfig("wrong-token"));
    c.args(["get", "configmaps"]);
    let out = tokio::time::timeout(LIMIT, c.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // kubectl's rendering of a 401.
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
    assert!(
        e.api.requests().is_empty(),
        "an unauthenticated request reached the upstream"
    );
}

#[tokio::test]
async fn kubectl_get_watch_streams_events_through_the_gateway() {
    let e = env().await;
    let mut c = e.kubectl(&e.kubeconfig(JANE_TOKEN));
    c.args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Once the watch request is at the upstream, create objects and see them arrive.
    tokio::time::timeout(LIMIT, e.api.recorder().wait_for(|r| r.verb == "watch"))
        .await
        .unwrap();
    e.api
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "watched-1"}}),
        )
        .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("watched-1")) {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    child.kill().await.unwrap();
    e.assert_upstream_saw_only_gateway_as_jane();
}

#[tokio::test]
async fn kubectl_exec_over_websocket_through_the_gateway() {
    let e = env().await;
    let (ok, out, err) = e.jane(&["exec", "p", "--", "echo", "hi"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
        "{out}{err}"
    );
    let exec = e
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/exec"))
        .unwrap();
    assert_eq!(exec.header_values("upgrade"), ["websocket"]);

    // The command's exit code crosses too (the Status on the error channel), over WebSocket
    // and over SPDY: kubectl exits with it.
    for websockets in ["true", "false"] {
        let mut c = e.kubectl(&e.kubeconfig(JANE_TOKEN));
        c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .args(["exec", "p", "--", "sh", "-c", "exit 7"]);
        let out = tokio::time::timeout(LIMIT, c.output())
            .await
            .expect("kubectl timed out")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "websockets {websockets}: {err}");
        assert!(err.contains("command terminated with exit code 7"), "{err}");
    }
    e.assert_upstream_saw_only_gateway_as_jane();
}

#[tokio::test]
async fn smuggled_identity_headers_do_not_change_who_the_upstream_sees() {
    let e = env().await;
    let admin = e.api.admin_token().to_owned();
    let mut req = Request::get(format!(
        "http://{}/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps",
        e.plain_addr
    ))
    .body(full(""))
    .unwrap();
    for (n, v) in [
        ("authorization", format!("Bearer {JANE_TOKEN}")),
        ("authorization", format!("Bearer {admin}")),
        ("impersonate-user", "admin".to_owned()),
        ("impersonate-group", "system:masters".to_owned()),
        ("Impersonate-Extra-Scopes", "everything".to_owned()),
        ("x-remote-user", "admin".to_owned()),
        ("x-remote-group", "system:masters".to_owned()),
    ] {
        req.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let _ = body_string(res.into_body()).await;
    e.assert_upstream_saw_only_gateway_as_jane();
    let r = &e.api.requests()[0];
    assert!(
        !r.header_values("authorization")
            .iter()
            .any(|v| v.contains(&admin))
    );
    assert!(r.header_values("x-remote-user").is_empty());
    assert!(
        !r.impersonated
            .as_ref()
            .unwrap()
            .extra
            .contains_key("scopes")
    );
}

#[tokio::test]
async fn a_64_mib_list_and_a_1000_event_watch_stream_through() {
    let e = env().await;
    let total = e.api.seed_configmaps("default", 1024, 64 << 10).unwrap();
    let req = Request::get(format!(
        "http://{}/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps",
        e.plain_addr
    ))
    .header("authorization", format!("Bearer {JANE_TOKEN}"))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut bytes = 0usize;
    // Streamed, not collected: with the first bytes here and the client reading no more, the
    // upstream can only have made as much of the list as the sockets and buffers between
    // hold. A gateway that collected the list would have made the upstream finish it before
    // the client saw its first byte. Waiting until the upstream stops making more lets
    // whatever would run ahead run ahead (a gateway that read ahead without bound would only
    // stop at the end); the assertion holds for any length of the wait.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    bytes += first.len();
    let produced = tokio::time::timeout(Duration::from_secs(30), async {
        let mut last = e.api.list_bytes_produced();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = e.api.list_bytes_produced();
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the upstream's list settled");
    assert!(
        produced < (total / 2) as u64,
        "the upstream made {produced} of {total} bytes while the client read none: the list was buffered"
    );
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes += data.len();
        }
    }
    assert!(bytes > total, "{bytes} <= {total}");
    assert_eq!(e.api.list_bytes_produced(), bytes as u64);

    e.api
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "hot"}}),
        )
        .unwrap();
    let rv = e.api.resource_version();
    let req = Request::get(format!(
        "http://{}/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dhot",
        e.plain_addr
    ))
    .header("authorization", format!("Bearer {JANE_TOKEN}"))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    e.api.generate_events("cm", "default", "hot", 1000).unwrap();
    let mut body = res.into_body();
    let mut buf = Vec::new();
    let mut events = 0;
    while events < 1000 {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let ev: serde_json::Value = serde_json::from_slice(&line).unwrap();
                assert_eq!(ev["type"], "MODIFIED");
                assert_eq!(
                    ev["object"]["metadata"]["annotations"]["testkit/counter"],
                    events.to_string()
                );
                events += 1;
            }
        }
    }
}

async fn kube_client(e: &Env) -> kube_client::Client {
    let kubeconfig = kube_client::config::Kubeconfig::read_from(e.kubeconfig(JANE_TOKEN)).unwrap();
    let config = kube_client::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube_client::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn kube_client_list_watch_and_exec_through_the_gateway() {
    use futures_util::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube_client::api::{Api, AttachParams, ListParams, WatchEvent, WatchParams};
    use tokio::io::AsyncReadExt;

    let e = env().await;
    e.api
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "listed"}}),
        )
        .unwrap();
    let client = kube_client(&e).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("listed"))
    );
    let rv = list.metadata.resource_version.clone().unwrap();

    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    tokio::time::timeout(LIMIT, e.api.recorder().wait_for(|r| r.verb == "watch"))
        .await
        .unwrap();
    e.api
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "watched"}}),
        )
        .unwrap();
    let event = tokio::time::timeout(LIMIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Added(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("watched")),
        other => panic!("unexpected {other:?}"),
    }
    drop(stream);

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut proc = pods
        .exec(
            "p",
            ["echo", "hi"],
            &AttachParams::default().stdout(true).stderr(false),
        )
        .await
        .unwrap();
    let mut stdout = proc.stdout().unwrap();
    let mut out = String::new();
    tokio::time::timeout(LIMIT, stdout.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.contains(kubegate_testkit::EXEC_STDOUT_PREFIX), "{out}");
    let status = proc.take_status().unwrap().await;
    assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    e.assert_upstream_saw_only_gateway_as_jane();
}

#[tokio::test]
async fn upstream_misbehaviour_reaches_kubectl_as_kube_errors() {
    use kubegate_testkit::{Fault, FaultRule};
    let e = env().await;

    // An exec answered with a redirect: never followed, never shown; kubectl reports the
    // gateway's error.
    e.api.faults().inject(FaultRule::new(Fault::UpgradeStatus {
        code: 302,
        location: Some("https://evil.example/steal".into()),
    }));
    let (ok, out, err) = e.jane(&["exec", "p", "--", "echo", "hi"]).await;
    assert!(!ok, "{out}");
    assert!(
        !out.contains("evil.example") && !err.contains("evil.example"),
        "{out}{err}"
    );
    // What kubectl shows is the gateway's own answer (§5.4: a non-101 below 400 becomes a 500
    // `invalid upgrade response`), not anything the 302 carried.
    assert!(
        err.contains("Error from server: invalid upgrade response: status code 302"),
        "{err}"
    );
    e.api.faults().clear();

    // A reset connection is a 502 Status naming the cluster.
    e.api
        .faults()
        .inject(FaultRule::new(Fault::Reset).path_prefix("/api/v1/namespaces/default/configmaps"));
    let req = Request::get(format!(
        "http://{}/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps",
        e.plain_addr
    ))
    .header("authorization", format!("Bearer {JANE_TOKEN}"))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 502);
    let body = body_string(res.into_body()).await;
    assert!(
        body.contains("cluster \\\"prod\\\": upstream request failed"),
        "{body}"
    );
    e.api.faults().clear();
}

/// client-go's Accept when a controller is configured for protobuf.
const CLIENT_GO_PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

/// The body and Content-Type of a GET straight to the testkit, as its admin, over TLS.
async fn direct_get(api: &TestApiServer, path: &str, accept: &str) -> (String, bytes::Bytes) {
    let config = api.client_tls_config(None).unwrap();
    let tcp = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", api.addr().to_string())
        .header("authorization", format!("Bearer {}", api.admin_token()))
        .header("accept", accept)
        .body(full(""))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    (
        content_type,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// V6.2's protobuf rows through the stack: a controller speaking Kubernetes protobuf gets the
/// upstream's bytes and media types unchanged, an object byte for byte and a watch as
/// length-delimited frames that arrive as the events happen, and the stack's own Status
/// answers in protobuf as kube-apiserver negotiates its own.
#[tokio::test]
async fn protobuf_clients_get_objects_watches_and_statuses_as_kube_writes_them() {
    let e = env().await;
    e.api
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "pb"}, "data": {"k": "v"}}),
        )
        .unwrap();
    let path = "/api/v1/namespaces/default/configmaps/pb";
    let get = |path: String| {
        Request::get(format!(
            "http://{}/kubernetes/cluster/prod{path}",
            e.plain_addr
        ))
        .header("authorization", format!("Bearer {JANE_TOKEN}"))
        .header("accept", CLIENT_GO_PROTOBUF)
        .body(full(""))
        .unwrap()
    };
    let res = h1_client().request(get(path.to_owned())).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.kubernetes.protobuf"
    );
    let through = res.into_body().collect().await.unwrap().to_bytes();
    let (direct_type, direct) = direct_get(&e.api, path, CLIENT_GO_PROTOBUF).await;
    assert_eq!(direct_type, "application/vnd.kubernetes.protobuf");
    assert_eq!(through, direct, "the protobuf object changed on the way");
    let cm = kubegate_testkit::decode_protobuf(&through).unwrap();
    assert_eq!(cm["data"]["k"], "v");
    let upstream_saw = e.api.requests().into_iter().rev().find(|r| r.path == path);
    assert_eq!(
        upstream_saw.unwrap().header_values("accept"),
        [CLIENT_GO_PROTOBUF]
    );

    // Sends `req`, checks the answer's code and that it is protobuf, returns its body.
    let protobuf_reply = |req: Request<common::TestBody>, code: u16| async move {
        let res = h1_client().request(req).await.unwrap();
        assert_eq!(res.status(), code);
        assert_eq!(
            res.headers()["content-type"],
            "application/vnd.kubernetes.protobuf"
        );
        res.into_body().collect().await.unwrap().to_bytes()
    };

    // An error in the negotiated encoding passes through as the upstream wrote it.
    let body = protobuf_reply(
        get("/api/v1/namespaces/default/configmaps/none".to_owned()),
        404,
    )
    .await;
    let status = kubegate_testkit::decode_protobuf(&body).unwrap();
    assert_eq!(status["reason"], "NotFound");

    // The stack's own answers are negotiated the same way, as kube-apiserver's filters
    // negotiate theirs: AuthnLayer's 401 and AuthzLayer's 403 in protobuf.
    let mut bad_token = get(path.to_owned());
    bad_token
        .headers_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let body = protobuf_reply(bad_token, 401).await;
    assert_eq!(body, kubegate_proxy::Status::unauthorized().to_protobuf());
    let mut delete_ns = get("/api/v1/namespaces/default".to_owned());
    *delete_ns.method_mut() = http::Method::DELETE;
    let status = kubegate_testkit::decode_protobuf(&protobuf_reply(delete_ns, 403).await).unwrap();
    assert_eq!(
        status["message"],
        "namespaces \"default\" is forbidden: User \"jane\" cannot delete resource \"namespaces\" in API group \"\" at the cluster scope"
    );

    let rv = e.api.resource_version();
    let res = h1_client()
        .request(get(format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
        )))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = res.into_body();
    let mut buf = Vec::new();
    // One event at a time: each frame must arrive while the watch stays open.
    let mut last_rv = rv;
    for _ in 0..20 {
        e.api.generate_events("cm", "default", "pb", 1).unwrap();
        let (kind, object) = loop {
            if let Some(event) = kubegate_testkit::decode_protobuf_watch_event(&mut buf) {
                break event.unwrap();
            }
            let frame = tokio::time::timeout(LIMIT, body.frame())
                .await
                .expect("the watch event did not arrive")
                .expect("the watch ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
        };
        assert_eq!(kind, "MODIFIED");
        let event_rv: u64 = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(event_rv > last_rv, "{event_rv} after {last_rv}");
        last_rv = event_rv;
    }
    assert!(buf.is_empty(), "{} bytes beyond the last frame", buf.len());
}
