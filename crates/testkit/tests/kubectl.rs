//! Drives the fake apiserver with the real `kubectl` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kubegate_testkit::{
    Credential, EXEC_STDOUT_PREFIX, Rbac, TestApiServer, TestApiServerConfig, UserInfo,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Bound on any one kubectl run, so a hang fails the test instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(60);

/// RBAC: `alice` may read configmaps in `default` (plus kube's bootstrap discovery roles).
fn rbac() -> Rbac {
    Rbac::default()
        .with_objects(&[
            json!({"kind": "Role", "metadata": {"name": "cm-reader", "namespace": "default"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "alice-reads-cms", "namespace": "default"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
        ])
        .unwrap()
}

async fn server() -> TestApiServer {
    TestApiServer::start(TestApiServerConfig::with_rbac(&rbac()).unwrap())
        .await
        .unwrap()
}

fn kubectl(server: &TestApiServer, kubeconfig: &Path) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(server.temp_dir().join("kube-cache"))
        .kill_on_drop(true)
        .stdin(Stdio::null());
    c
}

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(mut cmd: Command) -> Out {
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .expect("kubectl timed out")
        .unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn admin(server: &TestApiServer, args: &[&str]) -> Out {
    let mut c = kubectl(server, server.kubeconfig_path());
    c.args(args);
    run(c).await
}

fn write(server: &TestApiServer, name: &str, content: &str) -> std::path::PathBuf {
    let p = server.temp_dir().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// `kubectl create -f` of the custom resource `widgets.example.com/w1`; the manifest's path.
async fn create_widget_w1(server: &TestApiServer) -> std::path::PathBuf {
    let widget = write(
        server,
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 1\n",
    );
    let out = admin(server, &["create", "-f", widget.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "widget.example.com/w1 created");
    widget
}

#[tokio::test]
async fn version_and_get_namespaces_use_aggregated_discovery_and_table() {
    let s = server().await;
    let out = admin(&s, &["version", "-o", "json"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("v1.34.0-kubegate-testkit"),
        "{}",
        out.stdout
    );
    let out = admin(&s, &["get", "namespaces"]).await;
    assert!(out.ok, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("NAME") && first.contains("STATUS") && first.contains("AGE"),
        "{first}"
    );
    assert!(out.stdout.contains("kube-system"), "{}", out.stdout);
    let reqs = s.requests();
    let apis = reqs
        .iter()
        .find(|r| r.path == "/apis")
        .expect("discovery request");
    assert!(apis.header_values("accept")[0].contains("as=APIGroupDiscoveryList"));
    let list = reqs
        .iter()
        .find(|r| r.path == "/api/v1/namespaces")
        .unwrap();
    assert!(list.header_values("accept")[0].starts_with("application/json;as=Table;v=v1"));
    assert_eq!(list.query.as_deref(), Some("limit=500"));
    assert_eq!(
        list.authenticated.as_ref().unwrap().name,
        "kubegate-testkit-admin"
    );
}

#[tokio::test]
async fn create_get_apply_delete_configmap_and_widget() {
    let s = server().await;
    let cm = write(
        &s,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  a: \"1\"\n",
    );
    let out = admin(&s, &["create", "-f", cm.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "configmap/one created");
    let out = admin(&s, &["get", "cm", "one", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(out.stdout, "1", "{}", out.stderr);
    let out = admin(&s, &["create", "-f", cm.to_str().unwrap()]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error from server (AlreadyExists)"),
        "{}",
        out.stderr
    );

    let widget = create_widget_w1(&s).await;
    let post = s
        .requests()
        .into_iter()
        .find(|r| r.method == http::Method::POST && r.path.ends_with("/widgets"))
        .unwrap();
    assert!(
        post.query.unwrap().contains("fieldValidation=Strict"),
        "field validation probe"
    );

    // Client-side apply: create with last-applied, then a patch.
    let applied = write(
        &s,
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v1\n",
    );
    let out = admin(&s, &["apply", "-f", applied.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "configmap/applied created");
    std::fs::write(
        &applied,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v2\n",
    )
    .unwrap();
    let out = admin(&s, &["apply", "-f", applied.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "configmap/applied configured");
    assert_eq!(
        s.get("cm", "default", "applied").unwrap().unwrap()["data"]["k"],
        "v2"
    );

    // Server-side apply of a widget.
    std::fs::write(
        &widget,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 2\n",
    )
    .unwrap();
    let out = admin(
        &s,
        &["apply", "--server-side", "-f", widget.to_str().unwrap()],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        s.get("widgets.example.com", "default", "w1")
            .unwrap()
            .unwrap()["spec"]["size"],
        2
    );

    let out = admin(&s, &["get", "widgets"]).await;
    assert!(
        out.ok && out.stdout.contains("w1"),
        "{} {}",
        out.stdout,
        out.stderr
    );

    let out = admin(&s, &["delete", "cm", "one"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "configmap \"one\" deleted");
    assert!(s.get("cm", "default", "one").unwrap().is_none());
    let out = admin(&s, &["get", "cm", "one"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("Error from server (NotFound): configmaps \"one\" not found"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn rbac_denial_is_a_kubectl_forbidden_error() {
    let s = server().await;
    let token = s.mint_token(UserInfo::new("alice"));
    let kc = s
        .kubeconfig_for("alice", &Credential::Token(token))
        .unwrap();
    let mut c = kubectl(&s, &kc);
    c.args(["get", "cm"]);
    let out = run(c).await;
    assert!(out.ok, "{}", out.stderr);
    let mut c = kubectl(&s, &kc);
    c.args(["get", "secrets"]);
    let out = run(c).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error from server (Forbidden): secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn client_certificate_identity() {
    let s = server().await;
    let cert = s
        .mint_client_cert(UserInfo::new("alice").with_group("dev"))
        .unwrap();
    let kc = s
        .kubeconfig_for("alice-cert", &Credential::ClientCert(cert))
        .unwrap();
    let mut c = kubectl(&s, &kc);
    c.args(["get", "cm", "-o", "name"]);
    let out = run(c).await;
    assert!(out.ok, "{}", out.stderr);
    let list = s
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/default/configmaps")
        .unwrap();
    let user = list.authenticated.unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(
        user.groups,
        vec!["dev".to_owned(), "system:authenticated".to_owned()]
    );
}

#[tokio::test]
async fn impersonation_via_kubectl_as() {
    let s = server().await;
    let out = admin(&s, &["get", "cm", "--as", "alice", "--as-group", "team"]).await;
    assert!(out.ok, "{}", out.stderr);
    let list = s
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/default/configmaps")
        .unwrap();
    let who = list.impersonated.unwrap();
    assert_eq!(who.name, "alice");
    assert_eq!(
        who.groups,
        vec!["team".to_owned(), "system:authenticated".to_owned()]
    );
    // alice may not impersonate anyone.
    let token = s.mint_token(UserInfo::new("alice"));
    let kc = s
        .kubeconfig_for("alice", &Credential::Token(token))
        .unwrap();
    let mut c = kubectl(&s, &kc);
    c.args(["get", "cm", "--as", "bob"]);
    let out = run(c).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"), "{}", out.stderr);
}

#[tokio::test]
async fn get_watch_streams_changes() {
    let s = server().await;
    s.create("cm", "default", json!({"metadata": {"name": "before"}}))
        .unwrap();
    let mut c = kubectl(&s, s.kubeconfig_path());
    c.args(["get", "cm", "-w", "--output-watch-events"])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let result = tokio::time::timeout(LIMIT, async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("before") {
                // The initial list is printed: now the watch is (being) established.
                s.recorder().wait_for(|r| r.verb == "watch").await;
                s.create("cm", "default", json!({"metadata": {"name": "after"}}))
                    .unwrap();
            }
            let done = line.contains("ADDED") && line.contains("after");
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("kubectl exited early: {seen:?}");
    })
    .await
    .expect("watch event not printed");
    child.kill().await.unwrap();
    assert!(result.iter().any(|l| l.contains("after")));
    let watch = s
        .requests()
        .into_iter()
        .find(|r| r.verb == "watch")
        .unwrap();
    assert!(watch.query.unwrap().contains("watch=true"));
}

#[tokio::test]
async fn exec_with_and_without_stdin() {
    let s = server().await;
    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    let out = admin(&s, &["exec", "p", "--", "echo", "hi"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{EXEC_STDOUT_PREFIX} echo hi\n"));

    // A command that exits non-zero: kubectl exits with its code, over WebSocket and SPDY.
    for websockets in ["true", "false"] {
        let mut c = kubectl(&s, s.kubeconfig_path());
        c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .args(["exec", "p", "--", "sh", "-c", "exit 3"]);
        let out = run(c).await;
        assert_eq!(out.code, Some(3), "websockets {websockets}: {}", out.stderr);
        assert!(
            out.stderr.contains("command terminated with exit code 3"),
            "{}",
            out.stderr
        );
    }

    let mut c = kubectl(&s, s.kubeconfig_path());
    c.args(["exec", "-i", "p", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from stdin\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{EXEC_STDOUT_PREFIX} cat\nhello from stdin\n")
    );
    let exec = s
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/exec"))
        .unwrap();
    assert_eq!(exec.method, http::Method::GET);
    assert!(
        exec.header_values("sec-websocket-protocol")
            .iter()
            .any(|p| p.contains("v5.channel.k8s.io"))
    );
}

#[tokio::test]
async fn patch_types_and_pod_table() {
    let s = server().await;
    s.create(
        "cm",
        "default",
        json!({"metadata": {"name": "p"}, "data": {"a": "1", "b": "2"}}),
    )
    .unwrap();
    let cases: [(&str, &str, &str); 3] = [
        (
            "strategic",
            r#"{"data":{"a":"s"}}"#,
            "application/strategic-merge-patch+json",
        ),
        (
            "merge",
            r#"{"data":{"b":null}}"#,
            "application/merge-patch+json",
        ),
        (
            "json",
            r#"[{"op":"add","path":"/data/c","value":"j"}]"#,
            "application/json-patch+json",
        ),
    ];
    for (kind, patch, content_type) in cases {
        let out = admin(&s, &["patch", "cm", "p", "--type", kind, "-p", patch]).await;
        assert!(out.ok, "{kind}: {}", out.stderr);
        let rec = s
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == http::Method::PATCH)
            .unwrap();
        assert_eq!(rec.header_values("content-type"), [content_type], "{kind}");
    }
    assert_eq!(
        s.get("cm", "default", "p").unwrap().unwrap()["data"],
        json!({"a": "s", "c": "j"})
    );

    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}, {"name": "d"}]}}),
    )
    .unwrap();
    let out = admin(&s, &["get", "pods"]).await;
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(lines[1][..4], ["web", "2/2", "Running", "0"]);

    let out = admin(&s, &["delete", "namespace", "default"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        s.get("pods", "default", "web").unwrap().is_none(),
        "namespace contents deleted"
    );
}

#[tokio::test]
async fn generators_send_protobuf_bodies() {
    let s = server().await;
    let out = admin(
        &s,
        &[
            "create",
            "configmap",
            "gen",
            "--from-literal=a=b",
            "-n",
            "default",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    // kubectl printed the name from the protobuf ConfigMap the server answered with: Go's
    // protobuf decoder read what the testkit encodes.
    assert_eq!(out.stdout, "configmap/gen created\n");
    let cm = s.get("cm", "default", "gen").unwrap().unwrap();
    assert_eq!(cm["data"]["a"], "b");
    let out = admin(
        &s,
        &["create", "secret", "generic", "sec", "--from-literal=k=v"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "secret/sec created\n");
    let secret = s.get("secrets", "default", "sec").unwrap().unwrap();
    assert_eq!(
        (secret["data"]["k"].as_str(), secret["type"].as_str()),
        (Some("dg=="), Some("Opaque"))
    );
    let out = admin(&s, &["create", "namespace", "made-by-kubectl"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "namespace/made-by-kubectl created\n");
    assert!(s.get("ns", "", "made-by-kubectl").unwrap().is_some());
    let post = s
        .requests()
        .into_iter()
        .find(|r| r.method == http::Method::POST)
        .unwrap();
    assert_eq!(
        post.header_values("content-type"),
        ["application/vnd.kubernetes.protobuf"]
    );
    // It asks for protobuf back too, and read the protobuf ConfigMap it got ("created" above).
    assert_eq!(
        post.header_values("accept"),
        ["application/vnd.kubernetes.protobuf,application/json"]
    );
}

#[tokio::test]
async fn logs_and_follow() {
    let s = server().await;
    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "lp"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let out = admin(&s, &["logs", "lp"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, kubegate_testkit::pod_log_lines("lp"));

    let mut c = kubectl(&s, s.kubeconfig_path());
    c.args(["logs", "-f", "lp"]).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let got = tokio::time::timeout(LIMIT, async {
        let mut got = String::new();
        for _ in 0..3 {
            got.push_str(&lines.next_line().await.unwrap().unwrap());
            got.push('\n');
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(got, kubegate_testkit::pod_log_lines("lp"));
    // Still following: kubectl has not exited.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().await.unwrap();
    let rec = s
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/log"))
        .unwrap();
    assert!(rec.query.unwrap().contains("follow=true"));
}

#[tokio::test]
async fn auth_can_i_asks_the_rbac_authorizer() {
    let s = server().await;
    let token = s.mint_token(UserInfo::new("alice"));
    let kc = s
        .kubeconfig_for("alice", &Credential::Token(token))
        .unwrap();
    let cases = [
        (
            "list configmaps",
            &["auth", "can-i", "list", "configmaps"][..],
            true,
        ),
        (
            "watch configmaps",
            &["auth", "can-i", "watch", "configmaps"][..],
            true,
        ),
        (
            "delete configmaps",
            &["auth", "can-i", "delete", "configmaps"][..],
            false,
        ),
        (
            "list configmaps elsewhere",
            &["auth", "can-i", "list", "configmaps", "-n", "kube-system"][..],
            false,
        ),
        (
            "list secrets",
            &["auth", "can-i", "list", "secrets"][..],
            false,
        ),
        (
            "get /version",
            &["auth", "can-i", "get", "/version"][..],
            true,
        ),
    ];
    for (name, args, want) in cases {
        let mut c = kubectl(&s, &kc);
        c.args(args);
        let out = run(c).await;
        assert_eq!(
            out.stdout.trim(),
            if want { "yes" } else { "no" },
            "{name}: {}",
            out.stderr
        );
        assert_eq!(out.ok, want, "{name}");
    }
}

/// V6.3: the requests real kubectl makes with an empty discovery cache, in order, with the
/// exact V6.2 header strings; the testkit must answer each the way kube-apiserver does for
/// kubectl to get to the next.
#[tokio::test]
async fn v6_3_kubectl_request_sequences() {
    const DISCOVERY: [&str; 3] = [
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        // client-go before 1.33 (the kubectl on this project's machines is 1.32) offers v2beta1 too.
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    ];
    const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let s = server().await;
    let out = admin(&s, &["get", "pods", "-n", "default"]).await;
    assert!(out.ok, "{}", out.stderr);
    // kubectl asks for `/version` before discovery (V6.3 leaves it out); that one is all.
    let all = s.requests();
    let reqs: Vec<_> = all.iter().filter(|r| r.path != "/version").collect();
    assert!(all.len() - reqs.len() <= 1, "{all:?}");
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/api", "/apis", "/api/v1/namespaces/default/pods"]);
    for discovery in &reqs[..2] {
        let accept = discovery.header_values("accept");
        assert!(DISCOVERY.contains(&accept[0].as_str()), "{accept:?}");
    }
    assert_eq!(reqs[2].header_values("accept"), [TABLE]);
    assert_eq!(reqs[2].query.as_deref(), Some("limit=500"));

    create_widget_w1(&s).await;
    // Discovery came from the cache; then the field-validation probe, then the POST.
    let rest: Vec<_> = s
        .requests()
        .into_iter()
        .skip(all.len())
        .filter(|r| r.path != "/version")
        .collect();
    let paths: Vec<&str> = rest.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/openapi/v3",
            "/openapi/v3/apis/example.com/v1",
            "/apis/example.com/v1/namespaces/default/widgets"
        ]
    );
    assert!(
        rest[1]
            .query
            .as_deref()
            .is_some_and(|q| q.starts_with("hash=")),
        "{:?}",
        rest[1].query
    );
    assert_eq!(rest[1].header_values("accept"), ["application/json"]);
    assert_eq!(rest[2].method, http::Method::POST);
    assert_eq!(
        rest[2].query.as_deref(),
        Some("fieldManager=kubectl-create&fieldValidation=Strict")
    );
}
