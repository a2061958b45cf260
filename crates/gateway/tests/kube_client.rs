//! kube-client (the Rust client people embed) through the gateway: list, watch and create,
//! against a project space and a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube_client::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

async fn client(env: &Env, token: &str, prefix: &str) -> kube_client::Client {
    let kubeconfig =
        kube_client::config::Kubeconfig::read_from(env.kubeconfig(token, prefix)).unwrap();
    let config = kube_client::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube_client::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_client_lists_watches_and_creates_through_the_gateway() {
    let env = Env::start().await;
    env.a
        .create(
            "pods",
            "s1",
            serde_json::json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
    let space = client(&env, SPACE_KEY, "/kubernetes/project/p1/space/s1").await;
    let pods: Api<Pod> = Api::namespaced(space.clone(), "s1");
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("app"));
    // The fence holds for kube-client too: the error carries kube's Status.
    let outside: Api<Pod> = Api::namespaced(space, "default");
    match outside.list(&ListParams::default()).await {
        Err(kube_client::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(status.reason, "Forbidden");
            assert!(
                status.message.contains("must stay in namespace"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403 Status, got {other:?}"),
    }
    // A cluster nobody configured: kube's NotFound, naming the missing cluster.
    let nowhere = client(&env, ADMIN_KEY, "/kubernetes/cluster/zzz").await;
    match Api::<Pod>::all(nowhere).list(&ListParams::default()).await {
        Err(kube_client::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(
                status.message,
                r#"clusters.management.loft.sh "zzz" not found"#
            );
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    let cluster = client(&env, ADMIN_KEY, "/kubernetes/cluster/a").await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster, "default");
    let mut stream = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-kube-client".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            if let Ok(WatchEvent::Added(obj)) = event
                && obj.metadata.name.as_deref() == Some("from-kube-client")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));
}

/// An exec session still open when the gateway stops, shut down as the reference binary does
/// (`serve` returns, then `Gateway::shut_down_runtime`): its `ResponseComplete` event is in
/// the audit log. Before, the process exited with the session's bridge still running; the
/// runtime dropped it after `serve`'s last flush and the event was lost.
#[test]
fn an_exec_session_open_at_shutdown_is_audited() {
    use kube_client::api::AttachParams;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let exec_path = "/kubernetes/cluster/a/api/v1/namespaces/default/pods/web/exec";
    let completed = |env: &Env| {
        let log = std::fs::read_to_string(env.dir.join("state/audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["requestURI"]
                        .as_str()
                        .is_some_and(|uri| uri.starts_with(exec_path))
            })
            .count()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Everything the session needs on the client side is kept past the runtime's end, so
    // only the shutdown can end the session.
    let (env, session) = runtime.block_on(async {
        let mut env = Env::start().await;
        env.a
            .create(
                "pods",
                "default",
                serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
            )
            .unwrap();
        let cluster = client(&env, ADMIN_KEY, "/kubernetes/cluster/a").await;
        let pods: Api<Pod> = Api::namespaced(cluster, "default");
        let mut attached = pods
            .exec(
                "web",
                ["cat"],
                &AttachParams::default().stdin(true).stdout(true).stderr(false),
            )
            .await
            .unwrap();
        let mut stdin = attached.stdin().unwrap();
        let mut stdout = attached.stdout().unwrap();
        // The session is up end to end: stdin comes back on stdout.
        stdin.write_all(b"ping\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("ping") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "stdout ended: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        env.stop().await;
        (env, (attached, stdin, stdout))
    });
    // `serve` has returned and flushed the log, and the session is still open: its event
    // is not written yet.
    assert_eq!(completed(&env), 0);
    env.gateway
        .shut_down_runtime(runtime, std::time::Duration::from_secs(10));
    assert_eq!(completed(&env), 1);
    drop(session);
}
