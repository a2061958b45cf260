//! [`AuthnLayer`]: authenticates every request through an [`Authenticator`]; failures get
//! kube-apiserver's 401 Status.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::audit::IdentitySlot;
use crate::ext::{Identity, ScopeAttached};
pub use crate::gate::ResponseFuture;
use crate::gate::{self, Outcome, Verdict};
use crate::status::Status;

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    /// Who the request acts as; inserted as a request extension.
    pub identity: Identity,
    /// An optional restriction (e.g. an access-key scope); inserted as a request extension
    /// when present, with [`ScopeAttached`] beside it. [`RbacAuthorizer`](crate::RbacAuthorizer)
    /// enforces an `Arc<kubegate_authz::CompiledScope>` (what
    /// `kubegate_authz::CompiledScope::compile` of a token's or key's scope gives, shared);
    /// a scope of another type makes it refuse the request, as it cannot check it.
    pub scope: Option<S>,
}

/// Why authentication failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    /// No or invalid credentials: 401 `Unauthorized`.
    #[error("Unauthorized")]
    Unauthorized,
    /// The authenticator could not decide (e.g. a token review backend is down): 500 Status.
    /// The message is shown to the client and must not contain secrets.
    #[error("{0}")]
    Internal(String),
}

impl AuthnError {
    /// The Status kube-apiserver answers with.
    pub fn status(&self) -> Status {
        match self {
            AuthnError::Unauthorized => Status::unauthorized(),
            AuthnError::Internal(msg) => Status::internal_error(msg),
        }
    }
}

/// Turns request credentials (headers, cookies, client certificate info in extensions) into an
/// identity.
///
/// The returned future owns what it needs and borrows nothing from the request, so the layer
/// waits for it without boxing anything. An authenticator that decides from the head alone (a
/// token index, a client certificate) returns [`std::future::Ready`]: the layer sees that type
/// and applies the decision in its `call`, so the request never waits in the layer's future.
/// One that calls out (a TokenReview, an OIDC provider) copies the credential into a boxed
/// future:
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use kubegate_proxy::{Authenticated, Authenticator, AuthnError, Identity};
///
/// struct TokenReview;
/// impl Authenticator for TokenReview {
///     type Scope = ();
///     type Future =
///         Pin<Box<dyn Future<Output = Result<Authenticated<()>, AuthnError>> + Send>>;
///     fn authenticate(&self, req: &http::request::Parts) -> Self::Future {
///         let token = req.headers.get("authorization").cloned();
///         Box::pin(async move {
///             // … ask the API server about `token` …
///             match token {
///                 // `authenticated` adds `system:authenticated`, as kube-apiserver does.
///                 Some(_) => Ok(Authenticated {
///                     identity: Identity::authenticated("jane", "", vec![], Default::default()),
///                     scope: None,
///                 }),
///                 None => Err(AuthnError::Unauthorized),
///             }
///         })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// The scope type attached to authenticated requests (`()` if none).
    type Scope: Clone + Send + Sync + 'static;

    /// What [`authenticate`](Self::authenticate) returns.
    type Future: Future<Output = Result<Authenticated<Self::Scope>, AuthnError>> + Send + 'static;

    /// Authenticates a request head.
    fn authenticate(&self, request: &Parts) -> Self::Future;
}

/// Layer applying [`Authn`].
pub struct AuthnLayer<A> {
    authenticator: Arc<A>,
}

impl<A> AuthnLayer<A> {
    /// Authenticates with `authenticator`.
    pub fn new(authenticator: A) -> Self {
        AuthnLayer {
            authenticator: Arc::new(authenticator),
        }
    }

    /// Shares an existing authenticator.
    pub fn from_arc(authenticator: Arc<A>) -> Self {
        AuthnLayer { authenticator }
    }
}

impl<A> Clone for AuthnLayer<A> {
    fn clone(&self) -> Self {
        AuthnLayer {
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<A> fmt::Debug for AuthnLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthnLayer").finish_non_exhaustive()
    }
}

impl<S, A> Layer<S> for AuthnLayer<A> {
    type Service = Authn<S, A>;

    fn layer(&self, inner: S) -> Authn<S, A> {
        Authn {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Middleware that authenticates, then calls the inner service with [`Identity`] (and the scope)
/// in the request extensions, or answers 401 itself.
pub struct Authn<S, A> {
    inner: S,
    authenticator: Arc<A>,
}

impl<S: Clone, A> Clone for Authn<S, A> {
    fn clone(&self) -> Self {
        Authn {
            inner: self.inner.clone(),
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<S: fmt::Debug, A> fmt::Debug for Authn<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authn")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for Authn<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    A: Authenticator,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<A::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let authentication = self.authenticator.authenticate(&parts);
        gate::start(authentication, parts, body, &mut self.inner)
    }
}

impl<Scope, B> Outcome<B> for Result<Authenticated<Scope>, AuthnError>
where
    Scope: Clone + Send + Sync + 'static,
    B: From<Bytes>,
{
    fn apply(self, parts: &mut Parts) -> Verdict<B> {
        match self {
            Ok(Authenticated { identity, scope }) => {
                if let Some(slot) = parts.extensions.get::<IdentitySlot>() {
                    slot.set(identity.clone());
                }
                parts.extensions.insert(identity);
                if let Some(scope) = scope {
                    parts.extensions.insert(scope);
                    if std::any::TypeId::of::<Scope>() != std::any::TypeId::of::<()>() {
                        parts
                            .extensions
                            .insert(ScopeAttached(std::any::type_name::<Scope>()));
                    }
                }
                Verdict::Proceed(None)
            }
            Err(e) => Verdict::Respond(e.status().response_for(&parts.uri, &parts.headers)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    struct Tokens;
    impl Authenticator for Tokens {
        type Scope = &'static str;
        type Future = std::future::Ready<Result<Authenticated<&'static str>, AuthnError>>;
        fn authenticate(&self, req: &Parts) -> Self::Future {
            std::future::ready(
                match req.headers.get("authorization").map(|v| v.as_bytes()) {
                    Some(b"Bearer good") => Ok(Authenticated {
                        identity: Identity::new("alice", vec!["system:authenticated".into()]),
                        scope: Some("scope-a"),
                    }),
                    Some(b"Bearer broken") => Err(AuthnError::Internal("backend down".into())),
                    _ => Err(AuthnError::Unauthorized),
                },
            )
        }
    }

    fn echo() -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let id = req
                .extensions()
                .get::<Identity>()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            let scope = req
                .extensions()
                .get::<&'static str>()
                .copied()
                .unwrap_or_default();
            // The scope's type is named beside it, for authorizers that cannot read it.
            let attached = req.extensions().get::<ScopeAttached>().map_or("-", |a| a.0);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "{id} {scope} {attached}"
            )))))
        })
    }

    async fn call(auth: Option<&'static str>, ua: &'static str) -> Response<Full<Bytes>> {
        let svc = AuthnLayer::new(Tokens).layer(echo());
        let mut req = Request::builder()
            .uri("/api/v1/pods")
            .header("user-agent", ua);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        svc.oneshot(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }

    async fn text(res: Response<Full<Bytes>>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn authenticated_request_reaches_inner_with_identity_and_scope() {
        let res = call(Some("Bearer good"), "kubectl").await;
        assert_eq!(res.status(), 200);
        assert_eq!(text(res).await, "alice scope-a &str");
    }

    #[tokio::test]
    async fn missing_or_bad_credentials_get_kube_401() {
        for auth in [None, Some("Bearer bad"), Some("Basic x")] {
            let res = call(auth, "kubectl").await;
            assert_eq!(res.status(), 401);
            assert_eq!(
                text(res).await,
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
            );
        }
    }

    #[tokio::test]
    async fn curl_gets_pretty_401() {
        let res = call(None, "curl/8.5.0").await;
        assert!(text(res).await.starts_with("{\n  \"kind\": \"Status\""));
    }

    #[tokio::test]
    async fn authenticator_failure_is_500_status() {
        let res = call(Some("Bearer broken"), "kubectl").await;
        assert_eq!(res.status(), 500);
        assert!(
            text(res)
                .await
                .contains("Internal error occurred: backend down")
        );
    }

    /// Asks elsewhere: its decision is pending on the first poll, so the request waits in
    /// the layer's future across a wake-up.
    struct Remote;
    impl Authenticator for Remote {
        type Scope = &'static str;
        type Future = std::pin::Pin<
            Box<dyn Future<Output = Result<Authenticated<&'static str>, AuthnError>> + Send>,
        >;
        fn authenticate(&self, req: &Parts) -> Self::Future {
            let good =
                req.headers.get("authorization").map(|v| v.as_bytes()) == Some(b"Bearer good");
            Box::pin(async move {
                tokio::task::yield_now().await;
                if good {
                    Ok(Authenticated {
                        identity: Identity::new("bob", vec![]),
                        scope: Some("remote"),
                    })
                } else {
                    Err(AuthnError::Unauthorized)
                }
            })
        }
    }

    #[tokio::test]
    async fn pending_authenticator_resumes_the_request() {
        const UNAUTHORIZED: &str = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n";
        for (auth, status, body) in [
            ("Bearer good", 200, "bob remote &str"),
            ("Bearer bad", 401, UNAUTHORIZED),
        ] {
            let svc = AuthnLayer::new(Remote).layer(echo());
            let req = Request::builder()
                .uri("/api")
                .header("authorization", auth)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = svc.oneshot(req).await.unwrap();
            assert_eq!(res.status(), status);
            assert_eq!(text(res).await, body);
        }
    }

    /// A `Ready` decision is applied in `call`: the inner service has the request before the
    /// layer's future is first polled. A pending one calls it only from the future.
    #[tokio::test]
    async fn ready_decisions_call_the_inner_service_from_call() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;
        fn counting(
            calls: Arc<AtomicUsize>,
        ) -> impl Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = Answer,
        > + Clone {
            tower::service_fn(move |_req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))))
            })
        }
        let request = || {
            Request::builder()
                .uri("/api")
                .header("authorization", "Bearer good")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };

        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = AuthnLayer::new(Tokens).layer(counting(calls.clone()));
        let future = svc.ready().await.unwrap().call(request());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(future.await.unwrap().status(), 200);

        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = AuthnLayer::new(Remote).layer(counting(calls.clone()));
        let future = svc.ready().await.unwrap().call(request());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(future.await.unwrap().status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
