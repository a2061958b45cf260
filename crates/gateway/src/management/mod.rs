//! The in-process management API (`/kubernetes/management/…`): a small Kubernetes-style API
//! server for `management.loft.sh/v1` — discovery, OpenAPI, and the resources a gateway user
//! needs. Every error is a Status.

pub mod discovery;
mod objects;
mod request;
mod tokens;

use crate::service::RequestBody;
use http::{Method, Request, Response};
use kubegate_authz::{Attributes, Authorizer};
use kubegate_proxy::{ProxyBody, Status};
use kubegate_routing::{RequestInfo, Target};

use crate::access::{audit_decision, forbidden_status};
use crate::authn::Caller;
use crate::service::{Runtime, Shared, respond};

pub(crate) use request::{BODY_READ_TIMEOUT, json_response, marshalled_response};
pub(crate) use tokens::generated_key_name;

/// Serves one management API request for an authenticated caller.
pub async fn handle(
    shared: &Shared,
    runtime: &Runtime,
    caller: &Caller,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    let path_and_query = req.uri().clone();
    let route = match shared
        .router
        .route(path_and_query.path(), path_and_query.query())
    {
        Ok(route) => route,
        Err(e) => return respond(&Status::bad_request(e.to_string()), &req),
    };
    let info = match RequestInfo::parse(req.method().as_str(), &route.rest, route.query) {
        Ok(info) => info,
        Err(e) => {
            let uri = path_and_query
                .path_and_query()
                .map_or("/", |pq| pq.as_str());
            return kubegate_proxy::status::internal_error_text(uri, &e.to_string());
        }
    };
    let attrs = Attributes::from_request_info(&caller.identity, &info);
    // Every credential may ask `POST selves`, whatever its scope: clients and agents use it to
    // check a key (the caller's own, or one in `spec.accessKey`, which a holder of that key
    // could use as its bearer token anyway).
    let describes_itself = info.is_resource_request
        && info.verb == "create"
        && info.api_group == discovery::GROUP
        && info.resource == "selves";
    let refuse = |reason: &str| {
        audit_decision(&req, false, reason.into());
        respond(
            &forbidden_status(&kubegate_authz::forbidden(&attrs, reason)),
            &req,
        )
    };
    if !describes_itself && !caller.scope.admits(&Target::Management, &attrs) {
        return refuse(kubegate_authz::SCOPE_DENIED_REASON);
    }
    // `readOnly`: only admins change what the gateway stores (access keys). Describing a
    // credential and minting a short-lived token for a direct cluster endpoint store nothing,
    // and reading a cluster through an agent needs the token.
    let stores_nothing = describes_itself
        || (info.verb == "create" && info.resource == "directclusterendpointtokens");
    if !stores_nothing {
        let gate = runtime.write_gate.authorize(&attrs);
        if gate.verdict == kubegate_authz::Verdict::Deny {
            return refuse(&gate.reason);
        }
    }
    let decision = runtime.policy.decide(&attrs);
    if !decision.is_allowed() {
        return refuse(&decision.reason);
    }
    audit_decision(&req, true, decision.reason);
    // The per-target limit, once the caller is authorized: refused callers do not drain the
    // management API's bucket for everyone (agents' `selves` checks included).
    if let Err(res) = crate::service::admit_to_target(runtime, &req) {
        return *res;
    }
    if !info.is_resource_request {
        return serve_non_resource(&info, &req);
    }
    if info.api_group != discovery::GROUP || info.api_version != discovery::VERSION {
        return respond(&not_found_resource(), &req);
    }
    let Some(resource) = discovery::resource(info.resource) else {
        return respond(&not_found_resource(), &req);
    };
    if !info.subresource.is_empty() || !has_route(resource, &info) {
        return respond(&not_found_resource(), &req);
    }
    let ctx = request::Ctx {
        shared,
        runtime,
        caller,
        resource,
        name: info.name.clone().into_owned(),
        namespace: info.namespace.to_owned(),
        verb: info.verb.clone().into_owned(),
    };
    drop(info);
    drop(route);
    // kube-apiserver has no POST route on an item's path. Here one would be authorized under
    // the path's name (a grant limited by `resourceNames`) and create whatever name the body
    // gives, so it is refused as kube refuses it.
    if ctx.verb == "create" && !ctx.name.is_empty() {
        return respond(&unsupported(resource, &ctx.verb, &ctx.name), &req);
    }
    match (resource.plural, ctx.verb.as_str()) {
        ("selves", "create") => tokens::create_self(&ctx, req).await,
        ("directclusterendpointtokens", "create") => {
            tokens::create_direct_cluster_endpoint_token(&ctx, req).await
        }
        ("ownedaccesskeys", "create") => tokens::create_owned_access_key(&ctx, req).await,
        ("ownedaccesskeys", "list") => tokens::list_owned_access_keys(&ctx, &req).await,
        ("ownedaccesskeys", "get") => tokens::get_owned_access_key(&ctx, &req).await,
        ("ownedaccesskeys", "delete") => tokens::delete_owned_access_key(&ctx, req).await,
        (_, "list" | "get") if resource.verbs.contains(&"list") => objects::read(&ctx, &req),
        _ => respond(&unsupported(resource, &ctx.verb, &ctx.name), &req),
    }
}

/// Whether kube-apiserver would have a route for this path: a cluster-scoped resource's
/// routes are never under `/namespaces/{namespace}/`, and outside it a namespaced resource
/// has only its collection (listing and watching across namespaces; a name there comes from a
/// field selector).
fn has_route(resource: &discovery::ResourceInfo, info: &RequestInfo<'_>) -> bool {
    if resource.namespaced {
        !info.namespace.is_empty()
            || info.name.is_empty()
            || matches!(&*info.verb, "list" | "watch")
    } else {
        info.namespace.is_empty()
    }
}

fn not_found_resource() -> Status {
    Status {
        code: 404,
        message: "the server could not find the requested resource".into(),
        reason: "NotFound".into(),
        details: Some(kubegate_proxy::status::StatusDetails::default()),
        type_meta: true,
    }
}

/// What kube-apiserver answers a request its routes for `resource` do not serve:
/// - a watch of a resource that lists but cannot watch: `ListResource`'s
///   `NewMethodNotSupported`;
/// - an item's path where the resource has no item routes (no get, update, patch or delete):
///   go-restful finds no route, a 404 with empty details;
/// - otherwise go-restful found the path under another method: its 405, through
///   `serviceErrorHandler`, with empty details.
fn unsupported(resource: &discovery::ResourceInfo, verb: &str, name: &str) -> Status {
    if verb == "watch" && resource.verbs.contains(&"list") {
        let kind = format!("{}.{}", resource.plural, discovery::GROUP);
        return Status {
            code: 405,
            message: format!(
                "watch is not supported on resources of kind {}",
                kubegate_proxy::status::go_quote(&kind)
            ),
            reason: "MethodNotAllowed".into(),
            details: Some(kubegate_proxy::status::StatusDetails {
                group: discovery::GROUP.into(),
                kind: resource.plural.into(),
                ..Default::default()
            }),
            type_meta: true,
        };
    }
    let item_routes = ["get", "update", "patch", "delete"]
        .iter()
        .any(|v| resource.verbs.contains(v));
    if !name.is_empty() && !item_routes {
        return not_found_resource();
    }
    method_not_allowed()
}

/// go-restful's 405 as kube-apiserver's `serviceErrorHandler` writes it
/// (`NewGenericServerResponse(405, …)`).
fn method_not_allowed() -> Status {
    Status {
        code: 405,
        message: "the server does not allow this method on the requested resource".into(),
        reason: "MethodNotAllowed".into(),
        details: Some(kubegate_proxy::status::StatusDetails::default()),
        type_meta: true,
    }
}

fn serve_non_resource(info: &RequestInfo<'_>, req: &Request<RequestBody>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(&method_not_allowed(), req);
    }
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let aggregated = discovery::wants_aggregated(accept);
    let path = info.path.trim_end_matches('/');
    let ok = http::StatusCode::OK;
    let pretty = request::pretty(req);
    match path {
        // kube's `/version` handler writes with `WriteRawJSON`: indented, always.
        "/version" => request::raw_json_response(ok, &discovery::version_info()),
        "/api" if aggregated => aggregated_response(&discovery::aggregated(true), req),
        "/api" => json_response(ok, &discovery::legacy_core_versions(), pretty),
        "/apis" if aggregated => aggregated_response(&discovery::aggregated(false), req),
        "/apis" => json_response(ok, &discovery::legacy_group_list(), pretty),
        "/apis/management.loft.sh" => json_response(ok, &discovery::legacy_group(), pretty),
        "/apis/management.loft.sh/v1" => json_response(ok, &discovery::resource_list(), pretty),
        // kube-openapi's handlers write `json.Marshal`'s bytes, pretty or not.
        "/openapi/v3" => request::marshalled_response(ok, &discovery::openapi_index()),
        "/openapi/v3/apis/management.loft.sh/v1" => {
            request::marshalled_response(ok, &discovery::openapi_group_version())
        }
        _ => kubegate_proxy::status::not_found_text(),
    }
}

/// Aggregated discovery with kube-apiserver's caching headers (`ETag`: SHA-512 of the
/// document as `json.Marshal` writes it; 304 on a matching `If-None-Match`). The body is
/// written as `WriteObjectNegotiated` writes it: compact with a closing newline, or pretty.
fn aggregated_response(
    body: &impl serde::Serialize,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    use sha2::Digest;
    let mut marshalled = kubegate_proxy::status::encode_json(body, false).unwrap_or_default();
    let bytes = if request::pretty(req) {
        kubegate_proxy::status::encode_json(body, true).unwrap_or_default()
    } else {
        marshalled.clone()
    };
    // `json.Marshal`'s bytes: the encoder's, without its closing newline.
    marshalled.pop();
    let etag = format!(
        "\"{}\"",
        sha2::Sha512::digest(&marshalled)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    );
    let matches = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut res = if matches {
        let mut res = Response::new(ProxyBody::empty());
        *res.status_mut() = http::StatusCode::NOT_MODIFIED;
        res
    } else {
        Response::new(ProxyBody::from(bytes::Bytes::from(bytes)))
    };
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    headers.insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&etag) {
        headers.insert(http::header::ETAG, v);
    }
    res
}
