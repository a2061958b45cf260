//! Header surgery for forwarding: what a client may not send upstream, what the gateway adds.

use http::HeaderMap;
use http::header::{AUTHORIZATION, CONNECTION, HOST, HeaderName, HeaderValue, TE, UPGRADE};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::ext::Identity;

/// Bytes client-go leaves unescaped in an `Impersonate-Extra-` key: HTTP token characters except
/// `%` (client-go `transport/round_trippers.go headerKeyEscape`: escape when not a legal header
/// byte or `%`). Non-ASCII is always escaped by `utf8_percent_encode` with uppercase hex.
const EXTRA_KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'*')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The header-name suffix client-go sends for an extra key.
pub(crate) fn escape_extra_key(key: &str) -> String {
    utf8_percent_encode(key, EXTRA_KEY_ESCAPE).to_string()
}

/// Headers that describe one hop and never cross a proxy (RFC 9110 §7.6.1 + the legacy
/// `Keep-Alive`/`Proxy-Connection`). `Upgrade` is handled separately. `Trailer` is end to end
/// (RFC 9110 §6.6.2): it announces the trailer fields, and hyper sends an HTTP/1.1 peer only
/// the ones announced.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "te" | "transfer-encoding"
    ) || name.starts_with("proxy-")
}

/// Whether a `TE` value lists `trailers` (a comma list, any case).
fn accepts_trailers(te: &HeaderValue) -> bool {
    te.as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// `httpstream.IsUpgradeRequest`: any `Connection` value containing `upgrade`, case-insensitively.
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"upgrade"))
    })
}

fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a client's header (or trailer) field must never reach an upstream, whatever
/// `Connection` names: it describes one hop, or it carries or claims an identity (`Host` is set
/// for the upstream by the client connection). A name with `_` is judged as if each were `-`:
/// CGI, WSGI and PHP servers behind a `proxy` subresource, and nginx with
/// `underscores_in_headers on`, read `Impersonate_User` as `Impersonate-User`.
fn is_withheld(name: &str) -> bool {
    let withheld = |name: &str| {
        is_hop_by_hop(name)
            || name == "upgrade"
            || name == "host"
            || name == "authorization"
            || name.starts_with("impersonate-")
            || name.starts_with("x-remote-")
    };
    withheld(name) || (name.contains('_') && withheld(&name.replace('_', "-")))
}

/// Removes from a client request everything that must not reach an upstream: hop-by-hop headers
/// (and those `Connection` names), `Host`, `Authorization`, every `Impersonate-*` and
/// `X-Remote-*`, and a bearer token offered as a WebSocket subprotocol (see
/// [`strip_bearer_protocols`]). For upgrades, `Connection: Upgrade` and `Upgrade` are re-set
/// afterwards by the caller. A client that accepts trailers (`TE` listing `trailers`) keeps
/// saying so with `TE: trailers` alone, as Go's ReverseProxy does: an upstream may then send
/// them. Returns the client's single `Authorization` value (for passthrough mode).
pub(crate) fn strip_request(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let nominated = connection_tokens(headers);
    let auth = single_authorization(headers);
    let mut te = false;
    let mut subprotocols = false;
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            te |= n == "te";
            subprotocols |= n == "sec-websocket-protocol";
            is_withheld(n) || nominated.iter().any(|t| t == n)
        })
        .cloned()
        .collect();
    let trailers = te && headers.get_all(TE).iter().any(accepts_trailers);
    for name in doomed {
        headers.remove(&name);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if subprotocols {
        strip_bearer_protocols(headers);
    }
    auth
}

/// Removes from a client request's trailers what [`strip_request`] removes from its headers
/// (bar the `Connection` names, which name header fields). An HTTP/1.1 upstream is sent the
/// trailers the request's `Trailer` header announces, and an HTTP/2 one all of them: without
/// this, `Trailer: Impersonate-User` and a trailer of that name would carry a client's claim
/// past the gateway, to any upstream or intermediary that reads trailers as headers.
pub(crate) fn strip_request_trailers(trailers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| is_withheld(name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        trailers.remove(&name);
    }
}

/// The WebSocket subprotocol that carries a bearer token (kube-apiserver's
/// `request/websocket` authenticator: a browser cannot set `Authorization` on a WebSocket).
const BEARER_PROTOCOL_PREFIX: &[u8] = b"base64url.bearer.authorization.k8s.io.";
const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");

/// Removes every `base64url.bearer.authorization.k8s.io.<token>` entry from
/// `Sec-WebSocket-Protocol`. It is a credential like `Authorization`: an upstream
/// kube-apiserver that is sent one authenticates the request as that token's user when the
/// request has no other credential (passthrough of a token it does not accept), so the
/// gateway's authorization and audit would have named someone else. The other subprotocols
/// are kept, joined by `,` as kube-apiserver rejoins them after taking the token out; the
/// header goes when none is left. An entry is taken for a token if it holds the prefix
/// anywhere, in any case: kube-apiserver trims Unicode spaces (Go's `strings.TrimSpace`) before
/// it looks for the prefix, and another upstream may read entries more loosely still, so an
/// entry led by a no-break space or any other byte is a token all the same.
fn strip_bearer_protocols(headers: &mut HeaderMap) {
    let is_bearer = |p: &[u8]| {
        p.windows(BEARER_PROTOCOL_PREFIX.len())
            .any(|w| w.eq_ignore_ascii_case(BEARER_PROTOCOL_PREFIX))
    };
    let offered = || {
        headers
            .get_all(&SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
    };
    if !offered().any(is_bearer) {
        return;
    }
    let kept: Vec<&[u8]> = offered()
        .filter(|p| !p.is_empty() && !is_bearer(p))
        .collect();
    let joined = kept.join(&b","[..]);
    headers.remove(&SEC_WEBSOCKET_PROTOCOL);
    // The kept entries are parts of valid header values, so their join is one too.
    if let Ok(value) = HeaderValue::from_bytes(&joined)
        && !joined.is_empty()
    {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
}

/// The `Authorization` header if there is exactly one: duplicates are ambiguous (which one did
/// authentication check?), so passthrough forwards none of them.
pub(crate) fn single_authorization(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut it = headers.get_all(AUTHORIZATION).iter();
    let first = it.next()?.clone();
    if it.next().is_some() {
        None
    } else {
        Some(first)
    }
}

/// Removes hop-by-hop headers from an upstream response (and `Upgrade` unless `keep_upgrade`).
/// A response framed by `Transfer-Encoding` also loses any `Content-Length`: hyper decoded the
/// body by its chunks, and the length would misframe it for the client (RFC 9112 §6.3: an
/// intermediary removes it before forwarding).
pub(crate) fn strip_response(headers: &mut HeaderMap, keep_upgrade: bool) {
    let nominated = connection_tokens(headers);
    let mut chunked = false;
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            chunked |= n == "transfer-encoding";
            (is_hop_by_hop(n) && !(keep_upgrade && n == "connection"))
                || (n == "upgrade" && !keep_upgrade)
                || (nominated.iter().any(|t| t == n) && !(keep_upgrade && n == "upgrade"))
        })
        .cloned()
        .collect();
    if chunked {
        doomed.push(http::header::CONTENT_LENGTH);
    }
    for name in doomed {
        headers.remove(&name);
    }
}

// Header names as constants: a `&str` name is parsed and validated again on every insert.
const IMPERSONATE_USER: HeaderName = HeaderName::from_static("impersonate-user");
const IMPERSONATE_UID: HeaderName = HeaderName::from_static("impersonate-uid");
const IMPERSONATE_GROUP: HeaderName = HeaderName::from_static("impersonate-group");

/// Why an identity cannot be sent upstream as impersonation headers. The gateway's own checks
/// (RBAC, scopes, audit) saw the identity as it is; the upstream would see another one, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnforwardableIdentity {
    /// The user name is empty (or blank): kube-apiserver takes an empty `Impersonate-User` for
    /// no impersonation, so the request would run as the gateway's own credential.
    #[error("the user has no name")]
    NoName,
    /// A value starts or ends with a space or tab: HTTP/1.1 servers (Go's among them) trim
    /// those from header values, so ` system:masters` would arrive as `system:masters`.
    #[error("its {0} starts or ends with a space or tab, which an upstream would trim off")]
    Padded(&'static str),
    /// A value holds a character no header value can carry (a control character such as a
    /// line break), or an extra key makes no header name.
    #[error("its {0} holds a character an HTTP header cannot carry")]
    NotAHeaderValue(&'static str),
}

/// Checks that `identity` can be impersonated upstream exactly as it is: a name, and no value
/// (name, uid, group, extra key or value) that [`insert_impersonation`] would refuse. An
/// authenticator that takes names from outside (an OIDC claim, a front proxy's header) can
/// call it to refuse such an identity at the door rather than fail each forwarded request.
pub fn check_impersonable(identity: &Identity) -> Result<(), UnforwardableIdentity> {
    check_impersonable_name(identity)?;
    for g in &identity.groups {
        check_impersonable_value(g, "group")?;
    }
    for (key, values) in &identity.extra {
        extra_header_name(key)?;
        for v in values {
            check_impersonable_value(v, "extra value")?;
        }
    }
    Ok(())
}

/// [`check_impersonable`] for the user name and uid alone: what names the user. The reference
/// gateway refuses an authenticated identity whose name fails it (401), and leaves a bad group
/// or extra value to forwarding (a 500 from an impersonating upstream, nothing from a
/// passthrough one, which sends no `Impersonate-*`), so one odd group an identity provider
/// hands over does not lock its user out of everything.
pub fn check_impersonable_name(identity: &Identity) -> Result<(), UnforwardableIdentity> {
    if identity.name.trim().is_empty() {
        return Err(UnforwardableIdentity::NoName);
    }
    check_impersonable_value(&identity.name, "user name")?;
    if !identity.uid.is_empty() {
        check_impersonable_value(&identity.uid, "uid")?;
    }
    Ok(())
}

/// Checks one identity value (`what` names it in the error) as [`check_impersonable`] does:
/// for names that are configured rather than authenticated (users, groups, teams). A scan of
/// the bytes; nothing is built.
pub fn check_impersonable_value(
    value: &str,
    what: &'static str,
) -> Result<(), UnforwardableIdentity> {
    unpadded(value, what)?;
    // `HeaderValue`'s rule: visible ASCII, space, tab, and bytes past ASCII.
    if value
        .bytes()
        .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
    {
        Ok(())
    } else {
        Err(UnforwardableIdentity::NotAHeaderValue(what))
    }
}

/// Refuses a value with leading or trailing spaces or tabs (an HTTP/1.1 server trims them).
fn unpadded(value: &str, what: &'static str) -> Result<(), UnforwardableIdentity> {
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        Err(UnforwardableIdentity::Padded(what))
    } else {
        Ok(())
    }
}

/// The header value for an identity value, per request: `HeaderValue::from_str` checks the
/// bytes itself, so they are scanned once.
fn header_value(s: &str, what: &'static str) -> Result<HeaderValue, UnforwardableIdentity> {
    unpadded(s, what)?;
    HeaderValue::from_str(s).map_err(|_| UnforwardableIdentity::NotAHeaderValue(what))
}

fn extra_header_name(key: &str) -> Result<HeaderName, UnforwardableIdentity> {
    HeaderName::try_from(format!("impersonate-extra-{}", escape_extra_key(key)))
        .map_err(|_| UnforwardableIdentity::NotAHeaderValue("extra key"))
}

/// Adds `Impersonate-User`, `-Uid`, `-Group`, `-Extra-<key>` for `identity`, byte-for-byte as
/// client-go's `ImpersonatingRoundTripper` would, or refuses an identity the upstream would
/// see as another one ([`check_impersonable`]'s rules).
pub(crate) fn insert_impersonation(
    headers: &mut HeaderMap,
    identity: &Identity,
) -> Result<(), UnforwardableIdentity> {
    if identity.name.trim().is_empty() {
        return Err(UnforwardableIdentity::NoName);
    }
    headers.insert(IMPERSONATE_USER, header_value(&identity.name, "user name")?);
    if !identity.uid.is_empty() {
        headers.insert(IMPERSONATE_UID, header_value(&identity.uid, "uid")?);
    }
    for g in &identity.groups {
        headers.append(IMPERSONATE_GROUP, header_value(g, "group")?);
    }
    for (key, values) in &identity.extra {
        let name = extra_header_name(key)?;
        for v in values {
            headers.append(name.clone(), header_value(v, "extra value")?);
        }
    }
    Ok(())
}

/// Appends the client address to `X-Forwarded-For` the way Go's `httputil.ReverseProxy` does:
/// prior values joined with `, `, then the client IP, as one header.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let mut joined = String::with_capacity(48);
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            joined.push_str(s);
            joined.push_str(", ");
        }
    }
    push_ip(&mut joined, ip);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined.into_bytes())) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The most `X-Forwarded-For` addresses an audit event's `sourceIPs` keeps (the first ones,
/// nearest the client): a real proxy chain is a handful long.
pub(crate) const MAX_FORWARDED_SOURCE_IPS: usize = 32;
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client addresses an audit event records, as kube's `utilnet.SourceIPs` finds them
/// (apimachinery `pkg/util/net/http.go`): the entries of the first `X-Forwarded-For` line that
/// are IP addresses, then `X-Real-Ip` if it is one and not in that chain yet, then `remote`
/// (the peer) unless it is the last address already. Each address is written as Go's
/// `net.IP.String` writes it (an IPv4-mapped IPv6 address as IPv4).
///
/// Only addresses are kept, and at most `MAX_FORWARDED_SOURCE_IPS` of them from
/// `X-Forwarded-For` (kube keeps them all; `::,::,…` would be an entry per three bytes of a
/// header any client may send, so the event is bounded here whatever arrives).
pub(crate) fn source_ips(headers: &HeaderMap, remote: Option<std::net::IpAddr>) -> Vec<String> {
    let text = |ip| {
        let mut text = String::with_capacity(15);
        push_ip(&mut text, ip);
        text
    };
    let mut ips = Vec::new();
    let mut last = None;
    // `Header.Get`: the first line only.
    if let Some(chain) = headers.get(X_FORWARDED_FOR) {
        for entry in chain.as_bytes().split(|b| *b == b',') {
            if ips.len() == MAX_FORWARDED_SOURCE_IPS {
                break;
            }
            // `strings.TrimSpace` trims Unicode spaces, so the entry is text first.
            let ip = std::str::from_utf8(entry)
                .ok()
                .and_then(|e| parse_ip_sloppy(e.trim()));
            if let Some(ip) = ip {
                ips.push(text(ip));
                last = Some(ip);
            }
        }
    }
    // Not trimmed, as in kube.
    let real = headers
        .get(X_REAL_IP)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(parse_ip_sloppy);
    if let Some(ip) = real {
        // Equal addresses have equal canonical text.
        let real = text(ip);
        if !ips.contains(&real) {
            ips.push(real);
            last = Some(ip);
        }
    }
    if let Some(ip) = remote.map(|ip| ip.to_canonical())
        && last != Some(ip)
    {
        ips.push(text(ip));
    }
    ips
}

/// k8s.io/utils `net.ParseIPSloppy`: Go's `net.ParseIP` (no zone; std's parsers take the same
/// forms), then, if that fails, once more with the leading zeros of a trailing dotted quad
/// dropped (`010.001.0.1`, `::ffff:01.2.3.4`), as Go's parser took them before 1.17. An
/// IPv4-mapped IPv6 address comes back as IPv4, the address Go's `net.IP` holds for both.
fn parse_ip_sloppy(text: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical());
    }
    // kube's pattern `(^|:)0*(0|[1-9][0-9]*)\.…\.0*(0|[1-9][0-9]*)$`: four runs of digits after
    // the last `:`, or the whole text. (Its optional `/len` only matters to ParseCIDRSloppy:
    // an address with one never parses.)
    let quad_at = text.rfind(':').map_or(0, |colon| colon + 1);
    let (head, quad) = text.split_at(quad_at);
    // Junk (the common case of a failed parse) leaves before anything is allocated.
    if quad.is_empty() || !quad.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let mut stripped = String::with_capacity(text.len());
    stripped.push_str(head);
    let mut fields = 0;
    for field in quad.split('.') {
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if fields > 0 {
            stripped.push('.');
        }
        let digits = field.trim_start_matches('0');
        stripped.push_str(if digits.is_empty() { "0" } else { digits });
        fields += 1;
    }
    if fields != 4 {
        return None;
    }
    stripped
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Appends `ip` as `Display` writes it. Every request comes through here, and an IPv4 address
/// written digit by digit costs a tenth of a trip through `fmt`.
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Re-adds the two headers an upgrade needs after [`strip_request`] removed them.
pub(crate) fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Sets `Host` (HTTP/1.1 connections opened by hand need it explicitly).
pub(crate) fn set_host(headers: &mut HeaderMap, authority: &str) {
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // V3.4 extra-key escaping (client-go TestHeaderEscapeRoundTrip keys).
    #[test]
    fn v3_4_extra_key_escaping() {
        let cases = [
            ("alphabetical", "alphabetical"),
            ("alph4num3r1c", "alph4num3r1c"),
            ("percent%20encoded", "percent%2520encoded"),
            (
                "almost%zzpercent%xxencoded",
                "almost%25zzpercent%25xxencoded",
            ),
            (
                "example.com/percent%20encoded",
                "example.com%2Fpercent%2520encoded",
            ),
            (
                "example.com/ᛒᚥᛏᛖᚥᚢとロビン",
                "example.com%2F%E1%9B%92%E1%9A%A5%E1%9B%8F%E1%9B%96%E1%9A%A5%E1%9A%A2%E3%81%A8%E3%83%AD%E3%83%93%E3%83%B3",
            ),
            ("abc123!#$+.-_*\\^`~|'", "abc123!#$+.-_*%5C^`~|'"),
            ("@=:", "%40%3D%3A"),
        ];
        for (key, want) in cases {
            assert_eq!(escape_extra_key(key), want, "{key}");
            // Round trip as the server does it: lower-case, then PathUnescape.
            let back = percent_encoding::percent_decode_str(&want.to_ascii_lowercase())
                .decode_utf8()
                .unwrap()
                .into_owned();
            assert_eq!(back, key.to_ascii_lowercase(), "{key} round trip");
        }
    }

    // V3.4: client-go ImpersonationConfig → headers.
    #[test]
    fn v3_4_impersonation_config_headers() {
        let id = Identity {
            name: "user".into(),
            uid: "uid-a".into(),
            groups: vec!["one".into(), "two".into()],
            extra: [
                ("first".to_owned(), vec!["A".to_owned(), "a".to_owned()]),
                ("second".to_owned(), vec!["B".to_owned(), "b".to_owned()]),
            ]
            .into(),
        };
        let mut h = HeaderMap::new();
        insert_impersonation(&mut h, &id).unwrap();
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("Impersonate-User"), ["user"]);
        assert_eq!(all("Impersonate-Uid"), ["uid-a"]);
        assert_eq!(all("Impersonate-Group"), ["one", "two"]);
        assert_eq!(all("Impersonate-Extra-First"), ["A", "a"]);
        assert_eq!(all("Impersonate-Extra-Second"), ["B", "b"]);
        assert_eq!(h.len(), 8);
    }

    #[test]
    fn identity_without_uid_sends_no_uid_header() {
        let mut h = HeaderMap::new();
        insert_impersonation(&mut h, &Identity::new("bob", vec![])).unwrap();
        assert!(h.get("impersonate-uid").is_none());
    }

    /// An HTTP/1.1 server trims spaces and tabs around header values: ` system:masters`
    /// checked by the gateway would arrive as `system:masters`. Such values are refused.
    #[test]
    fn identity_values_that_a_server_would_trim_are_rejected() {
        for (name, group) in [
            (" admin", "g"),
            ("admin\t", "g"),
            ("bob", " system:masters"),
            ("bob", "system:masters "),
        ] {
            let mut h = HeaderMap::new();
            let id = Identity::new(name, vec![group.to_owned()]);
            assert!(
                insert_impersonation(&mut h, &id).is_err(),
                "{name:?} {group:?}"
            );
        }
        // Inner spaces are part of the name.
        let mut h = HeaderMap::new();
        assert!(insert_impersonation(&mut h, &Identity::new("jane doe", vec![])).is_ok());
    }

    #[test]
    fn what_makes_an_identity_unforwardable_is_named() {
        use UnforwardableIdentity::*;
        let with_extra = |key: &str, value: &str| {
            let mut id = Identity::new("bob", vec![]);
            id.extra.insert(key.to_owned(), vec![value.to_owned()]);
            id
        };
        for (id, want) in [
            (Identity::new("", vec![]), Err(NoName)),
            (Identity::new(" \t", vec![]), Err(NoName)),
            (Identity::new("bob ", vec![]), Err(Padded("user name"))),
            (
                Identity::new("bob", vec!["\tdevs".into()]),
                Err(Padded("group")),
            ),
            (
                Identity::new("bob\n", vec![]),
                Err(NotAHeaderValue("user name")),
            ),
            (
                Identity::new("b\x7fob", vec![]),
                Err(NotAHeaderValue("user name")),
            ),
            (with_extra("scopes", " x"), Err(Padded("extra value"))),
            (
                with_extra("scopes", "a\rb"),
                Err(NotAHeaderValue("extra value")),
            ),
            (with_extra("example.org/Scopes Ü", "x y"), Ok(())),
            (
                Identity::new("jane doe", vec!["system:authenticated".into()]),
                Ok(()),
            ),
        ] {
            assert_eq!(check_impersonable(&id), want, "{id:?}");
            // What the check refuses, forwarding refuses; what it allows, forwarding sends.
            let mut h = HeaderMap::new();
            assert_eq!(insert_impersonation(&mut h, &id), want, "{id:?}");
        }
        assert_eq!(
            check_impersonable_value("ops ", "group"),
            Err(Padded("group"))
        );
    }

    #[test]
    fn control_characters_in_identity_are_rejected() {
        let mut h = HeaderMap::new();
        assert!(
            insert_impersonation(&mut h, &Identity::new("bob\r\nX-Remote-User: x", vec![]))
                .is_err()
        );
    }

    #[test]
    fn strips_credentials_identity_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer client"),
            ("Impersonate-User", "admin"),
            ("impersonate-group", "system:masters"),
            ("IMPERSONATE-EXTRA-scopes", "x"),
            ("impersonate-uid", "1"),
            ("x-remote-user", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("x-remote-extra-foo", "bar"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "gateway.example"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("audit-id", "abc"),
            // Underscore lookalikes, read as the real names by CGI-style servers.
            ("impersonate_user", "evil"),
            ("X-Remote_User", "evil"),
            ("x_request_id", "1"),
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let auth = strip_request(&mut h);
        assert_eq!(auth.unwrap(), "Bearer client");
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "accept",
                "audit-id",
                "content-length",
                "content-type",
                "te",
                "trailer",
                "x_request_id"
            ]
        );
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["trailer"], "x-checksum");
    }

    #[test]
    fn te_is_reduced_to_trailers_or_removed() {
        for (sent, kept) in [
            (vec!["gzip, Trailers"], Some("trailers")),
            (vec!["gzip", " trailers "], Some("trailers")),
            (vec!["gzip"], None),
            (vec!["trailersx"], None),
        ] {
            let mut h = HeaderMap::new();
            for v in &sent {
                h.append(TE, HeaderValue::from_str(v).unwrap());
            }
            strip_request(&mut h);
            assert_eq!(h.get(TE).map(|v| v.to_str().unwrap()), kept, "{sent:?}");
            assert!(h.get_all(TE).iter().count() <= 1);
        }
    }

    #[test]
    fn trailers_lose_what_headers_lose() {
        let mut t = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer other"),
            ("Impersonate-User", "system:admin"),
            ("impersonate-group", "system:masters"),
            ("Impersonate-Extra-scopes", "x"),
            ("x-remote-user", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("proxy-authorization", "Basic x"),
            ("connection", "close"),
            ("host", "elsewhere.example"),
            ("upgrade", "websocket"),
            ("x-checksum", "abc"),
            ("grpc-status", "0"),
        ] {
            t.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        strip_request_trailers(&mut t);
        let mut left: Vec<_> = t.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["grpc-status", "x-checksum"]);
    }

    /// kube-apiserver's `request/websocket` authenticator reads a bearer token from an entry of
    /// `Sec-WebSocket-Protocol` and rejoins the rest with `,`; the gateway takes the entry out
    /// before any upstream can read it.
    #[test]
    fn a_bearer_token_offered_as_a_websocket_subprotocol_is_taken_out() {
        let token = "base64url.bearer.authorization.k8s.io.dG9rZW4tb2YtYg";
        for (sent, kept) in [
            (vec![token], None),
            (
                vec!["v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4"],
                Some("v5.channel.k8s.io"),
            ),
            (
                vec!["v5.channel.k8s.io", token, "v4.channel.k8s.io"],
                Some("v5.channel.k8s.io,v4.channel.k8s.io"),
            ),
            // Any case, and the prefix alone (kube reads an empty token there).
            (
                vec!["BASE64URL.Bearer.Authorization.K8S.IO.eA, channel.k8s.io"],
                Some("channel.k8s.io"),
            ),
            (vec!["base64url.bearer.authorization.k8s.io., x"], Some("x")),
            // Led by a Unicode space kube-apiserver trims (NBSP, NEL, ideographic space), or
            // by anything at all: still a token.
            (
                vec!["v5.channel.k8s.io,\u{a0}base64url.bearer.authorization.k8s.io.eA"],
                Some("v5.channel.k8s.io"),
            ),
            (
                vec!["\u{85}base64url.bearer.authorization.k8s.io.eA, v5.channel.k8s.io"],
                Some("v5.channel.k8s.io"),
            ),
            (
                vec!["\u{3000}base64url.bearer.authorization.k8s.io.eA"],
                None,
            ),
            (
                vec!["x-base64url.bearer.authorization.k8s.io.eA, y"],
                Some("y"),
            ),
            // Without a token, the header is left as the client sent it.
            (
                vec!["v5.channel.k8s.io, v4.channel.k8s.io"],
                Some("v5.channel.k8s.io, v4.channel.k8s.io"),
            ),
            (
                vec!["base64url.bearer.authorization.k8s.i"],
                Some("base64url.bearer.authorization.k8s.i"),
            ),
        ] {
            let mut h = HeaderMap::new();
            for v in &sent {
                h.append(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                );
            }
            strip_request(&mut h);
            let left: Vec<_> = h
                .get_all(SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(left, kept.into_iter().collect::<Vec<_>>(), "{sent:?}");
        }
    }

    #[test]
    fn duplicate_authorization_is_not_single() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert!(single_authorization(&h).is_some());
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(single_authorization(&h).is_none());
    }

    // apimachinery `pkg/util/net/http_test.go` TestSourceIPs, case for case.
    #[test]
    fn source_ips_like_test_source_ips() {
        for (name, real_ip, forwarded_for, remote_addr, expected) in [
            ("no headers, missing remoteAddr", "", "", "", &[][..]),
            (
                "no headers, just remoteAddr host:port",
                "",
                "",
                "1.2.3.4:555",
                &["1.2.3.4"],
            ),
            (
                "no headers, just remoteAddr host",
                "",
                "",
                "1.2.3.4",
                &["1.2.3.4"],
            ),
            (
                "empty forwarded-for chain",
                "",
                " ",
                "1.2.3.4",
                &["1.2.3.4"],
            ),
            (
                "invalid forwarded-for chain",
                "",
                "garbage garbage values!",
                "1.2.3.4",
                &["1.2.3.4"],
            ),
            (
                "partially invalid forwarded-for chain",
                "",
                "garbage garbage values!,4.5.6.7",
                "1.2.3.4",
                &["4.5.6.7", "1.2.3.4"],
            ),
            (
                "valid forwarded-for chain",
                "",
                "120.120.120.126,2.2.2.2,4.5.6.7",
                "1.2.3.4",
                &["120.120.120.126", "2.2.2.2", "4.5.6.7", "1.2.3.4"],
            ),
            (
                "valid forwarded-for chain with redundant remoteAddr",
                "",
                "2.2.2.2,1.2.3.4",
                "1.2.3.4",
                &["2.2.2.2", "1.2.3.4"],
            ),
            (
                "invalid Real-Ip",
                "garbage, just garbage!",
                "",
                "1.2.3.4",
                &["1.2.3.4"],
            ),
            (
                "invalid Real-Ip with forwarded-for",
                "garbage, just garbage!",
                "2.2.2.2",
                "1.2.3.4",
                &["2.2.2.2", "1.2.3.4"],
            ),
            (
                "valid Real-Ip",
                "2.2.2.2",
                "",
                "1.2.3.4",
                &["2.2.2.2", "1.2.3.4"],
            ),
            ("redundant Real-Ip", "1.2.3.4", "", "1.2.3.4", &["1.2.3.4"]),
            (
                "valid Real-Ip with forwarded-for",
                "2.2.2.2",
                "120.120.120.126,4.5.6.7",
                "1.2.3.4",
                &["120.120.120.126", "4.5.6.7", "2.2.2.2", "1.2.3.4"],
            ),
            (
                "redundant Real-Ip with forwarded-for",
                "2.2.2.2",
                "120.120.120.126,2.2.2.2,4.5.6.7",
                "1.2.3.4",
                &["120.120.120.126", "2.2.2.2", "4.5.6.7", "1.2.3.4"],
            ),
            (
                "full redundancy",
                "1.2.3.4",
                "1.2.3.4",
                "1.2.3.4",
                &["1.2.3.4"],
            ),
            (
                "full ipv6",
                "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
                "aaaa:bbbb:cccc:dddd:eeee:ffff:0:1111,0:1111:2222:3333:4444:5555:6666:7777",
                "aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa",
                &[
                    "aaaa:bbbb:cccc:dddd:eeee:ffff:0:1111",
                    "0:1111:2222:3333:4444:5555:6666:7777",
                    "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
                    "aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa",
                ],
            ),
            (
                "mixed ipv4 ipv6",
                "",
                "aaaa:bbbb:cccc:dddd:eeee:ffff:0:1111,1.2.3.4",
                // IPv6 equivalent to 1.2.3.4.
                "0:0:0:0:0:ffff:102:304",
                &["aaaa:bbbb:cccc:dddd:eeee:ffff:0:1111", "1.2.3.4"],
            ),
        ] {
            let mut h = HeaderMap::new();
            if !forwarded_for.is_empty() {
                h.insert(X_FORWARDED_FOR, HeaderValue::from_static(forwarded_for));
            }
            if !real_ip.is_empty() {
                h.insert(X_REAL_IP, HeaderValue::from_static(real_ip));
            }
            // Go's SourceIPs takes `host:port` or a bare host; the server hands us the peer's
            // socket address.
            let remote = remote_addr
                .parse::<std::net::SocketAddr>()
                .map(|a| a.ip())
                .ok()
                .or_else(|| remote_addr.parse().ok());
            assert_eq!(source_ips(&h, remote), expected, "{name}");
        }
    }

    #[test]
    fn source_ips_are_bounded_whatever_the_header_holds() {
        // `::` is an address: the densest chain a client can send.
        let chain = "::,".repeat(300_000);
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(&chain).unwrap());
        let ips = source_ips(&h, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ips.len(), MAX_FORWARDED_SOURCE_IPS + 1);
        assert_eq!(ips[0], "::");
        assert_eq!(ips[MAX_FORWARDED_SOURCE_IPS], "10.0.0.1");
    }

    #[test]
    fn source_ips_read_the_first_forwarded_for_line_and_parse_sloppily() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("010.001.000.001, ::ffff:01.2.3.4,\t::FFFF:a:b ,1.2.3.04/8"),
        );
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("9.9.9.9"));
        // A zone, a port, a fifth field: not addresses.
        h.insert(X_REAL_IP, HeaderValue::from_static("fe80::1%eth0"));
        let remote = Some("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(
            source_ips(&h, remote),
            // `::ffff:a:b` is IPv4-mapped too: Go writes 0.10.0.11.
            ["10.1.0.1", "1.2.3.4", "0.10.0.11", "192.0.2.7"]
        );
        for text in [
            "1.2.3.4:80",
            "1.2.3.4.5",
            "1..2.3",
            "256.1.1.1",
            "0x1.2.3.4",
            "",
        ] {
            assert_eq!(parse_ip_sloppy(text), None, "{text}");
        }
        assert_eq!(
            parse_ip_sloppy("0000000000001.02.003.0"),
            Some([1, 2, 3, 0].into())
        );
        // Obsolete-text bytes: the rest of the line still counts.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff, 1.2.3.4\xc2\xa0, 5.6.7.8").unwrap(),
        );
        assert_eq!(source_ips(&h, None), ["1.2.3.4", "5.6.7.8"]);
    }

    #[test]
    fn upgrade_detection_like_is_upgrade_request() {
        let cases = [
            (vec!["Upgrade"], true),
            (vec!["keep-alive, upgrade"], true),
            (vec!["keep-alive", "UPGRADE"], true),
            (vec!["keep-alive"], false),
            (vec![], false),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(CONNECTION, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(is_upgrade_request(&h), want, "{values:?}");
        }
    }

    #[test]
    fn ip_addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<std::net::IpAddr> = ["::1", "::ffff:10.0.0.1", "2001:db8::1:0:0:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for octet in [0u8, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 255] {
            ips.push(std::net::Ipv4Addr::new(octet, 255 - octet, octet / 2, 7).into());
        }
        for ip in ips {
            let mut out = String::from("x");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}"));
        }
    }

    #[test]
    fn forwarded_for_joins_prior_values() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 1.1.1.1, ::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn response_hop_by_hop_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_response(&mut h, false);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        strip_response(&mut h, true);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_chunked_response_loses_its_content_length() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-length", HeaderValue::from_static("2"));
        strip_response(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        // Without Transfer-Encoding the length frames the body and stays.
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("2"));
        strip_response(&mut h, false);
        assert_eq!(h["content-length"], "2");
    }
}
