//! The reference binary (`examples/gateway.rs`) as an operator runs it: started on a config
//! file, reloaded with SIGHUP (a good config applies, a bad one is refused and the running one
//! stays) and when a file the config names changes, and stopped with SIGTERM while a watch is
//! open (the watch ends, exit code 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubegate::tokens::AccessKeyDigest;
use kubegate_testkit::{Decision, FnAuthorizer, TestApiServer, TestApiServerConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ADMIN_KEY: &str = "kgak_binary_test_admin_000000000000000000000000";

/// `target/<profile>/examples/gateway`, built by `cargo test` along with the tests.
fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join("gateway");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the examples)",
        binary.display()
    );
    binary
}

async fn upstream() -> TestApiServer {
    let allow_all = FnAuthorizer(|_: &kubegate_testkit::Attributes<'_>| Decision::Allow);
    TestApiServer::start(TestApiServerConfig::new(allow_all))
        .await
        .unwrap()
}

/// The port in the gateway's `kubegate listening on https://127.0.0.1:<port> (…)` line. The
/// configs listen on port 0, so no other process can take the port between a test choosing
/// it and the gateway binding it.
fn listening_port(line: &str) -> u16 {
    line.split("https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

fn config(state: &Path, clusters: &[(&str, &TestApiServer)]) -> String {
    let clusters: String = clusters
        .iter()
        .map(|(name, s)| {
            let ca = state.parent().unwrap().join(format!("{name}-ca.pem"));
            std::fs::write(&ca, s.ca_pem()).unwrap();
            format!(
                "  - name: {name}\n    upstream: {{server: \"{}\", caFile: \"{}\", token: \"{}\"}}\n",
                s.url(),
                ca.display(),
                s.admin_token()
            )
        })
        .collect();
    format!(
        r#"listen: 127.0.0.1:0
stateDir: {state}
clusters:
{clusters}users:
  - name: admin
accessKeys:
  - {{name: admin, user: admin, sha256: {digest}}}
rbac:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: admins}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubegate:admin"}}
    subjects: [{{kind: User, name: admin, apiGroup: rbac.authorization.k8s.io}}]
"#,
        state = state.display(),
        digest = AccessKeyDigest::of(ADMIN_KEY).to_hex(),
    )
}

/// Collects the child's stderr lines as they come.
fn stderr_lines(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn wait_for_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.recv().await {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("the gateway never logged {needle:?}"),
    }
}

fn kubeconfig(dir: &Path, port: u16, cluster: &str) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{cluster}.yaml"));
    let ca = dir.join("state").join("serving.crt");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: g\n  cluster: {{server: \"https://127.0.0.1:{port}/kubernetes/cluster/{cluster}\", certificate-authority: \"{}\"}}\nusers:\n- name: u\n  user: {{token: {ADMIN_KEY}}}\ncontexts:\n- name: c\n  context: {{cluster: g, user: u}}\ncurrent-context: c\n",
            ca.display()
        ),
    )
    .unwrap();
    path
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    // Its own discovery cache, beside the kubeconfig: never `$HOME`'s.
    let cache = kubeconfig.with_extension("kubectl-cache");
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--request-timeout=10s")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_sigterm_ends_watches_and_exits_zero() {
    let a = upstream().await;
    let b = upstream().await;
    let dir = std::env::temp_dir().join(format!("kubegate-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config_path = dir.join("kubegate.yaml");
    std::fs::write(&config_path, config(&state, &[("a", &a)])).unwrap();

    let mut child = Command::new(gateway_binary())
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = stderr_lines(&mut child);
    let listening = listening_port(&wait_for_line(&mut lines, "kubegate listening on").await);
    let kc_a = kubeconfig(&dir, listening, "a");
    let kc_b = kubeconfig(&dir, listening, "b");
    let out = kubectl(&kc_a, &["get", "configmaps"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&kc_b, &["get", "configmaps"]).await;
    assert!(!out.status.success(), "cluster b is not configured yet");

    // A bad config plus SIGHUP: refused, logged, and the running one keeps serving.
    std::fs::write(&config_path, "listen: [not an address\n").unwrap();
    signal(&child, "-HUP");
    wait_for_line(&mut lines, "new configuration refused").await;
    let out = kubectl(&kc_a, &["get", "configmaps"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A good one adding cluster b applies.
    std::fs::write(&config_path, config(&state, &[("a", &a), ("b", &b)])).unwrap();
    signal(&child, "-HUP");
    wait_for_line(&mut lines, "configuration reloaded").await;
    let out = kubectl(&kc_b, &["get", "configmaps"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A cluster whose CA bundle is not there yet (its Secret volume updated after the
    // config): the change is seen without SIGHUP and refused; the bundle's arrival alone then
    // applies it.
    let with_c = config(&state, &[("a", &a), ("b", &b), ("c", &b)]);
    let ca_c = dir.join("c-ca.pem");
    std::fs::remove_file(&ca_c).unwrap();
    std::fs::write(&config_path, with_c).unwrap();
    wait_for_line(&mut lines, "new configuration refused").await;
    std::fs::write(&ca_c, b.ca_pem()).unwrap();
    wait_for_line(&mut lines, "configuration reloaded").await;
    let kc_c = kubeconfig(&dir, listening, "c");
    let out = kubectl(&kc_c, &["get", "configmaps"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM with a watch open: the watch ends and the process exits 0.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc_a)
        .arg("--cache-dir")
        .arg(kc_a.with_extension("kubectl-cache"))
        .args([
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
            "--request-timeout=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The watch is open once the gateway has forwarded it upstream.
    tokio::time::timeout(Duration::from_secs(20), async {
        while !a
            .requests()
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the watch reached the upstream");
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the gateway exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    wait_for_line(&mut lines, "kubegate: stopped").await;
    let watch_ended = tokio::time::timeout(Duration::from_secs(20), watch.wait()).await;
    assert!(
        watch_ended.is_ok(),
        "the watch did not end with the gateway"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `audit: {sink: stdout}`: a JSON event per request on standard output, written by the audit
/// thread (a backed-up pipe never stops the request threads) and flushed before the process
/// exits on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn stdout_audit_events_are_written_and_flushed_at_exit() {
    let a = upstream().await;
    let dir = std::env::temp_dir().join(format!("kubegate-binary-stdout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config_path = dir.join("kubegate.yaml");
    let yaml = format!("{}audit: {{sink: stdout}}\n", config(&state, &[("a", &a)]));
    std::fs::write(&config_path, yaml).unwrap();
    let mut child = Command::new(gateway_binary())
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut lines = stderr_lines(&mut child);
    let listening = listening_port(&wait_for_line(&mut lines, "kubegate listening on").await);
    let out = kubectl(&kubeconfig(&dir, listening, "a"), &["get", "configmaps"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(&child, "-TERM");
    let mut written = String::new();
    tokio::time::timeout(Duration::from_secs(40), async {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut written).await.unwrap();
    })
    .await
    .expect("the gateway exits after SIGTERM");
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    let listed = written
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| {
            e["kind"] == "Event"
                && e["verb"] == "list"
                && e["objectRef"]["resource"] == "configmaps"
        });
    assert!(listed, "no audit event for the list on stdout: {written}");
    let _ = std::fs::remove_dir_all(&dir);
}
