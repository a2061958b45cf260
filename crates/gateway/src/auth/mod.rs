//! `/auth/…`: login and sessions (being implemented).

use http::{Request, Response};
use hyper::body::Incoming;
use kubegate_proxy::ProxyBody;

use crate::service::{Runtime, Shared};

/// Serves a request under `/auth/`; `rest` is the path below the prefix.
pub async fn handle(
    shared: &Shared,
    runtime: &Runtime,
    rest: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let _ = (shared, runtime, rest, req);
    kubegate_proxy::status::not_found_text()
}
