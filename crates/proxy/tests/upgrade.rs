//! Upgrade path regression tests (CVE-2018-1002105, CVE-2020-8559; vectors §V5.1–V5.3) against a
//! raw TLS backend socket server written here, driven by a raw TCP client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, body_string, front, full, h1_client};
use http::Request;
use hyper::body::Incoming;
use kubegate_proxy::audit::{AuditEvent, AuditSink};
use kubegate_proxy::{
    AuditLayer, Credential, ForwardService, Identity, LongRunning, MetricsLayer, RequestMeta,
    Upstream, UpstreamPath,
};
use kubegate_routing::{RequestInfo, Router};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

/// Failsafe for reads that must finish; never a timing assertion.
const FAILSAFE: Duration = Duration::from_secs(20);

/// A hand-written TLS backend: reads one request head, answers `response` verbatim, then keeps
/// the connection open and logs (and, if `echo`, echoes) every further byte — the most
/// dangerous kubelet imaginable.
struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl RawBackend {
    async fn start(pki: &Pki, response: Vec<u8>, echo: bool) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[b"http/1.1"], false)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let log = log.clone();
                let response = response.clone();
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = closed_tx.send(());
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    log.lock().unwrap().extend_from_slice(&head);
                    tls.write_all(&response).await.unwrap();
                    tls.flush().await.unwrap();
                    loop {
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if echo && tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = closed_tx.send(());
                });
            }
        });
        RawBackend {
            addr,
            received,
            closed,
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

async fn gateway(pki: &Pki, backend_port: u16) -> SocketAddr {
    gateway_to(upstream(pki, backend_port).build().unwrap()).await
}

fn upstream(pki: &Pki, backend_port: u16) -> kubegate_proxy::UpstreamBuilder {
    Upstream::builder("prod", format!("https://127.0.0.1:{backend_port}"))
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::BearerToken("gateway-token".into()))
}

async fn gateway_to(up: Upstream) -> SocketAddr {
    let router = Arc::new(Router::central());
    let stack = ServiceBuilder::new()
        .map_request(move |req: Request<Incoming>| routed_as_jane(&router, req))
        .service(ForwardService::new(up));
    front(stack).await
}

/// What routing tells `ForwardService` (the upstream path, whether the request is
/// long-running), and jane as the authenticated identity.
fn routed_as_jane(router: &Router, mut req: Request<Incoming>) -> Request<Incoming> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let route = router.route(&path, query.as_deref()).unwrap();
    let method = req.method().as_str().to_owned();
    let info = RequestInfo::parse(&method, &route.rest, route.query).unwrap();
    req.extensions_mut()
        .insert(UpstreamPath::from_route(route.raw_rest, route.query).unwrap());
    req.extensions_mut()
        .insert(LongRunning(info.is_long_running()));
    req.extensions_mut()
        .insert(Identity::new("jane", vec!["devs".into()]));
    req
}

const EXEC_HEAD: &str = "POST /kubernetes/cluster/prod/api/v1/namespaces/default/pods/p1/exec?command=ls&stdout=true HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nImpersonate-User: admin\r\nAuthorization: Bearer client\r\nContent-Length: 0\r\n\r\n";
const FOLLOW_UP: &str = "GET /there HTTP/1.1\r\nHost: gateway\r\n\r\n";

/// Sends the exec upgrade request and reads until the backend's `EARLY` bytes have come
/// through after the 101; the connection stays open.
async fn exec_until_early(gw: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(EXEC_HEAD.as_bytes()).await.unwrap();
    let got = read_until_early(&mut c).await;
    (c, got)
}

/// Reads what the gateway sends until the backend's `EARLY` bytes (sent after its 101).
async fn read_until_early(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"EARLY") {
        let n = tokio::time::timeout(FAILSAFE, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Sends the exec upgrade request with a pipelined follow-up request, then reads until EOF.
async fn exec_with_smuggled_follow_up(gw: SocketAddr) -> String {
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(format!("{EXEC_HEAD}{FOLLOW_UP}").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(FAILSAFE, c.read_to_end(&mut out))
        .await
        .expect("the gateway kept the client connection open after a failed upgrade")
        .unwrap();
    // The connection is closed; a late write cannot reach anything either.
    let _ = c.write_all(FOLLOW_UP.as_bytes()).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn assert_backend_saw_one_request_only(backend: &mut RawBackend) {
    tokio::time::timeout(FAILSAFE, backend.closed.recv())
        .await
        .expect("the gateway kept the backend connection open after a failed upgrade");
    let got = backend.received();
    assert_eq!(got.matches("HTTP/1.1\r\n").count(), 1, "{got}");
    assert!(
        !got.contains("/there"),
        "smuggled request reached the backend: {got}"
    );
    assert!(
        got.ends_with("\r\n\r\n"),
        "bytes after the request head reached the backend: {got}"
    );
}

// V5.1 TestProxyUpgradeErrorResponse: non-101 below 400 is never forwarded (CVE-2020-8559).
#[tokio::test]
async fn v5_1_non_101_below_400_is_not_forwarded() {
    for code in [200u16, 300, 302, 307] {
        let pki = Pki::new();
        let response = format!(
            "HTTP/1.1 {code} X\r\nLocation: https://example.com/there\r\nContent-Length: 9\r\n\r\nsome data"
        );
        let mut backend = RawBackend::start(&pki, response.into_bytes(), false).await;
        let gw = gateway(&pki, backend.addr.port()).await;
        let out = exec_with_smuggled_follow_up(gw).await;
        assert!(out.starts_with("HTTP/1.1 500 "), "{code}: {out}");
        let want = format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"invalid upgrade response: status code {code}\",\"code\":500}}\n"
        );
        assert!(out.ends_with(&want), "{code}: {out}");
        assert!(
            !out.to_ascii_lowercase().contains("location"),
            "{code}: Location leaked: {out}"
        );
        assert!(
            !out.contains("some data"),
            "{code}: backend body leaked: {out}"
        );
        assert_eq!(out.matches("HTTP/1.1").count(), 1, "{code}: {out}");
        assert_backend_saw_one_request_only(&mut backend).await;
    }
}

// V5.2 TestProxyUpgradeErrorResponseTerminates: ≥ 400 is forwarded, then both sides are closed
// and a follow-up request never reaches the backend (CVE-2018-1002105).
#[tokio::test]
async fn v5_2_error_responses_are_forwarded_then_both_connections_close() {
    for code in [400u16, 500] {
        let pki = Pki::new();
        let response = format!("HTTP/1.1 {code} X\r\nContent-Length: 9\r\n\r\nsome data");
        let mut backend = RawBackend::start(&pki, response.into_bytes(), false).await;
        let gw = gateway(&pki, backend.addr.port()).await;
        let out = exec_with_smuggled_follow_up(gw).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {code} ")),
            "{code}: {out}"
        );
        assert!(out.ends_with("\r\n\r\nsome data"), "{code}: {out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{code}: {out}"
        );
        assert_eq!(out.matches("HTTP/1.1").count(), 1, "{code}: {out}");
        assert_backend_saw_one_request_only(&mut backend).await;
    }
}

// V5.3 TestProxyUpgradeConnectionErrorResponse: the dial error is reported to the client.
#[tokio::test]
async fn v5_3_dial_failure_is_reported() {
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = gateway(&pki, port).await;
    let out = exec_with_smuggled_follow_up(gw).await;
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(
        out.contains("cluster \\\"prod\\\" is unavailable: connection refused"),
        "{out}"
    );
}

// The upgrade's own dial keeps the upstream's connect timeout, TLS handshake included: a
// backend that accepts TCP and never answers the handshake gets the client a 503 naming the
// cluster, not a hung exec.
#[tokio::test]
async fn an_upgrade_dial_that_never_completes_times_out() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let up = upstream(&pki, port)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let out = exec_with_smuggled_follow_up(gateway_to(up).await).await;
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(
        out.contains("cluster \\\"prod\\\" is unavailable: TLS handshake timed out after 300ms"),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}

// V5.3's other half: the connection to the backend fails after the dial (TLS handshake done,
// the request read, then the backend hangs up without answering). The error reaches the client
// as a Status naming the cluster, and the connection is closed: nothing is bridged.
#[tokio::test]
async fn v5_3_backend_failure_after_the_dial_is_reported() {
    use tokio::io::AsyncBufReadExt;
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[b"http/1.1"], false)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                // Read the whole request head first, so the gateway's write has landed and
                // what it meets is the hang-up itself, every time.
                let mut tls = tokio::io::BufReader::new(tls);
                let mut line = String::new();
                while tls.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                drop(tls);
            }
        }
    });
    let gw = gateway(&pki, port).await;
    let out = exec_with_smuggled_follow_up(gw).await;
    let status = out.lines().next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 502 "), "{out}");
    assert!(
        out.ends_with("\r\n\r\n{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"cluster \\\"prod\\\": upstream request failed: unexpected EOF\",\"code\":502}\n"),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}

#[tokio::test]
async fn switching_protocols_bridges_both_directions_including_early_bytes() {
    let pki = Pki::new();
    let response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nEARLY".to_vec();
    let backend = RawBackend::start(&pki, response, true).await;
    let gw = gateway(&pki, backend.addr.port()).await;

    let (mut c, got) = exec_until_early(gw).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 101 switching protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("upgrade: spdy/3.1"), "{text}");
    assert!(
        text.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{text}"
    );

    c.write_all(b"ping-1").await.unwrap();
    let mut echo = vec![0u8; 6];
    tokio::time::timeout(FAILSAFE, c.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, b"ping-1");

    let head = backend.received();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with(
            "POST /api/v1/namespaces/default/pods/p1/exec?command=ls&stdout=true HTTP/1.1\r\n"
        ),
        "{head}"
    );
    assert!(
        lower.contains("authorization: bearer gateway-token\r\n"),
        "{head}"
    );
    assert!(lower.contains("impersonate-user: jane\r\n"), "{head}");
    assert!(lower.contains("impersonate-group: devs\r\n"), "{head}");
    assert!(
        !lower.contains("admin") && !lower.contains("bearer client"),
        "{head}"
    );
    assert!(
        lower.contains("connection: upgrade\r\n") && lower.contains("upgrade: spdy/3.1\r\n"),
        "{head}"
    );
    assert!(lower.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
}

/// A bearer token offered as a WebSocket subprotocol (kube-apiserver's
/// `base64url.bearer.authorization.k8s.io.` convention for browsers) is a credential: the
/// backend sees the other subprotocols, not the token, as it sees no client `Authorization`.
#[tokio::test]
async fn a_bearer_token_offered_as_a_websocket_subprotocol_does_not_reach_the_backend() {
    let pki = Pki::new();
    let response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\nEARLY".to_vec();
    let backend = RawBackend::start(&pki, response, false).await;
    let gw = gateway(&pki, backend.addr.port()).await;
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(
        b"GET /kubernetes/cluster/prod/api/v1/namespaces/default/pods/p1/exec?command=ls&stdout=true HTTP/1.1\r\n\
          Host: gateway\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4tb2YtYm9i\r\n\
          Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until_early(&mut c).await;
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let head = backend.received().to_ascii_lowercase();
    assert!(
        head.contains("\r\nsec-websocket-protocol: v5.channel.k8s.io,v4.channel.k8s.io\r\n"),
        "{head}"
    );
    assert!(!head.contains("bearer.authorization"), "{head}");
    assert!(!head.contains("dg9rzw4tb2ytym9i"), "{head}");
    assert!(head.contains("impersonate-user: jane\r\n"), "{head}");
}

/// The session of an exec is long-running; waiting for its `101` is not. A backend that reads
/// the upgrade request and never answers gets the client the 504 of any request without an
/// answer in the response-header timeout, and the connection closed.
#[tokio::test]
async fn an_upgrade_the_backend_never_answers_times_out() {
    let pki = Pki::new();
    let backend = RawBackend::start(&pki, Vec::new(), false).await;
    let up = upstream(&pki, backend.addr.port())
        .response_header_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let out = exec_with_smuggled_follow_up(gateway_to(up).await).await;
    assert!(out.starts_with("HTTP/1.1 504 "), "{out}");
    assert!(
        out.contains("did not send a response within 300ms"),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}

#[tokio::test]
async fn switching_to_a_different_protocol_is_refused() {
    let pki = Pki::new();
    let response =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    let backend = RawBackend::start(&pki, response, true).await;
    let gw = gateway(&pki, backend.addr.port()).await;
    let out = exec_with_smuggled_follow_up(gw).await;
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
    assert!(out.contains("invalid upgrade response"), "{out}");
}

#[tokio::test]
async fn only_spdy_and_websocket_upgrades_are_allowed() {
    let pki = Pki::new();
    let backend = RawBackend::start(
        &pki,
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
        true,
    )
    .await;
    let gw = gateway(&pki, backend.addr.port()).await;
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(EXEC_HEAD.replace("SPDY/3.1", "h2c").as_bytes())
        .await
        .unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(FAILSAFE, c.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("\"reason\":\"BadRequest\""), "{out}");
    assert!(backend.received().is_empty());
}

/// A plain GET through the gateway to `backend`: status and body as the client got them.
async fn get_through(pki: &Pki, backend: &RawBackend) -> (http::StatusCode, String) {
    let gw = gateway(pki, backend.addr.port()).await;
    let req = Request::get(format!(
        "http://{gw}/kubernetes/cluster/prod/api/v1/namespaces"
    ))
    .body(full(""))
    .unwrap();
    let res = tokio::time::timeout(FAILSAFE, h1_client().request(req))
        .await
        .expect("the gateway answered")
        .unwrap();
    let status = res.status();
    (status, body_string(res.into_body()).await)
}

// A 101 to a request that asked for no upgrade would switch the client's connection to a
// protocol nobody agreed on: Go's ReverseProxy refuses it ("backend tried to switch
// protocol"), and so does the gateway, without relaying a byte of what followed the 101.
#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let pki = Pki::new();
    let response =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\nswitched-bytes"
            .to_vec();
    let backend = RawBackend::start(&pki, response, false).await;
    let (status, body) = get_through(&pki, &backend).await;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"cluster \\\"prod\\\" tried to switch protocols for a request that asked for no upgrade\",\"code\":502}\n"
    );
}

// RFC 9112 §6.3: a message with both Transfer-Encoding and Content-Length is framed by its
// chunks, and an intermediary removes the Content-Length before forwarding. Kept, it framed
// the client's copy at 2 bytes and cut the body short.
#[tokio::test]
async fn a_chunked_response_that_also_states_a_length_reaches_the_client_whole() {
    let pki = Pki::new();
    let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n".to_vec();
    let backend = RawBackend::start(&pki, response, false).await;
    let (status, body) = get_through(&pki, &backend).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body, "abcdefghijklmnopqrstuvwxyz");
}

// kube-apiserver gives a backend's error answer to an upgrade 10 s to pass through. A backend
// that sends the head of an error and then trickles (here: stops) must not hold the client's
// connection: it ends once the 10 s are up, with whatever part of the body had arrived, and
// the client can tell the body is incomplete: a length it was not given, or a chunked body
// without its last chunk (before, the chunked one ended as if complete).
#[tokio::test]
async fn a_stalled_error_answer_to_an_upgrade_is_cut_off_after_10_s() {
    let pki = Pki::new();
    let through = |response: &'static [u8]| {
        let pki = &pki;
        async move {
            let backend = RawBackend::start(pki, response.to_vec(), false).await;
            let gw = gateway(pki, backend.addr.port()).await;
            let mut c = TcpStream::connect(gw).await.unwrap();
            c.write_all(EXEC_HEAD.as_bytes()).await.unwrap();
            let started = std::time::Instant::now();
            let mut out = Vec::new();
            tokio::time::timeout(FAILSAFE, c.read_to_end(&mut out))
                .await
                .expect("the gateway held the connection past the 10 s an error answer gets")
                .unwrap_or_default();
            let waited = started.elapsed();
            assert!(waited >= Duration::from_secs(9), "cut off after {waited:?}");
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let (sized, chunked) = tokio::join!(
        through(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\npartial"),
        through(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n"),
    );
    assert!(sized.starts_with("HTTP/1.1 403 "), "{sized}");
    assert!(sized.contains("content-length: 100"), "{sized}");
    assert!(sized.ends_with("partial"), "{sized}");
    assert!(chunked.starts_with("HTTP/1.1 500 "), "{chunked}");
    assert!(chunked.contains("partial"), "{chunked}");
    assert!(
        !chunked.ends_with("0\r\n\r\n"),
        "a cut chunked body ended as if complete: {chunked:?}"
    );
}

/// Sends every event it records down a channel, so a test can wait for one without polling.
struct ChannelSink(tokio::sync::mpsc::UnboundedSender<AuditEvent>);

impl AuditSink for ChannelSink {
    fn record(&self, event: &AuditEvent) {
        let _ = self.0.send(event.clone());
    }
}

/// `kubegate_requests_in_flight` of the exec's target, as the registry reports it.
fn in_flight(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"kubegate_requests_in_flight{target="cluster/prod"} "#))
        .unwrap_or("absent")
        .to_owned()
}

// kube-apiserver's UpgradeAwareHandler.tryUpgrade returns only when the bidirectional copy
// ends, so its audit event completes, and the request leaves the in-flight count, when the
// session ends. Here the 101's empty body ended both at the session's start.
#[tokio::test]
async fn an_upgraded_session_is_audited_and_in_flight_until_it_ends() {
    let pki = Pki::new();
    let response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nEARLY".to_vec();
    let mut backend = RawBackend::start(&pki, response, true).await;
    let up = Upstream::builder("prod", format!("https://127.0.0.1:{}", backend.addr.port()))
        .ca_bundle_pem(pki.ca_pem.clone())
        .credential(Credential::BearerToken("gateway-token".into()))
        .build()
        .unwrap();
    let mut registry = Registry::default();
    let metrics = MetricsLayer::new(&mut registry);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let router = Arc::new(Router::central());
    let stack = ServiceBuilder::new()
        .map_request(move |req: Request<Incoming>| {
            let mut req = routed_as_jane(&router, req);
            req.extensions_mut().insert(RequestMeta {
                target: Arc::from("cluster/prod"),
                verb: "create".into(),
                object_ref: None,
            });
            req
        })
        .layer(metrics)
        .layer(AuditLayer::new(ChannelSink(events_tx)))
        .service(ForwardService::new(up));
    let gw = front(stack).await;
    assert_eq!(in_flight(&registry), "absent");

    let (mut c, got) = exec_until_early(gw).await;
    assert!(got.starts_with(b"HTTP/1.1 101 "));
    // One round trip through the bridge: by now the 101 and its empty body are long written
    // (hyper hands the connection over only after that).
    c.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(FAILSAFE, c.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");

    let started = events.try_recv().expect("the ResponseStarted event");
    assert_eq!(started.stage, "ResponseStarted");
    assert_eq!(started.response_status.as_ref().unwrap().code, 101);
    assert!(
        events.try_recv().is_err(),
        "an event besides ResponseStarted while the session is open"
    );
    assert_eq!(in_flight(&registry), "1");

    // The client hangs up; the bridge's copy ends, and with it the request.
    drop(c);
    let complete = tokio::time::timeout(FAILSAFE, events.recv())
        .await
        .expect("no ResponseComplete after the session ended")
        .unwrap();
    assert_eq!(complete.stage, "ResponseComplete");
    assert_eq!(&*complete.audit_id, &*started.audit_id);
    assert_eq!(complete.response_status.as_ref().unwrap().code, 101);
    assert!(complete.stage_timestamp >= started.stage_timestamp);
    // The session drops what it held in one go, on the bridge's task; on this single-threaded
    // runtime that finished before this task ran again.
    assert_eq!(in_flight(&registry), "0");
    tokio::time::timeout(FAILSAFE, backend.closed.recv())
        .await
        .expect("the backend connection stayed open after the client left");
    assert!(events.try_recv().is_err(), "more than one ResponseComplete");
}
