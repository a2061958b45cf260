//! Request and response extensions: the contract between the gateway, the layers and
//! [`ForwardService`](crate::ForwardService).
//!
//! | extension | inserted by | read by | when absent |
//! |---|---|---|---|
//! | [`Identity`] | [`AuthnLayer`](crate::AuthnLayer) (or the embedder) | `ForwardService` (impersonation), audit | `ForwardService` in `Impersonate` mode answers 500 (it never forwards anonymously) |
//! | [`ClientAddr`] | the embedder's accept loop | `ForwardService` (`X-Forwarded-For`), audit (`sourceIPs`) | no `X-Forwarded-For` is added |
//! | [`UpstreamPath`] | the gateway after routing (`Route::raw_rest` + `Route::query`) | `ForwardService` | the request URI's path and query are forwarded unchanged |
//! | [`LongRunning`] | the gateway (`RequestInfo::is_long_running`) | `ForwardService` (no response-header timeout), audit (`ResponseStarted` stage) | treated as not long-running |
//! | [`RequestMeta`] | the gateway after routing | audit (verb, objectRef; which bodies may be recorded), metrics (target, verb labels) | verb = lowercase method, target label `""`, and no request or response body is recorded whatever the audit level (nothing tells a Secret's apart) |
//! | the authenticator's scope type, and [`ScopeAttached`] | [`AuthnLayer`](crate::AuthnLayer), from [`Authenticated::scope`](crate::Authenticated::scope) | [`RbacAuthorizer`](crate::RbacAuthorizer) (as `Arc<CompiledScope>`; another type: 500) | the credential is unrestricted |
//! | [`AuditId`] | [`AuditLayer`](crate::AuditLayer) | anyone who logs | — |
//! | [`AuditAnnotations`] (response) | the embedder's layers; [`AuthzLayer`](crate::AuthzLayer) when no audit layer runs outside it | audit, which takes them off the response | no annotations |
//! | [`IdentitySlot`](crate::audit::IdentitySlot) | [`AuditLayer`](crate::AuditLayer) | [`AuthnLayer`](crate::AuthnLayer) (identity), [`AuthzLayer`](crate::AuthzLayer) (its annotations), the gateway (impersonated user): what they report to the audit event | nothing is reported |
//! | [`UpstreamError`] (response) | `ForwardService` on its own error responses | metrics (`upstream errors`) | — |
//! | [`UpgradeSession`] (response) | `ForwardService` on the 101 of a bridged upgrade | audit and metrics, which hold their event and in-flight count until the session ends | — |
//! | [`ResponseStatus`](crate::audit::ResponseStatus) (response) | [`Status::to_response`](crate::Status::to_response) (every Status kubegate answers but the raw timeout one) | audit, which takes it off the response for `responseStatus` | `responseStatus` has the code alone |
//!
//! A stack inserts eight to eleven of these per request: [`make_room`] gives the map room for
//! them before the first, where requests enter.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::PathAndQuery;
use kubegate_routing::{RequestInfo, STANDARD_VERBS, Target};
use serde::Serialize;

/// The authenticated user a request acts as (kubegate-authz's identity, kube's `user.Info`).
pub use kubegate_authz::Identity;

/// Set by [`AuthnLayer`](crate::AuthnLayer) beside the scope an authenticator gave a
/// credential ([`Authenticated::scope`](crate::Authenticated::scope)): the scope's type name.
/// An authorizer that enforces scopes of one type finds the scope under that type; finding this
/// marker and no scope it can read, it knows the credential is restricted in a way it cannot
/// check, and refuses rather than treating the credential as unrestricted
/// ([`RbacAuthorizer`](crate::RbacAuthorizer) does). Not set for a scope of type `()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeAttached(pub &'static str);

/// The TCP peer address of the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Whether the request is long-running in kube-apiserver's sense (watch, proxy, exec, attach,
/// log, portforward): such requests get no response-header timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LongRunning(pub bool);

/// The path and query the upstream must see, still percent-encoded exactly as the client sent
/// it (routing's `Route::raw_rest` and `Route::query`). The upstream's base path is prepended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPath(pub PathAndQuery);

impl UpstreamPath {
    /// Builds the extension from a route's raw (still-encoded) rest path and raw query.
    pub fn from_route(raw_rest: &str, query: Option<&str>) -> Result<Self, crate::Error> {
        let pq = match query {
            Some(q) => PathAndQuery::try_from(format!("{raw_rest}?{q}"))?,
            None => PathAndQuery::try_from(raw_rest)?,
        };
        Ok(UpstreamPath(pq))
    }
}

/// The Kubernetes object a request addresses (audit `objectRef`).
///
/// Its six fields live in one shared string, so building one costs two allocations (the
/// string, then its shared copy), not six, and a clone (audit event, metric labels,
/// authorizers) costs a reference count: every forwarded request builds one.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The fields back to back, in [`FIELDS`] order.
    text: Arc<str>,
    /// Where each field ends in `text`.
    ends: [u32; 6],
}

/// The audit `objectRef` keys, in the order `ObjectRef` stores its fields.
const FIELDS: [&str; 6] = [
    "resource",
    "namespace",
    "name",
    "apiGroup",
    "apiVersion",
    "subresource",
];

impl ObjectRef {
    /// An object reference from its parts (each may be empty).
    pub fn new(
        resource: &str,
        namespace: &str,
        name: &str,
        api_group: &str,
        api_version: &str,
        subresource: &str,
    ) -> Self {
        let parts = [
            resource,
            namespace,
            name,
            api_group,
            api_version,
            subresource,
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // Longer than 4 GiB only if a caller passes such strings; saturating keeps the
            // accessors in bounds (they slice with `get`).
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        ObjectRef {
            text: Arc::from(text),
            ends,
        }
    }

    /// The audit `objectRef` of a resource request (`None` for non-resource requests).
    pub fn from_request_info(info: &RequestInfo<'_>) -> Option<Self> {
        info.is_resource_request.then(|| {
            ObjectRef::new(
                info.resource,
                info.namespace,
                &info.name,
                info.api_group,
                info.api_version,
                info.subresource,
            )
        })
    }

    fn field(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.text.get(start as usize..end as usize).unwrap_or("")
    }

    /// Resource (plural).
    pub fn resource(&self) -> &str {
        self.field(0)
    }

    /// Namespace (empty for cluster scope).
    pub fn namespace(&self) -> &str {
        self.field(1)
    }

    /// Object name.
    pub fn name(&self) -> &str {
        self.field(2)
    }

    /// API group (empty for core).
    pub fn api_group(&self) -> &str {
        self.field(3)
    }

    /// API version.
    pub fn api_version(&self) -> &str {
        self.field(4)
    }

    /// Subresource.
    pub fn subresource(&self) -> &str {
        self.field(5)
    }

    /// The non-empty fields as (audit key, value) pairs, in the audit event's order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        FIELDS
            .iter()
            .enumerate()
            .map(|(i, key)| (*key, self.field(i)))
            .filter(|(_, value)| !value.is_empty())
    }
}

impl Default for ObjectRef {
    fn default() -> Self {
        ObjectRef::new("", "", "", "", "", "")
    }
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ObjectRef");
        for (key, value) in self.fields() {
            d.field(key, &value);
        }
        d.finish()
    }
}

/// As audit.k8s.io/v1 writes it: camelCase keys, empty fields left out.
impl Serialize for ObjectRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.fields() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// What routing learned about a request, for audit and metrics. Its parts are shared, not
/// copied, with the audit event and the metric labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Metric/audit label of the destination, e.g. `cluster/prod`.
    pub target: Arc<str>,
    /// kube verb (`get`, `list`, `watch`, …; lowercase method for non-resource requests).
    /// Borrowed for the verbs RequestInfo gives standard methods.
    pub verb: Cow<'static, str>,
    /// The addressed object, for resource requests.
    pub object_ref: Option<ObjectRef>,
}

impl RequestMeta {
    /// Builds the extension from routing's results.
    pub fn new(target: &Target<'_>, info: &RequestInfo<'_>) -> Self {
        let verb = match STANDARD_VERBS.iter().find(|v| **v == info.verb) {
            Some(standard) => Cow::Borrowed(*standard),
            None => Cow::Owned(info.verb.clone().into_owned()),
        };
        RequestMeta {
            target: shared_target_label(target),
            verb,
            object_ref: ObjectRef::from_request_info(info),
        }
    }
}

/// [`target_label`] built straight into its shared form: joined on the stack, then copied
/// once into the `Arc`, not first into a `String`.
fn shared_target_label(target: &Target<'_>) -> Arc<str> {
    let mut buf = [0u8; 256];
    let mut len = 0;
    let fits = label_parts(target, |part| {
        let end = len + part.len();
        let Some(dst) = buf.get_mut(len..end) else {
            return false;
        };
        dst.copy_from_slice(part.as_bytes());
        len = end;
        true
    });
    match std::str::from_utf8(&buf[..len]) {
        Ok(label) if fits => Arc::from(label),
        // Longer than any label of valid names, and still labelled correctly.
        _ => Arc::from(target_label(target)),
    }
}

/// The metrics/audit label of a target: `cluster/prod`, `virtualcluster/prod/ns/vc`,
/// `project/p/space/s`, `project/p/virtualcluster/vc`, `management`, `auth`, `oidc`,
/// `grafana/prod` or `ops`.
pub fn target_label(target: &Target<'_>) -> String {
    let mut label = String::new();
    label_parts(target, |part| {
        label.push_str(part);
        true
    });
    label
}

/// Feeds the pieces of `target`'s label to `push` in order, while it returns `true`; whether
/// every piece was taken. Joined by hand: every request labels its target, and `format!` cost
/// ≈ 330 instructions of it (callgrind, proxy_load).
fn label_parts(target: &Target<'_>, mut push: impl FnMut(&str) -> bool) -> bool {
    let parts: &[&str] = match target {
        Target::Management => &["management"],
        Target::Cluster { cluster } => &["cluster/", cluster],
        Target::VirtualCluster {
            cluster,
            namespace,
            name,
        } => &["virtualcluster/", cluster, "/", namespace, "/", name],
        Target::ProjectSpace { project, space } => &["project/", project, "/space/", space],
        Target::ProjectVirtualCluster {
            project,
            virtual_cluster,
        } => &["project/", project, "/virtualcluster/", virtual_cluster],
        Target::Auth => &["auth"],
        Target::Oidc => &["oidc"],
        Target::Grafana { cluster } => &["grafana/", cluster],
        Target::Ops(_) => &["ops"],
    };
    parts.iter().all(|part| push(part))
}

/// The audit ID of a request (echoed from the client's `Audit-ID` header or generated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditId(pub Arc<str>);

/// Annotations a layer wants on the audit event (response extension), e.g.
/// `authorization.k8s.io/decision`. Keys and fixed values are borrowed, not allocated.
///
/// [`AuthzLayer`](crate::AuthzLayer) reports its annotations through the request's
/// [`IdentitySlot`](crate::audit::IdentitySlot) when an audit layer runs outside it, and on the
/// response only when none does: a response's extension map is otherwise empty, and making one
/// for the audit layer to take apart again costs three allocations per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditAnnotations(pub BTreeMap<Cow<'static, str>, Cow<'static, str>>);

impl AuditAnnotations {
    /// The annotations kube-apiserver's authorization filter puts on every request's audit
    /// event: `authorization.k8s.io/decision` (`allow`, or `forbid` for a refusal) and
    /// `authorization.k8s.io/reason`, the authorizer's reason (e.g. `RBAC: allowed by
    /// ClusterRoleBinding "x" of ClusterRole "y" to User "z"`; often empty on a refusal).
    pub fn authorization(allowed: bool, reason: impl Into<Cow<'static, str>>) -> Self {
        let decision = if allowed { "allow" } else { "forbid" };
        AuditAnnotations(BTreeMap::from([
            (
                Cow::Borrowed("authorization.k8s.io/decision"),
                Cow::Borrowed(decision),
            ),
            (Cow::Borrowed("authorization.k8s.io/reason"), reason.into()),
        ]))
    }

    /// What kube-apiserver's authorization filter records when the authorizer failed: the
    /// reason `internal error` and no decision.
    pub fn authorization_error() -> Self {
        AuditAnnotations(BTreeMap::from([(
            Cow::Borrowed("authorization.k8s.io/reason"),
            Cow::Borrowed("internal error"),
        )]))
    }
}

/// Marks a response that `ForwardService` produced because the upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamError {
    /// `connect`, `tls`, `timeout`, `protocol`, `credential` or `upgrade`.
    pub kind: &'static str,
}

/// The bridged connection behind a `101 Switching Protocols` (exec, attach, port-forward): a
/// response extension [`ForwardService`](crate::ForwardService) puts on the 101 it answers an
/// upgrade with.
///
/// hyper hands the client's connection over only after the 101 and its (empty) body are
/// written, so the body cannot be held open for the length of the session; a layer that wants
/// to know when the request really ends — kube-apiserver's `UpgradeAwareHandler.tryUpgrade`
/// returns, and its audit event and request metrics complete, only when the bidirectional copy
/// ends — gives the session what it would have kept in the body instead: [`hold`](Self::hold)
/// keeps any value until the session ends, then drops it. [`AuditLayer`](crate::AuditLayer)
/// holds its pending `ResponseComplete` event this way, [`MetricsLayer`](crate::MetricsLayer)
/// its in-flight count. No task is spawned for it: the values are dropped by whoever ends the
/// session, normally the bridging task when its copy ends.
///
/// The session ends when its [`SessionEnd`] is dropped: when the copy ends either way, when
/// the client never completes its upgrade, and when the bridge never starts at all (the guard
/// is dropped with whatever owned it).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// struct Flag(Arc<AtomicBool>);
/// impl Drop for Flag {
///     fn drop(&mut self) {
///         self.0.store(true, Ordering::SeqCst);
///     }
/// }
///
/// let (session, end) = kubegate_proxy::UpgradeSession::start();
/// let dropped = Arc::new(AtomicBool::new(false));
/// session.hold(Flag(dropped.clone()));
/// assert!(!dropped.load(Ordering::SeqCst));
/// drop(end);
/// assert!(dropped.load(Ordering::SeqCst) && session.has_ended());
/// // Held after the end: dropped at once.
/// session.hold(Flag(dropped.clone()));
/// ```
#[derive(Clone, Debug)]
pub struct UpgradeSession(Arc<std::sync::Mutex<Session>>);

#[derive(Default)]
struct Session {
    ended: bool,
    held: Vec<Box<dyn Send>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("ended", &self.ended)
            .field("held", &self.held.len())
            .finish()
    }
}

/// Ends its [`UpgradeSession`] when dropped.
#[derive(Debug)]
pub struct SessionEnd(UpgradeSession);

impl UpgradeSession {
    /// A session, and the guard whose drop ends it.
    pub fn start() -> (UpgradeSession, SessionEnd) {
        let session = UpgradeSession(Arc::default());
        (session.clone(), SessionEnd(session))
    }

    /// Keeps `value` until the session ends, then drops it (at once if it has ended already).
    pub fn hold<T: Send + 'static>(&self, value: T) {
        let mut session = self.lock();
        if !session.ended {
            session.held.push(Box::new(value));
            return;
        }
        drop(session);
        // Dropped outside the lock: a held value's drop may take its time (the audit event is
        // written to its sink).
        drop(value);
    }

    /// Whether the session has ended.
    pub fn has_ended(&self) -> bool {
        self.lock().ended
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        // A panic while the lock was held leaves nothing half-done (a push or a flag).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        let held = {
            let mut session = self.0.lock();
            session.ended = true;
            std::mem::take(&mut session.held)
        };
        // In the order they were held, outside the lock.
        drop(held);
    }
}

/// Gives a request's extension map room for the extensions a gateway stack inserts, before
/// the first is inserted. Call it where requests enter, in the accept loop's service (the
/// reference gateway does), before inserting [`ClientAddr`].
///
/// `http`'s map starts with no table and grows as extensions arrive: to 4 entries' worth of
/// buckets, then 8, then 16, each time allocating a new table, moving every entry into it and
/// freeing the old one. The reference gateway's stack inserts 9 to 11 extensions per request
/// (routing's, the audit layer's, authentication's), so every request paid for three tables
/// and two moves. This starts the map with room for [`EXTENSIONS_ROOM`] instead: one table.
/// Extensions already present (hyper's upgrade handle) are kept.
///
/// ```
/// let mut req = http::Request::new(());
/// kubegate_proxy::ext::make_room(req.extensions_mut());
/// req.extensions_mut().insert(kubegate_proxy::LongRunning(false));
/// assert_eq!(req.extensions().get(), Some(&kubegate_proxy::LongRunning(false)));
/// ```
pub fn make_room(extensions: &mut http::Extensions) {
    // `http` offers no `with_capacity`; a cleared map keeps its table, and a clone of a map
    // keeps its table's size. So the roomy map is built once and cleared, and each request
    // starts from a clone of it: one table allocation and a copy of its 32 control
    // bytes, no entries to clone.
    static ROOMY: std::sync::LazyLock<http::Extensions> = std::sync::LazyLock::new(|| {
        #[derive(Clone)]
        struct Filler<const N: usize>;
        let mut map = http::Extensions::new();
        map.insert(Filler::<0>);
        map.insert(Filler::<1>);
        map.insert(Filler::<2>);
        map.insert(Filler::<3>);
        map.insert(Filler::<4>);
        map.insert(Filler::<5>);
        map.insert(Filler::<6>);
        map.insert(Filler::<7>);
        map.clear();
        map
    });
    let mut roomy = ROOMY.clone();
    roomy.extend(std::mem::take(extensions));
    *extensions = roomy;
}

/// How many extensions a map prepared by [`make_room`] holds before it grows: eight fillers
/// made a table of 16 buckets, which holds 14 (hashbrown keeps an eighth free).
pub const EXTENSIONS_ROOM: usize = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_from_routing() {
        let router = kubegate_routing::Router::central();
        let route = router
            .route(
                "/kubernetes/cluster/prod/api/v1/namespaces/default/pods/p1/exec",
                Some("command=ls"),
            )
            .unwrap();
        let info = RequestInfo::parse("POST", &route.rest, route.query).unwrap();
        let meta = RequestMeta::new(&route.target, &info);
        assert_eq!(&*meta.target, "cluster/prod");
        assert_eq!(meta.verb, "create");
        let o = meta.object_ref.unwrap();
        assert_eq!(
            (o.resource(), o.namespace(), o.name(), o.subresource()),
            ("pods", "default", "p1", "exec")
        );
        let up = UpstreamPath::from_route(route.raw_rest, route.query).unwrap();
        assert_eq!(
            up.0.as_str(),
            "/api/v1/namespaces/default/pods/p1/exec?command=ls"
        );
        let info = RequestInfo::parse("GET", "/healthz", None).unwrap();
        assert!(ObjectRef::from_request_info(&info).is_none());
    }

    #[test]
    fn object_ref_fields_share_one_string() {
        let o = ObjectRef::new("pods", "kube-système", "web-0", "apps", "v1", "exec");
        assert_eq!(
            (
                o.resource(),
                o.namespace(),
                o.name(),
                o.api_group(),
                o.api_version(),
                o.subresource()
            ),
            ("pods", "kube-système", "web-0", "apps", "v1", "exec")
        );
        let clone = o.clone();
        assert!(Arc::ptr_eq(&o.text, &clone.text), "a clone shares the text");
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"resource":"pods","namespace":"kube-système","name":"web-0","apiGroup":"apps","apiVersion":"v1","subresource":"exec"}"#
        );
        let sparse = ObjectRef::new("", "", "n", "", "", "log");
        assert_eq!(sparse.resource(), "");
        assert_eq!(sparse.name(), "n");
        assert_eq!(
            serde_json::to_string(&sparse).unwrap(),
            r#"{"name":"n","subresource":"log"}"#
        );
        assert_eq!(
            format!("{sparse:?}"),
            r#"ObjectRef { name: "n", subresource: "log" }"#
        );
        assert_eq!(serde_json::to_string(&ObjectRef::default()).unwrap(), "{}");
        assert_eq!(ObjectRef::default(), ObjectRef::new("", "", "", "", "", ""));
    }

    #[test]
    fn target_labels_for_every_prefix() {
        let router = kubegate_routing::Router::central();
        for (path, label) in [
            ("/kubernetes/management/apis", "management"),
            ("/kubernetes/cluster/prod/api", "cluster/prod"),
            (
                "/kubernetes/virtualcluster/prod/team-a/vc1/api",
                "virtualcluster/prod/team-a/vc1",
            ),
            ("/kubernetes/project/p/space/s/api", "project/p/space/s"),
            (
                "/kubernetes/project/p/virtualcluster/vc/api",
                "project/p/virtualcluster/vc",
            ),
            ("/grafana/prod/d", "grafana/prod"),
            ("/healthz", "ops"),
        ] {
            let route = router.route(path, None).unwrap();
            assert_eq!(target_label(&route.target), label, "{path}");
            assert_eq!(&*shared_target_label(&route.target), label, "{path}");
        }
        // Longer than the stack buffer (names no router accepts): still the whole label.
        let long = "x".repeat(100);
        let target = Target::VirtualCluster {
            cluster: &long,
            namespace: &long,
            name: &long,
        };
        let label = format!("virtualcluster/{long}/{long}/{long}");
        assert_eq!(target_label(&target), label);
        assert_eq!(&*shared_target_label(&target), label);
    }
}
