//! `/auth/`: password login, session cookies, CSRF and Origin checks, login rate limiting,
//! logout; against a real gateway over HTTPS with a testkit kube-apiserver behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubegate_gateway::authenticators::{AuthnInput, AuthnOutcome};
use kubegate_gateway::{Config, Gateway, ServerLimits};
use kubegate_testkit::{Decision, FnAuthorizer, TestApiServer, TestApiServerConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest;

const ADMIN_KEY: &str = "kgak_test_admin_0000000000000000000000000000000";
const SCOPED_KEY: &str = "kgak_test_scoped_000000000000000000000000000000";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const VIEWER_PASSWORD: &str = "viewer's own secret";
const PODS: &str = "/kubernetes/cluster/a/api/v1/namespaces/default/pods";
const CONFIGMAPS: &str = "/kubernetes/cluster/a/api/v1/namespaces/default/configmaps";
const ALLOWED_ORIGIN: &str = "https://ui.example";

// ---------------------------------------------------------------------------------------------
// Log capture: every tracing event of this test binary, so a test can assert that no secret was
// ever logged.

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(span.metadata().name().to_owned());
        span.record(&mut f);
        LOGS.lock().unwrap().push(f.0);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields(String::new());
        values.record(&mut f);
        LOGS.lock().unwrap().push(f.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(event.metadata().target().to_owned());
        event.record(&mut f);
        LOGS.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
}

fn logs_contain(needle: &str) -> bool {
    LOGS.lock().unwrap().iter().any(|l| l.contains(needle))
}

// ---------------------------------------------------------------------------------------------
// Harness: one testkit kube-apiserver (cluster `a`) behind a gateway with password users.

fn sha(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An argon2id PHC string with small parameters, so debug-build tests stay fast; verification
/// reads the parameters from the string.
fn hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

struct Env {
    a: TestApiServer,
    gateway: Gateway,
    url: String,
    dir: PathBuf,
    ca_pem: Vec<u8>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_yaml(a: &TestApiServer, dir: &Path, max_failures: u32, window: u64) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(a.ca_pem());
    format!(
        r#"
listen: 127.0.0.1:0
stateDir: {state}
audit:
  sink: file
  path: {state}/audit.log
clusters:
  - name: a
    upstream: {{server: "{a_url}", caData: "{ca}", token: "{a_tok}"}}
users:
  - name: admin
    passwordHash: "{admin_hash}"
  - name: viewer
    passwordHash: "{viewer_hash}"
  - name: nopass
  - name: scoped
accessKeys:
  - {{name: admin, user: admin, sha256: {admin}}}
  - {{name: scoped, user: scoped, sha256: {scoped}, scope: {{clusters: [{{cluster: a}}]}}}}
auth:
  sessionTtlSeconds: 600
  maxLoginFailures: {max_failures}
  loginWindowSeconds: {window}
  allowedOrigins: ["{allowed}"]
rbac:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: admins}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:admin"}}
    subjects: [{{kind: User, name: admin, apiGroup: rbac.authorization.k8s.io}}]
"#,
        state = dir.join("state").display(),
        a_url = a.url(),
        a_tok = a.admin_token(),
        admin_hash = hash(ADMIN_PASSWORD),
        viewer_hash = hash(VIEWER_PASSWORD),
        admin = sha(ADMIN_KEY),
        scoped = sha(SCOPED_KEY),
        allowed = ALLOWED_ORIGIN,
    )
}

impl Env {
    async fn start() -> Env {
        Env::start_with_limits(5, 300).await
    }

    async fn start_with_limits(max_failures: u32, window: u64) -> Env {
        capture_logs();
        let allow_all = FnAuthorizer(|_: &kubegate_testkit::Attributes<'_>| Decision::Allow);
        let a = TestApiServer::start(TestApiServerConfig::new(allow_all))
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("kubegate-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = config_yaml(&a, &dir, max_failures, window);
        let config = Config::parse(&yaml, Path::new("auth.yaml")).unwrap();
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
        Env {
            a,
            gateway,
            url,
            dir,
            ca_pem,
            shutdown: Some(tx),
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.ca_pem, None)
    }

    /// A client whose connections come from another loopback address.
    fn client_from(&self, source: IpAddr) -> Client {
        Client::new(&self.ca_pem, Some(source))
    }

    async fn kubectl(&self, token: &str, args: &[&str]) -> std::process::Output {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "gw", "cluster": {"server": format!("{}/kubernetes/cluster/a", self.url), "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "gw", "user": "u", "namespace": "default"}}],
            "current-context": "c",
        });
        let kc = self.dir.join(format!("kc-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&kc, doc.to_string()).unwrap();
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("kubectl runs")
    }

    /// The runtime's view of a request: what the session authenticator decides for it.
    fn session_outcome(&self, method: &http::Method, headers: &http::HeaderMap) -> AuthnOutcome {
        let runtime = self.gateway.shared().runtime.load_full();
        let input = AuthnInput {
            method,
            headers,
            bearer: None,
            client_addr: None,
            peer_certificate: None,
            directory: &runtime.directory,
        };
        kubegate_gateway::auth::authenticate_session(&runtime.credentials, &runtime.config, &input)
    }

    fn host(&self) -> &str {
        self.url.trim_start_matches("https://")
    }
}

struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn set_cookie(&self) -> String {
        self.headers
            .get("set-cookie")
            .expect("a Set-Cookie header")
            .to_str()
            .unwrap()
            .to_owned()
    }
}

impl Client {
    fn new(ca_pem: &[u8], source: Option<IpAddr>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_local_address(source);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(https),
        }
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut b = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let res = self
            .inner
            .request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// `name=value` of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

async fn password_login(env: &Env, client: &Client, user: &str, password: &str) -> Reply {
    client
        .send(
            http::Method::POST,
            &format!("{}/auth/password/login", env.url),
            &[],
            Some(serde_json::json!({"username": user, "password": password})),
        )
        .await
}

/// GETs `url` with `bearer`.
async fn get_with(client: &Client, url: &str, bearer: &str) -> Reply {
    let authorization = format!("Bearer {bearer}");
    client
        .send(
            http::Method::GET,
            url,
            &[("authorization", authorization.as_str())],
            None,
        )
        .await
}

/// POSTs `body` to a management resource with `bearer`: the object must be created.
async fn create_with(
    env: &Env,
    client: &Client,
    resource: &str,
    bearer: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let reply = post_with(env, client, resource, bearer, body).await;
    assert_eq!(reply.status, 201, "{resource}: {}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// POSTs `body` to a management resource with `bearer`, whatever the answer.
async fn post_with(
    env: &Env,
    client: &Client,
    resource: &str,
    bearer: &str,
    body: serde_json::Value,
) -> Reply {
    let url = format!(
        "{}/kubernetes/management/apis/management.loft.sh/v1/{resource}",
        env.url
    );
    let authorization = format!("Bearer {bearer}");
    client
        .send(
            http::Method::POST,
            &url,
            &[("authorization", authorization.as_str())],
            Some(body),
        )
        .await
}

async fn token_login(env: &Env, token: &str) -> Reply {
    env.client()
        .send(
            http::Method::POST,
            &format!("{}/auth/login", env.url),
            &[],
            Some(serde_json::json!({"token": token})),
        )
        .await
}

#[track_caller]
fn assert_status(reply: &Reply, code: u16, reason: &str) {
    assert_eq!(reply.status, code, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

// ---------------------------------------------------------------------------------------------

/// `POST /auth/password/login` answers Loft's `{accessKey}`; the key is a stored `Login` key that
/// expires with the session TTL and works as a kubectl bearer token.
#[tokio::test(flavor = "multi_thread")]
async fn password_login_returns_a_key_that_works_with_kubectl() {
    let env = Env::start().await;
    let reply = password_login(&env, &env.client(), "admin", ADMIN_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body = reply.json();
    let key = body["accessKey"].as_str().unwrap().to_owned();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(key.starts_with("kgak_"), "{key}");

    let state = env.gateway.shared().store.snapshot().await.unwrap();
    let stored: Vec<_> = state.access_keys.values().collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].user, "admin");
    assert_eq!(stored[0].key_type, "Login");
    assert_eq!(stored[0].sha256, sha(&key));
    assert_eq!(stored[0].expires_at, Some(stored[0].created_at + 600));

    let out = env.kubectl(&key, &["get", "pods", "-o", "name"]).await;
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = env.a.last_request_to("/pods").unwrap();
    assert_eq!(last.effective_user().unwrap().name, "admin");
}

/// A wrong password, an unknown user and a user without a password all get the same 401.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_are_the_same_401() {
    let env = Env::start().await;
    let client = env.client();
    let wrong = password_login(&env, &client, "admin", "nope").await;
    assert_status(&wrong, 401, "Unauthorized");
    let unknown = password_login(&env, &client, "mallory", ADMIN_PASSWORD).await;
    let nopass = password_login(&env, &client, "nopass", "").await;
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, nopass.body);
    assert_eq!(unknown.status, 401);
    assert_eq!(nopass.status, 401);
    // Another user's password is not this user's.
    let crossed = password_login(&env, &client, "viewer", ADMIN_PASSWORD).await;
    assert_eq!(crossed.status, 401);
    let state = env.gateway.shared().store.snapshot().await.unwrap();
    assert!(state.access_keys.is_empty());
}

/// Failed logins lock out the user name (from any address) and the source address (for any
/// user) with 429 + Retry-After, without checking the password; after the window, logins work.
#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_rate_limited_and_recover() {
    // A window of minutes while the lock-out is checked (a short one could pass while a slow
    // machine still checks), then shortened by a reload to see the lock end.
    let env = Env::start_with_limits(3, 120).await;
    let local = env.client();
    for _ in 0..3 {
        let reply = password_login(&env, &local, "admin", "guess").await;
        assert_status(&reply, 401, "Unauthorized");
    }
    // The right password does not help while locked.
    let locked = password_login(&env, &local, "admin", ADMIN_PASSWORD).await;
    assert_status(&locked, 429, "TooManyRequests");
    let body = locked.json();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("try again later"),
        "{body}"
    );
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["details"]["retryAfterSeconds"], retry);
    // Per source: another user from the same address is refused too.
    let same_source = password_login(&env, &local, "viewer", VIEWER_PASSWORD).await;
    assert_status(&same_source, 429, "TooManyRequests");
    // Per user: the locked user from a fresh address is refused; another user from there is not.
    let elsewhere = env.client_from(IpAddr::from([127, 0, 0, 2]));
    let same_user = password_login(&env, &elsewhere, "admin", ADMIN_PASSWORD).await;
    assert_status(&same_user, 429, "TooManyRequests");
    let other_user = password_login(&env, &elsewhere, "viewer", VIEWER_PASSWORD).await;
    assert_eq!(other_user.status, 200, "{}", other_user.body);

    // Recovery: with a window of a second, poll (bounded) until it has passed. (The limit
    // reads the window of the moment, so the failures already counted age out under it.)
    let short =
        Config::parse(&config_yaml(&env.a, &env.dir, 3, 1), Path::new("auth.yaml")).unwrap();
    env.gateway.reload(short).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = password_login(&env, &local, "admin", ADMIN_PASSWORD).await;
        if reply.status == 200 {
            assert!(reply.json()["accessKey"].is_string());
            break;
        }
        assert_status(&reply, 429, "TooManyRequests");
        assert!(
            tokio::time::Instant::now() < deadline,
            "still locked out long after the window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /auth/login` turns a credential into an HttpOnly, Secure, SameSite=Strict cookie
/// holding a gateway token; `/auth/session` describes it; logout revokes it (in memory and in
/// the store) and clears the cookie.
#[tokio::test(flavor = "multi_thread")]
async fn login_session_logout() {
    let env = Env::start().await;
    let reply = token_login(&env, ADMIN_KEY).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let set = reply.set_cookie();
    let attributes: Vec<&str> = set.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=600"
        ],
        "{set}"
    );
    let cookie = cookie_pair(&set);
    let jwt = cookie.strip_prefix("kubegate_session=").unwrap().to_owned();
    assert_eq!(jwt.split('.').count(), 3);
    let body = reply.json();
    assert_eq!(body["user"], "admin");
    assert!(
        body["groups"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("system:authenticated"))
    );
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(500) && left <= time::Duration::seconds(600));

    let client = env.client();
    let session_url = format!("{}/auth/session", env.url);
    let info = client
        .send(
            http::Method::GET,
            &session_url,
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["user"], "admin");
    assert_eq!(info.json()["expiresAt"], body["expiresAt"]);
    let none = client
        .send(http::Method::GET, &session_url, &[], None)
        .await;
    assert_status(&none, 401, "Unauthorized");

    // The cookie authenticates other requests (the session authenticator).
    let get = headers(&[("cookie", &cookie), ("host", env.host())]);
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &get),
        AuthnOutcome::Authenticated(c) if c.identity.name == "admin"
    ));

    // Logout is a cookie-authenticated mutation: it needs our Origin.
    let logout_url = format!("{}/auth/logout", env.url);
    let refused = client
        .send(
            http::Method::POST,
            &logout_url,
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_status(&refused, 403, "Forbidden");
    assert!(refused.body.contains("cross-origin request refused"));
    let out = client
        .send(
            http::Method::POST,
            &logout_url,
            &[("cookie", &cookie), ("origin", &env.url)],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.set_cookie().starts_with("kubegate_session=;"));
    assert!(out.set_cookie().contains("Max-Age=0"));

    let after = client
        .send(
            http::Method::GET,
            &session_url,
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_status(&after, 401, "Unauthorized");
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &get),
        AuthnOutcome::Rejected(_)
    ));
    // Persisted: a restarted gateway keeps refusing it.
    let state = env.gateway.shared().store.snapshot().await.unwrap();
    assert_eq!(state.revocations.len(), 1);
    let again = client
        .send(
            http::Method::POST,
            &logout_url,
            &[("cookie", &cookie), ("origin", &env.url)],
            None,
        )
        .await;
    assert_status(&again, 401, "Unauthorized");
}

/// Session authenticator: cookie-authenticated mutating requests need our own or an allowed
/// Origin; safe methods do not; a bad cookie is rejected, no cookie is not this authenticator's.
#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_csrf_rules() {
    let env = Env::start().await;
    let cookie = cookie_pair(&token_login(&env, ADMIN_KEY).await.set_cookie());
    let own = env.url.clone();
    let host = env.host().to_owned();
    let with = |origin: Option<&str>| {
        let mut pairs = vec![("cookie", cookie.as_str()), ("host", host.as_str())];
        if let Some(o) = origin {
            pairs.push(("origin", o));
        }
        headers(&pairs)
    };
    for method in [
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
    ] {
        for origin in [None, Some("https://evil.example"), Some("null")] {
            match env.session_outcome(&method, &with(origin)) {
                AuthnOutcome::Forbidden(why) => assert_eq!(why, "cross-origin request refused"),
                other => panic!("{method} from {origin:?}: {other:?}"),
            }
        }
        for origin in [own.as_str(), ALLOWED_ORIGIN] {
            assert!(
                matches!(
                    env.session_outcome(&method, &with(Some(origin))),
                    AuthnOutcome::Authenticated(_)
                ),
                "{method} from {origin}"
            );
        }
    }
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &with(None)),
        AuthnOutcome::Authenticated(_)
    ));
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &headers(&[("host", &host)])),
        AuthnOutcome::Skip
    ));
    let forged = headers(&[("cookie", "kubegate_session=a.b.c"), ("host", &host)]);
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &forged),
        AuthnOutcome::Rejected(_)
    ));
    // An access key in the cookie is not a session.
    let key = headers(&[
        ("cookie", &format!("kubegate_session={ADMIN_KEY}")),
        ("host", &host),
    ]);
    assert!(matches!(
        env.session_outcome(&http::Method::GET, &key),
        AuthnOutcome::Rejected(_)
    ));
}

/// A session keeps the scope of the credential it was made from.
#[tokio::test(flavor = "multi_thread")]
async fn session_keeps_the_scope_of_its_credential() {
    let env = Env::start().await;
    let cookie = cookie_pair(&token_login(&env, SCOPED_KEY).await.set_cookie());
    let h = headers(&[("cookie", &cookie), ("host", env.host())]);
    match env.session_outcome(&http::Method::GET, &h) {
        AuthnOutcome::Authenticated(caller) => {
            assert_eq!(caller.identity.name, "scoped");
            let scope = caller.raw_scope.expect("the key's scope");
            assert_eq!(
                serde_json::to_value(&scope).unwrap()["clusters"][0]["cluster"],
                "a"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The login endpoints: bad credentials 401, a foreign Origin 403 (login CSRF), non-JSON 415,
/// wrong method 405 with `Allow`, unknown paths 404.
#[tokio::test(flavor = "multi_thread")]
async fn login_endpoint_edges() {
    let env = Env::start().await;
    assert_status(&token_login(&env, "kgak_nope").await, 401, "Unauthorized");
    assert_status(&token_login(&env, "a.b.c").await, 401, "Unauthorized");
    let client = env.client();
    let login = format!("{}/auth/login", env.url);
    let foreign = client
        .send(
            http::Method::POST,
            &login,
            &[("origin", "https://evil.example")],
            Some(serde_json::json!({"token": ADMIN_KEY})),
        )
        .await;
    assert_status(&foreign, 403, "Forbidden");
    assert!(foreign.headers.get("set-cookie").is_none());
    let allowed = client
        .send(
            http::Method::POST,
            &login,
            &[("origin", ALLOWED_ORIGIN)],
            Some(serde_json::json!({"token": ADMIN_KEY})),
        )
        .await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let form = client
        .send(
            http::Method::POST,
            &login,
            &[("content-type", "text/plain")],
            None,
        )
        .await;
    assert_status(&form, 415, "UnsupportedMediaType");
    let garbage = client
        .send(
            http::Method::POST,
            &format!("{}/auth/password/login", env.url),
            &[],
            Some(serde_json::json!({"username": "admin", "password": 12345})),
        )
        .await;
    assert_status(&garbage, 400, "BadRequest");
    assert!(!garbage.body.contains("12345"), "{}", garbage.body);
    let get = client.send(http::Method::GET, &login, &[], None).await;
    assert_status(&get, 405, "MethodNotAllowed");
    assert_eq!(get.headers["allow"], "POST");
    let missing = client
        .send(
            http::Method::GET,
            &format!("{}/auth/nope", env.url),
            &[],
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
}

/// `check_origin`: WebSocket upgrades from foreign origins are refused whatever the credential;
/// other requests and Origin-less upgrades pass.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let env = Env::start().await;
    let runtime = env.gateway.shared().runtime.load_full();
    let config = &runtime.config;
    let host = env.host().to_owned();
    let ws = |origin: Option<&str>| {
        let mut pairs = vec![
            ("host", host.as_str()),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("authorization", "Bearer whatever"),
        ];
        if let Some(o) = origin {
            pairs.push(("origin", o));
        }
        headers(&pairs)
    };
    let refused = kubegate_gateway::auth::check_origin(config, &ws(Some("https://evil.example")));
    assert!(
        refused
            .unwrap_err()
            .contains("cross-origin WebSocket request refused")
    );
    assert!(kubegate_gateway::auth::check_origin(config, &ws(Some("null"))).is_err());
    assert!(kubegate_gateway::auth::check_origin(config, &ws(Some(&env.url))).is_ok());
    assert!(kubegate_gateway::auth::check_origin(config, &ws(Some(ALLOWED_ORIGIN))).is_ok());
    assert!(kubegate_gateway::auth::check_origin(config, &ws(None)).is_ok());
    let plain = headers(&[("host", &host), ("origin", "https://evil.example")]);
    assert!(kubegate_gateway::auth::check_origin(config, &plain).is_ok());
}

/// Neither the session token, the access keys nor the passwords appear in any log line or in
/// the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_never_logged() {
    let env = Env::start_with_limits(5, 300).await;
    let client = env.client();
    let key_reply = password_login(&env, &client, "admin", ADMIN_PASSWORD).await;
    let key = key_reply.json()["accessKey"].as_str().unwrap().to_owned();
    let _ = password_login(&env, &client, "admin", "a wrong password").await;
    let reply = token_login(&env, &key).await;
    let cookie = cookie_pair(&reply.set_cookie());
    let jwt = cookie.strip_prefix("kubegate_session=").unwrap().to_owned();
    let _ = client
        .send(
            http::Method::GET,
            &format!("{}/auth/session", env.url),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    let _ = client
        .send(
            http::Method::POST,
            &format!("{}/auth/logout", env.url),
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            None,
        )
        .await;
    let _ = client
        .send(
            http::Method::POST,
            &format!("{}/auth/logout", env.url),
            &[("cookie", &cookie), ("origin", &env.url)],
            None,
        )
        .await;
    let _ = client
        .send(
            http::Method::GET,
            &format!("{}/auth/session", env.url),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert!(logs_contain("session started"), "log capture works");
    // The signature alone identifies the token; no part of it may leak.
    let signature = jwt.rsplit('.').next().unwrap();
    for secret in [
        jwt.as_str(),
        signature,
        key.as_str(),
        ADMIN_PASSWORD,
        "a wrong password",
    ] {
        assert!(!logs_contain(secret), "logged a secret");
    }
    env.gateway.flush_audit();
    let audit = std::fs::read_to_string(env.dir.join("state/audit.log")).unwrap_or_default();
    for secret in [jwt.as_str(), signature, key.as_str(), ADMIN_PASSWORD] {
        assert!(!audit.contains(secret), "audited a secret");
    }
}

/// The whole browser flow through the request path: log in, read pods of cluster `a` with only
/// the cookie, CSRF refusals for writes, same-origin writes pass, logout makes the cookie fail.
#[tokio::test(flavor = "multi_thread")]
async fn cookie_flow_through_a_cluster() {
    let env = Env::start().await;
    let cookie = cookie_pair(&token_login(&env, ADMIN_KEY).await.set_cookie());
    let client = env.client();
    let pods = client
        .send(
            http::Method::GET,
            &format!("{}{PODS}", env.url),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(pods.status, 200, "{}", pods.body);
    assert_eq!(pods.json()["kind"], "PodList");
    let last = env.a.last_request_to("/pods").unwrap();
    assert_eq!(last.effective_user().unwrap().name, "admin");
    assert!(
        last.headers
            .get_all("cookie")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").contains("kubegate_session")),
        "the session cookie must not reach the upstream"
    );

    // A page a workload serves through a proxy subresource (or a tenant's API server) reaches
    // a cookie-carrying browser sandboxed: its script cannot act as the gateway's origin.
    // API answers are left as they are (bar `nosniff`).
    assert!(pods.headers.get("content-security-policy").is_none());
    assert_eq!(pods.headers["x-content-type-options"], "nosniff");
    let proxied = "/api/v1/namespaces/default/services/web:80/proxy/";
    env.a.faults().inject(
        kubegate_testkit::FaultRule::new(kubegate_testkit::Fault::Document {
            content_types: vec!["text/html; charset=utf-8".into()],
            body: "<script>fetch('/kubernetes/cluster/a/api/v1/secrets')</script>".into(),
        })
        .path_prefix(proxied),
    );
    let page_url = format!("{}/kubernetes/cluster/a{proxied}", env.url);
    let by_cookie = client
        .send(http::Method::GET, &page_url, &[("cookie", &cookie)], None)
        .await;
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
    assert_eq!(by_cookie.headers["content-security-policy"], "sandbox");
    assert_eq!(by_cookie.headers["x-content-type-options"], "nosniff");
    let bearer = format!("Bearer {ADMIN_KEY}");
    let by_token = client
        .send(
            http::Method::GET,
            &page_url,
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    assert!(by_token.headers.get("content-security-policy").is_none());
    // A JSON type first and HTML last (browsers take the last), or a list in one value: not
    // an API answer, sandboxed.
    for content_types in [
        vec!["application/json".to_owned(), "text/html".to_owned()],
        vec!["application/json;a=\",text/html\"".to_owned()],
    ] {
        env.a.faults().clear();
        env.a.faults().inject(
            kubegate_testkit::FaultRule::new(kubegate_testkit::Fault::Document {
                content_types: content_types.clone(),
                body: "<script>alert(1)</script>".into(),
            })
            .path_prefix(proxied),
        );
        let reply = client
            .send(http::Method::GET, &page_url, &[("cookie", &cookie)], None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.headers["content-security-policy"], "sandbox",
            "{content_types:?}"
        );
    }
    env.a.faults().clear();

    let cm = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let url = format!("{}{CONFIGMAPS}", env.url);
    let no_origin = client
        .send(
            http::Method::POST,
            &url,
            &[("cookie", &cookie)],
            Some(cm("x")),
        )
        .await;
    assert_status(&no_origin, 403, "Forbidden");
    assert!(no_origin.body.contains("cross-origin request refused"));
    let foreign = client
        .send(
            http::Method::POST,
            &url,
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            Some(cm("y")),
        )
        .await;
    assert_status(&foreign, 403, "Forbidden");
    assert!(env.a.get("configmaps", "default", "x").unwrap().is_none());
    let same = client
        .send(
            http::Method::POST,
            &url,
            &[("cookie", &cookie), ("origin", &env.url)],
            Some(cm("z")),
        )
        .await;
    assert_eq!(same.status, 201, "{}", same.body);

    // A WebSocket upgrade from a foreign origin is refused even with a valid bearer token.
    let exec = client
        .send(
            http::Method::GET,
            &format!("{}{PODS}/p/exec?command=true&stdout=true", env.url),
            &[
                ("authorization", &format!("Bearer {ADMIN_KEY}")),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(exec.status, 403, "{}", exec.body);

    let out = client
        .send(
            http::Method::POST,
            &format!("{}/auth/logout", env.url),
            &[("cookie", &cookie), ("origin", &env.url)],
            None,
        )
        .await;
    assert_eq!(out.status, 200);
    let after = client
        .send(
            http::Method::GET,
            &format!("{}{PODS}", env.url),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_status(&after, 401, "Unauthorized");
}

/// The `exp` claim of a kubegate token.
fn token_exp(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&json).unwrap()["exp"]
        .as_u64()
        .unwrap()
}

/// A credential made with another never outlives it: a short-lived key's tokens, a token's
/// sessions and keys all end with it at the latest, whatever lifetime they ask for.
#[tokio::test(flavor = "multi_thread")]
async fn minted_credentials_never_outlive_the_one_that_made_them() {
    let env = Env::start().await;
    let client = env.client();
    let post = |resource: &'static str, bearer: String, body: serde_json::Value| {
        let (env, client) = (&env, &client);
        async move { create_with(env, client, resource, &bearer, body).await }
    };
    let management = format!(
        "{}/kubernetes/management/apis/management.loft.sh/v1",
        env.url
    );
    let now = kubegate_tokens::unix_now();
    // A key living 60 s.
    let key = post(
        "ownedaccesskeys",
        ADMIN_KEY.to_owned(),
        serde_json::json!({"metadata": {"name": "brief"}, "spec": {"ttl": 60}}),
    )
    .await;
    let key = key["spec"]["key"].as_str().unwrap().to_owned();
    // A token asked for a day gets the key's minute at most.
    let token = post(
        "directclusterendpointtokens",
        key.clone(),
        serde_json::json!({"spec": {"ttl": 86400}}),
    )
    .await;
    let token = token["status"]["token"].as_str().unwrap().to_owned();
    let exp = token_exp(&token);
    assert!(
        exp <= now + 61,
        "the token outlives its key: exp {exp}, now {now}"
    );
    // A token made with that token: no longer either.
    let again = post(
        "directclusterendpointtokens",
        token.clone(),
        serde_json::json!({"spec": {"ttl": 86400}}),
    )
    .await;
    assert!(token_exp(again["status"]["token"].as_str().unwrap()) <= exp);
    // A key made with the token, asking for no expiry, expires with the token.
    let lasting = post(
        "ownedaccesskeys",
        token.clone(),
        serde_json::json!({"metadata": {"name": "from-token"}, "spec": {}}),
    )
    .await;
    let ttl = lasting["spec"]["ttl"].as_i64().unwrap();
    assert!(ttl > 0 && ttl <= 61, "ttl {ttl}");
    // A login's key is the exception: a user logs in to make lasting keys.
    let login = password_login(&env, &client, "admin", ADMIN_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let login_key = login.json()["accessKey"].as_str().unwrap().to_owned();
    let kept = post(
        "ownedaccesskeys",
        login_key.clone(),
        serde_json::json!({"metadata": {"name": "made-at-login"}, "spec": {}}),
    )
    .await;
    assert_eq!(kept["spec"]["ttl"].as_i64().unwrap_or(0), 0, "{kept}");
    // A session made with the token ends with it too.
    let session = token_login(&env, &token).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let cookie = session.headers["set-cookie"].to_str().unwrap().to_owned();
    let max_age: u64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 61, "{cookie}");
    // Nor does a key made through the session cookie: not with that session, and not with the
    // token itself put into the cookie (a session cookie is no login unless a login started
    // it). Both keys ask for no expiry, get the token's minute, and depend on `brief`.
    let session_cookie = cookie.split(';').next().unwrap().to_owned();
    let through_cookie = |cookie: String, name: &'static str| {
        let (env, client, management) = (&env, &client, &management);
        async move {
            let reply = client
                .send(
                    http::Method::POST,
                    &format!("{management}/ownedaccesskeys"),
                    &[("cookie", cookie.as_str()), ("origin", env.url.as_str())],
                    Some(serde_json::json!({"metadata": {"name": name}, "spec": {}})),
                )
                .await;
            assert_eq!(reply.status, 201, "{name}: {}", reply.body);
            reply.json()
        }
    };
    let mut from_cookies = Vec::new();
    for (cookie, name) in [
        (session_cookie, "from-session"),
        (format!("kubegate_session={token}"), "from-token-cookie"),
    ] {
        let made = through_cookie(cookie, name).await;
        let ttl = made["spec"]["ttl"].as_i64().unwrap_or(0);
        assert!(ttl > 0 && ttl <= 61, "{name}: ttl {ttl}: {made}");
        from_cookies.push(made["spec"]["key"].as_str().unwrap().to_owned());
    }
    // A session started with the login's key is a login: its keys last.
    let login_session = token_login(&env, &login_key).await;
    assert_eq!(login_session.status, 200, "{}", login_session.body);
    let login_cookie = login_session.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let kept_by_session = through_cookie(login_cookie, "made-in-a-login-session").await;
    assert_eq!(
        kept_by_session["spec"]["ttl"].as_i64().unwrap_or(0),
        0,
        "{kept_by_session}"
    );
    // A token made with the key made with a token; a key made with the key itself.
    let lasting_key = lasting["spec"]["key"].as_str().unwrap().to_owned();
    let below = post(
        "directclusterendpointtokens",
        lasting_key.clone(),
        serde_json::json!({"spec": {}}),
    )
    .await;
    let below = below["status"]["token"].as_str().unwrap().to_owned();
    let sibling = post(
        "ownedaccesskeys",
        key.clone(),
        serde_json::json!({"metadata": {"name": "from-key"}, "spec": {}}),
    )
    .await;
    let sibling = sibling["spec"]["key"].as_str().unwrap().to_owned();
    let kept_key = kept["spec"]["key"].as_str().unwrap().to_owned();
    // Deleting the key ends every token made from it, directly or through other tokens, and
    // every key made with one of those tokens (and what was made from that key in turn). A
    // key made with the key itself, or at login, stands on its own.
    let pods = format!("{}{PODS}", env.url);
    let get_pods = |bearer: String| {
        let (client, pods) = (&client, &pods);
        async move { get_with(client, pods, &bearer).await }
    };
    let again = again["status"]["token"].as_str().unwrap().to_owned();
    for live in [&token, &again, &lasting_key, &below, &sibling, &kept_key] {
        let reply = get_pods(live.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let del = client
        .send(
            http::Method::DELETE,
            &format!("{management}/ownedaccesskeys/brief"),
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            None,
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.body);
    for revoked in [&token, &again, &lasting_key, &below]
        .into_iter()
        .chain(&from_cookies)
    {
        let reply = get_pods(revoked.clone()).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    for standing in [&sibling, &kept_key] {
        let reply = get_pods(standing.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

/// A user's credentials belong to the user's UID and token generation, as kube's
/// service-account tokens belong to the account's UID: a name given back under a new UID
/// inherits none of the old holder's stored keys, login keys or tokens, and raising
/// `tokenGeneration` (Loft's `User.spec.tokenGeneration`) revokes the user's tokens alone.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_belong_to_the_users_uid_and_token_generation() {
    let env = Env::start().await;
    let client = env.client();
    let mint = |resource: &'static str, body: serde_json::Value| {
        create_with(&env, &client, resource, ADMIN_KEY, body)
    };
    let key = mint(
        "ownedaccesskeys",
        serde_json::json!({"metadata": {"name": "admins-key"}, "spec": {}}),
    )
    .await["spec"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_token = || async {
        let minted = mint(
            "directclusterendpointtokens",
            serde_json::json!({"spec": {}}),
        )
        .await;
        minted["status"]["token"].as_str().unwrap().to_owned()
    };
    let token = new_token().await;
    let login = password_login(&env, &client, "admin", ADMIN_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let login_key = login.json()["accessKey"].as_str().unwrap().to_owned();
    let pods = format!("{}{PODS}", env.url);
    let status_of = |bearer: String| {
        let (client, pods) = (&client, &pods);
        async move { get_with(client, pods, &bearer).await.status }
    };
    let statuses = || async {
        [
            status_of(ADMIN_KEY.to_owned()).await,
            status_of(key.clone()).await,
            status_of(login_key.clone()).await,
            status_of(token.clone()).await,
        ]
    };
    let reload = |change: &dyn Fn(&mut kubegate_gateway::config::UserConfig)| {
        let yaml = config_yaml(&env.a, &env.dir, 5, 300);
        let mut config = Config::parse(&yaml, Path::new("auth.yaml")).unwrap();
        let admin = config.users.iter_mut().find(|u| u.name == "admin").unwrap();
        change(admin);
        env.gateway.reload(config)
    };
    // Config key, API key, login key, token.
    assert_eq!(statuses().await, [200, 200, 200, 200]);

    // `admin` given to someone else: only the configured key, which the configuration gives
    // with the user, still works.
    reload(&|admin| admin.uid = Some("admin-2".into()))
        .await
        .unwrap();
    assert_eq!(statuses().await, [200, 401, 401, 401]);
    assert!(logs_contain("the credential was made for an earlier user"));
    // Nor are the earlier holder's keys the new one's to list or delete.
    let owned_url = format!(
        "{}/kubernetes/management/apis/management.loft.sh/v1/ownedaccesskeys",
        env.url
    );
    let owned = || async {
        let list = get_with(&client, &owned_url, ADMIN_KEY).await;
        assert_eq!(list.status, 200, "{}", list.body);
        let mut names: Vec<String> = list.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert!(owned().await.is_empty(), "{:?}", owned().await);
    let delete = client
        .send(
            http::Method::DELETE,
            &format!("{owned_url}/admins-key"),
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            None,
        )
        .await;
    assert_eq!(delete.status, 404, "{}", delete.body);

    // The UID back (the name alone never decided it): everything works again.
    reload(&|admin| admin.uid = None).await.unwrap();
    assert_eq!(statuses().await, [200, 200, 200, 200]);
    assert!(owned().await.contains(&"admins-key".to_owned()));

    // A raised token generation revokes the user's tokens, not the keys.
    reload(&|admin| admin.token_generation = 1).await.unwrap();
    assert_eq!(statuses().await, [200, 200, 200, 401]);
    let fresh = new_token().await;
    assert_eq!(status_of(fresh.clone()).await, 200);

    // So does the store's generation, which adds to the configured one: an embedding platform
    // raises it through `Store::bump_token_generation`, and the store watcher rebuilds the
    // credentials.
    env.gateway
        .shared()
        .store
        .bump_token_generation("admin")
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while status_of(fresh.clone()).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the store's raised generation revoked the token");
    assert_eq!(statuses().await, [200, 200, 200, 401]);
    assert_eq!(status_of(new_token().await).await, 200);
}

/// `auth.accessKeyMaxTTLSeconds` (Loft's global `accessKeyMaxTTLSeconds`): a key asked for
/// with no TTL or a longer one gets the limit, a shorter one keeps its own; a negative TTL is
/// refused; and a login's key may not outlive the limit either, so a session TTL above it is
/// refused at load.
#[tokio::test(flavor = "multi_thread")]
async fn access_keys_live_at_most_the_configured_maximum() {
    let env = Env::start().await;
    let client = env.client();
    let config = |max: u64| {
        let yaml = config_yaml(&env.a, &env.dir, 5, 300).replace(
            "auth:\n",
            &format!("auth:\n  accessKeyMaxTTLSeconds: {max}\n"),
        );
        Config::parse(&yaml, Path::new("auth.yaml"))
    };
    env.gateway.reload(config(3600).unwrap()).await.unwrap();
    #[rustfmt::skip]
    let cases = [
        (serde_json::json!({"metadata": {"name": "forever"}, "spec": {}}), 3600),
        (serde_json::json!({"metadata": {"name": "long"}, "spec": {"ttl": 7200}}), 3600),
        (serde_json::json!({"metadata": {"name": "short"}, "spec": {"ttl": 60}}), 60),
    ];
    for (body, ttl) in cases {
        let name = body["metadata"]["name"].clone();
        let key = create_with(&env, &client, "ownedaccesskeys", ADMIN_KEY, body).await;
        assert_eq!(key["spec"]["ttl"].as_i64(), Some(ttl), "{name}");
    }
    let negative = post_with(
        &env,
        &client,
        "ownedaccesskeys",
        ADMIN_KEY,
        serde_json::json!({"metadata": {"name": "past"}, "spec": {"ttl": -5}}),
    )
    .await;
    assert_eq!(negative.status, 400, "{}", negative.body);
    assert!(
        negative.body.contains("spec.ttl must not be negative"),
        "{}",
        negative.body
    );
    // The test config's sessions live 600 s.
    let err = config(300).unwrap_err().to_string();
    assert!(err.contains("auth.sessionTtlSeconds"), "{err}");
}

/// kube-apiserver has no POST on an item's path (405). The gateway refuses it too: it would
/// be authorized under the path's name (say a grant limited to `resourceNames: [ci-key]`) and
/// create whatever name the body gives.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_on_an_items_path_is_refused() {
    let env = Env::start().await;
    let client = env.client();
    // 405 where the resource has item routes (the path is served, under other methods);
    // 404 where it has none, as go-restful finds no route at all.
    for (resource, status, reason) in [
        ("ownedaccesskeys/ci-key", 405, "MethodNotAllowed"),
        ("directclusterendpointtokens/ci-token", 404, "NotFound"),
        ("selves/me", 404, "NotFound"),
    ] {
        let reply = post_with(
            &env,
            &client,
            resource,
            ADMIN_KEY,
            serde_json::json!({"metadata": {"name": "anything"}, "spec": {}}),
        )
        .await;
        assert_status(&reply, status, reason);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["details"], serde_json::json!({}), "{resource}");
    }
    let list = get_with(
        &client,
        &format!(
            "{}/kubernetes/management/apis/management.loft.sh/v1/ownedaccesskeys",
            env.url
        ),
        ADMIN_KEY,
    )
    .await;
    assert!(!list.body.contains("anything"), "{}", list.body);
}
