//! `/version`, `/api`, `/apis`, `/api/v1`, `/apis/<g>[/<v>]` (legacy and aggregated
//! discovery, negotiated per spec/kubernetes-edges.md §6.1), and `/openapi/v3`.

use http::header::{ETAG, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::resources::{RESOURCES, ResourceDef, groups};
use crate::status::Status;

/// The aggregated discovery media type (`apidiscovery.k8s.io/v2`).
pub(crate) const AGGREGATED: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// How a discovery request wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiscoveryFormat {
    Aggregated,
    Legacy,
    NotAcceptable,
}

/// client-go's `ContentTypeIsGVK` for apidiscovery.k8s.io/v2 APIGroupDiscoveryList:
/// base `application/json` with `g`, `v`, `as` params in any order, extra params tolerated.
pub(crate) fn is_aggregated_media_type(media: &str) -> Result<bool, ()> {
    let mut parts = media.split(';').map(str::trim);
    let base = parts.next().unwrap_or("");
    if base.contains(' ') || !base.contains('/') {
        return Err(());
    }
    let mut g = None;
    let mut v = None;
    let mut r#as = None;
    for p in parts {
        let (k, val) = p.split_once('=').ok_or(())?;
        match k.trim().to_ascii_lowercase().as_str() {
            "g" => g = Some(val.trim()),
            "v" => v = Some(val.trim()),
            "as" => r#as = Some(val.trim()),
            _ => {}
        }
    }
    Ok(base.eq_ignore_ascii_case("application/json")
        && g == Some("apidiscovery.k8s.io")
        && v == Some("v2")
        && r#as == Some("APIGroupDiscoveryList"))
}

/// Accept negotiation for `/api` and `/apis`: the first entry the server can satisfy wins.
/// `v2beta1` (and any other unknown aggregated form) is not recognised and falls through.
pub(crate) fn negotiate(accept: Option<&str>) -> DiscoveryFormat {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return DiscoveryFormat::Legacy;
    };
    for entry in accept.split(',') {
        let entry = entry.trim();
        if is_aggregated_media_type(entry) == Ok(true) {
            // The `profile=nopeer` variant is served the same way here.
            return DiscoveryFormat::Aggregated;
        }
        let mut parts = entry.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        let has_typed_params = parts.any(|p| p.starts_with("g=") || p.starts_with("as="));
        if has_typed_params {
            continue;
        }
        if matches!(base, "application/json" | "application/*" | "*/*") {
            return DiscoveryFormat::Legacy;
        }
    }
    DiscoveryFormat::NotAcceptable
}

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": "v1.34.0-kubegate-testkit",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_resource(r: &ResourceDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
        "shortNames": r.short_names,
        "categories": r.categories,
        "storageVersionHash": format!("{:x}", fnv(r.plural.as_bytes()) & 0xffff_ffff_ffff),
    })];
    for (sub, verbs) in r.subresources {
        let kind = options_kind(sub).unwrap_or(r.kind);
        out.push(json!({
            "name": format!("{}/{sub}", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": verbs,
        }));
    }
    out
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(api_resource)
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(if group.is_empty() {
        json!({"kind": "APIResourceList", "groupVersion": version, "resources": resources})
    } else {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        })
    })
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or_default()})
}

fn aggregated_item(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == *v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|(sub, verbs)| {
                            json!({
                                "subresource": sub,
                                "responseKind": {"group": "", "version": "v1", "kind": options_kind(sub).unwrap_or(r.kind)},
                                "verbs": verbs,
                            })
                        })
                        .collect();
                    let mut res = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs,
                    });
                    if !r.short_names.is_empty() {
                        res["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        res["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        res["subresources"] = json!(subs);
                    }
                    res
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({})
    } else {
        json!({"name": group})
    };
    json!({"metadata": metadata, "versions": versions})
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn aggregated_response(items: &[Value], headers: &HeaderMap) -> Response<Body> {
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    // kube-apiserver's ETag: SHA-512 of `json.Marshal`'s bytes, upper-case hex, quoted; the
    // body as `WriteObjectNegotiated` writes it, with the encoder's closing newline.
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let etag = {
        use sha2::Digest;
        let hex: String = sha2::Sha512::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        format!("\"{hex}\"")
    };
    bytes.push(b'\n');
    let not_modified = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if not_modified {
        body::response(StatusCode::NOT_MODIFIED, AGGREGATED, body::empty())
    } else {
        body::response(StatusCode::OK, AGGREGATED, body::full(bytes))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(http::header::VARY, HeaderValue::from_static("Accept"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public"),
    );
    resp
}

/// Serves a discovery path; `None` if `path` is not one.
/// `GET /`: kube-apiserver's index of the paths it serves (`metav1.RootPaths`, sorted),
/// written as `WriteRawJSON` writes it: indented by two spaces, no trailing newline.
fn root_paths() -> Response<Body> {
    let mut paths = vec![
        "/api".to_owned(),
        "/api/v1".to_owned(),
        "/apis".to_owned(),
        "/apis/".to_owned(),
        "/healthz".to_owned(),
        "/livez".to_owned(),
        "/openapi/v3".to_owned(),
        "/openapi/v3/".to_owned(),
        "/readyz".to_owned(),
        "/version".to_owned(),
    ];
    for (group, versions) in groups() {
        paths.push(format!("/apis/{group}"));
        paths.extend(versions.iter().map(|v| format!("/apis/{group}/{v}")));
    }
    paths.sort();
    paths.dedup();
    body::json(
        StatusCode::OK,
        serde_json::to_vec_pretty(&json!({ "paths": paths })).unwrap_or_default(),
    )
}

pub(crate) fn serve(path: &str, headers: &HeaderMap, host: &str) -> Option<Response<Body>> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let json_ok = |v: Value| body::json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        [""] => Some(root_paths()),
        ["version"] => Some(json_ok(version())),
        ["api"] => Some(match negotiate(accept) {
            DiscoveryFormat::Aggregated => {
                aggregated_response(&[aggregated_item("", &["v1"])], headers)
            }
            DiscoveryFormat::Legacy => json_ok(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            })),
            DiscoveryFormat::NotAcceptable => not_acceptable(),
        }),
        ["apis"] => Some(match negotiate(accept) {
            DiscoveryFormat::Aggregated => aggregated_response(
                &groups()
                    .iter()
                    .map(|(g, vs)| aggregated_item(g, vs))
                    .collect::<Vec<_>>(),
                headers,
            ),
            DiscoveryFormat::Legacy => json_ok(json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": groups().iter().map(|(g, vs)| api_group(g, vs)).collect::<Vec<_>>(),
            })),
            DiscoveryFormat::NotAcceptable => not_acceptable(),
        }),
        ["api", v] => resource_list("", v).map(json_ok),
        ["apis", g] => groups()
            .iter()
            .find(|(name, _)| name == g)
            .map(|(name, vs)| {
                let mut doc = api_group(name, vs);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                json_ok(doc)
            }),
        ["apis", g, v] => resource_list(g, v).map(json_ok),
        _ => None,
    }
}

fn not_acceptable() -> Response<Body> {
    body::status(
        &Status::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ),
        false,
    )
}

/// The options kind kube-apiserver's discovery names for a pod connect subresource.
fn options_kind(subresource: &str) -> Option<&'static str> {
    match subresource {
        "attach" => Some("PodAttachOptions"),
        "exec" => Some("PodExecOptions"),
        "portforward" => Some("PodPortForwardOptions"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V6.1 client-go ContentTypeIsGVK.
    #[test]
    fn v6_1_content_type_is_gvk() {
        let cases = [
            (
                "application/json; g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                Ok(true),
            ),
            (
                "application/json; as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io",
                Ok(true),
            ),
            (
                "application/json; as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io;charset=utf-8",
                Ok(true),
            ),
            ("application/json", Ok(false)),
            ("application/json; charset=UTF-8", Ok(false)),
            ("malformed content type string", Err(())),
        ];
        for (ct, want) in cases {
            assert_eq!(is_aggregated_media_type(ct), want, "{ct}");
        }
    }

    /// V6.2 exact header strings, as the server negotiates them.
    #[test]
    fn v6_2_accept_negotiation() {
        let cases = [
            (
                "client-go discovery (default)",
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                DiscoveryFormat::Aggregated,
            ),
            (
                "client-go discovery (nopeer)",
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                DiscoveryFormat::Aggregated,
            ),
            (
                "client-go legacy discovery",
                "application/json",
                DiscoveryFormat::Legacy,
            ),
            (
                "v2beta1 falls through to legacy",
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                DiscoveryFormat::Legacy,
            ),
            (
                "v2beta1 only",
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
                DiscoveryFormat::NotAcceptable,
            ),
        ];
        for (name, accept, want) in cases {
            assert_eq!(negotiate(Some(accept)), want, "{name}");
        }
        let resp = serve("/apis", &{
            let mut h = HeaderMap::new();
            h.insert(http::header::ACCEPT, HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"));
            h
        }, "127.0.0.1:1").unwrap();
        assert_eq!(resp.headers()[http::header::CONTENT_TYPE], AGGREGATED);
        assert_eq!(resp.headers()[http::header::VARY], "Accept");
        let etag = resp.headers()[ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static(AGGREGATED));
        h.insert(http::header::IF_NONE_MATCH, etag);
        let again = serve("/api", &h, "127.0.0.1:1").unwrap();
        assert_eq!(
            again.status(),
            StatusCode::OK,
            "etag of /apis does not match /api"
        );
        let first = serve("/api", &h, "127.0.0.1:1").unwrap();
        let mut h2 = HeaderMap::new();
        h2.insert(http::header::ACCEPT, HeaderValue::from_static(AGGREGATED));
        h2.insert(http::header::IF_NONE_MATCH, first.headers()[ETAG].clone());
        assert_eq!(
            serve("/api", &h2, "127.0.0.1:1").unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
    }
}
