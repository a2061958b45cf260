//! [`MetricsLayer`]: Prometheus metrics in a registry the embedder owns.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kubegate_requests` (`_total`) | counter | `target`, `verb`, `code` |
//! | `kubegate_request_duration_seconds` | histogram (time to response head) | `target`, `verb` |
//! | `kubegate_requests_in_flight` | gauge (until the response body ends; an upgraded connection until its session ends) | `target` |
//! | `kubegate_upstream_errors` (`_total`) | counter | `target`, `kind` |
//!
//! A request that ends before any response (the client went away) is counted with code `0`,
//! the code kube-apiserver's metrics give a request whose handler wrote no status.
//!
//! `target` and `verb` come from [`RequestMeta`] (empty target / lowercase method otherwise);
//! `kind` from the [`UpstreamError`] extension `ForwardService` puts on its error responses.
//!
//! Label sets are bounded, so no client can grow the registry without bound:
//! - a verb outside kube's verbs and HTTP's methods is counted as `other`, as kube-apiserver's
//!   own request metrics do;
//! - a status code HTTP does not register (the upstream chooses it; hyper passes on any from
//!   100 to 999) is counted under its class, `1xx` to `9xx` (kube-apiserver writes every code
//!   as its number, but there the server picks its codes), so a verb on a target has at most
//!   72 code labels;
//! - targets come from the request path, before anyone is authenticated: after
//!   [`MetricsLayer::with_max_targets`] distinct ones (1,000 by default), further targets are
//!   counted as `other`.
//!
//! A request finds its series with one lookup of its target: the series of each target and
//! verb are resolved once and kept, rather than looked up in each metric family per request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::body::GuardedBody;
use crate::ext::{RequestMeta, UpgradeSession, UpstreamError};
use kubegate_routing::STANDARD_VERBS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    target: Arc<str>,
    verb: &'static str,
    code: CodeLabel,
}

/// The `code` label: a status code HTTP registers (and [`NO_RESPONSE`]) as its number, any
/// other as its class (`5xx`).
///
/// kube-apiserver writes every code as its number (`codeToString` in apiserver
/// `endpoints/metrics` names the common ones and falls back to `strconv.Itoa`), but there the
/// server chooses its codes; here the upstream does, and hyper passes on any code from 100
/// to 999. Folding the unregistered ones to their class bounds the series of a target and verb
/// (62 registered codes, `0`, 9 classes) and keeps the usual `code=~"5.."` queries matching.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum CodeLabel {
    Code(u16),
    /// The hundreds digit.
    Class(u16),
}

impl CodeLabel {
    fn of(code: u16) -> Self {
        let registered = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .is_some();
        if registered || code == NO_RESPONSE {
            CodeLabel::Code(code)
        } else {
            CodeLabel::Class(code / 100)
        }
    }
}

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        match *self {
            CodeLabel::Code(code) => code.encode(encoder),
            CodeLabel::Class(class) => {
                use fmt::Write as _;
                write!(encoder, "{class}xx")
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    target: Arc<str>,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    target: Arc<str>,
    kind: &'static str,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s: proxy overhead is sub-millisecond, list calls take seconds.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// The default of [`MetricsLayer::with_max_targets`].
pub const DEFAULT_MAX_TARGETS: usize = 1_000;

/// The target label of requests beyond the bound on distinct targets.
const OVERFLOW_TARGET: &str = "other";

/// The verb labels: kube's and HTTP's verbs, then `other`.
const VERB_LABELS: usize = STANDARD_VERBS.len() + 1;

#[derive(Debug)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Family<TargetLabels, Gauge>,
    upstream_errors: Family<ErrorLabels, Counter>,
    /// The series of each target seen so far, at most `max_targets` of them.
    /// (foldhash: looked up on every request, and bounded, so no key set can grow long chains.)
    targets: RwLock<foldhash::HashMap<Arc<str>, Arc<TargetSeries>>>,
    max_targets: AtomicUsize,
    /// The series of the targets beyond `max_targets`.
    overflow: OnceLock<Arc<TargetSeries>>,
}

/// The series a target's requests touch, resolved from the families once.
#[derive(Debug)]
struct TargetSeries {
    target: Arc<str>,
    in_flight: Gauge,
    /// By verb label index (see [`verb_index`]), made at the verb's first request.
    verbs: [OnceLock<VerbSeries>; VERB_LABELS],
}

#[derive(Debug)]
struct VerbSeries {
    latency: Histogram,
    /// `kubegate_requests` by code label: the few codes a target answers, scanned (at most
    /// the 72 labels of [`CodeLabel`]).
    codes: RwLock<Vec<CodeSeries>>,
}

/// One `kubegate_requests` series of a target and verb, with the code that opened it: the
/// per-response lookup compares the raw code and works out no label (`CodeLabel::of` looks
/// the code up in http's tables).
#[derive(Debug)]
struct CodeSeries {
    /// The first code counted here; codes folded into the same class later are found by
    /// `label` instead.
    raw: u16,
    label: CodeLabel,
    counter: Counter,
}

impl Metrics {
    /// The series of `target`, made at its first request (or the overflow series when the
    /// bound on distinct targets is reached).
    fn target(&self, target: &str) -> Arc<TargetSeries> {
        let overflow = || {
            Arc::clone(
                self.overflow
                    .get_or_init(|| self.new_series(Arc::from(OVERFLOW_TARGET))),
            )
        };
        let full = |known: &foldhash::HashMap<_, _>| {
            known.len() >= self.max_targets.load(Ordering::Relaxed)
        };
        let known = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known.get(target) {
            return Arc::clone(series);
        }
        // Decided under the read lock: a client spraying new targets once the bound is
        // reached must not take the write lock on every request.
        if full(&known) {
            return overflow();
        }
        drop(known);
        let mut known = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known.get(target) {
            return Arc::clone(series);
        }
        if full(&known) {
            return overflow();
        }
        let label: Arc<str> = Arc::from(target);
        let series = self.new_series(Arc::clone(&label));
        known.insert(label, Arc::clone(&series));
        series
    }

    fn new_series(&self, target: Arc<str>) -> Arc<TargetSeries> {
        let in_flight = self.in_flight.get_or_create_owned(&TargetLabels {
            target: Arc::clone(&target),
        });
        Arc::new(TargetSeries {
            target,
            in_flight,
            verbs: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// The series of `verb` (a [`verb_index`]) on `target`.
    fn verb<'a>(&self, target: &'a TargetSeries, verb: usize) -> &'a VerbSeries {
        target.verbs[verb].get_or_init(|| VerbSeries {
            latency: self.latency.get_or_create_owned(&LatencyLabels {
                target: Arc::clone(&target.target),
                verb: verb_label(verb),
            }),
            codes: RwLock::new(Vec::new()),
        })
    }

    /// Counts one request of `verb` on `target` answered with `code`.
    fn count(&self, target: &TargetSeries, verb: usize, code: u16) {
        let series = self.verb(target, verb);
        let codes = series.codes.read().unwrap_or_else(PoisonError::into_inner);
        // Every response comes here: a code seen before is found by its number alone.
        if let Some(known) = codes.iter().find(|s| s.raw == code) {
            known.counter.inc();
            return;
        }
        let label = CodeLabel::of(code);
        // Another code of a class already open: counted there without adding an entry, so
        // the list stays at one entry per label however many unregistered codes arrive.
        if let Some(known) = codes.iter().find(|s| s.label == label) {
            known.counter.inc();
            return;
        }
        drop(codes);
        let mut codes = series.codes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = codes.iter().find(|s| s.label == label) {
            known.counter.inc();
            return;
        }
        let counter = self.requests.get_or_create_owned(&RequestLabels {
            target: Arc::clone(&target.target),
            verb: verb_label(verb),
            code: label,
        });
        counter.inc();
        codes.push(CodeSeries {
            raw: code,
            label,
            counter,
        });
    }
}

/// Layer applying [`MetricsService`].
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// Registers the metrics in `registry` (use `registry.sub_registry_with_prefix(..)` to
    /// namespace them differently).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            latency: HistogramFamily::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            upstream_errors: Family::default(),
            targets: RwLock::default(),
            max_targets: AtomicUsize::new(DEFAULT_MAX_TARGETS),
            overflow: OnceLock::new(),
        };
        registry.register(
            "kubegate_requests",
            "Requests by target, kube verb and HTTP status code",
            metrics.requests.clone(),
        );
        registry.register(
            "kubegate_request_duration_seconds",
            "Time from request arrival to response head, by target and kube verb",
            metrics.latency.clone(),
        );
        registry.register(
            "kubegate_requests_in_flight",
            "Requests whose response has not finished streaming, by target",
            metrics.in_flight.clone(),
        );
        registry.register(
            "kubegate_upstream_errors",
            "Requests that failed because the upstream could not be reached or misbehaved",
            metrics.upstream_errors.clone(),
        );
        MetricsLayer {
            metrics: Arc::new(metrics),
        }
    }

    /// Counts at most `max` distinct targets under their own label ([`DEFAULT_MAX_TARGETS`]
    /// by default); requests to further targets are counted under `other`. Applies to every
    /// service of this layer, including ones already made.
    pub fn with_max_targets(self, max: usize) -> Self {
        self.set_max_targets(max);
        self
    }

    /// Changes the bound of [`with_max_targets`](Self::with_max_targets) at run time (e.g. on a
    /// configuration reload). Targets already counted under their own label stay counted.
    pub fn set_max_targets(&self, max: usize) {
        self.metrics.max_targets.store(max, Ordering::Relaxed);
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Middleware recording request metrics.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Decrements the in-flight gauge when the response body ends or is dropped, or, held by an
/// [`UpgradeSession`], when the upgraded connection closes.
#[derive(Debug)]
pub struct InFlight {
    series: Arc<TargetSeries>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.series.in_flight.dec();
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<GuardedBody<ResBody, InFlight>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (series, verb) = match req.extensions().get::<RequestMeta>() {
            Some(m) => (self.metrics.target(&m.target), verb_index(&m.verb)),
            None => (
                self.metrics.target(""),
                verb_index(&req.method().as_str().to_ascii_lowercase()),
            ),
        };
        series.in_flight.inc();
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(Started {
                metrics: self.metrics.clone(),
                verb,
                start: Instant::now(),
                in_flight: InFlight { series },
            }),
        }
    }
}

/// The index of `verb`'s label: its place in [`STANDARD_VERBS`], or the last (`other`).
fn verb_index(verb: &str) -> usize {
    STANDARD_VERBS
        .iter()
        .position(|known| *known == verb)
        .unwrap_or(STANDARD_VERBS.len())
}

/// The label of a [`verb_index`].
fn verb_label(index: usize) -> &'static str {
    STANDARD_VERBS.get(index).copied().unwrap_or("other")
}

#[derive(Debug)]
struct Started {
    metrics: Arc<Metrics>,
    verb: usize,
    start: Instant,
    in_flight: InFlight,
}

pin_project! {
    /// Response future of [`MetricsService`]. Dropped before the inner service answered (the
    /// client went away), it still counts the request, under code `0`, and observes its
    /// latency up to then: kube-apiserver's request metrics record the status their response
    /// writer saw, which is 0 when the handler wrote none (`ResponseWriterDelegator.Status`
    /// and `codeToString` in apiserver `endpoints/metrics`), and kube has no label of its own
    /// for a client that went away.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<Started>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // `None` once the future completed: counted there.
            if let Some(started) = this.project().state.take() {
                let target = &*started.in_flight.series;
                started
                    .metrics
                    .verb(target, started.verb)
                    .latency
                    .observe(started.start.elapsed().as_secs_f64());
                started.metrics.count(target, started.verb, NO_RESPONSE);
            }
        }
    }
}

/// The `code` label of a request that ended before any response (see [`ResponseFuture`]).
const NO_RESPONSE: u16 = 0;

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GuardedBody<B, InFlight>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(Started {
            metrics,
            verb,
            start,
            in_flight,
        }) = this.state.take()
        else {
            return Poll::Pending;
        };
        let target = &*in_flight.series;
        metrics
            .verb(target, verb)
            .latency
            .observe(start.elapsed().as_secs_f64());
        match result {
            Ok(res) => {
                if let Some(UpstreamError { kind }) = res.extensions().get::<UpstreamError>() {
                    metrics
                        .upstream_errors
                        .get_or_create(&ErrorLabels {
                            target: Arc::clone(&target.target),
                            kind,
                        })
                        .inc();
                }
                metrics.count(target, verb, res.status().as_u16());
                // A bridged upgrade stays in flight until its session ends, not until the
                // 101's empty body does. Every other response costs one comparison here.
                if res.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    && let Some(session) = res.extensions().get::<UpgradeSession>()
                {
                    session.hold(in_flight);
                    return Poll::Ready(Ok(res.map(GuardedBody::unguarded)));
                }
                Poll::Ready(Ok(res.map(|body| GuardedBody::new(body, in_flight))))
            }
            Err(e) => {
                metrics.count(target, verb, 500);
                Poll::Ready(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// `GET /api/v1/pods` as routing labels it for cluster `prod`.
    fn list_pods_in_prod() -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .uri("/api/v1/pods")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut().insert(RequestMeta {
            target: Arc::from("cluster/prod"),
            verb: "list".into(),
            object_ref: None,
        });
        req
    }

    fn encode(registry: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    }

    #[tokio::test]
    async fn counts_requests_errors_and_in_flight() {
        let mut registry = Registry::default();
        let layer = MetricsLayer::new(&mut registry);
        let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"body")));
            if req.uri().path() == "/down" {
                *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                res.extensions_mut()
                    .insert(UpstreamError { kind: "connect" });
            }
            Ok::<_, Infallible>(res)
        });
        let svc = layer.layer(inner);
        let req = list_pods_in_prod();
        let res = svc.clone().oneshot(req).await.unwrap();
        let text = encode(&registry);
        assert!(
            text.contains(r#"kubegate_requests_in_flight{target="cluster/prod"} 1"#),
            "{text}"
        );
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "body");
        let text = encode(&registry);
        assert!(
            text.contains(r#"kubegate_requests_in_flight{target="cluster/prod"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubegate_requests_total{target="cluster/prod",verb="list",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubegate_request_duration_seconds_count{target="cluster/prod",verb="list"} 1"#
            ),
            "{text}"
        );
        let req = Request::builder()
            .uri("/down")
            .body(Full::new(Bytes::new()))
            .unwrap();
        drop(svc.oneshot(req).await.unwrap());
        let text = encode(&registry);
        assert!(
            text.contains(r#"kubegate_upstream_errors_total{target="",kind="connect"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubegate_requests_total{target="",verb="get",code="503"} 1"#),
            "{text}"
        );
    }

    /// The latency of a request that took at least 30 ms lands in the buckets above it and in
    /// the sum; the bounds come from the wait, so a slow machine cannot fail it.
    #[tokio::test]
    async fn latency_is_observed_into_buckets_and_sum() {
        let mut registry = Registry::default();
        let svc = MetricsLayer::new(&mut registry).layer(tower::service_fn(
            |_req: Request<Full<Bytes>>| async {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"body"))))
            },
        ));
        let res = svc.oneshot(list_pods_in_prod()).await.unwrap();
        drop(res.into_body().collect().await.unwrap());
        let text = encode(&registry);
        let series = r#"kubegate_request_duration_seconds_bucket{le="#;
        let value = |le: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with(series)
                        && l.contains(&format!(r#"le="{le}",target="cluster/prod",verb="list"}}"#))
                })
                .unwrap_or_else(|| panic!("no bucket {le}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        // 0.0001 × 2^8 = 0.0256 s is the last bound below 30 ms.
        assert_eq!(value("0.0256"), 0, "{text}");
        assert_eq!(value("+Inf"), 1, "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"kubegate_request_duration_seconds_sum{target="cluster/prod",verb="list"} "#,
                )
            })
            .unwrap_or_else(|| panic!("no sum: {text}"))
            .parse()
            .unwrap();
        assert!(sum >= 0.03, "{sum}");
    }

    #[tokio::test]
    async fn a_request_dropped_before_the_response_is_counted_with_code_0() {
        let mut registry = Registry::default();
        // An upstream that never answers: the client gives up first.
        let mut svc = MetricsLayer::new(&mut registry).layer(tower::service_fn(
            |_req: Request<Full<Bytes>>| {
                std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
            },
        ));
        let req = list_pods_in_prod();
        let mut fut = Box::pin(svc.ready().await.unwrap().call(req));
        let poll = fut
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()));
        assert!(poll.is_pending());
        let text = encode(&registry);
        assert!(
            text.contains(r#"kubegate_requests_in_flight{target="cluster/prod"} 1"#),
            "{text}"
        );
        assert!(!text.contains("kubegate_requests_total{"), "{text}");
        drop(fut);
        let text = encode(&registry);
        for line in [
            r#"kubegate_requests_total{target="cluster/prod",verb="list",code="0"} 1"#,
            r#"kubegate_request_duration_seconds_count{target="cluster/prod",verb="list"} 1"#,
            r#"kubegate_requests_in_flight{target="cluster/prod"} 0"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[tokio::test]
    async fn upstream_chosen_codes_leave_a_bounded_number_of_series() {
        let mut registry = Registry::default();
        // An upstream answering with whatever code the path names: hyper passes on any code
        // from 100 to 999.
        let svc = MetricsLayer::new(&mut registry).layer(tower::service_fn(
            |req: Request<Full<Bytes>>| async move {
                let code = req.uri().path()[1..].parse::<u16>().unwrap();
                let mut res = Response::new(Full::new(Bytes::new()));
                *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                Ok::<_, Infallible>(res)
            },
        ));
        for code in 100..=999 {
            let req = Request::builder()
                .uri(format!("/{code}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = encode(&registry);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kubegate_requests_total{"))
            .collect();
        // HTTP's 62 registered codes, and one class label for each hundred of the others.
        assert_eq!(series.len(), 62 + 9, "{text}");
        for (line, n) in [
            (r#"code="200"} "#, 1),
            (r#"code="418"} "#, 1),
            (r#"code="511"} "#, 1),
            (r#"code="1xx"} "#, 100 - 4),
            (r#"code="5xx"} "#, 100 - 11),
            (r#"code="9xx"} "#, 100),
        ] {
            let line = format!(r#"kubegate_requests_total{{target="",verb="get",{line}{n}"#);
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }

    #[tokio::test]
    async fn invented_verbs_and_methods_share_one_label() {
        let mut registry = Registry::default();
        let svc = MetricsLayer::new(&mut registry).layer(tower::service_fn(
            |_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            },
        ));
        for (method, verb) in [
            ("PROPFIND", None),
            ("X-1", Some("x-1")),
            ("x-2", None),
            ("OPTIONS", None),
        ] {
            let mut req = Request::builder()
                .method(method)
                .uri("/x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Some(verb) = verb {
                req.extensions_mut().insert(RequestMeta {
                    target: Arc::from(""),
                    verb: verb.into(),
                    object_ref: None,
                });
            }
            svc.clone().oneshot(req).await.unwrap();
        }
        let text = encode(&registry);
        assert!(
            text.contains(r#"kubegate_requests_total{target="",verb="other",code="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubegate_requests_total{target="",verb="options",code="200"} 1"#),
            "{text}"
        );
        assert_eq!(
            verb_label(verb_index("deletecollection")),
            "deletecollection"
        );
    }

    #[tokio::test]
    async fn targets_beyond_the_bound_share_one_label() {
        let mut registry = Registry::default();
        let svc = MetricsLayer::new(&mut registry)
            .with_max_targets(2)
            .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        // A client naming clusters that do not exist, before it is authenticated.
        for target in [
            "cluster/a",
            "cluster/b",
            "cluster/c",
            "cluster/d",
            "cluster/a",
        ] {
            let mut req = Request::builder()
                .uri("/api")
                .body(Full::new(Bytes::new()))
                .unwrap();
            req.extensions_mut().insert(RequestMeta {
                target: Arc::from(target),
                verb: "get".into(),
                object_ref: None,
            });
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = encode(&registry);
        for (target, n) in [("cluster/a", 2), ("cluster/b", 1), ("other", 2)] {
            let line = format!(
                r#"kubegate_requests_total{{target="{target}",verb="get",code="200"}} {n}"#
            );
            assert!(text.contains(&line), "{line}\n{text}");
            let line = format!(r#"kubegate_requests_in_flight{{target="{target}"}} 0"#);
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(
            !text.contains("cluster/c") && !text.contains("cluster/d"),
            "{text}"
        );
    }
}
