//! Decoding the Kubernetes protobuf request bodies kubectl's generators send
//! (`kubectl create configmap|secret|namespace`): the `k8s\0` + `runtime.Unknown` envelope
//! and the few messages involved, into the JSON objects the store keeps. Other kinds are
//! answered with 415.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// The protobuf media type.
pub(crate) const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// `runtime.Unknown`'s magic prefix.
pub(crate) const MAGIC: &[u8] = b"k8s\0";

/// One field of a message.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next (field number, value), `Some(Err)` on malformed input.
    fn next_field(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let key = self.varint()?;
            let field = match key & 7 {
                0 => Field::Varint(self.varint()?),
                1 => Field::Bytes(self.take(8)?),
                2 => {
                    let len = usize::try_from(self.varint()?).ok()?;
                    Field::Bytes(self.take(len)?)
                }
                5 => Field::Bytes(self.take(4)?),
                _ => return None,
            };
            Some((key >> 3, field))
        })();
        Some(parsed.ok_or(()))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next_field() {
        out.push(f.map_err(|()| "malformed protobuf".to_owned())?);
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in protobuf string".to_owned())
}

/// A `map<string, X>` entry: key = 1, value = 2.
fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value) = (String::new(), &b[..0]);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = string(k)?,
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_str(obj: &mut Map<String, Value>, field: &str, b: &[u8]) -> Result<(), String> {
    let (k, v) = map_entry(b)?;
    let map = obj.entry(field).or_insert_with(|| json!({}));
    map[k] = Value::String(string(v)?);
    Ok(())
}

fn insert_bytes(obj: &mut Map<String, Value>, field: &str, b: &[u8]) -> Result<(), String> {
    let (k, v) = map_entry(b)?;
    let map = obj.entry(field).or_insert_with(|| json!({}));
    map[k] = Value::String(STANDARD.encode(v));
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            // Go's marshaler writes every string field; its JSON leaves the empty ones out.
            (_, Field::Bytes([])) if matches!(n, 1 | 2 | 3 | 6) => {}
            (1, Field::Bytes(v)) => drop(m.insert("name".into(), json!(string(v)?))),
            (2, Field::Bytes(v)) => drop(m.insert("generateName".into(), json!(string(v)?))),
            (3, Field::Bytes(v)) => drop(m.insert("namespace".into(), json!(string(v)?))),
            (6, Field::Bytes(v)) => drop(m.insert("resourceVersion".into(), json!(string(v)?))),
            (11, Field::Bytes(v)) => insert_str(&mut m, "labels", v)?,
            (12, Field::Bytes(v)) => insert_str(&mut m, "annotations", v)?,
            (14, Field::Bytes(v)) => {
                let list = m.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(string(v)?));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// A message of string fields, by field number.
fn strings(b: &[u8], names: &[(u64, &str)]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (Some((_, name)), Field::Bytes(v)) = (names.iter().find(|(k, _)| *k == n), f) {
            m.insert((*name).to_owned(), json!(string(v)?));
        }
    }
    Ok(Value::Object(m))
}

fn access_review_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                let names = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                spec.insert("resourceAttributes".into(), strings(v, &names)?);
            }
            (2, Field::Bytes(v)) => {
                let names = [(1, "path"), (2, "verb")];
                spec.insert("nonResourceAttributes".into(), strings(v, &names)?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

fn decode_kind(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    o.insert("kind".into(), json!(kind));
    o.insert("apiVersion".into(), json!(api_version));
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(v)) => drop(o.insert("metadata".into(), object_meta(v)?)),
            ("ConfigMap", 2, Field::Bytes(v)) => insert_str(&mut o, "data", v)?,
            ("ConfigMap", 3, Field::Bytes(v)) => insert_bytes(&mut o, "binaryData", v)?,
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                drop(o.insert("immutable".into(), json!(v != 0)));
            }
            ("Secret", 2, Field::Bytes(v)) => insert_bytes(&mut o, "data", v)?,
            ("Secret", 3, Field::Bytes([])) => {}
            ("Secret", 3, Field::Bytes(v)) => drop(o.insert("type".into(), json!(string(v)?))),
            ("Secret", 4, Field::Bytes(v)) => insert_str(&mut o, "stringData", v)?,
            ("SelfSubjectAccessReview", 2, Field::Bytes(v)) => {
                o.insert("spec".into(), access_review_spec(v)?);
            }
            ("Namespace", 2, Field::Bytes(v)) => {
                let mut finalizers = Vec::new();
                for (n, f) in fields(v)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        finalizers.push(json!(string(s)?));
                    }
                }
                o.insert("spec".into(), json!({"finalizers": finalizers}));
            }
            ("Namespace", 3, Field::Bytes(v)) => {
                let mut status = Map::new();
                for (n, f) in fields(v)? {
                    if let (1, Field::Bytes(p)) = (n, f)
                        && !p.is_empty()
                    {
                        status.insert("phase".into(), json!(string(p)?));
                    }
                }
                o.insert("status".into(), Value::Object(status));
            }
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

/// Decodes a protobuf request body into JSON. Errors are messages for a 400/415 Status.
pub(crate) fn decode(body: &[u8]) -> Result<Value, Unsupported> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        Unsupported::Malformed("provided object is not a protobuf message".to_owned())
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &envelope[..0]);
    for (n, f) in fields(envelope).map_err(Unsupported::Malformed)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).map_err(Unsupported::Malformed)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => {
                            api_version = string(v).map_err(Unsupported::Malformed)?
                        }
                        (2, Field::Bytes(v)) => kind = string(v).map_err(Unsupported::Malformed)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(v)) => raw = v,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap" | "Secret" | "Namespace")
        | ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            decode_kind(&api_version, &kind, raw).map_err(Unsupported::Malformed)
        }
        ("v1", "ConfigMapList" | "SecretList" | "NamespaceList") => {
            list(&api_version, &kind, raw).map_err(Unsupported::Malformed)
        }
        ("v1", "Status") => status(raw).map_err(Unsupported::Malformed),
        _ => Err(Unsupported::Kind(format!("{api_version}, Kind={kind}"))),
    }
}

/// A `ListMeta` message as JSON, empty fields left out.
fn list_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (2, Field::Bytes(v)) if !v.is_empty() => {
                m.insert("resourceVersion".into(), json!(string(v)?));
            }
            (3, Field::Bytes(v)) if !v.is_empty() => {
                m.insert("continue".into(), json!(string(v)?));
            }
            (4, Field::Varint(v)) => drop(m.insert("remainingItemCount".into(), json!(v))),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// A `<Kind>List`: its metadata and items (items carry no kind, as in kube's JSON lists).
fn list(api_version: &str, list_kind: &str, raw: &[u8]) -> Result<Value, String> {
    let kind = list_kind.strip_suffix("List").unwrap_or(list_kind);
    let mut metadata = json!({});
    let mut items = Vec::new();
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(v)) => metadata = list_meta(v)?,
            (2, Field::Bytes(v)) => {
                let mut item = decode_kind(api_version, kind, v)?;
                if let Some(o) = item.as_object_mut() {
                    o.remove("kind");
                    o.remove("apiVersion");
                }
                items.push(item);
            }
            _ => {}
        }
    }
    Ok(json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": items}))
}

/// A `Status`: status, message, reason and code (details are left out).
fn status(raw: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    o.insert("kind".into(), json!("Status"));
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("metadata".into(), json!({}));
    for (n, f) in fields(raw)? {
        match (n, f) {
            (2, Field::Bytes(v)) if !v.is_empty() => {
                drop(o.insert("status".into(), json!(string(v)?)))
            }
            (3, Field::Bytes(v)) if !v.is_empty() => {
                drop(o.insert("message".into(), json!(string(v)?)))
            }
            (4, Field::Bytes(v)) if !v.is_empty() => {
                drop(o.insert("reason".into(), json!(string(v)?)))
            }
            (6, Field::Varint(v)) => drop(o.insert("code".into(), json!(v))),
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

/// Reads a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) as JSON, for tests that ask
/// for `application/vnd.kubernetes.protobuf`: ConfigMap, Secret, Namespace, their lists and
/// Status (without details). Empty string fields are left out,
/// as kube's JSON leaves them out.
pub fn decode_protobuf(body: &[u8]) -> Result<Value, String> {
    decode(body).map_err(|e| match e {
        Unsupported::Malformed(m) => m,
        Unsupported::Kind(k) => format!("no protobuf decoder for {k}"),
    })
}

/// Takes one watch event off the front of `buf`, the bytes of an
/// `application/vnd.kubernetes.protobuf;stream=watch` body read so far: a 4-byte big-endian
/// length, then a `WatchEvent{type, object: RawExtension{raw}}` whose raw is an object as
/// [`decode_protobuf`] reads it. `None` while the next frame is not complete yet.
pub fn decode_protobuf_watch_event(buf: &mut Vec<u8>) -> Option<Result<(String, Value), String>> {
    let header: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(header)).ok()?;
    if buf.len() < 4 + len {
        return None;
    }
    let frame: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
    Some((|| {
        let (mut kind, mut object) = (String::new(), None);
        for (n, f) in fields(&frame)? {
            match (n, f) {
                (1, Field::Bytes(v)) => kind = string(v)?,
                (2, Field::Bytes(raw_ext)) => {
                    for (n, f) in fields(raw_ext)? {
                        if let (1, Field::Bytes(raw)) = (n, f) {
                            object = Some(decode_protobuf(raw)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok((kind, object.ok_or("watch event without an object")?))
    })())
}

/// Why a protobuf body was not decoded.
#[derive(Debug)]
pub(crate) enum Unsupported {
    /// Not valid protobuf (400).
    Malformed(String),
    /// A kind this server has no protobuf decoder for (415).
    Kind(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, k.as_bytes(), &mut e);
        bytes_field(2, v, &mut e);
        e
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let mut meta = Vec::new();
        bytes_field(1, b"cm", &mut meta);
        bytes_field(11, &entry("app", b"x"), &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry("a", b"b"), &mut cm);
        bytes_field(3, &entry("bin", &[0, 1]), &mut cm);
        let mut tm = Vec::new();
        bytes_field(1, b"v1", &mut tm);
        bytes_field(2, b"ConfigMap", &mut tm);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &tm, &mut body);
        bytes_field(2, &cm, &mut body);
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "cm", "labels": {"app": "x"}},
                   "data": {"a": "b"}, "binaryData": {"bin": "AAE="}})
        );
        assert!(matches!(
            decode(b"k8s\0\x0a\x05"),
            Err(Unsupported::Malformed(_))
        ));
        let mut other = MAGIC.to_vec();
        let mut tm = Vec::new();
        bytes_field(1, b"apps/v1", &mut tm);
        bytes_field(2, b"Deployment", &mut tm);
        bytes_field(1, &tm, &mut other);
        assert!(matches!(decode(&other), Err(Unsupported::Kind(_))));
    }
}
