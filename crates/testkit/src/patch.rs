//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (applied as a merge
//! patch after dropping `$`-directives: lists are replaced, not merged by key), JSON patch
//! (RFC 6902: add, remove, replace, test, copy, move), and server-side apply (applied as a
//! merge patch of the full intent; no field ownership or conflict detection).

use serde_json::Value;

use crate::status::Status;

/// The patch types kube-apiserver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub(crate) fn from_content_type(ct: &str) -> Option<Self> {
        match ct {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub(crate) fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), Status> {
    match kind {
        PatchKind::Merge | PatchKind::Apply => {
            merge(target, patch);
            Ok(())
        }
        PatchKind::Strategic => {
            merge(target, &strip_directives(patch));
            Ok(())
        }
        PatchKind::Json => json_patch(target, patch),
    }
}

/// RFC 7386.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(Vec<String>, String), Status> {
    let invalid = || Status::bad_request(format!("invalid JSON pointer {path:?}"));
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    let mut tokens: Vec<String> = rest.split('/').map(unescape_token).collect();
    let last = tokens.pop().ok_or_else(invalid)?;
    Ok((tokens, last))
}

fn parent<'a>(root: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(root, |cur, t| match cur {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn get(root: &Value, path: &str) -> Option<Value> {
    root.pointer(path).cloned()
}

fn remove(root: &mut Value, path: &str) -> Result<Value, Status> {
    let (tokens, last) = split_pointer(path)?;
    let missing = || {
        Status::bad_request(format!(
            "the server rejected our request due to an error in our request: path {path:?} does not exist"
        ))
    };
    match parent(root, &tokens).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn add(root: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), Status> {
    if path.is_empty() {
        *root = value;
        return Ok(());
    }
    let (tokens, last) = split_pointer(path)?;
    let missing = || {
        Status::bad_request(format!(
            "the server rejected our request due to an error in our request: path {path:?} does not exist"
        ))
    };
    match parent(root, &tokens).ok_or_else(missing)? {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(missing());
            }
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
            } else {
                let i = last.parse::<usize>().map_err(|_| missing())?;
                if replace {
                    *a.get_mut(i).ok_or_else(missing)? = value;
                } else if i <= a.len() {
                    a.insert(i, value);
                } else {
                    return Err(missing());
                }
            }
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn json_patch(target: &mut Value, patch: &Value) -> Result<(), Status> {
    let ops = patch
        .as_array()
        .ok_or_else(|| Status::bad_request("a JSON patch must be an array of operations"))?;
    let mut work = target.clone();
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        let from = op["from"].as_str().unwrap_or("");
        match op["op"].as_str().unwrap_or("") {
            "add" => add(&mut work, path, op["value"].clone(), false)?,
            "replace" => add(&mut work, path, op["value"].clone(), true)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "test" => {
                if get(&work, path).as_ref() != Some(&op["value"]) {
                    return Err(Status::bad_request(format!("testing value {path} failed")));
                }
            }
            "copy" => {
                let v = get(&work, from)
                    .ok_or_else(|| Status::bad_request(format!("path {from:?} does not exist")))?;
                add(&mut work, path, v, false)?;
            }
            "move" => {
                let v = remove(&mut work, from)?;
                add(&mut work, path, v, false)?;
            }
            other => return Err(Status::bad_request(format!("unexpected kind: {other}"))),
        }
    }
    *target = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_drops_directives() {
        let mut t = json!({"data": {"a": "1"}});
        let p = json!({"$setElementOrder/x": [], "data": {"b": "2"}});
        apply(PatchKind::Strategic, &mut t, &p).unwrap();
        assert_eq!(t, json!({"data": {"a": "1", "b": "2"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"data": {"a": "1"}, "list": [1, 2]});
        let p = json!([
            {"op": "add", "path": "/data/b", "value": "2"},
            {"op": "replace", "path": "/data/a", "value": "x"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "remove", "path": "/list/0"},
            {"op": "test", "path": "/data/b", "value": "2"},
            {"op": "move", "from": "/data/b", "path": "/data/c"},
        ]);
        apply(PatchKind::Json, &mut t, &p).unwrap();
        assert_eq!(t, json!({"data": {"a": "x", "c": "2"}, "list": [2, 3]}));
        let failed = json!([{"op": "test", "path": "/data/a", "value": "nope"}]);
        assert_eq!(
            apply(PatchKind::Json, &mut t, &failed).unwrap_err().code,
            400
        );
    }
}
