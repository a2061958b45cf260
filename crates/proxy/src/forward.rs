//! [`ForwardService`]: streams a request to one upstream and the response back.
//!
//! Contract (see [`crate::ext`]): the request's path and query on the upstream come from the
//! [`UpstreamPath`] extension (else the request URI); the identity to impersonate from
//! [`Identity`]; the client address from [`ClientAddr`]; [`LongRunning`] disables the
//! response-header timeout. The service never fails: every problem becomes a kube-style response.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri};
use http_body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::{ProxyBody, RequestBody};
use crate::ext::{ClientAddr, Identity, LongRunning, UpstreamError, UpstreamPath};
use crate::headers;
use crate::pool::{Pool, PooledBody, SendError};
use crate::status::{Status, StatusFormat, internal_error_text};
use crate::upgrade;
use crate::upstream::{IdentityMode, Upstream};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Forwards requests to one [`Upstream`] over pooled HTTP/1.1 connections and shared HTTP/2
/// connections.
///
/// When the upstream speaks h2 (ALPN decides), long-running requests ([`LongRunning`]) share
/// its h2 connections and short ones take pooled HTTP/1.1 connections, up to
/// [`Upstream::http1_connections_for_short_requests`]; past that they take h2 streams too.
///
/// `B` is the request body type (e.g. `hyper::body::Incoming`, `axum::body::Body`); it is
/// streamed, never buffered. Upgrade requests (`Connection: Upgrade`) take the dedicated
/// upgrade path (a fresh HTTP/1.1 connection per request, kube-apiserver §5.4 semantics).
pub struct ForwardService<B> {
    upstream: Upstream,
    // The request body as sent upstream: trailers filtered (see `RequestBody`).
    pool: Pool<RequestBody<B>>,
}

impl<B> Clone for ForwardService<B> {
    fn clone(&self) -> Self {
        ForwardService {
            upstream: self.upstream.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<B> fmt::Debug for ForwardService<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardService")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl<B> ForwardService<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Builds the pooled client for `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(crate::upstream::KEEPALIVE_IDLE));
        http.set_connect_timeout(Some(upstream.connect_timeout()));
        let builder = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::clone(upstream.tls()))
                .https_or_http()
                .with_server_name_resolver(FixedServerName(upstream.server_name().clone()))
                .enable_http1()
        };
        // Short requests' HTTP/1.1 connections offer HTTP/1.1 alone in ALPN, as upgrades do
        // (see `Pool`): the builder would offer nothing for HTTP/1.1, and a server that
        // cannot speak it would only say so in the protocol.
        let http1_connector = HttpsConnector::new(
            http.clone(),
            Arc::clone(upstream.upgrade_tls()),
            false,
            Arc::new(FixedServerName(upstream.server_name().clone())),
        );
        let connector = if upstream.http2() {
            builder().enable_http2().wrap_connector(http)
        } else {
            builder().wrap_connector(http)
        };
        let pool = Pool::new(connector, http1_connector, &upstream);
        ForwardService { upstream, pool }
    }

    /// The upstream this service forwards to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Whether `self` and `other` are clones of one service, sharing one connection pool
    /// (an embedder rebuilding its services on a configuration change can check that the ones
    /// it kept still pool together).
    pub fn shares_pool_with(&self, other: &Self) -> bool {
        self.pool.same_as(&other.pool)
    }
}

/// Resolves every URI to the configured TLS server name (the URL host or `tls_server_name`).
#[derive(Debug, Clone)]
struct FixedServerName(rustls::pki_types::ServerName<'static>);

impl hyper_rustls::ResolveServerName for FixedServerName {
    fn resolve(
        &self,
        _uri: &Uri,
    ) -> Result<rustls::pki_types::ServerName<'static>, Box<dyn StdError + Sync + Send>> {
        Ok(self.0.clone())
    }
}

impl<B> tower::Service<Request<B>> for ForwardService<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        if headers::is_upgrade_request(req.headers()) {
            let upstream = self.upstream.clone();
            return ResponseFuture {
                inner: Box::pin(async move { Ok(upgrade::forward_upgrade(&upstream, req).await) }),
            };
        }
        // The request is prepared and handed to the client here, so the future only waits for
        // the response head: 160 bytes, where an `async` block holding the service, the request,
        // the client's future and the upgrade path took 4.8 KB, copied into its box (and
        // allocated outside the allocator's small-size fast path) on every request.
        let inner: Pin<Box<dyn Future<Output = _> + Send>> = match self.send(req) {
            Ok(in_flight) => Box::pin(in_flight),
            Err(res) => Box::pin(std::future::ready(Ok(*res))),
        };
        ResponseFuture { inner }
    }
}

/// Response future of [`ForwardService`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// What goes wrong talking to an upstream, mapped onto the Status kube users understand.
pub(crate) fn upstream_failure(
    upstream: &Upstream,
    err: &(dyn StdError + 'static),
    format: StatusFormat,
) -> Response<ProxyBody> {
    let target = upstream.description();
    let (status, kind) = classify(err, upstream, target);
    let mut res: Response<ProxyBody> = status.to_response_as(format);
    res.extensions_mut().insert(UpstreamError { kind });
    res
}

/// `err` and every error behind it: the sources, and what `io::Error`s wrap (hyper-rustls
/// wraps io errors in io errors, and `io::Error::source()` skips the error it wraps).
pub(crate) fn causes<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut stack: Vec<&'a (dyn StdError + 'static)> = vec![err];
    std::iter::from_fn(move || {
        let e = stack.pop()?;
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
        Some(e)
    })
}

fn classify(
    err: &(dyn StdError + 'static),
    upstream: &Upstream,
    target: &str,
) -> (Status, &'static str) {
    let mut is_connect = false;
    let mut io_kind = None;
    for e in causes(err) {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return (
                Status::bad_gateway(format!(
                    "{target}: TLS handshake with the upstream failed: {tls}"
                )),
                "tls",
            );
        }
        if let Some(send) = e.downcast_ref::<SendError>() {
            is_connect |= send.is_connect();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // The innermost meaningful kind wins over wrappers' `Other`.
            if io.kind() != std::io::ErrorKind::Other || io_kind.is_none() {
                io_kind = Some(io.kind());
            }
        }
    }
    if is_connect || io_kind.is_some_and(is_connect_kind) {
        let cause = match io_kind {
            Some(std::io::ErrorKind::TimedOut) => format!(
                "connect timed out after {}",
                humanize(upstream.connect_timeout())
            ),
            Some(k) => io_kind_text(k).to_owned(),
            None => "connection failed".to_owned(),
        };
        return (
            Status::service_unavailable(format!("{target} is unavailable: {cause}")),
            "connect",
        );
    }
    let cause = match io_kind {
        Some(k) => io_kind_text(k).to_owned(),
        // hyper's own messages ("connection closed before message completed") carry no secrets.
        None => innermost_hyper_message(err),
    };
    (
        Status::bad_gateway(format!("{target}: upstream request failed: {cause}")),
        "protocol",
    )
}

fn is_connect_kind(k: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        k,
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
}

fn io_kind_text(k: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind::*;
    match k {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        ConnectionAborted => "connection aborted",
        HostUnreachable => "no route to host",
        NetworkUnreachable => "network is unreachable",
        TimedOut => "i/o timeout",
        UnexpectedEof => "unexpected EOF",
        BrokenPipe => "broken pipe",
        NotFound => "host not found",
        _ => "i/o error",
    }
}

fn innermost_hyper_message(err: &(dyn StdError + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        if e.is::<hyper::Error>() {
            msg = e.to_string();
        }
        cur = e.source();
    }
    msg
}

pub(crate) fn humanize(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Header preparation shared by the pooled and the upgrade path. On failure returns the
/// response to send instead.
pub(crate) fn prepare_headers(
    upstream: &Upstream,
    uri: &Uri,
    headers: &mut HeaderMap,
    extensions: &http::Extensions,
) -> Result<(), Box<Response<ProxyBody>>> {
    let client_auth = headers::strip_request(headers);
    match upstream.identity_mode() {
        IdentityMode::Impersonate => {
            let Some(identity) = extensions.get::<Identity>() else {
                return Err(Box::new(internal_error_text(
                    uri.path_and_query().map_or("/", PathAndQuery::as_str),
                    "no user found for request",
                )));
            };
            match upstream.authorization() {
                Ok(Some(v)) => {
                    headers.insert(http::header::AUTHORIZATION, v);
                }
                Ok(None) => {}
                Err(e) => {
                    let mut res: Response<ProxyBody> = Status::internal_error(&format!(
                        "credential for {} is unavailable: {e}",
                        upstream.description()
                    ))
                    .response_for(uri, headers);
                    res.extensions_mut()
                        .insert(UpstreamError { kind: "credential" });
                    return Err(Box::new(res));
                }
            }
            if let Err(e) = headers::insert_impersonation(headers, identity) {
                return Err(Box::new(
                    Status::internal_error(&format!(
                        "the authenticated user cannot be impersonated: {e}"
                    ))
                    .response_for(uri, headers),
                ));
            }
        }
        IdentityMode::Passthrough => {
            if let Some(v) = client_auth {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
    }
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        headers::append_forwarded_for(headers, addr.ip());
    }
    Ok(())
}

impl<B> ForwardService<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Prepares `req` for the upstream and sends it; `Err` is the response to give instead.
    #[allow(clippy::type_complexity)]
    fn send(
        &self,
        req: Request<B>,
    ) -> Result<
        InFlight<impl Future<Output = Result<Response<PooledBody>, SendError>> + Send + 'static>,
        Box<Response<ProxyBody>>,
    > {
        let (mut parts, body) = req.into_parts();
        let format = StatusFormat::for_request(&parts.uri, &parts.headers);
        let pq = target_path(&parts);
        let long_running = parts.extensions.get::<LongRunning>().is_some_and(|l| l.0);
        prepare_headers(
            &self.upstream,
            &parts.uri,
            &mut parts.headers,
            &parts.extensions,
        )?;
        let uri = self.upstream.origin_form(&pq).map_err(|e| {
            Box::new(
                Status::internal_error(&format!("invalid upstream URI: {e}"))
                    .to_response_as(format),
            )
        })?;
        let mut out = Request::new(RequestBody::new(body));
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.headers_mut() = parts.headers;
        // Moved, not copied or allocated: the request's own path and the forwarded one.
        let redirect_from = (self.upstream.rejects_forwarding_redirects()
            && self.upstream.rewrites_redirects())
        .then(|| RedirectFrom {
            client: parts.uri.into_parts().path_and_query,
            forwarded: pq,
        });
        Ok(InFlight {
            response: self.pool.send(out, long_running),
            limit: (!long_running).then(|| self.upstream.response_header_timeout()),
            deadline: None,
            upstream: self.upstream.clone(),
            format,
            redirect_from,
        })
    }
}

pin_project_lite::pin_project! {
    /// A request handed to the pool, waiting for the response head: within the
    /// response-header timeout, unless the request is long-running.
    struct InFlight<F> {
        #[pin]
        response: F,
        // The response-header timeout; `None` for a long-running request.
        limit: Option<std::time::Duration>,
        // Started at the first poll, as `tokio::time::timeout` inside an `async` block would
        // be: `call` may run outside the runtime, where a timer cannot be made.
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        upstream: Upstream,
        format: StatusFormat,
        // What a redirect to the upstream itself is rewritten from, when the upstream
        // rewrites them.
        redirect_from: Option<RedirectFrom>,
    }
}

/// The paths a redirect's `Location` is mapped between: the client's request and the path
/// forwarded upstream.
struct RedirectFrom {
    client: Option<PathAndQuery>,
    forwarded: PathAndQuery,
}

impl<F> Future for InFlight<F>
where
    F: Future<Output = Result<Response<PooledBody>, SendError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The response first, as `tokio::time::timeout` does: a response that is ready wins
        // over a deadline that passed meanwhile.
        if let Poll::Ready(result) = this.response.poll(cx) {
            return Poll::Ready(Ok(finish(
                this.upstream,
                *this.format,
                this.redirect_from.as_ref(),
                result,
            )));
        }
        let Some(limit) = *this.limit else {
            return Poll::Pending;
        };
        if this.deadline.is_none() {
            this.deadline.set(Some(tokio::time::sleep(limit)));
        }
        match this.deadline.as_pin_mut().map(|d| d.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(timed_out(this.upstream, limit, *this.format))),
            _ => Poll::Pending,
        }
    }
}

/// The client's answer as the response to give: headers stripped, upstream redirects refused
/// (or rewritten onto the client's path, when they point at the upstream itself and
/// `redirect_from` says from where), failures mapped onto kube-style Status.
fn finish(
    upstream: &Upstream,
    format: StatusFormat,
    redirect_from: Option<&RedirectFrom>,
    result: Result<Response<PooledBody>, SendError>,
) -> Response<ProxyBody> {
    match result {
        Ok(mut res) if upstream.rejects_forwarding_redirects() && is_redirect(&res) => {
            if let Some(location) = redirect_from.and_then(|from| rewritten(upstream, from, &res)) {
                res.headers_mut().insert(http::header::LOCATION, location);
                let (mut parts, body) = res.into_parts();
                headers::strip_response(&mut parts.headers, false);
                return Response::from_parts(parts, ProxyBody::pooled(body));
            }
            tracing::info!(
                upstream = upstream.name(),
                status = res.status().as_u16(),
                "refused an upstream redirect"
            );
            // Dropping the response closes its body; the client never sees the Location.
            drop(res);
            let mut res = Response::new(ProxyBody::from(bytes::Bytes::from_static(
                REDIRECT_REFUSED.as_bytes(),
            )));
            *res.status_mut() = http::StatusCode::BAD_GATEWAY;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res.extensions_mut()
                .insert(UpstreamError { kind: "redirect" });
            res
        }
        // hyper's client drops every 1xx but 101, which it takes for an upgrade. This request
        // asked for none (upgrades take their own path): relaying the 101 would switch the
        // client's connection to a protocol nobody agreed on (and HTTP/2 has no 101 at all),
        // so it ends here, as Go's ReverseProxy refuses a backend's unrequested protocol switch.
        Ok(res) if res.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
            tracing::info!(
                upstream = upstream.name(),
                "refused a 101 answering a request that asked for no upgrade"
            );
            drop(res);
            let mut res: Response<ProxyBody> = Status::bad_gateway(format!(
                "{} tried to switch protocols for a request that asked for no upgrade",
                upstream.description()
            ))
            .to_response_as(format);
            res.extensions_mut()
                .insert(UpstreamError { kind: "protocol" });
            res
        }
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            headers::strip_response(&mut parts.headers, false);
            Response::from_parts(parts, ProxyBody::pooled(body))
        }
        Err(e) => {
            tracing::debug!(upstream = upstream.name(), error = %e, "upstream request failed");
            upstream_failure(upstream, &e, format)
        }
    }
}

/// The 504 for an upstream that sent no response head within `limit`.
pub(crate) fn timed_out(
    upstream: &Upstream,
    limit: std::time::Duration,
    format: StatusFormat,
) -> Response<ProxyBody> {
    let mut res: Response<ProxyBody> = Status::timeout(
        &format!(
            "{} did not send a response within {}",
            upstream.description(),
            humanize(limit)
        ),
        0,
    )
    .to_response_as(format);
    res.extensions_mut()
        .insert(UpstreamError { kind: "timeout" });
    res
}

/// kube-apiserver's body for a refused upstream redirect (apimachinery `upgradeaware.go`).
const REDIRECT_REFUSED: &str =
    "the backend attempted to redirect this request, which is not permitted";

/// The `Location` of an upstream redirect as the client must follow it through the gateway,
/// if it points at the upstream itself (kubegate-routing's `rewrite_location`).
fn rewritten<B>(
    upstream: &Upstream,
    from: &RedirectFrom,
    res: &Response<B>,
) -> Option<http::HeaderValue> {
    let location = res.headers().get(http::header::LOCATION)?.to_str().ok()?;
    let prepend =
        kubegate_routing::path_prepend(from.client.as_ref()?.path(), from.forwarded.path())?;
    let rewritten = kubegate_routing::rewrite_location(
        location,
        &upstream.origin(),
        from.forwarded.as_str(),
        prepend,
    )?;
    http::HeaderValue::try_from(rewritten).ok()
}

/// A 3xx carrying a `Location` (a 304 without one is a cache answer, not a redirect).
fn is_redirect<B>(res: &Response<B>) -> bool {
    res.status().is_redirection()
        && res
            .headers()
            .get(http::header::LOCATION)
            .is_some_and(|v| !v.is_empty())
}

pub(crate) fn target_path(parts: &http::request::Parts) -> PathAndQuery {
    parts
        .extensions
        .get::<UpstreamPath>()
        .map(|p| p.0.clone())
        .or_else(|| parts.uri.path_and_query().cloned())
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}
