//! The response future [`AuthnLayer`](crate::AuthnLayer) and [`AuthzLayer`](crate::AuthzLayer)
//! share: wait for a decision on the request head, then call the inner service or answer in
//! its place.
//!
//! A hand-written state machine rather than a boxed `async` block: the decision future owns
//! its inputs (it borrows nothing from the request), so the request can wait beside it without
//! a self-referential future, and nothing is allocated or moved into a box per request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

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

impl<D, S, ReqBody> ResponseFuture<D, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Waits for `decision` on `req`, then calls `inner` (already ready) with it.
    pub(crate) fn new(decision: D, parts: Parts, body: ReqBody, inner: S) -> Self {
        ResponseFuture {
            state: State::Deciding {
                decision,
                request: Some((parts, body, inner)),
            },
        }
    }
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
                // Polled after completion: a contract violation by the caller.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
