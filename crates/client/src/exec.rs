//! The `client.authentication.k8s.io` ExecCredential an exec credential plugin prints.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The exec plugin API version kubegate writes into kubeconfigs.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";
/// The older version loftctl's kubeconfigs name; answered in kind when asked for.
pub const EXEC_API_VERSION_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// An `ExecCredential` as a plugin prints it on stdout. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredential {
    /// `client.authentication.k8s.io/v1` (or the version the caller asked for).
    pub api_version: String,
    /// Always `ExecCredential`.
    pub kind: String,
    /// The credential.
    pub status: ExecCredentialStatus,
}

/// The credential part of an [`ExecCredential`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredentialStatus {
    /// Bearer token (secret).
    pub token: String,
    /// RFC 3339 time after which the client must run the plugin again; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<String>,
}

impl fmt::Debug for ExecCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecCredential")
            .field("api_version", &self.api_version)
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Debug for ExecCredentialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecCredentialStatus")
            .field("token", &"<redacted>")
            .field("expiration_timestamp", &self.expiration_timestamp)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecInfo {
    #[serde(default)]
    api_version: String,
}

impl ExecCredential {
    /// A credential for `token`, valid until `expires_at` (Unix seconds) when known.
    pub fn new(
        api_version: &str,
        token: impl Into<String>,
        expires_at: Option<i64>,
    ) -> Result<ExecCredential, Error> {
        let expiration_timestamp = expires_at.map(rfc3339).transpose()?;
        Ok(ExecCredential {
            api_version: api_version.to_owned(),
            kind: "ExecCredential".to_owned(),
            status: ExecCredentialStatus {
                token: token.into(),
                expiration_timestamp,
            },
        })
    }

    /// The API version to answer with, from the `KUBERNETES_EXEC_INFO` value the client passed
    /// (client-go requires the answer in the version it asked for). `None` (not run by a
    /// client) answers `v1`.
    pub fn requested_version(exec_info: Option<&str>) -> Result<&'static str, Error> {
        let Some(info) = exec_info.filter(|s| !s.trim().is_empty()) else {
            return Ok(EXEC_API_VERSION);
        };
        let info: ExecInfo = serde_json::from_str(info).map_err(|e| Error::Encoding {
            context: "KUBERNETES_EXEC_INFO",
            message: e.to_string(),
        })?;
        match info.api_version.as_str() {
            "" | EXEC_API_VERSION => Ok(EXEC_API_VERSION),
            EXEC_API_VERSION_V1BETA1 => Ok(EXEC_API_VERSION_V1BETA1),
            other => Err(Error::Encoding {
                context: "KUBERNETES_EXEC_INFO",
                message: format!("unsupported exec credential apiVersion {other:?}"),
            }),
        }
    }

    /// The JSON a plugin prints.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::Encoding {
            context: "ExecCredential",
            message: e.to_string(),
        })
    }
}

pub(crate) fn rfc3339(unix: i64) -> Result<String, Error> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| Error::Encoding {
        context: "timestamp",
        message: e.to_string(),
    })?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Encoding {
            context: "timestamp",
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_credential_with_expiry() {
        let c = ExecCredential::new(EXEC_API_VERSION, "tok", Some(1_800_000_000)).unwrap();
        assert_eq!(
            c.to_json().unwrap(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok","expirationTimestamp":"2027-01-15T08:00:00Z"}}"#
        );
        assert!(!format!("{c:?}").contains("tok\""));
        let none = ExecCredential::new(EXEC_API_VERSION, "tok", None).unwrap();
        assert!(!none.to_json().unwrap().contains("expiration"));
    }

    #[test]
    fn answers_in_the_requested_version() {
        let cases = [
            (None, Ok(EXEC_API_VERSION)),
            (
                Some(
                    r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
                ),
                Ok(EXEC_API_VERSION),
            ),
            (
                Some(
                    r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}"#,
                ),
                Ok(EXEC_API_VERSION_V1BETA1),
            ),
            (
                Some(r#"{"apiVersion":"client.authentication.k8s.io/v2"}"#),
                Err(()),
            ),
            (Some("not json"), Err(())),
        ];
        for (info, want) in cases {
            let got = ExecCredential::requested_version(info).map_err(|_| ());
            assert_eq!(got, want, "{info:?}");
        }
    }
}
