//! A small HTTPS client for the few JSON calls the remote authenticators make (discovery
//! documents, JWKS, `selves`). Every call has a deadline and a body size limit, and every error
//! says what failed without quoting a credential.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{FetchError, RemoteError};

/// Time allowed to open a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole call (connect, TLS, request, response body).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (discovery documents and key sets are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// An HTTPS-only client trusting either one CA bundle or the system's roots.
#[derive(Clone)]
pub struct HttpsClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

/// A response: status and (size-limited) body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl HttpsClient {
    /// A client trusting the PEM bundle at `ca_file`, or the system's roots when `None`.
    /// `field` names the configuration field in errors.
    pub fn new(ca_file: Option<&Path>, field: &str) -> Result<HttpsClient, RemoteError> {
        let roots = roots(ca_file, field)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RemoteError::Tls {
                field: field.to_owned(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(HttpsClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(https),
        })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Reply, FetchError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Invalid(format!("bad URL {url:?}: {e}")))?;
        self.call(req).await
    }

    /// `POST url` with a JSON body, authenticated with `bearer`.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: Vec<u8>,
    ) -> Result<Reply, FetchError> {
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {bearer}")).map_err(|_| {
            FetchError::Invalid("the credential is not a valid header value".into())
        })?;
        auth.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, auth)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| FetchError::Invalid(format!("bad URL {url:?}: {e}")))?;
        self.call(req).await
    }

    async fn call(&self, req: Request<Full<Bytes>>) -> Result<Reply, FetchError> {
        let work = async {
            let res = self
                .inner
                .request(req)
                .await
                .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| FetchError::Unreachable(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unreachable(format!(
                "no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn roots(ca_file: Option<&Path>, field: &str) -> Result<rustls::RootCertStore, RemoteError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| RemoteError::Tls {
                field: field.to_owned(),
                message: format!("{}: {e}", path.display()),
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| RemoteError::Tls {
                    field: field.to_owned(),
                    message: format!("{}: {e}", path.display()),
                })?;
                roots.add(cert).map_err(|e| RemoteError::Tls {
                    field: field.to_owned(),
                    message: format!("{}: {e}", path.display()),
                })?;
            }
            if roots.is_empty() {
                return Err(RemoteError::Tls {
                    field: field.to_owned(),
                    message: format!("{}: no certificate in the file", path.display()),
                });
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            // Unparsable system certificates are skipped, as every TLS client does.
            let _ = roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(RemoteError::Tls {
                    field: field.to_owned(),
                    message: "no CA file is configured and the system has no trusted roots".into(),
                });
            }
        }
    }
    Ok(roots)
}

/// An error with its causes, `outer: inner: innermost` (hyper's top-level message alone,
/// "client error (Connect)", does not say what went wrong).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
