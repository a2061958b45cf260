//! The listener: TLS, HTTP/1.1 (with upgrades) and HTTP/2 on one port, header limits, a header
//! read timeout, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kubegate_proxy::ClientAddr;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

/// Listener limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a new connection has, from the end of its TLS handshake, to send a complete first
    /// request head (HTTP/1.1) or start a first request (HTTP/2).
    pub header_read_timeout: Duration,
    /// Maximum number of request headers (HTTP/1.1).
    pub max_headers: usize,
    /// Maximum size of the request head in bytes (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Open connections allowed at once (0 = unlimited); further clients wait in the accept
    /// backlog until one closes. An exec, attach or port-forward session counts as the
    /// connection it was upgraded from until the session ends.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed, as kube-apiserver's
    /// servers close one after their `IdleTimeout` of 90 s. HTTP/2 gets a GOAWAY; the check
    /// runs a few times per period, so the connection closes between this and 1.5 times this.
    /// An HTTP/1.1 connection has this long after a response for the next request head to
    /// arrive whole (hyper times the wait and the head's read as one).
    pub idle_timeout: Duration,
    /// Streams an HTTP/2 client may have open at once on one connection: 100, kube-apiserver's
    /// default (`--http2-max-streams-per-connection`, below Go's own 250 since the HTTP/2
    /// rapid-reset attacks; hyper's default would be 200). A client that needs more, as
    /// client-go does, opens another connection.
    pub http2_max_concurrent_streams: u32,
    /// kube-apiserver's request timeout (60 s) for the responses of requests counted against
    /// the max-in-flight limits (not watches, exec or other long-running requests). A
    /// connection with such a response still open after this long is closed: checked once a
    /// period, so the response has run between this and twice this. Its client may have
    /// stopped reading; the slot it held is free again. On HTTP/2 the connection's other
    /// streams end with it. `Duration::ZERO`: no request timeout.
    pub response_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_headers: 128,
            max_header_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            max_connections: 0,
            idle_timeout: Duration::from_secs(90),
            http2_max_concurrent_streams: 100,
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and lets open
/// connections finish for up to [`ServerLimits::shutdown_grace`].
/// Each accepted connection uses the TLS settings `tls` holds at that moment.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    service: S,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // hyper's header read timeout runs from the moment a connection waits for a request head:
    // between requests it is the keep-alive idle timeout. The first head has the shorter
    // `header_read_timeout`, enforced below per connection.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout.max(limits.header_read_timeout))
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builders = Arc::new((http1, http2));
    // Open connections hold a clone of `open`; shutdown drops this one and waits until
    // `closed` reports that every clone is gone.
    let (open, mut closed) = tokio::sync::mpsc::channel::<std::convert::Infallible>(1);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let slots = (limits.max_connections > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(limits.max_connections)));
    tokio::pin!(shutdown);
    loop {
        let permit = match &slots {
            Some(slots) => tokio::select! {
                permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                () = &mut shutdown => break,
            },
            None => None,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // e.g. EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        // A client that went away without a FIN (laptop closed, NAT state lost) is found by
        // the kernel and its connection closed, as Go's listeners (kube-apiserver's) set TCP
        // keepalive on what they accept: once per connection, where HTTP/2 PINGs would cost
        // every request a lock and a clock read in hyper.
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(CLIENT_KEEPALIVE_IDLE)
                .with_interval(CLIENT_KEEPALIVE_INTERVAL),
        );
        // The settings current at accept time (a reload may have swapped them).
        let acceptor = TlsAcceptor::from(tls.load_full());
        let service = service.clone();
        let builders = Arc::clone(&builders);
        let open = open.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // Held for the connection's lifetime.
            // The connection's place under `max_connections`: held by the connection, and by
            // each upgraded session it hands over (below), until the last of them ends.
            let permit = permit.map(Arc::new);
            let _permit = permit.clone();
            let _open = open;
            let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            // Only present when a client CA is configured (the front proxy's), and then verified.
            let peer = session.peer_certificates().and_then(|chain| {
                crate::tls::PeerCertificate::new(
                    chain.iter().map(|c| c.clone().into_owned()).collect(),
                )
            });
            // As Go's TLS servers (kube-apiserver's) decide: HTTP/2 when ALPN chose it, else
            // HTTP/1.1. Nothing is read to guess the protocol, so no byte is waited for
            // outside the protocols' own time limits.
            let h2 = session.alpn_protocol() == Some(b"h2");
            let responses = kubegate_proxy::ConnectionResponses(Arc::default());
            let watch = Arc::clone(&responses.0);
            let prepare = move |req: &mut http::Request<Incoming>| {
                kubegate_proxy::ext::make_room(req.extensions_mut());
                req.extensions_mut().insert(ClientAddr(addr));
                req.extensions_mut().insert(responses.clone());
                if let Some(peer) = &peer {
                    req.extensions_mut().insert(peer.clone());
                }
            };
            // kube-apiserver's request timeout for counted requests (see
            // `ServerLimits::response_timeout`): once a period, a response open for a whole
            // period ends the connection.
            let overdue = async {
                let period = limits.response_timeout;
                if period.is_zero() {
                    // No request timeout (and `interval` refuses a zero period).
                    return std::future::pending().await;
                }
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                // Ticks a whole period apart even after the task was late: two ticks in a row
                // would call a response that began just before them overdue.
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if watch.tick() {
                        tracing::info!(%addr, "a response ran past the request timeout; closing its connection");
                        return;
                    }
                }
            };
            let io = TokioIo::new(tls);
            let (http1, http2) = &*builders;
            let stop = async {
                // Also when the sender is gone: the server is stopping either way.
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            let activity = Arc::new(Activity::default());
            // Before the first request (HTTP/1.1: its head read whole; HTTP/2: its HEADERS),
            // the connection has the header read timeout: a connection that stalls in its
            // first head, or sends nothing at all after TLS, is closed then. hyper's HTTP/2
            // server has no such timeout, and its HTTP/1.1 one is the idle timeout here.
            let first_request = async {
                tokio::time::sleep(limits.header_read_timeout).await;
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%addr, "no request in time; closing");
                    return;
                }
                std::future::pending().await
            };
            let ended = if h2 {
                let hyper_service = {
                    let activity = Arc::clone(&activity);
                    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                        use futures_util::FutureExt as _;
                        // Only browsers send `Origin`, and only the origin checks read
                        // `Host`: kubectl's requests skip the copy.
                        if req.headers().contains_key(http::header::ORIGIN) {
                            host_from_authority(&mut req);
                        }
                        prepare(&mut req);
                        // Held until the response body is done (or the stream is reset).
                        let open = OpenRequest::start(&activity);
                        call_when_ready(service.clone(), req).map(move |res| {
                            res.map(|res| res.map(|body| Tracked { body, _open: open }))
                        })
                    })
                };
                let conn = http2.serve_connection(io, hyper_service);
                let stop_or_idle = async {
                    tokio::select! {
                        () = stop => {}
                        () = idle(&activity, limits.idle_timeout) => {
                            tracing::debug!(%addr, "HTTP/2 connection idle; closing");
                        }
                    }
                };
                tokio::select! {
                    ended = drive(conn, stop_or_idle) => ended,
                    () = first_request => Ok(()),
                    () = overdue => Ok(()),
                }
            } else {
                let hyper_service = {
                    let activity = Arc::clone(&activity);
                    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                        use futures_util::FutureExt as _;
                        activity.requests.fetch_add(1, Ordering::Relaxed);
                        let large_head = head_len(&req) > LARGE_HEAD;
                        prepare(&mut req);
                        let permit = permit.clone();
                        call_when_ready(service.clone(), req).map(move |mut res| {
                            if large_head && let Ok(res) = &mut res {
                                close_after(res);
                            }
                            // An exec or port-forward outlives this connection's task once
                            // hyper hands its socket over: it keeps the connection's place
                            // under `max_connections` until it ends, as the open
                            // connection it still is.
                            if let (Ok(res), Some(permit)) = (&res, permit)
                                && let Some(session) =
                                    res.extensions().get::<kubegate_proxy::UpgradeSession>()
                            {
                                session.hold(permit);
                            }
                            res
                        })
                    })
                };
                let conn = http1.serve_connection(io, hyper_service).with_upgrades();
                tokio::select! {
                    ended = drive(conn, stop) => ended,
                    () = first_request => Ok(()),
                    () = overdue => Ok(()),
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(limits.shutdown_grace, closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// An HTTP/2 request names its host in `:authority`, which hyper puts in the URI, and
/// browsers send no `Host` header with it. The gateway reads `Host` as HTTP/1.1 gives it (the
/// same-origin checks of browser logins, for one), so it is filled in from `:authority`, as
/// Go's HTTP/2 server fills in `Request.Host` (RFC 9113 §8.3.1). It never reaches an upstream:
/// forwarding removes `Host`.
fn host_from_authority<B>(req: &mut http::Request<B>) {
    if req.headers().contains_key(http::header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(http::header::HOST, host);
    }
}

/// How long a client connection may be silent before the kernel probes it (TCP keepalive).
pub const CLIENT_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// The time between unanswered probes; the kernel gives up after its count of them (9 on
/// Linux by default).
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A hyper server connection that can be told to finish its requests and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// Serves `conn` to its end; once `stop` resolves (shutdown, an idle HTTP/2 connection),
/// lets it finish the requests it has and close (HTTP/2 sends GOAWAY; HTTP/1.1 closes after
/// the response in flight).
async fn drive<C: Graceful>(conn: C, stop: impl Future<Output = ()>) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => return ended,
        () = stop => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// What a connection's requests are doing, for its first-request and (HTTP/2) idle timeouts:
/// counters, so a request pays at most two atomic additions and no clock read or wake-up.
#[derive(Debug, Default)]
struct Activity {
    /// Requests started on the connection.
    requests: AtomicU64,
    /// Requests whose response is not done (HTTP/2 only: hyper times HTTP/1.1's idle gaps).
    in_flight: AtomicUsize,
}

/// A request on an HTTP/2 connection whose response is not done, until dropped.
struct OpenRequest(Arc<Activity>);

impl OpenRequest {
    fn start(activity: &Arc<Activity>) -> OpenRequest {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        OpenRequest(Arc::clone(activity))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is done or dropped.
    struct Tracked<B> {
        #[pin]
        body: B,
        _open: OpenRequest,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once the connection has had no request in flight and started none for at least
/// `limit`: checked at a quarter of `limit`, so it resolves between `limit` and 1.5 × `limit`
/// after the last response ended.
async fn idle(activity: &Activity, limit: Duration) {
    const CHECKS: u32 = 4;
    let mut started = activity.requests.load(Ordering::Relaxed);
    let mut quiet = 0;
    // Quiet at CHECKS + 1 checks in a row (nothing started since the check before them,
    // nothing in flight at each): the last response ended before the first of them, at least
    // `limit` before the last.
    while quiet <= CHECKS {
        tokio::time::sleep(limit / CHECKS).await;
        let now = activity.requests.load(Ordering::Relaxed);
        if now == started && activity.in_flight.load(Ordering::Relaxed) == 0 {
            quiet += 1;
        } else {
            quiet = 0;
            started = now;
        }
    }
}

/// A request head past this size (request line and headers, as [`head_len`] counts them)
/// ends its HTTP/1.1 connection after the response. hyper grows a connection's read buffer to
/// hold the largest head it has read (up to `max_header_bytes`, 1 MiB by default, as Go's) and
/// never shrinks it: without this, one large head per connection left every idle connection
/// holding ≈ 2 MiB, which an unauthenticated client could repeat over thousands of them. Go
/// reads heads through a fixed 4 KiB buffer; closing the rare connection that sent a large
/// head gives its memory back as surely.
const LARGE_HEAD: usize = 64 << 10;

/// The size of a request's head as it was read, near enough: the request target and each
/// header's name and value with their separators.
fn head_len<B>(req: &http::Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    req.headers().iter().fold(target + 16, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

/// Asks hyper to close the HTTP/1.1 connection once `res` is written (`Connection: close`),
/// unless `res` switches protocols, whose connection is handed over.
fn close_after<B>(res: &mut http::Response<B>) {
    if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// Calls `service` with `req`: at once when it is ready now, which every layer of the
/// gateway's stack is, else through [`ServiceExt::oneshot`], which waits for it. Checking
/// readiness first saves the request's trip through `Oneshot`'s two states (two moves of the
/// request and of the whole stack's response future, ≈ 1 % of a small GET's CPU).
fn call_when_ready<S, R>(
    mut service: S,
    req: R,
) -> futures_util::future::Either<S::Future, tower::util::Oneshot<S, R>>
where
    S: Service<R, Error = std::convert::Infallible>,
{
    use futures_util::future::Either;
    use std::task::{Context, Poll, Waker};
    // A service that is not ready registers this no-op waker; `oneshot` polls it again with
    // the connection task's own, which it must register then.
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Either::Left(service.call(req)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => Either::Right(service.oneshot(req)),
    }
}

/// The address a listener is bound to, for logs.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A gateway listener with a 1 s header read timeout and a 2 s idle timeout over a
    /// trivial service, and a client TLS config that trusts it and offers `alpn`. (Long
    /// enough that a slow machine's pauses between a test's steps close nothing the test did
    /// not mean to leave idle.)
    async fn listener_and_client(alpn: &[&[u8]]) -> (SocketAddr, tokio_rustls::TlsConnector) {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..ServerLimits::default()
        };
        listener_and_client_with(alpn, limits).await
    }

    /// The same with other limits.
    async fn listener_and_client_with(
        alpn: &[&[u8]],
        limits: ServerLimits,
    ) -> (SocketAddr, tokio_rustls::TlsConnector) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers with the `Host` header it was given, if any; `/slow` streams its body for
        // 3.2 s, longer than the idle timeout.
        let service = tower::service_fn(|req: http::Request<Incoming>| async move {
            use futures_util::StreamExt as _;
            let chunks = if req.uri().path() == "/slow" { 8 } else { 0 };
            let stream = futures_util::stream::unfold(chunks, |left| async move {
                if left == 0 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                let frame = http_body::Frame::data(bytes::Bytes::from_static(b"x"));
                Some((Ok::<_, std::convert::Infallible>(frame), left - 1))
            });
            let body = http_body_util::StreamBody::new(stream.boxed());
            let mut res = http::Response::new(body);
            if let Some(host) = req.headers().get(http::header::HOST) {
                res.headers_mut().insert("x-host", host.clone());
            }
            Ok::<_, std::convert::Infallible>(res)
        });
        let tls = Arc::new(arc_swap::ArcSwap::from_pointee(server));
        tokio::spawn(serve(
            listener,
            tls,
            service,
            limits,
            std::future::pending(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        (addr, tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    /// A connection that completes TLS and then sends `first` (and nothing more) is closed by
    /// the gateway within a few header read timeouts (300 ms; the idle timeout, a minute,
    /// cannot be what closes it).
    async fn closed_when_silent(alpn: &[&[u8]], first: &[u8]) {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            ..ServerLimits::default()
        };
        let (addr, connector) = listener_and_client_with(alpn, limits).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(first).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        // Whatever the server sends (HTTP/2 SETTINGS, GOAWAY) is read until it closes.
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "still open after {:?}", start.elapsed());
    }

    /// hyper keeps a connection's read buffer as large as the largest head it read: an
    /// HTTP/1.1 connection that sent a head past 64 KiB is closed after its response (so an
    /// idle connection cannot be made to hold a megabyte), one with usual heads is kept alive.
    #[tokio::test]
    async fn an_http1_connection_that_sent_a_large_head_is_closed_after_its_response() {
        let (addr, connector) = listener_and_client(&[b"http/1.1"]).await;
        // Sends a head with `header`, reads the response head (however slow the machine), then
        // tells whether the connection closes within `close_wait`.
        let exchange = |header: String, close_wait: Duration| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                let head = format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {header}\r\n\r\n");
                tls.write_all(head.as_bytes()).await.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut closed = false;
                while !closed && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => closed = true,
                        Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                        Err(_) => panic!("no response head in 20 s"),
                    }
                }
                let closed = closed
                    || tokio::time::timeout(close_wait, async {
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                        }
                    })
                    .await
                    .is_ok();
                (String::from_utf8_lossy(&seen).to_ascii_lowercase(), closed)
            }
        };
        let (response, closed) = exchange("x".repeat(100_000), Duration::from_secs(20)).await;
        assert!(response.starts_with("http/1.1 200"), "{response}");
        assert!(response.contains("connection: close"), "{response}");
        assert!(closed, "the connection stayed open after a 100 KB head");
        let (response, closed) = exchange("x".repeat(1_000), Duration::from_secs(1)).await;
        assert!(response.starts_with("http/1.1 200"), "{response}");
        assert!(!response.contains("connection: close"), "{response}");
        assert!(!closed, "a usual head closed the connection");
    }

    #[tokio::test]
    async fn an_http1_connection_that_sends_nothing_is_closed() {
        closed_when_silent(&[], b"").await;
        closed_when_silent(&[b"http/1.1"], b"GET / HTTP/1.1\r\n").await;
    }

    /// Between requests an HTTP/1.1 connection waits for the idle timeout, as kube-apiserver's
    /// does (90 s), not the header read timeout a new connection has for its first head:
    /// before, the gateway closed a kept-alive connection after 10 s, and a client polling
    /// every half minute paid a TLS handshake each time. Idle past the idle timeout, it is
    /// closed.
    #[tokio::test]
    async fn an_http1_connection_waits_the_idle_timeout_between_requests() {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(8),
            ..ServerLimits::default()
        };
        let (addr, connector) = listener_and_client_with(&[b"http/1.1"], limits).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let get = |send: &mut hyper::client::conn::http1::SendRequest<_>| {
            let req = http::Request::get("/")
                .header(http::header::HOST, "localhost")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            send.send_request(req)
        };
        for round in 0..3 {
            if round > 0 {
                // Two header read timeouts, well inside the idle timeout; the request after
                // the pause is what shows the connection stayed open through it.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert!(!conn.is_finished(), "closed between requests");
            }
            send.ready().await.unwrap();
            let res = get(&mut send).await.unwrap();
            assert_eq!(res.status(), 200);
            use http_body_util::BodyExt as _;
            res.into_body().collect().await.unwrap();
        }
        let closed = tokio::time::timeout(Duration::from_secs(20), conn).await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }

    /// hyper's HTTP/2 server has no timeout of its own before a first request: before, a
    /// connection that negotiated h2, or sent nothing at all, stayed open for ever.
    #[tokio::test]
    async fn an_http2_connection_that_starts_no_request_is_closed() {
        closed_when_silent(&[b"h2"], b"").await;
        // The client preface and an empty SETTINGS frame, then silence.
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        closed_when_silent(&[b"h2"], &preface).await;
    }

    /// An HTTP/2 client connection to the listener, driven on its own task.
    async fn h2_client(
        addr: SocketAddr,
        connector: &tokio_rustls::TlsConnector,
    ) -> (
        hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        (send, tokio::spawn(conn))
    }

    /// A connection that has served a request is not closed by that deadline, nor while a
    /// request comes every 200 ms (a tenth of the idle timeout), for longer than the idle
    /// timeout: each request puts the idle deadline off.
    #[tokio::test]
    async fn an_http2_connection_in_use_stays_open() {
        let (addr, connector) = listener_and_client(&[b"h2"]).await;
        let (mut send, conn) = h2_client(addr, &connector).await;
        for _ in 0..16 {
            assert_eq!(get(&mut send, addr, "/").await, "");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!conn.is_finished(), "closed although in use");
        }
        send.ready().await.unwrap();
    }

    /// As kube-apiserver's HTTP/2 server does after its `IdleTimeout`: with no request in
    /// flight for the idle timeout, the connection is closed.
    #[tokio::test]
    async fn an_idle_http2_connection_is_closed() {
        let (addr, connector) = listener_and_client(&[b"h2"]).await;
        let (mut send, conn) = h2_client(addr, &connector).await;
        assert_eq!(get(&mut send, addr, "/").await, "");
        let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }

    /// A response still streaming is a request in flight: the connection stays open past the
    /// idle timeout until the body is done.
    #[tokio::test]
    async fn a_streaming_response_keeps_its_http2_connection_open() {
        let (addr, connector) = listener_and_client(&[b"h2"]).await;
        let (mut send, conn) = h2_client(addr, &connector).await;
        assert_eq!(get(&mut send, addr, "/slow").await, "xxxxxxxx");
        // A GOAWAY while the body streamed would refuse this one.
        assert_eq!(get(&mut send, addr, "/").await, "");
        assert!(!conn.is_finished(), "closed while a response streamed");
    }

    /// GETs `path` and reads the whole body as text.
    async fn get(
        send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        addr: SocketAddr,
        path: &str,
    ) -> String {
        use http_body_util::BodyExt as _;
        let req = http::Request::get(format!("https://localhost:{}{path}", addr.port()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// As kube-apiserver does, the listener allows 100 concurrent streams per HTTP/2
    /// connection (hyper's own default is 200).
    #[tokio::test]
    async fn an_http2_connection_allows_kubes_hundred_streams() {
        let (addr, connector) = listener_and_client(&[b"h2"]).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (send, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        // A first exchange: the server's SETTINGS have been read by its end.
        let req = http::Request::get(format!("https://localhost:{}/", addr.port()))
            .body(())
            .unwrap();
        let (response, _) = send.send_request(req, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(send.current_max_send_streams(), 100);
    }

    /// A browser's HTTP/2 request carries `:authority` and `Origin` but no `Host`: the service
    /// sees a `Host` made from `:authority`, so the same-origin checks of logins work. Without
    /// `Origin` (kubectl), nothing is added.
    #[tokio::test]
    async fn an_http2_browser_request_gets_its_host_from_authority() {
        let (addr, connector) = listener_and_client(&[b"h2"]).await;
        let (mut send, _conn) = h2_client(addr, &connector).await;
        let host = format!("localhost:{}", addr.port());
        for origin in [Some("https://elsewhere.example"), None] {
            let mut req = http::Request::get(format!("https://{host}/"));
            if let Some(origin) = origin {
                req = req.header(http::header::ORIGIN, origin);
            }
            let req = req
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            send.ready().await.unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(
                res.headers().get("x-host").map(|h| h.to_str().unwrap()),
                origin.map(|_| host.as_str()),
                "{origin:?}"
            );
        }
    }
}
