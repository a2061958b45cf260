//! `Impersonate-*` headers: which attributes get authorized, and who the request then runs as
//! (kube-apiserver's legacy impersonation filter, `spec/kubernetes-edges.md` §3.1).

use std::collections::BTreeMap;

mod constrained;

pub use constrained::{
    Impersonated, ImpersonationMode, ImpersonationModes, impersonate_constrained,
};

use crate::identity::{
    ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS, service_account_groups,
    service_account_username, split_service_account_username,
};
use crate::{Attributes, Authorizer, Error, Identity, forbidden};

/// `Impersonate-User`.
pub const IMPERSONATE_USER: &str = "impersonate-user";
/// `Impersonate-Group` (repeatable).
pub const IMPERSONATE_GROUP: &str = "impersonate-group";
/// `Impersonate-Uid`.
pub const IMPERSONATE_UID: &str = "impersonate-uid";
/// `Impersonate-Extra-<key>` prefix (repeatable).
pub const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";

/// The impersonation a request asks for, parsed from its headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImpersonationRequest {
    /// First `Impersonate-User` value (`""` = none).
    pub user: String,
    /// Every `Impersonate-Group` value, in order.
    pub groups: Vec<String>,
    /// First `Impersonate-Uid` value (`""` = none).
    pub uid: String,
    /// Every `Impersonate-Extra-<key>` value as `(key, value)`, in header order; the key is the
    /// header suffix lower-cased then percent-decoded (the raw lower-cased suffix when the
    /// decoding fails).
    pub extra: Vec<(String, String)>,
}

/// What one impersonation check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImpersonatedKind {
    /// A service account user (`serviceaccounts` in namespace).
    ServiceAccount,
    /// Any other user (`users`).
    User,
    /// A group (`groups`).
    Group,
    /// One extra value (`userextras/<key>`).
    UserExtra,
    /// The UID (`uids`).
    Uid,
}

/// One `impersonate` authorization the requestor must pass (verb `impersonate`, resource request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpersonationCheck {
    /// What is impersonated.
    pub kind: ImpersonatedKind,
    /// `""` for users, service accounts and groups; `authentication.k8s.io` for extras and UIDs.
    pub api_group: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// `serviceaccounts`, `users`, `groups`, `userextras` or `uids`.
    pub resource: &'static str,
    /// The extra key for `userextras`.
    pub subresource: String,
    /// The service account's namespace.
    pub namespace: String,
    /// The impersonated name / group / extra value / UID.
    pub name: String,
}

impl ImpersonationCheck {
    /// The attributes to authorize for `requestor`.
    pub fn attributes<'a>(&'a self, requestor: &'a Identity) -> Attributes<'a> {
        Attributes::resource(requestor, "impersonate", self.api_group, self.resource)
            .with_api_version(self.api_version)
            .on_subresource(&self.subresource)
            .in_namespace(&self.namespace)
            .named(&self.name)
    }

    /// Go's `%v` of the `ObjectReference` kube-apiserver builds for this check (used verbatim
    /// in its 400 message).
    fn go_object_reference(&self) -> String {
        let (kind, api_version, field_path) = match self.kind {
            ImpersonatedKind::ServiceAccount => ("ServiceAccount", "", ""),
            ImpersonatedKind::User => ("User", "", ""),
            ImpersonatedKind::Group => ("Group", "", ""),
            ImpersonatedKind::UserExtra => (
                "UserExtra",
                "authentication.k8s.io/v1",
                self.subresource.as_str(),
            ),
            ImpersonatedKind::Uid => ("UID", "authentication.k8s.io/v1", ""),
        };
        // Kind Namespace Name UID APIVersion ResourceVersion FieldPath
        format!(
            "{{{kind} {} {}  {api_version}  {field_path}}}",
            self.namespace, self.name
        )
    }
}

/// Go's `url.PathUnescape`, strict: any malformed `%` escape (or a non-UTF-8 result) is an error.
fn path_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let valid = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !valid {
                return None;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl ImpersonationRequest {
    /// Collect the impersonation headers from `(name, value)` pairs (names case-insensitive;
    /// each pair is one header line).
    pub fn from_headers<'h>(headers: impl IntoIterator<Item = (&'h str, &'h str)>) -> Self {
        let mut request = Self::default();
        let mut saw_user = false;
        let mut saw_uid = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(IMPERSONATE_USER) {
                if !saw_user {
                    saw_user = true;
                    request.user = value.to_owned();
                }
            } else if name.eq_ignore_ascii_case(IMPERSONATE_GROUP) {
                request.groups.push(value.to_owned());
            } else if name.eq_ignore_ascii_case(IMPERSONATE_UID) {
                if !saw_uid {
                    saw_uid = true;
                    request.uid = value.to_owned();
                }
            } else if name.len() > IMPERSONATE_EXTRA_PREFIX.len()
                && name.is_char_boundary(IMPERSONATE_EXTRA_PREFIX.len())
                && name[..IMPERSONATE_EXTRA_PREFIX.len()]
                    .eq_ignore_ascii_case(IMPERSONATE_EXTRA_PREFIX)
            {
                let key = name[IMPERSONATE_EXTRA_PREFIX.len()..].to_lowercase();
                let key = path_unescape(&key).unwrap_or(key);
                request.extra.push((key, value.to_owned()));
            }
        }
        request
    }

    /// Whether the request carries no impersonation at all (pass through unchanged).
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
            && self.groups.is_empty()
            && self.uid.is_empty()
            && self.extra.is_empty()
    }

    /// The checks kube-apiserver runs, in its order: user (or service account), each group,
    /// each extra value, the UID. 400 when groups, extras or a UID come without a user.
    pub fn checks(&self) -> Result<Vec<ImpersonationCheck>, Error> {
        let mut checks = Vec::with_capacity(2 + self.groups.len() + self.extra.len());
        let check = |kind, api_group, resource, subresource: &str, namespace: &str, name: &str| {
            ImpersonationCheck {
                kind,
                api_group,
                api_version: "v1",
                resource,
                subresource: subresource.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }
        };
        if !self.user.is_empty() {
            checks.push(match split_service_account_username(&self.user) {
                Some((namespace, name)) => check(
                    ImpersonatedKind::ServiceAccount,
                    "",
                    "serviceaccounts",
                    "",
                    namespace,
                    name,
                ),
                None => check(ImpersonatedKind::User, "", "users", "", "", &self.user),
            });
        }
        for group in &self.groups {
            checks.push(check(ImpersonatedKind::Group, "", "groups", "", "", group));
        }
        for (key, value) in &self.extra {
            checks.push(check(
                ImpersonatedKind::UserExtra,
                "authentication.k8s.io",
                "userextras",
                key,
                "",
                value,
            ));
        }
        if !self.uid.is_empty() {
            checks.push(check(
                ImpersonatedKind::Uid,
                "authentication.k8s.io",
                "uids",
                "",
                "",
                &self.uid,
            ));
        }
        if self.user.is_empty() && !checks.is_empty() {
            let list: Vec<String> = checks
                .iter()
                .map(ImpersonationCheck::go_object_reference)
                .collect();
            return Err(Error::ImpersonationWithoutUser {
                message: format!(
                    "requested [{}] without impersonating a user",
                    list.join(" ")
                ),
            });
        }
        Ok(checks)
    }

    /// The identity the request runs as once every check passed: groups as requested (a
    /// service account with no groups requested gets its fixed groups), then
    /// `system:authenticated` added unless present or `system:unauthenticated` is (for
    /// `system:anonymous`: `system:unauthenticated` added unless present).
    pub fn resulting_identity(&self) -> Identity {
        let mut groups = self.groups.clone();
        let mut name = self.user.clone();
        if let Some((namespace, sa)) = split_service_account_username(&self.user) {
            name = service_account_username(namespace, sa);
            if self.groups.is_empty() {
                groups = service_account_groups(namespace);
            }
        }
        if name != ANONYMOUS {
            if !groups
                .iter()
                .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
            {
                groups.push(ALL_AUTHENTICATED.to_owned());
            }
        } else if !groups.iter().any(|g| g == ALL_UNAUTHENTICATED) {
            groups.push(ALL_UNAUTHENTICATED.to_owned());
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in &self.extra {
            extra.entry(key.clone()).or_default().push(value.clone());
        }
        Identity {
            name,
            uid: self.uid.clone(),
            groups,
            extra,
        }
    }
}

/// Run kube-apiserver's impersonation checks for `requestor` against `authorizer`.
///
/// - no impersonation headers → `Ok(None)` (the request runs as the requestor);
/// - groups/extras/UID without a user → [`Error::ImpersonationWithoutUser`] (400);
/// - any check not allowed (or erroring) → [`Error::ImpersonationForbidden`] (403) with the
///   kube-apiserver message for that check;
/// - otherwise `Ok(Some(identity))` to run the request as (strip every `Impersonate-*` header).
pub fn impersonate<A: Authorizer + ?Sized>(
    requestor: &Identity,
    request: &ImpersonationRequest,
    authorizer: &A,
) -> Result<Option<Identity>, Error> {
    if request.is_empty() {
        return Ok(None);
    }
    for check in request.checks()? {
        let attributes = check.attributes(requestor);
        let decision = authorizer.authorize(&attributes);
        if !decision.is_allowed() || decision.error.is_some() {
            return Err(Error::ImpersonationForbidden(Box::new(forbidden(
                &attributes,
                &decision.reason,
            ))));
        }
    }
    Ok(Some(request.resulting_identity()))
}
