//! Response bodies: full, empty, and streamed (each chunk becomes one HTTP chunk / h2 frame,
//! flushed as it is produced).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use crate::status::Status;

/// The body type of every response this server writes.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn stream<S>(chunks: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    StreamBody::new(chunks.map(|b| Ok::<_, std::io::Error>(Frame::data(b)))).boxed_unsync()
}

pub(crate) fn response(code: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    resp
}

pub(crate) fn json(code: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    response(code, "application/json", full(bytes))
}

/// A Kubernetes protobuf body (`application/vnd.kubernetes.protobuf`).
pub(crate) fn protobuf(code: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    response(code, crate::negotiate::PROTOBUF, full(bytes))
}

pub(crate) fn status(status: &Status, pretty: bool) -> Response<Body> {
    status_as(status, json(status_code(status), status.to_bytes(pretty)))
}

/// How a request's Status answers are written, decided once from its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusOut {
    /// Indented JSON (`?pretty`, curl).
    pub(crate) pretty: bool,
    /// Kubernetes protobuf (negotiated from `Accept`).
    pub(crate) protobuf: bool,
}

impl StatusOut {
    pub(crate) fn respond(self, status: &Status) -> Response<Body> {
        status_as_negotiated(status, self.pretty, self.protobuf)
    }
}

/// A Status in protobuf when `protobuf` (the client negotiated it), else JSON.
pub(crate) fn status_as_negotiated(
    status: &Status,
    pretty: bool,
    protobuf: bool,
) -> Response<Body> {
    if protobuf {
        status_protobuf(status)
    } else {
        self::status(status, pretty)
    }
}

/// A Status in Kubernetes protobuf, for a client that negotiated it.
pub(crate) fn status_protobuf(status: &Status) -> Response<Body> {
    let bytes = crate::protobuf_encode::encode_object(&status.to_value());
    status_as(status, protobuf(status_code(status), bytes))
}

fn status_code(status: &Status) -> StatusCode {
    StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The headers kube-apiserver adds to a Status response.
fn status_as(status: &Status, mut resp: Response<Body>) -> Response<Body> {
    let code = resp.status();
    if let Some(secs) = status.retry_after() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if code == StatusCode::FORBIDDEN {
        resp.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
    resp
}

pub(crate) fn text(code: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = response(code, "text/plain; charset=utf-8", full(text));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}
