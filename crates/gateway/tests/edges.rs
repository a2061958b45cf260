//! Gateway edges: rate limits, reload mid-watch, reloads and state refreshes one at a time,
//! graceful shutdown ending watches, /oidc.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;

const A: &str = "/kubernetes/cluster/a";
const LEGACY_VC: &str = "/kubernetes/virtualcluster/a/team/vc1";

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_returns_429_and_recovers() {
    // A token every 5 s: the fourth request meets an empty bucket however slowly the first
    // three went (a faster refill let a slow machine's fourth request through).
    let env =
        Env::start_with("rateLimits:\n  perIdentity: {requestsPerSecond: 0.2, burst: 3}\n").await;
    let client = env.client();
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(client.get(&url, VIEWER_KEY, &[]).await);
    }
    assert!(codes[..3].iter().all(|r| r.status == 200));
    let limited = &codes[3];
    assert_eq!(limited.status, 429, "{}", limited.body);
    // The wait for the next token, rounded up: at most 5 s at one token per 5 s (less by the
    // time the first three requests took).
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert!(
        limited.body.contains("\"reason\":\"TooManyRequests\""),
        "{}",
        limited.body
    );
    assert!(
        limited
            .body
            .contains("too many requests from user \\\"viewer\\\""),
        "{}",
        limited.body
    );
    // Another identity has its own bucket.
    assert_eq!(client.get(&url, ADMIN_KEY, &[]).await.status, 200);
    // The bucket refills (one token in 5 s): poll, bounded.
    let mut recovered = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if client.get(&url, VIEWER_KEY, &[]).await.status == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the limit never recovered");
}

/// Opens a watch through the gateway with a raw client and returns the streaming response.
async fn open_watch(env: &Env) -> hyper::Response<hyper::body::Incoming> {
    open_stream(
        env,
        &format!("{A}/api/v1/namespaces/default/configmaps?watch=true"),
    )
    .await
}

/// Lists configmaps in `default` through the gateway while upstream `a` holds the body back
/// until the returned gate opens: the response (its head only, so far) holds a max-in-flight
/// slot for exactly as long as the test needs, however slow the machine.
async fn open_held_list(
    env: &Env,
) -> (
    hyper::Response<hyper::body::Incoming>,
    kubegate_testkit::BodyGate,
) {
    use kubegate_testkit::{BodyGate, Fault, FaultRule};
    let gate = BodyGate::new();
    env.a.faults().inject(
        FaultRule::new(Fault::HoldBody(gate.clone()))
            .path_prefix("/api/v1/namespaces/default/configmaps")
            .times(1),
    );
    let res = open_stream(env, &format!("{A}/api/v1/namespaces/default/configmaps")).await;
    (res, gate)
}

/// GETs `path` through the gateway as the admin with a raw client and returns the response,
/// its body not yet read.
async fn open_stream(env: &Env, path: &str) -> hyper::Response<hyper::body::Incoming> {
    open_stream_accepting(env, path, None).await
}

/// [`open_stream`] with an `Accept` header.
async fn open_stream_accepting(
    env: &Env,
    path: &str,
    accept: Option<&str>,
) -> hyper::Response<hyper::body::Incoming> {
    use std::sync::Arc;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&env.ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = http::Request::get(format!("{}{path}", env.url))
        .header("authorization", format!("Bearer {ADMIN_KEY}"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let req = req.body(http_body_util::Empty::new()).unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res
}

/// kube-apiserver's request timeout for counted requests: a response still streaming when it
/// has run out (here a slow upstream; a client that stopped reading is the same to the server)
/// ends with its connection, in error, and the max-in-flight slot it held is free again.
/// Watches are not counted and run on.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_past_the_request_timeout_ends_and_frees_its_slot() {
    // The held list sends no body until it is cut, 6 to 12 s after its connection opened;
    // until then its slot is taken, so the watch and the refused GET below have seconds to
    // get there, not a fraction of one.
    let limits = kubegate_gateway::ServerLimits {
        response_timeout: Duration::from_secs(6),
        ..kubegate_gateway::ServerLimits::default()
    };
    let env = Env::start_with_limits(|_, _| "maxRequestsInFlight: 1\n".into(), limits).await;
    let list = format!("{A}/api/v1/namespaces/default/configmaps");
    let (held, _never_opened) = open_held_list(&env).await;
    let watch = open_watch(&env).await;
    let client = env.client();
    let url = format!("{}{list}", env.url);
    assert_eq!(client.get(&url, ADMIN_KEY, &[]).await.status, 429);
    let cut = tokio::time::timeout(Duration::from_secs(20), held.into_body().collect())
        .await
        .expect("the overdue response was ended");
    assert!(cut.is_err(), "the overdue response ended as if complete");
    let after = client.get(&url, ADMIN_KEY, &[]).await;
    assert_eq!(after.status, 200, "{}", after.body);
    // The watch, on a connection of its own, is still open: an event reaches it.
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "after-the-cut"}}),
        )
        .unwrap();
    let mut watch = watch.into_body();
    let event = tokio::time::timeout(Duration::from_secs(20), watch.frame())
        .await
        .expect("the watch ran on")
        .expect("the watch is open")
        .unwrap();
    let data = event.into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&data).contains("after-the-cut"),
        "{data:?}"
    );
}

/// `response_timeout: 0` turns the request timeout off; it never stops a connection from
/// being served.
#[tokio::test(flavor = "multi_thread")]
async fn a_zero_request_timeout_is_none() {
    let limits = kubegate_gateway::ServerLimits {
        response_timeout: Duration::ZERO,
        ..kubegate_gateway::ServerLimits::default()
    };
    let env = Env::start_with_limits(|_, _| String::new(), limits).await;
    assert_served(&env, &format!("{A}/api/v1/namespaces/default/configmaps")).await;
}

/// V6.2's protobuf watch row through the reference gateway: a controller that speaks
/// Kubernetes protobuf (client-go's Accept) gets the upstream's
/// `application/vnd.kubernetes.protobuf;stream=watch` and its length-delimited frames, each
/// as its event happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_protobuf_watch_keeps_its_media_type_and_frames() {
    let env = Env::start_with("").await;
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "pb"}}),
        )
        .unwrap();
    let rv = env.a.resource_version();
    let res = open_stream_accepting(
        &env,
        &format!("{A}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
        Some("application/vnd.kubernetes.protobuf, */*"),
    )
    .await;
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = res.into_body();
    let mut buf = Vec::new();
    for expected in ["MODIFIED", "MODIFIED", "DELETED"] {
        if expected == "DELETED" {
            env.a.delete("configmaps", "default", "pb").unwrap();
        } else {
            env.a.generate_events("cm", "default", "pb", 1).unwrap();
        }
        let (kind, object) = loop {
            if let Some(event) = kubegate_testkit::decode_protobuf_watch_event(&mut buf) {
                break event.unwrap();
            }
            match tokio::time::timeout(Duration::from_secs(20), body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                other => panic!("no protobuf watch event: {other:?}"),
            }
        };
        assert_eq!(kind, expected);
        assert_eq!(object["metadata"]["name"], "pb");
    }
}

/// The gateway's own Status answers (authentication, authorization, an unknown target) are
/// negotiated as kube-apiserver's filters negotiate theirs: a client asking for protobuf
/// first gets them in protobuf, kubectl and curl in JSON.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_own_statuses_are_protobuf_for_a_protobuf_client() {
    const PROTOBUF: [(&str, &str); 1] = [("accept", "application/vnd.kubernetes.protobuf, */*")];
    let env = Env::start_with("").await;
    let client = env.client();
    let url = |prefix: &str| format!("{}{prefix}/api/v1/namespaces/default/secrets", env.url);
    let cases = [
        (
            "no key",
            url(A),
            "not-a-key",
            401,
            kubegate_proxy::Status::unauthorized(),
        ),
        (
            "unknown cluster",
            url("/kubernetes/cluster/nowhere"),
            ADMIN_KEY,
            404,
            {
                let reply = client
                    .get(&url("/kubernetes/cluster/nowhere"), ADMIN_KEY, &[])
                    .await;
                assert_eq!(reply.headers["content-type"], "application/json");
                status_of_json(&reply.body)
            },
        ),
        ("RBAC", url(A), VIEWER_KEY, 403, {
            let reply = client.get(&url(A), VIEWER_KEY, &[]).await;
            assert_eq!(reply.status, 403, "{}", reply.body);
            status_of_json(&reply.body)
        }),
    ];
    for (name, url, key, code, json_twin) in cases {
        let reply = client.get(&url, key, &PROTOBUF).await;
        assert_eq!(reply.status, code, "{name}: {}", reply.body);
        assert_eq!(
            reply.headers["content-type"], "application/vnd.kubernetes.protobuf",
            "{name}"
        );
        // The same Status the JSON client got, in protobuf.
        assert_eq!(reply.bytes, json_twin.to_protobuf(), "{name}");
    }
}

/// A JSON Status body as the proxy crate's `Status`.
fn status_of_json(body: &str) -> kubegate_proxy::Status {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let details = v
        .get("details")
        .map(|d| kubegate_proxy::status::StatusDetails {
            name: d["name"].as_str().unwrap_or("").into(),
            group: d["group"].as_str().unwrap_or("").into(),
            kind: d["kind"].as_str().unwrap_or("").into(),
            ..Default::default()
        });
    kubegate_proxy::Status {
        code: v["code"].as_u64().unwrap() as u16,
        message: v["message"].as_str().unwrap_or("").into(),
        reason: v["reason"].as_str().unwrap_or("").into(),
        details,
        type_meta: true,
    }
}

async fn next_event(
    body: &mut hyper::body::Incoming,
    buf: &mut Vec<u8>,
) -> Option<serde_json::Value> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            // A line that is not JSON is a broken stream, never its clean end.
            return Some(
                serde_json::from_slice(&line)
                    .unwrap_or_else(|e| panic!("a watch line that is not JSON ({e}): {line:?}")),
            );
        }
        match tokio::time::timeout(Duration::from_secs(20), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Ok(Some(Err(e))) => panic!("watch stream broke: {e}"),
            Ok(None) => return None,
            Err(_) => panic!("no watch event within 20 s"),
        }
    }
}

/// kube-apiserver's max-in-flight limit, per target: with one read allowed, a read whose
/// response body is still streaming holds its target's slot, and a second read of that target
/// gets kube's plain-text 429 with `Retry-After: 1`; other targets are served. Watches and writes are not charged to it. Once the body ends, reads are
/// served again.
#[tokio::test(flavor = "multi_thread")]
async fn max_in_flight_refuses_reads_past_the_limit_until_the_body_ends() {
    let env = Env::start_with("maxRequestsInFlight: 1\n").await;
    let list = format!("{A}/api/v1/namespaces/default/configmaps");
    // Its body held back: the slot stays taken until the test lets it go.
    let (held, gate) = open_held_list(&env).await;
    assert_eq!(held.status(), 200);

    let client = env.client();
    let url = format!("{}{list}", env.url);
    let refused = client.get(&url, ADMIN_KEY, &[]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body, "Too many requests, please try again later.\n");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.headers["content-type"], "text/plain; charset=utf-8");
    // Each target has a budget of its own, as each kube-apiserver has its own limit: cluster
    // a's held slot (or a hung upstream holding them all) leaves cluster b served, and the
    // management API too.
    assert_served(
        &env,
        "/kubernetes/cluster/b/api/v1/namespaces/default/configmaps",
    )
    .await;
    assert_management_served(&env).await;
    // A reload keeps each target's budget (the held slot counts on), even one that rebuilds
    // the target's forwarding service: a fresh budget would let every reload double what a
    // target may hold.
    let mut changed = env.config.clone();
    changed.clusters[0].upstream.http2 = Some(false);
    env.gateway.reload(changed).await.unwrap();
    let after_reload = client.get(&url, ADMIN_KEY, &[]).await;
    assert_eq!(after_reload.status, 429, "{}", after_reload.body);
    // `system:masters` is always served, judged as kube-apiserver's filter judges it: on the
    // identity the request runs as, the impersonated one here.
    let as_masters = client
        .get(
            &url,
            ADMIN_KEY,
            &[
                ("impersonate-user", "admin"),
                ("impersonate-group", "system:masters"),
            ],
        )
        .await;
    assert_eq!(as_masters.status, 200, "{}", as_masters.body);
    // Not charged: a watch (long-running) and a write (its own limit).
    let watch = open_watch(&env).await;
    drop(watch);
    let created = client
        .post(
            &url,
            ADMIN_KEY,
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"in-flight"}}"#.to_vec(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    release_and_read_again(held, &gate, &client, &url).await;
}

/// Reads `url` as the admin and asserts the per-target rate limit of `target` refuses it.
async fn assert_rate_limited(client: &reqwest_like::Client, url: &str, target: &str) {
    let limited = client.get(url, ADMIN_KEY, &[]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let message = format!("too many requests to {target}, please try again later");
    assert!(limited.body.contains(&message), "{}", limited.body);
}

/// Lets the held list's body go, checks it arrives whole, then reads `url` until it is
/// served: its slot comes back once the body has gone out, and until then only the
/// in-flight limit may refuse.
async fn release_and_read_again(
    held: hyper::Response<hyper::body::Incoming>,
    gate: &kubegate_testkit::BodyGate,
    client: &reqwest_like::Client,
    url: &str,
) {
    gate.open();
    let body = held.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "the held list arrived whole");
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = client.get(url, ADMIN_KEY, &[]).await;
            if reply.status == 200 {
                return;
            }
            assert_eq!(
                reply.body, "Too many requests, please try again later.\n",
                "only the in-flight limit may refuse while the slot is coming back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "the slot never came back");
}

/// A request the in-flight limit refuses is not served, so it spends none of its target's
/// rate-limit tokens: with a burst of two and one slot held by the first, any number of
/// in-flight refusals leave the second token for the next request once the slot is free.
#[tokio::test(flavor = "multi_thread")]
async fn an_in_flight_refusal_spends_no_rate_limit_token() {
    let env = Env::start_with(
        "maxRequestsInFlight: 1\nrateLimits:\n  perTarget: {requestsPerSecond: 0.01, burst: 2}\n",
    )
    .await;
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let (held, gate) = open_held_list(&env).await;
    assert_eq!(held.status(), 200);
    let client = env.client();
    for attempt in 0..5 {
        let refused = client.get(&url, ADMIN_KEY, &[]).await;
        assert_eq!(refused.status, 429, "{}", refused.body);
        assert_eq!(
            refused.body, "Too many requests, please try again later.\n",
            "attempt {attempt}: refused by the in-flight limit, not the rate limit"
        );
    }
    // The second token is still there for the read once the slot is back.
    release_and_read_again(held, &gate, &client, &url).await;
    // Both tokens spent: the next request is rate-limited.
    assert_rate_limited(&client, &url, "cluster/a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_mid_watch_keeps_the_watch() {
    let env = Env::start().await;
    let mut res = open_watch(&env).await;
    let body = res.body_mut();
    let mut buf = Vec::new();
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "before"}}),
        )
        .unwrap();
    let event = next_event(body, &mut buf).await.unwrap();
    assert_eq!(event["object"]["metadata"]["name"], "before");
    let mut config = env.config.clone();
    config.read_only = true;
    env.gateway.reload(config).await.unwrap();
    // A bad config is refused and the running one stays.
    let mut bad = env.config.clone();
    bad.rbac.push(bad.rbac[0].clone());
    assert!(env.gateway.reload(bad).await.is_err());
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "after"}}),
        )
        .unwrap();
    let event = next_event(body, &mut buf).await.unwrap();
    assert_eq!(event["object"]["metadata"]["name"], "after");
    // The reloaded config is in force for new requests.
    let file = env.dir.join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blocked\n",
    )
    .unwrap();
    let out = env
        .kubectl(OPERATOR_KEY, A, &["create", "-f", file.to_str().unwrap()])
        .await;
    assert_forbidden(&out, "read-only");
}

/// A reload keeps the pooled upstream connections of the upstreams it leaves alone (the next
/// request to cluster `a` arrives over the connection the last one used) and replaces the
/// pool of an upstream whose settings it changes.
#[tokio::test(flavor = "multi_thread")]
async fn reload_keeps_the_connections_of_upstreams_it_leaves_alone() {
    let env = Env::start().await;
    let client = env.client();
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let peer_of_a_get = || async {
        let reply = client.get(&url, ADMIN_KEY, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let seen = env.a.requests();
        seen.iter()
            .rev()
            .find(|r| r.path.ends_with("/configmaps"))
            .map(|r| r.peer)
            .unwrap()
    };
    // A connection given back an instant before the next request may not be ready for it
    // yet (its exchange still ending on the connection's task), and the pool then dials
    // another: of three requests in a row, one is on the pooled connection all the same.
    let peers_of_three_gets = || async {
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(peer_of_a_get().await);
        }
        peers
    };
    let before = peer_of_a_get().await;
    assert!(
        peers_of_three_gets().await.contains(&before),
        "pooled: the same connection"
    );
    // Policy and cluster b change; cluster a's upstream does not.
    let mut config = env.config.clone();
    config.read_only = true;
    let b = config.clusters.iter_mut().find(|c| c.name == "b").unwrap();
    b.upstream.http2 = Some(false);
    env.gateway.reload(config.clone()).await.unwrap();
    assert!(
        peers_of_three_gets().await.contains(&before),
        "kept across the reload"
    );
    // Now cluster a's upstream changes: its next request dials a new connection.
    let a = config.clusters.iter_mut().find(|c| c.name == "a").unwrap();
    a.upstream.http2 = Some(false);
    env.gateway.reload(config).await.unwrap();
    assert!(
        !peers_of_three_gets().await.contains(&before),
        "a changed upstream gets a new pool"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_watches_cleanly() {
    let mut env = Env::start().await;
    let mut res = open_watch(&env).await;
    let mut buf = Vec::new();
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "one"}}),
        )
        .unwrap();
    assert!(next_event(res.body_mut(), &mut buf).await.is_some());
    env.shutdown();
    // The stream ends with a clean end of body (not an error), so clients re-watch.
    let end = next_event(res.body_mut(), &mut buf).await;
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_discovery_and_jwks() {
    let env = Env::start().await;
    let client = env.client();
    let doc = client
        .get(
            &format!("{}/oidc/.well-known/openid-configuration", env.url),
            "",
            &[],
        )
        .await;
    assert_eq!(doc.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    let issuer = doc["issuer"].as_str().unwrap();
    assert!(issuer.ends_with("/oidc"), "{issuer}");
    assert_eq!(doc["jwks_uri"], format!("{issuer}/openid/v1/jwks"));
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "ES256");
    let jwks = client
        .get(&format!("{}/oidc/openid/v1/jwks", env.url), "", &[])
        .await;
    let jwks: serde_json::Value = serde_json::from_str(&jwks.body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert!(key.get("d").is_none(), "never a private key");
    assert_eq!(
        client
            .get(&format!("{}/oidc/nope", env.url), "", &[])
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_is_proxied_with_authz_and_without_client_credentials() {
    let env = Env::start().await;
    let client = env.client();
    let url = format!("{}/grafana/b/api/health?x=1", env.url);
    let reply = client.get(&url, ADMIN_KEY, &[]).await;
    // The fake upstream standing in for Grafana answers 404 for an unknown path: what matters is
    // what reached it.
    assert_ne!(reply.status, 403, "{}", reply.body);
    let seen = env.a.requests();
    let hit = seen
        .iter()
        .find(|r| r.path == "/grafana-root/api/health")
        .expect("the request reached Grafana under its base path");
    assert_eq!(hit.query.as_deref(), Some("x=1"));
    let auth = hit.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(
        !auth.contains(ADMIN_KEY),
        "the client's credential never reaches Grafana"
    );
    assert_eq!(hit.headers.get("impersonate-user").unwrap(), "admin");
    // A key scoped to cluster a cannot reach cluster b's Grafana.
    let denied = client.get(&url, SCOPED_KEY, &[]).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        denied
            .body
            .contains("cannot get resource \\\"clusters/grafana\\\""),
        "{}",
        denied.body
    );
    assert_eq!(client.get(&url, "", &[]).await.status, 401);
    assert_eq!(
        client
            .get(&format!("{}/grafana/a/", env.url), ADMIN_KEY, &[])
            .await
            .status,
        404
    );
}

/// An upstream answers on the gateway's host, so a cookie it sets would be kept as the
/// gateway's: the gateway's session cookie never gets through (a tenant's cluster or Grafana
/// could otherwise log a browser in to the gateway as the tenant); other cookies do.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_cannot_set_the_gateways_session_cookie() {
    use kubegate_testkit::{Fault, FaultRule};
    let env = Env::start().await;
    let client = env.client();
    let plant = |path: &str, cookie: &str| {
        env.a.faults().inject(
            FaultRule::new(Fault::SetCookie(cookie.into()))
                .path_prefix(path)
                .times(1),
        );
    };
    let set_cookies = |reply: &reqwest_like::Reply| -> Vec<String> {
        reply
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let configmaps = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let grafana = format!("{}/grafana/b/api/health", env.url);
    for (url, upstream_path) in [
        (&configmaps, "/api/v1/namespaces/default/configmaps"),
        (&grafana, "/grafana-root/api/health"),
    ] {
        plant(
            upstream_path,
            "kubegate_session=planted.jwt.token; Path=/; HttpOnly",
        );
        let reply = client.get(url, ADMIN_KEY, &[]).await;
        assert_ne!(reply.status, 403, "{}", reply.body);
        assert_eq!(set_cookies(&reply), Vec::<String>::new(), "{url}");
        plant(upstream_path, "grafana_session=abc; Path=/");
        let reply = client.get(url, ADMIN_KEY, &[]).await;
        assert_eq!(
            set_cookies(&reply),
            ["grafana_session=abc; Path=/"],
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_bucket_is_charged_only_for_authorized_requests() {
    let env =
        Env::start_with("rateLimits:\n  perTarget: {requestsPerSecond: 0.01, burst: 2}\n").await;
    let client = env.client();
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    // A caller without access to cluster a, hammering it, and made-up targets.
    for _ in 0..10 {
        let refused = client.get(&url, SPACE_KEY, &[]).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        let unknown = format!("{}/kubernetes/cluster/nope/api/v1/pods", env.url);
        assert_ne!(client.get(&unknown, ADMIN_KEY, &[]).await.status, 429);
    }
    // Cluster a's bucket is untouched: its burst is still there for those allowed in.
    assert_eq!(client.get(&url, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(client.get(&url, VIEWER_KEY, &[]).await.status, 200);
    assert_rate_limited(&client, &url, "cluster/a").await;
    // The same for the management API: a key whose scope leaves it out is refused without
    // draining its bucket.
    let clusters = format!(
        "{}/kubernetes/management/apis/management.loft.sh/v1/clusters",
        env.url
    );
    for _ in 0..10 {
        let refused = client.get(&clusters, CLUSTER_ONLY_KEY, &[]).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }
    assert_eq!(client.get(&clusters, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(client.get(&clusters, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(client.get(&clusters, ADMIN_KEY, &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_front_proxy_headers_never_reach_an_upstream() {
    // Trusted from nowhere the test connects from: the headers are not believed, and must
    // not be passed on for an upstream to believe either.
    let env = Env::start_with(
        "frontProxy:\n  trustedCidrs: [10.0.0.0/8]\n  usernameHeaders: [X-Forwarded-User]\n  groupHeaders: [X-Forwarded-Groups]\n",
    )
    .await;
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let headers = [
        ("x-forwarded-user", "admin"),
        ("x-forwarded-groups", "system:masters"),
        ("x-other", "kept"),
    ];
    let reply = env.client().get(&url, VIEWER_KEY, &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let hit = env.a.last_request_to("/configmaps").unwrap();
    assert_eq!(hit.effective_user().unwrap().name, "viewer");
    assert!(
        hit.headers.get("x-forwarded-user").is_none(),
        "{:?}",
        hit.headers
    );
    assert!(hit.headers.get("x-forwarded-groups").is_none());
    assert_eq!(hit.headers.get("x-other").unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn front_proxy_headers_only_from_trusted_networks() {
    let url_of = |env: &Env| format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let headers = [("x-remote-user", "viewer"), ("x-remote-group", "devs")];
    let trusted = Env::start_with("frontProxy:\n  trustedCidrs: [127.0.0.0/8]\n").await;
    let reply = trusted.client().get(&url_of(&trusted), "", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let hit = trusted.a.last_request_to("/configmaps").unwrap();
    assert_eq!(hit.effective_user().unwrap().name, "viewer");
    assert!(
        hit.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-remote-"))
    );
    // A front proxy's callers are browsers too (an SSO proxy's cookie): an upstream document
    // reaches them sandboxed, an API answer as it was (bar `nosniff`).
    assert!(reply.headers.get("content-security-policy").is_none());
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    trusted.a.faults().inject(kubegate_testkit::FaultRule::new(
        kubegate_testkit::Fault::Document {
            content_types: vec!["text/html".into()],
            body: "<script>alert(1)</script>".into(),
        },
    ));
    let page = trusted.client().get(&url_of(&trusted), "", &headers).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["content-security-policy"], "sandbox");
    let untrusted = Env::start_with("frontProxy:\n  trustedCidrs: [10.0.0.0/8]\n").await;
    let reply = untrusted
        .client()
        .get(&url_of(&untrusted), "", &headers)
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn front_proxy_headers_only_from_a_client_certificate_of_the_configured_ca() {
    use kubegate_testkit::UserInfo;
    // Upstream `a`'s throwaway CA plays the front proxy's CA; `b`'s is a foreign one.
    let env = Env::start_with_fn(|a, dir| {
        let ca = dir.join("front-proxy-ca.pem");
        std::fs::write(&ca, a.ca_pem()).unwrap();
        format!(
            "frontProxy:\n  clientCaFile: {}\n  allowedNames: [front-proxy]\n",
            ca.display()
        )
    })
    .await;
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let headers = [("x-remote-user", "viewer"), ("x-remote-group", "devs")];
    let proxy_cert = env
        .a
        .mint_client_cert(UserInfo::new("front-proxy"))
        .unwrap();
    let proxy = common::reqwest_like::Client::with_identity(&env.ca_pem, &proxy_cert);
    let reply = proxy.get(&url, "", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let hit = env
        .a
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/configmaps"))
        .unwrap();
    assert_eq!(hit.effective_user().unwrap().name, "viewer");

    // Same CA, a common name that is not allowed: the headers are not believed.
    let other_cert = env
        .a
        .mint_client_cert(UserInfo::new("someone-else"))
        .unwrap();
    let other = common::reqwest_like::Client::with_identity(&env.ca_pem, &other_cert);
    assert_eq!(other.get(&url, "", &headers).await.status, 401);
    // No certificate: not believed either, but token clients (kubectl) connect as before.
    let plain = env.client();
    assert_eq!(plain.get(&url, "", &headers).await.status, 401);
    assert_eq!(plain.get(&url, ADMIN_KEY, &[]).await.status, 200);
    assert_ok(&env.kubectl(ADMIN_KEY, A, &["get", "configmaps"]).await);
    // A certificate from another CA fails the handshake: no response at all.
    let foreign_cert = env
        .b
        .mint_client_cert(UserInfo::new("front-proxy"))
        .unwrap();
    let foreign = common::reqwest_like::Client::with_identity(&env.ca_pem, &foreign_cert);
    let req = http::Request::get(&url)
        .header("x-remote-user", "viewer")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(foreign.try_send(req).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_rebuilds_authenticators_and_tls_and_refuses_restart_only_changes() {
    use kubegate_gateway::config::FrontProxyConfig;
    use kubegate_testkit::UserInfo;
    let env = Env::start().await;
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let headers = [("x-remote-user", "viewer"), ("x-remote-group", "devs")];
    assert_eq!(env.client().get(&url, "", &headers).await.status, 401);

    // A front proxy trusted by network, added by reload: believed on the next request.
    let mut config = env.config.clone();
    config.front_proxy = Some(FrontProxyConfig {
        trusted_cidrs: vec!["127.0.0.0/8".into()],
        client_ca_file: None,
        allowed_names: vec![],
        username_headers: vec![],
        group_headers: vec![],
    });
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(env.client().get(&url, "", &headers).await.status, 200);

    // Now by client certificate: the new CA reaches new connections' TLS settings.
    let ca = env.dir.join("reloaded-ca.pem");
    std::fs::write(&ca, env.a.ca_pem()).unwrap();
    if let Some(front) = config.front_proxy.as_mut() {
        front.client_ca_file = Some(ca);
    }
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(env.client().get(&url, "", &headers).await.status, 401);
    let cert = env
        .a
        .mint_client_cert(UserInfo::new("front-proxy"))
        .unwrap();
    let proxy = common::reqwest_like::Client::with_identity(&env.ca_pem, &cert);
    assert_eq!(proxy.get(&url, "", &headers).await.status, 200);

    // Changes only a restart can apply are refused, and the running configuration stays.
    let mut agent = config.clone();
    agent.mode = kubegate_gateway::config::Mode::Agent;
    let err = env.gateway.reload(agent).await.unwrap_err().to_string();
    assert!(err.contains("`mode` changes only with a restart"), "{err}");
    let mut moved = config.clone();
    moved.listen = "127.0.0.1:1".parse().unwrap();
    assert!(env.gateway.reload(moved).await.is_err());
    // The minter's and verifier's settings: refused, not silently kept.
    let mut issuer = config.clone();
    issuer.issuer = Some("https://elsewhere.example/oidc".into());
    let err = env.gateway.reload(issuer).await.unwrap_err().to_string();
    assert!(
        err.contains("`issuer` changes only with a restart"),
        "{err}"
    );
    let mut ttl = config.clone();
    ttl.max_token_ttl_seconds += 1;
    let err = env.gateway.reload(ttl).await.unwrap_err().to_string();
    assert!(err.contains("`maxTokenTtlSeconds` changes only"), "{err}");
    let mut keys = config.clone();
    keys.signing_keys.push(env.dir.join("another-key.pem"));
    let err = env.gateway.reload(keys).await.unwrap_err().to_string();
    assert!(err.contains("`signingKeys` changes only"), "{err}");
    // The audit log and the connection limit are set up once, at start.
    let mut audit = config.clone();
    audit.audit.path = Some(env.dir.join("elsewhere.log"));
    let err = env.gateway.reload(audit).await.unwrap_err().to_string();
    assert!(err.contains("`audit.path` changes only"), "{err}");
    let mut bodies = config.clone();
    bodies.audit.max_recorded_body_bytes = Some(1);
    let err = env.gateway.reload(bodies).await.unwrap_err().to_string();
    assert!(
        err.contains("`audit.maxRecordedBodyBytes` changes only"),
        "{err}"
    );
    let mut connections = config.clone();
    connections.max_connections += 1;
    let err = env
        .gateway
        .reload(connections)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`maxConnections` changes only"), "{err}");
    // Compared as applied: a default written out is no change.
    let mut spelled_out = config.clone();
    spelled_out.audit.max_files = Some(
        spelled_out
            .audit
            .max_files
            .unwrap_or(kubegate_gateway::audit::DEFAULT_MAX_FILES),
    );
    env.gateway.reload(spelled_out).await.unwrap();
    // The audit level still reloads.
    let mut level = config.clone();
    level.audit.level = kubegate_proxy::AuditLevel::Request;
    env.gateway.reload(level).await.unwrap();
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(proxy.get(&url, "", &headers).await.status, 200);

    // The client CA replaced by a reload: the proxy's open connection, whose handshake the old
    // CA passed, is believed no longer (its certificate is checked against the current CA on
    // its requests, as kube-apiserver checks it). A bundle still holding the old CA, as a
    // rotation has for a while, keeps it believed. (A new connection with that certificate
    // would fail the handshake; this client reuses its open one.)
    let both = env.dir.join("rotating-ca.pem");
    std::fs::write(&both, format!("{}{}", env.b.ca_pem(), env.a.ca_pem())).unwrap();
    if let Some(front) = config.front_proxy.as_mut() {
        front.client_ca_file = Some(both);
    }
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(proxy.get(&url, "", &headers).await.status, 200);
    let replaced = env.dir.join("replaced-ca.pem");
    std::fs::write(&replaced, env.b.ca_pem()).unwrap();
    if let Some(front) = config.front_proxy.as_mut() {
        front.client_ca_file = Some(replaced);
    }
    env.gateway.reload(config.clone()).await.unwrap();
    let refused = proxy.get(&url, "", &headers).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    // The same file rewritten in place (a Secret volume's update), the configuration
    // unchanged: the reload reads the CA of the moment all the same.
    std::fs::write(env.dir.join("replaced-ca.pem"), env.a.ca_pem()).unwrap();
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(proxy.get(&url, "", &headers).await.status, 200);

    // A self-signed serving pair that went missing is not made anew by a reload (it would
    // change the gateway's identity under every kubeconfig trusting the old one): the reload
    // is refused and the running certificate stays.
    let serving = env.gateway.serving_cert().clone();
    assert!(serving.self_signed, "the test gateway serves its own pair");
    let before = std::fs::read(&serving.cert_file).unwrap();
    let key = std::fs::read(&serving.key_file).unwrap();
    std::fs::remove_file(&serving.key_file).unwrap();
    assert!(env.gateway.reload(config.clone()).await.is_err());
    assert!(!serving.key_file.exists(), "no new key was made");
    assert_eq!(std::fs::read(&serving.cert_file).unwrap(), before);
    std::fs::write(&serving.key_file, key).unwrap();
    env.gateway.reload(config.clone()).await.unwrap();
}

#[test]
fn front_proxy_config_needs_a_way_to_recognise_the_proxy() {
    let err = kubegate_gateway::Config::parse(
        "listen: 127.0.0.1:0\nstateDir: /tmp/x\nfrontProxy:\n  usernameHeaders: [X-User]\n",
        std::path::Path::new("c.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("frontProxy"), "{err}");
    let err = kubegate_gateway::Config::parse(
        "listen: 127.0.0.1:0\nstateDir: /tmp/x\nfrontProxy:\n  trustedCidrs: [10.0.0.0/8]\n  allowedNames: [p]\n",
        std::path::Path::new("c.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("frontProxy.allowedNames"), "{err}");
}

#[test]
fn limits_that_would_break_the_gateway_are_refused_at_load() {
    #[rustfmt::skip]
    let cases = [
        ("auth:\n  maxLoginFailures: 0\n", "auth.maxLoginFailures: must be greater than 0"),
        ("auth:\n  loginWindowSeconds: 0\n", "auth.loginWindowSeconds: must be greater than 0"),
        ("audit:\n  sink: file\n  path: /tmp/a.log\n  maxFiles: 1001\n", "audit.maxFiles: must be at most 1000"),
        ("rateLimits:\n  perIdentity: {requestsPerSecond: 0, burst: 5}\n", "rateLimits.perIdentity.requestsPerSecond: must be a number greater than 0, not 0"),
        ("rateLimits:\n  perTarget: {requestsPerSecond: -1, burst: 5}\n", "rateLimits.perTarget.requestsPerSecond: must be a number greater than 0, not -1"),
        // A token forwarded to an upstream must be good for that upstream alone.
        ("clusters:\n  - name: a\n    upstream: {server: \"https://a\", identityMode: oidc, oidcAudience: kubegate}\n",
         "clusters[0].upstream.oidcAudience: \"kubegate\" cannot be an upstream's audience"),
        ("clusters:\n  - name: a\n    upstream: {server: \"https://a\", identityMode: oidc}\n  - name: b\n    upstream: {server: \"https://b\", identityMode: oidc, oidcAudience: kubegate/cluster/a}\n",
         "clusters[1].upstream.oidcAudience: \"kubegate/cluster/a\" is already another upstream's audience"),
    ];
    for (extra, expected) in cases {
        let yaml = format!("listen: 127.0.0.1:0\nstateDir: /tmp/x\n{extra}");
        let err = kubegate_gateway::Config::parse(&yaml, std::path::Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    let fine = "listen: 127.0.0.1:0\nstateDir: /tmp/x\nauth:\n  maxLoginFailures: 1\naudit:\n  sink: file\n  path: /tmp/a.log\n  maxFiles: 1000\n";
    kubegate_gateway::Config::parse(fine, std::path::Path::new("c.yaml")).unwrap();
    // The same audience on an upstream that does not forward tokens is no conflict.
    let fine = "listen: 127.0.0.1:0\nstateDir: /tmp/x\nclusters:\n  - name: a\n    upstream: {server: \"https://a\", identityMode: oidc}\n  - name: b\n    upstream: {server: \"https://b\", oidcAudience: kubegate/cluster/a}\n";
    kubegate_gateway::Config::parse(fine, std::path::Path::new("c.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_redirects_elsewhere_never_reach_clients() {
    use kubegate_testkit::{Fault, FaultRule};
    let env = Env::start().await;
    // A tenant's virtual cluster (upstream b) tries to send kubectl elsewhere.
    env.b.faults().inject(FaultRule::new(Fault::Redirect {
        code: 302,
        location: "https://evil.example.com/api".into(),
    }));
    let reply = env
        .client()
        .get(
            &format!(
                "{}{LEGACY_VC}/api/v1/namespaces/default/configmaps",
                env.url
            ),
            ADMIN_KEY,
            &[],
        )
        .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(
        reply.body,
        "the backend attempted to redirect this request, which is not permitted"
    );
    assert!(reply.headers.get("location").is_none());
    let out = env
        .kubectl(ADMIN_KEY, LEGACY_VC, &["get", "configmaps"])
        .await;
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("evil.example.com"),
        "{}",
        stderr(&out)
    );
    // A redirect to the upstream itself, as kube-apiserver's service proxy sends one, is
    // passed on with its Location under the target's prefix, so kubectl follows it to the
    // same virtual cluster through the gateway.
    env.b.faults().clear();
    env.b.faults().inject(
        FaultRule::new(Fault::Redirect {
            code: 302,
            location: "/api/v1/namespaces/default/services/web:80/proxy/login".into(),
        })
        .path_prefix("/api/v1/namespaces/default/services/web:80/proxy/"),
    );
    let reply = env
        .client()
        .get(
            &format!(
                "{}{LEGACY_VC}/api/v1/namespaces/default/services/web:80/proxy/",
                env.url
            ),
            ADMIN_KEY,
            &[],
        )
        .await;
    assert_eq!(reply.status, 302, "{}", reply.body);
    assert_eq!(
        reply.headers["location"],
        format!("{LEGACY_VC}/api/v1/namespaces/default/services/web:80/proxy/login")
    );
    // Grafana (served from upstream a's /grafana-root) redirects by design: passed on.
    env.a.faults().inject(
        FaultRule::new(Fault::Redirect {
            code: 302,
            location: "/grafana/b/login".into(),
        })
        .path_prefix("/grafana-root"),
    );
    let reply = env
        .client()
        .get(&format!("{}/grafana/b/", env.url), ADMIN_KEY, &[])
        .await;
    assert_eq!(reply.status, 302, "{}", reply.body);
    assert_eq!(reply.headers["location"], "/grafana/b/login");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_protocol_follows_the_http2_settings() {
    let env = Env::start().await;
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let last_version = |env: &Env| {
        env.a
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with("/configmaps"))
            .map(|r| r.version)
    };
    // By default h2 is offered, and a short request takes a pooled HTTP/1.1 connection.
    assert_eq!(env.client().get(&url, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(last_version(&env), Some(http::Version::HTTP_11));
    // With no HTTP/1.1 connections for short requests, every request goes over h2.
    let mut config = env.config.clone();
    config.clusters[0]
        .upstream
        .http1_connections_for_short_requests = Some(0);
    env.gateway.reload(config.clone()).await.unwrap();
    assert_eq!(env.client().get(&url, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(last_version(&env), Some(http::Version::HTTP_2));
    // Without h2, HTTP/1.1.
    config.clusters[0].upstream.http2 = Some(false);
    env.gateway.reload(config).await.unwrap();
    assert_eq!(env.client().get(&url, ADMIN_KEY, &[]).await.status, 200);
    assert_eq!(last_version(&env), Some(http::Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_mode_oidc_forwards_a_token_for_that_upstream_alone() {
    let env = Env::start().await;
    let url = format!(
        "{}/kubernetes/virtualcluster/a/team/vc-oidc/api/v1/namespaces/default/pods",
        env.url
    );
    let _ = env
        .client()
        .get(&url, VIEWER_KEY, &[("impersonate-user", "x")])
        .await;
    let _ = env.client().get(&url, VIEWER_KEY, &[]).await;
    let hit = env
        .b
        .last_request_to("/pods")
        .expect("the request reached the upstream");
    assert!(hit.headers.get("impersonate-user").is_none());
    let auth = hit.headers.get("authorization").unwrap().to_str().unwrap();
    let token = auth.strip_prefix("Bearer ").unwrap();
    assert_ne!(token, VIEWER_KEY);
    let shared = env.gateway.shared();
    let verifier = |audience: &str| {
        kubegate_tokens::Verifier::new(
            std::sync::Arc::clone(&shared.keys),
            shared.issuer.clone(),
            audience,
        )
    };
    // For this upstream alone: not for the gateway's own audience.
    let claims = verifier("kubegate/virtualcluster/a/team/vc-oidc")
        .verify(token, kubegate_tokens::unix_now(), |_| Some(0))
        .unwrap();
    assert_eq!(
        verifier(kubegate_gateway::TOKEN_AUDIENCE)
            .verify(token, kubegate_tokens::unix_now(), |_| Some(0))
            .unwrap_err(),
        kubegate_tokens::Error::WrongAudience
    );
    // Whoever reads the upstream's requests cannot replay the token at the gateway, where it
    // would carry none of the caller's access-key scope.
    for path in [
        "/kubernetes/cluster/a/api/v1/namespaces/default/configmaps",
        "/kubernetes/management/apis/management.loft.sh/v1/clusters",
    ] {
        let replay = env
            .client()
            .get(&format!("{}{path}", env.url), token, &[])
            .await;
        assert_eq!(replay.status, 401, "{path}: {}", replay.body);
    }
    assert_eq!(claims.sub, "viewer");
    assert!(
        claims.groups.contains(&"devs".to_owned()),
        "{:?}",
        claims.groups
    );
    assert!(claims.exp - claims.iat <= 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_revoked_credentials_and_oversized_headers() {
    let env = Env::start().await;
    let client = env.client();
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let shared = env.gateway.shared();
    let request = kubegate_tokens::MintRequest {
        subject: "admin".into(),
        groups: vec![],
        uid: "admin".into(),
        name: "admin".into(),
        kind: kubegate_tokens::SubjectKind::User,
        generation: 0,
        scope: None,
        ttl: Some(Duration::from_secs(60)),
        parent: None,
        login: false,
    };
    // Minted two hours ago with a one-minute lifetime: expired beyond the leeway.
    let expired = shared
        .minter
        .mint(&request, kubegate_tokens::unix_now() - 7200)
        .unwrap();
    let reply = client.get(&url, expired.token(), &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    // A valid token works until its jti is revoked.
    let valid = shared
        .minter
        .mint(&request, kubegate_tokens::unix_now())
        .unwrap();
    assert_eq!(client.get(&url, valid.token(), &[]).await.status, 200);
    let verifier = std::sync::Arc::clone(shared.runtime.load().credentials.verifier());
    verifier.revocations().revoke(
        valid.jti.clone(),
        valid.expires_at,
        kubegate_tokens::unix_now(),
    );
    assert_eq!(client.get(&url, valid.token(), &[]).await.status, 401);
    // A request head beyond the limit is refused before it is parsed further.
    let huge = "x".repeat(2 * 1024 * 1024);
    let req = http::Request::get(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("x-padding", huge)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let status = client.try_send(req).await;
    assert!(
        status.is_none_or(|code| code == 431),
        "an oversized head must not be served: {status:?}"
    );
    // The gateway still serves afterwards.
    assert_eq!(client.get(&url, ADMIN_KEY, &[]).await.status, 200);
}

/// A TLS connection to the gateway, handshake included, or `None` if it did not complete
/// within `wait`.
async fn tls_connect(
    env: &Env,
    wait: Duration,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let addr = env.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::timeout(wait, tls_handshake(&env.ca_pem, tcp))
        .await
        .ok()
}

/// The TLS handshake with the gateway (its serving certificate signed by `ca_pem`) over
/// `tcp`.
async fn tls_handshake(
    ca_pem: &[u8],
    tcp: tokio::net::TcpStream,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_holds_new_connections_until_one_closes() {
    let env = Env::start_with("maxConnections: 2\n").await;
    let first = tls_connect(&env, Duration::from_secs(10)).await.unwrap();
    let _second = tls_connect(&env, Duration::from_secs(10)).await.unwrap();
    // The third is not accepted (the kernel queues it) while two are open, and is served as
    // soon as one closes.
    served_only_once_dropped(&env, first).await;
}

/// Opens a new connection and starts a `/healthz` request on it, checks it is not served while
/// `held` (an open connection or session) is kept, then drops `held` and checks it is served.
async fn served_only_once_dropped<T>(env: &Env, held: T) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Connected here, so the connection is in the gateway's listen queue before the wait
    // below starts: what the wait covers is the gateway's own reaction to the ClientHello the
    // task sends at once, not the client's set-up.
    let addr = env.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let waiting = tokio::spawn({
        let ca_pem = env.ca_pem.clone();
        async move {
            let mut tls = tls_handshake(&ca_pem, tcp).await;
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = Vec::new();
            tls.read_to_end(&mut response).await.unwrap();
            String::from_utf8_lossy(&response).into_owned()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "another connection was served at {}",
        env.url
    );
    drop(held);
    let response = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("served once a place was free")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

/// An exec session is an open connection too: once hyper hands its socket to the session,
/// the session keeps the connection's place under `maxConnections` until it ends.
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_session_keeps_its_connections_place_until_it_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start_with("maxConnections: 1\n").await;
    env.a
        .create(
            "pods",
            "default",
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
    let mut exec = tls_connect(&env, Duration::from_secs(10)).await.unwrap();
    exec.write_all(
        format!(
            "GET {A}/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
             Host: gateway\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), exec.read(&mut buf))
            .await
            .expect("the upgrade was answered")
            .unwrap();
        assert_ne!(n, 0, "{}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The session is all that is open: another client waits until it ends.
    served_only_once_dropped(&env, exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_through_one_replica_reaches_another_sharing_the_store() {
    use kubegate_gateway::store::Revocation;
    let env = Env::start().await;
    let store: std::sync::Arc<dyn kubegate_gateway::Store> =
        std::sync::Arc::new(kubegate_gateway::FileStore::open(&env.dir.join("replicas")).unwrap());
    let one = kubegate_gateway::Gateway::with_store(env.config.clone(), store.clone())
        .await
        .unwrap();
    let two = kubegate_gateway::Gateway::with_store(env.config.clone(), store)
        .await
        .unwrap();
    let revoked = |g: &kubegate_gateway::Gateway| {
        g.shared()
            .runtime
            .load()
            .credentials
            .verifier()
            .revocations()
            .is_revoked("jti-1")
    };
    assert!(!revoked(&two));
    let now = kubegate_tokens::unix_now() as i64;
    one.shared()
        .store
        .revoke(
            Revocation {
                jti: "jti-1".into(),
                expires_at: now + 600,
                user: "admin".into(),
            },
            now,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !revoked(&two) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the other replica learned of the revocation");
}

// ---------------------------------------------------------------------------------------------
// Runtime rebuilds (a reload, a refresh of API-created state) one at a time: the interleavings
// are forced with a store whose snapshot waits at a gate, polling the futures by hand.

mod rebuilds {
    use std::future::Future;
    use std::path::Path;
    use std::pin::{Pin, pin};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;

    use futures_util::future::BoxFuture;
    use kubegate_gateway::store::{Revocation, State, StoredAccessKey};
    use kubegate_gateway::{Config, FileStore, Gateway, Store, StoreError};
    use tokio::sync::watch;

    const KEY: &str = "kgak_rebuild_test_key_0000000000000000000000000";

    /// A file store whose next snapshot, once armed, reads the state and then waits at a gate
    /// until released, so the test can change the state while a rebuild holds the older
    /// snapshot. It never announces changes, so the gateway's store watcher stays out of it.
    #[derive(Debug)]
    struct GatedStore {
        inner: FileStore,
        armed: AtomicBool,
        /// Once armed, the next key creation waits at the gate, in a task of its own: like
        /// the file store's, a write handed over lands whether or not its caller still waits.
        create_armed: AtomicBool,
        reached: watch::Sender<bool>,
        released: watch::Sender<bool>,
        silent: watch::Sender<u64>,
    }

    impl GatedStore {
        /// A gated file store in `dir` (`state.json` there, if any, is its state).
        fn open(dir: &Path) -> Arc<GatedStore> {
            Arc::new(GatedStore {
                inner: FileStore::open(dir).unwrap(),
                armed: AtomicBool::new(false),
                create_armed: AtomicBool::new(false),
                reached: watch::channel(false).0,
                released: watch::channel(false).0,
                silent: watch::channel(0).0,
            })
        }

        fn arm(&self) {
            self.reached.send_replace(false);
            self.released.send_replace(false);
            self.armed.store(true, Ordering::SeqCst);
        }

        fn arm_create(&self) {
            self.reached.send_replace(false);
            self.released.send_replace(false);
            self.create_armed.store(true, Ordering::SeqCst);
        }

        fn reached(&self) -> bool {
            *self.reached.borrow()
        }

        fn release(&self) {
            self.released.send_replace(true);
        }
    }

    impl Store for GatedStore {
        fn snapshot(&self) -> BoxFuture<'_, Result<Arc<State>, StoreError>> {
            Box::pin(async move {
                let state = self.inner.snapshot().await?;
                if self.armed.swap(false, Ordering::SeqCst) {
                    self.reached.send_replace(true);
                    let mut released = self.released.subscribe();
                    let _ = released.wait_for(|r| *r).await;
                }
                Ok(state)
            })
        }
        fn create_access_key(&self, key: StoredAccessKey) -> BoxFuture<'_, Result<(), StoreError>> {
            if !self.create_armed.swap(false, Ordering::SeqCst) {
                return self.inner.create_access_key(key);
            }
            self.reached.send_replace(true);
            let inner = self.inner.clone();
            let mut released = self.released.subscribe();
            let write = tokio::spawn(async move {
                let _ = released.wait_for(|r| *r).await;
                inner.create_access_key(key).await
            });
            Box::pin(async move { write.await.expect("the gated write ran") })
        }
        fn delete_access_key<'a>(
            &'a self,
            name: &'a str,
            uid: Option<&'a str>,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.inner.delete_access_key(name, uid)
        }
        fn revoke(
            &self,
            revocation: Revocation,
            now: i64,
        ) -> BoxFuture<'_, Result<kubegate_gateway::store::Revoked, StoreError>> {
            self.inner.revoke(revocation, now)
        }
        fn bump_token_generation<'a>(
            &'a self,
            user: &'a str,
        ) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.inner.bump_token_generation(user)
        }
        fn subscribe(&self) -> watch::Receiver<u64> {
            self.silent.subscribe()
        }
    }

    struct Setup {
        gateway: Gateway,
        store: Arc<GatedStore>,
        /// The same configuration plus user `bob`.
        reloaded: Config,
        dir: std::path::PathBuf,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A gateway whose store holds a key of alice's.
    async fn setup() -> Setup {
        let (config, reloaded, store, dir) = parts().await;
        let gateway = Gateway::with_store(config, Arc::clone(&store) as Arc<dyn Store>)
            .await
            .unwrap();
        assert!(key_works(&gateway));
        Setup {
            gateway,
            store,
            reloaded,
            dir,
        }
    }

    /// The configuration, the same plus user `bob`, a store holding a key of alice's, and
    /// the directory to remove.
    async fn parts() -> (Config, Config, Arc<GatedStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("kubegate-rebuilds-{}", uuid::Uuid::new_v4()));
        let yaml = |users: &str| {
            format!(
                "listen: 127.0.0.1:0\nstateDir: {}\nusers: [{users}]\n",
                dir.display()
            )
        };
        let config = Config::parse(&yaml("{name: alice}"), Path::new("c.yaml")).unwrap();
        let reloaded =
            Config::parse(&yaml("{name: alice}, {name: bob}"), Path::new("c.yaml")).unwrap();
        let store = GatedStore::open(&dir.join("state"));
        store
            .create_access_key(user_key("alices-key", "alice", KEY, "uid-1"))
            .await
            .unwrap();
        (config, reloaded, store, dir)
    }

    /// A key named `name` of `user` (whose UID is their name), for the key `secret`.
    fn user_key(name: &str, user: &str, secret: &str, uid: &str) -> StoredAccessKey {
        StoredAccessKey {
            name: name.into(),
            user: user.into(),
            user_uid: Some(user.into()),
            sha256: super::common::sha(secret),
            key_type: "User".into(),
            display_name: None,
            description: None,
            scope: None,
            created_at: kubegate_tokens::unix_now() as i64,
            expires_at: None,
            disabled: false,
            parent: None,
            uid: uid.into(),
        }
    }

    /// Serves `gateway` on a port of its own: the URL of its `ownedaccesskeys` and the CA
    /// that signed its serving certificate.
    async fn serve(gateway: &Gateway) -> (String, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://{}/kubernetes/management/apis/management.loft.sh/v1/ownedaccesskeys",
            listener.local_addr().unwrap()
        );
        let ca_pem = std::fs::read(&gateway.serving_cert().cert_file).unwrap();
        let serving = gateway.clone();
        tokio::spawn(async move {
            serving
                .serve(
                    listener,
                    kubegate_gateway::ServerLimits::default(),
                    std::future::pending(),
                )
                .await;
        });
        (url, ca_pem)
    }

    /// Waits until a request armed `store`'s gate.
    async fn until_reached(store: &GatedStore, what: &str) {
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while !store.reached() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    /// A DELETE takes only the key its caller looked at. Alice deletes her key; her request
    /// reads her keys and stops at the store's gate. Meanwhile the key is deleted and bob's is
    /// made under the same name. Alice gets 404, as if hers had gone first, and bob's stays.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_delete_takes_only_the_key_its_caller_looked_at() {
        let s = setup().await;
        let (url, ca_pem) = serve(&s.gateway).await;
        s.store.arm();
        let deleting = tokio::spawn(async move {
            let req = http::Request::delete(format!("{url}/alices-key"))
                .header("authorization", format!("Bearer {KEY}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            super::common::reqwest_like::Client::new(&ca_pem)
                .send(req)
                .await
                .status
        });
        until_reached(&s.store, "alice's delete read her keys").await;
        assert!(s.store.delete_access_key("alices-key", None).await.unwrap());
        s.store
            .create_access_key(user_key("alices-key", "bob", "bobs-secret", "uid-2"))
            .await
            .unwrap();
        s.store.release();
        assert_eq!(deleting.await.unwrap(), 404);
        let stored = s.store.snapshot().await.unwrap();
        assert_eq!(
            stored.access_keys["alices-key"].user, "bob",
            "bob's key stays"
        );
    }

    fn key_works(gateway: &Gateway) -> bool {
        let runtime = gateway.shared().runtime.load();
        runtime
            .credentials
            .authenticate(KEY, &runtime.directory, kubegate_tokens::unix_now())
            .is_ok()
    }

    fn has_bob(gateway: &Gateway) -> bool {
        let runtime = gateway.shared().runtime.load();
        runtime.config.users.iter().any(|u| u.name == "bob")
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }

    /// A refresh of the state it applied last rebuilds nothing (a change is otherwise applied
    /// twice: by the request that made it and by the store watcher); a changed state is
    /// applied.
    #[tokio::test]
    async fn a_refresh_of_the_state_applied_rebuilds_nothing() {
        let s = setup().await;
        let shared = s.gateway.shared();
        shared.refresh_state().await.unwrap();
        let once = shared.runtime.load_full();
        shared.refresh_state().await.unwrap();
        assert!(Arc::ptr_eq(&once, &shared.runtime.load_full()));
        assert!(s.store.delete_access_key("alices-key", None).await.unwrap());
        shared.refresh_state().await.unwrap();
        assert!(!key_works(&s.gateway), "the deletion was applied");
    }

    #[tokio::test]
    async fn a_key_deleted_while_a_reload_builds_stays_deleted() {
        let s = setup().await;
        s.store.arm();
        let mut reload = pin!(s.gateway.reload(s.reloaded.clone()));
        assert!(poll_once(&mut reload).await.is_pending());
        assert!(
            s.store.reached(),
            "the reload holds a snapshot with the key"
        );
        assert!(s.store.delete_access_key("alices-key", None).await.unwrap());
        // What the management API does after deleting a key.
        let mut refresh = pin!(s.gateway.shared().refresh_state());
        let refreshed = poll_once(&mut refresh).await;
        s.store.release();
        reload.await.unwrap();
        match refreshed {
            Poll::Ready(done) => done.unwrap(),
            Poll::Pending => refresh.await.unwrap(),
        }
        assert!(has_bob(&s.gateway), "the reload was undone");
        assert!(!key_works(&s.gateway), "the deleted key came back");
    }

    #[tokio::test]
    async fn a_reload_waits_for_a_state_refresh_and_builds_on_it() {
        let s = setup().await;
        assert!(s.store.delete_access_key("alices-key", None).await.unwrap());
        s.store.arm();
        let mut refresh = pin!(s.gateway.shared().refresh_state());
        assert!(poll_once(&mut refresh).await.is_pending());
        assert!(s.store.reached(), "the refresh holds its snapshot");
        // A refresh that read the runtime before the reload stored its own and stored after
        // it would undo the reload: the reload must wait for the refresh to finish.
        let mut reload = pin!(s.gateway.reload(s.reloaded.clone()));
        let reloaded = poll_once(&mut reload).await;
        assert!(
            reloaded.is_pending(),
            "a reload ran while a state refresh was rebuilding the runtime"
        );
        s.store.release();
        refresh.await.unwrap();
        reload.await.unwrap();
        assert!(has_bob(&s.gateway), "the reload was undone");
        assert!(!key_works(&s.gateway), "the deleted key came back");
    }

    /// A change the store announces while the gateway is starting (after its first snapshot
    /// was read) reaches the gateway: its watcher subscribed before that snapshot.
    #[tokio::test]
    async fn a_change_made_while_the_gateway_starts_is_not_missed() {
        let (config, _, store, dir) = parts().await;
        store.arm();
        let mut starting = pin!(Gateway::with_store(
            config,
            Arc::clone(&store) as Arc<dyn Store>
        ));
        assert!(poll_once(&mut starting).await.is_pending());
        assert!(store.reached(), "the gateway holds its first snapshot");
        assert!(store.delete_access_key("alices-key", None).await.unwrap());
        store.silent.send_modify(|n| *n += 1);
        store.release();
        let gateway = starting.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while key_works(&gateway) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the deleted key stopped working");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A served gateway whose alice is one key short of the per-user limit (1,000), its gated
    /// store, a way to make alice's keys (answering the status), and the directory to remove.
    async fn one_key_short_of_the_limit() -> (
        Arc<GatedStore>,
        impl Fn(&'static str) -> tokio::task::JoinHandle<u16>,
        Gateway,
        std::path::PathBuf,
    ) {
        let dir = std::env::temp_dir().join(format!("kubegate-limit-{}", uuid::Uuid::new_v4()));
        let now = kubegate_tokens::unix_now() as i64;
        let key = |name: String, sha256: String| StoredAccessKey {
            name,
            user: "alice".into(),
            user_uid: None,
            sha256,
            key_type: "User".into(),
            display_name: None,
            description: None,
            scope: None,
            created_at: now,
            expires_at: None,
            disabled: false,
            parent: None,
            uid: uuid::Uuid::new_v4().to_string(),
        };
        let mut state = State::default();
        for i in 0..998 {
            let name = format!("filler-{i}");
            state
                .access_keys
                .insert(name.clone(), key(name, format!("{i:064}")));
        }
        state.access_keys.insert(
            "alices-key".into(),
            key("alices-key".into(), super::common::sha(KEY)),
        );
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(
            dir.join("state/state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let store = GatedStore::open(&dir.join("state"));
        let yaml = format!(
            "listen: 127.0.0.1:0\nstateDir: {}\nusers: [{{name: alice}}]\n",
            dir.display()
        );
        let config = Config::parse(&yaml, Path::new("c.yaml")).unwrap();
        let gateway = Gateway::with_store(config, Arc::clone(&store) as Arc<dyn Store>)
            .await
            .unwrap();
        let (url, ca_pem) = serve(&gateway).await;
        let create = move |name: &'static str| {
            let (url, ca_pem) = (url.clone(), ca_pem.clone());
            tokio::spawn(async move {
                let body = serde_json::json!({"metadata": {"name": name}, "spec": {}});
                super::common::reqwest_like::Client::new(&ca_pem)
                    .post(
                        &url,
                        KEY,
                        "application/json",
                        serde_json::to_vec(&body).unwrap(),
                    )
                    .await
                    .status
            })
        };
        (store, create, gateway, dir)
    }

    /// Waits until `n` requests to the management API are in flight at `gateway`, by its
    /// `kubegate_requests_in_flight` gauge: a request counts from the moment it is read, so
    /// a request counted is in the gateway and not still on its way.
    async fn until_management_in_flight(gateway: &Gateway, n: u32, what: &str) {
        let line = format!("kubegate_requests_in_flight{{target=\"management\"}} {n}");
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                let mut text = String::new();
                {
                    let registry = gateway.shared().registry.lock().unwrap();
                    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
                }
                if text.lines().any(|l| l == line) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no `{line}`"));
    }

    /// Keys created side by side cannot all pass the per-user limit (1,000): alice, one key
    /// short of it, creates two at once. The first stops at the store's gate after counting
    /// her keys; the second must not count and store meanwhile.
    #[tokio::test(flavor = "multi_thread")]
    async fn keys_created_side_by_side_cannot_pass_the_per_user_limit() {
        let (store, create, gateway, dir) = one_key_short_of_the_limit().await;
        store.arm();
        let first = create("first");
        until_reached(&store, "the first create counted alice's keys").await;
        let second = create("second");
        until_management_in_flight(&gateway, 2, "the second create reached the gateway").await;
        // From there to counting and storing is the gateway's own work (authentication, the
        // body, which came with the head): long enough for it, were the second free to.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        store.release();
        let mut statuses = [first.await.unwrap(), second.await.unwrap()];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 403]);
        let stored = store.snapshot().await.unwrap();
        assert_eq!(stored.access_keys.len(), 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A create whose request is gone while its write waits (the client hung up) still holds
    /// the next create's count back until that write lands: the store carries the write out
    /// all the same. Alice, one key short of the limit, creates a key and gives up on it; her
    /// next create must find 1,000 keys.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_create_given_up_on_still_counts_against_the_next() {
        let (store, create, gateway, dir) = one_key_short_of_the_limit().await;
        store.arm_create();
        let given_up = create("given-up");
        until_reached(&store, "the first create's write began").await;
        until_management_in_flight(&gateway, 1, "the first create is in flight").await;
        given_up.abort();
        until_management_in_flight(&gateway, 0, "the gateway dropped the given-up create").await;
        let next = create("next");
        until_management_in_flight(&gateway, 1, "the next create reached the gateway").await;
        // From there to counting and storing is the gateway's own work: long enough for it,
        // were the next create free to.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        store.release();
        assert_eq!(next.await.unwrap(), 403);
        let stored = store.snapshot().await.unwrap();
        assert_eq!(stored.access_keys.len(), 1000);
        assert!(stored.access_keys.contains_key("given-up"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// V5.5 (`TestProxyRedirectsforRootPath`): a GET or HEAD for a target's bare prefix, whose
/// location below the prefix is empty, is answered with kube's `301` to the path plus `/`
/// (query kept); PUT and DELETE pass on to the upstream's `/`. The redirect comes after
/// authentication and the target lookup, as kube's proxy handler runs after its filters.
#[tokio::test(flavor = "multi_thread")]
async fn a_bare_prefix_redirects_gets_and_heads_below_it() {
    let env = Env::start().await;
    let client = env.client();
    let send = |method: &str, path: &str, token: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", env.url))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let reached = |method: &str| {
        env.a
            .requests()
            .iter()
            .filter(|r| r.method.as_str() == method && r.path == "/")
            .count()
    };
    #[rustfmt::skip]
    let cases = [
        // method, path, status, Location, reaches the upstream
        ("GET", "/kubernetes/cluster/a", 301, Some("/kubernetes/cluster/a/"), false),
        ("PUT", "/kubernetes/cluster/a", 0, None, true),
        ("HEAD", "/kubernetes/cluster/a", 301, Some("/kubernetes/cluster/a/"), false),
        ("DELETE", "/kubernetes/cluster/a", 0, None, true),
        ("GET", "/kubernetes/cluster/a?timeout=5s&x=%2F", 301, Some("/kubernetes/cluster/a/?timeout=5s&x=%2F"), false),
        ("GET", "/kubernetes/cluster/a?", 301, Some("/kubernetes/cluster/a/"), false),
        ("GET", "/kubernetes/cluster/a/", 0, None, true),
        ("GET", "/kubernetes/project/p1/space/s1", 301, Some("/kubernetes/project/p1/space/s1/"), false),
    ];
    for (method, path, status, location, forwarded) in cases {
        let before = reached(method);
        let reply = client.send(send(method, path, ADMIN_KEY)).await;
        let after = reached(method);
        assert_eq!(after - before, usize::from(forwarded), "{method} {path}");
        if forwarded {
            assert_ne!(reply.status, 301, "{method} {path}");
        } else {
            assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
            assert_eq!(
                reply.headers.get("location").map(|v| v.to_str().unwrap()),
                location,
                "{method} {path}"
            );
            assert_eq!(reply.body, "", "{method} {path}");
            // As Go's server frames an empty answer: `Content-Length: 0`, none on a HEAD.
            let length = reply
                .headers
                .get("content-length")
                .map(|v| v.to_str().unwrap());
            assert_eq!(length, (method == "GET").then_some("0"), "{method} {path}");
            assert_eq!(reply.headers["cache-control"], "no-cache, private");
        }
    }
    // Before the redirect: the caller is authenticated and the target must exist.
    let reply = client
        .send(send("GET", "/kubernetes/cluster/a", "not-a-key"))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = client
        .send(send("GET", "/kubernetes/cluster/nope", ADMIN_KEY))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(
        reply
            .body
            .contains(r#"clusters.management.loft.sh \"nope\" not found"#),
        "{}",
        reply.body
    );
}

/// A stalled audit log (a pipe nobody reads: a log collector that stopped) never stalls the
/// gateway: once the writer's queue is at its bound, new requests get kube-apiserver's 429,
/// unaudited, while health checks and metrics are still served; when the log drains, requests
/// are served again. (Recording used to wait for room on the runtime's threads, which froze
/// every connection, `/healthz` included.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_audit_log_refuses_new_requests_but_never_stalls_the_gateway() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let reader: Arc<Mutex<Option<std::fs::File>>> = Arc::default();
    let mut env = {
        let reader = reader.clone();
        Env::start_with_fn(move |_, dir| {
            let state = dir.join("state");
            std::fs::create_dir_all(&state).unwrap();
            let fifo = state.join("audit.log");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            // Held open for reading (O_NONBLOCK, so the open does not wait for a writer) and
            // not read: the gateway's writes block once the pipe's buffer is full.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(0o4000)
                .open(&fifo)
                .unwrap();
            *reader.lock().unwrap() = Some(file);
            String::new()
        })
        .await
    };
    let client = env.client();
    let api = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    // Refused callers are audited too: each with a 60 KB query (the request URI is recorded
    // whole, as kube records it) fills the queue quickly.
    let big = format!("{api}?filler={}", "x".repeat(60_000));
    let mut refused = None;
    for _ in 0..2_000 {
        let reply = client.get(&big, "not-a-key", &[]).await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    let refused = refused.expect("the stalled audit log never refused a request");
    assert_eq!(refused.body, "Too many requests, please try again later.\n");
    assert_eq!(refused.headers["retry-after"], "1");
    // A caller with a good key is refused alike, before anything is audited or forwarded.
    let reply = client.get(&api, ADMIN_KEY, &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    // Health checks and metrics are still served.
    assert_eq!(
        client
            .get(&format!("{}/healthz", env.url), "", &[])
            .await
            .status,
        200
    );
    let metrics = client
        .get(&format!("{}/metrics", env.url), ADMIN_KEY, &[])
        .await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(
        metrics.body.lines().any(|l| l
            .starts_with("kubegate_refusals_total{kind=\"audit_backlog\"}")
            && !l.ends_with(" 0")),
        "{}",
        metrics.body
    );
    // The collector comes back: the log drains and requests are served again.
    let draining = Arc::new(AtomicBool::new(true));
    let drain = {
        let draining = draining.clone();
        let mut file = reader.lock().unwrap().take().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while draining.load(Ordering::Relaxed) {
                match file.read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    client
        .until_status_turns(
            &api,
            ADMIN_KEY,
            (429, 200),
            Duration::from_secs(60),
            "requests were still refused after the log drained",
        )
        .await;
    env.stop().await;
    draining.store(false, Ordering::Relaxed);
    drain.join().unwrap();
}

/// With no password configured for anyone (this config's case), a password login is refused
/// at once: no argon2 check runs (it would only burn a CPU for whoever keeps asking) and
/// nothing is counted against the caller, so more attempts than the failure limit all get the
/// same 401 instead of a lock-out.
#[tokio::test(flavor = "multi_thread")]
async fn password_logins_without_any_password_configured_are_refused_without_a_check() {
    let env = Env::start().await;
    let client = env.client();
    for attempt in 0..12 {
        let reply = client
            .post(
                &format!("{}/auth/password/login", env.url),
                "",
                "application/json",
                br#"{"username":"admin","password":"guess"}"#.to_vec(),
            )
            .await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.body);
    }
}

/// A Grafana has a max-in-flight budget of its own, as each Kubernetes target has: one that
/// stalls holds only its own slots, and the management API, whose `selves` every agent asks,
/// stays served.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_grafana_holds_only_its_own_in_flight_slots() {
    use kubegate_testkit::{Fault, FaultRule};
    let env = Env::start_with("maxRequestsInFlight: 1\n").await;
    // Cluster b's Grafana is served from upstream a's /grafana-root; this request waits there,
    // holding its slot, until the test is done.
    env.a.faults().inject(
        FaultRule::new(Fault::Delay(Duration::from_secs(30)))
            .path_prefix("/grafana-root/held")
            .times(1),
    );
    let client = env.client();
    let grafana_url = format!("{}/grafana/b/api/health", env.url);
    let held = {
        let client = env.client();
        let url = format!("{}/grafana/b/held", env.url);
        tokio::spawn(async move { client.get(&url, ADMIN_KEY, &[]).await })
    };
    // Probe only once the upstream has the held request: a probe sent earlier could take the
    // one slot first and have the held request refused instead.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.a.last_request_to("/grafana-root/held").is_none() {
        assert!(
            !held.is_finished() && std::time::Instant::now() < deadline,
            "the held request never reached the Grafana"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It holds its slot, so the Grafana's budget is spent.
    let grafana = client.get(&grafana_url, ADMIN_KEY, &[]).await;
    assert_eq!(grafana.status, 429, "{}", grafana.body);
    assert_management_served(&env).await;
    held.abort();
}

/// Lists the management API's clusters as the admin and asserts it is served.
async fn assert_management_served(env: &Env) {
    assert_served(
        env,
        "/kubernetes/management/apis/management.loft.sh/v1/clusters",
    )
    .await;
}

/// GETs `path` on the gateway as the admin and asserts it is served.
async fn assert_served(env: &Env, path: &str) {
    let reply = env
        .client()
        .get(&format!("{}{path}", env.url), ADMIN_KEY, &[])
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
}
