//! Ways to authenticate a request beyond the gateway's own access keys and tokens: session
//! cookies, external OIDC issuers, a central gateway (agent mode), a trusted front proxy. Each is
//! an [`ExternalAuthenticator`], consulted in order after the gateway's own credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Method};

use crate::GatewayError;
use crate::authn::Caller;
use crate::config::Config;
use crate::directory::Directory;

/// What an authenticator sees of a request. Its `Debug` shows header names and no values, and
/// no bearer token: it holds the request's credentials (`Authorization`, cookies).
#[derive(Clone, Copy)]
pub struct AuthnInput<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request headers (the bearer token and cookies are in here).
    pub headers: &'a HeaderMap,
    /// The bearer token, if exactly one `Authorization: Bearer` header was sent.
    pub bearer: Option<&'a str>,
    /// The client's address.
    pub client_addr: Option<SocketAddr>,
    /// The client certificate the TLS layer verified, if one was presented.
    pub peer_certificate: Option<&'a crate::tls::PeerCertificate>,
    /// Configured users and teams.
    pub directory: &'a Directory,
}

impl std::fmt::Debug for AuthnInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthnInput")
            .field("method", self.method)
            .field(
                "header_names",
                &self.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            )
            .field("bearer", &self.bearer.map(|_| "<redacted>"))
            .field("client_addr", &self.client_addr)
            .field("peer_certificate", &self.peer_certificate.is_some())
            .finish_non_exhaustive()
    }
}

/// An authenticator's answer.
#[derive(Debug)]
pub enum AuthnOutcome {
    /// The request is authenticated.
    Authenticated(Box<Caller>),
    /// Not this authenticator's kind of credential; ask the next one.
    Skip,
    /// The credential is this authenticator's kind but invalid (401; the reason is logged).
    Rejected(String),
    /// The credential is acceptable but the request must be refused (403 with this reason),
    /// e.g. a cookie-authenticated request from a foreign origin.
    Forbidden(String),
    /// The credential cannot be checked right now (503 with this message).
    Unavailable(String),
}

/// An extra authentication method.
pub trait ExternalAuthenticator: Send + Sync + std::fmt::Debug {
    /// Authenticates a request, or says why not.
    fn authenticate<'a>(&'a self, input: AuthnInput<'a>) -> BoxFuture<'a, AuthnOutcome>;
}

/// The external authenticators a configuration asks for, in the order they are consulted.
pub fn from_config(config: &Config) -> Result<Vec<Arc<dyn ExternalAuthenticator>>, GatewayError> {
    let mut authenticators: Vec<Arc<dyn ExternalAuthenticator>> = Vec::new();
    authenticators.extend(crate::remote::from_config(config)?);
    if let Some(front) = &config.front_proxy {
        let front = crate::front_proxy::FrontProxy::new(front)
            .map_err(|e| GatewayError::Mode(format!("frontProxy.{e}")))?;
        authenticators.push(Arc::new(front));
    }
    Ok(authenticators)
}

/// Files with their contents when read (none if they could not be).
pub(crate) type FilesRead = Vec<(std::path::PathBuf, Option<Vec<u8>>)>;

/// The files the external authenticators of `config` read when built (CA bundles), each with
/// its contents then (none if it could not be read). A reload compares them with what the
/// running authenticators were built from: a CA bundle rewritten in place (a Secret volume's
/// update, a rotation) is a change even though the configuration names the same file.
pub(crate) fn files_read(config: &Config) -> FilesRead {
    let named = config
        .oidc_issuers
        .iter()
        .filter_map(|issuer| issuer.ca_file.as_ref())
        .chain(
            config
                .agent
                .iter()
                .filter_map(|a| a.central_ca_file.as_ref()),
        )
        .chain(
            config
                .front_proxy
                .iter()
                .filter_map(|f| f.client_ca_file.as_ref()),
        );
    named
        .map(|path| (path.clone(), std::fs::read(path).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_credential() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer kgak_secret-one"),
        );
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("kubegate_session=secret.two.x"),
        );
        let directory = Directory::new(&Config::default());
        let input = AuthnInput {
            method: &Method::GET,
            headers: &headers,
            bearer: Some("kgak_secret-one"),
            client_addr: None,
            peer_certificate: None,
            directory: &directory,
        };
        let shown = format!("{input:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("authorization") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
