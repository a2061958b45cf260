//! ForwardService against real HTTPS upstreams on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, Pki, TestBody, body_string, front, full, h1_client, h2c_client};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use kubegate_proxy::{
    Credential, ForwardService, Identity, IdentityMode, LongRunning, RequestMeta, Upstream,
    UpstreamPath,
};
use kubegate_routing::{RequestInfo, Router};
use tower::ServiceBuilder;

const UPSTREAM_TOKEN: &str = "gateway-upstream-token-123";

fn upstream(pki: &Pki, backend: &Backend) -> kubegate_proxy::UpstreamBuilder {
    Upstream::builder("prod", backend.url())
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
}

fn identity() -> Identity {
    Identity::authenticated(
        "jane@example.com",
        "uid-jane",
        vec!["devs".into()],
        [("example.com/team".to_owned(), vec!["blue".to_owned()])].into(),
    )
}

/// What the gateway does in front of ForwardService: route, classify, authenticate (here: a
/// fixed identity), then forward.
async fn gateway(svc: ForwardService<Incoming>, id: Option<Identity>) -> std::net::SocketAddr {
    let router = Arc::new(Router::central());
    let stack = ServiceBuilder::new()
        .map_request(move |req| classify(&router, id.as_ref(), req))
        .service(svc);
    front(stack).await
}

/// Routes and classifies the request as the gateway does, and sets its identity.
fn classify(
    router: &Router,
    id: Option<&Identity>,
    mut req: Request<Incoming>,
) -> Request<Incoming> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let route = router.route(&path, query.as_deref()).unwrap();
    let method = req.method().as_str().to_owned();
    let info = RequestInfo::parse(&method, &route.rest, route.query).unwrap();
    let ext = req.extensions_mut();
    ext.insert(UpstreamPath::from_route(route.raw_rest, route.query).unwrap());
    ext.insert(LongRunning(info.is_long_running()));
    ext.insert(RequestMeta::new(&route.target, &info));
    if let Some(id) = id {
        ext.insert(id.clone());
    }
    req
}

/// A `ForwardService` sending short requests over h2 (`h2`) or pooled HTTP/1.1 connections.
fn forwarding_short_requests_over(
    pki: &Pki,
    backend: &Backend,
    h2: bool,
) -> ForwardService<Incoming> {
    ForwardService::new(
        upstream(pki, backend)
            .http1_connections_for_short_requests(if h2 { 0 } else { 64 })
            .build()
            .unwrap(),
    )
}

fn ok(body: &'static str) -> Response<TestBody> {
    Response::new(full(body))
}

/// A port nothing listens on, with the socket that keeps it so: bound and never listening,
/// so a connection to it is refused, and no other test's listener can be given the port
/// while the socket lives.
fn refused_port() -> (u16, socket2::Socket) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let port = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .map(|a| a.port())
        .unwrap();
    (port, socket)
}

/// `GET` through the gateway over HTTP/1.1: the status and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    (res.status(), body_string(res.into_body()).await)
}

#[tokio::test]
async fn forwards_path_query_body_and_identity_over_http1() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req: Request<Incoming>| async move {
        let body = body_string(req.into_body()).await;
        Response::builder()
            .header("x-echo", body)
            .body(full("{\"kind\":\"PodList\"}"))
            .unwrap()
    })
    .await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;

    let req = Request::post(format!(
        "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/default/configmaps/a%3Ab?fieldManager=kubectl&dryRun=All"
    ))
    .header("content-type", "application/json")
    .body(full("{\"a\":1}"))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-echo"], "{\"a\":1}");
    assert_eq!(body_string(res.into_body()).await, "{\"kind\":\"PodList\"}");

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.version, http::Version::HTTP_11);
    // The still-encoded path is forwarded byte for byte.
    assert_eq!(s.uri.path(), "/api/v1/namespaces/default/configmaps/a%3Ab");
    assert_eq!(s.uri.query(), Some("fieldManager=kubectl&dryRun=All"));
    assert_eq!(s.all("authorization"), [format!("Bearer {UPSTREAM_TOKEN}")]);
    assert_eq!(s.all("impersonate-user"), ["jane@example.com"]);
    assert_eq!(s.all("impersonate-uid"), ["uid-jane"]);
    assert_eq!(s.all("impersonate-group"), ["devs", "system:authenticated"]);
    assert_eq!(s.all("impersonate-extra-example.com%2fteam"), ["blue"]);
    assert_eq!(s.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        s.all("host"),
        [format!("127.0.0.1:{}", backend.addr.port())]
    );

    // Prior `X-Forwarded-For` lines are kept and the client's address appended, in one line
    // as Go's ReverseProxy writes it.
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .header("x-forwarded-for", "10.0.0.1, 10.0.0.2")
        .header("x-forwarded-for", "10.0.0.3")
        .body(full(""))
        .unwrap();
    assert_eq!(h1_client().request(req).await.unwrap().status(), 200);
    assert_eq!(
        backend.seen()[1].all("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );
}

/// A client that hangs up before the response head came cancels the upstream exchange too,
/// over a pooled HTTP/1.1 connection: the upstream's handler is dropped (its connection
/// closed), and the next request gets a working connection.
#[tokio::test]
async fn a_client_gone_before_the_response_head_cancels_the_http1_exchange() {
    struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let pki = Pki::new();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
    let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    let backend = Backend::start(&pki, &[b"http/1.1"], move |req: Request<Incoming>| {
        let started = started_tx.clone();
        let guard = Dropped(dropped_tx.lock().unwrap().take());
        async move {
            if req.uri().path().ends_with("/slow") {
                let _guard = guard;
                started.send(()).unwrap();
                std::future::pending::<()>().await;
            }
            ok("ok")
        }
    })
    .await;
    let addr = gateway(
        ForwardService::new(upstream(&pki, &backend).build().unwrap()),
        Some(identity()),
    )
    .await;
    let client = tokio::spawn(async move {
        let req = Request::get(format!(
            "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/pods/slow"
        ))
        .body(full(""))
        .unwrap();
        h1_client().request(req).await
    });
    started.recv().await.unwrap();
    client.abort();
    tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("the upstream still works on the request of a client that left")
        .unwrap();
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(body_string(res.into_body()).await, "ok");
}

/// Every upgrade dials a connection of its own (§5.4): it neither takes a pooled HTTP/1.1
/// connection, which would then carry a raw stream, nor leaves one behind for the pool.
#[tokio::test]
async fn each_upgrade_gets_a_fresh_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let backend = Backend::start(
        &pki,
        &[b"http/1.1"],
        |mut req: Request<Incoming>| async move {
            if !req.headers().contains_key("upgrade") {
                return ok("plain");
            }
            let upgraded = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = hyper_util::rt::TokioIo::new(upgraded.await.unwrap());
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "SPDY/3.1")
                .body(full(""))
                .unwrap()
        },
    )
    .await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    let get = || async {
        let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .body(full(""))
            .unwrap();
        let res = h1_client().request(req).await.unwrap();
        assert_eq!(body_string(res.into_body()).await, "plain");
    };
    let upgrade = |word: &'static str| async move {
        let req = Request::post(format!(
            "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/pods/p/exec?command=sh"
        ))
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .body(full(""))
        .unwrap();
        let res = h1_client().request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(res).await.unwrap());
        io.write_all(word.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; word.len()];
        io.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, word.as_bytes());
        io
    };
    get().await;
    assert_eq!(backend.connections(), 1);
    let first = upgrade("one").await;
    assert_eq!(
        backend.connections(),
        2,
        "the upgrade took the pooled connection"
    );
    // The pooled connection is still there for short requests.
    get().await;
    assert_eq!(backend.connections(), 2);
    let second = upgrade("two").await;
    assert_eq!(backend.connections(), 3);
    drop((first, second));
    get().await;
    assert_eq!(
        backend.connections(),
        3,
        "an upgraded connection went back to the pool"
    );
}

/// With only HTTP/1.1 offered the gateway sets `Host` itself (made once per upstream); it must
/// be what hyper-util would have set: the authority, port included unless it is the default.
#[tokio::test]
async fn http1_only_upstream_gets_the_host_hyper_util_would_set() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("ok") }).await;
    let svc = ForwardService::new(upstream(&pki, &backend).http2(false).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    for _ in 0..2 {
        let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .header("host", "client.example")
            .body(full(""))
            .unwrap();
        assert_eq!(h1_client().request(req).await.unwrap().status(), 200);
    }
    for s in backend.seen() {
        assert_eq!(
            s.all("host"),
            [format!("127.0.0.1:{}", backend.addr.port())]
        );
    }
}

/// HTTP/1.1 connections are reused one exchange at a time: sequential requests share one,
/// concurrent ones get their own and are all reused afterwards, and a connection the upstream
/// closed is replaced without the client noticing.
#[tokio::test]
async fn http1_connections_are_pooled_and_replaced_when_the_upstream_closes_them() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req: Request<Incoming>| async move {
        if req.uri().query() == Some("slow") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut res = ok("ok");
        if req.uri().query() == Some("close") {
            res.headers_mut()
                .insert("connection", http::HeaderValue::from_static("close"));
        }
        res
    })
    .await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    let get = |query: &'static str| {
        let req = Request::get(format!(
            "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces?{query}"
        ))
        .body(full(""))
        .unwrap();
        async move {
            let res = h1_client().request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(body_string(res.into_body()).await, "ok");
        }
    };
    for _ in 0..5 {
        get("plain").await;
    }
    assert_eq!(backend.connections(), 1, "sequential requests share one");

    // Four at once while the pooled one is busy: four connections in all, each reused after.
    let slow: Vec<_> = (0..4).map(|_| tokio::spawn(get("slow"))).collect();
    for t in slow {
        t.await.unwrap();
    }
    assert_eq!(backend.connections(), 4);
    let again: Vec<_> = (0..4).map(|_| tokio::spawn(get("slow"))).collect();
    for t in again {
        t.await.unwrap();
    }
    assert_eq!(backend.connections(), 4, "all four were reused");

    // The upstream closes the connection after this answer; the next request gets another.
    get("close").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        get("plain").await;
    }
    assert_eq!(backend.connections(), 4, "a pooled connection took over");
    // Three pooled connections are left: the first three of these close them, the fourth
    // needs a fifth connection (closed too), and the next request a sixth.
    for _ in 0..4 {
        get("close").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get("plain").await;
    assert_eq!(backend.connections(), 6, "fresh ones once all were closed");
    assert_eq!(backend.seen().len(), 5 + 8 + 1 + 5 + 4 + 1);
}

/// An h2 upstream gets one connection that every request shares (short requests too, when
/// they may use no HTTP/1.1 connection).
#[tokio::test]
async fn an_h2_connection_is_shared_by_concurrent_requests() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], |_req| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ok("ok")
    })
    .await;
    let svc = forwarding_short_requests_over(&pki, &backend, true);
    let addr = gateway(svc, Some(identity())).await;
    let get = move || async move {
        let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .body(full(""))
            .unwrap();
        let res = h1_client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(body_string(res.into_body()).await, "ok");
    };
    get().await;
    let all: Vec<_> = (0..16).map(|_| tokio::spawn(get())).collect();
    for t in all {
        t.await.unwrap();
    }
    assert_eq!(backend.connections(), 1);
    let seen = backend.seen();
    assert_eq!(seen.len(), 17);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    // h2 names the upstream in `:authority`, not in a `Host` header.
    assert!(seen.iter().all(|s| {
        s.uri
            .authority()
            .is_some_and(|a| a.as_str() == format!("127.0.0.1:{}", backend.addr.port()))
    }));
}

/// A backend offering `alpn` in ALPN (and at most `h2_streams` streams per h2 connection) that
/// holds the requests `hold` picks until the returned `Notify` is notified, behind a gateway
/// whose upstream `configure` sets up.
async fn holding_upstream(
    alpn: &[&[u8]],
    h2_streams: Option<u32>,
    hold: fn(&Request<Incoming>) -> bool,
    configure: fn(kubegate_proxy::UpstreamBuilder) -> kubegate_proxy::UpstreamBuilder,
) -> (Backend, Arc<tokio::sync::Notify>, std::net::SocketAddr) {
    let pki = Pki::new();
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let backend = Backend::start_with_h2_streams(&pki, alpn, h2_streams, move |req| {
        let held = held.clone();
        let wait = hold(&req);
        async move {
            if wait {
                held.notified().await;
            }
            ok("ok")
        }
    })
    .await;
    let svc = ForwardService::new(configure(upstream(&pki, &backend)).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    (backend, release, addr)
}

/// An h2 upstream that allows two streams per connection (and a gateway whose pool is told
/// so, and sends every request over h2) and holds the requests `hold` picks until the
/// returned `Notify` is notified.
async fn two_stream_upstream(
    hold: fn(&Request<Incoming>) -> bool,
) -> (Backend, Arc<tokio::sync::Notify>, std::net::SocketAddr) {
    holding_upstream(&[b"h2"], Some(2), hold, |up| {
        up.http2_max_streams_per_connection(2)
            .http1_connections_for_short_requests(0)
    })
    .await
}

/// GET `path` under the `prod` cluster through the gateway at `addr`: the body of a 200.
async fn get_ok(addr: std::net::SocketAddr, path: &str) -> String {
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod{path}"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    body_string(res.into_body()).await
}

#[tokio::test]
async fn a_full_h2_connection_makes_the_pool_dial_another_instead_of_queuing() {
    // kube-apiserver caps the streams of a connection (1,000 by default); hyper makes a
    // request past the cap wait, and every request behind it, until a stream ends. Watches
    // hold their streams for minutes: a full connection must not keep the others waiting.
    let (backend, release, addr) =
        two_stream_upstream(|req| req.uri().path().ends_with("/watch-like")).await;
    get_ok(addr, "/api").await;
    assert_eq!(backend.connections(), 1);
    // Two requests held open fill the first connection...
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get_ok(addr, "/api/watch-like")))
        .collect();
    while backend.seen().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...so the next requests go over a second one, at once.
    for _ in 0..3 {
        let answer = tokio::time::timeout(Duration::from_secs(5), get_ok(addr, "/api"))
            .await
            .expect("a request waited behind a full h2 connection");
        assert_eq!(answer, "ok");
    }
    assert_eq!(backend.connections(), 2);
    // Once the held streams end, their connection takes requests again: no third dial.
    release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap(), "ok");
    }
    let all: Vec<_> = (0..4).map(|_| tokio::spawn(get_ok(addr, "/api"))).collect();
    for t in all {
        assert_eq!(t.await.unwrap(), "ok");
    }
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn a_burst_past_full_h2_connections_dials_one_connection_at_a_time() {
    // Twenty watches at once, two streams per connection: ten connections, not one per
    // request that found the pool full while a connection was being dialled.
    let (backend, release, addr) = two_stream_upstream(|_| true).await;
    let all: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get_ok(addr, "/api")))
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while backend.seen().len() < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every request reached the upstream");
    assert_eq!(backend.connections(), 10);
    release.notify_waiters();
    for t in all {
        assert_eq!(t.await.unwrap(), "ok");
    }
}

/// The backend's protocol for each request it saw, in order.
fn versions(backend: &Backend) -> Vec<http::Version> {
    backend.seen().iter().map(|s| s.version).collect()
}

#[tokio::test]
async fn short_requests_use_http1_and_long_running_ones_share_h2() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], |_req| async { ok("ok") }).await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    for _ in 0..3 {
        assert_eq!(get_ok(addr, "/api/v1/namespaces/default/pods").await, "ok");
    }
    for _ in 0..3 {
        assert_eq!(get_ok(addr, "/api/v1/pods?watch=true").await, "ok");
    }
    use http::Version;
    let (h1, h2) = (Version::HTTP_11, Version::HTTP_2);
    assert_eq!(versions(&backend), [h1, h1, h1, h2, h2, h2]);
    assert_eq!(backend.connections(), 2, "one of each, reused");
}

#[tokio::test]
async fn short_requests_past_the_http1_limit_take_h2_streams() {
    let (backend, release, addr) = holding_upstream(
        &[b"h2", b"http/1.1"],
        None,
        |req| req.uri().path().ends_with("/held"),
        |up| up.http1_connections_for_short_requests(1),
    )
    .await;
    // The one HTTP/1.1 connection short requests may use is busy...
    let busy = tokio::spawn(get_ok(addr, "/api/held"));
    while backend.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...so the next ones share an h2 connection instead of dialling more.
    for _ in 0..2 {
        assert_eq!(get_ok(addr, "/api").await, "ok");
    }
    release.notify_waiters();
    assert_eq!(busy.await.unwrap(), "ok");
    // Free again: the next short request takes it.
    assert_eq!(get_ok(addr, "/api").await, "ok");
    use http::Version;
    let (h1, h2) = (Version::HTTP_11, Version::HTTP_2);
    assert_eq!(versions(&backend), [h1, h2, h2, h1]);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn an_upstream_refusing_http1_gets_short_requests_over_h2_after_one_try() {
    // An h2-only server answers an offer of HTTP/1.1 alone with `no_application_protocol`.
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2"], |_req| async { ok("ok") }).await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    assert_eq!(get_ok(addr, "/api").await, "ok");
    let all: Vec<_> = (0..8).map(|_| tokio::spawn(get_ok(addr, "/api"))).collect();
    for t in all {
        assert_eq!(t.await.unwrap(), "ok");
    }
    assert!(
        versions(&backend)
            .iter()
            .all(|v| *v == http::Version::HTTP_2)
    );
    assert_eq!(backend.seen().len(), 9);
    assert_eq!(
        backend.connections(),
        2,
        "the refused try, then one h2 connection"
    );
}

#[tokio::test]
async fn header_smuggling_cannot_change_the_identity_the_upstream_sees() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], |_req| async { ok("ok") }).await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;

    let mut req = Request::get(format!(
        "http://{addr}/kubernetes/cluster/prod/api/v1/secrets"
    ))
    .body(full(""))
    .unwrap();
    let h = req.headers_mut();
    for (n, v) in [
        ("authorization", "Bearer client-token"),
        ("authorization", "Bearer second-client-token"),
        ("impersonate-user", "admin"),
        ("Impersonate-Group", "system:masters"),
        ("IMPERSONATE-UID", "0"),
        ("impersonate-extra-scopes", "all"),
        ("x-remote-user", "admin"),
        ("X-Remote-Group", "system:masters"),
        ("x-remote-extra-scopes", "all"),
        ("connection", "x-smuggle"),
        ("x-smuggle", "1"),
        ("proxy-authorization", "Basic YWRtaW46YWRtaW4="),
    ] {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_static(v),
        );
    }
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let s = &backend.seen()[0];
    assert_eq!(s.all("authorization"), [format!("Bearer {UPSTREAM_TOKEN}")]);
    assert_eq!(s.all("impersonate-user"), ["jane@example.com"]);
    assert_eq!(s.all("impersonate-group"), ["devs", "system:authenticated"]);
    assert_eq!(s.all("impersonate-uid"), ["uid-jane"]);
    let names: Vec<&str> = s.headers.keys().map(|k| k.as_str()).collect();
    for n in &names {
        assert!(!n.starts_with("x-remote-"), "{n} leaked: {names:?}");
        assert!(
            *n != "x-smuggle" && *n != "proxy-authorization",
            "{n} leaked"
        );
        assert!(
            !n.starts_with("impersonate-extra-") || *n == "impersonate-extra-example.com%2fteam",
            "{n}"
        );
    }
}

#[tokio::test]
async fn http2_is_negotiated_with_alpn_and_trailers_stream_through() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], |_req| async {
        let frames = vec![
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(
                b"hello ",
            ))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("x-checksum", http::HeaderValue::from_static("abc"));
                t
            })),
        ];
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    })
    .await;
    // Short requests over h2 too: this is about h2's trailers.
    let svc = forwarding_short_requests_over(&pki, &backend, true);
    let addr = gateway(svc, Some(identity())).await;

    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/version"))
        .body(full(""))
        .unwrap();
    let res = h2c_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello world");
    assert_eq!(backend.seen()[0].version, http::Version::HTTP_2);
}

/// Clients that stop reading big responses hold only their own streams: the h2 connection they
/// share upstream with everyone else's requests (watches, logs) keeps a window for the rest.
/// With hyper's default 5 MiB connection window, three stalled 2 MiB stream windows used it up
/// and every other stream on the connection stopped.
#[tokio::test]
async fn clients_that_stop_reading_do_not_stall_the_shared_h2_connection() {
    const BIG: usize = 16 << 20;
    let pki = Pki::new();
    // Bytes the upstream has handed to its h2 connection: hyper takes a frame from a body only
    // once the stream has window for it, so this stops growing when the windows are full.
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sent);
    let backend = Backend::start(&pki, &[b"h2"], move |req: Request<Incoming>| {
        let counted = Arc::clone(&counted);
        async move {
            if req.uri().path().ends_with("/big") {
                // 16 MiB in 64 KiB frames, sent as fast as the reader takes them.
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                let frames = (0..BIG / chunk.len()).map(move |_| {
                    counted.fetch_add(chunk.len(), Ordering::Relaxed);
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))
                });
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            } else {
                Response::new(full("small"))
            }
        }
    })
    .await;
    let svc = forwarding_short_requests_over(&pki, &backend, true);
    let addr = gateway(svc, Some(identity())).await;
    let url = |path: &str| {
        format!("http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/pods/p/{path}")
    };
    // Four downloads whose client reads the heads and then nothing.
    let stalled = h2c_client();
    let mut held = Vec::new();
    for _ in 0..4 {
        let res = stalled
            .request(Request::get(url("proxy/big")).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    // Wait until the upstream has filled every window it is given: what it sent stops growing
    // (and is more than the four streams' first frames).
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = sent.load(Ordering::Relaxed);
            if now == last && now > 4 * (64 << 10) {
                break;
            }
            last = now;
        }
    })
    .await
    .expect("the upstream's sending settled");
    assert!(
        sent.load(Ordering::Relaxed) < 4 * BIG,
        "the stalled downloads were read to the end"
    );
    let other = h2c_client();
    let res = tokio::time::timeout(Duration::from_secs(20), async {
        let res = other
            .request(Request::get(url("log")).body(full("")).unwrap())
            .await
            .unwrap();
        body_string(res.into_body()).await
    })
    .await
    .expect("another client's request stalled behind the ones nobody reads");
    assert_eq!(res, "small");
    // Every request went over h2 (one connection holds up to 100 streams).
    let seen = backend.seen();
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2));
    drop(held);
}

/// A request body crosses frame by frame: the upstream has the first chunk while the client has
/// not sent the second (a gateway that collected the body first would deadlock here). Over h2
/// the request's trailers follow it.
#[tokio::test]
async fn request_bodies_stream_and_their_trailers_follow_over_h2() {
    type Sent = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    for h2 in [false, true] {
        let pki = Pki::new();
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let backend = Backend::start(&pki, alpn, move |req: Request<Incoming>| {
            let arrived = arrived_tx.clone();
            async move {
                let mut body = req.into_body();
                let mut data = Vec::new();
                let mut checksum = String::new();
                while let Some(frame) = body.frame().await {
                    match frame.unwrap().into_data() {
                        Ok(chunk) => {
                            data.extend_from_slice(&chunk);
                            arrived.send(chunk).unwrap();
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                checksum = trailers["x-checksum"].to_str().unwrap().to_owned();
                            }
                        }
                    }
                }
                Response::builder()
                    .header("x-checksum-seen", checksum)
                    .body(full(data))
                    .unwrap()
            }
        })
        .await;
        let svc = forwarding_short_requests_over(&pki, &backend, h2);
        let addr = gateway(svc, Some(identity())).await;
        let (frames, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();
        let body =
            StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed();
        let req = Request::post(format!(
            "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/configmaps"
        ))
        .body(body)
        .unwrap();
        let response = tokio::spawn(async move {
            if h2 {
                h2c_client().request(req).await
            } else {
                h1_client().request(req).await
            }
        });
        frames
            .send(Ok(Frame::data(Bytes::from_static(b"first "))))
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("the upstream never saw the first chunk: the request body was held back");
        assert_eq!(first.unwrap(), "first ");
        frames
            .send(Ok(Frame::data(Bytes::from_static(b"second"))))
            .unwrap();
        if h2 {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
            frames.send(Ok(Frame::trailers(trailers))).unwrap();
        }
        drop(frames);
        let res = response.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        let checksum = res.headers()["x-checksum-seen"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(body_string(res.into_body()).await, "first second");
        assert_eq!(checksum, if h2 { "abc" } else { "" });
        let version = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(backend.seen()[0].version, version);
    }
}

/// A client's trailers cross, but not the fields its headers could not carry upstream: a
/// trailer named `Impersonate-User` (announced in `Trailer`, so an HTTP/1.1 upstream would be
/// sent it) must not reach an upstream any more than the header would.
#[tokio::test]
async fn request_trailers_lose_identity_fields_on_the_way_upstream() {
    type Sent = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    for h2 in [false, true] {
        let pki = Pki::new();
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let backend = Backend::start(&pki, alpn, |req: Request<Incoming>| async move {
            let collected = req.into_body().collect().await.unwrap();
            let mut names: Vec<String> = collected
                .trailers()
                .map(|t| t.keys().map(|k| k.as_str().to_owned()).collect())
                .unwrap_or_default();
            names.sort();
            Response::builder()
                .header("x-trailers-seen", names.join(","))
                .body(full(""))
                .unwrap()
        })
        .await;
        let svc = forwarding_short_requests_over(&pki, &backend, h2);
        let addr = gateway(svc, Some(identity())).await;
        let mut trailers = http::HeaderMap::new();
        for (name, value) in [
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
            ("x-remote-user", "admin"),
            ("authorization", "Bearer someone-else"),
            ("x-checksum", "abc"),
        ] {
            trailers.insert(name, http::HeaderValue::from_static(value));
        }
        let frames: Vec<Sent> = vec![
            Ok(Frame::data(Bytes::from_static(b"{}"))),
            Ok(Frame::trailers(trailers)),
        ];
        let req = Request::post(format!(
            "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/configmaps"
        ))
        .header(
            "trailer",
            "Impersonate-User, Impersonate-Group, X-Remote-User, Authorization, X-Checksum",
        )
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
        let res = if h2 {
            h2c_client().request(req).await
        } else {
            h1_client().request(req).await
        }
        .unwrap();
        assert_eq!(res.status(), 200, "h2={h2}");
        assert_eq!(res.headers()["x-trailers-seen"], "x-checksum", "h2={h2}");
        // The identity the upstream acts for is still the gateway's, from headers alone.
        let seen = &backend.seen()[0];
        assert_eq!(
            seen.headers["impersonate-user"], "jane@example.com",
            "h2={h2}"
        );
    }
}

// HTTP/1.1 on both sides: hyper sends trailers only to a peer that said `TE: trailers` and
// only the fields a `Trailer` header announced, so both must cross the gateway (Go's
// ReverseProxy keeps `TE: trailers` and announces trailers too).
#[tokio::test]
async fn trailers_reach_an_http1_client_from_an_http1_upstream() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req| async move {
        let te = req
            .headers()
            .get("te")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let frames = vec![
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(
                b"hello",
            ))),
            Ok(Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("x-checksum", http::HeaderValue::from_static("abc"));
                t
            })),
        ];
        let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
        res.headers_mut()
            .insert("trailer", http::HeaderValue::from_static("x-checksum"));
        if let Some(te) = te {
            res.headers_mut()
                .insert("x-te-seen", http::HeaderValue::from_str(&te).unwrap());
        }
        res
    })
    .await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, Some(identity())).await;
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/version"))
        .header("te", "gzip, trailers")
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-te-seen"], "trailers");
    assert_eq!(res.headers()["trailer"], "x-checksum");
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(backend.seen()[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn responses_stream_without_buffering_and_client_disconnect_reaches_upstream() {
    let pki = Pki::new();
    // The backend sends one event, then waits for the test to say "next"; it learns the client
    // went away when its body sender fails.
    let (next_tx, next_rx) = tokio::sync::mpsc::channel::<()>(1);
    let next_rx = Arc::new(tokio::sync::Mutex::new(Some(next_rx)));
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let gone_tx = Arc::new(std::sync::Mutex::new(Some(gone_tx)));
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], move |_req| {
        let next_rx = next_rx.clone();
        let gone_tx = gone_tx.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(1);
            let mut next_rx = next_rx.lock().await.take().unwrap();
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let ev = format!("{{\"type\":\"ADDED\",\"n\":{n}}}\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        break;
                    }
                    n += 1;
                    tokio::select! {
                        more = next_rx.recv() => if more.is_none() { tx.closed().await; break },
                        () = tx.closed() => break,
                    }
                }
                if let Some(g) = gone_tx.lock().unwrap().take() {
                    let _ = g.send(());
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
    })
    .await;
    let svc = ForwardService::new(
        upstream(&pki, &backend)
            .response_header_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let addr = gateway(svc, Some(identity())).await;

    let req = Request::get(format!(
        "http://{addr}/kubernetes/cluster/prod/api/v1/pods?watch=true"
    ))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    let mut body = res.into_body();
    // Each event arrives while the backend is still holding the next one back.
    for n in 0..3 {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(data, format!("{{\"type\":\"ADDED\",\"n\":{n}}}\n"));
        next_tx.send(()).await.unwrap();
    }
    drop(body);
    tokio::time::timeout(Duration::from_secs(20), gone_rx)
        .await
        .expect("the upstream stream was not closed after the client disconnected")
        .unwrap();
}

#[tokio::test]
async fn unreachable_upstream_is_503_status_naming_the_cluster() {
    let pki = Pki::new();
    let (port, _refusing) = refused_port();
    let up = Upstream::builder("prod", format!("https://127.0.0.1:{port}"))
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_string(res.into_body()).await;
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"cluster \\\"prod\\\" is unavailable: connection refused\",\"reason\":\"ServiceUnavailable\",\"code\":503}\n"
    );
    // curl gets kube's pretty form of the same Status.
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .header("user-agent", "curl/8.5.0")
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    let body = body_string(res.into_body()).await;
    assert!(body.starts_with("{\n  \"kind\": \"Status\",\n"), "{body}");
    assert!(!body.ends_with('\n'), "{body}");
}

#[tokio::test]
async fn requests_waiting_for_a_dial_that_fails_fail_with_its_cause_without_dialling_again() {
    // An upstream that accepts TCP and never answers the TLS handshake: the dial times out.
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let up = Upstream::builder("prod", format!("https://127.0.0.1:{port}"))
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
        // Long enough for all eight requests to reach the dial's gate on a slow machine
        // before the dial fails: one that came later would rightly dial again.
        .connect_timeout(Duration::from_secs(6))
        .http1_connections_for_short_requests(0)
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let get = move || async move {
        let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .body(full(""))
            .unwrap();
        let res = h1_client().request(req).await.unwrap();
        (res.status(), body_string(res.into_body()).await)
    };
    let all: Vec<_> = (0..8).map(|_| tokio::spawn(get())).collect();
    let mut answers = Vec::new();
    for t in all {
        answers.push(t.await.unwrap());
    }
    // One dial for all eight (h2 is offered: the first connection decides), and one answer.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(answers[0].0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answers[0].1.contains("connect timed out after"),
        "{}",
        answers[0].1
    );
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}

#[tokio::test]
async fn tls_failure_is_502_status_without_secrets() {
    let pki = Pki::new();
    let other = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("served") }).await;
    let up = Upstream::builder("prod", backend.url())
        .ca_bundle_pem(other.ca_pem.clone())
        .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    let status = res.status();
    let body = body_string(res.into_body()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains(
            "cluster \\\"prod\\\": TLS handshake with the upstream failed: invalid peer certificate"
        ),
        "{body}"
    );
    assert!(!body.contains(UPSTREAM_TOKEN));
    assert!(backend.seen().is_empty());

    // Verification switched off explicitly (kubeconfig's `insecure-skip-tls-verify`, which
    // comes without a CA bundle): the same untrusted certificate is accepted.
    let up = Upstream::builder("prod", backend.url())
        .insecure_skip_tls_verify(true)
        .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let answer = get(addr, "/kubernetes/cluster/prod/api").await;
    assert_eq!(answer, (StatusCode::OK, "served".to_owned()));
    assert_eq!(backend.seen().len(), 1);
}

/// Each way an upstream fails reaches `MetricsLayer` as an upstream error of its kind, counted
/// under the target with the Status code the client got.
#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    let pki = Pki::new();
    let untrusted = Backend::start(&Pki::new(), &[b"http/1.1"], |_req| async { ok("never") }).await;
    let slow = Backend::start(&pki, &[b"http/1.1"], |_req| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        ok("late")
    })
    .await;
    let (refused, _refusing) = refused_port();
    let upstreams = [
        Upstream::builder("prod", format!("https://127.0.0.1:{refused}"))
            .ca_bundle_pem(pki.ca_pem.clone())
            .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
            .build()
            .unwrap(),
        Upstream::builder("prod", untrusted.url())
            .ca_bundle_pem(pki.ca_pem.clone())
            .credential(Credential::BearerToken(UPSTREAM_TOKEN.into()))
            .build()
            .unwrap(),
        upstream(&pki, &slow)
            .response_header_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    ];
    for (up, (kind, code)) in
        upstreams
            .into_iter()
            .zip([("connect", 503), ("tls", 502), ("timeout", 504)])
    {
        let mut registry = prometheus_client::registry::Registry::default();
        let router = Arc::new(Router::central());
        let stack = ServiceBuilder::new()
            .map_request(move |req| classify(&router, Some(&identity()), req))
            .layer(kubegate_proxy::MetricsLayer::new(&mut registry))
            .service(ForwardService::new(up));
        let addr = front(stack).await;
        let (status, _) = get(addr, "/kubernetes/cluster/prod/api/v1/pods").await;
        assert_eq!(status.as_u16(), code);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!(
                "kubegate_upstream_errors_total{{target=\"cluster/prod\",kind=\"{kind}\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "kubegate_requests_total{{target=\"cluster/prod\",verb=\"list\",code=\"{code}\"}} 1\n"
            )),
            "{text}"
        );
    }
}

#[tokio::test]
async fn response_header_timeout_applies_only_to_non_long_running_requests() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req: Request<Incoming>| async move {
        if req.uri().query() == Some("watch=true") || req.uri().path().ends_with("/slow") {
            // Longer than the gateway's header timeout below.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        ok("late")
    })
    .await;
    let up = upstream(&pki, &backend)
        .response_header_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;

    let req = Request::get(format!(
        "http://{addr}/kubernetes/cluster/prod/api/v1/namespaces/a/pods/slow"
    ))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body_string(res.into_body()).await,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Timeout: cluster \\\"prod\\\" did not send a response within 200ms\",\"reason\":\"Timeout\",\"details\":{},\"code\":504}\n"
    );

    // A watch is long-running: no header timeout.
    let req = Request::get(format!(
        "http://{addr}/kubernetes/cluster/prod/api/v1/pods?watch=true"
    ))
    .body(full(""))
    .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_string(res.into_body()).await, "late");
}

#[tokio::test]
async fn client_certificate_credential_is_presented() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"h2", b"http/1.1"], |_req| async { ok("ok") }).await;
    let up = Upstream::builder("prod", backend.url())
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::ClientCert {
            cert_pem: pki.client_cert_pem.clone().into_bytes(),
            key_pem: pki.client_key_pem.clone().into_bytes(),
        })
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .body(full(""))
        .unwrap();
    assert_eq!(h1_client().request(req).await.unwrap().status(), 200);
    let s = &backend.seen()[0];
    assert!(s.client_cert);
    assert!(s.headers.get("authorization").is_none());
    assert_eq!(s.all("impersonate-user"), ["jane@example.com"]);
}

#[tokio::test]
async fn passthrough_forwards_only_the_clients_single_bearer_token() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("ok") }).await;
    let up = Upstream::builder("prod", backend.url())
        .ca_bundle_pem(pki.ca_pem.clone())
        .identity_mode(IdentityMode::Passthrough)
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    for auths in [vec!["Bearer client-token"], vec!["Bearer a", "Bearer b"]] {
        let mut req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .header("impersonate-user", "admin")
            .body(full(""))
            .unwrap();
        for a in &auths {
            req.headers_mut()
                .append("authorization", http::HeaderValue::from_str(a).unwrap());
        }
        assert_eq!(h1_client().request(req).await.unwrap().status(), 200);
    }
    let seen = backend.seen();
    assert_eq!(seen[0].all("authorization"), ["Bearer client-token"]);
    assert!(
        seen[1].headers.get("authorization").is_none(),
        "ambiguous duplicates are dropped"
    );
    for s in &seen {
        assert!(
            s.headers
                .keys()
                .all(|k| !k.as_str().starts_with("impersonate-"))
        );
    }
}

#[tokio::test]
async fn impersonate_mode_without_identity_is_refused() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("ok") }).await;
    let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
    let addr = gateway(svc, None).await;
    let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
        .body(full(""))
        .unwrap();
    let res = h1_client().request(req).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(
        body_string(res.into_body()).await,
        "Internal Server Error: \"/kubernetes/cluster/prod/api\": no user found for request\n"
    );
    assert!(backend.seen().is_empty());
}

/// An identity without a name would be sent as `Impersonate-User: ""`, which kube-apiserver
/// takes for no impersonation at all: the request would run as the gateway's own credential.
#[tokio::test]
async fn impersonate_mode_refuses_an_identity_without_a_name() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("ok") }).await;
    for name in ["", " "] {
        let svc = ForwardService::new(upstream(&pki, &backend).build().unwrap());
        let addr = gateway(svc, Some(Identity::new(name, vec![]))).await;
        let req = Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .body(full(""))
            .unwrap();
        let res = h1_client().request(req).await.unwrap();
        assert_eq!(res.status(), 500);
        let body = body_string(res.into_body()).await;
        assert!(
            body.contains("the authenticated user cannot be impersonated: the user has no name"),
            "{body}"
        );
    }
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn token_file_rotation_is_picked_up() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |_req| async { ok("ok") }).await;
    let dir = std::env::temp_dir().join(format!("kubegate-proxy-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "token-one").unwrap();
    let up = Upstream::builder("prod", backend.url())
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::TokenFile(path.clone()))
        .token_file_recheck(Duration::ZERO)
        .build()
        .unwrap();
    let addr = gateway(ForwardService::new(up), Some(identity())).await;
    let get = || {
        Request::get(format!("http://{addr}/kubernetes/cluster/prod/api"))
            .body(full(""))
            .unwrap()
    };
    assert_eq!(h1_client().request(get()).await.unwrap().status(), 200);
    std::fs::write(&path, "token-two-rotated").unwrap();
    assert_eq!(h1_client().request(get()).await.unwrap().status(), 200);
    let seen = backend.seen();
    assert_eq!(seen[0].all("authorization"), ["Bearer token-one"]);
    assert_eq!(seen[1].all("authorization"), ["Bearer token-two-rotated"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `rewrite_redirects`, a redirect to the upstream itself reaches the client with its
/// `Location` under the client's prefix (kube's proxy transport; §V5.6's `pathPrepend`), body
/// and all; one anywhere else still gets §V5.4's 502.
#[tokio::test]
async fn redirects_to_the_upstream_itself_are_rewritten_onto_the_clients_path() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req: Request<Incoming>| async move {
        let host = req.headers()["host"].to_str().unwrap().to_owned();
        let location = match req.uri().path().rsplit('/').next().unwrap() {
            "absolute-path" => "/api/v1/namespaces/web/services/ui/proxy/login".to_owned(),
            "own-url" => format!("https://{host}/api/v1/x?y=1"),
            "relative" => "../login".to_owned(),
            "elsewhere" => "https://evil.example/api".to_owned(),
            "other-port" => "https://127.0.0.1:1/api".to_owned(),
            other => panic!("no case {other}"),
        };
        let mut res = Response::new(full("redirecting"));
        *res.status_mut() = http::StatusCode::FOUND;
        res.headers_mut()
            .insert("location", location.parse().unwrap());
        res
    })
    .await;
    let svc = ForwardService::new(
        upstream(&pki, &backend)
            .rewrite_redirects(true)
            .build()
            .unwrap(),
    );
    let addr = gateway(svc, Some(identity())).await;
    let proxy = "/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy";
    for (case, location) in [
        ("absolute-path", Some(format!("{proxy}/login"))),
        (
            "own-url",
            Some("/kubernetes/cluster/prod/api/v1/x?y=1".to_owned()),
        ),
        (
            "relative",
            Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/login".to_owned()),
        ),
        ("elsewhere", None),
        ("other-port", None),
    ] {
        let res = h1_client()
            .get(format!("http://{addr}{proxy}/{case}").parse().unwrap())
            .await
            .unwrap();
        let got = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = res.status().as_u16();
        let body = body_string(res.into_body()).await;
        match location {
            Some(want) => {
                assert_eq!(
                    (status, got.as_deref(), &*body),
                    (302, Some(&*want), "redirecting"),
                    "{case}"
                );
            }
            None => {
                assert_eq!((status, got), (502, None), "{case}");
                assert_eq!(
                    body,
                    "the backend attempted to redirect this request, which is not permitted"
                );
            }
        }
    }
}

/// §V5.4 `TestRejectForwardingRedirectsOption` (non-upgrade path; backend body `some data`).
#[tokio::test]
async fn upstream_redirects_are_refused_unless_allowed() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, &[b"http/1.1"], |req: Request<Incoming>| async move {
        // The test case is in the path: /<status>[/location]
        let mut parts = req.uri().path().trim_start_matches('/').split('/');
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let mut res = Response::new(full("some data"));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if parts.next() == Some("location") {
            res.headers_mut().insert("location", "/".parse().unwrap());
        }
        res
    })
    .await;
    // (reject, backend status, backend Location, client status, client body)
    let table: &[(bool, u16, bool, u16, &str)] = &[
        (true, 200, false, 200, "some data"),
        (
            true,
            301,
            true,
            502,
            "the backend attempted to redirect this request, which is not permitted",
        ),
        (
            true,
            304,
            true,
            502,
            "the backend attempted to redirect this request, which is not permitted",
        ),
        (true, 304, false, 304, ""),
        (false, 200, false, 200, "some data"),
        (false, 301, true, 301, "some data"),
    ];
    for &(reject, status, location, want_status, want_body) in table {
        let upstream = upstream(&pki, &backend)
            .reject_forwarding_redirects(reject)
            .build()
            .unwrap();
        let addr = gateway(ForwardService::new(upstream), Some(identity())).await;
        let path = if location {
            format!("/kubernetes/cluster/prod/{status}/location")
        } else {
            format!("/kubernetes/cluster/prod/{status}")
        };
        let res = h1_client()
            .get(format!("http://{addr}{path}").parse().unwrap())
            .await
            .unwrap();
        let case = format!("reject={reject} status={status} location={location}");
        assert_eq!(res.status().as_u16(), want_status, "{case}");
        if want_status == 502 {
            assert!(res.headers().get("location").is_none(), "{case}");
            assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        }
        assert_eq!(body_string(res.into_body()).await, want_body, "{case}");
    }
}
