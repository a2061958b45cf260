//! Error responses exactly as kube-apiserver writes them: `meta.k8s.io/v1` Status — JSON, or
//! Kubernetes protobuf for a client that asks for it first — and the few plain-text bodies it
//! uses.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Response, StatusCode, Uri};
use serde::Serialize;

const NOSNIFF: &str = "x-content-type-options";
/// The Kubernetes protobuf media type.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// How a Status body is written, as kube-apiserver's `ErrorNegotiated` picks it from the
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// Compact JSON and a newline.
    Json,
    /// JSON indented by two spaces ([`wants_pretty`]).
    PrettyJson,
    /// Kubernetes protobuf: `k8s\0` and a `runtime.Unknown` envelope around the Status.
    Protobuf,
}

impl StatusFormat {
    /// The format for a request: protobuf when the first `Accept` range kube-apiserver's
    /// negotiation would take for a Status is `application/vnd.kubernetes.protobuf` (client-go
    /// configured for protobuf sends `application/vnd.kubernetes.protobuf, */*`), otherwise
    /// JSON, pretty as [`wants_pretty`] says. Ranges that ask for a conversion (`as=Table`)
    /// cannot be met by a Status and are passed over, as kube passes them over. A range for
    /// YAML is answered in JSON here, where kube-apiserver would write YAML.
    pub fn for_request(uri: &Uri, headers: &HeaderMap) -> Self {
        if prefers_protobuf(headers) {
            StatusFormat::Protobuf
        } else if wants_pretty(uri, headers) {
            StatusFormat::PrettyJson
        } else {
            StatusFormat::Json
        }
    }
}

/// Whether negotiation over the request's `Accept` lands on protobuf. Only the first `Accept`
/// header counts, as Go's `Header.Get` reads one.
fn prefers_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(kubegate_routing::accept::negotiates_protobuf)
}

/// A kube `Status` failure object.
///
/// Built by the constructors below, which mirror apimachinery's `k8s.io/apimachinery/pkg/api/errors`
/// (`NewUnauthorized`, `NewForbidden`, …). Serialized with Go's field order and escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// HTTP status code (also the `code` field).
    pub code: u16,
    /// `message` (omitted when empty).
    pub message: String,
    /// `reason` (omitted when empty, i.e. `StatusReasonUnknown`).
    pub reason: String,
    /// `details` (`None` omits it; `Some(default)` renders `{}`).
    pub details: Option<StatusDetails>,
    /// Whether `kind`/`apiVersion` are written. kube-apiserver's timeout filter encodes the
    /// raw `ErrStatus` and leaves them out.
    pub type_meta: bool,
}

/// `details` of a Status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Resource (plural) for NotFound/Forbidden/AlreadyExists/Conflict.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Object UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Causes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds the client should wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_after_seconds: i32,
}

impl StatusDetails {
    /// The details of an error about one object: name, group, and the resource (plural) as
    /// `kind`, as `NewNotFound`, `NewForbidden`, `NewAlreadyExists` and `NewConflict` fill
    /// them.
    pub fn object(group: &str, resource: &str, name: &str) -> Self {
        StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
            ..StatusDetails::default()
        }
    }
}

/// One entry of `details.causes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// Machine-readable reason.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Field path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// One error of one field, as apimachinery's `field.Error`: an `Invalid` Status
/// ([`Status::invalid`]) has one `causes` entry and one part of its message per error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The cause type: `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTooLong`, …
    pub reason: &'static str,
    /// The field's path, e.g. `metadata.name`.
    pub field: String,
    /// What `ErrorBody()` says, e.g. `Invalid value: "x": <why>`.
    pub body: String,
}

impl FieldError {
    /// `field.Invalid(field, value, detail)` for a string value.
    pub fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.to_owned(),
            body: format!("Invalid value: {}: {detail}", go_quote(value)),
        }
    }

    /// `field.NotSupported(field, value, supported)` for a string value.
    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        FieldError::unsupported(field, &go_quote(value), supported)
    }

    /// `field.NotSupported(field, values, supported)` for a list of strings (a query
    /// parameter given any number of times), which kube prints as Go's `%#v` does:
    /// `[]string{"a", "b"}`.
    pub fn not_supported_list(field: &str, values: &[&str], supported: &[&str]) -> FieldError {
        let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
        let value = format!("[]string{{{}}}", quoted.join(", "));
        FieldError::unsupported(field, &value, supported)
    }

    fn unsupported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let mut body = format!("Unsupported value: {value}");
        if !supported.is_empty() {
            let quoted: Vec<String> = supported.iter().map(|v| go_quote(v)).collect();
            body.push_str(": supported values: ");
            body.push_str(&quoted.join(", "));
        }
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.to_owned(),
            body,
        }
    }
}

impl std::fmt::Display for FieldError {
    /// `field.Error.Error()`: `<field>: <body>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body)
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    code: u16,
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl Status {
    fn new(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> Self {
        Status {
            code,
            message,
            reason: reason.to_owned(),
            details,
            type_meta: true,
        }
    }

    /// 401 `Unauthorized` (kube's authentication filter).
    pub fn unauthorized() -> Self {
        Status::new(401, "Unauthorized", "Unauthorized".to_owned(), None)
    }

    /// 403 `Forbidden` as `NewForbidden(schema.GroupResource{group, resource}, name, err)`.
    /// `err` is the authorizer sentence, e.g. `User "x" cannot list resource "pods" …`.
    pub fn forbidden(group: &str, resource: &str, name: &str, err: &str) -> Self {
        let message = match (resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {err}"),
            (false, true) => format!("{} is forbidden: {err}", qualified(group, resource)),
            (false, false) => format!(
                "{} {} is forbidden: {err}",
                qualified(group, resource),
                go_quote(name)
            ),
        };
        Status::new(
            403,
            "Forbidden",
            message,
            Some(StatusDetails::object(group, resource, name)),
        )
    }

    /// 404 `NotFound` as `NewNotFound` (the name quoted as Go's `%q` quotes it).
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            format!(
                "{} {} not found",
                qualified(group, resource),
                go_quote(name)
            ),
            Some(StatusDetails::object(group, resource, name)),
        )
    }

    /// 409 `AlreadyExists` as `NewAlreadyExists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            409,
            "AlreadyExists",
            format!(
                "{} {} already exists",
                qualified(group, resource),
                go_quote(name)
            ),
            Some(StatusDetails::object(group, resource, name)),
        )
    }

    /// 409 `Conflict` as `NewConflict(gr, name, err)`.
    pub fn conflict(group: &str, resource: &str, name: &str, err: &str) -> Self {
        Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: {err}",
                qualified(group, resource),
                go_quote(name)
            ),
            Some(StatusDetails::object(group, resource, name)),
        )
    }

    /// 422 `Invalid` as `NewInvalid(schema.GroupKind{group, kind}, name, errors)`: the
    /// message `<Kind>.<group> "<name>" is invalid: <errors>` (one error as it is, several
    /// in brackets, repeats dropped, as an apimachinery aggregate prints them), one cause per
    /// error, and `details` naming the object by its kind.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let mut seen: Vec<String> = Vec::with_capacity(errors.len());
        for error in errors {
            let text = error.to_string();
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        let subject = format!("{} {}", qualified(group, kind), go_quote(name));
        let message = match seen.as_slice() {
            [] => format!("{subject} is invalid"),
            [one] => format!("{subject} is invalid: {one}"),
            many => format!("{subject} is invalid: [{}]", many.join(", ")),
        };
        let details = StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            causes: errors
                .iter()
                .map(|e| StatusCause {
                    reason: e.reason.to_owned(),
                    message: e.body.clone(),
                    field: e.field.clone(),
                })
                .collect(),
            ..StatusDetails::default()
        };
        Status::new(422, "Invalid", message, Some(details))
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::new(400, "BadRequest", message.into(), None)
    }

    /// 429 `TooManyRequests` with `details.retryAfterSeconds` (and `Retry-After`).
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: i32) -> Self {
        let details = StatusDetails {
            retry_after_seconds,
            ..StatusDetails::default()
        };
        Status::new(429, "TooManyRequests", message.into(), Some(details))
    }

    /// 500 `InternalError` as `NewInternalError(err)`.
    pub fn internal_error(err: &str) -> Self {
        let details = StatusDetails {
            causes: vec![StatusCause {
                message: err.to_owned(),
                ..StatusCause::default()
            }],
            ..StatusDetails::default()
        };
        Status::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
            Some(details),
        )
    }

    /// 503 `ServiceUnavailable` as `NewServiceUnavailable`.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Status::new(503, "ServiceUnavailable", message.into(), None)
    }

    /// 504 `Timeout` as `NewTimeoutError(msg, retry)`: message `Timeout: <msg>`, details always
    /// present (`{}` when `retry_after_seconds` is 0).
    pub fn timeout(message: &str, retry_after_seconds: i32) -> Self {
        let details = StatusDetails {
            retry_after_seconds,
            ..StatusDetails::default()
        };
        Status::new(504, "Timeout", format!("Timeout: {message}"), Some(details))
    }

    /// The 504 kube-apiserver's non-long-running timeout filter writes (no `kind`/`apiVersion`).
    pub fn request_timeout() -> Self {
        Status {
            type_meta: false,
            ..Status::timeout("request did not complete within the allotted timeout", 0)
        }
    }

    /// A failure built from a plain Go error (`StatusReasonUnknown`: no reason, no details),
    /// e.g. `invalid upgrade response: status code 302` with code 500.
    pub fn failure(code: u16, message: impl Into<String>) -> Self {
        Status::new(code, "", message.into(), None)
    }

    /// 502 for an upstream that answered something unusable (no Kubernetes reason exists
    /// for a bad gateway, so the reason is left empty like any plain error).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Status::failure(502, message)
    }

    /// The body as kube-apiserver writes it: compact JSON + `\n`, or 2-space indented without
    /// the newline when `pretty`. `<`, `>`, `&`, U+2028, U+2029 are escaped as Go does.
    pub fn to_json(&self, pretty: bool) -> Vec<u8> {
        let wire = Wire {
            kind: self.type_meta.then_some("Status"),
            api_version: self.type_meta.then_some("v1"),
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: &self.reason,
            details: self.details.as_ref(),
            code: self.code,
        };
        // Serializing plain strings and integers into memory cannot fail; an empty body is a
        // safer fallback than a panic.
        encode_json(&wire, pretty).unwrap_or_default()
    }

    /// The body in Kubernetes protobuf, as kube-apiserver's protobuf serializer writes a
    /// Status: `k8s\0`, then `runtime.Unknown{typeMeta: {v1, Status}, raw, contentEncoding: "",
    /// contentType: ""}` whose raw is the Status message, every field where and as the
    /// generated marshaler puts it.
    pub fn to_protobuf(&self) -> Vec<u8> {
        let mut status = proto::Message::default();
        // metadata (ListMeta: selfLink, resourceVersion, continue, all empty)
        status.bytes(1, b"\x0a\x00\x12\x00\x1a\x00");
        status.string(2, "Failure");
        status.string(3, &self.message);
        status.string(4, &self.reason);
        if let Some(d) = &self.details {
            let mut details = proto::Message::default();
            details.string(1, &d.name);
            details.string(2, &d.group);
            details.string(3, &d.kind);
            for c in &d.causes {
                let mut cause = proto::Message::default();
                cause.string(1, &c.reason);
                cause.string(2, &c.message);
                cause.string(3, &c.field);
                details.bytes(4, &cause.0);
            }
            details.int(5, i64::from(d.retry_after_seconds));
            details.string(6, &d.uid);
            status.bytes(5, &details.0);
        }
        status.int(6, i64::from(self.code));
        let mut unknown = proto::Message(b"k8s\0".to_vec());
        unknown.bytes(1, b"\x0a\x02v1\x12\x06Status");
        unknown.bytes(2, &status.0);
        unknown.string(3, "");
        unknown.string(4, "");
        unknown.0
    }

    /// The body in `format`, with its `Content-Type`. A Status without `kind`/`apiVersion`
    /// ([`request_timeout`](Self::request_timeout)) is always JSON: kube's timeout filter
    /// writes it raw, without negotiating.
    pub fn encode(&self, format: StatusFormat) -> (&'static str, Vec<u8>) {
        match format {
            StatusFormat::Protobuf if self.type_meta => (PROTOBUF, self.to_protobuf()),
            StatusFormat::PrettyJson => ("application/json", self.to_json(true)),
            _ => ("application/json", self.to_json(false)),
        }
    }

    /// The HTTP response: `Content-Type: application/json`, `Cache-Control: no-cache, private`,
    /// `Retry-After` when `details.retryAfterSeconds > 0`, and `X-Content-Type-Options: nosniff`
    /// for 403 (kube's `RespondWithError`; the 401 path does not set it).
    ///
    /// The response also carries the Status' fields as a
    /// [`ResponseStatus`](crate::audit::ResponseStatus) extension, for
    /// [`AuditLayer`](crate::AuditLayer) to record as kube-apiserver records a Status response
    /// object: `status`, `message`, `reason`, `details`, `code`. Not for a Status without
    /// `kind`/`apiVersion` ([`request_timeout`](Self::request_timeout)): kube's timeout filter
    /// encodes that one raw, past the writer that feeds the audit event, so its event has the
    /// code alone.
    pub fn to_response<B: From<Bytes>>(&self, pretty: bool) -> Response<B> {
        self.to_response_as(if pretty {
            StatusFormat::PrettyJson
        } else {
            StatusFormat::Json
        })
    }

    /// [`to_response`](Self::to_response) in `format`: protobuf answers carry
    /// `Content-Type: application/vnd.kubernetes.protobuf`.
    pub fn to_response_as<B: From<Bytes>>(&self, format: StatusFormat) -> Response<B> {
        let (content_type, body) = self.encode(format);
        let mut res = Response::new(B::from(Bytes::from(body)));
        *res.status_mut() =
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
        if self.code == 403 {
            h.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
        }
        if let Some(d) = &self.details
            && d.retry_after_seconds > 0
        {
            h.insert(RETRY_AFTER, HeaderValue::from(d.retry_after_seconds));
        }
        if self.type_meta {
            res.extensions_mut()
                .insert(crate::audit::ResponseStatus::from(self));
        }
        res
    }

    /// [`to_response`](Self::to_response) in the format the request negotiates, as
    /// kube-apiserver does ([`StatusFormat::for_request`]).
    pub fn response_for<B: From<Bytes>>(&self, uri: &Uri, headers: &HeaderMap) -> Response<B> {
        self.to_response_as(StatusFormat::for_request(uri, headers))
    }
}

impl From<kubegate_authz::Forbidden> for Status {
    /// The 403 kubegate-authz built (`kubegate_authz::forbidden(&attributes, reason)`).
    fn from(f: kubegate_authz::Forbidden) -> Self {
        let details = StatusDetails {
            name: f.name,
            group: f.group,
            kind: f.kind,
            ..StatusDetails::default()
        };
        Status::new(403, "Forbidden", f.message, Some(details))
    }
}

/// kube-apiserver's `isPrettyPrint`: a non-empty `pretty` query value decides (Go
/// `strconv.ParseBool`, invalid → false); otherwise a User-Agent starting with `curl`, `Wget`
/// or `Mozilla/5.0` gets pretty output.
pub fn wants_pretty(uri: &Uri, headers: &HeaderMap) -> bool {
    if let Some(q) = uri.query()
        && q.contains("pretty")
        && let Some(v) = first_query_value(q, "pretty")
        && !v.is_empty()
    {
        return matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True");
    }
    let ua = headers
        .get(USER_AGENT)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    ua.starts_with(b"curl") || ua.starts_with(b"Wget") || ua.starts_with(b"Mozilla/5.0")
}

/// First value of `key` in a raw query with Go `url.ParseQuery` decoding (`+` is a space,
/// pairs with `;` or bad escapes are skipped).
fn first_query_value(query: &str, key: &str) -> Option<String> {
    for pair in query.split('&') {
        if pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(k) = form_decode(k) else { continue };
        let Some(v) = form_decode(v) else { continue };
        if k == key {
            return Some(v);
        }
    }
    None
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    // Go rejects a '%' not followed by two hex digits; percent-encoding would pass it through.
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return None;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// An object as kube-apiserver's JSON serializer writes it (apimachinery
/// `serializer/json`): compact with a closing `\n` (`json.Encoder.Encode`), or pretty —
/// two-space indent, no closing newline (`json.MarshalIndent`) — when [`wants_pretty`]; with
/// Go's HTML-safe escaping either way (`<`, `>`, `&`, U+2028, U+2029).
pub fn encode_json<T: serde::Serialize + ?Sized>(
    value: &T,
    pretty: bool,
) -> serde_json::Result<Vec<u8>> {
    let raw = if pretty {
        serde_json::to_vec_pretty(value)?
    } else {
        serde_json::to_vec(value)?
    };
    let mut out = go_escape_json(&raw);
    if !pretty {
        out.push(b'\n');
    }
    Ok(out)
}

/// An object as kube-apiserver's `WriteRawJSON` writes it (`/version`): always indented, no
/// closing newline, whatever the request asked.
pub fn raw_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    encode_json(value, true)
}

/// Go's `encoding/json` HTML-safe escaping applied to serde_json output. Inside JSON text these
/// characters can only occur within strings, so a byte-level rewrite is exact.
fn go_escape_json(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            0xE2 if raw.get(i + 1) == Some(&0x80)
                && matches!(raw.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                let tail = if raw[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                };
                out.extend_from_slice(tail);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A plain-text error as Go's `http.Error` writes it: `Content-Type: text/plain; charset=utf-8`,
/// `X-Content-Type-Options: nosniff`. `body` should end in `\n`.
pub fn plain_text_response<B: From<Bytes>>(code: StatusCode, body: String) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from(body)));
    *res.status_mut() = code;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    res
}

/// `404 page not found\n` (Go `http.NotFound`, the end of kube-apiserver's delegation chain).
pub fn not_found_text<B: From<Bytes>>() -> Response<B> {
    plain_text_response(StatusCode::NOT_FOUND, "404 page not found\n".to_owned())
}

/// kube-apiserver's `InternalError` responder: `Internal Server Error: "<uri>": <err>\n`, the
/// request URI Go-quoted, and the whole message (the error's text too) HTML-sanitised, so no
/// part of it reads as markup (apiserver `responsewriters/errors.go`:
/// `sanitizer.Replace(fmt.Sprintf("Internal Server Error: %q: %v", …))`).
pub fn internal_error_text<B: From<Bytes>>(request_uri: &str, err: &str) -> Response<B> {
    plain_text_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        internal_error_body(request_uri, err),
    )
}

fn internal_error_body(request_uri: &str, err: &str) -> String {
    let message = format!("Internal Server Error: {}: {err}", go_quote(request_uri));
    // Go's `strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")`: one pass, so the
    // `&` of an inserted entity is not replaced again.
    let mut body = String::with_capacity(message.len() + 1);
    for c in message.chars() {
        match c {
            '&' => body.push_str("&amp;"),
            '<' => body.push_str("&lt;"),
            '>' => body.push_str("&gt;"),
            c => body.push(c),
        }
    }
    body.push('\n');
    body
}

/// The answer of kube-apiserver's proxy handler (apimachinery `UpgradeAwareHandler`) to a GET
/// or HEAD whose proxied location is empty: `301 Moved Permanently` to the request's path with
/// `/` appended and its query kept, and no body, so that relative links resolve below the
/// prefix (spec vector V5.5). `path` is the path the client asked for; other methods are
/// forwarded instead.
pub fn redirect_to_slash<B: From<Bytes>>(path: &str, query: Option<&str>) -> Response<B> {
    let location = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    };
    let mut res = Response::new(B::from(Bytes::new()));
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    let h = res.headers_mut();
    // A URI's path and query are visible ASCII, always a valid header value: the check only
    // keeps a caller's malformed input from panicking.
    if let Ok(location) = HeaderValue::from_str(&location) {
        h.insert(LOCATION, location);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    res
}

/// `Too many requests, please try again later.\n` with `Retry-After` (APF / max-in-flight).
pub fn too_many_requests_text<B: From<Bytes>>(retry_after_seconds: u32) -> Response<B> {
    let mut res = plain_text_response(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests, please try again later.\n".to_owned(),
    );
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    res
}

/// Go's `strconv.Quote` (what `%q` prints) for valid UTF-8.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn compact(s: &Status) -> String {
        String::from_utf8(s.to_json(false)).unwrap()
    }

    // V4.1 TestForbidden. The test passes user "NAME"; the authorizer sentence is built by
    // kubegate-authz, so here it is given verbatim.
    #[test]
    fn v4_1_test_forbidden() {
        let cases = [
            (
                "non-resource",
                Status::forbidden("", "", "", "User \"NAME\" cannot GET path \"/whatever\""),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"NAME\" cannot GET path \"/whatever\"","reason":"Forbidden","details":{},"code":403}"#,
            ),
            (
                "non-resource <script>",
                Status::forbidden(
                    "",
                    "",
                    "",
                    "User \"NAME\" cannot GET path \"/&lt;script&gt;\"",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"NAME\" cannot GET path \"/\u0026lt;script\u0026gt;\"","reason":"Forbidden","details":{},"code":403}"#,
            ),
            (
                "resource cluster scope",
                Status::forbidden(
                    "",
                    "pod",
                    "",
                    "User \"NAME\" cannot get resource \"pod\" in API group \"\" at the cluster scope",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pod is forbidden: User \"NAME\" cannot get resource \"pod\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"kind":"pod"},"code":403}"#,
            ),
            (
                "resource with name",
                Status::forbidden(
                    "",
                    "pod",
                    "mypod",
                    "User \"NAME\" cannot get resource \"pod\" in API group \"\" at the cluster scope",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pod \"mypod\" is forbidden: User \"NAME\" cannot get resource \"pod\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"name":"mypod","kind":"pod"},"code":403}"#,
            ),
            (
                "group subresource namespace",
                Status::forbidden(
                    "v2",
                    "pod",
                    "",
                    "User \"NAME\" cannot get resource \"pod/quota\" in API group \"v2\" in the namespace \"test\"",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pod.v2 is forbidden: User \"NAME\" cannot get resource \"pod/quota\" in API group \"v2\" in the namespace \"test\"","reason":"Forbidden","details":{"group":"v2","kind":"pod"},"code":403}"#,
            ),
        ];
        for (name, status, want) in cases {
            assert_eq!(compact(&status), format!("{want}\n"), "{name}");
            // The same Status in protobuf, read back by the testkit's decoder.
            if status.type_meta {
                let json: serde_json::Value = serde_json::from_str(want).unwrap();
                let proto = kubegate_testkit::decode_protobuf(&status.to_protobuf()).unwrap();
                for field in ["kind", "apiVersion", "status", "message", "reason", "code"] {
                    assert_eq!(proto.get(field), json.get(field), "{name}: {field}");
                }
            }
        }
    }

    // V4.2 TestErrors.
    #[test]
    fn v4_2_test_errors_internal_error_text() {
        let cases = [
            ("/get", "ARGH", "Internal Server Error: \"/get\": ARGH\n"),
            (
                "/<script>",
                "ARGH",
                "Internal Server Error: \"/&lt;script&gt;\": ARGH\n",
            ),
            // kube sanitizes the whole formatted message, the error's text included
            // (responsewriters/errors.go InternalError: `sanitizer.Replace(fmt.Sprintf(…))`).
            (
                "/api?a=1&b=2",
                "bad <b>thing</b> & more",
                "Internal Server Error: \"/api?a=1&amp;b=2\": bad &lt;b&gt;thing&lt;/b&gt; &amp; more\n",
            ),
        ];
        for (uri, err, want) in cases {
            assert_eq!(internal_error_body(uri, err), want, "{uri}");
        }
    }

    /// V4.3's 401 in protobuf, field by field as generated.pb.go writes it: the envelope's
    /// TypeMeta, then ListMeta's three empty strings, status, message, reason, code.
    #[test]
    fn status_in_protobuf_byte_for_byte() {
        let want = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Status\x12\x30\x0a\x06\x0a\x00\x12\x00\x1a\x00\x12\x07Failure\x1a\x0cUnauthorized\x22\x0cUnauthorized\x30\x91\x03\x1a\x00\x22\x00";
        assert_eq!(Status::unauthorized().to_protobuf(), want);
        // Details: name, group, kind, (no causes), retryAfterSeconds and uid always written.
        let body = Status::not_found("apps", "deployments", "web").to_protobuf();
        let details = b"\x2a\x1c\x0a\x03web\x12\x04apps\x1a\x0bdeployments\x28\x00\x32\x00";
        let code = b"\x30\x94\x03";
        let tail = [&details[..], code, b"\x1a\x00\x22\x00"].concat();
        assert!(body.ends_with(&tail), "{body:x?}");
        // A cause: type (reason), message, field.
        let body = Status::internal_error("boom").to_protobuf();
        assert!(
            body.windows(12)
                .any(|w| w == b"\x22\x0a\x0a\x00\x12\x04boom\x1a\x00"),
            "{body:x?}"
        );
    }

    /// (case, Accept, User-Agent, the format)
    type FormatCase = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        StatusFormat,
    );

    /// Which format a request gets: kube's negotiation over the first `Accept`, in goautoneg's
    /// order, then `isPrettyPrint` for JSON.
    #[test]
    fn status_format_is_negotiated_as_kube_does() {
        const PB: &str = "application/vnd.kubernetes.protobuf";
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let cases: [FormatCase; 10] = [
            ("no Accept", None, None, StatusFormat::Json),
            ("kubectl get", Some(kubectl), None, StatusFormat::Json),
            ("curl", None, Some("curl/8.5.0"), StatusFormat::PrettyJson),
            (
                "client-go protobuf",
                Some("application/vnd.kubernetes.protobuf, */*"),
                None,
                StatusFormat::Protobuf,
            ),
            (
                "protobuf only",
                Some(PB),
                Some("curl/8.5.0"),
                StatusFormat::Protobuf,
            ),
            (
                "a concrete type before */*",
                Some("*/*, application/vnd.kubernetes.protobuf"),
                None,
                StatusFormat::Protobuf,
            ),
            (
                "JSON first",
                Some("application/json, application/vnd.kubernetes.protobuf"),
                None,
                StatusFormat::Json,
            ),
            (
                "a protobuf Table cannot hold a Status",
                Some(
                    "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
                ),
                None,
                StatusFormat::Json,
            ),
            (
                "q decides first",
                Some("application/json;q=0.5, application/vnd.kubernetes.protobuf"),
                None,
                StatusFormat::Protobuf,
            ),
            (
                "YAML first is answered in JSON",
                Some("application/yaml, application/vnd.kubernetes.protobuf"),
                None,
                StatusFormat::Json,
            ),
        ];
        let uri: Uri = "/api/v1/pods".parse().unwrap();
        for (name, accept, ua, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(a) = accept {
                h.insert(http::header::ACCEPT, HeaderValue::from_str(a).unwrap());
            }
            if let Some(ua) = ua {
                h.insert(USER_AGENT, HeaderValue::from_str(ua).unwrap());
            }
            assert_eq!(StatusFormat::for_request(&uri, &h), want, "{name}");
        }
        // Only the first Accept header counts, as Go's Header.Get reads it.
        let mut h = HeaderMap::new();
        h.append(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        h.append(http::header::ACCEPT, HeaderValue::from_static(PB));
        assert_eq!(StatusFormat::for_request(&uri, &h), StatusFormat::Json);
        // A protobuf response says so; a raw timeout Status stays JSON.
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static(PB));
        let res: Response<Full<Bytes>> = Status::unauthorized().response_for(&uri, &h);
        assert_eq!(res.headers()[CONTENT_TYPE], PB);
        let res: Response<Full<Bytes>> = Status::request_timeout().response_for(&uri, &h);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    }

    // V4.3 other bodies.
    #[test]
    fn v4_3_other_bodies() {
        let cases = [
            (
                "401",
                Status::unauthorized(),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
            ),
            (
                "403 list pods as anonymous",
                Status::forbidden(
                    "",
                    "pods",
                    "",
                    "User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#,
            ),
            (
                "403 cluster-scoped group resource",
                Status::forbidden(
                    "apps",
                    "deployments",
                    "",
                    "User \"jane\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope",
                ),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden: User \"jane\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope","reason":"Forbidden","details":{"group":"apps","kind":"deployments"},"code":403}"#,
            ),
            (
                "403 non-resource",
                Status::forbidden("", "", "", "User \"jane\" cannot get path \"/metrics\""),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"jane\" cannot get path \"/metrics\"","reason":"Forbidden","details":{},"code":403}"#,
            ),
            (
                "404 object",
                Status::not_found("", "pods", "foo"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"foo\" not found","reason":"NotFound","details":{"name":"foo","kind":"pods"},"code":404}"#,
            ),
            (
                "404 grouped object",
                Status::not_found("apps", "deployments", "web"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \"web\" not found","reason":"NotFound","details":{"name":"web","group":"apps","kind":"deployments"},"code":404}"#,
            ),
            (
                "429 Status form",
                Status::too_many_requests("msg", 10),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"msg","reason":"TooManyRequests","details":{"retryAfterSeconds":10},"code":429}"#,
            ),
            (
                "500 internal error",
                Status::internal_error("boom"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#,
            ),
            (
                "503 before mux complete",
                Status {
                    details: Some(StatusDetails {
                        retry_after_seconds: 5,
                        ..StatusDetails::default()
                    }),
                    ..Status::service_unavailable(
                        "the request has been made before all known HTTP paths have been installed, please try again",
                    )
                },
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the request has been made before all known HTTP paths have been installed, please try again","reason":"ServiceUnavailable","details":{"retryAfterSeconds":5},"code":503}"#,
            ),
            (
                "504 request timeout",
                Status::request_timeout(),
                r#"{"metadata":{},"status":"Failure","message":"Timeout: request did not complete within the allotted timeout","reason":"Timeout","details":{},"code":504}"#,
            ),
            (
                "500 invalid upgrade response 302",
                Status::failure(500, "invalid upgrade response: status code 302"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"invalid upgrade response: status code 302","code":500}"#,
            ),
            (
                "400 exec without upgrade",
                Status::bad_request("Upgrade request required"),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Upgrade request required","reason":"BadRequest","code":400}"#,
            ),
        ];
        for (name, status, want) in cases {
            assert_eq!(compact(&status), format!("{want}\n"), "{name}");
            // The two bodies V4.3 gives a `Retry-After` for carry it as a header too.
            let retry_after = match name {
                "429 Status form" => Some("10"),
                "503 before mux complete" => Some("5"),
                _ => None,
            };
            let res: Response<Bytes> = status.to_response(false);
            let header = res.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap());
            assert_eq!(header, retry_after, "{name}");
        }
    }

    /// kubernetes-edges §4.1, one row per constructor: message, reason, details (the resource
    /// as `kind`, names quoted as Go's `%q`), and `Retry-After` exactly when
    /// `details.retryAfterSeconds > 0`.
    #[test]
    fn edges_4_1_status_constructors() {
        #[rustfmt::skip]
        let cases = [
            (Status::unauthorized(),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#, None),
            (Status::forbidden("", "", "", "boom"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: boom","reason":"Forbidden","details":{},"code":403}"#, None),
            (Status::forbidden("apps", "deployments", "", "boom"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden: boom","reason":"Forbidden","details":{"group":"apps","kind":"deployments"},"code":403}"#, None),
            (Status::forbidden("", "pods", "a\"b\\c\td", "boom"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"a\\\"b\\\\c\\td\" is forbidden: boom","reason":"Forbidden","details":{"name":"a\"b\\c\td","kind":"pods"},"code":403}"#, None),
            (Status::not_found("", "pods", "x\ny"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\\ny\" not found","reason":"NotFound","details":{"name":"x\ny","kind":"pods"},"code":404}"#, None),
            (Status::already_exists("management.loft.sh", "ownedaccesskeys", "k1"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ownedaccesskeys.management.loft.sh \"k1\" already exists","reason":"AlreadyExists","details":{"name":"k1","group":"management.loft.sh","kind":"ownedaccesskeys"},"code":409}"#, None),
            (Status::conflict("", "configmaps", "cm", "the object has been modified; please apply your changes to the latest version and try again"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{"name":"cm","kind":"configmaps"},"code":409}"#, None),
            (Status::bad_request("bad"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"bad","reason":"BadRequest","code":400}"#, None),
            (Status::too_many_requests("slow down", 3),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"slow down","reason":"TooManyRequests","details":{"retryAfterSeconds":3},"code":429}"#, Some("3")),
            (Status::internal_error("boom"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#, None),
            (Status::service_unavailable("cluster \"a\" is not reachable"),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"cluster \"a\" is not reachable","reason":"ServiceUnavailable","code":503}"#, None),
            (Status::timeout("too slow", 0),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: too slow","reason":"Timeout","details":{},"code":504}"#, None),
            (Status::timeout("too slow", 7),
             r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: too slow","reason":"Timeout","details":{"retryAfterSeconds":7},"code":504}"#, Some("7")),
        ];
        for (status, want, retry_after) in cases {
            assert_eq!(compact(&status), format!("{want}\n"), "{want}");
            let res: Response<Bytes> = status.to_response(false);
            assert_eq!(res.status().as_u16(), status.code, "{want}");
            let header = res.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap());
            assert_eq!(header, retry_after, "{want}");
        }
    }

    #[test]
    fn v4_3_pretty_variant() {
        let want = "{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"Unauthorized\",\n  \"reason\": \"Unauthorized\",\n  \"code\": 401\n}";
        assert_eq!(
            String::from_utf8(Status::unauthorized().to_json(true)).unwrap(),
            want
        );
    }

    #[test]
    fn authz_forbidden_renders_identically() {
        let cases = [
            kubegate_authz::Forbidden {
                message: "pods \"p1\" is forbidden: User \"x\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\"".into(),
                name: "p1".into(),
                group: String::new(),
                kind: "pods".into(),
            },
            kubegate_authz::Forbidden {
                message: "forbidden: User \"a<b>&c\" cannot get path \"/x\u{2028}\"".into(),
                name: String::new(),
                group: String::new(),
                kind: String::new(),
            },
        ];
        for f in cases {
            assert_eq!(compact(&Status::from(f.clone())), f.status_json());
        }
    }

    #[test]
    fn go_escapes_line_separators() {
        let s = Status::bad_request("a\u{2028}b\u{2029}c<>&");
        assert!(compact(&s).contains(r#""a\u2028b\u2029c\u003c\u003e\u0026""#));
    }

    #[test]
    fn pretty_detection_like_is_pretty_print() {
        let h = |ua: &str| {
            let mut m = HeaderMap::new();
            m.insert(USER_AGENT, HeaderValue::from_str(ua).unwrap());
            m
        };
        let none = HeaderMap::new();
        let cases: [(&str, &HeaderMap, bool); 10] = [
            ("/api", &none, false),
            ("/api?pretty=true", &none, true),
            ("/api?pretty=1", &none, true),
            ("/api?pretty=yes", &none, false),
            ("/api?pretty", &none, false),
            ("/api?pretty=false", &h("curl/8.0"), false),
            ("/api", &h("curl/8.0"), true),
            ("/api", &h("Wget/1.21"), true),
            ("/api", &h("Mozilla/5.0 (X11)"), true),
            ("/api", &h("kubectl/v1.34.0"), false),
        ];
        for (uri, headers, want) in cases {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(wants_pretty(&uri, headers), want, "{uri} {headers:?}");
        }
    }

    #[test]
    fn response_headers() {
        let res: Response<Full<Bytes>> = Status::too_many_requests("msg", 10).to_response(false);
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[RETRY_AFTER], "10");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-cache, private");
        assert!(res.headers().get(NOSNIFF).is_none());
        let res: Response<Full<Bytes>> = Status::forbidden("", "pods", "", "x").to_response(false);
        assert_eq!(res.headers()[NOSNIFF], "nosniff");
        let res: Response<Full<Bytes>> = Status::unauthorized().to_response(false);
        assert!(res.headers().get(NOSNIFF).is_none());
        assert!(res.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn plain_text_bodies() {
        let res: Response<Full<Bytes>> = not_found_text();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(res.headers()[NOSNIFF], "nosniff");
        let res: Response<Full<Bytes>> = too_many_requests_text(1);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn invalid_is_new_invalid() {
        // kube-apiserver's answer to `POST …?dryRun=Some&fieldValidation=Loose`.
        let status = Status::invalid(
            "meta.k8s.io",
            "CreateOptions",
            "",
            &[
                FieldError::not_supported_list("dryRun", &["Some"], &["All"]),
                FieldError::not_supported(
                    "fieldValidation",
                    "Loose",
                    &["", "Ignore", "Strict", "Warn"],
                ),
            ],
        );
        assert_eq!(
            String::from_utf8(status.to_json(false)).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"CreateOptions.meta.k8s.io \"\" is invalid: [dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\", fieldValidation: Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"]","reason":"Invalid","details":{"group":"meta.k8s.io","kind":"CreateOptions","causes":[{"reason":"FieldValueNotSupported","message":"Unsupported value: []string{\"Some\"}: supported values: \"All\"","field":"dryRun"},{"reason":"FieldValueNotSupported","message":"Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"","field":"fieldValidation"}]},"code":422}
"#
        );
        let one = Status::invalid(
            "g.io",
            "Thing",
            "a\u{1}",
            &[
                FieldError::invalid("metadata.name", "a\u{1}", "bad"),
                FieldError::invalid("metadata.name", "a\u{1}", "bad"),
            ],
        );
        assert_eq!(
            one.message,
            r#"Thing.g.io "a\x01" is invalid: metadata.name: Invalid value: "a\x01": bad"#,
            "one error after repeats are dropped, Go quoting"
        );
        assert_eq!(one.details.unwrap().causes.len(), 2);
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}\u{7f}é"),
            "\"a\\\"b\\\\c\\n\\x01\\x7fé\""
        );
    }
}

/// The little of protobuf's wire format a Status needs.
mod proto {
    /// A message being written.
    #[derive(Default)]
    pub(super) struct Message(pub(super) Vec<u8>);

    impl Message {
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }

        /// A length-delimited field (string, bytes, message).
        pub(super) fn bytes(&mut self, field: u64, b: &[u8]) {
            self.varint(field << 3 | 2);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
        }

        pub(super) fn string(&mut self, field: u64, s: &str) {
            self.bytes(field, s.as_bytes());
        }

        /// A varint field; negative values as Go's `uint64(v)` casts them.
        pub(super) fn int(&mut self, field: u64, v: i64) {
            self.varint(field << 3);
            self.varint(v as u64);
        }
    }
}
