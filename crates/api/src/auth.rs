//! Bodies of the platform's own endpoints outside the Kubernetes API (Loft's `pkg/auth`).

use serde::{Deserialize, Serialize};

/// The answer of the platform's `/version` (Loft's `auth.Version`): what `vcluster platform`
/// and loft CLIs read to learn which platform they talk to. Not the Kubernetes `version.Info`
/// the management API serves under `/kubernetes/management/version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformVersion {
    /// The platform's version (`v4.3.0` for Loft; kubegate's own for kubegate).
    #[serde(default)]
    pub version: String,
    /// Its major number.
    #[serde(default)]
    pub major: String,
    /// Its minor number.
    #[serde(default)]
    pub minor: String,
    /// The Kubernetes version of the API the platform serves.
    #[serde(default)]
    pub kube_version: String,
    /// A newer platform version, when the platform knows of one.
    #[serde(default)]
    pub newer_version: String,
    /// Whether the platform should be upgraded.
    #[serde(default)]
    pub should_upgrade: bool,
}
