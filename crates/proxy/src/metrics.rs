//! [`MetricsLayer`]: Prometheus metrics in a registry the embedder owns.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kubegate_requests` (`_total`) | counter | `target`, `verb`, `code` |
//! | `kubegate_request_duration_seconds` | histogram (time to response head) | `target`, `verb` |
//! | `kubegate_requests_in_flight` | gauge (until the response body ends) | `target` |
//! | `kubegate_upstream_errors` (`_total`) | counter | `target`, `kind` |
//!
//! `target` and `verb` come from [`RequestMeta`] (empty target / lowercase method otherwise);
//! `kind` from the [`UpstreamError`] extension `ForwardService` puts on its error responses.
//! A verb outside kube's verbs and HTTP's methods is counted as `other`, as kube-apiserver's
//! own request metrics do: a client inventing methods cannot grow the label set without bound.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::body::GuardedBody;
use crate::ext::{RequestMeta, UpstreamError};
use kubegate_routing::STANDARD_VERBS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    target: Arc<str>,
    verb: &'static str,
    code: u16,
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

#[derive(Debug)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Family<TargetLabels, Gauge>,
    upstream_errors: Family<ErrorLabels, Counter>,
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

/// Decrements the in-flight gauge when the response body ends or is dropped.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
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
        let (target, verb) = match req.extensions().get::<RequestMeta>() {
            Some(m) => (m.target.clone(), verb_label(&m.verb)),
            None => (
                Arc::from(""),
                verb_label(&req.method().as_str().to_ascii_lowercase()),
            ),
        };
        let gauge = self.metrics.in_flight.get_or_create_owned(&TargetLabels {
            target: target.clone(),
        });
        gauge.inc();
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(Started {
                metrics: self.metrics.clone(),
                target,
                verb,
                start: Instant::now(),
                in_flight: InFlight { gauge },
            }),
        }
    }
}

/// The `verb` label: a verb RequestInfo gives standard methods as it is, anything else `other`
/// (kube-apiserver's `cleanVerb` does the same for its metrics).
fn verb_label(verb: &str) -> &'static str {
    STANDARD_VERBS
        .into_iter()
        .find(|known| *known == verb)
        .unwrap_or("other")
}

#[derive(Debug)]
struct Started {
    metrics: Arc<Metrics>,
    target: Arc<str>,
    verb: &'static str,
    start: Instant,
    in_flight: InFlight,
}

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<Started>,
    }
}

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
            target,
            verb,
            start,
            in_flight,
        }) = this.state.take()
        else {
            return Poll::Pending;
        };
        let elapsed = start.elapsed().as_secs_f64();
        metrics
            .latency
            .get_or_create(&LatencyLabels {
                target: target.clone(),
                verb,
            })
            .observe(elapsed);
        match result {
            Ok(res) => {
                if let Some(UpstreamError { kind }) = res.extensions().get::<UpstreamError>() {
                    metrics
                        .upstream_errors
                        .get_or_create(&ErrorLabels {
                            target: target.clone(),
                            kind,
                        })
                        .inc();
                }
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        target,
                        verb,
                        code: res.status().as_u16(),
                    })
                    .inc();
                let (parts, body) = res.into_parts();
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    GuardedBody::new(body, in_flight),
                )))
            }
            Err(e) => {
                // The server turns a service error into a dropped connection; count it as 500.
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        target,
                        verb,
                        code: 500,
                    })
                    .inc();
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
        let mut req = Request::builder()
            .uri("/api/v1/pods")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut().insert(RequestMeta {
            target: Arc::from("cluster/prod"),
            verb: "list".into(),
            object_ref: None,
        });
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
        assert_eq!(verb_label("deletecollection"), "deletecollection");
    }
}
