//! Resource requests: CRUD, list (limit/continue, selectors, Table), watch, pod exec.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::authz::{Attributes, Decision};
use crate::body::{self, Body};
use crate::identity::UserInfo;
use crate::negotiate::{self, Output};
use crate::patch;
use crate::protobuf_encode;
use crate::request::{Query, RequestInfo};
use crate::resources::{self, PODS, RESOURCES, ResourceDef};
use crate::selector::Selector;
use crate::server::Shared;
use crate::status::Status;
use crate::store::StoredObject;
use crate::table::{self, IncludeObject, TABLE_CONTENT_TYPE};
use crate::watch::{self, WatchParams};

/// Largest request body accepted (kube-apiserver's default is 3 MiB; tests seed bigger).
const MAX_BODY: usize = 64 << 20;
/// Bytes per chunk when streaming a list.
const LIST_CHUNK: usize = 256 << 10;

pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) info: &'a RequestInfo,
    /// The user the request runs as (after impersonation).
    pub(crate) user: &'a UserInfo,
    pub(crate) query: &'a Query,
    pub(crate) pretty: bool,
    /// The request's `Accept`, negotiated once the resource is known.
    pub(crate) accept: Option<&'a str>,
    /// The negotiated output is a JSON Table (with what its rows carry)...
    pub(crate) table: Option<IncludeObject>,
    /// ...or Kubernetes protobuf. Before the resource is negotiated: whether a Status is
    /// written in protobuf.
    pub(crate) protobuf: bool,
}

impl Ctx<'_> {
    fn error(&self, s: &Status) -> Response<Body> {
        body::status_as_negotiated(s, self.pretty, self.protobuf)
    }

    /// An object in the negotiated encoding (JSON as stored, or protobuf).
    fn object(&self, code: StatusCode, obj: &StoredObject) -> Response<Body> {
        if self.protobuf {
            body::protobuf(code, protobuf_encode::encode_object(&obj.value))
        } else {
            body::json(code, obj.json.clone())
        }
    }

    /// An object built here (a Success Status) in the negotiated encoding.
    fn value(&self, code: StatusCode, v: &Value) -> Response<Body> {
        if self.protobuf {
            body::protobuf(code, protobuf_encode::encode_object(v))
        } else {
            body::json(code, serde_json::to_vec(v).unwrap_or_default())
        }
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }
}

/// A `<Kind>List` of `items` in protobuf.
fn protobuf_list<'v>(
    def: &ResourceDef,
    meta: &Value,
    items: impl IntoIterator<Item = &'v Value>,
) -> Response<Body> {
    let bytes = protobuf_encode::encode_list(&def.api_version(), def.kind, meta, items);
    body::protobuf(StatusCode::OK, bytes)
}

async fn read_json(req: Request<Incoming>) -> Result<(Value, String), Status> {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Status::bad_request(format!("failed to read the request body: {e}")))?
        .to_bytes();
    let value = if content_type == crate::protobuf::PROTOBUF {
        crate::protobuf::decode(&bytes).map_err(|e| match e {
            crate::protobuf::Unsupported::Malformed(m) => Status::bad_request(m),
            crate::protobuf::Unsupported::Kind(k) => Status::unsupported_media_type(
                &format!(
                    "{} (no protobuf decoder for {k})",
                    crate::protobuf::PROTOBUF
                ),
                "application/json",
            ),
        })?
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::bad_request(format!("error decoding the request body: {e}")))?
    };
    Ok((value, content_type))
}

/// Serves a resource request that was already authenticated and authorized.
pub(crate) async fn serve(ctx: &Ctx<'_>, req: Request<Incoming>) -> Response<Body> {
    let p = &ctx.info.path;
    if p.group == "authorization.k8s.io" && p.resource == "selfsubjectaccessreviews" {
        if ctx.info.verb != "create" {
            return ctx.error(&Status::method_not_supported(
                &p.group,
                &p.resource,
                &ctx.info.verb,
            ));
        }
        return match read_json(req).await {
            Ok((review, _)) => self_subject_access_review(ctx, review),
            Err(e) => ctx.error(&e),
        };
    }
    let Some(res) = resources::find(&p.group, &p.version, &p.resource) else {
        return ctx.error(&Status::path_not_found());
    };
    let def = &RESOURCES[res];
    if !def.namespaced && !p.namespace.is_empty() && p.resource != "namespaces" {
        return ctx.error(&Status::path_not_found());
    }
    let include = IncludeObject::parse(ctx.query.get("includeObject"));
    let custom = def.group.contains('.') && !def.group.ends_with(".k8s.io");
    let output = match negotiate::output(
        ctx.accept,
        include,
        protobuf_encode::encodes(def.kind),
        custom,
    ) {
        Ok(o) => o,
        // A failed negotiation is answered in JSON (kube's `WriteRawJSON`).
        Err(status) => return body::status(&status, ctx.pretty),
    };
    let ctx = &Ctx {
        table: match output {
            Output::Table(include) => Some(include),
            _ => None,
        },
        protobuf: output == Output::Protobuf,
        ..*ctx
    };
    // `/api/v1/namespaces/<name>` addresses the namespace itself, not a namespace scope.
    let ns = if def.namespaced {
        p.namespace.as_str()
    } else {
        ""
    };
    if !p.subresource.is_empty() {
        // attach talks to the same fake process as exec (it prints its line and ends).
        if res == PODS && matches!(p.subresource.as_str(), "exec" | "attach") {
            return exec(ctx, req, ns).await;
        }
        if res == PODS && p.subresource == "portforward" {
            let name = &ctx.info.path.name;
            if ctx.shared.store.get(PODS, ns, name).is_none() {
                return ctx.error(&Status::not_found("", "pods", name));
            }
            return crate::exec::portforward(req);
        }
        if res == PODS && p.subresource == "log" && ctx.info.verb == "get" {
            return log(ctx, ns);
        }
        return ctx.error(&Status::path_not_found());
    }
    let verb = ctx.info.verb.as_str();
    if !def.verbs.contains(&verb) {
        let action = match *req.method() {
            Method::DELETE => "deletecollection",
            _ => verb,
        };
        return ctx.error(&Status::method_not_supported(def.group, def.plural, action));
    }
    let store = &ctx.shared.store;
    let result = match verb {
        "get" => store
            .get(res, ns, &p.name)
            .map(|o| object_or_table(ctx, res, &o))
            .ok_or_else(|| Status::not_found(def.group, def.plural, &p.name)),
        "list" => list(ctx, res, ns),
        "watch" => watch(ctx, res, ns),
        "create" => match read_json(req).await {
            Ok((v, _)) => store
                .create(res, ns, v, ctx.dry_run())
                .map(|o| ctx.object(StatusCode::CREATED, &o)),
            Err(e) => Err(e),
        },
        "update" => match read_json(req).await {
            Ok((v, _)) => store
                .update(res, ns, &p.name, v, ctx.dry_run())
                .map(|o| ctx.object(StatusCode::OK, &o)),
            Err(e) => Err(e),
        },
        "patch" => match read_json(req).await {
            Ok((v, ct)) => patch_object(ctx, res, ns, v, &ct),
            Err(e) => Err(e),
        },
        "delete" => store
            .delete(res, ns, &p.name, ctx.dry_run())
            .map(|o| deleted(ctx, def, &o)),
        "deletecollection" => delete_collection(ctx, res, ns),
        _ => Err(Status::method_not_supported(def.group, def.plural, verb)),
    };
    result.unwrap_or_else(|e| ctx.error(&e))
}

fn object_or_table(ctx: &Ctx<'_>, res: usize, o: &Arc<StoredObject>) -> Response<Body> {
    match ctx.table {
        None => ctx.object(StatusCode::OK, o),
        Some(include) => {
            let meta = json!({"resourceVersion": o.value["metadata"]["resourceVersion"]});
            let t = table::table(res, std::slice::from_ref(o), include, &meta, true);
            let bytes = serde_json::to_vec(&t).unwrap_or_default();
            body::response(StatusCode::OK, TABLE_CONTENT_TYPE, body::full(bytes))
        }
    }
}

/// Resources whose DELETE answers with a `Success` Status (no graceful deletion) rather than
/// the object (kube's `ReturnDeletedObject`).
fn deleted(ctx: &Ctx<'_>, def: &ResourceDef, o: &StoredObject) -> Response<Body> {
    if matches!(def.plural, "configmaps" | "secrets") {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": o.name(), "kind": def.plural, "uid": o.value["metadata"]["uid"]},
        });
        ctx.value(StatusCode::OK, &status)
    } else {
        ctx.object(StatusCode::OK, o)
    }
}

fn selector(ctx: &Ctx<'_>) -> Result<Selector, Status> {
    Selector::parse(
        ctx.query.get("fieldSelector"),
        ctx.query.get("labelSelector"),
    )
}

fn list(ctx: &Ctx<'_>, res: usize, ns: &str) -> Result<Response<Body>, Status> {
    let def = &RESOURCES[res];
    let sel = selector(ctx)?;
    let (rv, all) = ctx.shared.store.list(res, (!ns.is_empty()).then_some(ns));
    let mut items: Vec<Arc<StoredObject>> = all.into_iter().filter(|o| sel.matches(o)).collect();
    // `continue` is the last returned key; the list is re-read from current state, not from a
    // snapshot at the first page's resourceVersion.
    if let Some(token) = ctx.query.get("continue").filter(|t| !t.is_empty()) {
        let decoded = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::bad_request("continue key is not valid: illegal base64 data"))?;
        let (cns, cname) = decoded.split_once('/').unwrap_or(("", decoded.as_str()));
        items.retain(|o| (o.namespace(), o.name()) > (cns, cname));
    }
    let limit = match ctx.query.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| {
            Status::bad_request(format!(
                "invalid limit {l:?}: must be a non-negative integer"
            ))
        })?,
        None => 0,
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        if let Some(last) = items.last() {
            let key = format!("{}/{}", last.namespace(), last.name());
            meta["continue"] = json!(URL_SAFE_NO_PAD.encode(key));
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    if let Some(include) = ctx.table {
        let t = table::table(res, &items, include, &meta, true);
        let bytes = serde_json::to_vec(&t).unwrap_or_default();
        return Ok(body::response(
            StatusCode::OK,
            TABLE_CONTENT_TYPE,
            body::full(bytes),
        ));
    }
    if ctx.protobuf {
        return Ok(protobuf_list(def, &meta, items.iter().map(|o| &o.value)));
    }
    let head = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        def.kind,
        def.api_version(),
        meta
    );
    Ok(body::response(
        StatusCode::OK,
        "application/json",
        body::stream(list_chunks(head, items, Arc::clone(&ctx.shared.list_bytes))),
    ))
}

/// A list body as a stream of ~256 KiB chunks, serialised from the stored bytes as it goes.
fn list_chunks(
    head: String,
    items: Vec<Arc<StoredObject>>,
    produced: Arc<std::sync::atomic::AtomicU64>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    let mut items = items.into_iter().peekable();
    let mut head = Some(head);
    let mut done = false;
    futures_util::stream::poll_fn(move |_| {
        if done {
            return std::task::Poll::Ready(None);
        }
        let mut buf = BytesMut::with_capacity(LIST_CHUNK + 4096);
        if let Some(h) = head.take() {
            buf.put_slice(h.as_bytes());
        }
        while buf.len() < LIST_CHUNK {
            let Some(item) = items.next() else { break };
            buf.put_slice(&item.json);
            if items.peek().is_some() {
                buf.put_u8(b',');
            }
        }
        if items.peek().is_none() {
            buf.put_slice(b"]}");
            done = true;
        }
        produced.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        std::task::Poll::Ready(Some(buf.freeze()))
    })
}

fn watch(ctx: &Ctx<'_>, res: usize, ns: &str) -> Result<Response<Body>, Status> {
    let sel = selector(ctx)?;
    let rv = match ctx.query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| Status::bad_request(format!("invalid resource version {v:?}")))?,
        ),
    };
    // Initial events are the current state, whatever resourceVersion was given.
    let rv = if ctx.query.flag("sendInitialEvents") {
        None
    } else {
        rv
    };
    let timeout = match ctx.query.get("timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
            Status::bad_request(format!("invalid timeoutSeconds {t:?}"))
        })?)),
        None => None,
    };
    let start = match ctx.shared.store.watch(res, rv) {
        Ok(s) => s,
        // A too-old resourceVersion is reported in-stream, as kube-apiserver does.
        Err(status) => {
            let (content_type, event) = if ctx.protobuf {
                let frame = protobuf_encode::encode_watch_frame("ERROR", &status.to_value());
                (negotiate::PROTOBUF_WATCH, frame)
            } else {
                let mut v =
                    serde_json::to_vec(&json!({"type": "ERROR", "object": status.to_value()}))
                        .unwrap_or_default();
                v.push(b'\n');
                ("application/json", v)
            };
            return Ok(body::response(
                StatusCode::OK,
                content_type,
                body::full(event),
            ));
        }
    };
    let params = WatchParams {
        resource: res,
        namespace: (!ns.is_empty()).then(|| ns.to_owned()),
        selector: sel,
        table: ctx.table,
        protobuf: ctx.protobuf,
        timeout,
        bookmarks: ctx.query.flag("allowWatchBookmarks"),
        initial_events_end: ctx.query.flag("sendInitialEvents"),
        shutdown: ctx.shared.shutdown.clone(),
    };
    let content_type = if ctx.table.is_some() {
        TABLE_CONTENT_TYPE
    } else if ctx.protobuf {
        negotiate::PROTOBUF_WATCH
    } else {
        "application/json"
    };
    Ok(body::response(
        StatusCode::OK,
        content_type,
        watch::body(start, params),
    ))
}

fn patch_object(
    ctx: &Ctx<'_>,
    res: usize,
    ns: &str,
    patch_body: Value,
    content_type: &str,
) -> Result<Response<Body>, Status> {
    let name = &ctx.info.path.name;
    let store = &ctx.shared.store;
    let kind = patch::PatchKind::from_content_type(content_type)
        .ok_or_else(|| {
            Status::unsupported_media_type(
                content_type,
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        })?;
    if kind == patch::PatchKind::Apply && store.get(res, ns, name).is_none() {
        // Server-side apply of a missing object creates it.
        let mut obj = patch_body;
        obj["metadata"]["name"] = json!(name);
        return store
            .create(res, ns, obj, ctx.dry_run())
            .map(|o| ctx.object(StatusCode::CREATED, &o));
    }
    store
        .modify(res, ns, name, ctx.dry_run(), |current| {
            patch::apply(kind, current, &patch_body)
        })
        .map(|o| ctx.object(StatusCode::OK, &o))
}

fn delete_collection(ctx: &Ctx<'_>, res: usize, ns: &str) -> Result<Response<Body>, Status> {
    let def = &RESOURCES[res];
    let sel = selector(ctx)?;
    let (_, items) = ctx.shared.store.list(res, (!ns.is_empty()).then_some(ns));
    let mut deleted = Vec::new();
    for o in items.iter().filter(|o| sel.matches(o)) {
        // Racing deletes are fine: whatever is already gone is skipped.
        if let Ok(d) = ctx
            .shared
            .store
            .delete(res, o.namespace(), o.name(), ctx.dry_run())
        {
            deleted.push(d.value.clone());
        }
    }
    let meta = json!({"resourceVersion": ctx.shared.store.resource_version().to_string()});
    if ctx.protobuf {
        return Ok(protobuf_list(def, &meta, &deleted));
    }
    let list = json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": meta,
        "items": deleted,
    });
    Ok(body::json(
        StatusCode::OK,
        serde_json::to_vec(&list).unwrap_or_default(),
    ))
}

/// `kubectl auth can-i`: decides the review's attributes for the requesting user with the
/// server's authorizer chain.
fn self_subject_access_review(ctx: &Ctx<'_>, mut review: Value) -> Response<Body> {
    let spec = review["spec"].clone();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (ra, nra) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let resource_request = ra.is_object();
    let src = if resource_request { ra } else { nra };
    let (verb, path, group, version) = (
        s(src, "verb"),
        s(nra, "path"),
        s(ra, "group"),
        s(ra, "version"),
    );
    let (resource, sub, ns, name) = (
        s(ra, "resource"),
        s(ra, "subresource"),
        s(ra, "namespace"),
        s(ra, "name"),
    );
    let attrs = Attributes {
        user: ctx.user,
        verb: &verb,
        resource_request,
        path: &path,
        api_group: &group,
        api_version: &version,
        resource: &resource,
        subresource: &sub,
        namespace: &ns,
        name: &name,
    };
    let status = match ctx.shared.authz.authorize(&attrs) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(r) => json!({"allowed": false, "denied": true, "reason": r}),
        Decision::NoOpinion(r) if r.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(r) => json!({"allowed": false, "reason": r}),
    };
    review["kind"] = json!("SelfSubjectAccessReview");
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["status"] = status;
    body::json(
        StatusCode::CREATED,
        serde_json::to_vec(&review).unwrap_or_default(),
    )
}

/// The log every pod has (`kubectl logs`): three fixed lines naming the pod.
pub fn pod_log_lines(pod: &str) -> String {
    (1..=3)
        .map(|i| format!("kubegate-testkit log line {i} from {pod}\n"))
        .collect()
}

/// `pods/<name>/log`: three fixed lines; with `follow=true` the stream then stays open until
/// the client goes away or the server stops (a long-running request, like a real follow).
fn log(ctx: &Ctx<'_>, ns: &str) -> Response<Body> {
    let name = &ctx.info.path.name;
    let Some(pod) = ctx.shared.store.get(PODS, ns, name) else {
        return ctx.error(&Status::not_found("", "pods", name));
    };
    if let Err(status) = container(ctx, &pod, name) {
        return ctx.error(&status);
    }
    let lines = Bytes::from(pod_log_lines(name));
    if !ctx.query.flag("follow") {
        return body::response(StatusCode::OK, "text/plain", body::full(lines));
    }
    let mut shutdown = ctx.shared.shutdown.clone();
    let tail = futures_util::stream::once(async move {
        // Nothing more is ever logged: hold the stream open until shutdown.
        let _ = shutdown.wait_for(|stop| *stop).await;
        Bytes::new()
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([lines]), tail);
    body::response(StatusCode::OK, "text/plain", body::stream(stream))
}

fn container(ctx: &Ctx<'_>, pod: &StoredObject, name: &str) -> Result<(), Status> {
    let containers: Vec<&str> = pod.value["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    match ctx.query.get("container") {
        Some(c) if !containers.contains(&c) => Err(Status::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() != 1 => Err(Status::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: {containers:?}"
        ))),
        _ => Ok(()),
    }
}

async fn exec(ctx: &Ctx<'_>, req: Request<Incoming>, ns: &str) -> Response<Body> {
    let name = &ctx.info.path.name;
    let Some(pod) = ctx.shared.store.get(PODS, ns, name) else {
        return ctx.error(&Status::not_found("", "pods", name));
    };
    if let Err(status) = container(ctx, &pod, name) {
        return ctx.error(&status);
    }
    crate::exec::exec(req, ctx.query)
}
