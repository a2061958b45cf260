//! Request plumbing for the management API: bounded bodies, content types, strict field
//! validation, JSON and Table responses.

use crate::service::RequestBody;
use std::borrow::Cow;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubegate_api::{GoObjectMeta, ListItem, ListItems};
use kubegate_proxy::{FieldError, ProxyBody, Status};
use serde::de::DeserializeOwned;

use super::discovery::ResourceInfo;
use crate::authn::Caller;
use crate::service::{Runtime, Shared, respond};

/// Largest request body the management API reads (kube-apiserver's limit is 3 MiB as well).
pub(super) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What a handler knows about the request.
pub(super) struct Ctx<'a> {
    /// Shared state.
    pub shared: &'a Shared,
    /// Current runtime.
    pub runtime: &'a Runtime,
    /// Who calls.
    pub caller: &'a Caller,
    /// The resource addressed.
    pub resource: &'static ResourceInfo,
    /// Object name (may be empty).
    pub name: String,
    /// Namespace (may be empty).
    pub namespace: String,
    /// Kubernetes verb.
    pub verb: String,
}

/// An object answered as kube-apiserver answers it (`WriteObjectNegotiated` with JSON):
/// compact with a closing newline, or pretty when the request asks (`?pretty`, curl's
/// User-Agent), Go's escaping, `Cache-Control: no-cache, private`.
pub(crate) fn json_response(
    code: StatusCode,
    body: &impl serde::Serialize,
    pretty: bool,
) -> Response<ProxyBody> {
    bytes_response(code, kubegate_proxy::status::encode_json(body, pretty))
}

/// An object as kube-apiserver's `WriteRawJSON` answers `/version`: indented, whatever the
/// request asked.
pub(crate) fn raw_json_response(
    code: StatusCode,
    body: &impl serde::Serialize,
) -> Response<ProxyBody> {
    bytes_response(code, kubegate_proxy::status::raw_json(body))
}

/// An object as Go's `json.Marshal` writes it (kube-openapi's handlers): compact, Go's
/// escaping, no closing newline.
pub(crate) fn marshalled_response(
    code: StatusCode,
    body: &impl serde::Serialize,
) -> Response<ProxyBody> {
    let bytes = kubegate_proxy::status::encode_json(body, false).map(|mut b| {
        b.pop();
        b
    });
    bytes_response(code, bytes)
}

fn bytes_response(code: StatusCode, bytes: serde_json::Result<Vec<u8>>) -> Response<ProxyBody> {
    match bytes {
        Ok(bytes) => {
            let mut res = Response::new(ProxyBody::from(Bytes::from(bytes)));
            *res.status_mut() = code;
            let headers = res.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache, private"),
            );
            res
        }
        Err(e) => Status::internal_error(&e.to_string()).to_response(false),
    }
}

/// Whether the request asks for pretty JSON (kube's `isPrettyPrint`).
pub(crate) fn pretty<B>(req: &Request<B>) -> bool {
    kubegate_proxy::status::wants_pretty(req.uri(), req.headers())
}

/// How to treat unknown fields (`fieldValidation`); kube-apiserver's default is `Warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// The values kube's `dryRun` option takes: `All`, the one kube knows, any number of times.
const DRY_RUN_VALUES: &[&str] = &["All"];

/// The `dryRun` values of a query (every occurrence, as kube's parameter codec reads a list).
fn dry_run_values<'a>(query: Option<&kubegate_routing::Query<'a>>) -> Vec<Cow<'a, str>> {
    query
        .into_iter()
        .flat_map(|q| q.pairs())
        .filter(|(key, _)| key == "dryRun")
        .map(|(_, value)| value)
        .collect()
}

/// kube's `ValidateDryRun`: every value must be one kube knows.
fn dry_run_error(values: &[Cow<'_, str>]) -> Option<FieldError> {
    values
        .iter()
        .any(|v| !DRY_RUN_VALUES.contains(&v.as_ref()))
        .then(|| {
            let values: Vec<&str> = values.iter().map(|v| v.as_ref()).collect();
            FieldError::not_supported_list("dryRun", &values, DRY_RUN_VALUES)
        })
}

/// kube's create options, from the query, checked as `ValidateCreateOptions` checks them
/// (before the body is read): a value kube does not know is a 422 naming `CreateOptions`.
struct CreateOptions {
    dry_run: bool,
    field_validation: FieldValidation,
}

fn create_options(req: &Request<RequestBody>) -> Result<CreateOptions, Box<Status>> {
    let query = req.uri().query().map(kubegate_routing::Query::new);
    let dry_run = dry_run_values(query.as_ref());
    let mut errors: Vec<FieldError> = dry_run_error(&dry_run).into_iter().collect();
    let field_validation = match query
        .as_ref()
        .and_then(|q| q.first("fieldValidation"))
        .as_deref()
    {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            errors.push(FieldError::not_supported(
                "fieldValidation",
                other,
                &["", "Ignore", "Strict", "Warn"],
            ));
            FieldValidation::Warn
        }
    };
    if !errors.is_empty() {
        return Err(Box::new(options_invalid("CreateOptions", &errors)));
    }
    Ok(CreateOptions {
        dry_run: !dry_run.is_empty(),
        field_validation,
    })
}

/// The 422 kube-apiserver answers for request options it does not accept.
fn options_invalid(kind: &str, errors: &[FieldError]) -> Status {
    Status::invalid("meta.k8s.io", kind, "", errors)
}

/// How much of an oversized body is read and discarded before answering 413, so a client that
/// is still sending sees the answer instead of a reset connection.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;

/// How long a request body the gateway reads itself (management objects, logins) may take to
/// arrive: a client that stops sending must not hold its connection and handler forever.
pub(crate) const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most [`MAX_BODY_BYTES`]; a larger body is drained (bounded in size and time) and
/// reported as too large.
async fn read_bounded(mut body: RequestBody) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen <= MAX_BODY_BYTES {
                    buf.extend_from_slice(&data);
                } else if seen > MAX_BODY_BYTES + DRAIN_BYTES {
                    break;
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(())) if seen <= MAX_BODY_BYTES => Ok(buf.freeze()),
        Ok(Ok(())) | Err(_) if seen > MAX_BODY_BYTES => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(e),
        _ => Err(BodyError::Read("timed out reading the request body".into())),
    }
}

/// A decoded request object plus the warnings to send back.
pub(super) struct Decoded<T> {
    /// The object.
    pub object: T,
    /// `Warning` header values (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
    /// `dryRun=All`: check everything, change nothing.
    pub dry_run: bool,
    /// Whether the answer is to be pretty JSON.
    pub pretty: bool,
}

/// Reads and decodes the body of a create request into `T`, as kube-apiserver would: JSON or
/// YAML by `Content-Type`, at most [`MAX_BODY_BYTES`], unknown fields refused under
/// `fieldValidation=Strict`.
pub(super) async fn decode<T: DeserializeOwned>(
    req: Request<RequestBody>,
    kind: &str,
) -> Result<Decoded<T>, Box<Response<ProxyBody>>> {
    let fail = |status: Status, req: &Request<()>| Box::new(respond_unit(&status, req));
    let options = match create_options(&req) {
        Ok(options) => options,
        Err(status) => return Err(Box::new(respond(&status, &req))),
    };
    let (head, bytes, yaml) = read_body(req, false).await?;
    let pretty = pretty(&head);
    let mut unknown = Vec::new();
    let result: Result<T, String> = if yaml {
        serde_saphyr::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                serde_ignored::deserialize(value, |path| unknown.push(field_path(&path)))
                    .map_err(|e| e.to_string())
            })
    } else {
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_ignored::deserialize(&mut de, |path| unknown.push(field_path(&path)))
            .map_err(|e| e.to_string())
    };
    let object = match result {
        Ok(object) => object,
        Err(e) => {
            return Err(fail(
                Status::bad_request(cannot_be_handled(kind, &e)),
                &head,
            ));
        }
    };
    let messages: Vec<String> = unknown
        .iter()
        .map(|path| format!("unknown field {path:?}"))
        .collect();
    match options.field_validation {
        FieldValidation::Strict if !messages.is_empty() => Err(fail(
            Status::bad_request(cannot_be_handled(
                kind,
                &format!("strict decoding error: {}", messages.join(", ")),
            )),
            &head,
        )),
        FieldValidation::Warn => Ok(Decoded {
            object,
            warnings: messages,
            dry_run: options.dry_run,
            pretty,
        }),
        _ => Ok(Decoded {
            object,
            warnings: Vec::new(),
            dry_run: options.dry_run,
            pretty,
        }),
    }
}

/// Reads a request's body as kube-apiserver would before decoding it: JSON or YAML by
/// `Content-Type` (else 415), at most [`MAX_BODY_BYTES`] (else 413). Gives back the request's
/// head (for answering in the format it negotiates), the body, and whether it is YAML. With
/// `optional` (a DELETE's options), an empty body is no body and its type is not looked at.
async fn read_body(
    req: Request<RequestBody>,
    optional: bool,
) -> Result<(Request<()>, Bytes, bool), Box<Response<ProxyBody>>> {
    let fail = |status: Status, req: &Request<()>| Box::new(respond_unit(&status, req));
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let yaml = match content_type.as_str() {
        "application/json" | "" | "*/*" => Some(false),
        "application/yaml" => Some(true),
        _ => None,
    };
    let unsupported = |head: &Request<()>| {
        fail(
            Status {
                code: 415,
                message: "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".to_string(),
                reason: "UnsupportedMediaType".into(),
                details: None,
                type_meta: true,
            },
            head,
        )
    };
    if yaml.is_none() && !optional {
        return Err(unsupported(&head));
    }
    let bytes = match read_bounded(body).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let status = Status {
                code: 413,
                // kube's `limitedReadBody`.
                message: format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
                reason: "RequestEntityTooLarge".into(),
                details: None,
                type_meta: true,
            };
            return Err(fail(status, &head));
        }
        Err(BodyError::Read(e)) => {
            return Err(fail(
                Status::bad_request(format!("error reading request body: {e}")),
                &head,
            ));
        }
    };
    match yaml {
        Some(yaml) => Ok((head, bytes, yaml)),
        None if bytes.is_empty() => Ok((head, bytes, false)),
        None => Err(unsupported(&head)),
    }
}

/// kube's delete options, as kube-apiserver's delete handler reads them: from a
/// `DeleteOptions` body when there is one (what client-go and `kubectl delete` send), else
/// from the query; checked as `ValidateDeleteOptions` checks `dryRun`.
pub(super) struct DeleteOptions {
    /// `dryRun=All`: check everything, change nothing.
    pub dry_run: bool,
    /// `preconditions.uid`: delete only the object of this UID.
    pub uid: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteOptionsBody {
    #[serde(default)]
    dry_run: Vec<String>,
    #[serde(default)]
    preconditions: Option<PreconditionsBody>,
}

#[derive(serde::Deserialize, Default)]
struct PreconditionsBody {
    #[serde(default)]
    uid: Option<String>,
}

/// Reads [`DeleteOptions`]; gives back the request's head to answer with.
pub(super) async fn delete_options(
    req: Request<RequestBody>,
) -> Result<(Request<()>, DeleteOptions), Box<Response<ProxyBody>>> {
    let fail = |status: Status, req: &Request<()>| Box::new(respond_unit(&status, req));
    let (head, bytes, yaml) = read_body(req, true).await?;
    let body: DeleteOptionsBody = if bytes.is_empty() {
        let query = head.uri().query().map(kubegate_routing::Query::new);
        let dry_run = dry_run_values(query.as_ref())
            .into_iter()
            .map(Cow::into_owned)
            .collect();
        DeleteOptionsBody {
            dry_run,
            preconditions: None,
        }
    } else {
        let decoded = if yaml {
            serde_saphyr::from_slice::<DeleteOptionsBody>(&bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<DeleteOptionsBody>(&bytes).map_err(|e| e.to_string())
        };
        match decoded {
            Ok(body) => body,
            Err(e) => {
                return Err(fail(
                    Status::bad_request(format!("the DeleteOptions could not be decoded: {e}")),
                    &head,
                ));
            }
        }
    };
    let values: Vec<Cow<'_, str>> = body
        .dry_run
        .iter()
        .map(|v| Cow::Borrowed(v.as_str()))
        .collect();
    if let Some(error) = dry_run_error(&values) {
        return Err(fail(options_invalid("DeleteOptions", &[error]), &head));
    }
    let options = DeleteOptions {
        dry_run: !body.dry_run.is_empty(),
        uid: body.preconditions.and_then(|p| p.uid),
    };
    Ok((head, options))
}

/// kube's `transformDecodeError` for a body decoded as `kind` (the endpoint's, which kube
/// gives the decoder as the default): `<Kind> in version "v1" cannot be handled as a <Kind>:
/// <why>`. The JSON parser's own words after it are serde's, not Go's.
fn cannot_be_handled(kind: &str, why: &str) -> String {
    format!("{kind} in version \"v1\" cannot be handled as a {kind}: {why}")
}

/// A field path as kube-apiserver prints it (`spec.foo`, `items[0].bar`): serde's `Option` and
/// newtype layers are invisible on the wire, so they are left out.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

pub(super) fn respond_unit(status: &Status, req: &Request<()>) -> Response<ProxyBody> {
    status.response_for(req.uri(), req.headers())
}

/// Adds `Warning: 299 - "<text>"` headers for `warnings`, as kube-apiserver's warning recorder
/// writes them (see [`warning_headers`]).
pub(super) fn with_warnings(
    mut res: Response<ProxyBody>,
    warnings: &[String],
) -> Response<ProxyBody> {
    for header in warning_headers(warnings, WARNING_TOTAL_RUNES, WARNING_ITEM_RUNES) {
        if let Ok(v) = http::HeaderValue::from_str(&header) {
            res.headers_mut().append(http::header::WARNING, v);
        }
    }
    res
}

/// kube-apiserver's bound on the text of a response's warnings, in characters (apiserver
/// `filters/warning.go`): past it, every warning is cut to [`WARNING_ITEM_RUNES`]...
const WARNING_TOTAL_RUNES: usize = 4 * 1024;
/// ...and the ones that no longer fit are left out.
const WARNING_ITEM_RUNES: usize = 256;

/// The `Warning` header values kube-apiserver's recorder ends up with after being handed
/// `texts` in order: empty and repeated texts are skipped, texts with control characters make
/// no header; once the texts exceed `total` characters, every one (those already written
/// included) is cut to `item` characters, and once the cut texts exceed `total` too, the rest
/// are dropped. So a body with a million unknown fields answers with a few KiB of warnings.
fn warning_headers(texts: &[String], total: usize, item: usize) -> Vec<String> {
    let header = |text: &str| {
        (!text.chars().any(char::is_control)).then(|| {
            format!(
                "299 - \"{}\"",
                text.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
    };
    fn cut(text: &str, item: usize) -> (&str, usize) {
        match text.char_indices().nth(item) {
            Some((at, _)) => (&text[..at], item),
            None => (text, text.chars().count()),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut ordered: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    let mut written = 0;
    let mut truncating = false;
    for text in texts.iter().map(String::as_str) {
        if truncating && written >= total {
            break;
        }
        if text.is_empty() || !seen.insert(text) {
            continue;
        }
        ordered.push(text);
        let (shown, runes) = if truncating {
            cut(text, item)
        } else {
            (text, text.chars().count())
        };
        let Some(h) = header(shown) else {
            continue;
        };
        if truncating || written + runes <= total {
            written += runes;
            out.push(h);
            continue;
        }
        // Over the bound: start again from the first, every text cut.
        truncating = true;
        written = 0;
        out.clear();
        for earlier in &ordered {
            let (shown, runes) = cut(earlier, item);
            if let Some(h) = header(shown) {
                written += runes;
                out.push(h);
            }
        }
    }
    out
}

/// Whether the client asked for a `meta.k8s.io/v1` Table (kubectl's human-readable `get`).
pub(super) fn wants_table(req: &Request<RequestBody>) -> bool {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|media| {
                let params: Vec<&str> = media.split(';').map(str::trim).collect();
                params.contains(&"as=Table")
                    && params.contains(&"g=meta.k8s.io")
                    && params.contains(&"v=v1")
            })
        })
}

/// A Unix timestamp as a Kubernetes timestamp.
pub(super) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Serves a list of objects as JSON, or as a Table when asked, with the request's label and
/// field selectors applied.
pub(super) fn list_or_table<T>(req: &Request<RequestBody>, items: &[T]) -> Response<ProxyBody>
where
    T: k8s_openapi::ListableResource + Metadata<Ty = ObjectMeta> + ListItem + Clone,
{
    let items = match selected(req, items) {
        Ok(items) => items,
        Err(status) => return status.response_for(req.uri(), req.headers()),
    };
    let items = &*items;
    if wants_table(req) {
        return json_response(StatusCode::OK, &Table::of(items), pretty(req));
    }
    let list = List {
        kind: T::LIST_KIND,
        api_version: T::API_VERSION,
        metadata: ListMeta {},
        items: ListItems(items),
    };
    json_response(StatusCode::OK, &list, pretty(req))
}

/// The items a list's `labelSelector` and `fieldSelector` select, as kube-apiserver's
/// registry selects them: either that does not parse is a 400 with the parser's words; field
/// selectors know `metadata.name` and `metadata.namespace`, as kube's default field label
/// conversion does, and any other field is its 400.
fn selected<'i, T>(
    req: &Request<RequestBody>,
    items: &'i [T],
) -> Result<std::borrow::Cow<'i, [T]>, Box<Status>>
where
    T: Metadata<Ty = ObjectMeta> + Clone,
{
    use kubegate_routing::selectors::{FieldSelector, LabelSelector};
    let Some(query) = req.uri().query().map(kubegate_routing::Query::new) else {
        return Ok(Cow::Borrowed(items));
    };
    let label = query.first("labelSelector").unwrap_or_default();
    let field = query.first("fieldSelector").unwrap_or_default();
    if label.is_empty() && field.is_empty() {
        return Ok(Cow::Borrowed(items));
    }
    let bad = |e: kubegate_routing::SelectorError| Box::new(Status::bad_request(e.to_string()));
    let labels = LabelSelector::parse(&label).map_err(bad)?;
    let fields = FieldSelector::parse(&field).map_err(bad)?;
    if let Some(unknown) = fields
        .requirements()
        .iter()
        .find(|r| !matches!(r.field, "metadata.name" | "metadata.namespace"))
    {
        // `DefaultMetaV1FieldSelectorConversion`'s words.
        return Err(Box::new(Status::bad_request(format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            kubegate_proxy::status::go_quote(unknown.field)
        ))));
    }
    Ok(Cow::Owned(
        items
            .iter()
            .filter(|item| {
                let meta = item.metadata();
                labels.matches(|key| {
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(key))
                        .map(String::as_str)
                }) && fields.matches(|f| match f {
                    "metadata.name" => meta.name.as_deref(),
                    "metadata.namespace" => meta.namespace.as_deref(),
                    _ => None,
                })
            })
            .cloned()
            .collect(),
    ))
}

/// A single object as JSON, or as a one-row Table when asked.
pub(super) fn object_or_table<T>(req: &Request<RequestBody>, object: &T) -> Response<ProxyBody>
where
    T: Metadata<Ty = ObjectMeta> + serde::Serialize,
{
    if wants_table(req) {
        return json_response(
            StatusCode::OK,
            &Table::of(std::slice::from_ref(object)),
            pretty(req),
        );
    }
    json_response(StatusCode::OK, object, pretty(req))
}

// The wire shapes below are written field by field in the order of their Go structs
// (`<Kind>List`, `metav1.Table`), as Loft's apiserver writes them: serde writes a struct's
// fields in declaration order, where a `serde_json::Value` map would sort them.

/// A `<Kind>List`; its items carry no `kind`/`apiVersion`, as in a Go server's typed lists.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase", bound(serialize = "T: ListItem"))]
struct List<'a, T: ListItem> {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    items: ListItems<'a, T>,
}

/// `metav1.ListMeta` with nothing set: the gateway's objects have no resource version, and
/// Go's `omitempty` leaves the empty string out.
#[derive(serde::Serialize)]
struct ListMeta {}

/// `meta.k8s.io/v1` `Table` with the default columns kube-apiserver's default table
/// convertor writes (name, creation time).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Table<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    column_definitions: [Column; 2],
    /// `null` for no rows: Go's nil slice, which the table convertor leaves when there are
    /// no items, has no `omitempty`.
    rows: Option<Vec<Row<'a>>>,
}

#[derive(serde::Serialize)]
struct Column {
    name: &'static str,
    #[serde(rename = "type")]
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

#[derive(serde::Serialize)]
struct Row<'a> {
    cells: (&'a str, CreatedAt<'a>),
    object: PartialObjectMetadata<'a>,
}

/// The "Created At" cell: the object's creation time, and Go's zero time for an object with
/// none, as the table convertor formats `GetCreationTimestamp()` whatever it holds.
struct CreatedAt<'a>(Option<&'a Time>);

impl serde::Serialize for CreatedAt<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(time) => time.serialize(serializer),
            None => serializer.serialize_str("0001-01-01T00:00:00Z"),
        }
    }
}

/// `metav1.ObjectMeta`'s field documentation (`SwaggerDoc()`), which the table convertor
/// gives its columns.
const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PartialObjectMetadata<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: GoObjectMeta<'a>,
}

impl<'a> Table<'a> {
    fn of<T: Metadata<Ty = ObjectMeta>>(items: &'a [T]) -> Self {
        let rows = items
            .iter()
            .map(|item| {
                let metadata = item.metadata();
                Row {
                    cells: (
                        metadata.name.as_deref().unwrap_or_default(),
                        CreatedAt(metadata.creation_timestamp.as_ref()),
                    ),
                    object: PartialObjectMetadata {
                        kind: "PartialObjectMetadata",
                        api_version: "meta.k8s.io/v1",
                        // The gateway's objects carry no managedFields, which tables leave out.
                        metadata: GoObjectMeta(metadata),
                    },
                }
            })
            .collect::<Vec<_>>();
        Table {
            kind: "Table",
            api_version: "meta.k8s.io/v1",
            metadata: ListMeta {},
            column_definitions: [
                Column {
                    name: "Name",
                    type_: "string",
                    format: "name",
                    description: NAME_DESCRIPTION,
                    priority: 0,
                },
                Column {
                    name: "Created At",
                    type_: "date",
                    format: "",
                    description: CREATION_TIMESTAMP_DESCRIPTION,
                    priority: 0,
                },
            ],
            rows: (!rows.is_empty()).then_some(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // apiserver's TestTruncation (filters/warning_test.go), bounds 25 and 5.
    #[test]
    fn warnings_are_deduplicated_and_truncated_as_kube_does() {
        let add = |texts: &[&str]| -> Vec<String> {
            let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
            warning_headers(&texts, 25, 5)
        };
        let first = ["aaaaaaaaaa", "aaaaaaaaaa", "bb", "ccc", "Iñtërnâtiô"];
        assert_eq!(
            add(&first),
            [
                "299 - \"aaaaaaaaaa\"",
                "299 - \"bb\"",
                "299 - \"ccc\"",
                "299 - \"Iñtërnâtiô\""
            ]
        );
        let all = [
            &first[..],
            &["e", "ffffffffff", "ffffffffff", "gggggggggg", "h"],
        ]
        .concat();
        assert_eq!(
            add(&all),
            [
                "299 - \"aaaaa\"",
                "299 - \"bb\"",
                "299 - \"ccc\"",
                "299 - \"Iñtër\"",
                "299 - \"e\"",
                "299 - \"fffff\"",
                "299 - \"ggggg\""
            ]
        );
        // Quotes and backslashes escaped; control characters make no header; empty skipped.
        assert_eq!(add(&["a\"b\\c", "my\ntext", ""]), ["299 - \"a\\\"b\\\\c\""]);
    }

    #[test]
    fn a_million_unknown_fields_answer_with_a_few_kib_of_warnings() {
        let texts: Vec<String> = (0..1_000_000)
            .map(|i| format!("unknown field \"f{i}\""))
            .collect();
        let headers = warning_headers(&texts, WARNING_TOTAL_RUNES, WARNING_ITEM_RUNES);
        let bytes: usize = headers.iter().map(String::len).sum();
        assert!(
            bytes < 16 * 1024,
            "{bytes} bytes in {} headers",
            headers.len()
        );
        assert_eq!(headers[0], "299 - \"unknown field \\\"f0\\\"\"");
    }
}
