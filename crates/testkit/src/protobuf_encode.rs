//! Encoding objects as Kubernetes protobuf, for clients that ask for
//! `application/vnd.kubernetes.protobuf` (client-go's controllers do): a `k8s\0` +
//! `runtime.Unknown` envelope around the object's message, and for watches the raw
//! `WatchEvent` message in 4-byte big-endian length-delimited frames, as kube-apiserver's
//! protobuf serializer and stream serializer write them.
//!
//! Field numbers and order are those of the generated `generated.pb.go` marshalers (ascending
//! field numbers, map entries sorted by key, non-pointer strings always written, pointer
//! fields only when set). This server encodes the kinds it also decodes from protobuf
//! (ConfigMap, Secret, Namespace), their lists, `Status`, and watch events; other kinds are
//! served as JSON or refused with 406 (see [`crate::negotiate`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::protobuf::MAGIC;

/// The kinds with a protobuf encoder here.
pub(crate) fn encodes(kind: &str) -> bool {
    matches!(kind, "ConfigMap" | "Secret" | "Namespace")
}

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }

    fn key(&mut self, field: u64, wire: u64) {
        self.varint(field << 3 | wire);
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u64, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A varint field: int64/int32 as two's complement, as Go's `uint64(v)` casts.
    fn int(&mut self, field: u64, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }

    fn bool(&mut self, field: u64, v: bool) {
        self.key(field, 0);
        self.varint(u64::from(v));
    }

    fn message(&mut self, field: u64, m: &Message) {
        self.bytes(field, &m.0);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The items of an array field (none when it is absent or not an array).
fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A `map<string, string>` field, entries sorted by key (serde_json's map is a BTreeMap).
fn string_map(m: &mut Message, field: u64, v: Option<&Value>) {
    for (k, val) in v.and_then(Value::as_object).into_iter().flatten() {
        let mut e = Message::default();
        e.string(1, k);
        e.string(2, val.as_str().unwrap_or(""));
        m.message(field, &e);
    }
}

/// A `map<string, bytes>` field from JSON's base64 strings.
fn bytes_map(m: &mut Message, field: u64, v: Option<&Value>) {
    for (k, val) in v.and_then(Value::as_object).into_iter().flatten() {
        let raw = STANDARD
            .decode(val.as_str().unwrap_or(""))
            .unwrap_or_default();
        let mut e = Message::default();
        e.string(1, k);
        e.bytes(2, &raw);
        m.message(field, &e);
    }
}

/// `metav1.Time`: `Timestamp{seconds = 1, nanos = 2}`, empty for the zero time.
fn time(v: Option<&Value>) -> Message {
    let mut m = Message::default();
    let parsed = v.and_then(Value::as_str).and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    });
    if let Some(t) = parsed {
        m.int(1, t.unix_timestamp());
        m.int(2, i64::from(t.nanosecond()));
    }
    m
}

fn object_meta(meta: &Value) -> Message {
    let mut m = Message::default();
    for (field, key) in [
        (1, "name"),
        (2, "generateName"),
        (3, "namespace"),
        (4, "selfLink"),
        (5, "uid"),
        (6, "resourceVersion"),
    ] {
        m.string(field, str_of(meta, key));
    }
    m.int(
        7,
        meta.get("generation").and_then(Value::as_i64).unwrap_or(0),
    );
    m.message(8, &time(meta.get("creationTimestamp")));
    if let Some(t) = meta.get("deletionTimestamp").filter(|t| !t.is_null()) {
        m.message(9, &time(Some(t)));
    }
    if let Some(s) = meta
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        m.int(10, s);
    }
    string_map(&mut m, 11, meta.get("labels"));
    string_map(&mut m, 12, meta.get("annotations"));
    for owner in items(meta, "ownerReferences") {
        let mut o = Message::default();
        o.string(1, str_of(owner, "kind"));
        o.string(3, str_of(owner, "name"));
        o.string(4, str_of(owner, "uid"));
        o.string(5, str_of(owner, "apiVersion"));
        if let Some(c) = owner.get("controller").and_then(Value::as_bool) {
            o.bool(6, c);
        }
        if let Some(b) = owner.get("blockOwnerDeletion").and_then(Value::as_bool) {
            o.bool(7, b);
        }
        m.message(13, &o);
    }
    for f in items(meta, "finalizers") {
        m.string(14, f.as_str().unwrap_or(""));
    }
    for entry in items(meta, "managedFields") {
        let mut e = Message::default();
        e.string(1, str_of(entry, "manager"));
        e.string(2, str_of(entry, "operation"));
        e.string(3, str_of(entry, "apiVersion"));
        if entry.get("time").is_some_and(|t| !t.is_null()) {
            e.message(4, &time(entry.get("time")));
        }
        e.string(6, str_of(entry, "fieldsType"));
        if let Some(fields) = entry.get("fieldsV1") {
            let mut raw = Message::default();
            raw.bytes(1, &serde_json::to_vec(fields).unwrap_or_default());
            e.message(7, &raw);
        }
        e.string(8, str_of(entry, "subresource"));
        m.message(17, &e);
    }
    m
}

/// The object's own message (no envelope), for the kinds [`encodes`] names.
fn object(o: &Value) -> Message {
    let mut m = Message::default();
    m.message(1, &object_meta(o.get("metadata").unwrap_or(&Value::Null)));
    match str_of(o, "kind") {
        "ConfigMap" => {
            string_map(&mut m, 2, o.get("data"));
            bytes_map(&mut m, 3, o.get("binaryData"));
            if let Some(i) = o.get("immutable").and_then(Value::as_bool) {
                m.bool(4, i);
            }
        }
        "Secret" => {
            bytes_map(&mut m, 2, o.get("data"));
            m.string(3, str_of(o, "type"));
            if let Some(i) = o.get("immutable").and_then(Value::as_bool) {
                m.bool(5, i);
            }
        }
        "Namespace" => {
            let spec = o.get("spec").unwrap_or(&Value::Null);
            let mut spec_msg = Message::default();
            for f in items(spec, "finalizers") {
                spec_msg.string(1, f.as_str().unwrap_or(""));
            }
            m.message(2, &spec_msg);
            let status = o.get("status").unwrap_or(&Value::Null);
            let mut status_msg = Message::default();
            status_msg.string(1, str_of(status, "phase"));
            for c in items(status, "conditions") {
                let mut cm = Message::default();
                cm.string(1, str_of(c, "type"));
                cm.string(2, str_of(c, "status"));
                cm.message(4, &time(c.get("lastTransitionTime")));
                cm.string(5, str_of(c, "reason"));
                cm.string(6, str_of(c, "message"));
                status_msg.message(2, &cm);
            }
            m.message(3, &status_msg);
        }
        _ => {}
    }
    m
}

/// `metav1.Status`'s message.
fn status(s: &Value) -> Message {
    let mut m = Message::default();
    m.message(1, &list_meta(s.get("metadata").unwrap_or(&Value::Null)));
    m.string(2, str_of(s, "status"));
    m.string(3, str_of(s, "message"));
    m.string(4, str_of(s, "reason"));
    if let Some(d) = s.get("details").filter(|d| d.is_object()) {
        let mut dm = Message::default();
        dm.string(1, str_of(d, "name"));
        dm.string(2, str_of(d, "group"));
        dm.string(3, str_of(d, "kind"));
        for cause in items(d, "causes") {
            let mut c = Message::default();
            c.string(1, str_of(cause, "reason"));
            c.string(2, str_of(cause, "message"));
            c.string(3, str_of(cause, "field"));
            dm.message(4, &c);
        }
        dm.int(
            5,
            d.get("retryAfterSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        );
        dm.string(6, str_of(d, "uid"));
        m.message(5, &dm);
    }
    m.int(6, s.get("code").and_then(Value::as_i64).unwrap_or(0));
    m
}

fn list_meta(meta: &Value) -> Message {
    let mut m = Message::default();
    m.string(1, str_of(meta, "selfLink"));
    m.string(2, str_of(meta, "resourceVersion"));
    m.string(3, str_of(meta, "continue"));
    if let Some(n) = meta.get("remainingItemCount").and_then(Value::as_i64) {
        m.int(4, n);
    }
    m
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw, contentEncoding, contentType}`.
fn envelope(api_version: &str, kind: &str, raw: &Message) -> Vec<u8> {
    let mut type_meta = Message::default();
    type_meta.string(1, api_version);
    type_meta.string(2, kind);
    let mut unknown = Message(MAGIC.to_vec());
    unknown.message(1, &type_meta);
    unknown.bytes(2, &raw.0);
    unknown.string(3, "");
    unknown.string(4, "");
    unknown.0
}

/// An object (a kind [`encodes`] names, or a `Status`) as a protobuf body.
pub(crate) fn encode_object(o: &Value) -> Vec<u8> {
    let kind = str_of(o, "kind");
    let message = if kind == "Status" {
        status(o)
    } else {
        object(o)
    };
    envelope(str_of(o, "apiVersion"), kind, &message)
}

/// A `<Kind>List` of `items` as a protobuf body.
pub(crate) fn encode_list<'a>(
    api_version: &str,
    kind: &str,
    meta: &Value,
    items: impl IntoIterator<Item = &'a Value>,
) -> Vec<u8> {
    let mut m = Message::default();
    m.message(1, &list_meta(meta));
    for item in items {
        m.message(2, &object(item));
    }
    envelope(api_version, &format!("{kind}List"), &m)
}

/// One watch event as a length-delimited frame: the raw `WatchEvent{type, object}` message
/// (no envelope, as the stream serializer writes it), its object in its own envelope.
pub(crate) fn encode_watch_frame(event_type: &str, object: &Value) -> Vec<u8> {
    let mut raw = Message::default();
    raw.bytes(1, &encode_object(object));
    let mut event = Message::default();
    event.string(1, event_type);
    event.message(2, &raw);
    let len = u32::try_from(event.0.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(4 + event.0.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&event.0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bytes generated.pb.go writes for a small ConfigMap, field by field.
    #[test]
    fn configmap_bytes_follow_the_generated_marshaler() {
        let cm = json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "1970-01-01T00:00:10Z", "labels": {"z": "1", "b": "2"}},
            "data": {"k": "v"},
        });
        let mut meta: Vec<u8> = Vec::new();
        meta.extend_from_slice(b"\x0a\x01a"); // name
        meta.extend_from_slice(b"\x12\x00"); // generateName
        meta.extend_from_slice(b"\x1a\x02ns"); // namespace
        meta.extend_from_slice(b"\x22\x00"); // selfLink
        meta.extend_from_slice(b"\x2a\x01u"); // uid
        meta.extend_from_slice(b"\x32\x017"); // resourceVersion
        meta.extend_from_slice(b"\x38\x00"); // generation
        meta.extend_from_slice(b"\x42\x04\x08\x0a\x10\x00"); // creationTimestamp {10 s, 0 ns}
        meta.extend_from_slice(b"\x5a\x06\x0a\x01b\x12\x012"); // labels, sorted: b…
        meta.extend_from_slice(b"\x5a\x06\x0a\x01z\x12\x011"); // …then z
        let mut cm_msg = vec![0x0a, meta.len() as u8];
        cm_msg.extend_from_slice(&meta);
        cm_msg.extend_from_slice(b"\x12\x06\x0a\x01k\x12\x01v"); // data
        let mut want = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap".to_vec();
        want.push(0x12);
        want.push(cm_msg.len() as u8);
        want.extend_from_slice(&cm_msg);
        want.extend_from_slice(b"\x1a\x00\x22\x00"); // contentEncoding, contentType
        assert_eq!(encode_object(&cm), want);
    }

    /// What the testkit encodes, its own request decoder (kubectl's generators' bodies)
    /// reads back.
    #[test]
    fn configmaps_and_secrets_round_trip_through_the_decoder() {
        let cm = json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "cm", "namespace": "default", "resourceVersion": "3",
                         "labels": {"app": "x"}, "annotations": {"a": "b"}, "finalizers": ["f"]},
            "data": {"a": "b"}, "binaryData": {"bin": "AAE="}, "immutable": true,
        });
        let secret = json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "namespace": "default", "resourceVersion": "4"},
            "data": {"password": "aHVudGVyMg=="}, "type": "Opaque",
        });
        let ns = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "team", "resourceVersion": "5"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        });
        for o in [cm, secret, ns] {
            let back = crate::protobuf::decode(&encode_object(&o)).unwrap();
            assert_eq!(back, o);
        }
    }

    #[test]
    fn watch_frames_are_length_delimited_raw_watch_events() {
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "w"}});
        let frame = encode_watch_frame("ADDED", &cm);
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let event = &frame[4..];
        assert_eq!(&event[..7], b"\x0a\x05ADDED");
        // Field 2 (RawExtension) holding field 1 (raw): the object in its own envelope.
        let object = encode_object(&cm);
        let mut raw_ext = vec![0x0a];
        raw_ext.extend_from_slice(&[object.len() as u8]);
        raw_ext.extend_from_slice(&object);
        let mut want = vec![0x12, raw_ext.len() as u8];
        want.extend_from_slice(&raw_ext);
        assert_eq!(&event[7..], want.as_slice());
    }

    #[test]
    fn status_carries_code_reason_and_details() {
        let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": "configmaps \"x\" not found",
                       "reason": "NotFound", "details": {"name": "x", "kind": "configmaps"},
                       "code": 404});
        let body = encode_object(&s);
        assert!(body.starts_with(b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Status"));
        // code = 404 as field 6's varint, last in the message.
        let tail = b"\x30\x94\x03\x1a\x00\x22\x00";
        assert!(body.ends_with(tail), "{body:x?}");
    }
}
