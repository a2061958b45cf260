//! kube-apiserver's RequestInfo (apiserver `pkg/endpoints/request/requestinfo.go`), borrowed from
//! the request.

use std::borrow::Cow;

use crate::list_options::ListOptions;
use crate::selectors::{FieldSelector, LabelSelector, SelectorError};

/// What a Kubernetes API request is asking for, computed exactly as kube-apiserver computes it
/// with `APIPrefixes = {api, apis}` and `GrouplessAPIPrefixes = {api}`.
///
/// ```
/// use kubegate_routing::RequestInfo;
///
/// let info = RequestInfo::parse("GET", "/api/v1/namespaces/default/pods", Some("watch=1")).unwrap();
/// assert!(info.is_resource_request);
/// assert_eq!((&*info.verb, info.namespace, info.resource), ("watch", "default", "pods"));
/// assert!(info.is_long_running());
///
/// let info = RequestInfo::parse("GET", "/healthz", None).unwrap();
/// assert!(!info.is_resource_request);
/// assert_eq!(info.verb, "get");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// Whether this is a request for an API resource (as opposed to a non-resource URL).
    pub is_resource_request: bool,
    /// The decoded request path.
    pub path: &'a str,
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`, or `""` for methods kube-apiserver does not map. For
    /// non-resource requests, the lowercased HTTP method.
    pub verb: Cow<'a, str>,
    /// `api` or `apis` when the path starts with one (even if it turns out to be non-resource).
    pub api_prefix: &'a str,
    /// API group; `""` is the core group.
    pub api_group: &'a str,
    /// API version.
    pub api_version: &'a str,
    /// Namespace; `""` for cluster-scoped requests.
    pub namespace: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource, e.g. `status`, `exec`.
    pub subresource: &'a str,
    /// Object name, from the path or from a `metadata.name` field selector on list/watch.
    pub name: Cow<'a, str>,
    /// The raw first `fieldSelector` value of a list, watch or deletecollection request.
    pub field_selector: Cow<'a, str>,
    /// The raw first `labelSelector` value of a list, watch or deletecollection request.
    pub label_selector: Cow<'a, str>,
    /// The segments not consumed as prefix/group/version/verb/namespace, joined by `/`
    /// (`None` for non-resource requests).
    parts: Option<&'a str>,
}

/// The one error kube-apiserver's RequestInfo resolver returns; kube-apiserver answers it with a
/// plain-text 500 (`Internal Server Error: "<uri>": <message>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    /// A `watch` or `proxy` path verb with nothing after it.
    #[error("unable to determine kind and namespace from url, {url}")]
    UnableToDetermineKindAndNamespace {
        /// The request URL (path and query).
        url: String,
    },
}

/// `s` without leading and trailing `/` (Go's `strings.Trim(path, "/")`).
fn trim_slashes(s: &str) -> &str {
    let bytes = s.as_bytes();
    // The usual path has one leading `/` and no trailing one.
    if let [b'/', second, .., last] = bytes
        && *second != b'/'
        && *last != b'/'
    {
        return s.get(1..).unwrap_or_default();
    }
    let mut start = 0;
    let mut end = bytes.len();
    while start < end && bytes[start] == b'/' {
        start += 1;
    }
    while end > start && bytes[end - 1] == b'/' {
        end -= 1;
    }
    // Both ends sit next to ASCII `/` (or at the string's ends): char boundaries.
    s.get(start..end).unwrap_or_default()
}

/// The first segment of a non-empty trimmed path and what follows its `/` (`None` when it is the
/// last segment). Segments are a few bytes long; the search tests eight bytes per step.
fn split_first(path: &str) -> (&str, Option<&str>) {
    match crate::path::split_at_byte(path, b'/') {
        Some((segment, after)) => (segment, Some(after)),
        None => (path, None),
    }
}

/// Every verb RequestInfo gives a request sent with a standard HTTP method: kube's resource
/// verbs, and the lowercase method of a non-resource request (a resource request whose method
/// kube has no verb for gets an empty one). Any other verb is a method the client invented,
/// lowercased: what a metrics label must not take as is (kube-apiserver's `cleanVerb` reports
/// those as `other`).
pub const STANDARD_VERBS: [&str; 15] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "post",
    "put",
    "head",
    "options",
    "connect",
    "trace",
];

fn lowercase_method(method: &str) -> Cow<'_, str> {
    match method {
        "GET" => Cow::Borrowed("get"),
        "POST" => Cow::Borrowed("post"),
        "PUT" => Cow::Borrowed("put"),
        "PATCH" => Cow::Borrowed("patch"),
        "DELETE" => Cow::Borrowed("delete"),
        "HEAD" => Cow::Borrowed("head"),
        "OPTIONS" => Cow::Borrowed("options"),
        "CONNECT" => Cow::Borrowed("connect"),
        "TRACE" => Cow::Borrowed("trace"),
        m if !m.chars().any(char::is_uppercase) => Cow::Borrowed(m),
        m => Cow::Owned(m.to_lowercase()),
    }
}

impl<'a> RequestInfo<'a> {
    /// Computes RequestInfo from the HTTP `method` exactly as sent (case-sensitive), the
    /// percent-**decoded** `path` (what Go calls `req.URL.Path`; see
    /// [`Route::rest`](crate::Route::rest)) and the raw query.
    pub fn parse(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
    ) -> Result<Self, RequestInfoError> {
        let non_resource = |api_prefix| RequestInfo {
            is_resource_request: false,
            path,
            verb: lowercase_method(method),
            api_prefix,
            api_group: "",
            api_version: "",
            namespace: "",
            resource: "",
            subresource: "",
            name: Cow::Borrowed(""),
            field_selector: Cow::Borrowed(""),
            label_selector: Cow::Borrowed(""),
            parts: None,
        };
        // Segments are split off the front one at a time, each exactly once, by a search that
        // tests eight bytes per step; where the rules need to know that more segments follow,
        // what follows the split is `Some`. (A window of the next three segments, kept up to
        // date on every step, cost ≈ 100 instructions more per request.)
        let trimmed = trim_slashes(path);
        if trimmed.is_empty() {
            return Ok(non_resource(""));
        }
        let (api_prefix, after_prefix) = split_first(trimmed);
        let Some((second, Some(after_second))) = after_prefix.map(split_first) else {
            // Fewer than three segments.
            return Ok(non_resource(""));
        };
        if api_prefix != "api" && api_prefix != "apis" {
            return Ok(non_resource(""));
        }
        let (api_group, api_version, rest) = if api_prefix == "apis" {
            let (third, after_third) = split_first(after_second);
            let Some(rest) = after_third else {
                // `apis` needs three segments after it.
                return Ok(non_resource(api_prefix));
            };
            (second, third, rest)
        } else {
            ("", second, after_second)
        };

        // `parts` is the path from `first` (the segment being looked at) on.
        let mut parts = rest;
        let (mut first, mut after_first) = split_first(parts);
        let verb_via_path_prefix = matches!(first, "watch" | "proxy");
        let mut verb: &'a str = if verb_via_path_prefix {
            let Some(after_verb) = after_first else {
                let url = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                return Err(RequestInfoError::UnableToDetermineKindAndNamespace { url });
            };
            let verb = first;
            parts = after_verb;
            (first, after_first) = split_first(parts);
            verb
        } else {
            match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
        };

        let mut namespace = "";
        if first == "namespaces"
            && let Some(after) = after_first
        {
            let (ns, after_ns) = split_first(after);
            namespace = ns;
            // `namespaces/<ns>/status|finalize` are subresources of the namespace itself.
            if let Some(after_ns) = after_ns {
                let (third, after_third) = split_first(after_ns);
                if third != "status" && third != "finalize" {
                    parts = after_ns;
                    (first, after_first) = (third, after_third);
                }
            }
        }

        let resource = first;
        let (name, subresource) = match after_first.map(split_first) {
            None => ("", ""),
            Some((name, None)) => (name, ""),
            Some((name, Some(_))) if verb == "proxy" => (name, ""),
            Some((name, Some(after_name))) => (name, split_first(after_name).0),
        };
        let parts = Some(parts);
        let mut name = Cow::Borrowed(name);

        // Only collection requests read the query: a list or watch for `watch`, the name a
        // field selector pins and the selectors, a deletecollection for the selectors. One pass
        // collects everything they need; an empty query has nothing to give.
        let mut field_selector = Cow::Borrowed("");
        let mut label_selector = Cow::Borrowed("");
        let collection_verb = match verb {
            "get" if name.is_empty() => Some("list"),
            "delete" if name.is_empty() => Some("deletecollection"),
            _ => None,
        };
        if let Some(collection_verb) = collection_verb {
            verb = collection_verb;
            if let Some(query) = query.filter(|q| !q.is_empty()) {
                let options = ListOptions::scan(query);
                if verb == "list" {
                    let (watch, pinned) = options.list_or_watch();
                    if watch {
                        verb = "watch";
                    }
                    if let Some(pinned) = pinned {
                        name = pinned;
                    }
                }
                (field_selector, label_selector) = options.selectors();
            }
        }
        Ok(RequestInfo {
            is_resource_request: true,
            path,
            verb: Cow::Borrowed(verb),
            api_prefix,
            api_group,
            api_version,
            namespace,
            resource,
            subresource,
            name,
            field_selector,
            label_selector,
            parts,
        })
    }

    /// The segments left after prefix, group, version, path verb and namespace were consumed:
    /// `resource/name/subresource/…` (empty for non-resource requests).
    pub fn parts(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.parts.into_iter().flat_map(|p| p.split('/'))
    }

    /// Whether kube-apiserver treats this request as long-running: verbs `watch`/`proxy`,
    /// subresources `attach`, `exec`, `proxy`, `log`, `portforward`, and non-resource paths under
    /// `/debug/pprof/`. Long-running requests get no request timeout.
    pub fn is_long_running(&self) -> bool {
        if matches!(&*self.verb, "watch" | "proxy") {
            return true;
        }
        if self.is_resource_request {
            matches!(
                self.subresource,
                "attach" | "exec" | "proxy" | "log" | "portforward"
            )
        } else {
            self.path.starts_with("/debug/pprof/")
        }
    }

    /// The parsed field selector (for authorizers that look at selectors).
    pub fn field_requirements(&self) -> Result<FieldSelector<'_>, SelectorError> {
        FieldSelector::parse(&self.field_selector)
    }

    /// The parsed label selector (for authorizers that look at selectors).
    pub fn label_requirements(&self) -> Result<LabelSelector<'_>, SelectorError> {
        LabelSelector::parse(&self.label_selector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The shortcut for one leading `/` agrees with trimming every `/` at both ends.
        #[test]
        fn trim_slashes_is_go_trim(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec!["/", "/", "a", "é", "api"]),
                0..8,
            ),
        ) {
            let s = pieces.concat();
            proptest::prop_assert_eq!(trim_slashes(&s), s.trim_matches('/'), "{:?}", s);
        }
    }
}
