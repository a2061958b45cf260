//! The request pipeline, in kube-apiserver's filter order: RequestInfo → authentication →
//! impersonation → authorization → (record) → (faults) → handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::api::{self, Ctx};
use crate::authn::impersonate;
use crate::authz::{Attributes, Decision};
use crate::body::{self, Body};
use crate::conn::ConnControl;
use crate::exec::is_upgrade;
use crate::faults::Fault;
use crate::identity::UserInfo;
use crate::recorder::RecordedRequest;
use crate::request::{Query, RequestInfo};
use crate::server::{Shared, UPGRADE_ECHO_PATH};
use crate::status::{Status, forbidden_for, wants_pretty};
use crate::{discovery, openapi};

fn percent_decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// What the checks before the handler decided.
enum Admission {
    Proceed {
        info: RequestInfo,
        user: UserInfo,
    },
    Reject(Status),
    /// RequestInfo failed: kube-apiserver's plain-text 500.
    Internal(String),
}

fn admit(
    shared: &Shared,
    req: &Request<Incoming>,
    peer_cert: Option<&[u8]>,
    path: &str,
) -> (Admission, Option<UserInfo>, Option<UserInfo>, String) {
    let info = match RequestInfo::parse(req.method().as_str(), path, req.uri().query()) {
        Ok(info) => info,
        Err(msg) => {
            let verb = req.method().as_str().to_ascii_lowercase();
            return (Admission::Internal(msg), None, None, verb);
        }
    };
    let verb = info.verb.clone();
    let Some(requestor) = shared.authn.authenticate(req.headers(), peer_cert) else {
        return (Admission::Reject(Status::unauthorized()), None, None, verb);
    };
    let impersonated = match impersonate(&shared.authz, &requestor, req.headers()) {
        Ok(i) => i,
        Err(status) => return (Admission::Reject(status), Some(requestor), None, verb),
    };
    let user = impersonated.clone().unwrap_or_else(|| requestor.clone());
    let p = &info.path;
    let attrs = Attributes {
        user: &user,
        verb: &info.verb,
        resource_request: info.resource_request,
        path,
        api_group: &p.group,
        api_version: &p.version,
        resource: &p.resource,
        subresource: &p.subresource,
        namespace: &p.namespace,
        name: &p.name,
    };
    let decision = match shared.authz.authorize(&attrs) {
        Decision::Allow => None,
        Decision::Deny(r) | Decision::NoOpinion(r) => Some(forbidden_for(&attrs, &r)),
    };
    // Pod exec/attach/portforward also need `create` when the verb isn't already create
    // (AuthorizePodWebsocketUpgradeCreatePermission, on since 1.35).
    let decision = decision.or_else(|| {
        let streaming = p.resource == "pods"
            && matches!(p.subresource.as_str(), "exec" | "attach" | "portforward");
        if !streaming || info.verb == "create" {
            return None;
        }
        let create = Attributes {
            verb: "create",
            ..attrs
        };
        match shared.authz.authorize(&create) {
            Decision::Allow => None,
            Decision::Deny(r) | Decision::NoOpinion(r) => {
                Some(Status::forbidden("", "pods", &p.name, &r))
            }
        }
    });
    if let Some(status) = decision {
        return (
            Admission::Reject(status),
            Some(requestor),
            impersonated,
            verb,
        );
    }
    (
        Admission::Proceed { info, user },
        Some(requestor),
        impersonated,
        verb,
    )
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    peer_cert: Option<Arc<[u8]>>,
    control: Arc<ConnControl>,
    req: Request<Incoming>,
) -> Response<Body> {
    let raw_path = req.uri().path().to_owned();
    let raw_query = req.uri().query().map(str::to_owned);
    let path = percent_decoded(&raw_path);
    let query = Query::parse(raw_query.as_deref());
    let pretty = wants_pretty(
        raw_query.as_deref(),
        req.headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    // Statuses are negotiated like any response (kube's `ErrorNegotiated`).
    let protobuf = crate::negotiate::status_in_protobuf(
        req.headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let out = body::StatusOut { pretty, protobuf };
    let upgrade = is_upgrade(req.headers());
    let (admission, authenticated, impersonated, verb) =
        admit(&shared, &req, peer_cert.as_deref(), &path);
    if shared.recorder.is_enabled() {
        shared.recorder.push(RecordedRequest {
            method: req.method().clone(),
            version: req.version(),
            path: raw_path.clone(),
            query: raw_query.clone(),
            headers: req.headers().clone(),
            authenticated,
            impersonated,
            verb,
            peer,
        });
    }
    let mut slow = None;
    let mut held = None;
    let mut set_cookie = None;
    match shared.faults.take(req.method(), &raw_path, upgrade) {
        None => {}
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Reset) => {
            control.reset();
            // The connection task drops this future together with the socket.
            return std::future::pending().await;
        }
        Some(Fault::Status(code)) => {
            return out.respond(&Status::for_code(code));
        }
        Some(Fault::SlowBody {
            chunk_size,
            interval,
        }) => slow = Some((chunk_size, interval)),
        Some(Fault::HoldBody(gate)) => held = Some(gate),
        Some(Fault::SetCookie(cookie)) => set_cookie = HeaderValue::from_str(&cookie).ok(),
        Some(Fault::UpgradeStatus { code, location }) => {
            return upgrade_refusal(code, location.as_deref(), pretty);
        }
        Some(Fault::Redirect { code, location }) => {
            return upgrade_refusal(code, Some(&location), pretty);
        }
        Some(Fault::Document {
            content_types,
            body,
        }) => {
            let mut resp = body::text(StatusCode::OK, body);
            resp.headers_mut().remove("x-content-type-options");
            resp.headers_mut().remove(http::header::CONTENT_TYPE);
            for value in content_types {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    resp.headers_mut().append(http::header::CONTENT_TYPE, value);
                }
            }
            return resp;
        }
    }
    let mut resp = match admission {
        Admission::Reject(status) => out.respond(&status),
        Admission::Internal(msg) => {
            let uri = req.uri().path_and_query().map_or("", |p| p.as_str());
            // kube-apiserver's `InternalError` sanitizes the whole message, the error text
            // too, in one pass (Go's `strings.NewReplacer`).
            let message = format!("Internal Server Error: {uri:?}: {msg}");
            let mut text = String::with_capacity(message.len() + 1);
            for c in message.chars() {
                match c {
                    '&' => text.push_str("&amp;"),
                    '<' => text.push_str("&lt;"),
                    '>' => text.push_str("&gt;"),
                    c => text.push(c),
                }
            }
            text.push('\n');
            body::text(StatusCode::INTERNAL_SERVER_ERROR, text)
        }
        Admission::Proceed { info, user } => {
            route(&shared, req, &info, &user, &query, &path, out).await
        }
    };
    if let Some(cookie) = set_cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    if let Some(gate) = held {
        resp = hold_body(resp, gate);
    }
    match slow {
        Some((chunk, interval)) => slow_down(resp, chunk.max(1), interval),
        None => resp,
    }
}

/// The response with its body held back until `gate` opens (the head goes out at once).
fn hold_body(resp: Response<Body>, gate: crate::faults::BodyGate) -> Response<Body> {
    let (parts, inner) = resp.into_parts();
    let frames = inner.into_data_stream().map(|r| r.unwrap_or_default());
    let held = futures_util::stream::once(async move {
        gate.opened().await;
        frames
    })
    .flatten();
    Response::from_parts(parts, body::stream(held))
}

fn upgrade_refusal(code: u16, location: Option<&str>, pretty: bool) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::FORBIDDEN {
        let s = Status::forbidden("", "", "", "upgrade refused by fault injection");
        return body::status(&s, pretty);
    }
    let mut resp = body::text(code, "ok\n");
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert(LOCATION, loc);
    }
    resp
}

fn slow_down(resp: Response<Body>, chunk: usize, interval: Duration) -> Response<Body> {
    let (parts, inner) = resp.into_parts();
    let frames = inner.into_data_stream();
    let pieces = frames
        .flat_map(move |r| {
            let data: Bytes = r.unwrap_or_default();
            let pieces: Vec<Bytes> = (0..data.len())
                .step_by(chunk)
                .map(|i| data.slice(i..(i + chunk).min(data.len())))
                .collect();
            futures_util::stream::iter(pieces)
        })
        .then(move |b| async move {
            tokio::time::sleep(interval).await;
            b
        });
    Response::from_parts(parts, body::stream(pieces))
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    info: &RequestInfo,
    user: &UserInfo,
    query: &Query,
    path: &str,
    out: body::StatusOut,
) -> Response<Body> {
    if path == UPGRADE_ECHO_PATH {
        return crate::exec::upgrade_echo(req);
    }
    if info.resource_request {
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ctx = Ctx {
            shared,
            info,
            user,
            query,
            pretty: out.pretty,
            accept: accept.as_deref(),
            table: None,
            protobuf: out.protobuf,
        };
        return api::serve(&ctx, req).await;
    }
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return body::text(StatusCode::OK, "ok");
    }
    if let Some(resp) = openapi::serve(path) {
        return resp;
    }
    if let Some(resp) = discovery::serve(path, req.headers(), &shared.host) {
        return resp;
    }
    out.respond(&Status::path_not_found())
}
