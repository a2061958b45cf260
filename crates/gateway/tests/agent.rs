//! Agent mode (direct cluster endpoint): a central gateway and an agent gateway in front of its
//! own fake kube-apiserver. Credentials of the central — a `DirectClusterEndpointToken` created
//! with `kubectl create -f`, and an access key — work at the agent, and keep working from the
//! agent's cache when the central goes away; a credential the agent never saw then gets a 503
//! that says it cannot be checked now (and nothing of the central's address).
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
    require_kubectl();
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
        .get(
            &pods,
            "kgak_not_a_key_of_the_central_000000000000000000",
            &[],
        )
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
    // Nothing of the central's address or of why: an unauthenticated client can ask.
    let message = status["message"].as_str().unwrap();
    assert_eq!(
        message,
        kubegate_gateway::remote::selves::UNAVAILABLE,
        "{message}"
    );
    assert!(!reply.body.contains(&central_url));
}

/// The agent impersonates the user the central describes now, not the groups written into a
/// token when it was minted: the central authenticates the same token with the user's current
/// groups, so a user taken out of a group (here: given one) must be so at the agent too, not
/// only once the token expires.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_impersonates_the_groups_the_central_gives_the_user_now() {
    let central = Env::start().await;
    let agent = Agent::start(&central).await;
    let token = direct_cluster_endpoint_token(&central).await;
    let mut config = central.config.clone();
    let admin = config.users.iter_mut().find(|u| u.name == "admin").unwrap();
    admin.groups.push("ops".into());
    central.gateway.reload(config).await.unwrap();
    assert_ok(&agent.kubectl(&token, &["get", "pods"]).await);
    let last = agent.upstream.last_request_to("/pods").unwrap();
    let user = last.effective_user().unwrap();
    assert_eq!(user.name, "admin");
    assert!(
        user.groups.iter().any(|g| g == "ops"),
        "the groups the token was minted with, not the user's now: {user:?}"
    );
}

/// A token the central has revoked is refused at the agent, which cannot see revocations
/// itself: it asks the central's `selves` about every token that verifies, as about access
/// keys. A scoped token still works there, and while the central is down a token the agent
/// never validated gets a 503 rather than going unchecked.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_tokens_the_central_revoked() {
    let central = Env::start().await;
    let agent = Agent::start(&central).await;
    let central_client = central.client();
    let management = format!("{}{MGMT}/apis/management.loft.sh/v1", central.url);
    let create = |resource: &str, bearer: &str, body: &str| {
        let url = format!("{management}/{resource}");
        let client = &central_client;
        let (bearer, body) = (bearer.to_owned(), body.to_owned());
        async move {
            let reply = client
                .post(&url, &bearer, "application/json", body.into_bytes())
                .await;
            assert_eq!(reply.status, 201, "{url}: {}", reply.body);
            serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()
        }
    };
    let token_of =
        |object: serde_json::Value| object["status"]["token"].as_str().unwrap().to_owned();
    let dcet =
        r#"{"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","spec":{}}"#;
    // An access key of admin's, and a token made with it.
    let key = create(
        "ownedaccesskeys",
        ADMIN_KEY,
        r#"{"metadata":{"name":"for-the-agent"},"spec":{}}"#,
    )
    .await["spec"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = token_of(create("directclusterendpointtokens", &key, dcet).await);
    let scoped = token_of(
        create(
            "directclusterendpointtokens",
            ADMIN_KEY,
            r#"{"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","spec":{"scope":{"clusters":[{"cluster":"a"}]}}}"#,
        )
        .await,
    );
    let unseen = token_of(create("directclusterendpointtokens", ADMIN_KEY, dcet).await);

    // Deleting the key at the central revokes the token made with it.
    let delete = http::Request::delete(format!("{management}/ownedaccesskeys/for-the-agent"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(central_client.send(delete).await.status, 200);

    let client = reqwest_like::Client::new(&agent.ca_pem);
    let pods = format!(
        "{}{AGENT_CLUSTER}/api/v1/namespaces/default/pods",
        agent.url
    );
    let reply = client.get(&pods, &revoked, &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_ok(&agent.kubectl(&scoped, &["get", "pods"]).await);
    assert_eq!(agent.last_pods_user(), "admin");

    let central_url = central.url.clone();
    drop(central);
    wait_until_down(&central_url).await;
    // Validated before: served from the cache. Never validated: cannot be checked now.
    assert_ok(&agent.kubectl(&scoped, &["get", "pods"]).await);
    let reply = client.get(&pods, &unseen, &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply
            .body
            .contains(kubegate_gateway::remote::selves::UNAVAILABLE)
            && !reply.body.contains(&central_url),
        "{}",
        reply.body
    );
}

// ---------------------------------------------------------------------------------------------
// What an unauthenticated client can make an agent ask the central: a fake central's `selves`
// counts the calls.

mod fake_central {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::sync::watch;

    /// A stand-in for the central gateway's `selves`: it accepts the keys it was given (as the
    /// user named with each), refuses any other with 401, answers 503 while down, and holds
    /// every request while held.
    pub(super) struct FakeCentral {
        pub(super) url: String,
        pub(super) ca_file: PathBuf,
        dir: PathBuf,
        state: Arc<State>,
        accept_loop: tokio::task::JoinHandle<()>,
    }

    struct State {
        known: HashMap<String, String>,
        calls: watch::Sender<usize>,
        held: watch::Sender<bool>,
        down: AtomicBool,
    }

    impl Drop for FakeCentral {
        fn drop(&mut self) {
            self.accept_loop.abort();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl FakeCentral {
        pub(super) async fn start(known: &[(&str, &str)]) -> FakeCentral {
            let dir = std::env::temp_dir()
                .join(format!("kubegate-fake-central-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
            let ca_file = dir.join("ca.crt");
            std::fs::write(&ca_file, cert.cert.pem()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from_pem_slice(cert.cert.pem().as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes())
                        .unwrap(),
                )
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let state = Arc::new(State {
                known: known
                    .iter()
                    .map(|(k, u)| ((*k).to_owned(), (*u).to_owned()))
                    .collect(),
                calls: watch::channel(0).0,
                held: watch::channel(false).0,
                down: AtomicBool::new(false),
            });
            let serving = Arc::clone(&state);
            let accept_loop = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let state = Arc::clone(&serving);
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |req| answer(Arc::clone(&state), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            FakeCentral {
                url,
                ca_file,
                dir,
                state,
                accept_loop,
            }
        }

        /// `selves` calls received so far.
        pub(super) fn calls(&self) -> usize {
            *self.state.calls.borrow()
        }

        /// Waits until at least `n` `selves` calls arrived.
        pub(super) async fn wait_for_calls(&self, n: usize) {
            let mut calls = self.state.calls.subscribe();
            calls.wait_for(|c| *c >= n).await.unwrap();
        }

        /// Holds every request (`true`) until released (`false`).
        pub(super) fn hold(&self, held: bool) {
            self.state.held.send_replace(held);
        }

        /// Answers 503 to everything from now on.
        pub(super) fn go_down(&self) {
            self.state.down.store(true, Ordering::SeqCst);
        }
    }

    async fn answer(
        state: Arc<State>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let reply = |status: u16, body: String| {
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        };
        if !req.uri().path().ends_with("/selves") {
            return reply(404, "{}".into());
        }
        state.calls.send_modify(|n| *n += 1);
        let mut held = state.held.subscribe();
        let _ = held.wait_for(|held| !*held).await;
        if state.down.load(Ordering::SeqCst) {
            return reply(503, "{}".into());
        }
        let key = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        match state.known.get(key) {
            Some(user) => reply(
                200,
                serde_json::json!({
                    "apiVersion": "management.loft.sh/v1",
                    "kind": "Self",
                    "status": {"subject": user, "user": {"name": user}},
                })
                .to_string(),
            ),
            None => reply(
                401,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}"#.into(),
            ),
        }
    }
}

mod bounded_calls {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;
    use kubegate_gateway::authenticators::{AuthnInput, AuthnOutcome, ExternalAuthenticator};
    use kubegate_gateway::directory::Directory;
    use kubegate_gateway::remote::CentralAuthenticator;
    use kubegate_gateway::remote::client::HttpsClient;
    use kubegate_gateway::remote::selves::{self, SelfAnswer, SelfCache};

    use super::fake_central::FakeCentral;

    /// A key of the shape kubegate generates, told apart by `n`.
    fn key(n: usize) -> String {
        format!("kgak_{n:0>43}")
    }

    /// An agent's authenticator of `central`, and the directory requests are checked with.
    fn agent_of(central: &FakeCentral) -> (Arc<CentralAuthenticator>, Arc<Directory>) {
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
mode: agent
stateDir: /nonexistent
agent:
  cluster: a
  upstream: {{server: "https://127.0.0.1:1"}}
  centralUrl: "{}"
  centralCaFile: "{}"
"#,
            central.url,
            central.ca_file.display()
        );
        let config =
            kubegate_gateway::Config::parse(&yaml, std::path::Path::new("agent.yaml")).unwrap();
        let authenticator = CentralAuthenticator::new(config.agent.as_ref().unwrap()).unwrap();
        (Arc::new(authenticator), Arc::new(Directory::new(&config)))
    }

    async fn authenticate(
        agent: &CentralAuthenticator,
        directory: &Directory,
        bearer: &str,
    ) -> AuthnOutcome {
        let headers = http::HeaderMap::new();
        agent
            .authenticate(AuthnInput {
                method: &http::Method::GET,
                headers: &headers,
                bearer: Some(bearer),
                client_addr: None,
                peer_certificate: None,
                directory,
            })
            .await
    }

    #[tokio::test]
    async fn bearers_not_shaped_like_access_keys_never_reach_the_central() {
        let central = FakeCentral::start(&[]).await;
        let (agent, directory) = agent_of(&central);
        for n in 0..1_000 {
            let garbage = match n % 6 {
                0 => uuid::Uuid::new_v4().to_string(),
                1 => format!("kgak_{n}"),
                2 => format!("kgak_{n:0>44}"),
                3 => format!("{n:0>63}"),
                4 => format!("{n:-<64}"),
                _ => format!("garbage {n} {}", "x".repeat(n % 200)),
            };
            let outcome = authenticate(&agent, &directory, &garbage).await;
            assert!(
                matches!(outcome, AuthnOutcome::Rejected(_)),
                "{garbage:?}: {outcome:?}"
            );
        }
        assert_eq!(central.calls(), 0);
        // A bearer shaped like a key is asked about (and this central refuses it).
        let outcome = authenticate(&agent, &directory, &key(1)).await;
        assert!(matches!(outcome, AuthnOutcome::Rejected(_)), "{outcome:?}");
        assert_eq!(central.calls(), 1);
    }

    /// One scheduler thread: every check below starts (and finds the key uncached) before the
    /// fake central can take the first call, so without a shared flight each would make its own.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_checks_of_one_unknown_key_make_one_call() {
        const CHECKS: usize = 20;
        let central = FakeCentral::start(&[(&key(7), "erin")]).await;
        let (agent, directory) = agent_of(&central);
        central.hold(true);
        let checks: Vec<_> = (0..CHECKS)
            .map(|_| {
                let agent = Arc::clone(&agent);
                let directory = Arc::clone(&directory);
                tokio::spawn(async move { authenticate(&agent, &directory, &key(7)).await })
            })
            .collect();
        central.wait_for_calls(1).await;
        central.hold(false);
        for check in checks {
            match check.await.unwrap() {
                AuthnOutcome::Authenticated(caller) => assert_eq!(caller.identity.name, "erin"),
                other => panic!("expected erin, got {other:?}"),
            }
        }
        assert_eq!(central.calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_validated_key_outlives_a_flood_of_refused_keys_while_the_central_is_down() {
        let central = FakeCentral::start(&[(&key(0), "frank")]).await;
        let client = HttpsClient::new(Some(&central.ca_file), "test").unwrap();
        // Nothing counts as fresh, so every check below asks the central.
        let cache = SelfCache::new(client, &central.url).with_windows(
            Duration::ZERO,
            selves::REFUSED_FOR,
            selves::STALE_IF_ERROR,
        );
        assert!(matches!(cache.check(&key(0)).await, SelfAnswer::Valid(_)));

        // More refusals than the cache holds accepted keys, a few at a time (under the call
        // limit, so each is asked about).
        let refused = futures_util::stream::iter(1..=selves::CAPACITY)
            .map(|n| {
                let cache = &cache;
                async move { cache.check(&key(n)).await }
            })
            .buffer_unordered(selves::MAX_CONCURRENT_CALLS / 2)
            .filter(|answer| std::future::ready(matches!(answer, SelfAnswer::Refused(_))))
            .count()
            .await;
        assert_eq!(refused, selves::CAPACITY);

        central.go_down();
        match cache.check(&key(0)).await {
            SelfAnswer::Valid(me) => assert_eq!(me.status.as_ref().unwrap().subject, "frank"),
            other => panic!("expected the stale validation, got {other:?}"),
        }
        // A key it never saw gets Unavailable.
        assert!(matches!(
            cache.check(&key(selves::CAPACITY + 1)).await,
            SelfAnswer::Unavailable(_)
        ));
    }
}
