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
        OpsPath::Healthz => health("healthz", &checks(runtime, false), None, req.uri()),
        OpsPath::Livez => health("livez", &checks(runtime, true), None, req.uri()),
        OpsPath::Readyz => {
            let upstreams = upstreams_line(shared);
            health(
                "readyz",
                &checks(runtime, false),
                upstreams.as_deref(),
                req.uri(),
            )
        }
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

/// A named check and its outcome (the cause, for the gateway's own log and the check's own
/// path, when it fails).
type Check = (&'static str, Result<(), &'static str>);

/// The checks of an endpoint: `ping` always; `policy` (a policy is loaded) for `healthz` and
/// `readyz`, not `livez`, which says only that the process runs.
fn checks(runtime: &Runtime, live_only: bool) -> Vec<Check> {
    let mut checks: Vec<Check> = vec![("ping", Ok(()))];
    if !live_only {
        let policy = if runtime.policy.binding_count() > 0 {
            Ok(())
        } else {
            Err("no policy is loaded")
        };
        checks.push(("policy", policy));
    }
    checks
}

/// How many upstreams the health prober found unreachable, as a line of `/readyz?verbose`
/// (kubegate's own: it never fails readiness, since the gateway serves every other target).
/// Counted, never named: anyone may ask, and neither target names nor upstream addresses are
/// theirs to learn; the prober logs which, and why.
fn upstreams_line(shared: &Shared) -> Option<String> {
    let upstreams = shared.upstream_health.snapshot();
    if upstreams.is_empty() {
        return None;
    }
    let unreachable = upstreams.values().filter(|p| p.is_some()).count();
    let total = upstreams.len();
    Some(if unreachable == 0 {
        format!("[+]upstreams: {total} of {total} reachable\n")
    } else {
        format!(
            "[!]upstreams: {unreachable} of {total} unreachable (which, and why, is in the gateway's log)\n"
        )
    })
}

/// kube-apiserver's health endpoints (`healthz.handleRootHealth`): `ok`, or with `?verbose`
/// a `[+]<check> ok` line per check and `<name> check passed`; any failing check a 500 with
/// every line, the failing ones `[-]<check> failed: reason withheld` (anyone may ask), then
/// `<name> check failed`. `?exclude=<check>` (any number) skips checks, and names that match
/// none are warned about. `/<name>/<check>` asks one check: `ok`, or 500 `internal server
/// error: <cause>`; an unknown check is a 404.
fn health(
    name: &str,
    checks: &[Check],
    extra: Option<&str>,
    uri: &http::Uri,
) -> Response<ProxyBody> {
    let sub = uri
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(name))
        .unwrap_or("");
    if !sub.is_empty() {
        return match checks
            .iter()
            .find(|(check, _)| sub.strip_prefix('/') == Some(*check))
        {
            Some((_, Ok(()))) => plain_text_response(StatusCode::OK, "ok".into()),
            Some((_, Err(cause))) => plain_text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {cause}\n"),
            ),
            None => kubegate_proxy::status::not_found_text(),
        };
    }
    let query = uri.query().map(kubegate_routing::Query::new);
    let mut excluded: Vec<String> = query
        .iter()
        .flat_map(|q| q.pairs())
        .filter(|(key, _)| key == "exclude")
        .map(|(_, value)| value.into_owned())
        .collect();
    excluded.sort();
    excluded.dedup();
    let verbose = query.as_ref().is_some_and(|q| q.has("verbose"));
    let mut lines = String::new();
    let mut failed = false;
    for (check, outcome) in checks {
        if let Some(i) = excluded.iter().position(|e| e == check) {
            excluded.remove(i);
            lines.push_str(&format!("[+]{check} excluded: ok\n"));
            continue;
        }
        match outcome {
            Ok(()) => lines.push_str(&format!("[+]{check} ok\n")),
            Err(cause) => {
                failed = true;
                tracing::warn!(check, cause, "{name} check failed");
                lines.push_str(&format!("[-]{check} failed: reason withheld\n"));
            }
        }
    }
    if let Some(extra) = extra {
        lines.push_str(extra);
    }
    if !excluded.is_empty() {
        let quoted: Vec<String> = excluded
            .iter()
            .map(|e| kubegate_proxy::status::go_quote(e))
            .collect();
        lines.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            quoted.join(",")
        ));
    }
    if failed {
        // `http.Error`, which ends the text with a newline.
        return plain_text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{lines}{name} check failed\n"),
        );
    }
    if !verbose {
        return plain_text_response(StatusCode::OK, "ok".into());
    }
    plain_text_response(StatusCode::OK, format!("{lines}{name} check passed\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(res: Response<ProxyBody>) -> (u16, String) {
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// kube-apiserver's health endpoints, answer for answer (`healthz.handleRootHealth` and
    /// its per-check paths).
    #[tokio::test]
    async fn health_endpoints_answer_as_kube_apiserver_does() {
        let ready: &[Check] = &[("ping", Ok(())), ("policy", Ok(()))];
        let unready: &[Check] = &[("ping", Ok(())), ("policy", Err("no policy is loaded"))];
        let live: &[Check] = &[("ping", Ok(()))];
        #[rustfmt::skip]
        let cases: &[(&str, &[Check], &str, u16, &str)] = &[
            ("healthz", ready, "/healthz", 200, "ok"),
            ("healthz", ready, "/healthz?verbose", 200, "[+]ping ok\n[+]policy ok\nhealthz check passed\n"),
            ("healthz", ready, "/healthz?verbose=false", 200, "[+]ping ok\n[+]policy ok\nhealthz check passed\n"),
            ("readyz", unready, "/readyz", 500, "[+]ping ok\n[-]policy failed: reason withheld\nreadyz check failed\n"),
            ("readyz", unready, "/readyz?exclude=policy", 200, "ok"),
            ("readyz", unready, "/readyz?exclude=policy&verbose", 200, "[+]ping ok\n[+]policy excluded: ok\nreadyz check passed\n"),
            ("livez", live, "/livez?exclude=nope&exclude=etcd&verbose", 200, "[+]ping ok\nwarn: some health checks cannot be excluded: no matches for \"etcd\",\"nope\"\nlivez check passed\n"),
            ("readyz", unready, "/readyz/policy", 500, "internal server error: no policy is loaded\n"),
            ("readyz", unready, "/readyz/ping", 200, "ok"),
            ("healthz", ready, "/healthz/nope", 404, "404 page not found\n"),
            ("healthz", ready, "/healthz/", 404, "404 page not found\n"),
        ];
        for (name, checks, uri, status, body) in cases {
            let uri: http::Uri = uri.parse().unwrap();
            let got = answer(health(name, checks, None, &uri)).await;
            assert_eq!(got, (*status, (*body).to_owned()), "{uri}");
        }
        // kubegate's upstream count rides in readyz's verbose lines.
        let uri: http::Uri = "/readyz?verbose".parse().unwrap();
        let got = answer(health(
            "readyz",
            ready,
            Some("[+]upstreams: 2 of 2 reachable\n"),
            &uri,
        ))
        .await;
        assert_eq!(
            got.1,
            "[+]ping ok\n[+]policy ok\n[+]upstreams: 2 of 2 reachable\nreadyz check passed\n"
        );
    }
}
