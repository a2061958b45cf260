//! `/healthz`, `/livez`, `/readyz`, `/version`, `/metrics`.

use crate::service::RequestBody;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use kubegate_proxy::ProxyBody;
use kubegate_proxy::status::plain_text_response;
use kubegate_routing::OpsPath;

use crate::service::{OwnCredentials, Runtime, Shared, authenticate};

/// Serves an ops endpoint.
pub(crate) async fn handle(
    shared: &Shared,
    runtime: &Runtime,
    ops: OpsPath,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    match ops {
        OpsPath::Healthz | OpsPath::Livez => plain_text_response(StatusCode::OK, "ok".into()),
        OpsPath::Readyz => readyz(shared, runtime, req),
        OpsPath::Version => {
            // Loft's `auth.Version`, written as it was before: compact, no closing newline.
            crate::management::marshalled_response(http::StatusCode::OK, &platform_version())
        }
        OpsPath::Metrics => {
            if !runtime.config.public_metrics
                && let Err(res) = authenticate(shared, runtime, req, OwnCredentials::Untried).await
            {
                return *res;
            }
            let mut text = String::new();
            let registry = shared
                .registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
                return plain_text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics could not be encoded\n".into(),
                );
            }
            let mut res = Response::new(ProxyBody::from(Bytes::from(text)));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        }
    }
}

/// The platform's `/version`, in Loft's shape (`auth.Version`, which `vcluster platform` and
/// loft CLIs read): kubegate's own version, and the Kubernetes version its management API
/// reports. kubegate does not look for newer releases, so it never asks for an upgrade.
fn platform_version() -> kubegate_api::PlatformVersion {
    kubegate_api::PlatformVersion {
        version: concat!("v", env!("CARGO_PKG_VERSION")).to_owned(),
        major: env!("CARGO_PKG_VERSION_MAJOR").to_owned(),
        minor: env!("CARGO_PKG_VERSION_MINOR").to_owned(),
        kube_version: crate::management::discovery::KUBE_GIT_VERSION.to_owned(),
        newer_version: String::new(),
        should_upgrade: false,
    }
}

/// kube-style readiness: `[+]check ok` lines; `?verbose` lists them on success too. Only a
/// missing policy makes the gateway unready; unreachable upstreams are counted (`[!]`) but the
/// gateway still serves every other target. Anyone may ask, so no upstream is named and no
/// cause given (kube-apiserver withholds failure reasons too): target names are not told to
/// callers who have no access to them, nor upstream addresses to anyone. The health prober
/// logs which upstream is unreachable, and why.
fn readyz(shared: &Shared, runtime: &Runtime, req: &Request<RequestBody>) -> Response<ProxyBody> {
    let checks = [("policy", runtime.policy.binding_count() > 0)];
    let upstreams = shared.upstream_health.snapshot();
    let verbose = req.uri().query().is_some_and(|q| q.contains("verbose"));
    let ok = checks.iter().all(|(_, ok)| *ok);
    if ok && !verbose {
        return plain_text_response(StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, ok) in checks {
        if ok {
            body.push_str(&format!("[+]{name} ok\n"));
        } else {
            body.push_str(&format!("[-]{name} failed: no policy is loaded\n"));
        }
    }
    if !upstreams.is_empty() {
        let unreachable = upstreams.values().filter(|p| p.is_some()).count();
        let total = upstreams.len();
        if unreachable == 0 {
            body.push_str(&format!("[+]upstreams: {total} of {total} reachable\n"));
        } else {
            body.push_str(&format!(
                "[!]upstreams: {unreachable} of {total} unreachable (which, and why, is in the gateway's log)\n"
            ));
        }
    }
    if ok {
        body.push_str("readyz check passed\n");
        plain_text_response(StatusCode::OK, body)
    } else {
        body.push_str("readyz check failed\n");
        plain_text_response(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}
