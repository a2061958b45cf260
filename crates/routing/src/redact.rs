//! Showing a URL that may carry a credential.

/// `url` with the parts that may carry a credential replaced by `<redacted>`: the userinfo
/// (`https://admin:password@host`, `https://token@host`) and the query and fragment
/// (`?token=…`). The URL may be malformed (that is often why it is shown), with raw `/`, `?`
/// or `#` in a password or an `@` in a query; so the userinfo is taken to end at the last
/// `@`, the query to start at the first `?` or `#`, and when the two overlap nothing between
/// the scheme and the end is shown.
///
/// For anything that shows a URL taken from configuration or a caller (logs, `Debug`, error
/// messages): the URL as written may hold credentials.
///
/// ```
/// use kubegate_routing::redact_url;
/// assert_eq!(
///     redact_url("https://admin:pw@k8s:6443/base?token=s3cret"),
///     "https://<redacted>@k8s:6443/base?<redacted>"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let userinfo_end = rest.rfind('@');
    let query_start = rest.find(['?', '#']);
    let visible_start = userinfo_end.map_or(0, |at| at + 1);
    let visible_end = query_start.unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len() + 2 * REDACTED.len());
    out.push_str(scheme);
    if userinfo_end.is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    if let Some(visible) = rest.get(visible_start..visible_end) {
        out.push_str(visible);
    }
    if let Some(at) = query_start {
        // `?` or `#`, whichever came first, and the rest hidden.
        out.push_str(&rest[at..at + 1]);
        out.push_str(REDACTED);
    }
    out
}
