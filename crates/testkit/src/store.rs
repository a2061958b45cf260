//! In-memory object store: one global resourceVersion counter, objects kept as parsed JSON
//! plus their serialised bytes, and an event history that watches resume from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::resources::{NAMESPACES, PODS, RESOURCES, ResourceDef};
use crate::status::Status;

/// A stored object: the JSON value and its serialised form (served as is).
pub(crate) struct StoredObject {
    pub(crate) value: Value,
    pub(crate) json: Bytes,
}

impl StoredObject {
    fn new(value: Value) -> Arc<Self> {
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Arc::new(Self { value, json })
    }

    pub(crate) fn name(&self) -> &str {
        meta_str(&self.value, "name")
    }

    pub(crate) fn namespace(&self) -> &str {
        meta_str(&self.value, "namespace")
    }

    pub(crate) fn labels(&self) -> Option<&Map<String, Value>> {
        self.value.get("metadata")?.get("labels")?.as_object()
    }
}

impl std::fmt::Debug for StoredObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Objects can be Secrets: name them, never print their contents.
        f.debug_struct("StoredObject")
            .field("namespace", &self.namespace())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
    /// A progress notification: only the resourceVersion is meaningful.
    Bookmark,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
            Self::Bookmark => "BOOKMARK",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) kind: EventType,
    pub(crate) resource: usize,
    pub(crate) object: Arc<StoredObject>,
}

type Key = (usize, String, String);

#[derive(Debug)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Arc<StoredObject>>,
    history: VecDeque<Arc<Event>>,
}

/// The store.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    history_cap: usize,
    uid_seq: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Store")
            .field("resource_version", &inner.rv)
            .field("objects", &inner.objects.len())
            .field("history", &inner.history.len())
            .finish_non_exhaustive()
    }
}

/// What a new watch starts from.
pub(crate) struct WatchStart {
    /// The store's resourceVersion when the watch subscribed.
    pub(crate) rv: u64,
    pub(crate) backlog: Vec<Arc<Event>>,
    pub(crate) live: broadcast::Receiver<Arc<Event>>,
}

fn gr(def: &ResourceDef) -> (&'static str, &'static str) {
    (def.group, def.plural)
}

impl Store {
    pub(crate) fn new(history_cap: usize) -> Self {
        let (events, _) = broadcast::channel(history_cap.max(16));
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            events,
            history_cap: history_cap.max(16),
            uid_seq: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map entry behind, so a
        // poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub(crate) fn get(&self, res: usize, ns: &str, name: &str) -> Option<Arc<StoredObject>> {
        self.lock()
            .objects
            .get(&(res, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// All objects of a resource (in `ns` if given), ordered by namespace then name.
    pub(crate) fn list(&self, res: usize, ns: Option<&str>) -> (u64, Vec<Arc<StoredObject>>) {
        let inner = self.lock();
        let items = inner
            .objects
            .range((res, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == res)
            .filter(|((_, n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, o)| o.clone())
            .collect();
        (inner.rv, items)
    }

    fn commit(&self, inner: &mut Inner, kind: EventType, res: usize, object: Arc<StoredObject>) {
        let event = Arc::new(Event {
            rv: inner.rv,
            kind,
            resource: res,
            object,
        });
        if inner.history.len() >= self.history_cap {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    fn next_uid(&self) -> String {
        let n = self.uid_seq.fetch_add(1, Ordering::Relaxed);
        format!("7e570000-0000-4000-8000-{n:012x}")
    }

    /// Creates an object; `ns` is the request's namespace (`""` for cluster scope).
    pub(crate) fn create(
        &self,
        res: usize,
        ns: &str,
        mut value: Value,
        dry_run: bool,
    ) -> Result<Arc<StoredObject>, Status> {
        let def = &RESOURCES[res];
        let (group, plural) = gr(def);
        check_type(def, &value)?;
        let Some(obj) = value.as_object_mut() else {
            return Err(Status::bad_request(
                "the object provided is not a JSON object",
            ));
        };
        obj.insert("kind".into(), json!(def.kind));
        obj.insert("apiVersion".into(), json!(def.api_version()));
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return Err(Status::bad_request("metadata must be an object"));
        };
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if def.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        let mut inner = self.lock();
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if prefix.is_empty() {
                return Err(Status::invalid(
                    group,
                    def.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = format!("{prefix}{:05x}", (inner.rv * 2_654_435_761) & 0xfffff);
            meta.insert("name".into(), json!(name));
        }
        if def.namespaced
            && !inner
                .objects
                .contains_key(&(NAMESPACES, String::new(), ns.into()))
        {
            return Err(Status::not_found("", "namespaces", ns));
        }
        let key = (
            res,
            if def.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if inner.objects.contains_key(&key) {
            return Err(Status::already_exists(group, plural, &name));
        }
        meta.insert("uid".into(), json!(self.next_uid()));
        meta.insert(
            "creationTimestamp".into(),
            json!(crate::meta::now_rfc3339()),
        );
        meta.remove("deletionTimestamp");
        if !def.group.is_empty() {
            meta.insert("generation".into(), json!(1));
        }
        default_status(res, obj);
        if dry_run {
            return Ok(StoredObject::new(value));
        }
        inner.rv += 1;
        set_rv(&mut value, inner.rv);
        let stored = StoredObject::new(value);
        inner.objects.insert(key, stored.clone());
        self.commit(&mut inner, EventType::Added, res, stored.clone());
        Ok(stored)
    }

    /// Replaces an object (PUT), honouring a resourceVersion precondition.
    pub(crate) fn update(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        value: Value,
        dry_run: bool,
    ) -> Result<Arc<StoredObject>, Status> {
        let def = &RESOURCES[res];
        check_type(def, &value)?;
        let body_name = meta_str(&value, "name");
        if body_name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let want_rv = meta_str(&value, "resourceVersion").to_owned();
        self.modify(res, ns, name, dry_run, move |current| {
            if !want_rv.is_empty() && want_rv != meta_str(current, "resourceVersion") {
                return Err(Status::conflict(
                    def.group,
                    def.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let mut next = value;
            carry_system_fields(current, &mut next);
            *current = next;
            Ok(())
        })
    }

    /// Read-modify-write of one object under the store lock.
    pub(crate) fn modify(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        dry_run: bool,
        f: impl FnOnce(&mut Value) -> Result<(), Status>,
    ) -> Result<Arc<StoredObject>, Status> {
        let def = &RESOURCES[res];
        let key = (
            res,
            if def.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.into(),
        );
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key) else {
            return Err(Status::not_found(def.group, def.plural, name));
        };
        let before = current.value.clone();
        let mut value = before.clone();
        f(&mut value)?;
        carry_system_fields(&before, &mut value);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("kind".into(), json!(def.kind));
            obj.insert("apiVersion".into(), json!(def.api_version()));
        }
        if !def.group.is_empty() && strip_meta(&before) != strip_meta(&value) {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            value["metadata"]["generation"] = json!(generation);
        }
        if dry_run {
            return Ok(StoredObject::new(value));
        }
        inner.rv += 1;
        set_rv(&mut value, inner.rv);
        let stored = StoredObject::new(value);
        inner.objects.insert(key, stored.clone());
        self.commit(&mut inner, EventType::Modified, res, stored.clone());
        Ok(stored)
    }

    /// Deletes an object; deleting a namespace deletes everything in it.
    pub(crate) fn delete(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Arc<StoredObject>, Status> {
        let def = &RESOURCES[res];
        let key = (
            res,
            if def.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.into(),
        );
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key).cloned() else {
            return Err(Status::not_found(def.group, def.plural, name));
        };
        if dry_run {
            return Ok(current);
        }
        if res == NAMESPACES {
            let contained: Vec<Key> = inner
                .objects
                .keys()
                .filter(|(r, n, _)| *r != NAMESPACES && n == name)
                .cloned()
                .collect();
            for k in contained {
                self.remove_locked(&mut inner, &k);
            }
        }
        Ok(self.remove_locked(&mut inner, &key).unwrap_or(current))
    }

    fn remove_locked(&self, inner: &mut Inner, key: &Key) -> Option<Arc<StoredObject>> {
        let old = inner.objects.remove(key)?;
        inner.rv += 1;
        let mut value = old.value.clone();
        set_rv(&mut value, inner.rv);
        let stored = StoredObject::new(value);
        self.commit(inner, EventType::Deleted, key.0, stored.clone());
        Some(stored)
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that allows bookmarks.
    pub(crate) fn bookmark(&self) {
        let inner = self.lock();
        let event = Arc::new(Event {
            rv: inner.rv,
            kind: EventType::Bookmark,
            resource: usize::MAX,
            object: StoredObject::new(json!({})),
        });
        let _ = self.events.send(event);
    }

    /// Subscribes to changes after `rv` (`None`: from now, with the current objects as a
    /// synthetic `ADDED` backlog). Errors with 410 when `rv` is older than the history.
    pub(crate) fn watch(&self, res: usize, rv: Option<u64>) -> Result<WatchStart, Status> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let backlog = match rv {
            None => inner
                .objects
                .range((res, String::new(), String::new())..)
                .take_while(|((r, _, _), _)| *r == res)
                .map(|(_, o)| {
                    let rv = meta_str(&o.value, "resourceVersion").parse().unwrap_or(0);
                    Arc::new(Event {
                        rv,
                        kind: EventType::Added,
                        resource: res,
                        object: o.clone(),
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = inner.history.front().map_or(inner.rv, |e| e.rv);
                if rv + 1 < oldest && rv < inner.rv {
                    return Err(Status::expired(format!(
                        "too old resource version: {rv} ({})",
                        oldest - 1
                    )));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.resource == res)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            rv: inner.rv,
            backlog,
            live,
        })
    }
}

fn check_type(def: &ResourceDef, value: &Value) -> Result<(), Status> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = def.api_version();
    if !api_version.is_empty() && api_version != want {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({want})"
        )));
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != def.kind {
        return Err(Status::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        )));
    }
    Ok(())
}

fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

fn strip_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// Fields the server owns survive updates and patches.
fn carry_system_fields(from: &Value, to: &mut Value) {
    if !to.get("metadata").is_some_and(Value::is_object) {
        to["metadata"] = json!({});
    }
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
    ] {
        match from["metadata"].get(field) {
            Some(v) => to["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = to["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
}

fn default_status(res: usize, obj: &mut Map<String, Value>) {
    if res == NAMESPACES {
        obj.entry("spec")
            .or_insert_with(|| json!({"finalizers": ["kubernetes"]}));
        obj.insert("status".into(), json!({"phase": "Active"}));
    } else if RESOURCES[res].plural == "secrets" {
        // SetDefaults_Secret.
        if obj
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj.insert("type".into(), json!("Opaque"));
        }
    } else if res == PODS {
        // No kubelet: every pod is running as soon as it exists, so exec works.
        let status = obj.entry("status").or_insert_with(|| json!({}));
        if status.get("phase").is_none() {
            status["phase"] = json!("Running");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_default_ns() -> Store {
        let s = Store::new(64);
        s.create(
            NAMESPACES,
            "",
            json!({"metadata": {"name": "default"}}),
            false,
        )
        .unwrap();
        s
    }

    #[test]
    fn create_get_update_conflict_delete() {
        let s = store_with_default_ns();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let created = s.create(1, "default", cm.clone(), false).unwrap();
        assert_eq!(created.namespace(), "default");
        assert_eq!(s.create(1, "default", cm, false).unwrap_err().code, 409);
        let mut upd = created.value.clone();
        upd["data"] = json!({"k": "v"});
        let updated = s.update(1, "default", "a", upd.clone(), false).unwrap();
        assert_eq!(updated.value["data"]["k"], "v");
        // The old resourceVersion no longer matches.
        assert_eq!(
            s.update(1, "default", "a", upd, false).unwrap_err().reason,
            "Conflict"
        );
        assert_eq!(s.delete(1, "default", "a", false).unwrap().name(), "a");
        assert_eq!(s.get(1, "default", "a").map(|o| o.name().to_owned()), None);
        assert_eq!(s.delete(1, "default", "a", false).unwrap_err().code, 404);
    }

    #[test]
    fn namespaced_create_needs_the_namespace() {
        let s = Store::new(16);
        let err = s
            .create(1, "nope", json!({"metadata": {"name": "a"}}), false)
            .unwrap_err();
        assert_eq!(err.message, "namespaces \"nope\" not found");
    }

    #[test]
    fn watch_resumes_from_history_and_expires() {
        let s = Store::new(16);
        s.create(
            NAMESPACES,
            "",
            json!({"metadata": {"name": "default"}}),
            false,
        )
        .unwrap();
        let rv = s.resource_version();
        s.create(1, "default", json!({"metadata": {"name": "a"}}), false)
            .unwrap();
        let start = s.watch(1, Some(rv)).unwrap();
        assert_eq!(start.backlog.len(), 1);
        for i in 0..40 {
            s.create(
                1,
                "default",
                json!({"metadata": {"name": format!("x{i}")}}),
                false,
            )
            .unwrap();
        }
        assert_eq!(s.watch(1, Some(rv)).err().map(|e| e.code), Some(410));
    }
}
