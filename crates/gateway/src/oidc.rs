//! `/oidc/…`: the gateway as an OIDC provider for the tokens it forwards in identity mode
//! `oidc`, so a kube-apiserver started with `--oidc-issuer-url=<gateway>/oidc
//! --oidc-client-id=<that upstream's audience>` trusts them (see `forwarded_tokens`).

use crate::service::RequestBody;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use kubegate_proxy::ProxyBody;
use kubegate_proxy::status::not_found_text;
use kubegate_tokens::{DISCOVERY_PATH, DiscoveryDocument};

use crate::service::Shared;

/// The JWKS path below the issuer (where kube-apiserver serves its own issuer's keys).
pub const JWKS_PATH: &str = "/openid/v1/jwks";

fn json(bytes: Vec<u8>) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::from(Bytes::from(bytes)));
    *res.status_mut() = StatusCode::OK;
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// Serves the discovery document and the JWKS; `rest` is the path below `/oidc`.
pub fn handle(shared: &Shared, rest: &str, req: &Request<RequestBody>) -> Response<ProxyBody> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return not_found_text();
    }
    match rest {
        DISCOVERY_PATH => {
            let doc = DiscoveryDocument::for_issuer(&shared.issuer, &shared.keys);
            json(doc.to_json().into_bytes())
        }
        JWKS_PATH => match serde_json::to_vec(&shared.keys.jwks()) {
            Ok(bytes) => json(bytes),
            Err(_) => not_found_text(),
        },
        _ => not_found_text(),
    }
}
