//! kubeconfig files for real `kubectl --kubeconfig` (written as JSON, which kubectl reads).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::Error;
use crate::certs::CertifiedKey;

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// A client certificate signed by the server's CA.
    ClientCert(CertifiedKey),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::ClientCert(c) => f.debug_tuple("ClientCert").field(c).finish(),
        }
    }
}

/// Writes a kubeconfig with one cluster/user/context (`testkit`, namespace `default`).
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    credential: &Credential,
) -> Result<(), Error> {
    let user = match credential {
        Credential::Token(t) => json!({"token": t}),
        Credential::ClientCert(c) => json!({
            "client-certificate-data": STANDARD.encode(c.cert_pem.as_bytes()),
            "client-key-data": STANDARD.encode(c.key_pem.as_bytes()),
        }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testkit", "cluster": {
            "server": server_url,
            "certificate-authority-data": STANDARD.encode(ca_pem.as_bytes()),
        }}],
        "users": [{"name": "testkit", "user": user}],
        "contexts": [{"name": "testkit", "context": {
            "cluster": "testkit", "user": "testkit", "namespace": "default",
        }}],
        "current-context": "testkit",
    });
    let bytes = serde_json::to_vec_pretty(&config)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}
