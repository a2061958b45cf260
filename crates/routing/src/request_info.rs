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

/// Segments of a path (after trimming slashes at both ends), consumed from the front without
/// allocating or copying. RequestInfo never looks more than three segments ahead, so a window of
/// the next three is kept and every byte is scanned once; segments are a few bytes long, where a
/// plain byte loop beats `memchr`.
#[derive(Clone, Copy)]
struct Segments<'a> {
    /// The path from the first segment of the window on.
    rest: &'a str,
    /// The next three segments (`None` past the end).
    window: [Option<&'a str>; 3],
    /// What follows the window, not yet split (`None` once the last segment is in the window).
    unscanned: Option<&'a str>,
}

/// `s` without leading and trailing `/` (Go's `strings.Trim(path, "/")`).
fn trim_slashes(s: &str) -> &str {
    let bytes = s.as_bytes();
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

impl<'a> Segments<'a> {
    fn new(path: &'a str) -> Self {
        let rest = trim_slashes(path);
        let mut segments = Segments {
            rest,
            window: [None; 3],
            unscanned: (!rest.is_empty()).then_some(rest),
        };
        segments.window = [segments.scan(), segments.scan(), segments.scan()];
        segments
    }

    /// Splits the next segment off the unscanned part.
    fn scan(&mut self) -> Option<&'a str> {
        let unscanned = self.unscanned?;
        let (segment, after) = match crate::path::split_at_byte(unscanned, b'/') {
            Some((segment, after)) => (segment, Some(after)),
            None => (unscanned, None),
        };
        self.unscanned = after;
        Some(segment)
    }

    /// Whether at least `n` (≤ 3) segments are left.
    fn has(&self, n: usize) -> bool {
        n == 0 || self.window.get(n - 1).is_some_and(Option::is_some)
    }

    fn get(&self, index: usize) -> Option<&'a str> {
        self.window.get(index).copied().flatten()
    }

    fn pop(&mut self) -> Option<&'a str> {
        let first = self.window[0]?;
        self.rest = match self.window[1] {
            Some(_) => self.rest.get(first.len() + 1..).unwrap_or_default(),
            None => "",
        };
        self.window = [self.window[1], self.window[2], self.scan()];
        Some(first)
    }

    /// The segments left, joined by `/` (`None` when none is left).
    fn rest(&self) -> Option<&'a str> {
        self.window[0].map(|_| self.rest)
    }
}

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
        // Every field is computed into a plain local and the struct is built once, in the
        // return value: building it early and filling it in made the compiler move the whole
        // struct (a `memcpy`) on the way out.
        let mut segments = Segments::new(path);
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
        if !segments.has(3) {
            return Ok(non_resource(""));
        }
        let api_prefix = segments.pop().unwrap_or_default();
        if api_prefix != "api" && api_prefix != "apis" {
            return Ok(non_resource(""));
        }
        let mut api_group = "";
        if api_prefix == "apis" {
            if !segments.has(3) {
                return Ok(non_resource(api_prefix));
            }
            api_group = segments.pop().unwrap_or_default();
        }
        let api_version = segments.pop().unwrap_or_default();

        let verb_via_path_prefix;
        let mut verb: &'a str = match segments.get(0) {
            Some(special @ ("watch" | "proxy")) => {
                if !segments.has(2) {
                    let url = match query {
                        Some(q) => format!("{path}?{q}"),
                        None => path.to_owned(),
                    };
                    return Err(RequestInfoError::UnableToDetermineKindAndNamespace { url });
                }
                segments.pop();
                verb_via_path_prefix = true;
                special
            }
            _ => {
                verb_via_path_prefix = false;
                match method {
                    "POST" => "create",
                    "GET" | "HEAD" => "get",
                    "PUT" => "update",
                    "PATCH" => "patch",
                    "DELETE" => "delete",
                    _ => "",
                }
            }
        };

        let mut namespace = "";
        if segments.get(0) == Some("namespaces")
            && let Some(ns) = segments.get(1)
        {
            namespace = ns;
            // `namespaces/<ns>/status|finalize` are subresources of the namespace itself.
            if segments
                .get(2)
                .is_some_and(|s| s != "status" && s != "finalize")
            {
                segments.pop();
                segments.pop();
            }
        }

        let parts = segments.rest();
        let subresource = match segments.get(2) {
            Some(subresource) if verb != "proxy" => subresource,
            _ => "",
        };
        let resource = segments.get(0).unwrap_or_default();
        let mut name = Cow::Borrowed(segments.get(1).unwrap_or_default());

        // Only collection requests read the query; one pass collects everything they need.
        let mut field_selector = Cow::Borrowed("");
        let mut label_selector = Cow::Borrowed("");
        if name.is_empty() {
            let options = ListOptions::scan(query.unwrap_or(""));
            match verb {
                "get" => {
                    let (watch, pinned) = options.list_or_watch();
                    verb = if watch { "watch" } else { "list" };
                    if let Some(pinned) = pinned {
                        name = pinned;
                    }
                }
                "delete" => verb = "deletecollection",
                _ => {}
            }
            if !verb_via_path_prefix && matches!(verb, "list" | "watch" | "deletecollection") {
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

/// apimachinery `IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
pub(crate) fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.bytes().any(|b| b == b'/' || b == b'%')
}
