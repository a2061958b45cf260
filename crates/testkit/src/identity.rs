//! The user a request runs as (kube's `user.Info`).

use std::collections::BTreeMap;

/// Authenticated (or impersonated) user, as kube-apiserver's `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID (may be empty).
    pub uid: String,
    /// Groups, in order.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The superuser group kube-apiserver always allows.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Added to every authenticated non-anonymous user.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
/// The anonymous user's group.
pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The anonymous user name.
pub const SYSTEM_ANONYMOUS: &str = "system:anonymous";

impl UserInfo {
    /// A user with no groups.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Builder: add a group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Builder: set the UID.
    #[must_use]
    pub fn with_uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = uid.into();
        self
    }

    /// Builder: add an extra value.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.entry(key.into()).or_default().push(value.into());
        self
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self::new(SYSTEM_ANONYMOUS).with_group(SYSTEM_UNAUTHENTICATED)
    }

    /// apiserver `AuthenticatedGroupAdder`: append `system:authenticated` unless anonymous or
    /// already carrying `system:authenticated`/`system:unauthenticated`.
    pub(crate) fn with_authenticated_group(mut self) -> Self {
        let has = self
            .groups
            .iter()
            .any(|g| g == SYSTEM_AUTHENTICATED || g == SYSTEM_UNAUTHENTICATED);
        if self.name != SYSTEM_ANONYMOUS && !has {
            self.groups.push(SYSTEM_AUTHENTICATED.to_owned());
        }
        self
    }
}
