//! The listener: TLS, HTTP/1.1 (with upgrades) and HTTP/2 on one port, header limits, a header
//! read timeout, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use kubegate_proxy::ClientAddr;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

/// Listener limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time allowed to receive a complete HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// Maximum number of request headers (HTTP/1.1).
    pub max_headers: usize,
    /// Maximum size of the request head in bytes (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Open connections allowed at once (0 = unlimited); further clients wait in the accept
    /// backlog until one closes.
    pub max_connections: usize,
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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let builder = Arc::new(builder);
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        // The settings current at accept time (a reload may have swapped them).
        let acceptor = TlsAcceptor::from(tls.load_full());
        let service = service.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the connection's lifetime.
            let _permit = permit;
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
            // Only present when a client CA is configured (the front proxy's), and then verified.
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::tls::PeerCertificate(Arc::new(leaf.clone().into_owned())));
            let hyper_service =
                hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                    kubegate_proxy::ext::make_room(req.extensions_mut());
                    req.extensions_mut().insert(ClientAddr(addr));
                    if let Some(peer) = &peer {
                        req.extensions_mut().insert(peer.clone());
                    }
                    call_when_ready(service.clone(), req)
                });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), hyper_service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
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
