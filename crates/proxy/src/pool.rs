//! The connections [`ForwardService`](crate::ForwardService) keeps to its one upstream: HTTP/1.1
//! connections reused one exchange at a time, or shared HTTP/2 connections when the upstream
//! chooses h2 in ALPN.
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
//! - An h2 connection carries up to [`Upstream::http2_max_streams_per_connection`] requests
//!   at once; each holds a lease on one of its streams, given back with the response body like
//!   an HTTP/1.1 lease. When every h2 connection is full, the next request dials another. An h2
//!   server caps the streams of a connection (kube-apiserver at 1,000 by default), and hyper
//!   makes a request past that cap wait, and every request behind it, until a stream ends: a
//!   single shared connection would stall the upstream for everyone once a thousand watches
//!   were open on it.
//! - With h2 offered, requests that are not long-running go over pooled HTTP/1.1 connections
//!   (dialled offering HTTP/1.1 alone), up to
//!   [`Upstream::http1_connections_for_short_requests`] of them; past that, and for every
//!   long-running request, h2 streams. A short exchange costs less over HTTP/1.1 (no HPACK
//!   state, no task per stream in hyper's client) and watches, which hold their stream for
//!   minutes, share a few h2 connections instead of one connection each. An upstream that
//!   answers the HTTP/1.1-only offer with `no_application_protocol` is remembered, and its
//!   short requests take h2 streams from then on.
//! - Idle connections are closed after [`IDLE_TIMEOUT`] by a reaper task that holds the pool
//!   weakly, and with the pool: an HTTP/1.1 connection while no exchange leases it, an h2
//!   connection while no stream of it is leased. A closed connection (the upstream went away)
//!   is forgotten and replaced by the next request that needs one.
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

impl<B> Pool<B> {
    /// Whether both handles are one pool.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
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
    /// Whether ALPN offers h2.
    offers_h2: bool,
    /// With h2 offered, the connector short requests dial with (ALPN: HTTP/1.1 alone), and
    /// how many HTTP/1.1 connections they may use; `None` when short requests use h2 too.
    short: Option<(HttpsConnector<HttpConnector>, usize)>,
    /// TCP connect and TLS handshake together.
    connect_timeout: Duration,
    /// Woken when a gated dial ends (see [`Shared::dial_and_send`]).
    dialed: tokio::sync::Notify,
    /// Requests at once on one h2 connection.
    h2_max_streams: usize,
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
    /// Every open h2 connection (`None`: a free slot), once the upstream chose h2.
    h2: Vec<Option<H2<B>>>,
    /// The number the next h2 connection gets: a lease names its connection by slot and
    /// number, since a slot is reused once its connection closed, leases or not.
    next_h2: u64,
    /// Who dials for requests that wait (h2).
    gate: Gate,
    /// HTTP/1.1 connections short requests are dialling now (see [`Http1Claim`]).
    h1_dialing: usize,
    /// The upstream chose HTTP/1.1 where h2 was offered: every request uses HTTP/1.1.
    refused_h2: bool,
    /// The upstream refused an offer of HTTP/1.1 alone: short requests use h2.
    refused_http1: bool,
    /// Whether the reaper task runs.
    reaping: bool,
}

impl<B> Default for Conns<B> {
    fn default() -> Self {
        Conns {
            h1: Vec::new(),
            idle: Vec::new(),
            free: Vec::new(),
            h2: Vec::new(),
            next_h2: 0,
            gate: Gate::default(),
            h1_dialing: 0,
            refused_h2: false,
            refused_http1: false,
            reaping: false,
        }
    }
}

struct H1<B> {
    sender: http1::SendRequest<B>,
    /// Reaper periods this connection has been idle through.
    idle_periods: u32,
}

struct H2<B> {
    sender: http2::SendRequest<B>,
    /// Which connection this is (`Conns::next_h2`).
    number: u64,
    /// Streams leased now.
    streams: usize,
    /// Reaper periods this connection has gone with no stream leased.
    idle_periods: u32,
}

/// Where a request is sent, and whether it may be retried on a fresh connection.
enum Sent<B> {
    /// On a pooled connection: retried once if the connection closed before the request
    /// started.
    Reused(Exchange<B>),
    /// No usable pooled connection: the request is still here, and what to dial for it.
    NeedConnection(Request<B>, Dial),
}

/// What to dial for a request the pool had no room for.
enum Dial {
    /// An HTTP/1.1 connection for a short request, within the limit (claimed).
    Http1(
        // Read by no one: held until the connection is in the pool, and dropped then.
        #[allow(dead_code)] Http1Claim,
    ),
    /// A connection offering what the upstream is configured for (h2 and HTTP/1.1, or
    /// HTTP/1.1 alone).
    Offered,
}

/// A short request's claim on one of the HTTP/1.1 connections short requests may open, held
/// while it dials: a burst of requests cannot dial past the limit before the first
/// connections are up.
struct Http1Claim {
    shared: Arc<dyn GiveBack>,
}

impl Drop for Http1Claim {
    fn drop(&mut self) {
        self.shared.end_http1_claim();
    }
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
    /// A pool dialing `upstream` through `connector`, and, with h2 offered, short requests'
    /// HTTP/1.1 connections through `http1_connector` (ALPN: HTTP/1.1 alone).
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        http1_connector: HttpsConnector<HttpConnector>,
        upstream: &Upstream,
    ) -> Self {
        let short_limit = upstream.http1_connections_for_short_requests() as usize;
        Pool {
            shared: Arc::new(Shared {
                connector,
                offers_h2: upstream.http2(),
                short: (upstream.http2() && short_limit > 0)
                    .then_some((http1_connector, short_limit)),
                connect_timeout: upstream.connect_timeout(),
                dialed: tokio::sync::Notify::new(),
                h2_max_streams: upstream.http2_max_streams_per_connection() as usize,
                dial: upstream.dial_uri().clone(),
                scheme: upstream.scheme().clone(),
                authority: upstream.authority().clone(),
                host: upstream.http1_host().clone(),
                conns: Mutex::new(Conns::default()),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `path_and_query` only) on a pooled or a fresh connection.
    /// The returned body holds the connection's lease. A `long_running` request takes an h2
    /// stream when the upstream speaks h2.
    pub(crate) fn send(
        &self,
        req: Request<B>,
        long_running: bool,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, SendError>> + Send + 'static
    {
        let first = self.shared.try_pooled(req, long_running);
        let shared = Arc::clone(&self.shared);
        async move {
            let (req, dial) = match first {
                Sent::Reused(exchange) => match shared.reused(exchange, long_running).await {
                    Settled::Answered(result) => return result,
                    Settled::Dial(req, dial) => (*req, dial),
                },
                Sent::NeedConnection(req, dial) => (req, dial),
            };
            // Boxed: dialing (TCP, TLS, handshake) takes kilobytes of future state, which would
            // otherwise be part of, and copied with, every request's future.
            Box::pin(Shared::dial_and_send(shared, req, dial, long_running)).await
        }
    }
}

/// How an exchange on a pooled connection ended.
enum Settled<B> {
    /// With the response head, or the exchange's failure.
    Answered(Result<Response<PooledBody>, SendError>),
    /// The connection closed before the request started (hyper handed it back): a new
    /// connection of this kind gets it. Boxed: it is the rare case, and the response the
    /// common one.
    Dial(Box<Request<B>>, Dial),
}

/// A connection just dialled, before it joins the pool.
enum Connected<B> {
    H1 {
        sender: http1::SendRequest<B>,
        /// h2 was offered and the upstream chose HTTP/1.1.
        refused_h2: bool,
    },
    H2(http2::SendRequest<B>),
}

/// How a dial ended.
enum Dialled<B> {
    /// With the response head, or the failure.
    Done(Result<Response<PooledBody>, SendError>),
    /// The upstream refused an offer of HTTP/1.1 alone: `req` goes over h2 instead.
    Http1Refused(Request<B>),
}

/// Whether a dial failed because the server refused every protocol offered in ALPN (TLS alert
/// `no_application_protocol`): an h2-only server offered HTTP/1.1 alone.
fn refuses_http1(err: &(dyn StdError + 'static)) -> bool {
    crate::forward::causes(err).any(|e| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            ))
        )
    })
}

/// Whether a request is dialling the connection that others wait for (see
/// [`Shared::dial_and_send`]), and how the last such dial that failed ended.
#[derive(Default)]
struct Gate {
    dialing: bool,
    /// The number of gated dials that failed so far and the last one's cause: the requests
    /// that waited for it fail with it rather than each dial in turn.
    failed: Option<(u64, Arc<dyn StdError + Send + Sync>)>,
}

/// The right to dial for the requests waiting on the gate: released, waking them, when the
/// dial ends or the dialling request is dropped.
struct DialGate<'a, B> {
    shared: &'a Shared<B>,
    finished: bool,
}

impl<B> DialGate<'_, B> {
    fn finish(mut self, failure: Option<Arc<dyn StdError + Send + Sync>>) {
        self.release(failure);
        self.finished = true;
    }

    fn release(&self, failure: Option<Arc<dyn StdError + Send + Sync>>) {
        let mut conns = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.gate.dialing = false;
        if let Some(cause) = failure {
            let count = conns.gate.failed.as_ref().map_or(0, |(n, _)| *n);
            conns.gate.failed = Some((count + 1, cause));
        }
        drop(conns);
        self.shared.dialed.notify_waiters();
    }
}

impl<B> Drop for DialGate<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(None);
        }
    }
}

/// A failed dial's cause, shared by the requests that waited for that dial; its `source` is
/// the cause itself, so error classification sees through it.
#[derive(Debug)]
struct SharedCause(Arc<dyn StdError + Send + Sync>);

impl fmt::Display for SharedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for SharedCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
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

    /// Sends on a pooled connection with room, if there is one: for a short request (h2
    /// offered), an idle HTTP/1.1 connection, or, with every one it may use busy, an h2
    /// stream; for any other request an h2 stream, or an idle HTTP/1.1 connection when the
    /// upstream speaks only that.
    fn try_pooled(self: &Arc<Self>, req: Request<B>, long_running: bool) -> Sent<B> {
        let mut conns = self.lock();
        let req = if self.short_over_http1(&conns, long_running) {
            let req = match self.take_idle_http1(&mut conns, req) {
                Sent::NeedConnection(req, _) => req,
                sent => return sent,
            };
            if let Some(claim) = self.claim_http1(&mut conns) {
                return Sent::NeedConnection(req, Dial::Http1(claim));
            }
            req
        } else {
            req
        };
        let mut room = None;
        for (slot, entry) in conns.h2.iter_mut().enumerate() {
            match entry {
                Some(conn) if conn.sender.is_closed() => *entry = None,
                Some(conn) if conn.streams < self.h2_max_streams => {
                    room = Some(slot);
                    break;
                }
                _ => {}
            }
        }
        if let Some(slot) = room {
            let req = self.h2_request(req);
            let Some(Some(conn)) = conns.h2.get_mut(slot) else {
                // Unreachable: the slot held a connection a moment ago, under the same lock.
                return Sent::NeedConnection(req, Dial::Offered);
            };
            conn.streams += 1;
            conn.idle_periods = 0;
            let number = conn.number;
            let exchange = conn.sender.try_send_request(req);
            drop(conns);
            return Sent::Reused((Box::pin(exchange), Some(self.lease(Kind::H2(number), slot))));
        }
        if conns.h2.iter().any(Option::is_some) || (self.offers_h2 && !conns.refused_h2) {
            // The upstream speaks h2 and every connection is full, or it has not said yet:
            // dial (another) one. Idle HTTP/1.1 connections are short requests'.
            return Sent::NeedConnection(req, Dial::Offered);
        }
        self.take_idle_http1(&mut conns, req)
    }

    /// Whether a request goes over HTTP/1.1 although h2 is offered: it is short, and the
    /// upstream has not refused either protocol.
    fn short_over_http1(&self, conns: &Conns<B>, long_running: bool) -> bool {
        !long_running && self.short.is_some() && !conns.refused_h2 && !conns.refused_http1
    }

    /// A claim on a new HTTP/1.1 connection for a short request, if the limit allows one.
    fn claim_http1(self: &Arc<Self>, conns: &mut Conns<B>) -> Option<Http1Claim> {
        let limit = self.short.as_ref().map_or(0, |(_, limit)| *limit);
        let open = conns.h1.len() - conns.free.len();
        if open + conns.h1_dialing >= limit {
            return None;
        }
        conns.h1_dialing += 1;
        Some(Http1Claim {
            shared: Arc::clone(self) as Arc<dyn GiveBack>,
        })
    }

    /// What to dial for a request the pool has no room for.
    fn what_to_dial(self: &Arc<Self>, conns: &mut Conns<B>, long_running: bool) -> Dial {
        if self.short_over_http1(conns, long_running)
            && let Some(claim) = self.claim_http1(conns)
        {
            return Dial::Http1(claim);
        }
        Dial::Offered
    }

    /// Waits for the response to a request sent on a pooled connection; if the connection
    /// closed before the request started, hands the request back with what to dial for it.
    async fn reused(
        self: &Arc<Self>,
        (exchange, lease): Exchange<B>,
        long_running: bool,
    ) -> Settled<B> {
        match exchange.await {
            Ok(res) => Settled::Answered(Ok(res.map(|body| PooledBody { body, lease }))),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    let dial = self.what_to_dial(&mut self.lock(), long_running);
                    Settled::Dial(Box::new(req), dial)
                }
                None => Settled::Answered(Err(SendError::Request(e.into_error()))),
            },
        }
    }

    /// Sends on an idle HTTP/1.1 connection that is ready, if there is one (else: a new
    /// connection offering what the upstream is configured for is needed).
    fn take_idle_http1(self: &Arc<Self>, conns: &mut Conns<B>, req: Request<B>) -> Sent<B> {
        let Some(slot) = take_ready_idle(conns) else {
            return Sent::NeedConnection(req, Dial::Offered);
        };
        let req = self.h1_request(req);
        let Some(Some(conn)) = conns.h1.get_mut(slot) else {
            // Unreachable: the slot held a connection a moment ago, under the same lock.
            return Sent::NeedConnection(req, Dial::Offered);
        };
        conn.idle_periods = 0;
        let exchange = conn.sender.try_send_request(req);
        Sent::Reused((Box::pin(exchange), Some(self.lease(Kind::H1, slot))))
    }

    /// Sends `req`, for which the pool had no room, on a new connection; or, while another
    /// request dials the connection that will have room for it, waits for that one.
    ///
    /// Over h2 (or before the first connection tells), one request at a time dials and the
    /// others wait: without that, a burst of requests finding every connection full (a
    /// thousand watches opened at once) would each dial a connection of its own. A wait ends
    /// when the dial does: the request then takes a stream of the new connection, or, if that
    /// one is full already, waits for (or makes) the next dial; if the dial failed, the
    /// waiting requests fail with its cause. HTTP/1.1 carries one exchange per connection, so
    /// there every request dials at once (a short request within its claim).
    async fn dial_and_send(
        this: Arc<Self>,
        mut req: Request<B>,
        mut dial: Dial,
        long_running: bool,
    ) -> Result<Response<PooledBody>, SendError> {
        enum Next<'a> {
            Dial,
            DialForOthers,
            /// The wake-up, and the count of failed dials when the wait began.
            Wait(tokio::sync::futures::Notified<'a>, Option<u64>),
        }
        loop {
            let next = {
                let mut conns = this.lock();
                if matches!(dial, Dial::Http1(_)) || !this.offers_h2 || conns.refused_h2 {
                    Next::Dial
                } else if !conns.gate.dialing {
                    conns.gate.dialing = true;
                    Next::DialForOthers
                } else {
                    // Made under the lock the dialler releases the gate under: no wake-up is
                    // missed.
                    let failures = conns.gate.failed.as_ref().map(|(n, _)| *n);
                    Next::Wait(this.dialed.notified(), failures)
                }
            };
            let (notified, failures) = match next {
                Next::Dial | Next::DialForOthers => {
                    let gate = matches!(next, Next::DialForOthers).then_some(DialGate {
                        shared: &this,
                        finished: false,
                    });
                    match this.dial(req, dial, gate).await {
                        Dialled::Done(result) => return result,
                        Dialled::Http1Refused(again) => {
                            (req, dial) = (again, Dial::Offered);
                            continue;
                        }
                    }
                }
                Next::Wait(notified, failures) => (notified, failures),
            };
            notified.await;
            let failed = match &this.lock().gate.failed {
                Some((count, cause)) if Some(*count) != failures => Some(Arc::clone(cause)),
                _ => None,
            };
            if let Some(cause) = failed {
                return Err(SendError::Connect(Box::new(SharedCause(cause))));
            }
            (req, dial) = match this.try_pooled(req, long_running) {
                Sent::Reused(exchange) => match this.reused(exchange, long_running).await {
                    Settled::Answered(result) => return result,
                    Settled::Dial(again, dial) => (*again, dial),
                },
                Sent::NeedConnection(again, dial) => (again, dial),
            };
        }
    }

    /// Dials what `dial` says, sends `req` on the new connection and waits for the response
    /// head; releases `gate` once the dial is done.
    async fn dial(
        self: &Arc<Self>,
        req: Request<B>,
        dial: Dial,
        gate: Option<DialGate<'_, B>>,
    ) -> Dialled<B> {
        let http1_only = matches!(dial, Dial::Http1(_));
        let connected = match self.connect(http1_only).await {
            Ok(connected) => connected,
            Err(SendError::Connect(e)) if http1_only && refuses_http1(&*e) => {
                tracing::debug!(
                    "the upstream refused HTTP/1.1 alone in ALPN; its short requests use h2"
                );
                self.lock().refused_http1 = true;
                return Dialled::Http1Refused(req);
            }
            Err(SendError::Connect(e)) => {
                let cause: Arc<dyn StdError + Send + Sync> = Arc::from(e);
                if let Some(gate) = gate {
                    gate.finish(Some(Arc::clone(&cause)));
                }
                return Dialled::Done(Err(SendError::Connect(Box::new(SharedCause(cause)))));
            }
            Err(e) => return Dialled::Done(Err(e)),
        };
        let (exchange, lease) = self.join_and_send(connected, req);
        // The connection is in the pool now, and counts there instead of as a claim. Only now
        // are the requests waiting for this dial woken: woken before, one on another worker
        // could find no room yet and dial again.
        drop(dial);
        if let Some(gate) = gate {
            gate.finish(None);
        }
        Dialled::Done(match exchange.await {
            Ok(res) => Ok(res.map(|body| PooledBody { body, lease })),
            Err(e) => Err(SendError::Request(e.into_error())),
        })
    }

    /// Dials a new connection: offering HTTP/1.1 alone, or what the upstream is configured
    /// for.
    async fn connect(&self, http1_only: bool) -> Result<Connected<B>, SendError> {
        let connector = match &self.short {
            Some((http1, _)) if http1_only => http1,
            _ => &self.connector,
        };
        // The connector bounds the TCP connect; this bounds the TLS handshake too, which an
        // upstream that accepts connections and then stalls would otherwise hold forever (a
        // watch has no response-header timeout to end it).
        let dial = connector.clone().call(self.dial.clone());
        let stream = match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(stream) => stream.map_err(SendError::Connect)?,
            Err(_) => {
                return Err(SendError::Connect(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the upstream (TCP and TLS) timed out",
                ))));
            }
        };
        if stream.connected().is_negotiated_h2() {
            let (sender, conn) = h2_client(self.h2_max_streams)
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            drive(conn);
            return Ok(Connected::H2(sender));
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        drive(conn);
        Ok(Connected::H1 {
            sender,
            refused_h2: self.offers_h2 && !http1_only,
        })
    }

    /// Puts a new connection in the pool and sends `req` on it, leased to this request (a
    /// stream of it, for h2).
    fn join_and_send(self: &Arc<Self>, connected: Connected<B>, req: Request<B>) -> Exchange<B> {
        match connected {
            Connected::H2(mut sender) => {
                let exchange = sender.try_send_request(self.h2_request(req));
                let mut conns = self.lock();
                // Concurrent cold-start requests may each have dialled: every connection
                // joins, and the ones left without streams are reaped.
                let number = conns.next_h2;
                conns.next_h2 += 1;
                let conn = H2 {
                    sender,
                    number,
                    streams: 1,
                    idle_periods: 0,
                };
                let free = conns.h2.iter().position(Option::is_none);
                let slot = occupy(&mut conns.h2, free, conn);
                self.start_reaper(&mut conns);
                drop(conns);
                (Box::pin(exchange), Some(self.lease(Kind::H2(number), slot)))
            }
            Connected::H1 {
                mut sender,
                refused_h2,
            } => {
                let exchange = sender.try_send_request(self.h1_request(req));
                let mut conns = self.lock();
                conns.refused_h2 |= refused_h2;
                let conn = H1 {
                    sender,
                    idle_periods: 0,
                };
                let free = conns.free.pop();
                let slot = occupy(&mut conns.h1, free, conn);
                self.start_reaper(&mut conns);
                drop(conns);
                (Box::pin(exchange), Some(self.lease(Kind::H1, slot)))
            }
        }
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

    fn lease(self: &Arc<Self>, kind: Kind, slot: usize) -> Lease {
        let shared: Arc<dyn GiveBack> = Arc::clone(self) as Arc<dyn GiveBack>;
        Lease { shared, kind, slot }
    }
}

/// Puts `conn` in the `free` slot of `slots`, or at the end without one; its slot.
fn occupy<T>(slots: &mut Vec<Option<T>>, free: Option<usize>, conn: T) -> usize {
    if let Some(slot) = free
        && let Some(entry) = slots.get_mut(slot)
    {
        *entry = Some(conn);
        return slot;
    }
    slots.push(Some(conn));
    slots.len() - 1
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

/// What a lease (or a claim) needs of its pool, without the request body type.
trait GiveBack: Send + Sync {
    fn give_back(&self, kind: Kind, slot: usize);
    fn end_http1_claim(&self);
}

impl<B: Send + 'static> GiveBack for Shared<B> {
    fn give_back(&self, kind: Kind, slot: usize) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            Kind::H1 => conns.idle.push(slot),
            Kind::H2(number) => {
                // The connection may have closed, and its slot gone to another, meanwhile.
                if let Some(Some(conn)) = conns.h2.get_mut(slot)
                    && conn.number == number
                {
                    conn.streams = conn.streams.saturating_sub(1);
                }
            }
        }
    }

    fn end_http1_claim(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.h1_dialing = conns.h1_dialing.saturating_sub(1);
    }
}

/// Which of the pool's connections a lease is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    H1,
    /// The h2 connection's number.
    H2(u64),
}

/// The use of one HTTP/1.1 connection, or one stream of an h2 connection, for one exchange;
/// given back when dropped.
pub(crate) struct Lease {
    shared: Arc<dyn GiveBack>,
    kind: Kind,
    slot: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.give_back(self.kind, self.slot);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("kind", &self.kind)
            .field("slot", &self.slot)
            .finish()
    }
}

/// A response body from the pool: the upstream's stream and the lease of its connection (or
/// h2 stream), given back when the body is dropped (hyper reads a finished body's HTTP/1.1
/// connection into its next exchange; an unfinished one is closed; an h2 stream is reset).
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
    for entry in &mut conns.h2 {
        let expired = match entry {
            Some(conn) if conn.sender.is_closed() => true,
            Some(conn) if conn.streams == 0 => {
                conn.idle_periods += 1;
                conn.idle_periods > limit
            }
            Some(conn) => {
                conn.idle_periods = 0;
                false
            }
            None => false,
        };
        if expired {
            // Dropping the only sender closes the connection (hyper closes it gracefully
            // should a stream still be open).
            *entry = None;
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

/// How much of a response an h2 stream may receive ahead of its reader (h2's flow-control
/// window per stream: hyper's default).
const H2_STREAM_WINDOW: u32 = 2 << 20;

/// The h2 client every upstream connection that negotiated h2 is made with, for at most
/// `max_streams` streams at once.
///
/// Its pings find a connection whose path died without a FIN or RST (a node powered off, NAT
/// or load-balancer state lost): without them its open watches, and the streams new ones are
/// given, would wait forever. client-go's transport pings after 30 s without a frame and gives
/// up 15 s later; so does this one.
///
/// Its connection window has room for every stream's window at once. Streams of many clients
/// share a connection, and a stream's window is only given back as its client reads: with
/// hyper's default 5 MiB for the connection, three clients that stopped reading a log or a
/// proxied download would stop every watch on the connection (pings still answered, so it
/// would never be found dead). Go's transport, kube-apiserver's, gives a connection 1 GiB
/// for the same reason.
fn h2_client(max_streams: usize) -> http2::Builder<TokioExecutor> {
    let streams = u32::try_from(max_streams.max(3)).unwrap_or(u32::MAX);
    let connection_window = streams
        .saturating_mul(H2_STREAM_WINDOW)
        .min(i32::MAX as u32);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(crate::upstream::KEEPALIVE_IDLE)
        .keep_alive_timeout(crate::upstream::KEEPALIVE_PROBE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(connection_window);
    builder
}

/// Takes the slot of an idle HTTP/1.1 connection that is ready for a request off the idle
/// stack, if there is one. Closed connections met on the way are forgotten; ones given back
/// before hyper finished their exchange stay idle, moved under the rest to be looked at again
/// next time. Each slot is looked at once: the loop runs under the pool's lock, so it must end
/// however the stack is made up.
fn take_ready_idle<B>(conns: &mut Conns<B>) -> Option<usize> {
    for _ in 0..conns.idle.len() {
        let slot = conns.idle.pop()?;
        let (closed, ready) = match conns.h1.get(slot) {
            Some(Some(conn)) => (conn.sender.is_closed(), conn.sender.is_ready()),
            _ => continue,
        };
        if closed {
            if let Some(entry) = conns.h1.get_mut(slot) {
                *entry = None;
            }
            conns.free.push(slot);
        } else if ready {
            return Some(slot);
        } else {
            conns.idle.insert(0, slot);
        }
    }
    None
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

    /// A pool holding these HTTP/1.1 connections, in slots 0, 1, …; none marked idle yet.
    fn idle_h1(senders: Vec<http1::SendRequest<Empty<Bytes>>>) -> Conns<Empty<Bytes>> {
        Conns {
            h1: senders
                .into_iter()
                .map(|sender| {
                    Some(H1 {
                        sender,
                        idle_periods: 0,
                    })
                })
                .collect(),
            ..Conns::default()
        }
    }

    /// `take_ready_idle` on a thread of its own, failing the test if it does not return: it
    /// once looped forever (under the pool's lock) on a closed connection above a busy one.
    fn take_ready_idle_within_a_deadline(
        mut conns: Conns<Empty<Bytes>>,
    ) -> (Option<usize>, Conns<Empty<Bytes>>) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let slot = take_ready_idle(&mut conns);
            let _ = tx.send((slot, conns));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("take_ready_idle returns")
    }

    #[tokio::test]
    async fn taking_an_idle_connection_skips_busy_ones_forgets_closed_ones_and_always_returns() {
        let (closed, closed_task, _closed_server) = connection().await;
        let (mut busy, _busy_task, _busy_server) = connection().await;
        let (ready, _ready_task, _ready_server) = connection().await;
        // `busy` has a request in flight that its server never answers.
        busy.ready().await.unwrap();
        let request = Request::get("http://upstream/").body(Empty::new()).unwrap();
        let _in_flight = busy.send_request(request);
        closed_task.abort();
        let _ = closed_task.await;
        tokio::task::yield_now().await;

        // Popped in turn: busy (1), closed (0). Nothing to take; busy stays idle.
        let mut conns = idle_h1(vec![closed, busy]);
        conns.idle = vec![0, 1];
        let (slot, mut conns) = take_ready_idle_within_a_deadline(conns);
        assert_eq!(slot, None);
        assert_eq!(
            (conns.idle.as_slice(), conns.free.as_slice()),
            (&[1][..], &[0][..])
        );
        assert!(conns.h1[0].is_none());

        // A ready connection under the busy one is found, and busy goes under the rest.
        conns.h1.push(Some(H1 {
            sender: ready,
            idle_periods: 0,
        }));
        conns.idle = vec![2, 1];
        let (slot, conns) = take_ready_idle_within_a_deadline(conns);
        assert_eq!(slot, Some(2));
        assert_eq!(conns.idle, [1]);
    }

    /// One end of a pipe that goes silent once `stalled` is set: reads and writes never complete,
    /// as on a path that died without a FIN or RST.
    struct Stallable {
        io: tokio::io::DuplexStream,
        stalled: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Stallable {
        fn live(&self) -> bool {
            !self.stalled.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl tokio::io::AsyncRead for Stallable {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if !self.live() {
                return std::task::Poll::Pending;
            }
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Stallable {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if !self.live() {
                return std::task::Poll::Pending;
            }
            std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_h2_connection_whose_peer_went_silent_is_closed_by_its_pings() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = Stallable {
            io: server,
            stalled: Arc::clone(&stalled),
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let (mut sender, conn) = h2_client(100)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(client))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let request = || {
            Request::builder()
                .uri("http://upstream/api")
                .body(Empty::new())
                .unwrap()
        };
        sender.ready().await.unwrap();
        assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
        // The path dies with a watch open on it: nothing more arrives, nothing says so.
        stalled.store(true, std::sync::atomic::Ordering::SeqCst);
        let watch = tokio::spawn(sender.send_request(request()));
        // 30 s of silence, a PING, 15 s without its ACK: the connection is given up, and the
        // watch fails instead of waiting forever (paused time: this takes no real time).
        let started = tokio::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(120), conn).await;
        assert!(ended.is_ok(), "the connection was never given up");
        let after = started.elapsed();
        assert!(
            after >= crate::upstream::KEEPALIVE_IDLE && after <= Duration::from_secs(60),
            "given up after {after:?}"
        );
        assert!(watch.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn the_reaper_closes_idle_connections_after_the_limit_and_forgets_closed_ones() {
        let (a, _a_task, _a_server) = connection().await;
        let (b, b_task, _b_server) = connection().await;
        let (c, _c_task, _c_server) = connection().await;
        let mut conns = idle_h1(vec![a, b, c]);
        // `c` is leased: not idle, so never reaped.
        conns.idle = vec![0, 1];
        conns.reaping = true;
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

    /// A pool holding one h2 connection with `streams` streams leased.
    fn h2_conns(sender: http2::SendRequest<Empty<Bytes>>, streams: usize) -> Conns<Empty<Bytes>> {
        Conns {
            h1: Vec::new(),
            idle: Vec::new(),
            free: Vec::new(),
            h2: vec![Some(H2 {
                sender,
                number: 0,
                streams,
                idle_periods: 0,
            })],
            next_h2: 1,
            reaping: true,
            ..Conns::default()
        }
    }

    #[tokio::test]
    async fn the_reaper_keeps_an_h2_connection_with_open_streams_and_closes_it_once_idle() {
        let (received, go) = Default::default();
        let (mut sender, server) = h2_connection(Arc::clone(&received), Arc::clone(&go)).await;
        sender.ready().await.unwrap();
        let request = Request::builder()
            .uri("http://upstream/watch")
            .body(Empty::new())
            .unwrap();
        let open = tokio::spawn(sender.send_request(request));
        received.notified().await;
        let mut conns = h2_conns(sender, 1);
        // A leased stream (a watch) keeps the connection however long it lasts.
        for _ in 0..5 {
            reap_once(&mut conns, 2);
        }
        assert!(conns.h2[0].is_some());
        go.notify_one();
        let res = open.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        drop(res);
        if let Some(conn) = conns.h2[0].as_mut() {
            conn.streams = 0;
        }
        // Idle through two periods, closed after the third.
        reap_once(&mut conns, 2);
        reap_once(&mut conns, 2);
        assert!(conns.h2[0].is_some());
        reap_once(&mut conns, 2);
        assert!(conns.h2[0].is_none());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection closes")
            .unwrap();
    }

    #[tokio::test]
    async fn the_reaper_forgets_a_closed_h2_connection() {
        let (sender, server) = h2_connection(Default::default(), Default::default()).await;
        let mut conns = h2_conns(sender, 1);
        reap_once(&mut conns, 2);
        assert!(conns.h2[0].is_some());
        server.abort();
        let _ = server.await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        reap_once(&mut conns, 2);
        assert!(conns.h2[0].is_none());
    }
}
