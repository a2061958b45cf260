//! Authentication (bearer tokens, client certificates, optional anonymous) and the legacy
//! impersonation filter (apiserver `filters/impersonation`), authorized per requested item.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::authz::{Attributes, AuthorizerChain, Decision};
use crate::identity::{SYSTEM_ANONYMOUS, SYSTEM_UNAUTHENTICATED, UserInfo};
use crate::status::{Status, forbidden_for};

/// Known bearer tokens and client certificates.
#[derive(Default)]
pub(crate) struct Authenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
    certs: RwLock<HashMap<Vec<u8>, UserInfo>>,
    pub(crate) anonymous: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub(crate) fn new(anonymous: bool) -> Self {
        Self {
            anonymous,
            ..Self::default()
        }
    }

    pub(crate) fn add_token(&self, token: String, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token, user);
    }

    pub(crate) fn add_cert(&self, der: Vec<u8>, user: UserInfo) {
        self.certs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(der, user);
    }

    /// The requestor, with `system:authenticated` added, or `None` → 401.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        peer_cert: Option<&[u8]>,
    ) -> Option<UserInfo> {
        if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            // A presented but unknown credential is rejected even when anonymous is allowed.
            let token = auth.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            let tokens = self
                .tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return tokens
                .get(token)
                .cloned()
                .map(UserInfo::with_authenticated_group);
        }
        if let Some(der) = peer_cert {
            let certs = self
                .certs
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return certs
                .get(der)
                .cloned()
                .map(UserInfo::with_authenticated_group);
        }
        self.anonymous.then(UserInfo::anonymous)
    }
}

/// Requested impersonation, parsed from the `Impersonate-*` headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ImpersonationRequest {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: BTreeMap<String, Vec<String>>,
}

impl ImpersonationRequest {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut req = Self::default();
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            let name = name.as_str();
            match name {
                "impersonate-user" => {
                    req.user.get_or_insert_with(|| value.to_owned());
                }
                "impersonate-group" => req.groups.push(value.to_owned()),
                "impersonate-uid" => {
                    req.uid.get_or_insert_with(|| value.to_owned());
                }
                _ => {
                    if let Some(suffix) = name.strip_prefix("impersonate-extra-") {
                        // Header names are already lower-case; then url.PathUnescape, raw on error.
                        let key = unescape(suffix);
                        req.extra.entry(key).or_default().push(value.to_owned());
                    }
                }
            }
        }
        req
    }

    fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty() && self.uid.is_none() && self.extra.is_empty()
    }
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let valid = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !valid {
        return s.to_owned();
    }
    percent_decode_str(s)
        .decode_utf8()
        .map_or_else(|_| s.to_owned(), |c| c.into_owned())
}

fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (valid(ns) && valid(name)).then_some((ns, name))
}

/// Applies impersonation for `requestor`; `Ok(None)` when no `Impersonate-*` header was sent.
pub(crate) fn impersonate(
    authz: &AuthorizerChain,
    requestor: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, Status> {
    let req = ImpersonationRequest::from_headers(headers);
    if req.is_empty() {
        return Ok(None);
    }
    let Some(user) = req.user.as_deref() else {
        let what = if !req.groups.is_empty() {
            "groups"
        } else if req.uid.is_some() {
            "uid"
        } else {
            "user extras"
        };
        return Err(Status::bad_request(format!(
            "requested impersonation of {what} without impersonating a user"
        )));
    };
    let check = |api_group: &str, resource: &str, sub: &str, ns: &str, name: &str| {
        let attrs = Attributes {
            user: requestor,
            verb: "impersonate",
            resource_request: true,
            path: "",
            api_group,
            api_version: "",
            resource,
            subresource: sub,
            namespace: ns,
            name,
        };
        match authz.authorize(&attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(r) | Decision::NoOpinion(r) => Err(forbidden_for(&attrs, &r)),
        }
    };
    let sa = service_account(user);
    match sa {
        Some((ns, name)) => check("", "serviceaccounts", "", ns, name)?,
        None => check("", "users", "", "", user)?,
    }
    for group in &req.groups {
        check("", "groups", "", "", group)?;
    }
    for (key, values) in &req.extra {
        for value in values {
            check("authentication.k8s.io", "userextras", key, "", value)?;
        }
    }
    if let Some(uid) = &req.uid {
        check("authentication.k8s.io", "uids", "", "", uid)?;
    }
    let mut groups = req.groups.clone();
    if let (Some((ns, _)), true) = (sa, groups.is_empty()) {
        groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let mut out = UserInfo {
        name: user.to_owned(),
        uid: req.uid.clone().unwrap_or_default(),
        groups,
        extra: req.extra.clone(),
    };
    if out.name == SYSTEM_ANONYMOUS {
        if !out.groups.iter().any(|g| g == SYSTEM_UNAUTHENTICATED) {
            out.groups.push(SYSTEM_UNAUTHENTICATED.to_owned());
        }
    } else {
        out = out.with_authenticated_group();
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderValue;

    use super::*;
    use crate::authz::FnAuthorizer;

    /// The V3.1 test authorizer (`impersonateAuthorizer`).
    fn v3_authorizer() -> AuthorizerChain {
        let f = |a: &Attributes<'_>| {
            let g = |i: usize| a.user.groups.get(i).map(String::as_str).unwrap_or("");
            let imp = a.verb == "impersonate";
            let allow = a.user.name == "system:admin"
                || (g(0) == "wheel" && imp && a.resource == "users")
                || (g(0) == "sa-impersonater" && imp && a.resource == "serviceaccounts")
                || (g(0) == "regular-impersonater" && imp && a.resource == "users")
                || (g(1) == "group-impersonater" && imp && a.resource == "groups")
                || (g(1) == "extra-setter-scopes"
                    && imp
                    && a.resource == "userextras"
                    && a.subresource == "scopes")
                || matches!(g(1), "escaped-scopes" | "almost-escaped-scopes")
                || (g(1) == "extra-setter-particular-scopes"
                    && imp
                    && a.resource == "userextras"
                    && a.subresource == "scopes"
                    && a.name == "scope-a"
                    && a.api_group == "authentication.k8s.io")
                || (g(1) == "extra-setter-project"
                    && imp
                    && a.resource == "userextras"
                    && a.subresource == "project"
                    && a.api_group == "authentication.k8s.io")
                || (g(0) == "everything-impersonater"
                    && imp
                    && ((a.resource == "users" && a.api_group.is_empty())
                        || (a.resource == "uids"
                            && a.name == "some-uid"
                            && a.api_group == "authentication.k8s.io")
                        || (a.resource == "groups" && a.api_group.is_empty())
                        || (a.resource == "userextras"
                            && a.subresource == "scopes"
                            && a.api_group == "authentication.k8s.io")));
            if a.user.name == "tester" {
                Decision::NoOpinion("works on my machine".into())
            } else if a.user.name == "deny-me" {
                Decision::NoOpinion("denied".into())
            } else if allow {
                Decision::Allow
            } else {
                Decision::NoOpinion("deny by default".into())
            }
        };
        AuthorizerChain {
            inner: Arc::new(FnAuthorizer(f)),
        }
    }

    fn user(spec: &str) -> UserInfo {
        let (name, groups) = spec.split_once(';').unwrap_or((spec, ""));
        let mut u = UserInfo::new(name);
        u.groups = groups
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        u
    }

    /// V3.1 TestImpersonationFilter: (name, requestor, headers, code, expected user spec).
    #[test]
    fn v3_1_test_impersonation_filter() {
        type Case = (
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
            u16,
            &'static str,
        );
        let cases: &[Case] = &[
            ("not-impersonating", "tester", &[], 200, "tester"),
            (
                "impersonating-error",
                "tester",
                &[("impersonate-user", "anyone")],
                403,
                "",
            ),
            (
                "impersonating-group-without-user",
                "tester",
                &[("impersonate-group", "some-group")],
                400,
                "",
            ),
            (
                "impersonating-extra-without-user",
                "tester",
                &[("impersonate-extra-scopes", "scope-a")],
                400,
                "",
            ),
            (
                "impersonating-uid-without-user",
                "tester",
                &[("impersonate-uid", "some-uid")],
                400,
                "",
            ),
            (
                "disallowed-group",
                "dev;wheel",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                ],
                403,
                "",
            ),
            (
                "allowed-group",
                "dev;wheel,group-impersonater",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                ],
                200,
                "system:admin;some-group,system:authenticated",
            ),
            (
                "disallowed-userextra-1",
                "dev;wheel",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                    ("impersonate-extra-scopes", "scope-a"),
                ],
                403,
                "",
            ),
            (
                "disallowed-userextra-2",
                "dev;wheel,extra-setter-project",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                    ("impersonate-extra-scopes", "scope-a"),
                ],
                403,
                "",
            ),
            (
                "disallowed-userextra-3",
                "dev;wheel,extra-setter-particular-scopes",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                    ("impersonate-extra-scopes", "scope-a"),
                    ("impersonate-extra-scopes", "scope-b"),
                ],
                403,
                "",
            ),
            (
                "allowed-userextras",
                "dev;wheel,extra-setter-scopes",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-extra-scopes", "scope-a"),
                    ("impersonate-extra-scopes", "scope-b"),
                ],
                200,
                "system:admin;system:authenticated|scopes=scope-a,scope-b",
            ),
            (
                "percent-escaped-userextras",
                "dev;wheel,escaped-scopes",
                &[
                    ("impersonate-user", "system:admin"),
                    (
                        "impersonate-extra-example.com%2fescaped%e1%9b%84scopes",
                        "scope-a",
                    ),
                    (
                        "impersonate-extra-example.com%2fescaped%e1%9b%84scopes",
                        "scope-b",
                    ),
                ],
                200,
                "system:admin;system:authenticated|example.com/escapedᛄscopes=scope-a,scope-b",
            ),
            (
                "almost-percent-escaped-userextras",
                "dev;wheel,almost-escaped-scopes",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-extra-almost%zzpercent%xxencoded", "scope-a"),
                    ("impersonate-extra-almost%zzpercent%xxencoded", "scope-b"),
                ],
                200,
                "system:admin;system:authenticated|almost%zzpercent%xxencoded=scope-a,scope-b",
            ),
            (
                "allowed-users-impersonation",
                "dev;regular-impersonater",
                &[("impersonate-user", "tester")],
                200,
                "tester;system:authenticated",
            ),
            (
                "disallowed-impersonating",
                "dev;sa-impersonater",
                &[("impersonate-user", "tester")],
                403,
                "",
            ),
            (
                "allowed-sa-impersonating",
                "dev;sa-impersonater",
                &[("impersonate-user", "system:serviceaccount:foo:default")],
                200,
                "system:serviceaccount:foo:default;system:serviceaccounts,system:serviceaccounts:foo,system:authenticated",
            ),
            (
                "anonymous-username-prevents-adding-authenticated-group",
                "system:admin",
                &[("impersonate-user", "system:anonymous")],
                200,
                "system:anonymous;system:unauthenticated",
            ),
            (
                "unauthenticated-group-prevents-adding-authenticated-group",
                "system:admin",
                &[
                    ("impersonate-user", "unknown"),
                    ("impersonate-group", "system:unauthenticated"),
                ],
                200,
                "unknown;system:unauthenticated",
            ),
            (
                "unauthenticated-group-prevents-double-adding-authenticated-group",
                "system:admin",
                &[
                    ("impersonate-user", "unknown"),
                    ("impersonate-group", "system:authenticated"),
                ],
                200,
                "unknown;system:authenticated",
            ),
            (
                "specified-authenticated-group-prevents-double-adding-authenticated-group",
                "dev;wheel,group-impersonater",
                &[
                    ("impersonate-user", "system:admin"),
                    ("impersonate-group", "some-group"),
                    ("impersonate-group", "system:authenticated"),
                ],
                200,
                "system:admin;some-group,system:authenticated",
            ),
            (
                "anonymous-user-should-include-unauthenticated-group",
                "system:admin",
                &[("impersonate-user", "system:anonymous")],
                200,
                "system:anonymous;system:unauthenticated",
            ),
            (
                "anonymous-user-prevents-double-adding-unauthenticated-group",
                "system:admin",
                &[
                    ("impersonate-user", "system:anonymous"),
                    ("impersonate-group", "system:unauthenticated"),
                ],
                200,
                "system:anonymous;system:unauthenticated",
            ),
            (
                "allowed-user-impersonation-with-uid",
                "dev;everything-impersonater",
                &[
                    ("impersonate-user", "tester"),
                    ("impersonate-uid", "some-uid"),
                ],
                200,
                "tester;system:authenticated#some-uid",
            ),
            (
                "disallowed-user-impersonation-with-uid",
                "dev;everything-impersonater",
                &[
                    ("impersonate-user", "tester"),
                    ("impersonate-uid", "disallowed-uid"),
                ],
                403,
                "",
            ),
            (
                "allowed-impersonation-with-all-headers",
                "dev;everything-impersonater",
                &[
                    ("impersonate-user", "tester"),
                    ("impersonate-group", "system:authenticated"),
                    ("impersonate-extra-scopes", "scope-a"),
                    ("impersonate-extra-scopes", "scope-b"),
                    ("impersonate-uid", "some-uid"),
                ],
                200,
                "tester;system:authenticated|scopes=scope-a,scope-b#some-uid",
            ),
        ];
        let authz = v3_authorizer();
        for (name, requestor, headers, code, want) in cases {
            let requestor = user(requestor);
            let mut map = HeaderMap::new();
            for (k, v) in *headers {
                map.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let got = impersonate(&authz, &requestor, &map);
            match (got, *code) {
                (Ok(None), 200) => assert_eq!(requestor.name, *want, "case {name}"),
                (Ok(Some(u)), 200) => {
                    let (rest, uid) = want.split_once('#').unwrap_or((want, ""));
                    let (base, extra) = rest.split_once('|').unwrap_or((rest, ""));
                    let mut expect = user(base).with_uid(uid);
                    if let Some((k, vs)) = extra.split_once('=') {
                        for v in vs.split(',') {
                            expect = expect.with_extra(k, v);
                        }
                    }
                    assert_eq!(u, expect, "case {name}");
                }
                (Err(status), c) => assert_eq!(status.code, c, "case {name}: {}", status.message),
                (other, c) => panic!("case {name}: expected {c}, got {other:?}"),
            }
        }
    }

    #[test]
    fn impersonation_denial_message() {
        let authz = AuthorizerChain {
            inner: Arc::new(FnAuthorizer(|_: &Attributes<'_>| {
                Decision::NoOpinion(String::new())
            })),
        };
        let mut map = HeaderMap::new();
        map.insert("impersonate-user", HeaderValue::from_static("bob"));
        let err = impersonate(&authz, &UserInfo::new("alice"), &map).unwrap_err();
        assert_eq!(
            err.message,
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }
}
