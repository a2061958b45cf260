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
    /// kube-apiserver's RequestInfo (via `kubegate-routing`); `path` is the decoded path,
    /// `query` the raw query. The error is the message kube answers with a plain-text 500.
    pub(crate) fn parse(method: &str, path: &str, query: Option<&str>) -> Result<Self, String> {
        let ri =
            kubegate_routing::RequestInfo::parse(method, path, query).map_err(|e| e.to_string())?;
        Ok(Self {
            resource_request: ri.is_resource_request,
            verb: ri.verb.into_owned(),
            path: ResourcePath {
                group: ri.api_group.to_owned(),
                version: ri.api_version.to_owned(),
                namespace: ri.namespace.to_owned(),
                resource: ri.resource.to_owned(),
                name: ri.name.into_owned(),
                subresource: ri.subresource.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_paths_this_server_serves() {
        let q = Some("watch=1&fieldSelector=metadata.name%3Dfoo");
        let ri = RequestInfo::parse("GET", "/api/v1/namespaces/default/configmaps", q).unwrap();
        assert_eq!(ri.verb, "watch");
        assert_eq!(ri.path.name, "foo");
        assert_eq!(ri.path.namespace, "default");
        let ri = RequestInfo::parse(
            "GET",
            "/api/v1/namespaces/ns/pods/p/exec",
            Some("command=ls"),
        )
        .unwrap();
        assert_eq!(
            (ri.verb.as_str(), ri.path.subresource.as_str()),
            ("get", "exec")
        );
        let ri =
            RequestInfo::parse("DELETE", "/apis/example.com/v1/namespaces/a/widgets", q).unwrap();
        assert_eq!(ri.verb, "deletecollection");
        assert_eq!(ri.path.group, "example.com");
        let ri = RequestInfo::parse("GET", "/api/v1/namespaces/foo", None).unwrap();
        assert_eq!(
            (ri.path.resource.as_str(), ri.path.name.as_str()),
            ("namespaces", "foo")
        );
        let ri = RequestInfo::parse("GET", "/apis/example.com/v1", None).unwrap();
        assert!(!ri.resource_request);
        let ri = RequestInfo::parse("GET", "/api/v1/watch/namespaces/a/configmaps", None).unwrap();
        assert_eq!(
            (ri.verb.as_str(), ri.path.namespace.as_str()),
            ("watch", "a")
        );
        assert!(RequestInfo::parse("GET", "/api/v1/watch", None).is_err());
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert!(Query::parse(Some("watch")).flag("watch"));
        assert_eq!(
            Query::parse(Some("a=%zz&b=1;c=2&d=x+y")).0,
            vec![("d".into(), "x y".into())]
        );
    }
}
