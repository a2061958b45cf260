//! kubegate-proxy's layers protecting an axum router that forwards Kubernetes API traffic.
//!
//! Starts a throwaway fake kube-apiserver (kubegate-testkit), serves an axum app on
//! 127.0.0.1 with:
//! - `GET /healthz` answered by axum itself, unauthenticated;
//! - `/kubernetes/cluster/prod/...` authenticated (a static bearer token), authorized by
//!   Kubernetes RBAC with kubegate-authz (read anything, write only configmaps), audited (JSON
//!   lines on stderr) and measured (Prometheus, at `GET /metrics`), then forwarded to the
//!   upstream impersonating the caller.
//!
//! It sends a few requests to itself, prints the results and checks each status (it panics if
//! one is not what the layers must answer; `tests/embed_axum.rs` runs it); pass `--serve` to
//! keep serving.
//!
//! ```sh
//! cargo run -p kubegate-proxy --example embed_axum [-- --serve]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use http::Request;
use http::request::Parts;
use http_body_util::BodyExt;
use kubegate_authz::Policy;
use kubegate_proxy::status::not_found_text;
use kubegate_proxy::{
    AuditLayer, Authenticated, Authenticator, AuthnError, AuthnLayer, AuthzLayer, ClientAddr,
    Credential, ForwardService, Identity, JsonLinesSink, LongRunning, MetricsLayer, RbacAuthorizer,
    RequestMeta, Upstream, UpstreamPath,
};
use kubegate_routing::{RequestInfo, Router as KubeRouter, Target};
use kubegate_testkit::{Rbac, TestApiServer, TestApiServerConfig, UserInfo};
use prometheus_client::registry::Registry;
use serde_json::json;
use tower::ServiceBuilder;

/// `Authorization: Bearer demo` is jane.
struct DemoTokens;
impl Authenticator for DemoTokens {
    type Scope = ();
    type Future = std::future::Ready<Result<Authenticated<()>, AuthnError>>;
    fn authenticate(&self, req: &Parts) -> Self::Future {
        std::future::ready(self.check(req))
    }
}
impl DemoTokens {
    fn check(&self, req: &Parts) -> Result<Authenticated<()>, AuthnError> {
        match req.headers.get("authorization").map(|v| v.as_bytes()) {
            Some(b"Bearer demo") => Ok(Authenticated {
                identity: Identity::authenticated(
                    "jane",
                    "",
                    vec!["devs".into()],
                    Default::default(),
                ),
                scope: None,
            }),
            _ => Err(AuthnError::Unauthorized),
        }
    }
}

/// The gateway's own RBAC (kubegate-authz, compiled from Kubernetes objects): group `devs`
/// reads anything and writes only configmaps.
fn gateway_policy() -> Policy {
    let role = serde_json::from_value(json!({
        "metadata": {"name": "read-mostly"},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
        ],
    }))
    .unwrap();
    let binding = serde_json::from_value(json!({
        "metadata": {"name": "devs-read-mostly"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "read-mostly"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}],
    }))
    .unwrap();
    Policy::compile(&[], &[role], &[], &[binding]).unwrap()
}

/// Routing: what the gateway does before the layers (prefix → upstream path, RequestInfo).
///
/// This app has one upstream, so it serves one target: a path that does not route, or routes
/// to any other target (another cluster, a space, the management API), gets kube's 404 here
/// and never reaches the prod upstream. A server with several upstreams picks the one whose
/// target the request routed to; what the authorizer checked (the target in the path) must
/// be where the request goes.
async fn route(mut req: Request<Body>, next: Next) -> Response {
    static ROUTER: std::sync::OnceLock<KubeRouter> = std::sync::OnceLock::new();
    let router = ROUTER.get_or_init(KubeRouter::central);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().as_str().to_owned();
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        req.extensions_mut().insert(ClientAddr(peer));
    }
    let Ok(route) = router.route(&path, query.as_deref()) else {
        return not_found_text();
    };
    if route.target != (Target::Cluster { cluster: "prod" }) {
        return not_found_text();
    }
    let (Ok(info), Ok(upstream_path)) = (
        RequestInfo::parse(&method, &route.rest, route.query),
        UpstreamPath::from_route(route.raw_rest, route.query),
    ) else {
        return not_found_text();
    };
    let meta = RequestMeta::new(&route.target, &info);
    let long_running = LongRunning(info.is_long_running());
    let ext = req.extensions_mut();
    ext.insert(upstream_path);
    ext.insert(long_running);
    ext.insert(meta);
    next.run(req).await
}

#[tokio::main]
async fn main() {
    demo(std::env::args().any(|a| a == "--serve")).await;
}

/// Builds the app, sends it the requests below and checks each answer; with `serve`, then
/// serves until interrupted.
pub(crate) async fn demo(serve: bool) {
    // The upstream: a fake kube-apiserver that lets the gateway impersonate and jane read.
    let rbac = Rbac::default()
        .with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "impersonator"},
                   "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "gateway"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "gateway"}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "devs-view"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dev"},
                   "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "dev"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps", "namespaces"], "verbs": ["*"]}]}),
        ])
        .unwrap();
    let api = TestApiServer::start(TestApiServerConfig::with_rbac(&rbac).unwrap())
        .await
        .unwrap();
    api.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "hello"}, "data": {"k": "v"}}),
    )
    .unwrap();

    let upstream = Upstream::builder("prod", api.url())
        .ca_bundle_pem(api.ca_pem())
        .credential(Credential::BearerToken(
            api.mint_token(UserInfo::new("gateway")),
        ))
        .build()
        .unwrap();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let metrics = MetricsLayer::new(&mut registry.lock().unwrap());

    // The protected part: everything under /kubernetes goes upstream.
    let protected = Router::new()
        .fallback_service(ForwardService::<Body>::new(upstream))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(route))
                .layer(metrics)
                .layer(AuditLayer::new(JsonLinesSink::new(std::io::stderr())))
                .layer(AuthnLayer::new(DemoTokens))
                .layer(AuthzLayer::new(RbacAuthorizer::new(
                    KubeRouter::central(),
                    gateway_policy(),
                ))),
        );
    let registry_for_handler = registry.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry_for_handler.clone();
                async move {
                    let mut text = String::new();
                    prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap())
                        .unwrap();
                    text
                }
            }),
        )
        .merge(protected);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    println!("serving on http://{addr} (upstream {})", api.url());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    // What each request must get: axum's own route, 401 without a token, the configmap read
    // through the upstream, kube's 403 from gateway RBAC (a namespace is its own namespace in
    // kube's RequestInfo, hence "in the namespace"), 404 for targets it does not serve, the
    // metrics.
    for (method, path, token, expected, needle) in [
        ("GET", "/healthz", None, 200, "ok"),
        (
            "GET",
            "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps/hello",
            None,
            401,
            "Unauthorized",
        ),
        (
            "GET",
            "/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps/hello",
            Some("demo"),
            200,
            "\"k\":\"v\"",
        ),
        (
            "DELETE",
            "/kubernetes/cluster/prod/api/v1/namespaces/default",
            Some("demo"),
            403,
            "namespaces \\\"default\\\" is forbidden: User \\\"jane\\\" cannot delete resource \\\"namespaces\\\" in API group \\\"\\\" in the namespace \\\"default\\\"",
        ),
        // Targets this app does not serve never reach the prod upstream, token or not.
        (
            "GET",
            "/kubernetes/cluster/staging/api/v1/namespaces/default/configmaps/hello",
            Some("demo"),
            404,
            "404 page not found",
        ),
        (
            "GET",
            "/kubernetes/management/apis/management.loft.sh/v1/clusters",
            Some("demo"),
            404,
            "404 page not found",
        ),
        (
            "GET",
            "/metrics",
            None,
            200,
            "kubegate_requests_total{target=\"cluster/prod\",verb=\"delete\",code=\"403\"} 1",
        ),
    ] {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = client
            .request(req.body(Default::default()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        let shown: String = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .take(6)
            .collect::<Vec<_>>()
            .join("\n  ");
        println!(
            "{method} {path} (token: {}) -> {status}\n  {shown}",
            token.unwrap_or("none")
        );
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(
            body.contains(needle),
            "{method} {path}: {needle} not in {body}"
        );
    }
    let seen = api.requests();
    for r in &seen {
        println!(
            "upstream saw {} {} as {:?} impersonating {:?}",
            r.method,
            r.path,
            r.authenticated.as_ref().map(|u| &u.name),
            r.impersonated.as_ref().map(|u| &u.name)
        );
    }
    // Only the allowed read went upstream, as the gateway impersonating jane.
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].authenticated.as_ref().map(|u| &*u.name),
        Some("gateway")
    );
    assert_eq!(
        seen[0].impersonated.as_ref().map(|u| &*u.name),
        Some("jane")
    );

    if serve {
        println!("serving until interrupted");
        let _ = server.await;
    }
}
