//! `selves`, `directclusterendpointtokens` and `ownedaccesskeys`: who am I, minting tokens and
//! access keys. A requested scope must narrow the caller's own; no scope inherits it.

use std::sync::Arc;
use std::time::Duration;

use crate::service::RequestBody;
use http::{Request, Response, StatusCode};
use kubegate_api::{
    AccessKeyScope, AccessKeySpec, AccessKeyType, DirectClusterEndpointToken,
    DirectClusterEndpointTokenStatus, OwnedAccessKey, Self_, SelfStatus, UserInfo,
};
use kubegate_authz::CompiledScope;
use kubegate_proxy::status::StatusFormat;
use kubegate_proxy::{FieldError, ProxyBody, Status};
use kubegate_tokens::AccessKeySecret;

use super::discovery::GROUP;
use super::request::{
    Ctx, decode, delete_options, json_response, list_or_table, object_or_table, respond_unit,
    rfc3339, with_warnings,
};
use crate::authn::CallerCredential;
use crate::refusals::Refused;
use crate::service::respond;
use crate::store::StoredAccessKey;

fn metadata_with_timestamp(
    mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    created_unix: i64,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    if let Ok(time) = serde_json::from_value(serde_json::Value::String(rfc3339(created_unix))) {
        meta.creation_timestamp = Some(time);
    }
    meta
}

/// The largest scope a key or token may ask for, in bytes of JSON: 8 KiB leaves a token
/// carrying it well under the verifier's 16 KiB bound once base64-encoded and signed.
const MAX_REQUESTED_SCOPE_BYTES: usize = 8 * 1024;

/// A 422 `Invalid` for a management object, as kube's `NewInvalid` makes it:
/// `<Kind>.<group> "<name>" is invalid: <errors>`, `details` naming the kind, one cause per
/// error.
fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> Status {
    Status::invalid(GROUP, kind, name, errors)
}

/// What kube's `IsDNS1123Label` finds wrong with `metadata.name`, in its words.
fn name_errors(name: &str) -> Vec<FieldError> {
    const FORMAT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
    let label_shaped = |s: &str| {
        let bytes = s.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes.iter().all(|b| alnum(b) || *b == b'-')
    };
    let mut why = Vec::new();
    if name.len() > 63 {
        why.push("must be no more than 63 characters".to_owned());
    }
    if !label_shaped(name) {
        if name.split('.').all(label_shaped) {
            why.push("must not contain dots".to_owned());
        } else {
            // `RegexError`, its double space included.
            why.push(format!(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{FORMAT}')"
            ));
        }
    }
    why.iter()
        .map(|why| FieldError::invalid("metadata.name", name, why))
        .collect()
}

/// The scope a new credential gets: the requested one if it narrows the caller's, the caller's
/// own if none was requested; a broader request is a 403.
fn narrowed_scope(
    ctx: &Ctx<'_>,
    requested: Option<AccessKeyScope>,
    name: &str,
) -> Result<Option<AccessKeyScope>, Box<Status>> {
    let Some(requested) = requested else {
        return Ok(ctx.caller.raw_scope.as_deref().cloned());
    };
    // Checked before compiling it: comparing scopes costs the product of their rule counts,
    // and a scope past this would not fit in a token anyway (the verifier refuses tokens over
    // 16 KiB).
    let size = serde_json::to_vec(&requested).map_or(usize::MAX, |json| json.len());
    if size > MAX_REQUESTED_SCOPE_BYTES {
        // kube's `field.TooLong`.
        return Err(Box::new(invalid(
            ctx.resource.kind,
            name,
            &[FieldError {
                reason: "FieldValueTooLong",
                field: "spec.scope".into(),
                body: format!("Too long: may not be more than {MAX_REQUESTED_SCOPE_BYTES} bytes"),
            }],
        )));
    }
    if CompiledScope::new(Some(&requested)).narrows(&ctx.caller.scope) {
        Ok(Some(requested))
    } else {
        // kube-apiserver's 403 for the create, with Go quoting of the (client-chosen) name.
        let attrs = kubegate_authz::Attributes::resource(
            &ctx.caller.identity,
            "create",
            GROUP,
            ctx.resource.plural,
        )
        .named(name);
        let refusal = kubegate_authz::forbidden(
            &attrs,
            "the requested scope is broader than the scope of the credential used to request it",
        );
        Err(Box::new(crate::access::forbidden_status(&refusal)))
    }
}

/// What an owned access key's spec may not ask for: another owner, extra groups, or an
/// inactivity expiry (kubegate's keys expire at a fixed time).
fn owner_errors(spec: &kubegate_api::AccessKeySpec, caller: &str) -> Vec<FieldError> {
    let forbidden = |field: &str, detail: &str| FieldError {
        reason: "FieldValueForbidden",
        field: field.to_owned(),
        body: format!("Forbidden: {detail}"),
    };
    let mut errors = Vec::new();
    if !spec.user.is_empty() && spec.user != caller {
        errors.push(forbidden(
            "spec.user",
            "an owned access key belongs to the user who creates it",
        ));
    }
    if !spec.team.is_empty() {
        errors.push(forbidden(
            "spec.team",
            "an owned access key belongs to the user who creates it",
        ));
    }
    if !spec.subject.is_empty() && spec.subject != caller {
        errors.push(forbidden(
            "spec.subject",
            "an owned access key belongs to the user who creates it",
        ));
    }
    if !spec.groups.is_empty() {
        errors.push(forbidden(
            "spec.groups",
            "an owned access key carries its owner's groups, no others",
        ));
    }
    if spec.ttl_after_last_activity {
        errors.push(forbidden(
            "spec.ttlAfterLastActivity",
            "keys expire a fixed time after they are made",
        ));
    }
    errors
}

fn now() -> u64 {
    kubegate_tokens::unix_now()
}

/// `POST selves`: who the caller is, with the credential's scope; with `spec.accessKey`, who
/// that key is instead (Loft's way for a CLI to check that a stored key still works: an
/// invalid one gets 401). Describing a key to whoever presents it tells them nothing the key
/// itself would not: they could as well send it as their bearer token. The key is never
/// echoed back.
pub(super) async fn create_self(ctx: &Ctx<'_>, req: Request<RequestBody>) -> Response<ProxyBody> {
    let format = StatusFormat::for_request(req.uri(), req.headers());
    let decoded = match decode::<Self_>(req, ctx.resource.kind).await {
        Ok(d) => d,
        Err(res) => return *res,
    };
    let mut object = decoded.object;
    let presented = std::mem::take(&mut object.spec.access_key);
    let other;
    let caller = if presented.trim().is_empty() {
        ctx.caller
    } else {
        match ctx
            .runtime
            .credentials
            .authenticate(presented.trim(), &ctx.runtime.directory, now())
        {
            Ok(described) => {
                other = described;
                &other
            }
            Err(failure) => {
                // Counted and logged (within the budget) as a refused credential is.
                if ctx.shared.refusals.count(Refused::authentication) {
                    tracing::info!(
                        reason = %crate::service::clipped(&failure.to_string()),
                        "selves: the access key to describe was refused"
                    );
                }
                return Status::unauthorized().to_response_as(format);
            }
        }
    };
    let identity = &caller.identity;
    let (access_key, access_key_type) = match &caller.credential {
        CallerCredential::AccessKey(key) => {
            (key.name.clone(), AccessKeyType::from(key.key_type.as_str()))
        }
        _ => (String::new(), AccessKeyType::from("")),
    };
    object.status = Some(SelfStatus {
        user: Some(UserInfo {
            name: identity.name.clone(),
            username: identity.name.clone(),
            subject: identity.name.clone(),
            ..UserInfo::default()
        }),
        access_key,
        access_key_scope: caller.raw_scope.as_deref().cloned(),
        access_key_type,
        subject: identity.name.clone(),
        uid: identity.uid.clone(),
        groups: identity.groups.clone(),
        project_namespace_prefix: crate::access::PROJECT_NAMESPACE_PREFIX.into(),
        ..SelfStatus::default()
    });
    object.metadata = metadata_with_timestamp(object.metadata, now() as i64);
    with_warnings(
        json_response(StatusCode::CREATED, &object, decoded.pretty),
        &decoded.warnings,
    )
}

/// `POST directclusterendpointtokens`: mints a gateway token for the caller with `spec.ttl`
/// (capped by the configured maximum) and a scope that narrows the caller's.
pub(super) async fn create_direct_cluster_endpoint_token(
    ctx: &Ctx<'_>,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    // Errors as the request negotiates them (pretty JSON for curl, protobuf for a protobuf
    // client), decided before the body consumes the request.
    let format = StatusFormat::for_request(req.uri(), req.headers());
    let fail = |status: Status| status.to_response_as(format);
    let decoded = match decode::<DirectClusterEndpointToken>(req, ctx.resource.kind).await {
        Ok(d) => d,
        Err(res) => return *res,
    };
    let mut object = decoded.object;
    if object.spec.ttl < 0 {
        return fail(Status::bad_request("spec.ttl must not be negative"));
    }
    let name = object.metadata.name.clone().unwrap_or_default();
    let scope = match narrowed_scope(ctx, object.spec.scope.clone(), &name) {
        Ok(s) => s,
        Err(status) => return fail(*status),
    };
    let identity = &ctx.caller.identity;
    let requested = (object.spec.ttl > 0).then(|| Duration::from_secs(object.spec.ttl as u64));
    let ttl = match ctx.shared.minter.effective_ttl(requested) {
        Ok(ttl) => ttl,
        Err(e) => return fail(Status::bad_request(format!("spec.ttl: {e}"))),
    };
    // Never longer than the credential asking for it has left.
    let Some(ttl) = ctx.caller.bounded_ttl(ttl, now()) else {
        return fail(Status::unauthorized());
    };
    let request = ctx.runtime.credentials.user_token_request(
        identity,
        scope.clone(),
        Some(ttl),
        ctx.caller.root_key(),
    );
    let minted = match ctx.shared.minter.mint(&request, now()) {
        Ok(m) => m,
        Err(e) => return fail(Status::internal_error(&e.to_string())),
    };
    if let Some(status) = crate::auth::unusable_token(minted.token()) {
        return fail(status);
    }
    if decoded.dry_run {
        // Checked through and through, the minted token's size included; none is handed out.
        object.spec.scope = scope;
        object.metadata = metadata_with_timestamp(object.metadata, now() as i64);
        return with_warnings(
            json_response(StatusCode::CREATED, &object, decoded.pretty),
            &decoded.warnings,
        );
    }
    object.spec.scope = scope;
    object.status = Some(DirectClusterEndpointTokenStatus {
        token: minted.token().to_owned(),
    });
    object.metadata = metadata_with_timestamp(object.metadata, now() as i64);
    with_warnings(
        json_response(StatusCode::CREATED, &object, decoded.pretty),
        &decoded.warnings,
    )
}

fn owned_object(key: &StoredAccessKey) -> OwnedAccessKey {
    let spec = AccessKeySpec {
        display_name: key.display_name.clone().unwrap_or_default(),
        description: key.description.clone().unwrap_or_default(),
        user: key.user.clone(),
        disabled: key.disabled,
        ttl: key
            .expires_at
            .map_or(0, |e| e.saturating_sub(key.created_at)),
        scope: key.scope.clone(),
        r#type: AccessKeyType::from(key.key_type.as_str()),
        ..AccessKeySpec::default()
    };
    let mut object = OwnedAccessKey::new(&key.name, spec);
    object.metadata.uid = Some(key.uid.clone());
    object.metadata = metadata_with_timestamp(object.metadata, key.created_at);
    object
}

/// `POST ownedaccesskeys`: creates an access key for the caller. The key is in the response
/// once; only its digest is stored.
pub(super) async fn create_owned_access_key(
    ctx: &Ctx<'_>,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    // Errors as the request negotiates them (pretty JSON for curl, protobuf for a protobuf
    // client), decided before the body consumes the request.
    let format = StatusFormat::for_request(req.uri(), req.headers());
    let fail = |status: Status| status.to_response_as(format);
    let decoded = match decode::<OwnedAccessKey>(req, ctx.resource.kind).await {
        Ok(d) => d,
        Err(res) => return *res,
    };
    let object = decoded.object;
    if object.spec.ttl < 0 {
        return fail(Status::bad_request("spec.ttl must not be negative"));
    }
    let name = match (&object.metadata.name, &object.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", short_id()),
        _ => generated_key_name("", &ctx.caller.identity.name),
    };
    let name_errors = name_errors(&name);
    if !name_errors.is_empty() {
        return fail(invalid(ctx.resource.kind, &name, &name_errors));
    }
    // An owned key is its creator's. A request that names someone else, a team, extra groups
    // or an expiry kubegate does not keep is refused rather than quietly given a key for the
    // caller: an admin asking for bob's key must not walk away with an admin key for bob.
    let owner_errors = owner_errors(&object.spec, &ctx.caller.identity.name);
    if !owner_errors.is_empty() {
        return fail(invalid(ctx.resource.kind, &name, &owner_errors));
    }
    // Checked before the scope is compared and a secret drawn: a type the API does not make
    // is refused whatever else the request holds, and without spending work on it.
    // The other types are the gateway's to give: `Login` keys are what password logins store
    // (bounded per user apart from these, and not counted against the API's key limit).
    let key_type = match object.spec.r#type.as_str() {
        "" | "User" => "User".to_owned(),
        "Other" => "Other".to_owned(),
        other => {
            return fail(invalid(
                ctx.resource.kind,
                &name,
                &[FieldError::not_supported(
                    "spec.type",
                    other,
                    &["", "Other", "User"],
                )],
            ));
        }
    };
    let scope = match narrowed_scope(ctx, object.spec.scope.clone(), &name) {
        Ok(s) => s,
        Err(status) => return fail(*status),
    };
    let secret = match AccessKeySecret::generate() {
        Ok(s) => s,
        Err(e) => return fail(Status::internal_error(&e.to_string())),
    };
    let created_at = now() as i64;
    // `auth.accessKeyMaxTTLSeconds` bounds the TTL (a negative one was refused above), as
    // Loft's global limit does: no TTL or a longer one gets the limit.
    let limits = kubegate_tokens::AccessKeyLimits {
        max_ttl_seconds: ctx.runtime.config.auth.access_key_max_ttl_seconds,
        ..Default::default()
    };
    let requested_ttl = u64::try_from(object.spec.ttl).unwrap_or(0);
    let ttl = limits.effective_ttl(&AccessKeyType::User, requested_ttl);
    let expires_at = match i64::try_from(ttl).unwrap_or(i64::MAX) {
        0 => None,
        ttl => match created_at.checked_add(ttl) {
            Some(at) => Some(at),
            None => {
                return fail(Status::bad_request(format!(
                    "spec.ttl {ttl} is too large: the key would expire after the year 292277026596"
                )));
            }
        },
    };
    // A key made with a credential that expires expires with it, at the latest: a
    // short-lived token must not become a lasting key. A login's credential is the
    // exception: creating a lasting key is what users log in for.
    let parent_expiry = (!ctx.caller.is_login())
        .then(|| ctx.caller.expires_at())
        .flatten()
        .map(|e| i64::try_from(e).unwrap_or(i64::MAX));
    let expires_at = match (expires_at, parent_expiry) {
        (Some(own), Some(parent)) => Some(own.min(parent)),
        (own, parent) => own.or(parent),
    };
    // A key made with a token depends on the key behind the token, as the token does: deleting
    // that key ends both. A key made with a key is its holder's deliberate act and stands on
    // its own (as Loft's keys do), and so does one made at login.
    let parent = match &ctx.caller.credential {
        CallerCredential::Token { .. } if !ctx.caller.is_login() => ctx.caller.root_key(),
        _ => None,
    };
    let stored = StoredAccessKey {
        name: name.clone(),
        user: ctx.caller.identity.name.clone(),
        user_uid: Some(ctx.caller.identity.uid.clone()),
        sha256: secret.digest().to_hex(),
        key_type,
        display_name: (!object.spec.display_name.is_empty())
            .then(|| object.spec.display_name.clone()),
        description: (!object.spec.description.is_empty()).then(|| object.spec.description.clone()),
        scope,
        created_at,
        expires_at,
        disabled: object.spec.disabled,
        parent,
        uid: uuid::Uuid::new_v4().to_string(),
    };
    // Counted and stored in one step: creates side by side cannot all pass the limit.
    let creating = Arc::clone(&ctx.shared.key_creation).lock_owned().await;
    if let Err(status) = within_key_limits(ctx, &stored, created_at).await {
        return fail(*status);
    }
    if decoded.dry_run {
        // Checked through and through, the per-user limits and the name too (kube's dry-run
        // storage answers AlreadyExists as a create would); nothing is stored, so no key is
        // shown: one that was never stored would authenticate nobody.
        drop(creating);
        let taken = match ctx.shared.store.snapshot().await {
            Ok(state) => state
                .access_keys
                .get(&name)
                .is_some_and(|k| k.is_live_at(created_at)),
            Err(e) => {
                tracing::error!(error = %e, "reading the state store failed");
                return fail(Status::internal_error("the state store could not be read"));
            }
        };
        if taken {
            return fail(Status::already_exists(GROUP, "ownedaccesskeys", &name));
        }
        return with_warnings(
            json_response(StatusCode::CREATED, &owned_object(&stored), decoded.pretty),
            &decoded.warnings,
        );
    }
    // The lock goes with the write, not with this request: a store carries out a write it was
    // handed even if the request is dropped meanwhile (a client's reset), and the next create
    // must not count the keys before that write lands.
    let store = Arc::clone(&ctx.shared.store);
    let key = stored.clone();
    let created = tokio::spawn(async move {
        let created = store.create_access_key(key).await;
        drop(creating);
        created
    })
    .await;
    match created {
        Ok(Ok(())) => {}
        Ok(Err(crate::error::StoreError::AlreadyExists { .. })) => {
            return fail(Status::already_exists(GROUP, "ownedaccesskeys", &name));
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing an access key failed");
            return fail(Status::internal_error("the access key could not be stored"));
        }
        Err(panicked) => {
            tracing::error!(error = %panicked, "storing an access key failed");
            return fail(Status::internal_error("the access key could not be stored"));
        }
    }
    if let Err(e) = ctx.shared.refresh_state().await {
        tracing::warn!(error = %e, "refreshing credentials after creating a key failed");
    }
    let mut out = owned_object(&stored);
    out.spec.key = secret.expose().to_owned();
    with_warnings(
        json_response(StatusCode::CREATED, &out, decoded.pretty),
        &decoded.warnings,
    )
}

/// A generated access-key name: `<prefix>-<user>-<8 hex>` (a DNS label; the user part is
/// lowercased, other characters become `-`, and it is left out when nothing usable remains).
pub(crate) fn generated_key_name(prefix: &str, user: &str) -> String {
    let user: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let user = user.trim_matches('-');
    match (prefix.is_empty(), user.is_empty()) {
        (true, true) => format!("key-{}", short_id()),
        (true, false) => format!("{user}-{}", short_id()),
        (false, true) => format!("{prefix}-{}", short_id()),
        (false, false) => format!("{prefix}-{user}-{}", short_id()),
    }
}

/// The most a stored access key may take as JSON (its display name, description and scope are
/// the caller's text). Loft publishes no such limit; kube objects stop at ≈ 1.5 MiB in etcd,
/// and a key is rewritten with the whole state file on every change, so kubegate keeps keys
/// small.
const MAX_STORED_KEY_BYTES: usize = 64 * 1024;
/// The most unexpired keys one user may own through this API (password-login keys, which
/// expire after `auth.sessionTtlSeconds`, are not counted).
const MAX_KEYS_PER_USER: usize = 1000;

/// Refuses a key that is too large to store, or one more than its owner may have.
async fn within_key_limits(
    ctx: &Ctx<'_>,
    stored: &StoredAccessKey,
    now: i64,
) -> Result<(), Box<Status>> {
    let owned = own_keys(ctx).await.map_err(Box::new)?;
    key_limits(stored, &owned, now)
}

/// [`within_key_limits`] over the keys `stored`'s owner already has.
fn key_limits(
    stored: &StoredAccessKey,
    owned: &[StoredAccessKey],
    now: i64,
) -> Result<(), Box<Status>> {
    let bytes = serde_json::to_vec(stored).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_STORED_KEY_BYTES {
        return Err(Box::new(Status::bad_request(format!(
            "the access key is too large to store: {bytes} bytes, at most {MAX_STORED_KEY_BYTES} (spec.displayName, spec.description and spec.scope)"
        ))));
    }
    let counted = owned
        .iter()
        .filter(|k| !k.is_login() && k.is_live_at(now))
        .count();
    if counted >= MAX_KEYS_PER_USER {
        return Err(Box::new(Status::forbidden(
            GROUP,
            "ownedaccesskeys",
            &stored.name,
            &format!(
                "user {:?} already owns {counted} access keys, the most one user may own",
                stored.user
            ),
        )));
    }
    Ok(())
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn own_keys(ctx: &Ctx<'_>) -> Result<Vec<StoredAccessKey>, Status> {
    let state = ctx.shared.store.snapshot().await.map_err(|e| {
        tracing::error!(error = %e, "reading the state store failed");
        Status::internal_error("the state store could not be read")
    })?;
    // Owned by the caller's name and UID, as authentication accepts a key only for the UID it
    // was made for: a user given a name back under a new UID does not get to see or delete
    // the old holder's keys. Keys stored before owners' UIDs were recorded follow the name.
    let identity = &ctx.caller.identity;
    Ok(state
        .access_keys
        .values()
        .filter(|k| {
            k.user == identity.name && k.user_uid.as_deref().is_none_or(|uid| uid == identity.uid)
        })
        .cloned()
        .collect())
}

/// `GET ownedaccesskeys`: the caller's own keys, never with the key itself.
pub(super) async fn list_owned_access_keys(
    ctx: &Ctx<'_>,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    match own_keys(ctx).await {
        Ok(keys) => {
            let items: Vec<OwnedAccessKey> = keys
                .iter()
                .filter(|k| ctx.name.is_empty() || k.name == ctx.name)
                .map(owned_object)
                .collect();
            list_or_table(req, &items)
        }
        Err(status) => respond(&status, req),
    }
}

/// `GET ownedaccesskeys/<name>`.
pub(super) async fn get_owned_access_key(
    ctx: &Ctx<'_>,
    req: &Request<RequestBody>,
) -> Response<ProxyBody> {
    match own_keys(ctx).await {
        Ok(keys) => match keys.iter().find(|k| k.name == ctx.name) {
            Some(k) => object_or_table(req, &owned_object(k)),
            None => respond(&Status::not_found(GROUP, "ownedaccesskeys", &ctx.name), req),
        },
        Err(status) => respond(&status, req),
    }
}

/// A Success Status, its fields in `meta/v1` order (a `json!` map would sort them).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SuccessStatus<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    details: &'a kubegate_proxy::status::StatusDetails,
}

/// `{}`.
#[derive(serde::Serialize)]
struct Empty {}

/// `DELETE ownedaccesskeys/<name>`: deletes one of the caller's keys. Reads `DeleteOptions`
/// as kube does (body, else query): `dryRun=All` checks and deletes nothing,
/// `preconditions.uid` deletes only the key of that UID (409 otherwise).
pub(super) async fn delete_owned_access_key(
    ctx: &Ctx<'_>,
    req: Request<RequestBody>,
) -> Response<ProxyBody> {
    let (req, options) = match delete_options(req).await {
        Ok(read) => read,
        Err(res) => return *res,
    };
    let keys = match own_keys(ctx).await {
        Ok(keys) => keys,
        Err(status) => return respond_unit(&status, &req),
    };
    let not_found = || Status::not_found(GROUP, "ownedaccesskeys", &ctx.name);
    let Some(uid) = keys
        .iter()
        .find(|k| k.name == ctx.name)
        .map(|k| k.uid.clone())
    else {
        return respond_unit(&not_found(), &req);
    };
    if let Some(wanted) = options.uid.as_deref().filter(|wanted| *wanted != uid) {
        // kube's storage precondition check, word for word.
        let status = Status::conflict(
            GROUP,
            "ownedaccesskeys",
            &ctx.name,
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
            ),
        );
        return respond_unit(&status, &req);
    }
    let deleted = if options.dry_run {
        Ok(true)
    } else {
        // Only the key looked at above: one deleted and made again under its name since, by
        // someone else, is not the caller's to delete.
        ctx.shared
            .store
            .delete_access_key(&ctx.name, Some(&uid))
            .await
    };
    match deleted {
        Ok(false) => respond_unit(&not_found(), &req),
        Ok(true) => {
            if !options.dry_run
                && let Err(e) = ctx.shared.refresh_state().await
            {
                tracing::warn!(error = %e, "refreshing credentials after deleting a key failed");
            }
            // kube-apiserver's `finalizeDelete`: a Success Status naming the object, with no
            // code; its audit event records the Status as well.
            let details = kubegate_proxy::status::StatusDetails {
                name: ctx.name.clone(),
                group: GROUP.into(),
                kind: "ownedaccesskeys".into(),
                uid,
                ..Default::default()
            };
            let body = SuccessStatus {
                kind: "Status",
                api_version: "v1",
                metadata: Empty {},
                status: "Success",
                details: &details,
            };
            let mut res = json_response(StatusCode::OK, &body, super::request::pretty(&req));
            let mut recorded = kubegate_proxy::audit::ResponseStatus::code(200);
            recorded.status = Some("Success");
            recorded.details = Some(details);
            res.extensions_mut().insert(recorded);
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "deleting an access key failed");
            respond_unit(
                &Status::internal_error("the access key could not be deleted"),
                &req,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, key_type: &str, expires_at: Option<i64>) -> StoredAccessKey {
        StoredAccessKey::for_test(name, "alice", key_type, 1, expires_at)
    }

    #[test]
    fn a_user_may_own_a_thousand_unexpired_api_keys_and_no_more() {
        let now = 100;
        let mut owned: Vec<StoredAccessKey> = (0..MAX_KEYS_PER_USER - 1)
            .map(|i| key(&format!("k{i}"), "User", None))
            .collect();
        // Expired keys and login keys are not counted.
        owned.push(key("old", "User", Some(now)));
        owned.extend((0..50).map(|i| {
            key(
                &format!("login-{i}"),
                StoredAccessKey::LOGIN,
                Some(now + 60),
            )
        }));
        let new = key("new", "User", None);
        assert!(key_limits(&new, &owned, now).is_ok());
        owned.push(key("last", "User", Some(now + 1)));
        let refused = key_limits(&new, &owned, now).unwrap_err();
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.message,
            "ownedaccesskeys.management.loft.sh \"new\" is forbidden: user \"alice\" already owns 1000 access keys, the most one user may own"
        );
    }
}
