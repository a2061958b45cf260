//! Parsing a request path and query the way kube-apiserver's RequestInfo does, for the
//! subset of paths this server serves.

use percent_encoding::percent_decode_str;

/// What a resource request addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) namespace: String,
    pub(crate) resource: String,
    pub(crate) name: String,
    pub(crate) subresource: String,
}

/// Request attributes (kube-apiserver `RequestInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub(crate) resource_request: bool,
    pub(crate) verb: String,
    pub(crate) path: ResourcePath,
}

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let mut out = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            // Go's url.ParseQuery drops pairs containing ';'.
            if pair.contains(';') {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (decode(k), decode(v)) else {
                continue;
            };
            out.push((k, v));
        }
        Self(out)
    }

    /// First value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// apimachinery bool conversion: first value; `0`/`false` → false, anything else → true.
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !(v == "0" || v.eq_ignore_ascii_case("false")))
    }
}

fn decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    // Go drops pairs with invalid escapes.
    let bytes = plus.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return None;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl RequestInfo {
    /// `path` is the decoded path.
    pub(crate) fn parse(method: &str, path: &str, query: &Query) -> Self {
        let non_resource = || Self {
            resource_request: false,
            verb: method.to_ascii_lowercase(),
            path: ResourcePath::default(),
        };
        let trimmed = path.trim_matches('/');
        let segs: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if segs.len() < 3 {
            return non_resource();
        }
        let mut rest: &[&str] = &segs[1..];
        let mut p = ResourcePath::default();
        match segs[0] {
            "api" => {}
            "apis" => {
                if rest.len() < 3 {
                    return non_resource();
                }
                p.group = rest[0].to_owned();
                rest = &rest[1..];
            }
            _ => return non_resource(),
        }
        p.version = rest[0].to_owned();
        rest = &rest[1..];
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
        if rest.first() == Some(&"namespaces") && rest.len() >= 2 {
            p.namespace = rest[1].to_owned();
            if rest.len() >= 3 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        if let Some(r) = rest.first() {
            p.resource = (*r).to_owned();
        }
        if let Some(n) = rest.get(1) {
            p.name = (*n).to_owned();
        }
        if let Some(s) = rest.get(2) {
            p.subresource = (*s).to_owned();
        }
        if p.name.is_empty() && verb == "get" {
            verb = if query.flag("watch") { "watch" } else { "list" }.to_owned();
            if let Some(name) = query
                .get("fieldSelector")
                .and_then(|fs| selector_name(fs))
                .filter(|n| !n.contains('/') && !n.contains('%') && *n != "." && *n != "..")
            {
                p.name = name.to_owned();
            }
        }
        if p.name.is_empty() && verb == "delete" {
            verb = "deletecollection".to_owned();
        }
        Self {
            resource_request: true,
            verb,
            path: p,
        }
    }
}

fn selector_name(fs: &str) -> Option<&str> {
    let mut terms: Vec<&str> = fs.split(',').collect();
    terms.sort_unstable();
    terms.into_iter().find_map(|t| {
        t.strip_prefix("metadata.name==")
            .or_else(|| t.strip_prefix("metadata.name="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_paths_this_server_serves() {
        let q = Query::parse(Some("watch=1&fieldSelector=metadata.name%3Dfoo"));
        let ri = RequestInfo::parse("GET", "/api/v1/namespaces/default/configmaps", &q);
        assert_eq!(ri.verb, "watch");
        assert_eq!(ri.path.name, "foo");
        assert_eq!(ri.path.namespace, "default");
        let ri = RequestInfo::parse(
            "GET",
            "/api/v1/namespaces/ns/pods/p/exec",
            &Query::parse(Some("command=ls")),
        );
        assert_eq!(
            (ri.verb.as_str(), ri.path.subresource.as_str()),
            ("get", "exec")
        );
        let ri = RequestInfo::parse("DELETE", "/apis/example.com/v1/namespaces/a/widgets", &q);
        assert_eq!(ri.verb, "deletecollection");
        assert_eq!(ri.path.group, "example.com");
        let ri = RequestInfo::parse("GET", "/api/v1/namespaces/foo", &Query::default());
        assert_eq!(
            (ri.path.resource.as_str(), ri.path.name.as_str()),
            ("namespaces", "foo")
        );
        let ri = RequestInfo::parse("GET", "/apis/example.com/v1", &Query::default());
        assert!(!ri.resource_request);
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert!(Query::parse(Some("watch")).flag("watch"));
        assert_eq!(
            Query::parse(Some("a=%zz&b=1;c=2&d=x+y")).0,
            vec![("d".into(), "x y".into())]
        );
    }
}
