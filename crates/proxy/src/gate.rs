//! The response future [`AuthnLayer`](crate::AuthnLayer) and [`AuthzLayer`](crate::AuthzLayer)
//! share: wait for a decision on the request head, then call the inner service or answer in
//! its place.
//!
//! A hand-written state machine rather than a boxed `async` block: the decision future owns
//! its inputs (it borrows nothing from the request), so the request can wait beside it without
//! a self-referential future, and nothing is allocated or moved into a box per request.
//!
//! A decision that needs no waiting (a `std::future::Ready`, as an access-key lookup or an RBAC
//! check returns) is applied in the layer's `call` instead ([`start`]): the inner service is
//! called there and then, and the future holds only the inner service's future, not the
//! request head, its body and a clone of the inner service waiting for a first poll.

use std::any::Any;
use std::fmt;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use crate::ext::AuditAnnotations;

/// What a layer does with a request once its decision is known.
pub(crate) enum Verdict<B> {
    /// Call the inner service; put these annotations on its response.
    Proceed(Option<AuditAnnotations>),
    /// Answer with this response instead of calling the inner service.
    Respond(Response<B>),
}

/// A decision ([`Authenticator`](crate::Authenticator) or [`Authorizer`](crate::Authorizer)
/// output) applied to the waiting request head.
pub(crate) trait Outcome<B> {
    /// Records what the decision adds to the request (identity, scope) and says how to go on.
    fn apply(self, parts: &mut Parts) -> Verdict<B>;
}

pin_project! {
    #[project = StateProj]
    enum State<D, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Deciding {
            #[pin]
            decision: D,
            request: Option<(Parts, ReqBody, S)>,
        },
        Calling {
            #[pin]
            call: S::Future,
            annotations: Option<AuditAnnotations>,
        },
        Answered {
            response: Option<S::Response>,
        },
        Done,
    }
}

pin_project! {
    /// Response future of [`Authn`](crate::authn::Authn) and [`Authz`](crate::authz::Authz):
    /// the decision `D` first, then the inner service `S`'s future.
    pub struct ResponseFuture<D, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<D, S, ReqBody>,
    }
}

/// Starts a layer's response future for `parts` and `body` and the decision on them. A ready
/// decision is applied at once and `inner` (which the layer's `poll_ready` made ready) called
/// now; otherwise the request waits for the decision with `inner`, and a fresh clone of it is
/// left in the layer for the next request.
pub(crate) fn start<D, S, ReqBody, ResBody>(
    decision: D,
    mut parts: Parts,
    body: ReqBody,
    inner: &mut S,
) -> ResponseFuture<D, S, ReqBody>
where
    D: Future + 'static,
    D::Output: Outcome<ResBody> + 'static,
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    let state = match decided(decision) {
        Ok(outcome) => match outcome.apply(&mut parts) {
            Verdict::Proceed(annotations) => State::Calling {
                call: inner.call(Request::from_parts(parts, body)),
                annotations,
            },
            Verdict::Respond(res) => State::Answered {
                response: Some(res),
            },
        },
        Err(decision) => {
            // The ready service is the one that must be called; leave a fresh clone behind.
            let clone = inner.clone();
            let ready = std::mem::replace(inner, clone);
            State::Deciding {
                decision,
                request: Some((parts, body, ready)),
            }
        }
    };
    ResponseFuture { state }
}

/// The decision's output, if `decision` is a `std::future::Ready` (whose value is there
/// without polling); otherwise the decision, to be awaited. The type test is resolved when
/// the layer is compiled for its decider: no cost at run time either way.
fn decided<D>(mut decision: D) -> Result<D::Output, D>
where
    D: Future + 'static,
    D::Output: 'static,
{
    if let Some(ready) = (&mut decision as &mut dyn Any).downcast_mut::<Ready<D::Output>>() {
        // `Ready` hands over its value on the first poll and never looks at the waker.
        if let Poll::Ready(output) = Pin::new(ready).poll(&mut Context::from_waker(Waker::noop())) {
            return Ok(output);
        }
    }
    Err(decision)
}

impl<D, S, ReqBody> fmt::Debug for ResponseFuture<D, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<D, S, ReqBody, ResBody> Future for ResponseFuture<D, S, ReqBody>
where
    D: Future,
    D::Output: Outcome<ResBody>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Deciding { decision, request } => {
                    let outcome = ready!(decision.poll(cx));
                    let Some((mut parts, body, mut inner)) = request.take() else {
                        // Unreachable: the request leaves only together with this state.
                        return Poll::Pending;
                    };
                    match outcome.apply(&mut parts) {
                        Verdict::Proceed(annotations) => {
                            let call = inner.call(Request::from_parts(parts, body));
                            state.set(State::Calling { call, annotations });
                        }
                        Verdict::Respond(res) => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(res));
                        }
                    }
                }
                StateProj::Calling { call, annotations } => {
                    let mut res = ready!(call.poll(cx))?;
                    if let Some(annotations) = annotations.take() {
                        res.extensions_mut().insert(annotations);
                    }
                    state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Answered { response } => {
                    let response = response.take();
                    state.set(State::Done);
                    return match response {
                        Some(res) => Poll::Ready(Ok(res)),
                        // Unreachable: the response leaves only together with this state.
                        None => Poll::Pending,
                    };
                }
                // Polled after completion: a contract violation by the caller.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
