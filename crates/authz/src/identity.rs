//! Who is asking: the authenticated user as kube-apiserver's `user.Info` models it.

use std::collections::BTreeMap;

/// `system:authenticated`: added to every authenticated, non-anonymous user.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// `system:unauthenticated`: the group of the anonymous user.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// `system:anonymous`: the anonymous user's name.
pub const ANONYMOUS: &str = "system:anonymous";
/// `system:masters`: members are allowed everything by the superuser authorizer.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// `system:serviceaccounts`: the group of every service account.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// Prefix of service-account user names.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";

/// An authenticated (or anonymous) user: name, UID, groups and extra attributes.
///
/// Build it with [`Identity::authenticated`] (adds `system:authenticated` the way
/// kube-apiserver's authenticated-group adder does), [`Identity::anonymous`] or
/// [`Identity::service_account`]; [`Identity::new`] takes the fields as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User name (`jane`, `system:serviceaccount:ns:name`, `system:anonymous`).
    pub name: String,
    /// Stable unique ID; may be empty.
    pub uid: String,
    /// Group names.
    pub groups: Vec<String>,
    /// Extra attributes (`scopes`, `authentication.kubernetes.io/pod-name`, …).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// An identity with no name and no groups. Useful when only the request part of
/// [`Attributes`](crate::Attributes) matters (scope checks).
pub static NOBODY: Identity = Identity {
    name: String::new(),
    uid: String::new(),
    groups: Vec::new(),
    extra: BTreeMap::new(),
};

impl Identity {
    /// The identity with exactly these fields (no groups added).
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            name: name.into(),
            groups,
            ..Self::default()
        }
    }

    /// An authenticated user: `system:authenticated` is appended unless the user is
    /// `system:anonymous` or the groups already contain `system:authenticated` or
    /// `system:unauthenticated` (kube-apiserver `AuthenticatedGroupAdder`).
    pub fn authenticated(
        name: impl Into<String>,
        uid: impl Into<String>,
        groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    ) -> Self {
        let mut identity = Self {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra,
        };
        if identity.name != ANONYMOUS
            && !identity
                .groups
                .iter()
                .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
        {
            identity.groups.push(ALL_AUTHENTICATED.to_owned());
        }
        identity
    }

    /// The anonymous user: `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS, vec![ALL_UNAUTHENTICATED.to_owned()])
    }

    /// A service account user: `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>` and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::authenticated(
            service_account_username(namespace, name),
            "",
            service_account_groups(namespace),
            BTreeMap::new(),
        )
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Whether the user is in `system:masters` (allowed everything by [`Superuser`](crate::Superuser)).
    pub fn is_superuser(&self) -> bool {
        self.in_group(SYSTEM_MASTERS)
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{namespace}:{name}")
}

/// `[system:serviceaccounts, system:serviceaccounts:<namespace>]`.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        ALL_SERVICE_ACCOUNTS.to_owned(),
        format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
    ]
}

/// Split a service-account user name into `(namespace, name)` the way kube-apiserver's
/// `serviceaccount.SplitUsername` does: exactly two non-empty parts after the prefix, the
/// namespace a DNS-1123 label and the name a DNS-1123 subdomain.
pub fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_USERNAME_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    if name.contains(':') || !is_dns1123_label(namespace) || !is_dns1123_subdomain(name) {
        return None;
    }
    Some((namespace, name))
}

pub(crate) fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// apimachinery's `IsDNS1123Subdomain`: at most 253 characters, in its pattern.
pub(crate) fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && matches_dns1123_subdomain_pattern(value)
}

/// The pattern of `IsDNS1123Subdomain`: dot-separated labels of lower-case letters, digits
/// and `-`, each starting and ending with a letter or digit. The labels have no length limit
/// of their own, unlike DNS-1123 labels.
pub(crate) fn matches_dns1123_subdomain_pattern(value: &str) -> bool {
    value.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
    })
}
