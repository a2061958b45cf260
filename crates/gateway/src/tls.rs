//! The listener's TLS: configured cert/key files, or a self-signed pair generated once into the
//! state directory and reused on later starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Generating the self-signed pair failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the serving certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCert {
    /// PEM certificate file.
    pub cert_file: PathBuf,
    /// PEM key file.
    pub key_file: PathBuf,
    /// Whether the gateway generated it (clients then need `cert_file` as their CA).
    pub self_signed: bool,
}

/// Returns the configured pair, or generates a self-signed one for `127.0.0.1`/`localhost` (plus
/// `extra_names`) into `state_dir` if none exists there yet.
pub fn ensure_serving_cert(
    tls: Option<&TlsConfig>,
    state_dir: &Path,
    extra_names: &[String],
) -> Result<ServingCert, TlsError> {
    if let Some(tls) = tls {
        return Ok(ServingCert {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            self_signed: false,
        });
    }
    let cert_file = state_dir.join("serving.crt");
    let key_file = state_dir.join("serving.key");
    if !(cert_file.exists() && key_file.exists()) {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.extend(extra_names.iter().cloned());
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| TlsError::File {
                path,
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(state_dir).map_err(file_err(state_dir))?;
        write_private(&key_file, generated.signing_key.serialize_pem().as_bytes())
            .map_err(file_err(&key_file))?;
        std::fs::write(&cert_file, generated.cert.pem()).map_err(file_err(&cert_file))?;
    } else {
        let missing = names_not_covered(&cert_file, extra_names);
        if !missing.is_empty() {
            // Made before these names were configured: kept (a new pair would change the
            // gateway's identity under every kubeconfig), but clients reaching it by them
            // fail to verify it.
            tracing::warn!(
                certificate = %cert_file.display(),
                missing = %missing.join(", "),
                "the self-signed serving certificate does not name every name the gateway is \
                 reached by; delete it and its key to have one made for them, or configure `tls`"
            );
        }
    }
    Ok(ServingCert {
        cert_file,
        key_file,
        self_signed: true,
    })
}

/// Which of `names` (DNS names or IP addresses) the first certificate in `cert_file` does not
/// list among its subject alternative names. Empty when the file cannot be read or parsed:
/// loading it will say why.
pub(crate) fn names_not_covered(cert_file: &Path, names: &[String]) -> Vec<String> {
    let Some(Ok(der)) = CertificateDer::pem_file_iter(cert_file)
        .ok()
        .and_then(|mut certs| certs.next())
    else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return names.to_vec();
    };
    let listed: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let covers = |listed: &str, name: &str| {
        // Addresses compared as addresses (`2001:0db8::1` is `2001:db8::1`); names
        // case-insensitively, a wildcard standing for one left-most label.
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return listed.parse::<std::net::IpAddr>() == Ok(ip);
        }
        listed.eq_ignore_ascii_case(name)
            || listed.strip_prefix("*.").is_some_and(|domain| {
                name.split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(domain))
            })
    };
    names
        .iter()
        .filter(|n| !listed.iter().any(|l| covers(l, n)))
        .cloned()
        .collect()
}

/// The serving certificate `tls` names, or the self-signed one in `state_dir`, without making
/// one: what a reload uses while the gateway already serves the self-signed one. Making a new
/// pair there because a file went missing would change the gateway's identity under every
/// kubeconfig that trusts the old one; reading the missing file fails the reload instead.
pub fn existing_serving_cert(tls: Option<&TlsConfig>, state_dir: &Path) -> ServingCert {
    match tls {
        Some(tls) => ServingCert {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            self_signed: false,
        },
        None => ServingCert {
            cert_file: state_dir.join("serving.crt"),
            key_file: state_dir.join("serving.key"),
            self_signed: true,
        },
    }
}

/// Writes a secret file readable only by its owner.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The certificate chain a client presented, verified by the TLS layer against the client CA
/// configured when the connection was made (a request extension, set per connection).
///
/// A reload can replace that CA while the connection stays open, so whoever trusts the
/// certificate checks it again against the CA it trusts now
/// ([`verified_by`](Self::verified_by)), as kube-apiserver's x509 authenticator checks the
/// client certificate on every request against its current CA bundle. The connection's
/// requests share the result, for one verifier, for [`RECHECK_AFTER`].
#[derive(Clone)]
pub struct PeerCertificate {
    chain: Arc<[CertificateDer<'static>]>,
    checked: Arc<std::sync::Mutex<Option<Checked>>>,
}

/// How long a connection's requests reuse a certificate check against one verifier: the
/// certificate's validity is read again after this, so one that expires on a long connection
/// stops being trusted within it.
pub const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// The last check of a [`PeerCertificate`].
struct Checked {
    /// The verifier it was made with (weak: the allocation stays, so its address is not
    /// given to another verifier while this is kept).
    by: std::sync::Weak<dyn rustls::server::danger::ClientCertVerifier>,
    at: std::time::Instant,
    trusted: bool,
}

impl std::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl PeerCertificate {
    /// The chain a client presented, leaf first; `None` when it is empty.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Option<PeerCertificate> {
        (!chain.is_empty()).then(|| PeerCertificate {
            chain: chain.into(),
            checked: Arc::default(),
        })
    }

    /// The client's own certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Whether the chain verifies with `verifier` (a CA bundle) now.
    pub fn verified_by(
        &self,
        verifier: &Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> bool {
        let now = std::time::Instant::now();
        let mut checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = &*checked
            && std::ptr::addr_eq(c.by.as_ptr(), Arc::as_ptr(verifier))
            && now.saturating_duration_since(c.at) < RECHECK_AFTER
        {
            return c.trusted;
        }
        let trusted = verifier
            .verify_client_cert(
                &self.chain[0],
                &self.chain[1..],
                rustls_pki_types::UnixTime::now(),
            )
            .is_ok();
        *checked = Some(Checked {
            by: Arc::downgrade(verifier),
            at: now,
            trusted,
        });
        trusted
    }
}

/// A verifier of client certificates issued by the CA bundle in `path` (PEM) that lets clients
/// without one through: what the listener asks clients for, and what the front proxy checks
/// a connection's certificate against on its requests.
pub fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let file_error = |message: String| TlsError::File {
        path: path.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(format!("no usable PEM certificate: {e}")))?
    {
        let der = der.map_err(|e| file_error(format!("no usable PEM certificate: {e}")))?;
        roots
            .add(der)
            .map_err(|e| file_error(format!("not a CA certificate: {e}")))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| file_error(e.to_string()))
}

/// Builds the rustls server config (HTTP/2 and HTTP/1.1 by ALPN) from PEM files.
pub fn server_config(cert: &ServingCert) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_client_ca(cert, None)
}

/// Like [`server_config`], and when `client_ca` (a PEM bundle) is given, asks clients for a
/// certificate: a presented certificate must chain to that CA or the handshake fails; clients
/// without one still connect (they authenticate with tokens).
pub fn server_config_with_client_ca(
    cert: &ServingCert,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: cert.cert_file.clone(),
            message: format!("no usable PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert.cert_file.clone(),
            message: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&cert.key_file).map_err(|e| TlsError::File {
        path: cert.key_file.clone(),
        message: format!("no usable PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated pair names localhost, the loopback addresses and the extra names; a pair
    /// made before a name was configured is found not to name it.
    #[test]
    fn the_names_a_certificate_lacks_are_found() {
        let dir = std::env::temp_dir().join(format!("kubegate-tls-{}", uuid::Uuid::new_v4()));
        let cert = ensure_serving_cert(None, &dir, &["gw.example.com".to_owned()]).unwrap();
        let asked = [
            "0:0:0:0:0:0:0:1",
            "gw.example.com",
            "127.0.0.1",
            "::1",
            "LOCALHOST",
            "other.example",
            "10.0.0.1",
        ]
        .map(str::to_owned);
        assert_eq!(
            names_not_covered(&cert.cert_file, &asked),
            ["other.example", "10.0.0.1"]
        );
        // Reused as it is, whatever is asked now.
        let again = ensure_serving_cert(None, &dir, &["other.example".to_owned()]).unwrap();
        assert_eq!(
            names_not_covered(&again.cert_file, &["other.example".to_owned()]),
            ["other.example"]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
