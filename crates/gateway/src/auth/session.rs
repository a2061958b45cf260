//! Session cookies: a gateway token in `kubegate_session`, checked like a bearer token, with
//! CSRF protection for mutating requests.

use http::HeaderMap;
use http::header::COOKIE;

use super::origin;
use crate::authenticators::{AuthnInput, AuthnOutcome};
use crate::authn::{Caller, CallerCredential, Credentials};
use crate::config::{AuthConfig, Config};
use crate::directory::Directory;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "kubegate_session";

/// The message of the 403 for a cookie-authenticated mutating request from a foreign origin.
pub const CROSS_ORIGIN_REFUSED: &str = "cross-origin request refused";

/// The value of the session cookie. `Err` when it is sent more than once: a second cookie of
/// the same name can be planted by a sibling domain, so neither is trusted.
pub(crate) fn cookie_value(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if !is_session_pair(pair.as_bytes()) {
                continue;
            }
            let Some((_, value)) = pair.split_once('=') else {
                continue;
            };
            if found.is_some() {
                return Err("more than one session cookie".into());
            }
            found = Some(value.trim().trim_matches('"'));
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// Whether one `;`-separated pair of a `Cookie` header is the session cookie: a `name=value`
/// whose name, spaces and tabs around it trimmed, is [`SESSION_COOKIE`]. The one test both for
/// reading the cookie ([`cookie_value`]) and for keeping it from upstreams, so that nothing
/// authentication accepts can pass through. Bytes, so a header that is not text is judged too.
pub(crate) fn is_session_pair(pair: &[u8]) -> bool {
    pair.iter()
        .position(|&b| b == b'=')
        .is_some_and(|eq| pair[..eq].trim_ascii() == SESSION_COOKIE.as_bytes())
}

/// `Set-Cookie` for a new session that lives `max_age` seconds.
pub(crate) fn set_cookie(token: &str, max_age: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// A verified session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The caller the session stands for.
    pub(crate) caller: Caller,
    /// The session token's `jti`.
    pub(crate) jti: String,
    /// Its expiry, Unix seconds.
    pub(crate) expires_at: u64,
}

/// Why a request has no usable session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoSession {
    /// No session cookie was sent.
    Absent,
    /// A session cookie was sent but does not verify (the reason is for logs only).
    Invalid(String),
}

/// Verifies the session cookie of a request with the gateway's own credentials: signature,
/// issuer, audience, expiry, revocation and token generation, exactly as a bearer token.
/// Only gateway tokens are sessions; an access key put into the cookie is refused.
pub(crate) fn verify(
    credentials: &Credentials,
    directory: &Directory,
    headers: &HeaderMap,
    now: u64,
) -> Result<Session, NoSession> {
    let value = cookie_value(headers)
        .map_err(NoSession::Invalid)?
        .ok_or(NoSession::Absent)?;
    if value.bytes().filter(|&b| b == b'.').count() != 2 {
        return Err(NoSession::Invalid(
            "the session cookie is not a token".into(),
        ));
    }
    let mut caller = credentials
        .authenticate(value, directory, now)
        .map_err(|failure| NoSession::Invalid(format!("session: {failure}")))?;
    match &mut caller.credential {
        CallerCredential::Token {
            jti,
            expires_at,
            session,
            ..
        } => {
            *session = true;
            let (jti, expires_at) = (jti.clone(), *expires_at);
            Ok(Session {
                jti,
                expires_at,
                caller,
            })
        }
        CallerCredential::AccessKey(_)
        | CallerCredential::FrontProxy
        | CallerCredential::ExternalToken { .. } => Err(NoSession::Invalid(
            "the session cookie is not a token".into(),
        )),
    }
}

/// Whether a method changes state (everything but `GET`, `HEAD`, `OPTIONS`).
pub(crate) fn is_mutating(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// CSRF protection: a cookie-authenticated mutating request must name an allowed `Origin`.
pub(crate) fn check_csrf(
    auth: &AuthConfig,
    method: &http::Method,
    headers: &HeaderMap,
) -> Result<(), String> {
    if is_mutating(method) {
        origin::require_same_origin(auth, headers)?;
    }
    Ok(())
}

/// Authenticates a request by its session cookie: the session authenticator.
///
/// [`AuthnOutcome::Skip`] without a cookie; [`AuthnOutcome::Rejected`] for a cookie that does
/// not verify; [`AuthnOutcome::Forbidden`] (`cross-origin request refused`) for a valid cookie on
/// a mutating request whose `Origin` is missing or foreign; otherwise the session's caller.
/// `credentials` and `config` are the current runtime's, so reloads and revocations apply.
pub fn authenticate_session(
    credentials: &Credentials,
    config: &Config,
    input: &AuthnInput<'_>,
) -> AuthnOutcome {
    let now = kubegate_tokens::unix_now();
    match verify(credentials, input.directory, input.headers, now) {
        Err(NoSession::Absent) => AuthnOutcome::Skip,
        Err(NoSession::Invalid(reason)) => AuthnOutcome::Rejected(reason),
        Ok(session) => match check_csrf(&config.auth, input.method, input.headers) {
            Ok(()) => AuthnOutcome::Authenticated(Box::new(session.caller)),
            Err(why) => {
                tracing::info!(reason = %why, method = %input.method, "cookie-authenticated request refused");
                AuthnOutcome::Forbidden(CROSS_ORIGIN_REFUSED.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value(&HeaderMap::new()), Ok(None));
        assert_eq!(
            cookie_value(&with_cookies(&["a=1; kubegate_session=x.y.z; b=2"])),
            Ok(Some("x.y.z"))
        );
        assert_eq!(
            cookie_value(&with_cookies(&["a=1", "kubegate_session=\"x.y.z\""])),
            Ok(Some("x.y.z"))
        );
        assert_eq!(
            cookie_value(&with_cookies(&["kubegate_session="])),
            Ok(None)
        );
        assert_eq!(
            cookie_value(&with_cookies(&["xkubegate_session=1; kubegate_sessionx=2"])),
            Ok(None)
        );
        assert!(
            cookie_value(&with_cookies(&["kubegate_session=a", "kubegate_session=b"])).is_err()
        );
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            set_cookie("t", 60),
            "kubegate_session=t; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(clear_cookie().ends_with("Max-Age=0"));
    }

    #[test]
    fn safe_methods_need_no_origin() {
        let auth = AuthConfig::default();
        let h = HeaderMap::new();
        assert!(check_csrf(&auth, &http::Method::GET, &h).is_ok());
        for m in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            assert!(check_csrf(&auth, &m, &h).is_err(), "{m}");
        }
    }
}
