//! Raw hyper/rustls clients against the fake apiserver: Status bodies, faults, upgrades,
//! big lists and watches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubegate_testkit::{
    Fault, FaultRule, Rbac, TestApiServer, TestApiServerConfig, UPGRADE_ECHO_PATH, UserInfo,
};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const LIMIT: Duration = Duration::from_secs(60);

/// RBAC: `kubegate-gateway` may impersonate users and groups (what a gateway's upstream
/// identity gets); `alice` may list configmaps in `default`.
fn rbac() -> Rbac {
    Rbac::default()
        .with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "impersonator"},
                   "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "gateway-impersonates"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "kubegate-gateway"}]}),
            json!({"kind": "Role", "metadata": {"name": "cm-lister", "namespace": "default"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "alice-lists", "namespace": "default"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-lister"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
        ])
        .unwrap()
}

async fn server() -> TestApiServer {
    TestApiServer::start(TestApiServerConfig::with_rbac(&rbac()).unwrap())
        .await
        .unwrap()
}

async fn tls(s: &TestApiServer, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = s.client_tls_config(None).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(s.addr()).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1(s: &TestApiServer) -> H1 {
    let io = TokioIo::new(tls(s, &[b"http/1.1"]).await);
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

fn get(s: &TestApiServer, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", s.addr().to_string())
        .header("authorization", format!("Bearer {}", s.admin_token()))
        .body(Empty::new())
        .unwrap()
}

async fn send(
    s: &TestApiServer,
    req: Request<Empty<Bytes>>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut c = h1(s).await;
    let resp = tokio::time::timeout(LIMIT, c.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test]
async fn status_bodies_match_kube_apiserver() {
    let s = server().await;
    let mut unauth = get(&s, "/api/v1/namespaces");
    unauth.headers_mut().remove("authorization");
    let cases: Vec<(&str, Request<Empty<Bytes>>, u16, &str)> = vec![
        (
            "401 unauthenticated",
            unauth,
            401,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n",
        ),
        (
            "404 object",
            get(&s, "/api/v1/namespaces/default/pods/foo"),
            404,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"foo\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"foo\",\"kind\":\"pods\"},\"code\":404}\n",
        ),
        (
            "400 exec without upgrade",
            get(
                &s,
                "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
            ),
            400,
            "",
        ),
    ];
    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    for (name, req, code, want) in cases {
        let (status, headers, body) = send(&s, req).await;
        assert_eq!(status.as_u16(), code, "{name}: {}", text(&body));
        assert_eq!(headers["content-type"], "application/json", "{name}");
        if !want.is_empty() {
            assert_eq!(text(&body), want, "{name}");
        }
    }
    let (_, _, body) = send(
        &s,
        get(
            &s,
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
        ),
    )
    .await;
    assert_eq!(
        text(&body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Upgrade request required\",\"reason\":\"BadRequest\",\"code\":400}\n"
    );
    // curl gets the pretty form.
    let mut curl = get(&s, "/api/v1/namespaces/default/pods/foo");
    curl.headers_mut()
        .insert("user-agent", "curl/8.0".parse().unwrap());
    let (_, _, body) = send(&s, curl).await;
    assert!(text(&body).starts_with("{\n  \"kind\": \"Status\",\n"));
}

#[tokio::test]
async fn forbidden_for_an_identity_without_rbac() {
    let s = server().await;
    let token = s.mint_token(UserInfo::new("jane"));
    let mut req = get(&s, "/apis/example.com/v1/widgets");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (status, headers, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        text(&body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"widgets.example.com is forbidden: User \\\"jane\\\" cannot list resource \\\"widgets\\\" in API group \\\"example.com\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"group\":\"example.com\",\"kind\":\"widgets\"},\"code\":403}\n"
    );
}

#[tokio::test]
async fn fault_status_answers_5xx_with_a_status_body() {
    let s = server().await;
    s.faults().inject(
        FaultRule::new(Fault::Status(503))
            .path_prefix("/api/v1")
            .times(1),
    );
    let (status, _, body) = send(&s, get(&s, "/api/v1/namespaces")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["reason"].as_str(), v["code"].as_u64()),
        (Some("ServiceUnavailable"), Some(503))
    );
    let (status, _, _) = send(&s, get(&s, "/api/v1/namespaces")).await;
    assert_eq!(status, StatusCode::OK, "the rule applied once");
}

#[tokio::test]
async fn fault_delay_holds_the_response() {
    let s = server().await;
    s.faults()
        .inject(FaultRule::new(Fault::Delay(Duration::from_secs(3600))).path_prefix("/version"));
    let mut c = h1(&s).await;
    let mut pending = Box::pin(c.send_request(get(&s, "/version")));
    tokio::select! {
        r = &mut pending => panic!("answered despite the delay: {:?}", r.map(|r| r.status())),
        _ = s.recorder().wait_for(|r| r.path == "/version") => {}
    }
    // Received and recorded, but the handler is still sleeping: no response yet.
    assert!(futures_util::poll!(&mut pending).is_pending());
}

#[tokio::test]
async fn fault_reset_drops_the_connection() {
    let s = server().await;
    s.faults()
        .inject(FaultRule::new(Fault::Reset).path_prefix("/version"));
    let mut c = h1(&s).await;
    let r = tokio::time::timeout(LIMIT, c.send_request(get(&s, "/version")))
        .await
        .unwrap();
    let err = r.expect_err("connection must be reset");
    // The peer must see a TCP reset (SO_LINGER 0), not an orderly close.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut reset = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            reset |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = e.source();
    }
    assert!(reset, "{err:?}");
}

#[tokio::test]
async fn fault_slow_body_streams_small_chunks() {
    let s = server().await;
    let (_, _, whole) = send(&s, get(&s, "/version")).await;
    s.faults().inject(FaultRule::new(Fault::SlowBody {
        chunk_size: 16,
        interval: Duration::from_millis(1),
    }));
    let mut c = h1(&s).await;
    let resp = c.send_request(get(&s, "/version")).await.unwrap();
    let mut body: Incoming = resp.into_body();
    let mut frames = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames.push(d);
        }
    }
    assert!(frames.len() >= whole.len() / 16, "{} frames", frames.len());
    assert!(frames.iter().all(|f| f.len() <= 16));
    assert_eq!(frames.concat(), whole.to_vec());
}

async fn raw_upgrade(s: &TestApiServer, path: &str, extra: &str) -> (TlsStream<TcpStream>, String) {
    let mut io = tls(s, &[b"http/1.1"]).await;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: testkit-echo\r\n{extra}\r\n",
        s.addr(),
        s.admin_token()
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            io.read(&mut b).await.unwrap(),
            1,
            "connection closed in response head"
        );
        head.push(b[0]);
    }
    (io, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn upgrade_echo_round_trip() {
    let s = server().await;
    let (mut io, head) = raw_upgrade(&s, UPGRADE_ECHO_PATH, "").await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("upgrade: testkit-echo"),
        "{head}"
    );
    io.write_all(b"ping over the upgraded stream")
        .await
        .unwrap();
    let mut buf = vec![0u8; 29];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over the upgraded stream");
}

#[tokio::test]
async fn upgrade_faults_answer_without_switching() {
    let s = server().await;
    let cases = [
        ("200", 200, None, "HTTP/1.1 200 OK"),
        (
            "302",
            302,
            Some("https://example.com/there"),
            "HTTP/1.1 302 Found",
        ),
        ("403", 403, None, "HTTP/1.1 403 Forbidden"),
    ];
    for (name, code, location, status_line) in cases {
        s.faults().clear();
        s.faults().inject(FaultRule::new(Fault::UpgradeStatus {
            code,
            location: location.map(str::to_owned),
        }));
        // A plain request is unaffected by an upgrade fault.
        let (status, _, _) = send(&s, get(&s, "/version")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let (_, head) = raw_upgrade(&s, UPGRADE_ECHO_PATH, "").await;
        assert!(head.starts_with(status_line), "{name}: {head}");
        if let Some(loc) = location {
            assert!(head.contains(&format!("location: {loc}")), "{name}: {head}");
        }
    }
}

#[tokio::test]
async fn http2_is_negotiated_for_plain_requests() {
    let s = server().await;
    let io = TokioIo::new(tls(&s, &[b"h2"]).await);
    let (mut c, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://{}/version", s.addr()))
        .header("authorization", format!("Bearer {}", s.admin_token()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.requests()[0].version, http::Version::HTTP_2);
}

#[tokio::test]
async fn list_limit_and_continue() {
    let s = server().await;
    for i in 0..5 {
        s.create(
            "cm",
            "default",
            json!({"metadata": {"name": format!("c{i}")}}),
        )
        .unwrap();
    }
    let mut names = Vec::new();
    let mut next = String::new();
    loop {
        let path = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={next}");
        let (status, _, body) = send(&s, get(&s, &path)).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "ConfigMapList");
        names.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        match v["metadata"]["continue"].as_str() {
            Some(c) => next = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
}

#[tokio::test]
async fn list_of_64_mib_is_streamed_in_chunks() {
    let s = server().await;
    let total = s.seed_configmaps("default", 1024, 64 << 10).unwrap();
    assert_eq!(total, 64 << 20);
    let mut c = h1(&s).await;
    let resp = c
        .send_request(get(&s, "/api/v1/namespaces/default/configmaps"))
        .await
        .unwrap();
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let mut body = resp.into_body();
    let (mut frames, mut bytes) = (0usize, Vec::with_capacity((64 << 20) + (1 << 20)));
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames += 1;
            bytes.extend_from_slice(&d);
        }
    }
    assert!(bytes.len() > 64 << 20);
    assert!(frames > 100, "{frames} frames");
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1024);
}

async fn read_events(body: &mut Incoming, buf: &mut Vec<u8>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
        if out.len() >= n {
            break;
        }
        let frame = body.frame().await.expect("watch ended early").unwrap();
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
    out
}

#[tokio::test]
async fn watch_sees_a_thousand_events_in_order() {
    let s = server().await;
    s.create("cm", "default", json!({"metadata": {"name": "hot"}}))
        .unwrap();
    let rv = s.resource_version();
    let mut c = h1(&s).await;
    let resp = c
        .send_request(get(
            &s,
            &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
        ))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut body = resp.into_body();
    s.generate_events("cm", "default", "hot", 1000).unwrap();
    let mut buf = Vec::new();
    let events = tokio::time::timeout(LIMIT, read_events(&mut body, &mut buf, 1000))
        .await
        .unwrap();
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "MODIFIED");
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        events[999]["object"]["metadata"]["annotations"]["testkit/counter"],
        "999"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let mut config = TestApiServerConfig::with_rbac(&rbac()).unwrap();
    config.watch_history = 16;
    let s = TestApiServer::start(config).await.unwrap();
    s.create("cm", "default", json!({"metadata": {"name": "x"}}))
        .unwrap();
    s.generate_events("cm", "default", "x", 40).unwrap();
    let (status, _, body) = send(
        &s,
        get(
            &s,
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "ERROR");
    assert_eq!(
        (v["object"]["code"].as_u64(), v["object"]["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
}

#[tokio::test]
async fn watch_without_version_starts_with_current_objects_and_times_out() {
    let s = server().await;
    s.create("cm", "default", json!({"metadata": {"name": "a"}}))
        .unwrap();
    let (status, _, body) = send(
        &s,
        get(
            &s,
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=0",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(text(&body).lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("a"))
    );
}

fn as_user(
    s: &TestApiServer,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Empty<Bytes>> {
    let mut req = get(s, path);
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

#[tokio::test]
async fn privileged_identity_impersonates_and_rbac_applies_to_the_impersonated_user() {
    let s = server().await;
    let gateway = s
        .mint_client_cert(UserInfo::new("kubegate-gateway"))
        .unwrap();
    let gateway_token = s.mint_token(UserInfo::new("kubegate-gateway"));
    let impersonate = [("impersonate-user", "alice"), ("impersonate-group", "devs")];

    let cms = "/api/v1/namespaces/default/configmaps";
    let (status, _, body) = send(&s, as_user(&s, &gateway_token, cms, &impersonate)).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    let rec = s.recorder().wait_for(|r| r.path == cms).await;
    assert_eq!(rec.authenticated.as_ref().unwrap().name, "kubegate-gateway");
    let alice = rec.impersonated.clone().unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.groups, ["devs", "system:authenticated"]);
    assert_eq!(rec.effective_user().unwrap().name, "alice");

    // The impersonated user's own RBAC decides the request.
    let (status, _, body) = send(
        &s,
        as_user(
            &s,
            &gateway_token,
            "/api/v1/namespaces/default/secrets",
            &impersonate,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        text(&body).contains(
            "secrets is forbidden: User \\\"alice\\\" cannot list resource \\\"secrets\\\""
        ),
        "{}",
        text(&body)
    );

    // Impersonating a UID is not granted to the gateway.
    let with_uid = [("impersonate-user", "alice"), ("impersonate-uid", "u-1")];
    let (status, _, body) = send(&s, as_user(&s, &gateway_token, cms, &with_uid)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text(&body).contains("uids.authentication.k8s.io \\\"u-1\\\" is forbidden: User \\\"kubegate-gateway\\\" cannot impersonate resource \\\"uids\\\""), "{}", text(&body));

    // alice herself may not impersonate.
    let alice_token = s.mint_token(UserInfo::new("alice"));
    let (status, _, body) = send(
        &s,
        as_user(&s, &alice_token, cms, &[("impersonate-user", "bob")]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", text(&body));

    // Groups without a user: 400.
    let (status, _, _) = send(
        &s,
        as_user(&s, &gateway_token, cms, &[("impersonate-group", "x")]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same identity over a client certificate works too.
    let mut config = s.client_tls_config(Some(&gateway)).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(s.addr()).await.unwrap();
    let io = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = get(&s, cms);
    req.headers_mut().remove("authorization");
    req.headers_mut()
        .insert("impersonate-user", "alice".parse().unwrap());
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// kubernetes-edges §5.2: a SPDY exec that names no stream protocol gets httpstream's 400, one
/// whose protocols the server does not speak its 403 listing what it accepts.
#[tokio::test]
async fn spdy_handshake_refusals_are_apimachinerys() {
    let s = server().await;
    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let exec = "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true";
    let spdy = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];
    let (status, _, body) = send(&s, as_user(&s, s.admin_token(), exec, &spdy)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&body),
        "unable to upgrade: X-Stream-Protocol-Version is required\n"
    );
    let mut unknown = spdy.to_vec();
    unknown.push(("x-stream-protocol-version", "v9.channel.k8s.io"));
    unknown.push(("x-stream-protocol-version", "channel.k8s.io"));
    let (status, headers, body) = send(&s, as_user(&s, s.admin_token(), exec, &unknown)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        text(&body),
        "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io channel.k8s.io], server accepts [v4.channel.k8s.io]\n"
    );
    assert_eq!(
        headers["x-accepted-stream-protocol-versions"],
        "v4.channel.k8s.io"
    ); // One value may list several, comma-separated; an empty one names none.
    let mut listed = spdy.to_vec();
    listed.push((
        "x-stream-protocol-version",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    ));
    let (status, headers, _) = send(&s, as_user(&s, s.admin_token(), exec, &listed)).await;
    assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(headers["x-stream-protocol-version"], "v4.channel.k8s.io");
    let mut empty = spdy.to_vec();
    empty.push(("x-stream-protocol-version", " , "));
    let (status, _, _) = send(&s, as_user(&s, s.admin_token(), exec, &empty)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn websocket_exec_also_needs_create() {
    let rbac = Rbac::default()
        .with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "exec-get-only"},
                   "rules": [{"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "viewer-exec"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "exec-get-only"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "viewer"}]}),
        ])
        .unwrap();
    let s = TestApiServer::start(TestApiServerConfig::with_rbac(&rbac).unwrap())
        .await
        .unwrap();
    s.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let token = s.mint_token(UserInfo::new("viewer"));
    let req = as_user(
        &s,
        &token,
        "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ],
    );
    let (status, _, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        text(&body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"p\\\" is forbidden: \",\"reason\":\"Forbidden\",\"details\":{\"name\":\"p\",\"kind\":\"pods\"},\"code\":403}\n"
    );
}

#[tokio::test]
async fn recording_can_be_switched_off_for_benches() {
    let s = server().await;
    s.recorder().set_enabled(false);
    let (status, _, _) = send(&s, get(&s, "/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.requests().is_empty());
    s.recorder().set_enabled(true);
    send(&s, get(&s, "/version")).await;
    assert_eq!(s.requests().len(), 1);
    assert!(
        !format!("{s:?}").contains(s.admin_token()),
        "no token in Debug"
    );
}

#[tokio::test]
async fn unparseable_request_info_is_a_plain_text_500() {
    let s = server().await;
    let (status, headers, body) = send(&s, get(&s, "/api/v1/watch")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        text(&body).starts_with("Internal Server Error: \"/api/v1/watch\": unable to determine kind and namespace from url"),
        "{}",
        text(&body)
    );
}

#[tokio::test]
async fn legacy_watch_prefix_is_a_watch() {
    let s = server().await;
    s.create("cm", "default", json!({"metadata": {"name": "a"}}))
        .unwrap();
    let (status, _, body) = send(
        &s,
        get(
            &s,
            "/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=0",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&body).starts_with("{\"type\":\"ADDED\""),
        "{}",
        text(&body)
    );
}

#[tokio::test]
async fn watch_list_initial_events_end_and_bookmarks() {
    let s = server().await;
    s.create("cm", "default", json!({"metadata": {"name": "a"}}))
        .unwrap();
    let mut c = h1(&s).await;
    let path = "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan";
    let mut body = c.send_request(get(&s, path)).await.unwrap().into_body();
    let mut buf = Vec::new();
    let first = tokio::time::timeout(LIMIT, read_events(&mut body, &mut buf, 2))
        .await
        .unwrap();
    assert_eq!(
        (
            first[0]["type"].as_str(),
            first[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    assert_eq!(first[1]["type"], "BOOKMARK");
    assert_eq!(first[1]["object"]["kind"], "ConfigMap");
    assert_eq!(
        first[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    s.send_bookmark();
    let next = tokio::time::timeout(LIMIT, read_events(&mut body, &mut buf, 1))
        .await
        .unwrap();
    assert_eq!(next[0]["type"], "BOOKMARK");
    assert_eq!(
        next[0]["object"]["metadata"]["resourceVersion"],
        s.resource_version().to_string()
    );
}

/// `GET /` lists the served paths as kube-apiserver's index does (`metav1.RootPaths`: sorted,
/// indented by two spaces, no trailing newline), to those RBAC lets read `/`: `system:discovery`
/// does not grant it, so an ordinary user gets kube's 403 for the path.
/// Legacy discovery (`Accept: application/json`, what client-go asked before aggregated
/// discovery): `APIVersions` naming this server, `APIGroupList` with each group's preferred
/// version, and the per-version `APIResourceList`s kubectl reads resources from.
#[tokio::test]
async fn legacy_discovery_bodies() {
    let s = server().await;
    let json = |path: &str| {
        let mut req = get(&s, path);
        req.headers_mut()
            .insert("accept", "application/json".parse().unwrap());
        req
    };
    let body = |(status, headers, body): (StatusCode, http::HeaderMap, Bytes)| -> Value {
        assert_eq!(status, StatusCode::OK, "{}", text(&body));
        assert_eq!(headers["content-type"], "application/json");
        serde_json::from_slice(&body).unwrap()
    };
    assert_eq!(
        body(send(&s, json("/api")).await),
        serde_json::json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": s.addr().to_string()}
            ],
        })
    );
    let groups = body(send(&s, json("/apis")).await);
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["apiVersion"], "v1");
    let example = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "example.com")
        .unwrap_or_else(|| panic!("no example.com group: {groups}"));
    assert_eq!(
        example,
        &serde_json::json!({
            "name": "example.com",
            "versions": [{"groupVersion": "example.com/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "example.com/v1", "version": "v1"},
        })
    );
    let core = body(send(&s, json("/api/v1")).await);
    assert_eq!(core["kind"], "APIResourceList");
    assert_eq!(core["groupVersion"], "v1");
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in ["namespaces", "configmaps", "secrets", "pods", "pods/exec"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let widgets = body(send(&s, json("/apis/example.com/v1")).await);
    assert_eq!(widgets["groupVersion"], "example.com/v1");
    let widget = &widgets["resources"][0];
    assert_eq!(widget["name"], "widgets");
    assert_eq!(widget["kind"], "Widget");
    assert_eq!(widget["namespaced"], true);
    assert_eq!(widget["shortNames"], serde_json::json!(["wg"]));
}

#[tokio::test]
async fn root_lists_the_served_paths() {
    let s = server().await;
    let (status, headers, body) = send(&s, get(&s, "/")).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert_eq!(headers["content-type"], "application/json");
    let body = text(&body);
    assert!(
        body.starts_with(
            "{\n  \"paths\": [\n    \"/api\",\n    \"/api/v1\",\n    \"/apis\",\n    \"/apis/\",\n"
        ),
        "{body}"
    );
    assert!(body.ends_with("\"/version\"\n  ]\n}"), "{body}");
    let paths: Vec<String> = serde_json::from_str::<Value>(body).unwrap()["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert!(
        paths.contains(&"/apis/example.com/v1".to_owned()),
        "{paths:?}"
    );

    let token = s.mint_token(UserInfo::new("jane"));
    let mut req = get(&s, "/");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (status, _, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", text(&body));
    assert!(
        text(&body).contains(r#"forbidden: User \"jane\" cannot get path \"/\""#),
        "{}",
        text(&body)
    );
}

/// client-go's Accept when a controller is configured for protobuf.
const CLIENT_GO_PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

fn accepting(s: &TestApiServer, path: &str, accept: &str) -> Request<Empty<Bytes>> {
    let mut req = get(s, path);
    req.headers_mut().insert("accept", accept.parse().unwrap());
    req
}

/// GETs `path` accepting protobuf as client-go does, with `token` (the admin's when `None`),
/// checks the answer's status and that it is protobuf, and returns its body.
async fn get_protobuf(
    s: &TestApiServer,
    path: &str,
    token: Option<&str>,
    want: StatusCode,
) -> Bytes {
    let mut req = accepting(s, path, CLIENT_GO_PROTOBUF);
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (status, headers, body) = send(s, req).await;
    assert_eq!(status, want, "{path}");
    assert_eq!(
        headers["content-type"], "application/vnd.kubernetes.protobuf",
        "{path}"
    );
    body
}

/// V6.2's protobuf rows: objects, lists and Status bodies in `application/vnd.kubernetes.protobuf`,
/// watches as `application/vnd.kubernetes.protobuf;stream=watch` frames; what has no protobuf
/// encoding falls back to JSON or gets kube's 406.
#[tokio::test]
async fn protobuf_objects_lists_watches_and_errors() {
    let s = server().await;
    s.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "pb", "labels": {"app": "x"}}, "data": {"k": "v"}}),
    )
    .unwrap();
    let body = get_protobuf(
        &s,
        "/api/v1/namespaces/default/configmaps/pb",
        None,
        StatusCode::OK,
    )
    .await;
    assert!(body.starts_with(b"k8s\0"));
    let cm = kubegate_testkit::decode_protobuf(&body).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "pb");
    assert_eq!(cm["metadata"]["labels"]["app"], "x");
    assert_eq!(cm["data"]["k"], "v");

    let body = get_protobuf(
        &s,
        "/api/v1/namespaces/default/configmaps",
        None,
        StatusCode::OK,
    )
    .await;
    let list = kubegate_testkit::decode_protobuf(&body).unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"][0]["metadata"]["name"], "pb");
    assert!(
        !list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // Errors are written in the negotiated encoding too.
    let body = get_protobuf(
        &s,
        "/api/v1/namespaces/default/configmaps/none",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let st = kubegate_testkit::decode_protobuf(&body).unwrap();
    assert_eq!(
        st,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "configmaps \"none\" not found", "reason": "NotFound", "code": 404})
    );

    // So are the answers written before a request reaches its resource: a 401 and a 403.
    let list = "/api/v1/namespaces/default/configmaps";
    let body = get_protobuf(&s, list, Some("wrong"), StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        kubegate_testkit::decode_protobuf(&body).unwrap()["reason"],
        "Unauthorized"
    );
    let token = s.mint_token(UserInfo::new("nobody"));
    let body = get_protobuf(
        &s,
        "/api/v1/namespaces/default/secrets",
        Some(&token),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        kubegate_testkit::decode_protobuf(&body).unwrap()["message"],
        "secrets is forbidden: User \"nobody\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );

    // A custom resource has no protobuf: JSON when the client takes it, else 406 (in JSON).
    let (status, headers, _) = send(
        &s,
        accepting(&s, "/apis/example.com/v1/widgets", CLIENT_GO_PROTOBUF),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let (status, headers, body) = send(
        &s,
        accepting(
            &s,
            "/apis/example.com/v1/widgets",
            "application/vnd.kubernetes.protobuf",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        text(&body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"only the following media types are accepted: application/json, application/yaml\",\"reason\":\"NotAcceptable\",\"code\":406}\n"
    );

    // The watch: length-delimited WatchEvents, one frame per event as it happens.
    let rv = s.resource_version();
    let mut c = h1(&s).await;
    let resp = c
        .send_request(accepting(
            &s,
            &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
            CLIENT_GO_PROTOBUF,
        ))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = resp.into_body();
    s.generate_events("cm", "default", "pb", 3).unwrap();
    s.delete("configmaps", "default", "pb").unwrap();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < 4 {
        match kubegate_testkit::decode_protobuf_watch_event(&mut buf) {
            Some(event) => events.push(event.unwrap()),
            None => {
                let frame = tokio::time::timeout(LIMIT, body.frame())
                    .await
                    .unwrap()
                    .expect("watch ended early")
                    .unwrap();
                if let Ok(d) = frame.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]);
    assert_eq!(
        events[2].1["metadata"]["annotations"]["testkit/counter"],
        "2"
    );
    assert!(buf.is_empty());
}
