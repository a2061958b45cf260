//! The connections [`ForwardService`](crate::ForwardService) keeps to its one upstream: HTTP/1.1
//! connections reused one exchange at a time, or one shared HTTP/2 connection when the
//! upstream chooses h2 in ALPN.
//!
//! hyper-util's legacy client served here before. It pools by (scheme, authority) for any
//! number of hosts, and paid for that on every request: two hash-map lookups whose key hashes
//! the authority one byte per SipHash call, a boxed request future, and, for HTTP/1.1, a task
//! spawned per response to wait until the connection is ready again. A `ForwardService` talks
//! to one upstream, so none of that is needed: in `proxy_load` the pool below took ≈ 6,000
//! instructions per request off the gateway (callgrind; the crate README has the figures).
//!
//! - An HTTP/1.1 connection stays in the pool's slab for its whole life. A request takes an
//!   idle one and leases it; the lease travels with the response body and gives the connection
//!   back when the body ends or is dropped, so a finished exchange needs no task of its own.
//! - hyper's `SendRequest` is ready again only once the connection finished the previous
//!   exchange; a connection given back a moment before that stays idle and is taken when ready.
//! - A request that a reused connection could not even start (it closed meanwhile: hyper hands
//!   the request back) is sent once more on a fresh connection, as hyper-util did.
//! - Idle connections are closed after [`IDLE_TIMEOUT`] by a reaper task that holds the pool
//!   weakly, and with the pool. An HTTP/1.1 connection is idle while no exchange leases it; the
//!   shared h2 connection is idle while no new request is sent on it. Letting go of an idle h2
//!   connection is graceful: streams still open on it (a watch) finish there, hyper closes it
//!   after them, and the next request dials a new one. A closed h2 connection (the upstream
//!   went away) is replaced by the next request.
//! - The reaper runs from the first connection on. Besides closing connections, its timer
//!   keeps the runtime's timer wheel from being empty between requests: tokio wakes its
//!   driver (an `eventfd` write) whenever a timer is added to an empty wheel, and each request
//!   adds one (its response-header deadline).

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::Service;

use crate::upstream::Upstream;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long an idle connection is kept (hyper-util's pool used the same figure here).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The reaper's period: an idle connection is closed between `IDLE_TIMEOUT` and
/// `IDLE_TIMEOUT + REAP_EVERY` after it was last given back.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// The pool of one [`ForwardService`](crate::ForwardService) and its clones.
pub(crate) struct Pool<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<B> {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`: what the connector dials.
    dial: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header of HTTP/1.1 requests (`host[:port]`).
    host: HeaderValue,
    conns: Mutex<Conns<B>>,
}

struct Conns<B> {
    /// Every open HTTP/1.1 connection (`None`: a free slot).
    h1: Vec<Option<H1<B>>>,
    /// Slots of connections given back: idle, or about to be.
    idle: Vec<usize>,
    /// Free slots in `h1`.
    free: Vec<usize>,
    /// The shared HTTP/2 connection, once the upstream chose h2.
    h2: Option<http2::SendRequest<B>>,
    /// Reaper periods the h2 connection has gone without a new request.
    h2_idle_periods: u32,
    /// Whether the reaper task runs.
    reaping: bool,
}

struct H1<B> {
    sender: http1::SendRequest<B>,
    /// Reaper periods this connection has been idle through.
    idle_periods: u32,
}

/// Where a request is sent, and whether it may be retried on a fresh connection.
enum Sent<B> {
    /// On a pooled connection: retried once if the connection closed before the request
    /// started.
    Reused(Exchange<B>),
    /// No usable pooled connection: the request is still here.
    NeedConnection(Request<B>),
}

type Exchange<B> = (
    std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>>
                + Send,
        >,
    >,
    Option<Lease>,
);

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Dialing, TLS or the protocol handshake with the upstream failed.
    #[error("connecting to the upstream failed")]
    Connect(#[source] BoxError),
    /// The exchange failed on an open connection.
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
}

impl SendError {
    /// Whether the connection could not be made (as opposed to failing later).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl<B> Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool dialing `upstream` through `connector`.
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>, upstream: &Upstream) -> Self {
        Pool {
            shared: Arc::new(Shared {
                connector,
                dial: upstream.dial_uri().clone(),
                scheme: upstream.scheme().clone(),
                authority: upstream.authority().clone(),
                host: upstream.http1_host().clone(),
                conns: Mutex::new(Conns {
                    h1: Vec::new(),
                    idle: Vec::new(),
                    free: Vec::new(),
                    h2: None,
                    h2_idle_periods: 0,
                    reaping: false,
                }),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `path_and_query` only) on a pooled or a fresh connection.
    /// The returned body holds the connection's lease.
    pub(crate) fn send(
        &self,
        req: Request<B>,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, SendError>> + Send + 'static
    {
        let first = self.shared.try_pooled(req);
        let shared = Arc::clone(&self.shared);
        async move {
            let req = match first {
                Sent::Reused((exchange, lease)) => match exchange.await {
                    Ok(res) => return Ok(res.map(|body| PooledBody { body, lease })),
                    Err(mut e) => match e.take_message() {
                        // Closed before the request started: a fresh connection gets it.
                        Some(req) => req,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                },
                Sent::NeedConnection(req) => req,
            };
            // Boxed: dialing (TCP, TLS, handshake) takes kilobytes of future state, which would
            // otherwise be part of, and copied with, every request's future.
            let (exchange, lease) = Box::pin(Shared::connect_and_send(&shared, req)).await?;
            match exchange.await {
                Ok(res) => Ok(res.map(|body| PooledBody { body, lease })),
                Err(e) => Err(SendError::Request(e.into_error())),
            }
        }
    }
}

impl<B> Shared<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn lock(&self) -> MutexGuard<'_, Conns<B>> {
        // A panic while holding the lock leaves the lists consistent (every change is one
        // push or pop): go on with them.
        self.conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends on the shared h2 connection or an idle HTTP/1.1 one, if there is one.
    fn try_pooled(self: &Arc<Self>, req: Request<B>) -> Sent<B> {
        let mut conns = self.lock();
        if let Some(h2) = conns.h2.as_mut() {
            if !h2.is_closed() {
                let exchange = h2.try_send_request(self.h2_request(req));
                conns.h2_idle_periods = 0;
                return Sent::Reused((Box::pin(exchange), None));
            }
            conns.h2 = None;
        }
        let mut not_yet = 0;
        while let Some(slot) = conns.idle.pop() {
            let (closed, ready) = match conns.h1.get(slot) {
                Some(Some(conn)) => (conn.sender.is_closed(), conn.sender.is_ready()),
                _ => continue,
            };
            if closed {
                conns.h1[slot] = None;
                conns.free.push(slot);
                continue;
            }
            if !ready {
                // Given back before hyper finished the exchange: look again next time. Kept
                // at the bottom of the stack, under the ones that are ready.
                conns.idle.insert(0, slot);
                not_yet += 1;
                if not_yet == conns.idle.len() {
                    break;
                }
                continue;
            }
            let req = self.h1_request(req);
            let Some(Some(conn)) = conns.h1.get_mut(slot) else {
                // Unreachable: the slot held a connection a moment ago, under the same lock.
                return Sent::NeedConnection(req);
            };
            conn.idle_periods = 0;
            let exchange = conn.sender.try_send_request(req);
            drop(conns);
            return Sent::Reused((Box::pin(exchange), Some(self.lease(slot))));
        }
        Sent::NeedConnection(req)
    }

    /// Dials a new connection and sends `req` on it. An h2 connection becomes the shared one;
    /// an HTTP/1.1 connection joins the slab, leased to this request.
    async fn connect_and_send(this: &Arc<Self>, req: Request<B>) -> Result<Exchange<B>, SendError> {
        let stream = this
            .connector
            .clone()
            .call(this.dial.clone())
            .await
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            drive(conn);
            let exchange = sender.try_send_request(this.h2_request(req));
            let mut conns = this.lock();
            // Concurrent cold-start requests may each have dialled: the last one stays shared,
            // the others serve their own request and close.
            conns.h2 = Some(sender);
            conns.h2_idle_periods = 0;
            this.start_reaper(&mut conns);
            return Ok((Box::pin(exchange), None));
        }
        let (mut sender, conn) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        drive(conn);
        let exchange = sender.try_send_request(this.h1_request(req));
        let slot = {
            let mut conns = this.lock();
            let conn = Some(H1 {
                sender,
                idle_periods: 0,
            });
            let slot = match conns.free.pop() {
                Some(slot) => {
                    conns.h1[slot] = conn;
                    slot
                }
                None => {
                    conns.h1.push(conn);
                    conns.h1.len() - 1
                }
            };
            this.start_reaper(&mut conns);
            slot
        };
        Ok((Box::pin(exchange), Some(this.lease(slot))))
    }

    /// Spawns the reaper unless it runs.
    fn start_reaper(self: &Arc<Self>, conns: &mut Conns<B>) {
        if !conns.reaping {
            conns.reaping = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    fn h1_request(&self, mut req: Request<B>) -> Request<B> {
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        req
    }

    /// An h2 request carries the scheme and authority in its URI (they become the `:scheme`
    /// and `:authority` pseudo-headers).
    fn h2_request(&self, mut req: Request<B>) -> Request<B> {
        *req.version_mut() = Version::HTTP_2;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        req
    }

    fn lease(self: &Arc<Self>, slot: usize) -> Lease {
        let shared: Arc<dyn GiveBack> = Arc::clone(self) as Arc<dyn GiveBack>;
        Lease { shared, slot }
    }
}

/// Runs a connection's I/O on its own task until the connection ends.
fn drive<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
}

/// What a lease needs of its pool, without the request body type.
trait GiveBack: Send + Sync {
    fn give_back(&self, slot: usize);
}

impl<B: Send + 'static> GiveBack for Shared<B> {
    fn give_back(&self, slot: usize) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.idle.push(slot);
    }
}

/// The use of one HTTP/1.1 connection for one exchange; gives the connection back when
/// dropped.
pub(crate) struct Lease {
    shared: Arc<dyn GiveBack>,
    slot: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.give_back(self.slot);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}

/// A response body from the pool: the upstream's stream and, over HTTP/1.1, the lease of its
/// connection, given back when the body is dropped (hyper reads a finished body's connection
/// into its next exchange; an unfinished one is closed).
#[derive(Debug)]
pub(crate) struct PooledBody {
    pub(crate) body: Incoming,
    pub(crate) lease: Option<Lease>,
}

/// Closes connections idle for longer than [`IDLE_TIMEOUT`] and forgets closed ones, until the
/// pool is gone.
async fn reap<B: Send + 'static>(pool: Weak<Shared<B>>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let limit = (IDLE_TIMEOUT.as_secs() / REAP_EVERY.as_secs()).max(1) as u32;
    loop {
        tick.tick().await;
        let Some(shared) = pool.upgrade() else { return };
        let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        reap_once(&mut conns, limit);
    }
}

/// One reaper period: counts it on every idle connection, closes the ones idle for more than
/// `limit` periods and forgets the closed ones.
fn reap_once<B>(conns: &mut Conns<B>, limit: u32) {
    if let Some(h2) = &conns.h2 {
        conns.h2_idle_periods += 1;
        if h2.is_closed() || conns.h2_idle_periods > limit {
            // Dropping the only sender lets hyper close the connection once its open streams
            // are done.
            conns.h2 = None;
        }
    }
    let Conns { h1, idle, free, .. } = conns;
    idle.retain(|&slot| {
        let Some(entry) = h1.get_mut(slot) else {
            return false;
        };
        let expired = match entry {
            Some(conn) if conn.sender.is_closed() => true,
            Some(conn) => {
                conn.idle_periods += 1;
                conn.idle_periods > limit
            }
            None => return false,
        };
        if expired {
            // Dropping the only sender closes the idle connection.
            *entry = None;
            free.push(slot);
        }
        !expired
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    /// A client connection over an in-memory pipe whose server end stays open.
    async fn connection() -> (
        http1::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<()>,
        tokio::io::DuplexStream,
    ) {
        let (client, server) = tokio::io::duplex(1024);
        let (sender, conn) = http1::handshake(TokioIo::new(client)).await.unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (sender, task, server)
    }

    #[tokio::test]
    async fn the_reaper_closes_idle_connections_after_the_limit_and_forgets_closed_ones() {
        let (a, _a_task, _a_server) = connection().await;
        let (b, b_task, _b_server) = connection().await;
        let (c, _c_task, _c_server) = connection().await;
        let mut conns: Conns<Empty<Bytes>> = Conns {
            h1: [a, b, c]
                .into_iter()
                .map(|sender| {
                    Some(H1 {
                        sender,
                        idle_periods: 0,
                    })
                })
                .collect(),
            // `c` is leased: not idle, so never reaped.
            idle: vec![0, 1],
            free: Vec::new(),
            h2: None,
            h2_idle_periods: 0,
            reaping: true,
        };
        // `b`'s connection ends: forgotten at the next period.
        b_task.abort();
        let _ = b_task.await;
        tokio::task::yield_now().await;
        reap_once(&mut conns, 2);
        assert_eq!(conns.idle, [0]);
        assert!(conns.h1[1].is_none());
        assert_eq!(conns.free, [1]);
        // `a` is idle through two more periods, then closed.
        reap_once(&mut conns, 2);
        assert_eq!(conns.idle, [0]);
        reap_once(&mut conns, 2);
        assert!(conns.idle.is_empty());
        assert!(conns.h1[0].is_none());
        assert_eq!(conns.free, [1, 0]);
        assert!(conns.h1[2].is_some(), "the leased connection stays");
    }

    /// An h2 connection over an in-memory pipe to a hyper server that notifies `received` of
    /// each request and answers it once `go` is notified. The returned task is the server's
    /// side of the connection: it ends when the client closes the connection.
    async fn h2_connection(
        received: Arc<tokio::sync::Notify>,
        go: Arc<tokio::sync::Notify>,
    ) -> (
        http2::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let (received, go) = (Arc::clone(&received), Arc::clone(&go));
                async move {
                    received.notify_one();
                    go.notified().await;
                    Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
        drive(conn);
        (sender, server)
    }

    fn h2_conns(sender: http2::SendRequest<Empty<Bytes>>) -> Conns<Empty<Bytes>> {
        Conns {
            h1: Vec::new(),
            idle: Vec::new(),
            free: Vec::new(),
            h2: Some(sender),
            h2_idle_periods: 0,
            reaping: true,
        }
    }

    #[tokio::test]
    async fn the_reaper_lets_an_idle_h2_connection_go_after_its_open_streams_finish() {
        let (received, go) = Default::default();
        let (mut sender, server) = h2_connection(Arc::clone(&received), Arc::clone(&go)).await;
        sender.ready().await.unwrap();
        let request = Request::builder()
            .uri("http://upstream/watch")
            .body(Empty::new())
            .unwrap();
        let open = tokio::spawn(sender.send_request(request));
        received.notified().await;
        let mut conns = h2_conns(sender);
        // Idle through two periods (no new request), let go of after the third.
        reap_once(&mut conns, 2);
        reap_once(&mut conns, 2);
        assert!(conns.h2.is_some());
        reap_once(&mut conns, 2);
        assert!(conns.h2.is_none());
        // The stream that was open still gets its answer, then the connection closes.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!server.is_finished(), "closed under an open stream");
        go.notify_one();
        let res = open.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        drop(res);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection closes once its last stream is done")
            .unwrap();
    }

    #[tokio::test]
    async fn the_reaper_forgets_a_closed_h2_connection() {
        let (sender, server) = h2_connection(Default::default(), Default::default()).await;
        let mut conns = h2_conns(sender);
        reap_once(&mut conns, 2);
        assert!(conns.h2.is_some());
        server.abort();
        let _ = server.await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        reap_once(&mut conns, 2);
        assert!(conns.h2.is_none());
    }
}
