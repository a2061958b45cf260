//! `meta.k8s.io/v1` Table output (what `kubectl get` asks for), with per-resource columns
//! like kube-apiserver's printers (`negotiate` picks it from the Accept header).

use serde_json::{Value, json};

use crate::meta::age;
use crate::resources::RESOURCES;
use crate::store::StoredObject;

/// What a `Table` row carries in `object` (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// The Table media type kube-apiserver answers with.
pub(crate) const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

pub(crate) fn columns(res: usize) -> Value {
    let name = column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
    );
    let age = column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match RESOURCES[res].plural {
        "pods" => json!([
            name,
            column(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic."
            ),
            column(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod."
            ),
            column(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."
            ),
            age
        ]),
        "configmaps" => json!([
            name,
            column(
                "Data",
                "integer",
                "",
                "Data contains the configuration data."
            ),
            age
        ]),
        "secrets" => json!([
            name,
            column("Type", "string", "", "The type of the secret"),
            column(
                "Data",
                "string",
                "",
                "The total number of data in the secret"
            ),
            age
        ]),
        "namespaces" => json!([
            name,
            column("Status", "string", "", "The status of the namespace"),
            age
        ]),
        _ => json!([name, age]),
    }
}

fn cells(res: usize, v: &Value) -> Value {
    let meta = &v["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let age = age(meta["creationTimestamp"].as_str().unwrap_or(""));
    let count = |field: &str| {
        v.get(field)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match RESOURCES[res].plural {
        "pods" => {
            let containers = v["spec"]["containers"].as_array().map_or(0, Vec::len);
            let phase = v["status"]["phase"].as_str().unwrap_or("Pending");
            let ready = if phase == "Running" { containers } else { 0 };
            json!([name, format!("{ready}/{containers}"), phase, "0", age])
        }
        "configmaps" => json!([name, count("data") + count("binaryData"), age]),
        "secrets" => json!([
            name,
            v["type"].as_str().unwrap_or("Opaque"),
            (count("data") + count("stringData")).to_string(),
            age
        ]),
        "namespaces" => json!([name, v["status"]["phase"].as_str().unwrap_or("Active"), age]),
        _ => json!([name, age]),
    }
}

fn row(res: usize, obj: &StoredObject, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells(res, &obj.value)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.value["metadata"].clone(),
            });
        }
        IncludeObject::Object => row["object"] = obj.value.clone(),
    }
    row
}

/// A Table of `objects`; `with_columns` is false for the 2nd+ event of a watch.
pub(crate) fn table(
    res: usize,
    objects: &[std::sync::Arc<StoredObject>],
    include: IncludeObject,
    list_meta: &Value,
    with_columns: bool,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { columns(res) } else { json!([]) },
        "rows": objects.iter().map(|o| row(res, o, include)).collect::<Vec<_>>(),
    })
}
