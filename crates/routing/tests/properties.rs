//! Property tests: routing never panics, `rest` is a suffix of the decoded input, and a route's
#![allow(clippy::unwrap_used)]
//! target prefix is literally in the input.

use kubegate_routing::selectors::LabelSelector;
use kubegate_routing::{RequestInfo, Router, Target, decode_path};
use proptest::prelude::*;

fn literal_prefix(target: &Target<'_>, agent: bool) -> String {
    match *target {
        Target::Management => "/kubernetes/management".into(),
        Target::Cluster { cluster } if agent => {
            let _ = cluster;
            "/kubernetes/cluster".into()
        }
        Target::Cluster { cluster } => format!("/kubernetes/cluster/{cluster}"),
        Target::VirtualCluster {
            namespace, name, ..
        } if agent => format!("/kubernetes/virtualcluster/{namespace}/{name}"),
        Target::VirtualCluster {
            cluster,
            namespace,
            name,
        } => format!("/kubernetes/virtualcluster/{cluster}/{namespace}/{name}"),
        Target::ProjectSpace { project, space } => {
            format!("/kubernetes/project/{project}/space/{space}")
        }
        Target::ProjectVirtualCluster {
            project,
            virtual_cluster,
        } => format!("/kubernetes/project/{project}/virtualcluster/{virtual_cluster}"),
        Target::Auth => "/auth".into(),
        Target::Oidc => "/oidc".into(),
        Target::Grafana { cluster } => format!("/grafana/{cluster}"),
        Target::Ops(_) => "/".into(),
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("kubernetes".to_owned()),
        Just("cluster".to_owned()),
        Just("management".to_owned()),
        Just("virtualcluster".to_owned()),
        Just("project".to_owned()),
        Just("space".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("".to_owned()),
        Just("api".to_owned()),
        "[a-z0-9%.\\-]{1,6}",
        ".{0,4}",
    ];
    proptest::collection::vec(segment, 0..9).prop_map(|s| format!("/{}", s.join("/")))
}

/// Label-selector terms: mostly the `key=value` shapes validation shortcuts, with the keys,
/// values and operators that make them invalid or send them to the full parser.
fn label_term_strategy() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just(String::new()),
        Just("in".to_owned()),
        Just("example.com/app".to_owned()),
        Just("a/b/c".to_owned()),
        Just("-x".to_owned()),
        "[a-zA-Z0-9._/-]{1,8}",
        "[a-z]{60,70}",
        ".{0,3}",
    ];
    let op = prop_oneof![
        Just("="),
        Just("=="),
        Just("!="),
        Just("!"),
        Just(" in "),
        Just(">"),
        Just(""),
        Just(" = "),
    ];
    (word.clone(), op, word).prop_map(|(k, op, v)| format!("{k}{op}{v}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn routes_are_honest(path in path_strategy(), query in proptest::option::of(".{0,20}")) {
        for (router, agent) in [(Router::central(), false), (Router::agent("here").unwrap(), true)] {
            if let Ok(route) = router.route(&path, query.as_deref()) {
                let decoded = decode_path(&path).unwrap();
                let prefix = literal_prefix(&route.target, agent);
                // `rest` is a suffix of the decoded path, except that a bare prefix maps to `/`.
                prop_assert!(
                    decoded.ends_with(&*route.rest) || (route.rest == "/" && decoded == prefix)
                );
                prop_assert!(route.rest.starts_with('/'));
                prop_assert!(path.ends_with(route.raw_rest) || route.raw_rest == "/");
                prop_assert!(path.starts_with(&prefix));
                let _ = RequestInfo::parse("GET", &route.rest, route.query);
            }
        }
    }

    #[test]
    fn label_selector_validate_agrees_with_parse(
        selector in proptest::collection::vec(label_term_strategy(), 0..4).prop_map(|t| t.join(","))
    ) {
        prop_assert_eq!(
            LabelSelector::validate(&selector).is_ok(),
            LabelSelector::parse(&selector).is_ok(),
            "{:?}", selector
        );
    }

    #[test]
    fn request_info_never_panics(method in "[A-Za-z]{0,7}", path in ".{0,40}", query in ".{0,40}") {
        let _ = RequestInfo::parse(&method, &path, Some(&query));
    }
}

/// kube-apiserver's `NewRequestInfo` for the path-derived fields, ported line by line over
/// `strings.Split` (a `Vec` of segments), with an empty query.
fn reference_request_info(method: &str, path: &str) -> Result<Vec<String>, ()> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        vec![]
    } else {
        trimmed.split('/').collect()
    };
    let non_resource =
        |prefix: &str| Ok(vec!["false".into(), method.to_lowercase(), prefix.into()]);
    if parts.len() < 3 || !["api", "apis"].contains(&parts[0]) {
        return non_resource("");
    }
    let prefix = parts.remove(0);
    let mut group = "";
    if prefix != "api" {
        if parts.len() < 3 {
            return non_resource(prefix);
        }
        group = parts.remove(0);
    }
    let version = parts.remove(0);
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    };
    if parts[0] == "watch" || parts[0] == "proxy" {
        if parts.len() < 2 {
            return Err(());
        }
        verb = parts.remove(0);
    }
    let mut namespace = "";
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = parts[1];
        if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
            parts.drain(..2);
        }
    }
    let subresource = if parts.len() >= 3 && verb != "proxy" {
        parts[2]
    } else {
        ""
    };
    let name = parts.get(1).copied().unwrap_or("");
    let resource = parts.first().copied().unwrap_or("");
    if name.is_empty() && verb == "get" {
        verb = "list";
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection";
    }
    Ok([
        "true",
        verb,
        prefix,
        group,
        version,
        namespace,
        resource,
        subresource,
        name,
        &parts.join("/"),
    ]
    .map(String::from)
    .to_vec())
}

fn request_info_fields(info: &RequestInfo<'_>) -> Vec<String> {
    if !info.is_resource_request {
        return vec![
            "false".into(),
            info.verb.to_string(),
            info.api_prefix.into(),
        ];
    }
    [
        "true",
        &info.verb,
        info.api_prefix,
        info.api_group,
        info.api_version,
        info.namespace,
        info.resource,
        info.subresource,
        &info.name,
        &info.parts().collect::<Vec<_>>().join("/"),
    ]
    .map(String::from)
    .to_vec()
}

fn api_path_strategy() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("api".to_owned()),
        Just("apis".to_owned()),
        Just("v1".to_owned()),
        Just("apps".to_owned()),
        Just("namespaces".to_owned()),
        Just("default".to_owned()),
        Just("status".to_owned()),
        Just("finalize".to_owned()),
        Just("watch".to_owned()),
        Just("proxy".to_owned()),
        Just("pods".to_owned()),
        Just("web-1".to_owned()),
        Just("exec".to_owned()),
        Just(String::new()),
        "[a-z]{60,140}",
    ];
    (
        proptest::bool::ANY,
        proptest::collection::vec(segment, 0..10),
        proptest::bool::ANY,
    )
        .prop_map(|(lead, segments, trail)| {
            let mut path = segments.join("/");
            if lead {
                path.insert(0, '/');
            }
            if trail {
                path.push('/');
            }
            path
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// RequestInfo's path handling agrees with a line-by-line port of kube-apiserver's.
    #[test]
    fn request_info_agrees_with_the_reference(
        method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PATCH"), Just("PUT"), Just("OPTIONS")],
        path in api_path_strategy(),
    ) {
        let ours = RequestInfo::parse(method, &path, None).map(|info| request_info_fields(&info));
        prop_assert_eq!(ours.map_err(drop), reference_request_info(method, &path), "{} {:?}", method, path);
    }
}

/// Accept headers built from the pieces real ones are made of, and some that are not.
fn accept_strategy() -> impl Strategy<Value = String> {
    let range = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/vnd.kubernetes.protobuf".to_owned()),
        Just("application/yaml".to_owned()),
        Just("*/*".to_owned()),
        Just("*".to_owned()),
        Just("application/*".to_owned()),
        Just("text".to_owned()),
        "[a-z*/ ]{0,12}",
    ];
    let param = prop_oneof![
        Just(";as=Table".to_owned()),
        Just(";v=v1".to_owned()),
        Just(";g=meta.k8s.io".to_owned()),
        Just(";q=0.5".to_owned()),
        Just(";q=0".to_owned()),
        Just(";q=x".to_owned()),
        Just(";stream=watch".to_owned()),
        Just(";a=b=c".to_owned()),
        "[;=a-z0-9. ]{0,8}",
    ];
    let clause = (range, prop::collection::vec(param, 0..3))
        .prop_map(|(r, ps)| format!("{r}{}", ps.concat()));
    prop::collection::vec(clause, 0..20).prop_map(|cs| cs.join(","))
}

proptest! {
    /// Any Accept parses without panicking into at most one range per clause, each made of
    /// what the header says; and `negotiates_protobuf`, which skips the parse for a header
    /// that never names protobuf, agrees with a walk over the parsed ranges.
    #[test]
    fn accept_parsing_is_total_and_protobuf_negotiation_agrees(header in accept_strategy()) {
        use kubegate_routing::accept::{negotiates_protobuf, parse_accept};
        let ranges = parse_accept(&header);
        prop_assert!(ranges.len() <= header.split(',').count());
        for r in &ranges {
            prop_assert!(header.contains(r.type_) && header.contains(r.subtype), "{:?}", r);
        }
        let first_plain = ranges.iter().find(|r| {
            !r.asks_for_conversion()
                && (r.matches("application", "json")
                    || r.matches("application", "yaml")
                    || r.matches("application", "vnd.kubernetes.protobuf"))
        });
        let want = first_plain.is_some_and(|r| {
            !r.matches("application", "json") && !r.matches("application", "yaml")
        });
        prop_assert_eq!(negotiates_protobuf(&header), want, "{}", header);
    }
}
