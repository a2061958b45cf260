//! `storage.loft.sh/v1` AccessKey.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::AccessKeyScope;

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

api_object! {
    /// `storage.loft.sh/v1` AccessKey (cluster-scoped): a long-lived bearer key.
    AccessKey {
        spec: AccessKeySpec,
        status: AccessKeyStatus,
        group: "storage.loft.sh",
        version: "v1",
        kind: "AccessKey",
        plural: "accesskeys",
        scope: k8s_openapi::ClusterResourceScope,
    }
}

/// AccessKey spec. `Debug` redacts the key and OIDC tokens.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeySpec {
    /// Name shown in the UI.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Free-form description.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// The user this key belongs to.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// The team this key belongs to.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub team: String,
    /// A generic subject used instead of user or team.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// Extra groups applied when this key is used.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// The bearer token itself (secret).
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub key: String,
    /// The object stays but the key is rejected.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Time to live in seconds; 0 = none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: i64,
    /// Count the TTL from `status.lastActivity` instead of the creation time.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ttl_after_last_activity: bool,
    /// What the key may reach; `None` = the owner's full permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AccessKeyScope>,
    /// Who manages the key.
    #[serde(default, skip_serializing_if = "AccessKeyType::is_none")]
    pub r#type: AccessKeyType,
    /// SSO identity the key was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AccessKeyIdentity>,
    /// When the identity was last refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_refresh: Option<Time>,
    /// OIDC provider data when the key is a refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_provider: Option<AccessKeyOidcProvider>,
    /// DEPRECATED parent key.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub parent: String,
    /// DEPRECATED OIDC login tokens (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_login: Option<AccessKeyOidc>,
}

impl std::fmt::Debug for AccessKeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeySpec")
            .field("display_name", &self.display_name)
            .field("description", &self.description)
            .field("user", &self.user)
            .field("team", &self.team)
            .field("subject", &self.subject)
            .field("groups", &self.groups)
            .field("key", &redacted(&self.key))
            .field("disabled", &self.disabled)
            .field("ttl", &self.ttl)
            .field("ttl_after_last_activity", &self.ttl_after_last_activity)
            .field("scope", &self.scope)
            .field("type", &self.r#type)
            .field("identity", &self.identity)
            .field("identity_refresh", &self.identity_refresh)
            .field("oidc_provider", &self.oidc_provider)
            .field("parent", &self.parent)
            .field(
                "oidc_login",
                &self.oidc_login.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

pub(crate) fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

/// AccessKey status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyStatus {
    /// Last time the key was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
}

string_enum! {
    /// `AccessKeyType`.
    AccessKeyType {
        /// `""`
        None => "",
        /// `Login`
        Login => "Login",
        /// `User`
        User => "User",
        /// `Other`
        Other => "Other",
        /// `Reset`
        Reset => "Reset",
        /// `OIDCRefreshToken`
        OidcRefreshToken => "OIDCRefreshToken",
        /// `NetworkPeer`
        NetworkPeer => "NetworkPeer",
        /// `Workspace`
        Workspace => "Workspace",
    }
}

impl AccessKeyType {
    /// Whether this is the empty type (omitted on output).
    pub fn is_none(&self) -> bool {
        self.as_str().is_empty()
    }
}

// The enum is generated by `string_enum!`, which cannot mark a `#[default]` variant.
#[allow(clippy::derivable_impls)]
impl Default for AccessKeyType {
    fn default() -> Self {
        Self::None
    }
}

/// SSO identity attached to an access key. `Debug` redacts `connectorData`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyIdentity {
    /// Subject at the identity provider.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user_id: String,
    /// User name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub username: String,
    /// Preferred user name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub preferred_username: String,
    /// E-mail address.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub email: String,
    /// Whether the e-mail was verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub email_verified: bool,
    /// Groups from the identity provider.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// Connector name.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub connector: String,
    /// Opaque connector data (secret; base64 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_data: Option<ByteString>,
}

impl std::fmt::Debug for AccessKeyIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyIdentity")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("preferred_username", &self.preferred_username)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .field("groups", &self.groups)
            .field("connector", &self.connector)
            .field(
                "connector_data",
                &self.connector_data.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// OIDC provider data of a refresh-token access key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyOidcProvider {
    /// Client the token was issued to.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub client_id: String,
    /// Nonce.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub nonce: String,
    /// Redirect URI.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub redirect_uri: String,
    /// Space-separated scopes.
    #[serde(
        default,
        deserialize_with = "crate::object::nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub scopes: String,
}

/// DEPRECATED OIDC login tokens (all secret; base64 on the wire).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyOidc {
    /// ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<ByteString>,
    /// Access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<ByteString>,
    /// Refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<ByteString>,
    /// Last refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<Time>,
}

impl std::fmt::Debug for AccessKeyOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyOidc")
            .field("last_refresh", &self.last_refresh)
            .finish_non_exhaustive()
    }
}
