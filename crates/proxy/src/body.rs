//! Response bodies: the forwarded upstream stream or a locally generated error, and a wrapper
//! that runs a guard's `Drop` when the body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::pool::{Lease, PooledBody};

pin_project! {
    /// The body [`ForwardService`](crate::ForwardService) answers with: the upstream's body,
    /// streamed frame by frame (data and trailers), or a small local error body. Dropping it
    /// drops the upstream stream.
    #[derive(Debug)]
    pub struct ProxyBody {
        #[pin]
        kind: Kind,
        // Given back when the body is dropped (see `holding`).
        slot: Option<InFlightSlot>,
    }
}

/// One place in a count of requests in flight (a limit such as kube-apiserver's
/// `--max-requests-inflight`), given back when dropped. [`ProxyBody::holding`] keeps it until
/// the body is dropped, so a request counts until its response has gone out.
#[derive(Debug)]
pub struct InFlightSlot {
    count: Arc<AtomicUsize>,
    // The client connection's watch this response is registered with, and its period.
    watched: Option<(Arc<ResponseWatch>, usize)>,
}

impl InFlightSlot {
    /// Takes a place in `count` if fewer than `limit` are taken.
    pub fn try_take(count: &Arc<AtomicUsize>, limit: usize) -> Option<InFlightSlot> {
        // Taken first and given back when over: a check-then-add would let two requests past
        // the last place.
        if count.fetch_add(1, Ordering::AcqRel) < limit {
            return Some(InFlightSlot {
                count: Arc::clone(count),
                watched: None,
            });
        }
        count.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Registers the response holding this slot with its client connection's `watch`, so a
    /// response that never ends (a client that stopped reading) does not keep the slot for
    /// ever: the server closes the connection (see [`ResponseWatch`]).
    #[must_use]
    pub fn watched_by(mut self, watch: Option<&ConnectionResponses>) -> Self {
        if let Some(ConnectionResponses(watch)) = watch {
            self.watched = Some((Arc::clone(watch), watch.enter()));
        }
        self
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some((watch, period)) = &self.watched {
            watch.leave(*period);
        }
    }
}

/// The responses of one client connection that hold an [`InFlightSlot`], counted by the
/// period they began in, for the server's request timeout.
///
/// A response with a slot is a short request's, which kube-apiserver aborts once it has run
/// for its request timeout (60 s), however far its body got: a client that stops reading would
/// otherwise hold the slot, and with enough such requests every other client would get 429s.
/// A body that its client does not read is not polled, so no timer inside it could end it;
/// the server that owns the connection asks [`tick`](Self::tick) once a period instead and
/// closes the connection when a response has been open for a whole period. The connection
/// goes (on HTTP/2 with its other streams), and with it the response and its slot.
#[derive(Debug, Default)]
pub struct ResponseWatch {
    period: AtomicUsize,
    open: [AtomicUsize; 2],
}

impl ResponseWatch {
    fn enter(&self) -> usize {
        let period = self.period.load(Ordering::Acquire) & 1;
        self.open[period].fetch_add(1, Ordering::AcqRel);
        period
    }

    fn leave(&self, period: usize) {
        self.open[period].fetch_sub(1, Ordering::AcqRel);
    }

    /// Ends a period. `true` when a response that began in the period before it is still
    /// open: it has run at least one period, at most two. Called by one task, once a period.
    pub fn tick(&self) -> bool {
        let period = self.period.load(Ordering::Acquire);
        // The period before this one; its counter is the one the next period reuses.
        let before = (period + 1) & 1;
        if self.open[before].load(Ordering::Acquire) > 0 {
            return true;
        }
        self.period.store(period.wrapping_add(1), Ordering::Release);
        false
    }
}

/// The request extension that carries a client connection's [`ResponseWatch`] (set by the
/// server for every request it reads from the connection).
#[derive(Debug, Clone)]
pub struct ConnectionResponses(pub Arc<ResponseWatch>);

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        // `lease`: the pooled HTTP/1.1 connection the body streams from, given back when
        // the body is dropped.
        Upstream { #[pin] body: Incoming, lease: Option<Lease> },
        Local { #[pin] body: Full<Bytes> },
        // An upstream body that fails, however much is left, when `deadline` (`limit` from its
        // start) passes (boxed: the other variants stay as small as they were).
        Deadlined {
            #[pin] body: Incoming,
            deadline: Pin<Box<tokio::time::Sleep>>,
            limit: std::time::Duration,
        },
    }
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::from(Bytes::new())
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Local { body: Full::new(b) },
            slot: None,
        }
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody {
            kind: Kind::Upstream { body, lease: None },
            slot: None,
        }
    }
}

impl ProxyBody {
    /// `body`, cut off `limit` from now: a response streaming slower than that fails there
    /// with [`BodyError::Deadline`], so the client sees an incomplete body (hyper aborts the
    /// chunked stream or resets the HTTP/2 stream), never a clean end of a cut answer.
    pub(crate) fn with_deadline(body: Incoming, limit: std::time::Duration) -> Self {
        ProxyBody {
            kind: Kind::Deadlined {
                body,
                deadline: Box::pin(tokio::time::sleep(limit)),
                limit,
            },
            slot: None,
        }
    }

    /// The body of a response from the pool, holding its connection until dropped.
    pub(crate) fn pooled(pooled: PooledBody) -> Self {
        ProxyBody {
            kind: Kind::Upstream {
                body: pooled.body,
                lease: pooled.lease,
            },
            slot: None,
        }
    }

    /// The same body, holding `slot` until it is dropped.
    pub fn holding(mut self, slot: Option<InFlightSlot>) -> Self {
        self.slot = slot;
        self
    }
}

/// Why a [`ProxyBody`] failed mid-stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The upstream's body failed (reset, cut short, malformed).
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The upstream's refusal of an upgrade was still streaming when the time it has (10 s,
    /// kube-apiserver's read and write deadline for it) ran out.
    #[error("the upstream's response did not end within {0:?}")]
    Deadline(std::time::Duration),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project().kind.project() {
            KindProj::Upstream { body, .. } => body.poll_frame(cx).map_err(BodyError::Upstream),
            KindProj::Deadlined {
                body,
                deadline,
                limit,
            } => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyError::Deadline(*limit))));
                }
                body.poll_frame(cx).map_err(BodyError::Upstream)
            }
            KindProj::Local { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } | Kind::Deadlined { body, .. } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } | Kind::Deadlined { body, .. } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// A body that drops `guard` as soon as the inner body ends (its last frame was read, or it
    /// says so with `is_end_stream`: hyper stops polling such a body), fails, or is dropped —
    /// whichever comes first. Audit and metrics use it to observe the real end of streaming
    /// responses.
    #[derive(Debug)]
    pub struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    /// Wraps `inner`.
    pub fn new(inner: B, guard: G) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> GuardedBody<B, G> {
    /// Wraps `inner` with no guard: the one it would have had is kept elsewhere (an upgrade's
    /// [`UpgradeSession`](crate::UpgradeSession)).
    pub(crate) fn unguarded(inner: B) -> Self {
        GuardedBody { inner, guard: None }
    }
}

impl<B: From<Bytes>, G> From<Bytes> for GuardedBody<B, G> {
    fn from(b: Bytes) -> Self {
        GuardedBody {
            inner: B::from(b),
            guard: None,
        }
    }
}

impl<B: Body, G> Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        if matches!(res, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.inner.is_end_stream()
        {
            drop(this.guard.take());
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A client's request body on its way upstream: its data frames as they come, its trailers
    /// without the fields a client may not send an upstream (`Authorization`,
    /// `Impersonate-*`, `X-Remote-*`, hop-by-hop), as its headers lose them.
    #[derive(Debug)]
    pub(crate) struct RequestBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        RequestBody { inner }
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    crate::headers::strip_request_trailers(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response counts as overdue at the second tick after it began (it has then run at
    /// least a whole period), not at the first, and never once it has ended.
    #[test]
    fn a_response_is_overdue_after_a_whole_period() {
        let count = Arc::new(AtomicUsize::new(0));
        let watch = ConnectionResponses(Arc::default());
        let slot = InFlightSlot::try_take(&count, 10)
            .unwrap()
            .watched_by(Some(&watch));
        assert!(!watch.0.tick(), "begun in this period");
        assert!(watch.0.tick(), "open through a whole period");
        drop(slot);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(!watch.0.tick());
        // Responses that end within a period never make the connection overdue.
        for _ in 0..4 {
            let slot = InFlightSlot::try_take(&count, 10)
                .unwrap()
                .watched_by(Some(&watch));
            assert!(!watch.0.tick());
            drop(slot);
        }
        assert!(!watch.0.tick());
        // A slot without a watch is only counted.
        let unwatched = InFlightSlot::try_take(&count, 10).unwrap().watched_by(None);
        assert!(!watch.0.tick() && !watch.0.tick());
        drop(unwatched);
    }
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_body_holds_its_in_flight_slot_until_dropped() {
        let count = Arc::new(AtomicUsize::new(0));
        let slot = InFlightSlot::try_take(&count, 1);
        assert!(slot.is_some());
        assert!(
            InFlightSlot::try_take(&count, 1).is_none(),
            "the limit is one"
        );
        let body = ProxyBody::empty().holding(slot);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert!(InFlightSlot::try_take(&count, 1).is_some());
    }

    #[tokio::test]
    async fn guard_drops_at_end_of_stream() {
        let n = Arc::new(AtomicUsize::new(0));
        // A stream that only learns it has ended when polled once more.
        let frames = futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::data(Bytes::from_static(b"y"))),
        ]);
        let mut b = GuardedBody::new(http_body_util::StreamBody::new(frames), Count(n.clone()));
        assert!(b.frame().await.is_some());
        assert!(b.frame().await.is_some());
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert!(b.frame().await.is_none());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        drop(b);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn guard_drops_when_the_body_says_it_has_ended() {
        // hyper stops polling a body whose `is_end_stream` is true, so the last frame must do.
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = GuardedBody::new(Full::new(Bytes::from_static(b"x")), Count(n.clone()));
        assert!(b.frame().await.is_some());
        assert!(b.is_end_stream());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn guard_drops_with_body() {
        let n = Arc::new(AtomicUsize::new(0));
        let b = GuardedBody::new(Full::new(Bytes::from_static(b"x")), Count(n.clone()));
        drop(b);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
