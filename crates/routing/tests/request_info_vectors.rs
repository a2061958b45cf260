//! Table-driven tests for spec/vectors/kubernetes.md §V1 (apiserver `requestinfo_test.go`).
#![allow(clippy::panic, clippy::type_complexity)]

use kubegate_routing::{RequestInfo, RequestInfoError};

fn split(url: &str) -> (&str, Option<&str>) {
    match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    }
}

/// §V1.1 TestGetAPIRequestInfo success cases.
#[test]
fn v1_1_get_api_request_info() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str, &str, &str, &str, &str, &str, &[&str])] = &[
        // method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts
        ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", &["namespaces"]),
        ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other", &["namespaces", "other"]),
        ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo", "subpath", "not", "a", "subresource"]),
        ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo", &["pods", "foo", "status"]),
        ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo", &["pods", "foo", "proxy", "subpath"]),
        ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other", &["namespaces", "other", "finalize"]),
        ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other", &["namespaces", "other", "status"]),
        ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo", &["pods", "foo"]),
        ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", &["nodes"]),
        ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", &["namespaces"]),
        ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", &["pods"]),
        ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", "", &["pods"]),
        ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "", &["pods"]),
        ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", "", &["pods"]),
    ];
    for &(method, url, verb, prefix, group, version, ns, resource, sub, name, parts) in cases {
        let (path, query) = split(url);
        let info = RequestInfo::parse(method, path, query)
            .unwrap_or_else(|e| panic!("{method} {url}: unexpected error {e}"));
        let case = format!("{method} {url}");
        assert!(info.is_resource_request, "{case}");
        assert_eq!(info.verb, verb, "{case}: verb");
        assert_eq!(info.api_prefix, prefix, "{case}: prefix");
        assert_eq!(info.api_group, group, "{case}: group");
        assert_eq!(info.api_version, version, "{case}: version");
        assert_eq!(info.namespace, ns, "{case}: namespace");
        assert_eq!(info.resource, resource, "{case}: resource");
        assert_eq!(info.subresource, sub, "{case}: subresource");
        assert_eq!(info.name, name, "{case}: name");
        assert_eq!(info.parts().collect::<Vec<_>>(), parts, "{case}: parts");
    }
}

/// §V1.2 TestGetAPIRequestInfo "error cases": no error, not a resource request.
#[test]
fn v1_2_get_api_request_info_error_cases() {
    for (name, url) in [
        ("no resource path", "/"),
        ("just apiversion", "/api/version/"),
        ("just prefix, group, version", "/apis/group/version/"),
        ("apiversion with no resource", "/api/version/"),
        ("bad prefix", "/badprefix/version/resource"),
        ("missing api group", "/apis/version/resource"),
    ] {
        let info = RequestInfo::parse("GET", url, None)
            .unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
        assert!(!info.is_resource_request, "{name}");
        assert_eq!(info.verb, "get", "{name}");
        assert_eq!(info.parts().count(), 0, "{name}");
    }
}

/// §V1.3 TestGetNonAPIRequestInfo.
#[test]
fn v1_3_get_non_api_request_info() {
    for (name, url, resource) in [
        ("simple groupless", "/api/version/resource", true),
        (
            "simple group",
            "/apis/group/version/resource/name/subresource",
            true,
        ),
        ("more steps", "/api/version/resource/name/subresource", true),
        ("group list", "/apis/batch/v1/job", true),
        ("group get", "/apis/batch/v1/job/foo", true),
        ("group subresource", "/apis/batch/v1/job/foo/scale", true),
        ("bad root", "/not-api/version/resource", false),
        (
            "group without enough steps",
            "/apis/extensions/v1beta1",
            false,
        ),
        (
            "group without enough steps 2",
            "/apis/extensions/v1beta1/",
            false,
        ),
        ("not enough steps", "/api/version", false),
        ("one step", "/api", false),
        ("zero step", "/", false),
        ("empty", "", false),
    ] {
        let info = RequestInfo::parse("GET", url, None).unwrap();
        assert_eq!(info.is_resource_request, resource, "{name}");
    }
}

/// §V1.4 TestSelectorParsing.
#[test]
fn v1_4_selector_parsing() {
    #[rustfmt::skip]
    let cases = [
        ("no selector", "GET", "/apis/group/version/resource", "", "list", "", ""),
        ("metadata.name selector", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list", "metadata.name=name1", ""),
        ("metadata.name selector with watch", "GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch", "metadata.name=name1", ""),
        ("random selector", "GET", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "list", "foo=bar", "baz=qux"),
        ("invalid selector with metadata.name", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list", "metadata.name=name1,foo", ""),
        ("invalid selector with metadata.name with watch", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch", "metadata.name=name1,foo", ""),
        ("invalid selector with metadata.name with watch false", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list", "metadata.name=name1,foo", ""),
        ("selector on deletecollection is honored", "DELETE", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "deletecollection", "foo=bar", "baz=qux"),
        ("selector on repeated param matches parsed param", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=foo&fieldSelector=metadata.name=bar&labelSelector=foo=bar&labelSelector=foo=baz", "foo", "list", "metadata.name=foo", "foo=bar"),
        ("selector on other verb is ignored", "GET", "/apis/group/version/resource/name?fieldSelector=foo=bar&labelSelector=foo=bar", "name", "get", "", ""),
        ("selector on deprecated root type watch is not parsed", "GET", "/apis/group/version/watch/resource?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "", "watch", "", ""),
        ("selector on deprecated root item watch is not parsed", "GET", "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "name", "watch", "", ""),
    ];
    for (case, method, url, name, verb, fs, ls) in cases {
        let (path, query) = split(url);
        let info = RequestInfo::parse(method, path, query).unwrap();
        assert_eq!(info.name, name, "{case}: name");
        assert_eq!(info.verb, verb, "{case}: verb");
        assert_eq!(info.field_selector, fs, "{case}: fieldSelector");
        assert_eq!(info.label_selector, ls, "{case}: labelSelector");
    }
}

/// §1.2 step 7: a path verb with nothing after it.
#[test]
fn path_verb_without_resource_is_an_error() {
    for url in ["/api/v1/watch", "/apis/apps/v1/proxy"] {
        let err = RequestInfo::parse("GET", url, Some("x=1")).unwrap_err();
        assert_eq!(
            err,
            RequestInfoError::UnableToDetermineKindAndNamespace {
                url: format!("{url}?x=1")
            }
        );
        assert_eq!(
            err.to_string(),
            format!("unable to determine kind and namespace from url, {url}?x=1")
        );
    }
}

/// §1.2 steps 7 and 1: method mapping is exact and case-sensitive; non-resource verbs are the
/// lowercased method.
#[test]
fn method_mapping() {
    for (method, verb) in [
        ("OPTIONS", ""),
        ("CONNECT", ""),
        ("get", ""),
        ("Post", ""),
        ("GET", "get"),
    ] {
        let info = RequestInfo::parse(method, "/api/v1/namespaces/a/pods/p", None).unwrap();
        assert_eq!(info.verb, verb, "{method}");
    }
    for (method, verb) in [
        ("GET", "get"),
        ("POST", "post"),
        ("Custom", "custom"),
        ("x", "x"),
    ] {
        assert_eq!(
            RequestInfo::parse(method, "/healthz", None).unwrap().verb,
            verb
        );
    }
}

/// §1.2 step 10: Go's bool conversion and the decode-failure fallback.
#[test]
fn watch_bool_and_decode_failure_fallback() {
    #[rustfmt::skip]
    let cases = [
        ("watch", "watch"), ("watch=", "watch"), ("watch=no", "watch"), ("watch=FALSE", "list"),
        ("watch=0", "list"), ("watch=1&watch=0", "watch"), ("watch=0&watch=1", "list"), ("", "list"),
        // A failing option discards everything parsed but the raw watch value still counts.
        ("limit=abc&watch=true", "watch"), ("limit=abc", "list"), ("timeoutSeconds=1.5&watch", "watch"),
        ("labelSelector=a%20b&watch=false", "list"),
        // `;` drops the pair (Go >= 1.17), `+` is a space, invalid escapes drop the pair.
        ("watch=true;x=1", "list"), ("watch=%zz", "list"), ("w%61tch=1", "watch"),
    ];
    for (query, verb) in cases {
        let info = RequestInfo::parse("GET", "/api/v1/pods", Some(query)).unwrap();
        assert_eq!(info.verb, verb, "?{query}");
    }
}

/// §1.2 step 10: the derived name must be a valid path segment name, and a failed decode keeps
/// the name out even if the field selector alone was fine.
#[test]
fn field_selector_names() {
    #[rustfmt::skip]
    let cases = [
        ("fieldSelector=metadata.name%3Dweb", "web"),
        ("fieldSelector=metadata.name==web", "web"),
        ("fieldSelector=metadata.name!=web", ""),
        ("fieldSelector=metadata.name=..", ""),
        ("fieldSelector=metadata.name=a%25b", ""),
        ("fieldSelector=metadata.name=b,metadata.name=a", "a"),
        ("fieldSelector=metadata.name=web&limit=x", ""),
        ("fieldSelector=metadata.name=web&labelSelector=%3D%3D", ""),
        ("fieldSelector=metadata.name=a+b", "a b"),
        (r"fieldSelector=metadata.name=a\,b", "a,b"),
    ];
    for (query, name) in cases {
        let info = RequestInfo::parse("GET", "/api/v1/namespaces/x/pods", Some(query)).unwrap();
        assert_eq!(info.name, name, "?{query}");
        assert_eq!(info.resource, "pods");
    }
}

/// §1.3 long-running classification.
#[test]
fn long_running() {
    for (method, url, long) in [
        ("GET", "/api/v1/pods?watch=1", true),
        ("GET", "/api/v1/watch/pods", true),
        ("GET", "/api/v1/namespaces/a/pods/p/log", true),
        ("POST", "/api/v1/namespaces/a/pods/p/exec", true),
        ("GET", "/api/v1/namespaces/a/pods/p/attach", true),
        ("POST", "/api/v1/namespaces/a/pods/p/portforward", true),
        ("GET", "/api/v1/namespaces/a/services/s/proxy/x", true),
        ("GET", "/api/v1/proxy/namespaces/a/pods/p", true),
        ("GET", "/debug/pprof/profile", true),
        ("GET", "/api/v1/pods", false),
        ("GET", "/api/v1/namespaces/a/pods/p/status", false),
        ("GET", "/debug/pprof", false),
        ("GET", "/apis", false),
    ] {
        let (path, query) = split(url);
        let info = RequestInfo::parse(method, path, query).unwrap();
        assert_eq!(info.is_long_running(), long, "{method} {url}");
    }
}

/// Inner `//` gives empty segments, as Go's `strings.Split` does.
#[test]
fn empty_inner_segments() {
    let info = RequestInfo::parse("GET", "/api/v1//pods", None).unwrap();
    assert!(info.is_resource_request);
    assert_eq!(info.resource, "");
    assert_eq!(info.name, "pods");
    assert_eq!(info.parts().collect::<Vec<_>>(), ["", "pods"]);
}

/// Parsed requirements are available to authorizers.
#[test]
fn parsed_requirements() {
    let info = RequestInfo::parse(
        "GET",
        "/api/v1/pods",
        Some("labelSelector=app%3Dweb,tier+in+(a,b)&fieldSelector=spec.nodeName%3Dn1"),
    )
    .unwrap();
    assert_eq!(info.label_requirements().unwrap().requirements().len(), 2);
    let fields = info.field_requirements().unwrap();
    assert_eq!(fields.requires_exact_match("spec.nodeName"), Some("n1"));
}

/// `STANDARD_VERBS` holds every verb a standard method can get, on resource and non-resource
/// paths alike (or it gets none: kube leaves the verb empty for a resource request whose method
/// it has no verb for), and nothing a client can invent.
#[test]
fn standard_methods_give_standard_verbs() {
    use kubegate_routing::STANDARD_VERBS;
    let methods = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    let paths = [
        ("/api/v1/namespaces/default/pods", None),
        ("/api/v1/namespaces/default/pods", Some("watch=true")),
        ("/api/v1/namespaces/default/pods/p", None),
        ("/api/v1/watch/namespaces/default/pods", None),
        ("/api/v1/proxy/namespaces/default/pods/p", None),
        ("/apis/apps/v1/deployments", None),
        ("/healthz", None),
        ("/version", None),
    ];
    for method in methods {
        for (path, query) in paths {
            let info = RequestInfo::parse(method, path, query).unwrap();
            assert!(
                info.verb.is_empty() || STANDARD_VERBS.contains(&&*info.verb),
                "{method} {path}: {}",
                info.verb
            );
        }
    }
    let invented = RequestInfo::parse("PROPFIND", "/healthz", None).unwrap();
    assert!(!STANDARD_VERBS.contains(&&*invented.verb));
}
