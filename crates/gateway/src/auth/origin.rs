//! Origin checks: which `Origin` a browser request may come from.
//!
//! The gateway's own origin is `https://<Host header>` (it serves TLS only); the configured
//! `auth.allowedOrigins` are accepted as well. Origins are compared after normalisation
//! (lower-case scheme and host, default port dropped), so `https://GW.example:443` and
//! `https://gw.example` are the same origin.

use http::HeaderMap;
use http::header::{HOST, ORIGIN};

use crate::config::AuthConfig;

/// `scheme://host[:port]`, lower-cased, without the scheme's default port. `None` for anything
/// that is not a plain `http`/`https` origin (`null`, paths, user info, garbage).
pub(crate) fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim();
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    // A browser's Origin never carries a path; configured origins may end in `/`.
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    authority_of(authority, default_port).map(|a| format!("{scheme}://{a}"))
}

/// A `host[:port]` authority, lower-cased, without `default_port`.
fn authority_of(authority: &str, default_port: &str) -> Option<String> {
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| matches!(b, b'/' | b'@' | b'?' | b'#') || b.is_ascii_whitespace())
    {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    // `[::1]:443` → the port follows the closing bracket; `host:443` → the last colon.
    let port_start = match authority.rfind(']') {
        Some(end) => authority[end..].find(':').map(|i| end + i),
        None => authority.rfind(':'),
    };
    match port_start {
        Some(i) if &authority[i + 1..] == default_port => Some(authority[..i].to_owned()),
        Some(i) if authority[i + 1..].is_empty() => Some(authority[..i].to_owned()),
        _ => Some(authority),
    }
}

/// The gateway's own origin as the request names it: `https://<Host>`.
pub(crate) fn own_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(HOST)?.to_str().ok()?;
    authority_of(host.trim(), "443").map(|a| format!("https://{a}"))
}

/// The request's single `Origin` header; `Err` when there are several or it is not text.
fn request_origin(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let mut values = headers.get_all(ORIGIN).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Origin header".into());
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| "the Origin header is not text".into())
}

/// Whether `origin` (as sent) is the gateway's own or an allowed one.
fn is_allowed(auth: &AuthConfig, headers: &HeaderMap, origin: &str) -> bool {
    let Some(origin) = normalize(origin) else {
        return false;
    };
    own_origin(headers).as_deref() == Some(origin.as_str())
        || auth
            .allowed_origins
            .iter()
            .filter_map(|o| normalize(o))
            .any(|o| o == origin)
}

/// For cookie-authenticated mutating requests: the `Origin` must be present and allowed.
pub(crate) fn require_same_origin(auth: &AuthConfig, headers: &HeaderMap) -> Result<(), String> {
    match request_origin(headers)? {
        Some(origin) if is_allowed(auth, headers, origin) => Ok(()),
        Some(_) => Err("the request's Origin is not allowed".into()),
        None => Err("the request has no Origin header".into()),
    }
}

/// For requests that carry no ambient credential (login endpoints, upgrades): an `Origin`, when
/// present, must be allowed; a client that sends none (kubectl, curl) is not a browser.
pub(crate) fn refuse_foreign_origin(auth: &AuthConfig, headers: &HeaderMap) -> Result<(), String> {
    match request_origin(headers)? {
        Some(origin) if !is_allowed(auth, headers, origin) => {
            Err("the request's Origin is not allowed".into())
        }
        _ => Ok(()),
    }
}

/// Whether the request asks for a WebSocket upgrade (`Upgrade: websocket`, any case, possibly
/// among other protocols).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn normalization() {
        let cases = [
            ("https://gw.example", Some("https://gw.example")),
            ("https://GW.Example:443", Some("https://gw.example")),
            ("https://gw.example:8443", Some("https://gw.example:8443")),
            ("https://gw.example/", Some("https://gw.example")),
            ("http://gw.example:80", Some("http://gw.example")),
            ("http://gw.example:443", Some("http://gw.example:443")),
            ("https://[::1]:443", Some("https://[::1]")),
            ("https://[::1]:8443", Some("https://[::1]:8443")),
            ("https://[::1]", Some("https://[::1]")),
            ("null", None),
            ("ftp://gw.example", None),
            ("https://", None),
            ("https://gw.example/path", None),
            ("https://user@gw.example", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn same_origin_is_host_over_https() {
        let auth = AuthConfig::default();
        let ok = headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:8443"),
        ]);
        assert!(require_same_origin(&auth, &ok).is_ok());
        let plain_http = headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "http://127.0.0.1:8443"),
        ]);
        assert!(require_same_origin(&auth, &plain_http).is_err());
        let other_port = headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:9443"),
        ]);
        assert!(require_same_origin(&auth, &other_port).is_err());
        let default_port = headers(&[("host", "gw.example"), ("origin", "https://gw.example:443")]);
        assert!(require_same_origin(&auth, &default_port).is_ok());
        let missing = headers(&[("host", "gw.example")]);
        assert!(require_same_origin(&auth, &missing).is_err());
        assert!(refuse_foreign_origin(&auth, &missing).is_ok());
        let twice = headers(&[
            ("host", "gw.example"),
            ("origin", "https://gw.example"),
            ("origin", "https://gw.example"),
        ]);
        assert!(require_same_origin(&auth, &twice).is_err());
        assert!(refuse_foreign_origin(&auth, &twice).is_err());
        let null = headers(&[("host", "gw.example"), ("origin", "null")]);
        assert!(refuse_foreign_origin(&auth, &null).is_err());
    }

    #[test]
    fn allowed_origins_are_accepted() {
        let auth = AuthConfig {
            allowed_origins: vec!["https://ui.example/".into()],
            ..AuthConfig::default()
        };
        let ui = headers(&[("host", "gw.example"), ("origin", "https://UI.example:443")]);
        assert!(require_same_origin(&auth, &ui).is_ok());
        let evil = headers(&[("host", "gw.example"), ("origin", "https://evil.example")]);
        assert!(require_same_origin(&auth, &evil).is_err());
        assert!(refuse_foreign_origin(&auth, &evil).is_err());
    }

    #[test]
    fn websocket_upgrade_detection() {
        assert!(is_websocket_upgrade(&headers(&[("upgrade", "WebSocket")])));
        assert!(is_websocket_upgrade(&headers(&[(
            "upgrade",
            "h2c, websocket"
        )])));
        assert!(!is_websocket_upgrade(&headers(&[("upgrade", "SPDY/3.1")])));
        assert!(!is_websocket_upgrade(&HeaderMap::new()));
    }
}
