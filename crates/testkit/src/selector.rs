//! Field and label selectors (equality, inequality, existence; `in`/`notin` for labels).

use serde_json::Value;

use crate::status::Status;
use crate::store::StoredObject;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(v), Some(got)) => v == got,
            (Op::Eq(_), None) => false,
            (Op::Ne(v), got) => got != Some(v.as_str()),
            (Op::In(vs), Some(got)) => vs.iter().any(|v| v == got),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), got) => got.is_none_or(|g| !vs.iter().any(|v| v == g)),
            (Op::Exists, got) => got.is_some(),
            (Op::NotExists, got) => got.is_none(),
        }
    }
}

/// Parsed `fieldSelector` + `labelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

fn split_terms(s: &str) -> Vec<&str> {
    // Commas inside `in (a,b)` do not separate terms.
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

fn parse_term(term: &str, labels: bool) -> Option<Requirement> {
    let req = |key: &str, op| {
        Some(Requirement {
            key: key.trim().to_owned(),
            op,
        })
    };
    if let Some((k, v)) = term.split_once("!=") {
        return req(k, Op::Ne(v.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return req(k, Op::Eq(v.trim().to_owned()));
    }
    if !labels {
        return None;
    }
    if let Some((k, set)) = term.split_once(" notin ") {
        return req(k, Op::NotIn(parse_set(set)?));
    }
    if let Some((k, set)) = term.split_once(" in ") {
        return req(k, Op::In(parse_set(set)?));
    }
    if let Some(k) = term.strip_prefix('!') {
        return req(k, Op::NotExists);
    }
    req(term, Op::Exists)
}

impl Selector {
    pub(crate) fn parse(field: Option<&str>, label: Option<&str>) -> Result<Self, Status> {
        let mut sel = Self::default();
        for term in split_terms(field.unwrap_or("")) {
            let r = parse_term(term, false)
                .filter(|r| matches!(r.key.as_str(), "metadata.name" | "metadata.namespace"))
                .ok_or_else(|| {
                    Status::bad_request(format!(
                        "unable to parse requirement: field label not supported: {term}"
                    ))
                })?;
            sel.fields.push(r);
        }
        for term in split_terms(label.unwrap_or("")) {
            let r = parse_term(term, true).ok_or_else(|| {
                Status::bad_request(format!("unable to parse requirement: {term}"))
            })?;
            sel.labels.push(r);
        }
        Ok(sel)
    }

    pub(crate) fn matches(&self, obj: &StoredObject) -> bool {
        let fields_ok = self.fields.iter().all(|r| {
            let v = match r.key.as_str() {
                "metadata.name" => obj.name(),
                _ => obj.namespace(),
            };
            r.matches(Some(v))
        });
        fields_ok
            && self.labels.iter().all(|r| {
                r.matches(
                    obj.labels()
                        .and_then(|l| l.get(&r.key))
                        .and_then(Value::as_str),
                )
            })
    }
}
