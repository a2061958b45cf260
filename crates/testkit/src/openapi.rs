//! `/openapi/v3` and `/openapi/v3/<gv>?hash=`: enough for kubectl's field-validation probe
//! (a PATCH operation per kind, tagged with its GVK, that takes `fieldValidation`) and for
//! `kubectl apply`'s schema lookup (a component schema per kind tagged with its GVK).

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::resources::RESOURCES;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvs() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && r.verbs.contains(&"patch"))
    {
        let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        let prefix = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let path = format!("/{}{prefix}/{}/{{name}}", gv_path(group, version), r.plural);
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group
            },
            version,
            r.kind
        );
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(path, json!({
            "patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk[0],
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}},
            }
        }));
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                },
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016X}")
}

/// Serves an OpenAPI v3 path; `None` when not one.
pub(crate) fn serve(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/openapi/v3")?;
    let json_ok = |v: Value| body::json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default());
    if rest.is_empty() || rest == "/" {
        let mut paths = Map::new();
        for (g, v) in gvs() {
            let p = gv_path(g, v);
            let url = format!("/openapi/v3/{p}?hash={}", hash(&document(g, v)));
            paths.insert(p, json!({"serverRelativeURL": url}));
        }
        return Some(json_ok(json!({"paths": paths})));
    }
    let gv = rest.trim_start_matches('/');
    gvs()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == gv)
        .map(|(g, v)| json_ok(document(g, v)))
}
