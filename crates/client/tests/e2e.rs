//! End-to-end: kubegate-client, generated kubeconfigs with real kubectl, and the CLI example as
//! kubectl's exec credential plugin, against a gateway in front of two fake kube-apiservers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kubegate_client::api::{AccessKeyScope, AccessKeyScopeCluster};
use kubegate_client::kube_client::Api;
use kubegate_client::kube_client::api::{
    AttachParams, ListParams, LogParams, WatchEvent, WatchParams,
};
use kubegate_client::kube_client::config::Kubeconfig;
use kubegate_client::{
    AccessKeyRequest, ContextNaming, Credential, Error, GatewayClient, KubeconfigAuth,
    RefreshPolicy, Target, TokenCache, TokenSource, merge_into_file,
};

const LIMIT: Duration = Duration::from_secs(20);

fn all_targets() -> Vec<Target> {
    vec![
        Target::Management,
        Target::cluster("a"),
        Target::virtual_cluster("a", "team", "vc1"),
        Target::project_space("p1", "s1"),
        Target::project_virtual_cluster("p1", "pv1"),
    ]
}

/// What `kubectl get` lists for a target, and the name it must show.
fn probe(target: &Target) -> (&'static str, &'static str) {
    match target {
        Target::Management => ("clusters", "cluster.management.loft.sh/a"),
        _ => ("pods", "pod/web"),
    }
}

fn seed(env: &Env) {
    seed_pod(&env.a, "default");
    seed_pod(&env.a, "s1");
    seed_pod(&env.b, "default");
}

/// A kubeconfig generated for every target kind (static access key) works with real kubectl;
/// each context is named as loftctl names it and reaches the right upstream as the right user.
#[tokio::test(flavor = "multi_thread")]
async fn generated_kubeconfig_works_with_kubectl_for_every_target_kind() {
    let env = Env::start().await;
    seed(&env);
    let gateway = env.gateway(ADMIN_KEY);
    let naming = ContextNaming::default();
    let entries: Vec<_> = all_targets()
        .iter()
        .map(|t| gateway.kubeconfig_entry(t, &naming, None).unwrap())
        .collect();
    let kubeconfig = env.path("kubeconfig");
    merge_into_file(&kubeconfig, &entries, Some("loft_a")).unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loft-management",
            "loft_a",
            "loft-vcluster_vc1_team_a",
            "loft_s1_p1",
            "loft-vcluster_pv1_p1"
        ]
    );
    let current = assert_ok(
        &env.kubectl(&kubeconfig, &["config", "current-context"])
            .await,
    );
    assert_eq!(current.trim(), "loft_a");
    for (target, entry) in all_targets().iter().zip(&entries) {
        let (resource, want) = probe(target);
        let out = assert_ok(
            &env.kubectl(
                &kubeconfig,
                &["--context", &entry.name, "get", resource, "-o", "name"],
            )
            .await,
        );
        assert!(out.lines().any(|l| l == want), "{target}: {out}");
    }
    assert_eq!(last_user(&env.a, "/namespaces/s1/pods"), "admin");
    assert_eq!(last_user(&env.b, "/namespaces/default/pods"), "admin");
    // Our own prefix instead of loftctl's.
    let own = ContextNaming::with_prefix("kubegate").unwrap();
    let entry = gateway
        .kubeconfig_entry(&Target::project_space("p1", "s1"), &own, None)
        .unwrap();
    merge_into_file(&kubeconfig, std::slice::from_ref(&entry), None).unwrap();
    let out = assert_ok(
        &env.kubectl(
            &kubeconfig,
            &["--context", "kubegate_s1_p1", "get", "pods", "-o", "name"],
        )
        .await,
    );
    assert_eq!(out.trim(), "pod/web");
}

/// `GatewayClient` hands out plain kube clients: list on every target kind; watch, logs and exec
/// stream through the prefix.
#[tokio::test(flavor = "multi_thread")]
async fn kube_client_lists_watches_logs_and_execs_through_each_target() {
    let env = Env::start().await;
    seed(&env);
    let gateway = env.gateway(ADMIN_KEY);
    for target in all_targets().iter().skip(1) {
        let client = gateway.client(target).unwrap();
        let ns = if matches!(target, Target::ProjectSpace { .. }) {
            "s1"
        } else {
            "default"
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let list = pods.list(&ListParams::default()).await.unwrap();
        assert!(
            list.items
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some("web")),
            "{target}"
        );
        let logs = pods.logs("web", &LogParams::default()).await;
        assert!(logs.is_ok(), "{target}: {logs:?}");
        let mut proc = pods
            .exec(
                "web",
                ["echo", "hi"],
                &AttachParams::default().stdout(true).stderr(false),
            )
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(
            LIMIT,
            tokio::io::AsyncReadExt::read_to_string(&mut proc.stdout().unwrap(), &mut out),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
            "{target}: {out}"
        );
        let _ = proc.join().await;
    }
    // A watch sees an object created while it is open.
    let cms: Api<ConfigMap> = Api::namespaced(gateway.cluster("a").unwrap(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    tokio::time::timeout(LIMIT, env.a.recorder().wait_for(|r| r.verb == "watch"))
        .await
        .unwrap();
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "watched"}}),
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
}

/// Typed management calls; refusals are kube-client errors carrying the gateway's Status.
#[tokio::test(flavor = "multi_thread")]
async fn typed_management_calls_and_status_errors() {
    let env = Env::start().await;
    seed(&env);
    let admin = env.gateway(ADMIN_KEY).management().unwrap();
    let me = admin.whoami().await.unwrap();
    assert_eq!(me.status.unwrap().user.unwrap().name, "admin");
    let mut clusters: Vec<_> = admin
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    clusters.sort();
    assert_eq!(clusters, ["a", "b"]);
    let spaces = admin.spaces().await.unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0].metadata.name.as_deref(), Some("s1"));
    let vcs = admin.virtual_clusters().await.unwrap();
    assert!(
        vcs.iter()
            .any(|v| v.metadata.name.as_deref() == Some("pv1")),
        "{vcs:?}"
    );
    assert!(
        admin
            .projects()
            .await
            .unwrap()
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("p1"))
    );

    // A token narrowed to cluster a works there and nowhere else.
    let only_a = AccessKeyScope {
        clusters: vec![AccessKeyScopeCluster {
            cluster: "a".into(),
        }],
        ..Default::default()
    };
    let minted = admin
        .create_direct_cluster_endpoint_token(Some(Duration::from_secs(600)), Some(only_a.clone()))
        .await
        .unwrap();
    let token = minted.status.unwrap().token;
    assert_eq!(token.split('.').count(), 3, "a JWT");
    works_at_cluster_a_alone(&env, token).await;

    // A scoped caller cannot mint a broader token: 403 with the Status, via `Error::status`.
    let scoped = env.gateway(SCOPED_KEY).management().unwrap();
    let err: Error = scoped
        .create_direct_cluster_endpoint_token(
            None,
            Some(AccessKeyScope {
                clusters: vec![AccessKeyScopeCluster {
                    cluster: "*".into(),
                }],
                ..Default::default()
            }),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(err.status().map(|s| s.code), Some(403), "{err}");

    // Access keys: create (secret shown once), use, list (no secret), delete (revoked).
    let created = scoped
        .create_access_key(&AccessKeyRequest {
            name: Some("ci".into()),
            scope: Some(only_a),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = created.spec.key.clone();
    assert!(key.starts_with("kgak_"));
    let with_key = env.gateway(&key);
    let pods: Api<Pod> = Api::default_namespaced(with_key.cluster("a").unwrap());
    pods.list(&ListParams::default()).await.unwrap();
    let listed = scoped.access_keys().await.unwrap();
    let ci = listed
        .iter()
        .find(|k| k.metadata.name.as_deref() == Some("ci"))
        .unwrap();
    assert!(ci.spec.key.is_empty(), "listing never shows the secret");
    scoped.delete_access_key("ci").await.unwrap();
    match pods.list(&ListParams::default()).await {
        Err(kubegate_client::kube_client::Error::Api(status)) => assert_eq!(status.code, 401),
        other => panic!("expected 401 after revocation, got {other:?}"),
    }

    // An unknown key: 401 Status.
    let nobody = env.gateway("kgak_nope").management().unwrap();
    match nobody.whoami().await {
        Err(kubegate_client::kube_client::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"))
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

/// The CLI as kubectl's exec credential plugin, for every target kind: `use` writes contexts
/// that run `cli token`, which mints and caches a short-lived token.
#[tokio::test(flavor = "multi_thread")]
async fn exec_plugin_contexts_work_with_kubectl_for_every_target_kind() {
    let env = Env::start().await;
    seed(&env);
    env.login(ADMIN_KEY).await;
    let uses: [(&[&str], &str); 5] = [
        (&["use", "management"], "loft-management"),
        (&["use", "cluster", "a"], "loft_a"),
        (
            &[
                "use",
                "vcluster",
                "vc1",
                "--cluster",
                "a",
                "--namespace",
                "team",
            ],
            "loft-vcluster_vc1_team_a",
        ),
        (&["use", "space", "s1", "--project", "p1"], "loft_s1_p1"),
        (
            &["use", "vcluster", "pv1", "--project", "p1"],
            "loft-vcluster_pv1_p1",
        ),
    ];
    let kubeconfig = env.path("kubeconfig");
    for ((args, context), target) in uses.iter().zip(all_targets()) {
        let out = env.cli(args).await;
        assert_ok(&out);
        assert!(stderr(&out).contains(context), "{}", stderr(&out));
        let current = assert_ok(
            &env.kubectl(&kubeconfig, &["config", "current-context"])
                .await,
        );
        assert_eq!(current.trim(), *context);
        let (resource, want) = probe(&target);
        let out = assert_ok(
            &env.kubectl(&kubeconfig, &["get", resource, "-o", "name"])
                .await,
        );
        assert!(out.lines().any(|l| l == want), "{target}: {out}");
    }
    assert_eq!(last_user(&env.b, "/namespaces/default/pods"), "admin");
    // The kubeconfig names the plugin, not the key.
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(!text.contains(ADMIN_KEY));
    assert!(
        text.contains("client.authentication.k8s.io/v1") && text.contains("interactiveMode: Never"),
        "{text}"
    );
    // One cached token served all of them.
    let cache = TokenCache::new(env.cli_config().with_file_name("token-cache.json"));
    let cached = cache
        .get(
            &env.gateway(ADMIN_KEY),
            &TokenSource::DirectClusterEndpointToken {
                ttl: None,
                scope: None,
            },
        )
        .unwrap()
        .expect("a cached token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The plugin's output: v1 with an expiry, or v1beta1 when asked in that version.
    let v1: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["token"]).await)).unwrap();
    assert_eq!(v1["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v1["kind"], "ExecCredential");
    let expires = v1["status"]["expirationTimestamp"].as_str().unwrap();
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(Some(expires.unix_timestamp()), cached.expires_at);
    let beta = env
        .cli_env(
            &["token"],
            &[(
                "KUBERNETES_EXEC_INFO",
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#,
            )],
        )
        .await;
    let beta: serde_json::Value = serde_json::from_str(&assert_ok(&beta)).unwrap();
    assert_eq!(beta["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(beta["status"]["token"], v1["status"]["token"]);
    // `--cluster a` (what a direct-cluster-endpoint context asks for): a token narrowed to
    // cluster a, which works there and nowhere else (another cluster, the management API).
    let narrowed: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["token", "--cluster", "a"]).await)).unwrap();
    let narrowed = narrowed["status"]["token"].as_str().unwrap().to_owned();
    assert_ne!(narrowed, v1["status"]["token"].as_str().unwrap());
    let with_narrowed = works_at_cluster_a_alone(&env, narrowed).await;
    let management = with_narrowed.management().unwrap();
    assert!(management.clusters().await.is_err());
    // `--access-key` hands out the key itself, with no expiry.
    let key: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["token", "--access-key"]).await)).unwrap();
    assert_eq!(key["status"]["token"], ADMIN_KEY);
    assert!(key["status"].get("expirationTimestamp").is_none());
}

/// Asserts that `token`, narrowed to cluster a, lists pods there and gets the scope's 403 at
/// cluster b; the client that holds it.
async fn works_at_cluster_a_alone(env: &Env, token: String) -> GatewayClient {
    let with_token = env
        .gateway(ADMIN_KEY)
        .with_credential(Credential::bearer(token));
    let pods_a: Api<Pod> = Api::default_namespaced(with_token.cluster("a").unwrap());
    pods_a.list(&ListParams::default()).await.unwrap();
    let pods_b: Api<Pod> = Api::default_namespaced(with_token.cluster("b").unwrap());
    match pods_b.list(&ListParams::default()).await {
        Err(kubegate_client::kube_client::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(status.message.contains("scope"), "{}", status.message);
        }
        other => panic!("expected a 403 Status, got {other:?}"),
    }
    with_token
}

/// Merging into a kubeconfig that already has other contexts keeps them exactly, and they still
/// work; a second merge replaces our entries instead of duplicating them.
#[tokio::test(flavor = "multi_thread")]
async fn merge_keeps_foreign_contexts() {
    let env = Env::start().await;
    seed(&env);
    let kubeconfig = env.path("kubeconfig");
    std::fs::write(env.path("upstream-a-ca.pem"), env.a.ca_pem()).unwrap();
    let foreign = format!(
        r#"apiVersion: v1
kind: Config
preferences: {{}}
current-context: direct-a
custom-top-level: kept
clusters:
- name: upstream-a
  cluster:
    server: {url}
    certificate-authority: {ca}
    custom-cluster-field: kept
users:
- name: upstream-admin
  user:
    token: {token}
- name: cloud
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [eks, get-token, --cluster-name, prod]
      env:
      - name: AWS_PROFILE
        value: prod
contexts:
- name: direct-a
  context:
    cluster: upstream-a
    user: upstream-admin
    namespace: "0123"
- name: eks
  context:
    cluster: upstream-a
    user: cloud
"#,
        url = env.a.url(),
        ca = env.path("upstream-a-ca.pem").display(),
        token = env.a.admin_token(),
    );
    std::fs::write(&kubeconfig, &foreign).unwrap();
    let before = Kubeconfig::from_yaml(&foreign).unwrap();
    let gateway = env.gateway(ADMIN_KEY);
    let naming = ContextNaming::default();
    let entry = |t: &Target| gateway.kubeconfig_entry(t, &naming, None).unwrap();
    merge_into_file(&kubeconfig, &[entry(&Target::cluster("a"))], None).unwrap();
    merge_into_file(
        &kubeconfig,
        &[entry(&Target::cluster("a")), entry(&Target::Management)],
        Some("loft-management"),
    )
    .unwrap();
    let after = Kubeconfig::read_from(&kubeconfig).unwrap();
    for name in ["direct-a", "eks"] {
        let pick = |k: &Kubeconfig| {
            serde_json::to_value(k.contexts.iter().find(|c| c.name == name).unwrap()).unwrap()
        };
        assert_eq!(pick(&after), pick(&before), "context {name}");
    }
    for name in ["upstream-admin", "cloud"] {
        let pick = |k: &Kubeconfig| {
            serde_json::to_value(k.auth_infos.iter().find(|c| c.name == name).unwrap()).unwrap()
        };
        assert_eq!(pick(&after), pick(&before), "user {name}");
    }
    let pick = |k: &Kubeconfig| serde_json::to_value(&k.clusters[0]).unwrap();
    assert_eq!(pick(&after), pick(&before));
    assert_eq!(
        after.other.get("custom-top-level"),
        before.other.get("custom-top-level")
    );
    let mut contexts: Vec<_> = after.contexts.iter().map(|c| c.name.as_str()).collect();
    contexts.sort();
    assert_eq!(contexts, ["direct-a", "eks", "loft-management", "loft_a"]);
    assert_eq!(after.clusters.len(), 3);
    assert_eq!(after.auth_infos.len(), 4);
    assert_eq!(after.current_context.as_deref(), Some("loft-management"));
    // The foreign context still works, and so do ours.
    let out = assert_ok(
        &env.kubectl(
            &kubeconfig,
            &[
                "--context",
                "direct-a",
                "get",
                "pods",
                "-n",
                "default",
                "-o",
                "name",
            ],
        )
        .await,
    );
    assert_eq!(out.trim(), "pod/web");
    let out = assert_ok(
        &env.kubectl(
            &kubeconfig,
            &["--context", "loft_a", "get", "pods", "-o", "name"],
        )
        .await,
    );
    assert_eq!(out.trim(), "pod/web");
    assert_ok(&env.kubectl(&kubeconfig, &["get", "clusters"]).await);
    // The CLI merges the same way.
    env.login(ADMIN_KEY).await;
    let out = env
        .cli(&[
            "use",
            "space",
            "s1",
            "--project",
            "p1",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--no-switch",
        ])
        .await;
    assert_ok(&out);
    let after_cli = Kubeconfig::read_from(&kubeconfig).unwrap();
    assert_eq!(
        after_cli.current_context.as_deref(),
        Some("loft-management")
    );
    assert_eq!(after_cli.contexts.len(), 5);
    let leftovers: Vec<_> = std::fs::read_dir(&env.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left behind");
}

/// The gateway goes away and comes back: the plugin keeps handing out its cached token (also
/// when a refresh is due but cannot be done), and kubectl works again with it after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_restart_keeps_the_cached_token_path_working() {
    let env = Env::start().await;
    seed(&env);
    env.login(ADMIN_KEY).await;
    assert_ok(&env.cli(&["use", "cluster", "a"]).await);
    let kubeconfig = env.path("kubeconfig");
    assert_ok(&env.kubectl(&kubeconfig, &["get", "pods"]).await);
    let first: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["token"]).await)).unwrap();
    let token = first["status"]["token"].as_str().unwrap().to_owned();

    env.stop().await;
    // A refresh is due (age >= 0 s) but the gateway is down: the cached token still comes out.
    let down = env.cli(&["token", "--refresh-after", "0"]).await;
    let down: serde_json::Value = serde_json::from_str(&assert_ok(&down)).unwrap();
    assert_eq!(down["status"]["token"], token.as_str());
    // kubectl runs the plugin fine; only the request itself fails, because nobody listens.
    let failed = env.kubectl(&kubeconfig, &["get", "pods"]).await;
    assert!(!failed.status.success());
    assert!(
        !stderr(&failed).contains("getting credentials"),
        "the exec plugin must not fail: {}",
        stderr(&failed)
    );
    // Library path: the same decision, with an injected clock.
    let cache = TokenCache::new(env.cli_config().with_file_name("token-cache.json"));
    let source = TokenSource::DirectClusterEndpointToken {
        ttl: None,
        scope: None,
    };
    let cached = cache
        .get(&env.gateway(ADMIN_KEY), &source)
        .unwrap()
        .unwrap();
    let later = cached.requested_at + 31 * 60;
    let reused = cache
        .token(
            &env.gateway(ADMIN_KEY),
            &source,
            &RefreshPolicy::default(),
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        reused.requested_at, cached.requested_at,
        "not refreshed: the gateway is down"
    );
    let expired = cached.expires_at.unwrap();
    let err = cache
        .token(
            &env.gateway(ADMIN_KEY),
            &source,
            &RefreshPolicy::default(),
            expired,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoValidToken { .. }), "{err}");

    env.restart().await;
    // The restarted gateway (same signing key) accepts the cached token through the plugin.
    let out = assert_ok(
        &env.kubectl(&kubeconfig, &["get", "pods", "-o", "name"])
            .await,
    );
    assert_eq!(out.trim(), "pod/web");
    let again: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["token"]).await)).unwrap();
    assert_eq!(
        again["status"]["token"],
        token.as_str(),
        "still the cached token"
    );
    // Once a refresh is due and the gateway answers, a new token replaces it.
    let refreshed = assert_ok(&env.cli(&["token", "--refresh-after", "0"]).await);
    let refreshed: serde_json::Value = serde_json::from_str(&refreshed).unwrap();
    assert_eq!(refreshed["kind"], "ExecCredential");
    let new_cached = cache
        .get(&env.gateway(ADMIN_KEY), &source)
        .unwrap()
        .unwrap();
    assert!(new_cached.requested_at >= cached.requested_at);
    assert_ok(&env.kubectl(&kubeconfig, &["get", "pods"]).await);
}

/// CLI commands, their output and the exit codes scripts rely on.
#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_and_exit_codes() {
    let env = Env::start().await;
    seed(&env);
    // Not logged in: 3.
    assert_exit(&env.cli(&["whoami"]).await, 3, "not logged in");
    // Bad usage: 2.
    assert_eq!(env.cli(&["use", "nothing"]).await.status.code(), Some(2));
    // A key the gateway does not know: 4, and nothing saved.
    let ca = env.ca_file();
    let bad = env
        .cli(&[
            "login",
            &env.url,
            "--access-key",
            "kgak_nope",
            "--ca-file",
            ca.to_str().unwrap(),
        ])
        .await;
    assert_exit(&bad, 4, "did not accept");
    assert!(!env.cli_config().exists());

    env.login(SCOPED_KEY).await;
    let me = assert_ok(&env.cli(&["whoami"]).await);
    assert!(me.starts_with("user scoped\n"), "{me}");
    assert!(me.contains("scope: "), "{me}");
    let json: serde_json::Value =
        serde_json::from_str(&assert_ok(&env.cli(&["whoami", "--json"]).await)).unwrap();
    assert_eq!(json["kind"], "Self");
    // `use vcluster` needs to know which one: 2.
    assert_exit(&env.cli(&["use", "vcluster", "x"]).await, 2, "--project");
    // A token broader than the key's scope: 5.
    assert_exit(
        &env.cli(&["create", "token", "--cluster", "b"]).await,
        5,
        "not allowed",
    );
    // A narrowed token works with kubectl.
    let token = assert_ok(
        &env.cli(&["create", "token", "--cluster", "a", "--ttl", "600"])
            .await,
    );
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3);
    let entry = env
        .gateway(token)
        .kubeconfig_entry(
            &Target::cluster("a"),
            &ContextNaming::default(),
            Some(KubeconfigAuth::Token(token.to_owned().into())),
        )
        .unwrap();
    let kc = env.path("token-kubeconfig");
    merge_into_file(&kc, &[entry], Some("loft_a")).unwrap();
    assert_ok(&env.kubectl(&kc, &["get", "pods"]).await);
    // An access key: printed once on stdout, works at once.
    let created = env
        .cli(&["create", "accesskey", "--name", "ci", "--cluster", "a"])
        .await;
    let key = assert_ok(&created).trim().to_owned();
    assert!(key.starts_with("kgak_"), "{key}");
    assert!(stderr(&created).contains("shown only this once"));
    let pods: Api<Pod> = Api::default_namespaced(env.gateway(&key).cluster("a").unwrap());
    pods.list(&ListParams::default()).await.unwrap();
    // The same name twice: the gateway's 409 comes through as a plain error, exit 1.
    assert_exit(
        &env.cli(&["create", "accesskey", "--name", "ci"]).await,
        1,
        "already exists",
    );
    // Gateway gone: 6.
    env.stop().await;
    assert_exit(
        &env.cli(&["whoami"]).await,
        6,
        "could not reach the gateway",
    );
    assert_exit(&env.cli(&["token"]).await, 6, "could not reach the gateway");
}

/// A direct cluster endpoint (an agent-mode gateway for cluster `a`): the client drops the
/// cluster segment, and a token minted by the central gateway works there with kube-client and
/// with kubectl through a generated kubeconfig.
#[tokio::test(flavor = "multi_thread")]
async fn direct_cluster_endpoint_with_a_minted_token() {
    let env = Env::start().await;
    seed(&env);
    let agent = env.start_agent().await;
    let minted = env
        .gateway(ADMIN_KEY)
        .management()
        .unwrap()
        .create_direct_cluster_endpoint_token(None, None)
        .await
        .unwrap();
    let token = minted.status.unwrap().token;
    let direct = GatewayClient::direct(&agent.url, Credential::bearer(token))
        .unwrap()
        .with_ca_pem(&agent.ca_pem)
        .unwrap();
    assert_eq!(
        direct.server_url(&Target::cluster("a")).unwrap(),
        format!("{}/kubernetes/cluster", agent.url)
    );
    let pods: Api<Pod> = Api::default_namespaced(direct.cluster("a").unwrap());
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("web"))
    );
    assert_eq!(last_user(&env.a, "/namespaces/default/pods"), "admin");
    assert!(matches!(
        direct.management(),
        Err(Error::NoManagementOnDirectEndpoint)
    ));
    let entry = direct
        .kubeconfig_entry(&Target::cluster("a"), &ContextNaming::default(), None)
        .unwrap();
    let kc = env.path("direct-kubeconfig");
    merge_into_file(&kc, &[entry], Some("loft_a")).unwrap();
    let out = assert_ok(&env.kubectl(&kc, &["get", "pods", "-o", "name"]).await);
    assert_eq!(out.trim(), "pod/web");
}
