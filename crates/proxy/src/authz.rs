//! [`AuthzLayer`]: asks an [`Authorizer`] whether the (already authenticated) request may
//! proceed; answers kube-apiserver's 403 Status or 500 plain text itself otherwise.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::audit::IdentitySlot;
use crate::ext::AuditAnnotations;
pub use crate::gate::ResponseFuture;
use crate::gate::{self, Outcome, Verdict};
use crate::status::{Status, internal_error_text};

/// An authorization decision.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Proceed. The reason is recorded as the audit annotation `authorization.k8s.io/reason`.
    Allow {
        /// Why (e.g. `RBAC: allowed by ClusterRoleBinding "x" …`).
        reason: String,
    },
    /// Refuse with this Status — normally [`Status::forbidden`] with the sentence from
    /// kubegate-authz's formatter (`User "x" cannot list resource "pods" …`).
    Deny {
        /// The 403 to send.
        status: Status,
        /// The authorizer's reason for the audit annotation.
        reason: String,
    },
    /// The authorizer failed: kube answers `500 Internal Server Error: "<uri>": <err>` as plain
    /// text (apiserver `filters/authorization.go`). The audit event gets no decision and only
    /// the reason `internal error`, as there: the error's text goes to the client's 500, not
    /// to the audit log.
    Error(String),
}

/// Decides on a request head (identity, scope, route information are in its extensions).
///
/// As with [`Authenticator`](crate::Authenticator), the future owns its inputs: an authorizer
/// that decides in memory (RBAC, a scope) returns [`std::future::Ready`] (which the layer
/// applies in its `call`, without a waiting state), one that asks elsewhere (a
/// SubjectAccessReview webhook) a boxed future.
pub trait Authorizer: Send + Sync + 'static {
    /// What [`authorize`](Self::authorize) returns.
    type Future: Future<Output = Decision> + Send + 'static;

    /// Authorizes a request.
    fn authorize(&self, request: &Parts) -> Self::Future;
}

/// Layer applying [`Authz`].
pub struct AuthzLayer<Z> {
    authorizer: Arc<Z>,
}

impl<Z> AuthzLayer<Z> {
    /// Authorizes with `authorizer`.
    pub fn new(authorizer: Z) -> Self {
        AuthzLayer {
            authorizer: Arc::new(authorizer),
        }
    }

    /// Shares an existing authorizer.
    pub fn from_arc(authorizer: Arc<Z>) -> Self {
        AuthzLayer { authorizer }
    }
}

impl<Z> Clone for AuthzLayer<Z> {
    fn clone(&self) -> Self {
        AuthzLayer {
            authorizer: self.authorizer.clone(),
        }
    }
}

impl<Z> fmt::Debug for AuthzLayer<Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthzLayer").finish_non_exhaustive()
    }
}

impl<S, Z> Layer<S> for AuthzLayer<Z> {
    type Service = Authz<S, Z>;

    fn layer(&self, inner: S) -> Authz<S, Z> {
        Authz {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// Middleware that authorizes each request before calling the inner service.
pub struct Authz<S, Z> {
    inner: S,
    authorizer: Arc<Z>,
}

impl<S: Clone, Z> Clone for Authz<S, Z> {
    fn clone(&self) -> Self {
        Authz {
            inner: self.inner.clone(),
            authorizer: self.authorizer.clone(),
        }
    }
}

impl<S: fmt::Debug, Z> fmt::Debug for Authz<S, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authz")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Z, ReqBody, ResBody> Service<Request<ReqBody>> for Authz<S, Z>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    Z: Authorizer,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Z::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let decision = self.authorizer.authorize(&parts);
        gate::start(decision, parts, body, &mut self.inner)
    }
}

impl<B: From<Bytes>> Outcome<B> for Decision {
    fn apply(self, parts: &mut Parts) -> Verdict<B> {
        // An audit layer outside takes the annotations from its slot; without one they ride
        // on the response.
        let slot = parts.extensions.get::<IdentitySlot>();
        let (mut res, annotations) = match self {
            Decision::Allow { reason } => {
                let annotations = AuditAnnotations::authorization(true, reason);
                return match slot {
                    Some(slot) => {
                        slot.annotate(annotations);
                        Verdict::Proceed(None)
                    }
                    None => Verdict::Proceed(Some(annotations)),
                };
            }
            Decision::Deny { status, reason } => (
                status.response_for(&parts.uri, &parts.headers),
                AuditAnnotations::authorization(false, reason),
            ),
            Decision::Error(err) => {
                let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                (
                    internal_error_text(uri, &err),
                    AuditAnnotations::authorization_error(),
                )
            }
        };
        match slot {
            Some(slot) => slot.annotate(annotations),
            None => {
                res.extensions_mut().insert(annotations);
            }
        }
        Verdict::Respond(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::Identity;
    use http_body_util::{BodyExt, Full};
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// Allows alice, denies everyone else with kube's sentence, errors for "broken".
    struct OnlyAlice;
    impl Authorizer for OnlyAlice {
        type Future = std::future::Ready<Decision>;
        fn authorize(&self, req: &Parts) -> Self::Future {
            std::future::ready(self.decide(req))
        }
    }
    impl OnlyAlice {
        fn decide(&self, req: &Parts) -> Decision {
            let user = req
                .extensions
                .get::<Identity>()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            match user.as_str() {
                "alice" => Decision::Allow {
                    reason: "RBAC: allowed".into(),
                },
                "broken" => Decision::Error("ARGH".into()),
                _ => Decision::Deny {
                    status: Status::forbidden(
                        "",
                        "pods",
                        "",
                        &format!(
                            "User {user:?} cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
                        ),
                    ),
                    reason: String::new(),
                },
            }
        }
    }

    async fn call(user: &str, uri: &str) -> Response<Full<Bytes>> {
        let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let svc = AuthzLayer::new(OnlyAlice).layer(inner);
        let mut req = Request::builder()
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut().insert(Identity::new(user, vec![]));
        svc.oneshot(req).await.unwrap()
    }

    async fn text(res: Response<Full<Bytes>>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn allowed_requests_pass_and_are_annotated() {
        let res = call("alice", "/api/v1/namespaces/default/pods").await;
        assert_eq!(res.status(), 200);
        let ann = res.extensions().get::<AuditAnnotations>().unwrap();
        assert_eq!(ann.0["authorization.k8s.io/decision"], "allow");
        assert_eq!(text(res).await, "ok");
    }

    /// Keeps the events it is given.
    #[derive(Default)]
    struct Events(std::sync::Mutex<Vec<crate::audit::AuditEvent>>);
    impl crate::audit::AuditSink for Events {
        fn record(&self, event: &crate::audit::AuditEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[tokio::test]
    async fn under_an_audit_layer_the_annotations_reach_the_event_through_its_slot() {
        // As kube's filters/authorization.go: an authorizer error records no decision and
        // only the reason `internal error`, never the error's text.
        for (user, status, decision, reason) in [
            ("alice", 200, Some("allow"), "RBAC: allowed"),
            ("bob", 403, Some("forbid"), ""),
            ("broken", 500, None, "internal error"),
        ] {
            let events = Arc::new(Events::default());
            let inner =
                tower::service_fn(|req: Request<crate::AuditBody<Full<Bytes>>>| async move {
                    // The slot the authorization layer reports its annotations to.
                    assert!(
                        req.extensions()
                            .get::<crate::audit::IdentitySlot>()
                            .is_some()
                    );
                    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                    res.extensions_mut()
                        .insert(AuditAnnotations(BTreeMap::from([(
                            Cow::Borrowed("example.com/from-inner"),
                            Cow::Borrowed("kept"),
                        )])));
                    Ok::<_, Infallible>(res)
                });
            let svc = crate::AuditLayer::from_arc(events.clone())
                .layer(AuthzLayer::new(OnlyAlice).layer(inner));
            let mut req = Request::builder()
                .uri("/api/v1/namespaces/default/pods")
                .body(Full::new(Bytes::new()))
                .unwrap();
            req.extensions_mut().insert(Identity::new(user, vec![]));
            let res = svc.oneshot(req).await.unwrap();
            assert_eq!(res.status(), status, "{user}");
            assert!(res.extensions().get::<AuditAnnotations>().is_none());
            drop(res);
            let events = events.0.lock().unwrap();
            let annotations = &events[0].annotations;
            assert_eq!(
                annotations
                    .get("authorization.k8s.io/decision")
                    .map(|v| &**v),
                decision,
                "{user}"
            );
            assert_eq!(annotations["authorization.k8s.io/reason"], reason, "{user}");
            // The inner service ran only for the allowed request; its annotations join.
            assert_eq!(
                annotations.get("example.com/from-inner").map(|v| &**v),
                (status == 200).then_some("kept"),
                "{user}"
            );
        }
    }

    #[tokio::test]
    async fn denied_requests_get_kube_403() {
        let res = call("system:anonymous", "/api/v1/namespaces/default/pods").await;
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            text(res).await,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods is forbidden: User \\\"system:anonymous\\\" cannot list resource \\\"pods\\\" in API group \\\"\\\" in the namespace \\\"default\\\"\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"pods\"},\"code\":403}\n"
        );
    }

    #[tokio::test]
    async fn authorizer_error_is_plain_text_500() {
        let res = call("broken", "/api?a=1&b=2").await;
        assert_eq!(res.status(), 500);
        let ann = res.extensions().get::<AuditAnnotations>().unwrap();
        assert_eq!(ann.0.len(), 1, "{:?}", ann.0);
        assert_eq!(ann.0["authorization.k8s.io/reason"], "internal error");
        assert_eq!(
            text(res).await,
            "Internal Server Error: \"/api?a=1&amp;b=2\": ARGH\n"
        );
    }
}
