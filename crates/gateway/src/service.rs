//! The gateway's request path: route → authenticate → authorize → dispatch (management API,
//! ops endpoints, or a forwarding service), with audit and metrics around it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use kubegate_authz::{
    Attributes, ImpersonationModes, ImpersonationRequest, Policy, WriteGate,
    impersonate_constrained,
};
use kubegate_proxy::audit::IdentitySlot;
use kubegate_proxy::status::{internal_error_text, not_found_text, redirect_to_slash};
use kubegate_proxy::{LongRunning, ProxyBody, RequestMeta, Status, UpstreamPath};
use kubegate_routing::{RequestInfo, Route, RouteError, Router, Target};
use kubegate_tokens::{KeySet, Minter};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::access::{self, describe};
use crate::authn::{Caller, CallerCredential, Credentials, bearer};
use crate::config::Config;
use crate::directory::{Destination, Directory};
use crate::inflight::Admission;
use crate::refusals::Refused;
use crate::store::Store;
use crate::upstreams::{self, Upstreams};
use kubegate_proxy::InFlightSlot;

/// Everything compiled from one configuration; swapped whole on reload.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Lookups over the configuration.
    pub directory: Arc<Directory>,
    /// Gateway RBAC.
    pub policy: Arc<Policy>,
    /// The write gate over `policy`.
    pub write_gate: WriteGate,
    /// Credential verification.
    pub credentials: Credentials,
    /// Forwarding services.
    pub upstreams: Arc<Upstreams>,
    /// Request rate limits (buckets start full after a configuration reload).
    pub limits: Arc<crate::ratelimit::RateLimits>,
}

/// Revokes, in `verifier`, every stored revocation that has not yet run out (idempotent).
pub(crate) fn apply_revocations(verifier: &kubegate_tokens::Verifier, state: &crate::store::State) {
    let now = kubegate_tokens::unix_now();
    verifier.revocations().revoke_all(
        state
            .revocations
            .iter()
            .filter(|r| r.expires_at > now as i64)
            .map(|r| (r.jti.as_str(), r.expires_at as u64)),
        now,
    );
}

impl Shared {
    /// Re-reads API-created state (access keys, token generations, revocations) into the
    /// runtime, so a key created a moment ago authenticates on the next request and a token
    /// revoked through another replica sharing the store stops working here too.
    ///
    /// Waits for a rebuild in progress (a [`reload`](crate::Gateway::reload) or another
    /// refresh), then starts from the runtime and the state as they are at that moment.
    pub async fn refresh_state(&self) -> Result<(), crate::error::StoreError> {
        let _rebuilding = self.rebuild.lock().await;
        // Both read under the lock: a snapshot taken earlier could predate a deletion another
        // rebuild already applied, and a runtime loaded earlier could be one a reload has
        // since replaced.
        let state = self.store.snapshot().await?;
        // The state this refresh applied last, unchanged since (a store shares its snapshot
        // until a write): nothing to do. A change is otherwise applied twice, by the request
        // that made it and by the store watcher that hears of it, each rebuilding every
        // credential.
        let mut applied = self
            .applied_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, &state)) {
            return Ok(());
        }
        *applied = Some(Arc::clone(&state));
        drop(applied);
        let current = self.runtime.load_full();
        apply_revocations(current.credentials.verifier(), &state);
        let credentials = Credentials::new(
            &current.config,
            &state,
            Arc::clone(current.credentials.verifier()),
        );
        self.runtime.store(Arc::new(Runtime {
            config: Arc::clone(&current.config),
            directory: Arc::clone(&current.directory),
            policy: Arc::clone(&current.policy),
            write_gate: WriteGate::new(Arc::clone(&current.policy), current.config.read_only),
            credentials,
            upstreams: Arc::clone(&current.upstreams),
            limits: Arc::clone(&current.limits),
        }));
        Ok(())
    }
}

/// State shared by every request.
#[derive(Debug)]
pub struct Shared {
    /// Prefix routing for the configured mode.
    pub router: Router,
    /// The current runtime.
    pub runtime: ArcSwap<Runtime>,
    /// API-created state.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<KeySet>,
    /// Token minting.
    pub minter: Minter,
    /// The issuer URL of minted tokens (the `/oidc` endpoint's public URL).
    pub issuer: String,
    /// State of the `/auth` endpoints (failed-login counters).
    pub auth: crate::auth::AuthState,
    /// Latest upstream reachability, for `/readyz`.
    pub upstream_health: crate::health::UpstreamHealth,
    /// Tokens minted for upstreams in identity mode `oidc`.
    pub forwarded_tokens: crate::forwarded_tokens::ForwardedTokens,
    /// Prometheus registry rendered at `/metrics`.
    pub registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    /// Authentication methods beyond the gateway's own credentials, in order.
    /// Swapped on reload when their configuration changed (caches survive other reloads).
    pub authenticators: ArcSwap<Vec<Arc<dyn crate::authenticators::ExternalAuthenticator>>>,
    /// The state [`refresh_state`](Self::refresh_state) applied last.
    pub(crate) applied_state: std::sync::Mutex<Option<Arc<crate::store::State>>>,
    /// The files the authenticators read when built, with their contents then: a reload
    /// rebuilds them when one changed.
    pub(crate) authenticator_files: std::sync::Mutex<Vec<(std::path::PathBuf, Option<Vec<u8>>)>>,
    /// Held by whoever rebuilds `runtime` (a reload, a state refresh) from reading the current
    /// runtime and a state snapshot until storing the new one. Two rebuilds that overlapped
    /// would each store a runtime built from what it read, the last one undoing the other: a
    /// reload would bring back a key deleted meanwhile, or a refresh would put back the
    /// configuration a reload replaced. Forwarded requests never take it (they only load
    /// `runtime`); the management and login requests that change stored keys wait for their
    /// own refresh, so they may queue behind a reload.
    pub(crate) rebuild: tokio::sync::Mutex<()>,
    /// Requests being served, for the max-in-flight limit.
    pub(crate) in_flight: Arc<crate::inflight::InFlight>,
    /// Held from counting a user's keys until the new one is stored, so keys created side by
    /// side cannot all pass the per-user limit (the store checks names, not counts). Owned by
    /// the write itself, which a store carries out even when its request is gone.
    pub(crate) key_creation: Arc<tokio::sync::Mutex<()>>,
    /// The impersonation mode that last let each caller impersonate (tried first next time,
    /// as kube-apiserver does; it decides which refusal a caller sees).
    pub(crate) impersonation_modes: ImpersonationModes,
    /// Refusals of unauthenticated callers: counted, and logged at a bounded rate.
    pub(crate) refusals: crate::refusals::Refusals,
    /// The audit sink, asked per request whether it is backlogged (see [`Classify`]).
    pub(crate) audit: Arc<crate::audit::GatewayAuditSink>,
}

/// The request body inside the audit layer: the client's body, copied for the audit event when
/// the target's audit level records request bodies.
pub type RequestBody = kubegate_proxy::AuditBody<Incoming>;

/// The innermost gateway service (authentication, authorization, dispatch). Wrap it with the
/// proxy's audit and metrics layers; [`Gateway`](crate::Gateway) does.
#[derive(Debug, Clone)]
pub struct GatewayService {
    shared: Arc<Shared>,
}

impl GatewayService {
    /// A service over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        GatewayService { shared }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl Service<Request<RequestBody>> for GatewayService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> GatewayFuture {
        let runtime = self.shared.runtime.load();
        let kind = match begin(&self.shared, &runtime, req) {
            Step::Respond(res) => Kind::Ready(Some(res)),
            Step::Forward(forwarding, slot) => Kind::Forward(forwarding, slot),
            Step::Wait(req, own_credentials) => {
                let shared = Arc::clone(&self.shared);
                let runtime = arc_swap::Guard::into_inner(runtime);
                Kind::Wait(Box::pin(async move {
                    Ok(handle(&shared, &runtime, req, own_credentials).await)
                }))
            }
        };
        GatewayFuture { kind }
    }
}

/// Response future of [`GatewayService`]: a request forwarded with a credential of the gateway's
/// own (the common case) waits on the forwarding service's future alone; a request the gateway
/// answered at once holds its response; the rest (the gateway's own endpoints, credentials an
/// external authenticator checks) run the whole path in a boxed future.
pub struct GatewayFuture {
    kind: Kind,
}

enum Kind {
    Ready(Option<Response<ProxyBody>>),
    Forward(
        kubegate_proxy::forward::ResponseFuture,
        Option<InFlightSlot>,
    ),
    Wait(BoxFuture),
}

impl std::fmt::Debug for GatewayFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Ready(_) => "Ready",
            Kind::Forward(..) => "Forward",
            Kind::Wait(_) => "Wait",
        };
        f.debug_tuple("GatewayFuture").field(&kind).finish()
    }
}

impl Future for GatewayFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every variant is `Unpin` (the futures are boxed), so the future is too.
        match &mut self.get_mut().kind {
            Kind::Ready(res) => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Ready(Ok(internal_error_text(
                    "",
                    "GatewayFuture polled after it completed",
                ))),
            },
            Kind::Forward(forwarding, slot) => {
                let res = std::task::ready!(Pin::new(forwarding).poll(cx));
                Poll::Ready(res.map(|mut res| {
                    strip_upstream_session_cookie(res.headers_mut());
                    res.map(|body| body.holding(slot.take()))
                }))
            }
            Kind::Wait(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

/// The metrics label of a target that names nothing configured.
static UNKNOWN_TARGET: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("unknown"));

/// The outermost layer: annotates requests with [`RequestMeta`] (target and verb labels, object
/// reference), [`LongRunning`] and the target's [`AuditLevel`](kubegate_proxy::AuditLevel) for
/// the audit and metrics layers inside it, and ends watch responses cleanly when the gateway
/// shuts down, so clients re-watch elsewhere instead of seeing a broken stream.
#[derive(Debug, Clone)]
pub struct Classify<S> {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    inner: S,
}

impl<S> Classify<S> {
    /// Wraps `inner`; watches end when `shutdown` is cancelled. While the audit sink is
    /// backlogged, requests other than the ops endpoints are marked to be refused, and no
    /// request is audited.
    pub fn new(shared: Arc<Shared>, shutdown: CancellationToken, inner: S) -> Self {
        Classify {
            shared,
            shutdown,
            inner,
        }
    }
}

/// Marks a request [`Classify`] took in while the audit log was backlogged: the gateway
/// answers it kube's 429 at once, and the audit layer (told `AuditLevel::None`) records
/// nothing for it, so a stalled log cannot grow without bound from new requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditBacklog;

impl<S, B, RB> Service<Request<B>> for Classify<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<DrainOnShutdown<RB>>;
    type Error = S::Error;
    type Future = ClassifyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let classified = match self
            .shared
            .router
            .route(req.uri().path(), req.uri().query())
        {
            Ok(route) => RequestInfo::parse(req.method().as_str(), &route.rest, route.query)
                .ok()
                .map(|info| {
                    let mut meta = RequestMeta::new(&route.target, &info);
                    let runtime = self.shared.runtime.load();
                    if !runtime.directory.knows(&route.target) {
                        // Names come from the path before anyone is authenticated: made-up
                        // ones share one label instead of taking the metrics' slots for
                        // targets by name, which the real targets would then go without.
                        meta.target = Arc::clone(&UNKNOWN_TARGET);
                    }
                    let level = runtime.directory.audit_level(&route.target, &meta.target);
                    let ops = matches!(route.target, Target::Ops(_));
                    (meta, info.is_long_running(), level, ops)
                }),
            Err(_) => None,
        };
        let watch = classified.as_ref().is_some_and(|(m, ..)| m.verb == "watch");
        // Health checks and metrics stay served while the audit log is behind, unaudited: an
        // orchestrator must not restart the gateway for it, the metrics say why requests are
        // refused, and none of it adds to the backlog (which would then drop the events of
        // requests already served).
        let mut ops = false;
        if let Some((meta, long_running, level, is_ops)) = classified {
            ops = is_ops;
            let ext = req.extensions_mut();
            ext.insert(meta);
            ext.insert(LongRunning(long_running));
            ext.insert(level);
        }
        if kubegate_proxy::AuditSink::backlogged(&*self.shared.audit) {
            let ext = req.extensions_mut();
            ext.insert(kubegate_proxy::AuditLevel::None);
            if !ops {
                ext.insert(AuditBacklog);
            }
        }
        ClassifyFuture {
            inner: self.inner.call(req),
            shutdown: watch.then(|| self.shutdown.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Classify`].
    pub struct ClassifyFuture<F> {
        #[pin]
        inner: F,
        shutdown: Option<CancellationToken>,
    }
}

impl<F, RB, E> Future for ClassifyFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<DrainOnShutdown<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let shutdown = this.shutdown.take();
        Poll::Ready(Ok(res.map(|body| DrainOnShutdown {
            inner: body,
            shutdown: shutdown.map(|t| Box::pin(t.cancelled_owned())),
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends (cleanly: final chunk / END_STREAM) once shutdown begins; used
    /// for watches only, whose clients resume from their last resourceVersion.
    pub struct DrainOnShutdown<B> {
        #[pin]
        inner: B,
        shutdown: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    }
}

impl<B: http_body::Body> http_body::Body for DrainOnShutdown<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if let Some(shutdown) = this.shutdown
            && shutdown.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub(crate) fn respond(status: &Status, req: &Request<RequestBody>) -> Response<ProxyBody> {
    status.response_for(req.uri(), req.headers())
}

/// Where the request path got to without waiting.
enum Step {
    /// Answered.
    Respond(Response<ProxyBody>),
    /// Authenticated, authorized and handed to its upstream's forwarding service, with its
    /// max-in-flight slot.
    Forward(
        kubegate_proxy::forward::ResponseFuture,
        Option<InFlightSlot>,
    ),
    /// Has to wait: the rest runs in [`handle`]. Carries why the gateway's own credentials did
    /// not authenticate the request, when they were tried.
    Wait(Request<RequestBody>, OwnCredentials),
}

/// Whether the gateway's own credentials (access keys, minted tokens) were tried on a request.
pub(crate) enum OwnCredentials {
    /// Not yet.
    Untried,
    /// Tried; they did not authenticate it, for this reason.
    Rejected(String),
}

/// The request path as far as it goes without waiting. Requests to a Kubernetes target with an
/// access key or a token of the gateway's own (the traffic a gateway lives on) are decided
/// here and handed to their upstream in `call`, without a boxed future around them.
fn begin(shared: &Shared, runtime: &Runtime, req: Request<RequestBody>) -> Step {
    if req.extensions().get::<AuditBacklog>().is_some() {
        if shared.refusals.count(Refused::audit_backlog) {
            tracing::warn!(
                path = %clipped(req.uri().path()),
                "refused a request: the audit log's writer is behind"
            );
        }
        return Step::Respond(crate::inflight::too_many_requests());
    }
    let uri = req.uri().clone();
    let route = match route(shared, &uri, &req) {
        Ok(route) => route,
        Err(res) => return Step::Respond(*res),
    };
    if !route.target.is_kubernetes_upstream() {
        return Step::Wait(req, OwnCredentials::Untried);
    }
    if let Err(why) = crate::auth::check_origin(&runtime.config, req.headers()) {
        return Step::Respond(respond(&Status::forbidden("", "", "", &why), &req));
    }
    let caller = match own_credentials(runtime, &req) {
        Ok(caller) => caller,
        Err(reason) => return Step::Wait(req, OwnCredentials::Rejected(reason)),
    };
    // Counted against the target's own budget once it is found (in `forward`).
    if let Err(res) = admit(runtime, &caller, &req, None) {
        return Step::Respond(*res);
    }
    match forward(shared, runtime, caller, &route, req) {
        Ok((forwarding, slot)) => Step::Forward(forwarding, slot),
        Err(res) => Step::Respond(*res),
    }
}

/// Routes a request by `uri`, a clone of its URI: the route borrows from the clone (its bytes
/// are shared, not copied) and from the router (an agent's cluster name), so the request itself stays free to be changed and handed on.
/// Unknown prefixes get kube-apiserver's plain-text 404, malformed ones a 400 Status.
fn route<'u>(
    shared: &'u Shared,
    uri: &'u http::Uri,
    req: &Request<RequestBody>,
) -> Result<Route<'u>, Box<Response<ProxyBody>>> {
    shared
        .router
        .route(uri.path(), uri.query())
        .map_err(|e| match e {
            RouteError::NotFound | RouteError::InvalidName { .. } => Box::new(not_found_text()),
            other => Box::new(respond(&Status::bad_request(other.to_string()), req)),
        })
}

/// The whole request path, for requests [`begin`] could not finish without waiting.
async fn handle(
    shared: &Shared,
    runtime: &Runtime,
    req: Request<RequestBody>,
    own: OwnCredentials,
) -> Response<ProxyBody> {
    let uri = req.uri().clone();
    let route = match route(shared, &uri, &req) {
        Ok(route) => route,
        Err(res) => return *res,
    };
    match route.target {
        Target::Ops(ops) => return crate::ops::handle(shared, runtime, ops, &req).await,
        Target::Auth => {
            return Box::pin(crate::auth::handle(shared, runtime, &route.rest, req)).await;
        }
        Target::Oidc => return crate::oidc::handle(shared, &route.rest, &req),
        _ => {}
    }
    if let Err(why) = crate::auth::check_origin(&runtime.config, req.headers()) {
        return respond(&Status::forbidden("", "", "", &why), &req);
    }
    let caller = match authenticate(shared, runtime, &req, own).await {
        Ok(caller) => caller,
        Err(res) => return *res,
    };
    // Requests to a Kubernetes target or a Grafana are counted against that upstream's own
    // budget once it is found and the request authorized (in `forward`, `grafana`); the
    // gateway's own endpoints share the gateway's.
    let own_budget =
        route.target.is_kubernetes_upstream() || matches!(route.target, Target::Grafana { .. });
    let budget = (!own_budget).then_some(&*shared.in_flight);
    let mut slot = match admit(runtime, &caller, &req, budget) {
        Ok(slot) => slot,
        Err(res) => return *res,
    };
    let res = match route.target {
        Target::Management => {
            Box::pin(crate::management::handle(shared, runtime, &caller, req)).await
        }
        Target::Grafana { cluster } => {
            let (mut res, counted) = grafana(runtime, &caller, cluster, &route, req).await;
            slot = counted;
            strip_upstream_session_cookie(res.headers_mut());
            res
        }
        _ => {
            // Browsers send these: the session cookie, or a front proxy's own (an SSO proxy
            // that authenticates the browser and names the user in headers).
            let by_browser = matches!(
                caller.credential,
                CallerCredential::Token { session: true, .. } | CallerCredential::FrontProxy
            );
            match forward(shared, runtime, caller, &route, req) {
                Ok((forwarding, counted)) => match forwarding.await {
                    Ok(mut res) => {
                        slot = counted;
                        strip_upstream_session_cookie(res.headers_mut());
                        if by_browser {
                            sandbox_documents(res.headers_mut());
                        }
                        res
                    }
                    Err(never) => match never {},
                },
                Err(res) => *res,
            }
        }
    };
    res.map(|body| body.holding(slot))
}

/// For a browser (the session cookie, or a front proxy's): an upstream's answer that is not
/// a Kubernetes API type (JSON, YAML, protobuf, CBOR) gets `Content-Security-Policy: sandbox`
/// (beside any policy of the upstream's: browsers enforce them all), and every answer
/// `X-Content-Type-Options: nosniff`. A page a workload serves through a `proxy` subresource,
/// or any document a tenant's virtual cluster chooses to send, would otherwise run its script
/// as the gateway's own origin, where it could send the user's cookie-borne requests (a
/// same-origin `Origin` passes the CSRF check). Sandboxed, it runs in an opaque origin without
/// script. An answer is an API type only with exactly one `Content-Type` holding no `,`:
/// browsers take the last of several types (and of a list in one value), which a checker of
/// the first would not see. Bearer-token clients (kubectl, `kubectl proxy` and the browser
/// behind it) are answered as the upstream answered.
fn sandbox_documents(headers: &mut http::HeaderMap) {
    const API_TYPES: [&str; 4] = [
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
        "application/cbor",
    ];
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let api = match (types.next(), types.next()) {
        (Some(only), None) => only
            .to_str()
            .ok()
            .filter(|v| !v.contains(','))
            .map(|v| v.split(';').next().unwrap_or_default().trim())
            .is_some_and(|essence| API_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t))),
        _ => false,
    };
    if !api {
        headers.append(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static("sandbox"),
        );
    }
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
}

/// What follows authentication on every authenticated path: the audit event learns who asked,
/// the per-identity rate limit applies, and the request takes a max-in-flight slot of `budget`
/// (for its response body to hold; `None` when it is not counted, or counted later: see
/// [`take_slot`]).
fn admit(
    runtime: &Runtime,
    caller: &Caller,
    req: &Request<RequestBody>,
    budget: Option<&crate::inflight::InFlight>,
) -> Result<Option<InFlightSlot>, Box<Response<ProxyBody>>> {
    if let Some(slot) = req.extensions().get::<IdentitySlot>() {
        slot.set(caller.identity.clone());
    }
    if let Err(retry_after) = runtime.limits.check_identity(&caller.identity.name) {
        let message = format!(
            "too many requests from user {:?}, please try again later",
            caller.identity.name
        );
        return Err(too_many(message, retry_after, req));
    }
    match budget {
        Some(budget) => take_slot(budget, runtime, &caller.identity.groups, req),
        None => Ok(None),
    }
}

/// A max-in-flight slot of `budget` for `req`, made by a user of `groups` (`None` when the
/// request is not counted), or kube-apiserver's 429 when the budget is spent. Each Kubernetes
/// target has a budget of its own, as each kube-apiserver has its own limit: a target that
/// stops answering holds only its own slots, never another's.
fn take_slot(
    budget: &crate::inflight::InFlight,
    runtime: &Runtime,
    groups: &[String],
    req: &Request<RequestBody>,
) -> Result<Option<InFlightSlot>, Box<Response<ProxyBody>>> {
    let verb = req
        .extensions()
        .get::<RequestMeta>()
        .map_or("", |m| m.verb.as_ref());
    let long_running = req.extensions().get::<LongRunning>().is_some_and(|l| l.0);
    let limits = (
        runtime.config.max_requests_in_flight,
        runtime.config.max_mutating_requests_in_flight,
    );
    match budget.admit(verb, long_running, groups, limits) {
        // The slot's response is watched by its connection: one that runs past the request
        // timeout (a client that stopped reading) ends with the connection.
        Admission::Admitted(slot) => Ok(slot.map(|slot| {
            slot.watched_by(
                req.extensions()
                    .get::<kubegate_proxy::ConnectionResponses>(),
            )
        })),
        Admission::Full => Err(Box::new(crate::inflight::too_many_requests())),
    }
}

/// The per-target rate limit, charged once the caller is authorized for a target that
/// exists: a caller without access cannot drain a target's bucket for everyone else, nor
/// fill the limiter with made-up target names.
pub(crate) fn admit_to_target(
    runtime: &Runtime,
    req: &Request<RequestBody>,
) -> Result<(), Box<Response<ProxyBody>>> {
    if runtime.limits.per_target.is_none() {
        // No limit configured (the default): not even the label is looked up.
        return Ok(());
    }
    let target = req.extensions().get::<RequestMeta>().map(|m| &m.target);
    let target_label = target.map_or("", |t| t.as_ref());
    if let Err(retry_after) = runtime.limits.check_target(target_label) {
        let message = format!("too many requests to {target_label}, please try again later");
        return Err(too_many(message, retry_after, req));
    }
    Ok(())
}

/// kube-apiserver's 429 with `Retry-After`.
fn too_many(
    message: String,
    retry_after: u32,
    req: &Request<RequestBody>,
) -> Box<Response<ProxyBody>> {
    let retry = i32::try_from(retry_after).unwrap_or(i32::MAX);
    Box::new(respond(&Status::too_many_requests(message, retry), req))
}

/// Removes the identity headers a front proxy is configured to send under names of its own
/// (`usernameHeaders`, `groupHeaders`): like `X-Remote-*`, which forwarding always removes,
/// they must never reach an upstream that might believe them.
fn strip_front_proxy_headers(runtime: &Runtime, headers: &mut http::HeaderMap) {
    let Some(front) = &runtime.config.front_proxy else {
        return;
    };
    for name in front.username_headers.iter().chain(&front.group_headers) {
        headers.remove(name.as_str());
    }
}

/// The gateway's own credentials: an access key or a token it minted, in the bearer header.
fn own_credentials(runtime: &Runtime, req: &Request<RequestBody>) -> Result<Caller, String> {
    match bearer(req.headers()) {
        Some(token) => runtime
            .credentials
            .authenticate(token, &runtime.directory, kubegate_tokens::unix_now())
            .map_err(|failure| failure.to_string()),
        None => Err(String::from("no credential")),
    }
}

/// Authenticates a request: the gateway's own access keys and tokens first (unless `own` says
/// they were tried), then the session cookie and each external authenticator in order. 401
/// Status when nothing accepts it; 403 or 503 when an authenticator says so.
pub(crate) async fn authenticate(
    shared: &Shared,
    runtime: &Runtime,
    req: &Request<RequestBody>,
    own: OwnCredentials,
) -> Result<Caller, Box<Response<ProxyBody>>> {
    use crate::authenticators::AuthnInput;
    let unauthorized = || Box::new(respond(&Status::unauthorized(), req));
    let mut reason = match own {
        OwnCredentials::Rejected(reason) => reason,
        OwnCredentials::Untried => match own_credentials(runtime, req) {
            Ok(caller) => return Ok(caller),
            Err(reason) => reason,
        },
    };
    let input = AuthnInput {
        method: req.method(),
        headers: req.headers(),
        bearer: bearer(req.headers()),
        client_addr: req
            .extensions()
            .get::<kubegate_proxy::ClientAddr>()
            .map(|a| a.0),
        peer_certificate: req.extensions().get::<crate::tls::PeerCertificate>(),
        directory: &runtime.directory,
    };
    // The session cookie first, then the configured authenticators, each answered the same way.
    let session = crate::auth::authenticate_session(&runtime.credentials, &runtime.config, &input);
    match settle(session, req) {
        Settled::Done(result) => return result.map(|caller| *caller),
        Settled::Next(Some(why)) => reason = why,
        Settled::Next(None) => {}
    }
    let authenticators = shared.authenticators.load_full();
    for authenticator in authenticators.iter() {
        match settle(authenticator.authenticate(input).await, req) {
            Settled::Done(result) => return result.map(|caller| *caller),
            Settled::Next(Some(why)) => reason = why,
            Settled::Next(None) => {}
        }
    }
    if shared.refusals.count(Refused::authentication) {
        tracing::info!(
            reason = %clipped(&reason),
            path = %clipped(req.uri().path()),
            "authentication failed"
        );
    }
    Err(unauthorized())
}

/// The most of a client-chosen text (a path, a reason quoting a token's claims) a log line
/// carries: anyone who reaches the port can make one line per request, and a path may be up
/// to 1 MiB long.
pub(crate) const LOGGED_TEXT_BYTES: usize = 256;

/// `text` cut to [`LOGGED_TEXT_BYTES`] at a character boundary, marked when cut.
pub(crate) fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= LOGGED_TEXT_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = LOGGED_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// What an authenticator's outcome means for the request.
enum Settled {
    /// Authenticated, or refused with a response.
    Done(Result<Box<Caller>, Box<Response<ProxyBody>>>),
    /// Ask the next authenticator (with the reason a credential was rejected, if any).
    Next(Option<String>),
}

fn settle(outcome: crate::authenticators::AuthnOutcome, req: &Request<RequestBody>) -> Settled {
    use crate::authenticators::AuthnOutcome;
    match outcome {
        // An authenticator that takes names from outside (an OIDC claim, a front proxy's
        // header) can accept one an upstream would read as another name, or as none: such a
        // credential does not authenticate here, rather than fail every forwarded request.
        AuthnOutcome::Authenticated(caller) => {
            match kubegate_proxy::check_impersonable_name(&caller.identity) {
                Ok(()) => Settled::Done(Ok(caller)),
                Err(e) => Settled::Next(Some(format!(
                    "the authenticated identity cannot be impersonated upstream: {e}"
                ))),
            }
        }
        AuthnOutcome::Skip => Settled::Next(None),
        AuthnOutcome::Rejected(why) => Settled::Next(Some(why)),
        AuthnOutcome::Forbidden(why) => Settled::Done(Err(Box::new(respond(
            &Status::forbidden("", "", "", &why),
            req,
        )))),
        AuthnOutcome::Unavailable(message) => Settled::Done(Err(Box::new(respond(
            &Status::service_unavailable(message),
            req,
        )))),
    }
}

/// `/grafana/$CLUSTER/…`: allowed with gateway RBAC `get` on `clusters/grafana` named after the
/// cluster and a scope that admits the cluster; forwarded to the cluster's Grafana with the
/// caller's identity as impersonation headers and never the caller's credential. With the
/// max-in-flight slot it took of the Grafana's own budget (`None` when not counted).
async fn grafana(
    runtime: &Runtime,
    caller: &Caller,
    cluster: &str,
    route: &Route<'_>,
    mut req: Request<RequestBody>,
) -> (Response<ProxyBody>, Option<InFlightSlot>) {
    let attrs = kubegate_authz::Attributes::resource(
        &caller.identity,
        "get",
        access::MANAGEMENT_GROUP,
        "clusters",
    )
    .on_subresource("grafana")
    .named(cluster);
    let decision = caller
        .scope
        .admits(&Target::Cluster { cluster }, &attrs)
        .then(|| runtime.policy.decide(&attrs))
        .filter(kubegate_authz::Decision::is_allowed);
    let Some(decision) = decision else {
        let reason = format!("access to {} is not granted", describe(&route.target));
        access::audit_decision(&req, false, (&reason).into());
        let status = access::forbidden_status(&kubegate_authz::forbidden(&attrs, &reason));
        return (respond(&status, &req), None);
    };
    access::audit_decision(&req, true, decision.reason);
    let key = upstreams::UpstreamKey::Grafana(cluster.to_owned());
    let path = UpstreamPath::from_route(route.raw_rest, route.query).ok();
    let (Some((service, budget)), Some(path)) = (runtime.upstreams.get_with_budget(&key), path)
    else {
        return (not_found_text(), None);
    };
    // The Grafana's own budget: a stuck one holds only its own slots, not the management
    // API's (whose `selves` the agents ask). Taken before the rate-limit token, as in
    // `forward`, so that a refused request spends no token.
    let slot = match take_slot(budget, runtime, &caller.identity.groups, &req) {
        Ok(slot) => slot,
        Err(res) => return (*res, None),
    };
    if let Err(res) = admit_to_target(runtime, &req) {
        return (*res, None);
    }
    strip_session_cookie(req.headers_mut());
    strip_front_proxy_headers(runtime, req.headers_mut());
    let ext = req.extensions_mut();
    ext.insert(path);
    ext.insert(LongRunning(false));
    ext.insert(caller.identity.clone());
    match service.clone().call(req).await {
        Ok(res) => (res, slot),
        Err(never) => match never {},
    }
}

/// Removes the gateway's session cookie from `Cookie` headers: it is a credential of the gateway
/// and must never reach an upstream. Other cookies pass. Requests without the session cookie (all
/// but browser sessions) are left as they are, without allocating.
fn strip_session_cookie(headers: &mut http::HeaderMap) {
    if !headers.get_all(http::header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b';')
            .any(crate::auth::is_session_pair)
    }) {
        return;
    }
    let kept: Vec<&str> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !crate::auth::is_session_pair(pair.as_bytes()))
        .collect();
    let kept = kept.join("; ");
    headers.remove(http::header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&kept)
    {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Removes from an upstream's response every `Set-Cookie` of the gateway's session cookie. The
/// upstream answers on the gateway's host, so a browser would keep such a cookie as the
/// gateway's: a virtual cluster or Grafana a tenant runs could log a victim's browser in to
/// the gateway as the tenant (or, beside the victim's own session, make both cookies
/// refused). Other cookies pass (Grafana's own session, for one). A response without
/// `Set-Cookie` (every Kubernetes API response) costs one header lookup.
fn strip_upstream_session_cookie(headers: &mut http::HeaderMap) {
    // `name=value; attributes`: the name is in the first pair.
    let sets_session = |v: &http::HeaderValue| {
        crate::auth::is_session_pair(v.as_bytes().split(|&b| b == b';').next().unwrap_or(b""))
    };
    if !headers.contains_key(http::header::SET_COOKIE)
        || !headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .any(sets_session)
    {
        return;
    }
    let kept: Vec<http::HeaderValue> = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_session(v))
        .cloned()
        .collect();
    headers.remove(http::header::SET_COOKIE);
    for v in kept {
        headers.append(http::header::SET_COOKIE, v);
    }
}

/// The forwarding of an authorized request, with the max-in-flight slot it took of its
/// target's budget (`None` when it is not counted).
type Forwarding = (
    kubegate_proxy::forward::ResponseFuture,
    Option<InFlightSlot>,
);

/// Authorizes a request to a Kubernetes target and hands it to the target's forwarding service.
fn forward(
    shared: &Shared,
    runtime: &Runtime,
    caller: Caller,
    route: &Route<'_>,
    mut req: Request<RequestBody>,
) -> Result<Forwarding, Box<Response<ProxyBody>>> {
    let Prepared {
        service,
        in_flight,
        upstream_path,
        long_running,
        identity,
        oidc_audience,
        withhold_authorization,
    } = prepare_forward(route, runtime, &shared.impersonation_modes, caller, &req)?;
    // The identity kube-apiserver's limit would see: the impersonated one, if any. The slot
    // comes first: a request the in-flight limit refuses is not served, so it must not spend
    // one of the target's rate-limit tokens (a refused rate-limited request gives its slot
    // back as it is dropped).
    let slot = take_slot(in_flight, runtime, &identity.groups, &req)?;
    admit_to_target(runtime, &req)?;
    // An empty location below the prefix: kube-apiserver's proxy handler redirects a GET or
    // HEAD to the path plus `/` (V5.5), once the request is authenticated and authorized, and
    // passes other methods on (here to `/`).
    if route.bare_prefix && matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return Err(Box::new(redirect_to_slash(
            req.uri().path(),
            req.uri().query(),
        )));
    }
    if withhold_authorization {
        req.headers_mut().remove(http::header::AUTHORIZATION);
    }
    if let Some(audience) = oidc_audience {
        let now = kubegate_tokens::unix_now();
        let fail = |status: Status| Box::new(respond(&status, &req));
        let token = shared
            .forwarded_tokens
            .token_for(&shared.minter, &audience, &identity, now)
            .map_err(|e| fail(Status::internal_error(&e.to_string())))?;
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| fail(Status::internal_error("unusable minted token")))?;
        req.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    strip_session_cookie(req.headers_mut());
    strip_front_proxy_headers(runtime, req.headers_mut());
    let ext = req.extensions_mut();
    ext.insert(upstream_path);
    // `Classify` set the same value from the same path already; inserting again would box
    // it anew and free the first.
    if ext.get::<LongRunning>() != Some(&LongRunning(long_running)) {
        ext.insert(LongRunning(long_running));
    }
    ext.insert(identity);
    Ok((service.clone().call(req), slot))
}

/// Everything decided about a request before it is forwarded.
struct Prepared<'r> {
    service: &'r kubegate_proxy::ForwardService<RequestBody>,
    /// The target's max-in-flight budget.
    in_flight: &'r crate::inflight::InFlight,
    upstream_path: UpstreamPath,
    long_running: bool,
    identity: kubegate_authz::Identity,
    /// With identity mode `oidc`: the audience of the token to forward.
    oidc_audience: Option<String>,
    /// With identity mode `passthrough`: the client's `Authorization` is not the credential
    /// that authenticated it as an external ID token, so it is not passed on.
    withhold_authorization: bool,
}

/// Takes the caller: the identity sent upstream is the caller's own (moved, not copied) unless
/// the request impersonates another.
fn prepare_forward<'r>(
    route: &Route<'_>,
    runtime: &'r Runtime,
    impersonation_modes: &ImpersonationModes,
    caller: Caller,
    req: &Request<RequestBody>,
) -> Result<Prepared<'r>, Box<Response<ProxyBody>>> {
    let fail = |status: Status| Box::new(respond(&status, req));
    let info =
        RequestInfo::parse(req.method().as_str(), &route.rest, route.query).map_err(|e| {
            let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            Box::new(internal_error_text(uri, &e.to_string()))
        })?;
    // `kubectl --as`: the caller's impersonation is checked against gateway RBAC as
    // kube-apiserver's constrained impersonation filter (the default since 1.36) checks it,
    // then the request runs as the impersonated identity.
    // Header names are lowercase here; only `impersonate-*` values are read (and validated).
    let impersonation = ImpersonationRequest::from_headers(
        req.headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("impersonate-"))
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
    );
    let requested = Attributes::from_request_info(&caller.identity, &info);
    let impersonated = match impersonate_constrained(
        &requested,
        &impersonation,
        runtime.policy.as_ref(),
        impersonation_modes,
    )
    .map(|allowed| allowed.map(|allowed| allowed.identity))
    {
        Ok(Some(impersonated)) => {
            if let Some(slot) = req.extensions().get::<IdentitySlot>() {
                slot.set_impersonated(impersonated.clone());
            }
            Some(impersonated)
        }
        Ok(None) => None,
        Err(kubegate_authz::Error::ImpersonationForbidden(f)) => {
            return Err(fail(access::forbidden_status(&f)));
        }
        Err(e) => return Err(fail(Status::bad_request(e.to_string()))),
    };
    // Who the request runs as upstream: checked against RBAC and, in a space, its fence.
    let acting = impersonated.as_ref().unwrap_or(&caller.identity);
    let refuse = |refusal: access::Refusal| {
        refusal.audit(req);
        fail(refusal.status())
    };
    let allowed = access::authorize_upstream(
        &runtime.policy,
        &runtime.write_gate,
        &caller,
        acting,
        &route.target,
        &info,
    )
    .map_err(refuse)?;
    access::audit_decision(req, true, allowed);
    let Some(Destination::Upstream {
        fence,
        upstream,
        key,
    }) = runtime.directory.destination(&route.target)
    else {
        return Err(fail(unknown_target(&runtime.directory, &route.target)));
    };
    if let Some(namespace) = fence {
        access::check_fence(acting, &route.target, &info, namespace).map_err(refuse)?;
    }
    if impersonated.is_some() && upstream.identity_mode == crate::config::IdentityMode::Passthrough
    {
        return Err(refuse(access::refuse_passthrough_impersonation(
            &caller.identity,
            &route.target,
            &info,
        )));
    }
    let upstream_path = UpstreamPath::from_route(route.raw_rest, route.query)
        .map_err(|e| fail(Status::bad_request(e.to_string())))?;
    let Some((service, in_flight)) = runtime.upstreams.get_with_budget(key) else {
        return Err(fail(Status::service_unavailable(format!(
            "{} is not available",
            key.describe()
        ))));
    };
    Ok(Prepared {
        service,
        in_flight,
        upstream_path,
        long_running: info.is_long_running(),
        // Passthrough forwards the bearer token only when it is what authenticated the
        // caller, and only when it is an external issuer's ID token: the gateway's own access
        // keys and tokens are never handed to an upstream, and a caller authenticated by a
        // session cookie or a front proxy cannot have the upstream act on some other
        // `Authorization` it attached while the gateway authorized and audited itself.
        withhold_authorization: upstream.identity_mode == crate::config::IdentityMode::Passthrough
            && !matches!(caller.credential, CallerCredential::ExternalToken { .. }),
        identity: impersonated.unwrap_or(caller.identity),
        oidc_audience: (upstream.identity_mode == crate::config::IdentityMode::Oidc).then(|| {
            upstream
                .oidc_audience
                .clone()
                .unwrap_or_else(|| key.default_oidc_audience())
        }),
    })
}

/// kube-apiserver's NotFound for a target nothing by that name is configured for, naming the
/// object Loft would have looked up: the management API's cluster, space instance or virtual
/// cluster instance, or (for a legacy virtual cluster on a configured cluster) its
/// `virtualclusters.storage.loft.sh` object. client-go and kubectl read the reason, so
/// `kubectl` prints `Error from server (NotFound): clusters.management.loft.sh "x" not found`.
fn unknown_target(directory: &Directory, target: &Target<'_>) -> Status {
    const MANAGEMENT: &str = "management.loft.sh";
    match *target {
        Target::VirtualCluster { cluster, name, .. } if directory.cluster(cluster).is_some() => {
            Status::not_found("storage.loft.sh", "virtualclusters", name)
        }
        Target::Cluster { cluster } | Target::VirtualCluster { cluster, .. } => {
            Status::not_found(MANAGEMENT, "clusters", cluster)
        }
        Target::ProjectSpace { space, .. } => {
            Status::not_found(MANAGEMENT, "spaceinstances", space)
        }
        Target::ProjectVirtualCluster {
            virtual_cluster, ..
        } => Status::not_found(MANAGEMENT, "virtualclusterinstances", virtual_cluster),
        _ => Status::failure(404, format!("{} does not exist", describe(target))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_client_text_is_clipped_at_a_character_boundary() {
        assert_eq!(clipped("/api/v1/pods"), "/api/v1/pods");
        let long = format!("/{}", "é".repeat(300));
        let cut = clipped(&long);
        assert!(cut.len() < LOGGED_TEXT_BYTES + 20, "{cut}");
        assert!(cut.ends_with(&format!("… ({} bytes)", long.len())), "{cut}");
    }

    fn cookies(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(
                http::header::COOKIE,
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    fn after_strip(values: &[&str]) -> Vec<String> {
        let mut headers = cookies(values);
        strip_session_cookie(&mut headers);
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_session_cookie_never_reaches_an_upstream_and_other_cookies_pass() {
        let table: &[(&[&str], &[&str])] = &[
            // No session cookie: left as sent (several headers stay several).
            (&[], &[]),
            (&["a=1; b=2"], &["a=1; b=2"]),
            (&["a=1", "b=2"], &["a=1", "b=2"]),
            // A name that merely contains or extends the session cookie's name is not it.
            (&["my_kubegate_session=x"], &["my_kubegate_session=x"]),
            (&["kubegate_session_old=x"], &["kubegate_session_old=x"]),
            (&["kubegate_session"], &["kubegate_session"]),
            // The session cookie goes, wherever it is; the rest is joined into one header.
            (&["kubegate_session=tok"], &[]),
            (&["a=1; kubegate_session=tok; b=2"], &["a=1; b=2"]),
            (&["a=1", " kubegate_session=tok"], &["a=1"]),
            (&["kubegate_session=tok;a=1;"], &["a=1"]),
            (&["kubegate_session=; kubegate_session=tok"], &[]),
            // Spaces around the name: authentication reads this as the session cookie too.
            (&["a=1; kubegate_session =tok"], &["a=1"]),
            (&["\tkubegate_session\t= tok; b=2"], &["b=2"]),
        ];
        for (sent, expected) in table {
            assert_eq!(after_strip(sent), *expected, "Cookie: {sent:?}");
            // What reaches the upstream carries no cookie that authentication would take.
            let mut headers = cookies(sent);
            strip_session_cookie(&mut headers);
            assert_eq!(
                crate::auth::session_cookie_value(&headers),
                Ok(None),
                "Cookie: {sent:?}"
            );
        }
    }

    #[test]
    fn an_upstream_cannot_set_the_gateways_session_cookie() {
        let table: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (
                &["grafana_session=abc; Path=/"],
                &["grafana_session=abc; Path=/"],
            ),
            (&["kubegate_session=attacker.jwt.x; Path=/; HttpOnly"], &[]),
            (
                &[
                    "a=1",
                    " kubegate_session = t; Domain=gateway.example",
                    "kubegate_session_old=2",
                ],
                &["a=1", "kubegate_session_old=2"],
            ),
            (&["kubegate_session=; Max-Age=0"], &[]),
        ];
        for (sent, expected) in table {
            let mut headers = http::HeaderMap::new();
            for v in *sent {
                headers.append(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            strip_upstream_session_cookie(&mut headers);
            let left: Vec<_> = headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(left, *expected, "Set-Cookie: {sent:?}");
        }
    }
}
