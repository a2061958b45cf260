//! An upstream's redirect seen from the gateway: where a `Location` points once the client
//! follows it through the gateway's prefix.
//!
//! kube-apiserver's proxy (apimachinery `pkg/util/proxy`) does the same for the `proxy`
//! subresources: `defaultProxyTransport` takes the part of the request path in front of the
//! backend's path (`pathPrepend`), and `Transport.rewriteURL` puts it in front of a `Location`
//! on the backend's host. Two differences, both so that a followed redirect can only reach the
//! upstream that sent it, through the same target:
//!
//! - a `Location` elsewhere (another host, port or scheme, a path outside the upstream's base
//!   path, a non-HTTP scheme) is not passed on unchanged: the caller refuses it;
//! - a relative reference is resolved against the forwarded path (RFC 3986 §5.2) instead of
//!   being left for the client, so `../../..` cannot climb out of the target's prefix; and
//!   a path that already starts with the prefix gets it again (kube leaves it), so every
//!   upstream path maps onto exactly one gateway path.
//!
//! The result is an absolute path (no scheme or host): the client resolves it against the URL
//! it used, so the scheme and host are its own, as kube's transport sets them from the request.

/// An upstream as a redirect's target is compared with it: `scheme://authority/base_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamOrigin<'a> {
    /// `https` or `http`.
    pub scheme: &'a str,
    /// `host[:port]` as configured.
    pub authority: &'a str,
    /// The path the upstream's URL carries (`/k8s/clusters/c-1`), without a trailing `/`;
    /// empty for none.
    pub base_path: &'a str,
}

/// The part of the client's request path in front of the path forwarded upstream (kube's
/// `pathPrepend`): `request_path` with `upstream_path` trimmed off its end, where a trailing
/// `/` of the request path that the upstream path lacks counts as part of it. `None` when the
/// request path does not end with it (nothing maps one onto the other).
///
/// ```
/// use kubegate_routing::path_prepend;
/// assert_eq!(
///     path_prepend("/kubernetes/cluster/prod/api/v1/pods", "/api/v1/pods"),
///     Some("/kubernetes/cluster/prod")
/// );
/// assert_eq!(path_prepend("/elsewhere", "/api"), None);
/// ```
pub fn path_prepend<'a>(request_path: &'a str, upstream_path: &str) -> Option<&'a str> {
    let prefix = request_path.strip_suffix(upstream_path)?;
    if request_path.ends_with('/') && !upstream_path.ends_with('/') {
        // The request's trailing `/` is the upstream path's too (`/a/test/` for ``).
        prefix.strip_suffix('/')
    } else {
        Some(prefix)
    }
}

/// Where `location`, sent by `upstream` in answer to a request for `forwarded` (the path and
/// query after the base path, as the gateway forwarded them), points through the gateway:
/// `prepend` (see [`path_prepend`]) followed by the upstream path it names, its query and
/// fragment kept. `None` when it points anywhere but the upstream itself.
///
/// ```
/// use kubegate_routing::{UpstreamOrigin, rewrite_location};
/// let upstream = UpstreamOrigin { scheme: "https", authority: "10.0.0.1:6443", base_path: "" };
/// let prefix = "/kubernetes/cluster/prod";
/// let from = "/api/v1/namespaces/web/services/ui/proxy/";
/// assert_eq!(
///     rewrite_location("/api/v1/namespaces/web/services/ui/proxy/login?next=%2F", &upstream, from, prefix)
///         .as_deref(),
///     Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/login?next=%2F")
/// );
/// assert_eq!(rewrite_location("login", &upstream, from, prefix).as_deref(),
///     Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/login"));
/// assert_eq!(rewrite_location("https://evil.example/", &upstream, from, prefix), None);
/// ```
pub fn rewrite_location(
    location: &str,
    upstream: &UpstreamOrigin<'_>,
    forwarded: &str,
    prepend: &str,
) -> Option<String> {
    let (forwarded_path, forwarded_query) = match forwarded.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (forwarded, None),
    };
    let reference = Reference::parse(location)?;
    let full_path = match (reference.scheme, reference.authority) {
        (scheme, Some(authority)) => {
            if scheme.is_some_and(|s| !s.eq_ignore_ascii_case(upstream.scheme))
                || !same_authority(authority, upstream.authority, upstream.scheme)
            {
                return None;
            }
            if reference.path.is_empty() {
                String::from("/")
            } else {
                remove_dot_segments(reference.path)
            }
        }
        // A scheme without an authority (`mailto:`, `javascript:`) is no place on the upstream.
        (Some(_), None) => return None,
        (None, None) => {
            let base = format!("{}{forwarded_path}", upstream.base_path);
            if reference.path.is_empty() {
                base
            } else if reference.path.starts_with('/') {
                remove_dot_segments(reference.path)
            } else {
                let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
                let dir = if dir.is_empty() { "/" } else { dir };
                remove_dot_segments(&format!("{dir}{}", reference.path))
            }
        }
    };
    // An encoded dot segment would be a dot segment to a server that decodes before it cleans.
    if full_path.split('/').any(is_encoded_dot_segment) {
        return None;
    }
    let path = match full_path.strip_prefix(upstream.base_path) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') || upstream.base_path.is_empty() => rest,
        _ => return None,
    };
    let mut out = String::with_capacity(prepend.len() + location.len() + forwarded_path.len());
    out.push_str(prepend);
    out.push_str(path);
    // `//host/…` is a reference to another host (with an empty prefix, `/.//evil.example`
    // and `https://<upstream>//evil.example` both come to that).
    if out.starts_with("//") {
        return None;
    }
    // A relative reference with neither path nor query keeps the request's (RFC 3986 §5.2.2).
    let query = match (reference.scheme, reference.authority, reference.path) {
        (None, None, "") => reference.query.or(forwarded_query),
        _ => reference.query,
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    if let Some(fragment) = reference.fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// A URI reference split as RFC 3986 §3 and appendix B do.
struct Reference<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Reference<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        // Control characters, spaces and backslashes are not URI characters; browsers read a
        // `\` as `/` (`/\evil.example` as `//evil.example`), so nothing with one is guessed at.
        if s.bytes().any(|b| b <= b' ' || b == b'\\' || b == 0x7f) {
            return None;
        }
        let (rest, fragment) = match s.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (s, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (scheme, rest) = match rest.find(':') {
            Some(at)
                if rest[..at].starts_with(|c: char| c.is_ascii_alphabetic())
                    && rest[..at]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                    && !rest[..at].contains('/') =>
            {
                (Some(&rest[..at]), &rest[at + 1..])
            }
            _ => (None, rest),
        };
        let (authority, path) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find('/').unwrap_or(after.len());
                (Some(&after[..end]), &after[end..])
            }
            None => (None, rest),
        };
        Some(Reference {
            scheme,
            authority,
            path,
            query,
            fragment,
        })
    }
}

/// Whether two `host[:port]`s name the same origin under `scheme`: the host compared without
/// case, a port equal to the scheme's default the same as none. A userinfo never matches.
fn same_authority(a: &str, b: &str, scheme: &str) -> bool {
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        "80"
    } else {
        "443"
    };
    let parts = |s: &str| -> Option<(String, String)> {
        if s.contains('@') || s.is_empty() {
            return None;
        }
        // `[v6]:port`, `host:port`, or either without the port.
        let (host, port) = match s.rfind(':') {
            Some(at) if !s[at..].contains(']') => (&s[..at], &s[at + 1..]),
            _ => (s, ""),
        };
        let port = if port.is_empty() { default_port } else { port };
        Some((host.to_ascii_lowercase(), port.to_owned()))
    };
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn is_encoded_dot_segment(segment: &str) -> bool {
    let decoded = segment.replace("%2e", ".").replace("%2E", ".");
    decoded != segment && (decoded == "." || decoded == "..")
}

/// RFC 3986 §5.2.4 on an absolute path: `.` and `..` segments removed, `..` never above the
/// root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &out {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §V5.6 `TestDefaultProxyTransport`: the prefix kube's transport puts in front of a
    /// backend's paths. (Its scheme and host columns are the request URL's own: kubegate writes
    /// a path-only `Location`, which the client resolves against the URL it used.)
    #[test]
    fn v5_6_default_proxy_transport_path_prepend() {
        // (request URL path, location path, pathPrepend)
        for (request, location, prepend) in [
            ("/a/test/location", "/location", "/a/test"),
            ("/a/test/", "", "/a/test"),
            ("/a/test/", "/", "/a/test"),
        ] {
            assert_eq!(
                path_prepend(request, location),
                Some(prepend),
                "{request} {location}"
            );
        }
        assert_eq!(path_prepend("/a/test/location", "/other"), None);
    }

    #[test]
    fn locations_on_the_upstream_are_put_under_the_prefix_and_others_refused() {
        let plain = UpstreamOrigin {
            scheme: "https",
            authority: "k8s.example:6443",
            base_path: "",
        };
        let based = UpstreamOrigin {
            scheme: "https",
            authority: "rancher.example",
            base_path: "/k8s/clusters/c-1",
        };
        let from = "/api/v1/namespaces/web/services/ui/proxy/app/page?v=1";
        let p = "/kubernetes/cluster/prod";
        // (upstream, location, rewritten)
        let table: &[(&UpstreamOrigin<'_>, &str, Option<&str>)] = &[
            // What kube-apiserver's service proxy sends: an absolute path on itself.
            (
                &plain,
                "/api/v1/namespaces/web/services/ui/proxy/login",
                Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/login"),
            ),
            (&plain, "/", Some("/kubernetes/cluster/prod/")),
            (
                &plain,
                "/a/?q=1#top",
                Some("/kubernetes/cluster/prod/a/?q=1#top"),
            ),
            // The upstream's own URL, its host in any case, its port written or not.
            (
                &plain,
                "https://k8s.example:6443/api",
                Some("/kubernetes/cluster/prod/api"),
            ),
            (
                &plain,
                "https://K8S.Example:6443",
                Some("/kubernetes/cluster/prod/"),
            ),
            (
                &plain,
                "//k8s.example:6443/x",
                Some("/kubernetes/cluster/prod/x"),
            ),
            // Relative references, resolved against the forwarded path, never above its root.
            (
                &plain,
                "login",
                Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/app/login"),
            ),
            (
                &plain,
                "../login",
                Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/login"),
            ),
            (
                &plain,
                "./",
                Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/app/"),
            ),
            (
                &plain,
                "../../../../../../../../../kubernetes/cluster/other/api",
                Some("/kubernetes/cluster/prod/kubernetes/cluster/other/api"),
            ),
            (&plain, "/a/./b/../c", Some("/kubernetes/cluster/prod/a/c")),
            (
                &plain,
                "?page=2",
                Some(
                    "/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/app/page?page=2",
                ),
            ),
            (
                &plain,
                "#part",
                Some(
                    "/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/app/page?v=1#part",
                ),
            ),
            // Anywhere else: another host, port, scheme; userinfo; not HTTP at all.
            (&plain, "https://evil.example/api", None),
            (&plain, "https://k8s.example/api", None),
            (&plain, "https://k8s.example:6444/api", None),
            (&plain, "http://k8s.example:6443/api", None),
            (&plain, "//evil.example/api", None),
            (&plain, "https://user@k8s.example:6443/api", None),
            (&plain, "javascript:alert(1)", None),
            (&plain, "/\\evil.example/", None),
            (&plain, "/a b", None),
            (&plain, "/api/%2e%2e/%2E%2E/x", None),
            // An upstream with a base path: paths under it map, paths beside it do not.
            (
                &based,
                "/k8s/clusters/c-1/api/v1/pods",
                Some("/kubernetes/cluster/prod/api/v1/pods"),
            ),
            (
                &based,
                "/k8s/clusters/c-1",
                Some("/kubernetes/cluster/prod/"),
            ),
            (
                &based,
                "https://rancher.example:443/k8s/clusters/c-1/api",
                Some("/kubernetes/cluster/prod/api"),
            ),
            (
                &based,
                "login",
                Some("/kubernetes/cluster/prod/api/v1/namespaces/web/services/ui/proxy/app/login"),
            ),
            (&based, "/k8s/clusters/c-10/api", None),
            (&based, "/k8s/clusters/c-2/api", None),
            (&based, "/dashboard", None),
            (&based, "../../../../../../../../../../x", None),
        ];
        for &(upstream, location, want) in table {
            assert_eq!(
                rewrite_location(location, upstream, from, p).as_deref(),
                want,
                "{location} from {upstream:?}"
            );
        }
    }

    /// With no prefix (an embedder that forwards paths as they came), a path whose first
    /// segment is empty would read as another host: refused.
    #[test]
    fn an_empty_prefix_never_makes_a_reference_to_another_host() {
        let up = origin("https", "k8s.example");
        for location in [
            "https://k8s.example//evil.example/x",
            "/.//evil.example",
            "..//evil.example",
            "//k8s.example//evil.example",
        ] {
            assert_eq!(
                rewrite_location(location, &up, "/a/b", ""),
                None,
                "{location}"
            );
        }
        assert_eq!(
            rewrite_location("/x//y", &up, "/a/b", "").as_deref(),
            Some("/x//y")
        );
        // Under a prefix the same path stays under it.
        assert_eq!(
            rewrite_location("/.//evil.example", &up, "/a/b", "/p").as_deref(),
            Some("/p//evil.example")
        );
    }

    fn origin<'a>(scheme: &'a str, authority: &'a str) -> UpstreamOrigin<'a> {
        UpstreamOrigin {
            scheme,
            authority,
            base_path: "",
        }
    }

    #[test]
    fn ipv6_and_plain_http_authorities_compare_by_origin() {
        let v6 = origin("https", "[2001:db8::1]");
        assert_eq!(
            rewrite_location("https://[2001:db8::1]:443/x", &v6, "/", "/p").as_deref(),
            Some("/p/x")
        );
        assert_eq!(
            rewrite_location("https://[2001:db8::2]/x", &v6, "/", "/p"),
            None
        );
        let http = origin("http", "127.0.0.1:80");
        assert_eq!(
            rewrite_location("http://127.0.0.1/x", &http, "/", "/p").as_deref(),
            Some("/p/x")
        );
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/..", "/"),
            ("/../../x/", "/x/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a//b", "/a//b"),
            ("/", "/"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }
}
