//! `/auth/…`: how people log in, and browser sessions.
//!
//! | endpoint | body | answer |
//! | --- | --- | --- |
//! | `POST /auth/password/login` | `{"username","password"}` | `{"accessKey"}`: a new access key of type `Login` living `auth.sessionTtlSeconds` (Loft's shape) |
//! | `POST /auth/login` | `{"token"}` (an access key or gateway token) | `Set-Cookie: kubegate_session=<gateway token>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<ttl>` and `{"user","uid","groups","expiresAt"}` |
//! | `GET /auth/session` | | the session's `{"user","uid","groups","expiresAt"}`, or 401 |
//! | `POST /auth/logout` | | revokes the session token (in memory and in the store) and clears the cookie |
//!
//! Passwords are the argon2 PHC strings of `users[].passwordHash`, verified off the async
//! runtime. A wrong password and an unknown user get the same 401 after the same work. Failed
//! logins are counted per user name and per source address, in memory; past
//! `auth.maxLoginFailures` within `auth.loginWindowSeconds` every attempt for that name or from
//! that address gets 429 with `Retry-After`, without the password being checked.
//!
//! The session cookie holds a gateway token minted for the identity (and scope) of the
//! credential presented to `/auth/login`, so it is verified exactly like a bearer token
//! (signature, expiry, revocation, token generation); [`authenticate_session`] does that for
//! every other endpoint. Cookies are sent by browsers on their own, so a cookie-authenticated
//! mutating request must carry an `Origin` that is the gateway's own (`https://<Host>`) or one of
//! `auth.allowedOrigins`, else it is refused with 403 `cross-origin request refused`. The login
//! endpoints refuse a foreign `Origin` too (login CSRF) and accept only `application/json`
//! bodies, which a cross-site form cannot send. [`check_origin`] refuses WebSocket upgrades from
//! foreign origins whatever the credential.
//!
//! Tokens, keys and passwords never appear in logs, errors or `Debug` output.
//!
//! # Wiring into the request path
//!
//! [`authenticate_session`] needs the *current runtime's* credentials (verifier with its
//! revocation set, token generations) and configuration, which an
//! [`ExternalAuthenticator`](crate::authenticators::ExternalAuthenticator) built by
//! `from_config` cannot reach; the request path calls it after the bearer check, treating its
//! [`AuthnOutcome`](crate::authenticators::AuthnOutcome) like an external authenticator's.
//! [`check_origin`] runs before authentication for every non-`/auth` request (403 on `Err`).
//! The forwarding proxy must not pass the `kubegate_session` cookie on to upstreams.

mod limiter;
mod origin;
mod password;
mod session;

use std::time::{Duration, Instant};

use crate::service::RequestBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kubegate_proxy::{ProxyBody, Status};
use kubegate_tokens::{AccessKeySecret, Verifier};
use serde::{Deserialize, Serialize};

use crate::authn::Caller;
use crate::config::Config;
use crate::refusals::{Refusals, Refused};
use crate::service::{Runtime, Shared, clipped};
use crate::store::{Revocation, Revoked, StoredAccessKey};

#[cfg(test)]
pub(crate) use session::cookie_value as session_cookie_value;
pub(crate) use session::is_session_pair;
pub use session::{CROSS_ORIGIN_REFUSED, SESSION_COOKIE, authenticate_session};

use limiter::{LoginKey, LoginLimiter};

/// Largest accepted login body.
const MAX_BODY: usize = 64 * 1024;

/// Refuses a WebSocket upgrade whose `Origin` is neither the gateway's own (`https://<Host>`)
/// nor one of `auth.allowedOrigins`, whatever credential the request carries: a browser page
/// on another site can open WebSockets to the gateway, and bearer tokens do not stop it when
/// the page holds one. Requests that are not WebSocket upgrades, and upgrades without an
/// `Origin` (kubectl and other non-browser clients send none), pass. `Err` holds the reason for
/// a 403.
pub fn check_origin(config: &Config, headers: &HeaderMap) -> Result<(), String> {
    if !origin::is_websocket_upgrade(headers) {
        return Ok(());
    }
    origin::refuse_foreign_origin(&config.auth, headers)
        .map_err(|why| format!("cross-origin WebSocket request refused: {why}"))
}

/// Per-gateway state of the `/auth` endpoints (held by [`Shared`]).
#[derive(Debug, Default)]
pub struct AuthState {
    limiter: LoginLimiter,
}

/// Serves a request under `/auth/`; `rest` is the path below the prefix.
pub async fn handle(
    shared: &Shared,
    runtime: &Runtime,
    rest: &str,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    let allowed = match rest {
        "/password/login" | "/login" | "/logout" => "POST",
        "/session" => "GET, HEAD",
        _ => return kubegate_proxy::status::not_found_text(),
    };
    match (rest, req.method()) {
        ("/password/login", &Method::POST) => password_login(shared, runtime, req).await,
        ("/login", &Method::POST) => token_login(shared, runtime, req).await,
        ("/session", &Method::GET | &Method::HEAD) => current_session(shared, runtime, &req),
        ("/logout", &Method::POST) => logout(shared, runtime, &req).await,
        _ => {
            let status = Status {
                code: 405,
                message: format!("the server does not allow {} here", req.method()),
                reason: "MethodNotAllowed".into(),
                details: None,
                type_meta: true,
            };
            let mut res = respond(&status, &req);
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
            res
        }
    }
}

fn respond<B>(status: &Status, req: &Request<B>) -> Response<ProxyBody> {
    status.response_for(req.uri(), req.headers())
}

/// A JSON answer that no cache may keep (it carries keys or identities).
fn json<T: Serialize>(code: StatusCode, body: &T) -> Response<ProxyBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = Response::new(ProxyBody::from(Bytes::from(bytes)));
            *res.status_mut() = code;
            let h = res.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            res
        }
        Err(e) => Status::internal_error(&e.to_string()).to_response(false),
    }
}

fn with_cookie(mut res: Response<ProxyBody>, cookie: &str) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    res
}

fn forbidden(why: &str) -> Status {
    Status::forbidden("", "", "", why)
}

/// Checks what every login endpoint requires of a request before reading its body: no foreign
/// `Origin` and a JSON body.
fn precheck(
    refusals: &Refusals,
    config: &Config,
    req: &Request<RequestBody>,
) -> Result<(), Box<Status>> {
    if let Err(why) = origin::refuse_foreign_origin(&config.auth, req.headers()) {
        if refusals.count(Refused::login) {
            tracing::info!(
                reason = %clipped(&why),
                path = %clipped(req.uri().path()),
                "login refused"
            );
        }
        return Err(Box::new(forbidden(CROSS_ORIGIN_REFUSED)));
    }
    let media_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/json") {
        return Err(Box::new(Status {
            code: 415,
            message: "the body of the request must be application/json".into(),
            reason: "UnsupportedMediaType".into(),
            details: None,
            type_meta: true,
        }));
    }
    Ok(())
}

/// Reads and decodes a JSON body of at most [`MAX_BODY`] bytes, arriving within
/// [`BODY_READ_TIMEOUT`](crate::management::BODY_READ_TIMEOUT).
async fn read_json<T, B>(body: B) -> Result<T, Box<Status>>
where
    T: for<'de> Deserialize<'de>,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = http_body_util::Limited::new(body, MAX_BODY).collect();
    let bytes = tokio::time::timeout(crate::management::BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| Box::new(Status::bad_request("timed out reading the request body")))?
        .map_err(|e| {
            Box::new(if e.is::<http_body_util::LengthLimitError>() {
                Status {
                    code: 413,
                    message: "the request body is too large".into(),
                    reason: "RequestEntityTooLarge".into(),
                    details: None,
                    type_meta: true,
                }
            } else {
                Status::bad_request("the request body could not be read")
            })
        })?
        .to_bytes();
    // serde_json's messages can quote parts of the input, which may be a password: only the
    // position goes back.
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(Status::bad_request(format!(
            "invalid login request: expected a JSON object with the documented string fields (line {}, column {})",
            e.line(),
            e.column()
        )))
    })
}

/// `POST /auth/password/login` body (deliberately without `Debug`).
#[derive(Deserialize)]
struct PasswordLogin {
    username: String,
    password: String,
}

/// `POST /auth/login` body (deliberately without `Debug`).
#[derive(Deserialize)]
struct TokenLogin {
    token: String,
}

/// The answer of a successful password login (Loft's `{accessKey}`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessKeyResponse<'a> {
    access_key: &'a str,
}

/// A session as `/auth/login` and `/auth/session` describe it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    user: String,
    uid: String,
    groups: Vec<String>,
    /// RFC 3339.
    expires_at: String,
}

impl SessionInfo {
    fn new(caller: &Caller, expires_at: u64) -> SessionInfo {
        let expires_at = time::OffsetDateTime::from_unix_timestamp(expires_at as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        SessionInfo {
            user: caller.identity.name.clone(),
            uid: caller.identity.uid.clone(),
            groups: caller.identity.groups.clone(),
            expires_at,
        }
    }
}

fn login_window(config: &Config) -> (u32, Duration) {
    (
        config.auth.max_login_failures,
        Duration::from_secs(config.auth.login_window_seconds),
    )
}

/// A user name as logs show it: at most 64 characters (a login body may carry 64 KiB of one).
fn shown_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &name[..cut]).into(),
        None => name.into(),
    }
}

fn too_many_requests(retry_after: Duration) -> Status {
    // Round up so a client that waits exactly `Retry-After` is not refused again.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Status::too_many_requests(
        "too many failed login attempts, please try again later",
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX),
    )
}

fn source_key(req: &Request<RequestBody>) -> Option<LoginKey> {
    req.extensions()
        .get::<kubegate_proxy::ClientAddr>()
        .map(|a| LoginKey::source(a.0.ip()))
}

/// A login request's checks (method, content type, CSRF) and JSON body, with the source it
/// came from and its head for answering.
async fn read_login<T: for<'de> Deserialize<'de>>(
    refusals: &Refusals,
    config: &Config,
    req: Request<RequestBody>,
) -> Result<(T, Option<LoginKey>, Request<()>), Box<Response<ProxyBody>>> {
    if let Err(status) = precheck(refusals, config, &req) {
        return Err(Box::new(respond(&status, &req)));
    }
    let source = source_key(&req);
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    match read_json(body).await {
        Ok(login) => Ok((login, source, head)),
        Err(status) => Err(Box::new(respond(&status, &head))),
    }
}

/// `POST /auth/password/login`.
async fn password_login(
    shared: &Shared,
    runtime: &Runtime,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    let config = &runtime.config;
    let (login, source, head) =
        match read_login::<PasswordLogin>(&shared.refusals, config, req).await {
            Ok(read) => read,
            Err(refusal) => return *refusal,
        };
    let state = &shared.auth;
    let (max, window) = login_window(config);
    let user_key = LoginKey::user(&login.username);
    let shown = shown_name(&login.username);
    let keys: Vec<LoginKey> = std::iter::once(user_key.clone()).chain(source).collect();
    // With no password configured for anyone, no login can succeed: refused without an argon2
    // check, which would only burn a CPU for whoever keeps asking (there is no user to hide).
    if !config.users.iter().any(|u| u.password_hash.is_some()) {
        if shared.refusals.count(Refused::login) {
            tracing::info!(user = %shown, "password login failed: no user has a password");
        }
        return respond(&Status::unauthorized(), &head);
    }
    // A check slot first: at most one argon2 check per CPU (up to 8) runs at once, each
    // holding its slot until argon2 is done.
    let Some(slot) = password::check_slot().await else {
        if shared.refusals.count(Refused::login) {
            tracing::info!(user = %shown, "password login refused: every check slot is busy");
        }
        return respond(
            &Status::too_many_requests("too many logins at once, please try again later", 1),
            &head,
        );
    };
    // The attempt counts as a failure from here until it succeeds: checks running side by side
    // (one per slot) cannot together get past the limit.
    let attempt = match state
        .limiter
        .begin_attempt(&keys, max, window, Instant::now())
    {
        Ok(attempt) => attempt,
        Err(wait) => {
            if shared.refusals.count(Refused::login) {
                tracing::info!(user = %shown, "password login refused: too many failures");
            }
            return respond(&too_many_requests(wait), &head);
        }
    };
    let user = config.users.iter().find(|u| u.name == login.username);
    let hash = user.and_then(|u| u.password_hash.clone());
    // Unknown users are checked against a hash costing what a configured user's costs.
    let template = config.users.iter().find_map(|u| u.password_hash.clone());
    let verified = password::verify(slot, login.password, hash, template).await;
    // The user must also still resolve to an identity (it always does for a configured one).
    let entry = runtime.directory.user(&login.username);
    let (true, Some(entry)) = (verified, entry) else {
        // Counted when the attempt began.
        if shared.refusals.count(Refused::login) {
            tracing::info!(user = %shown, "password login failed");
        }
        return respond(&Status::unauthorized(), &head);
    };
    attempt.succeeded();
    state.limiter.clear(&user_key);
    let secret = match AccessKeySecret::generate() {
        Ok(s) => s,
        Err(e) => return respond(&Status::internal_error(&e.to_string()), &head),
    };
    let created_at = kubegate_tokens::unix_now() as i64;
    let ttl = i64::try_from(config.auth.session_ttl_seconds).unwrap_or(i64::MAX);
    let stored = StoredAccessKey {
        name: login_key_name(&entry.name),
        user: entry.name.clone(),
        user_uid: Some(entry.uid.clone()),
        sha256: secret.digest().to_hex(),
        key_type: StoredAccessKey::LOGIN.into(),
        display_name: None,
        description: Some("created by password login".into()),
        scope: None,
        created_at,
        expires_at: (ttl > 0).then(|| created_at.saturating_add(ttl)),
        disabled: false,
        parent: None,
        uid: uuid::Uuid::new_v4().to_string(),
    };
    let name = stored.name.clone();
    if let Err(e) = shared.store.create_access_key(stored).await {
        tracing::error!(error = %e, "storing a login access key failed");
        return respond(
            &Status::internal_error("the access key could not be stored"),
            &head,
        );
    }
    end_oldest_sessions(shared, &entry.name, created_at).await;
    if let Err(e) = shared.refresh_state().await {
        tracing::warn!(error = %e, "refreshing credentials after a password login failed");
    }
    tracing::info!(user = %entry.name, key = %name, "password login");
    json(
        StatusCode::OK,
        &AccessKeyResponse {
            access_key: secret.expose(),
        },
    )
}

/// Password-login keys (sessions) one user may hold unexpired; a login past that ends the
/// oldest. Every login stores a key until `sessionTtlSeconds` runs out, so without a bound a
/// script (or a stolen password) logging in again and again would grow the state file, which
/// is rewritten whole on every change.
const MAX_SESSIONS_PER_USER: usize = 100;

/// The login keys of `user` that a login at `now` ends: the oldest beyond
/// [`MAX_SESSIONS_PER_USER`] unexpired ones.
fn sessions_to_end<'a>(
    keys: impl IntoIterator<Item = &'a StoredAccessKey>,
    user: &str,
    now: i64,
) -> Vec<&'a StoredAccessKey> {
    let mut sessions: Vec<&StoredAccessKey> = keys
        .into_iter()
        .filter(|k| k.user == user && k.is_login() && k.is_live_at(now))
        .collect();
    let excess = sessions.len().saturating_sub(MAX_SESSIONS_PER_USER);
    sessions.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    sessions.truncate(excess);
    sessions
}

/// Ends the sessions of `user` beyond [`MAX_SESSIONS_PER_USER`], oldest first. A failure is
/// logged: the login itself succeeded.
async fn end_oldest_sessions(shared: &Shared, user: &str, now: i64) {
    let state = match shared.store.snapshot().await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(error = %e, "reading sessions after a password login failed");
            return;
        }
    };
    for key in sessions_to_end(state.access_keys.values(), user, now) {
        let name = &key.name;
        match shared.store.delete_access_key(name, Some(&key.uid)).await {
            Ok(_) => tracing::info!(user = %user, key = %name, "oldest session ended"),
            Err(e) => tracing::warn!(error = %e, key = %name, "ending an old session failed"),
        }
    }
}

/// `login-<user>-<random>`, a DNS label like every key name.
fn login_key_name(user: &str) -> String {
    crate::management::generated_key_name("login", user)
}

/// `POST /auth/login`.
async fn token_login(
    shared: &Shared,
    runtime: &Runtime,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    let config = &runtime.config;
    let (login, source, head) = match read_login::<TokenLogin>(&shared.refusals, config, req).await
    {
        Ok(read) => read,
        Err(refusal) => return *refusal,
    };
    let state = &shared.auth;
    let (max, window) = login_window(config);
    let keys: Vec<LoginKey> = source.into_iter().collect();
    if let Some(wait) = state.limiter.locked_for(&keys, max, window, Instant::now()) {
        if shared.refusals.count(Refused::login) {
            tracing::info!("session login refused: too many failures from its address");
        }
        return respond(&too_many_requests(wait), &head);
    }
    let now = kubegate_tokens::unix_now();
    let caller = match runtime
        .credentials
        .authenticate(login.token.trim(), &runtime.directory, now)
    {
        Ok(c) => c,
        Err(failure) => {
            state
                .limiter
                .record_failure(&keys, max, window, Instant::now());
            if shared.refusals.count(Refused::login) {
                tracing::info!(reason = %clipped(&failure.to_string()), "session login failed");
            }
            return respond(&Status::unauthorized(), &head);
        }
    };
    let identity = &caller.identity;
    // The session may do what the presented credential may do, no more: it keeps its scope,
    // and ends when the credential does, at the latest.
    let Some(ttl) = caller.bounded_ttl(Duration::from_secs(config.auth.session_ttl_seconds), now)
    else {
        return respond(&Status::unauthorized(), &head);
    };
    let mut request = runtime.credentials.user_token_request(
        identity,
        caller.raw_scope.as_deref().cloned(),
        Some(ttl),
        caller.root_key(),
    );
    // A session carries the login-ness of what started it, no more: one started with a
    // short-lived key or token must not make keys that outlive that credential.
    request.login = caller.is_login();
    let minted = match shared.minter.mint(&request, now) {
        Ok(m) => m,
        Err(e) => return respond(&Status::internal_error(&e.to_string()), &head),
    };
    if let Some(status) = unusable_token(minted.token()) {
        return respond(&status, &head);
    }
    tracing::info!(user = %identity.name, jti = %minted.jti, "session started");
    let max_age = minted.expires_at.saturating_sub(now);
    let body = SessionInfo::new(&caller, minted.expires_at);
    with_cookie(
        json(StatusCode::OK, &body),
        &session::set_cookie(minted.token(), max_age),
    )
}

/// `GET /auth/session`.
fn current_session(
    shared: &Shared,
    runtime: &Runtime,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    let now = kubegate_tokens::unix_now();
    match session::verify(&runtime.credentials, &runtime.directory, req.headers(), now) {
        Ok(s) => json(StatusCode::OK, &SessionInfo::new(&s.caller, s.expires_at)),
        Err(why) => {
            if let session::NoSession::Invalid(reason) = why
                && shared.refusals.count(Refused::session)
            {
                tracing::info!(reason = %clipped(&reason), "session lookup failed");
            }
            respond(&Status::unauthorized(), req)
        }
    }
}

/// `POST /auth/logout`.
async fn logout(
    shared: &Shared,
    runtime: &Runtime,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    let now = kubegate_tokens::unix_now();
    let session =
        match session::verify(&runtime.credentials, &runtime.directory, req.headers(), now) {
            Ok(s) => s,
            Err(why) => {
                if let session::NoSession::Invalid(reason) = why
                    && shared.refusals.count(Refused::session)
                {
                    tracing::info!(reason = %clipped(&reason), "logout without a valid session");
                }
                return with_cookie(
                    respond(&Status::unauthorized(), req),
                    &session::clear_cookie(),
                );
            }
        };
    if let Err(why) = session::check_csrf(&runtime.config.auth, req.method(), req.headers()) {
        if shared.refusals.count(Refused::session) {
            tracing::info!(reason = %clipped(&why), "logout refused");
        }
        return respond(&forbidden(CROSS_ORIGIN_REFUSED), req);
    }
    // Until the token could no longer verify anyway (expiry plus the verifier's leeway).
    let until = session
        .expires_at
        .saturating_add(Verifier::DEFAULT_LEEWAY.as_secs());
    runtime
        .credentials
        .verifier()
        .revocations()
        .revoke(session.jti.clone(), until, now);
    let user = &session.caller.identity.name;
    let revocation = Revocation {
        jti: session.jti.clone(),
        expires_at: i64::try_from(until).unwrap_or(i64::MAX),
        user: user.clone(),
    };
    match shared.store.revoke(revocation, now as i64).await {
        Ok(Revoked::Token) => {}
        Ok(Revoked::EveryTokenOfTheUser { generation }) => {
            // The new generation revokes the user's tokens once the credentials are rebuilt:
            // now, not at the next state change.
            tracing::warn!(user = %user, generation, "too many revoked sessions: every token of the user revoked");
            if let Err(e) = shared.refresh_state().await {
                tracing::error!(error = %e, "applying a raised token generation failed");
            }
        }
        Err(e) => {
            // Revoked in this process already; a restart would forget it, so say so loudly.
            tracing::error!(error = %e, jti = %session.jti, "persisting a session revocation failed");
            return respond(
                &Status::internal_error("the session could not be revoked durably"),
                req,
            );
        }
    }
    tracing::info!(user = %user, jti = %session.jti, "session ended");
    with_cookie(
        json(StatusCode::OK, &serde_json::json!({"loggedOut": true})),
        &session::clear_cookie(),
    )
}

/// A 422 when a minted token is longer than the verifier accepts (a credential whose stored
/// scope is that large): handing it out would give the client a token that always fails.
pub(crate) fn unusable_token(token: &str) -> Option<Status> {
    let max = kubegate_tokens::Verifier::DEFAULT_MAX_TOKEN_LEN;
    (token.len() > max).then(|| Status {
        code: 422,
        message: format!(
            "the token would be {} bytes, more than the {max} a token may have: its scope is too large; ask for a narrower one",
            token.len()
        ),
        reason: "Invalid".into(),
        details: None,
        type_meta: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends one byte and then nothing, never ending: a client that stalled.
    fn stalled() -> impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> {
        let first =
            futures_util::stream::iter([Ok(http_body::Frame::data(Bytes::from_static(b"{")))]);
        http_body_util::StreamBody::new(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))
    }

    #[test]
    fn a_login_past_the_session_bound_ends_the_oldest_sessions() {
        let login = |name: &str, user: &str, created_at: i64, expires_at: Option<i64>| {
            StoredAccessKey::for_test(name, user, StoredAccessKey::LOGIN, created_at, expires_at)
        };
        let now = 1_000;
        let mut keys: Vec<StoredAccessKey> = (0..MAX_SESSIONS_PER_USER as i64)
            .map(|i| login(&format!("s{i:03}"), "alice", 500 - i, Some(now + 60)))
            .collect();
        // Not alice's sessions, or not sessions at all, or expired: never counted or ended.
        keys.push(login("bob", "bob", 1, Some(now + 60)));
        keys.push(login("gone", "alice", 1, Some(now)));
        keys.push(StoredAccessKey {
            key_type: "User".into(),
            ..login("api", "alice", 1, None)
        });
        let names = |keys: &[StoredAccessKey]| -> Vec<String> {
            sessions_to_end(keys, "alice", now)
                .into_iter()
                .map(|k| k.name.clone())
                .collect()
        };
        assert!(names(&keys).is_empty());
        keys.push(login("newest", "alice", now, Some(now + 43_200)));
        keys.push(login("newer", "alice", now, Some(now + 43_200)));
        // The two oldest of alice's 102 sessions: s099 (created at 401), then s098.
        assert_eq!(names(&keys), ["s099", "s098"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_login_body_times_out_with_a_status() {
        let started = tokio::time::Instant::now();
        let err = read_json::<serde_json::Value, _>(stalled())
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), crate::management::BODY_READ_TIMEOUT);
        assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
        assert_eq!(err.message, "timed out reading the request body");
    }
}
