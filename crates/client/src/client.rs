//! `GatewayClient`: one gateway URL, CA and credential, turned into a plain `kube_client::Client`
//! per target.

use std::fmt;

use kube_client::config::{AuthInfo, ExecConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};

use crate::exec::EXEC_API_VERSION;
use crate::{Error, Management, Target};

/// How a client proves who it is to the gateway.
#[derive(Clone)]
pub enum Credential {
    /// A bearer token: an access key, or a token the gateway minted
    /// (e.g. a `DirectClusterEndpointToken`).
    Bearer(SecretString),
    /// A `client.authentication.k8s.io` exec plugin that prints an `ExecCredential`.
    Exec(Box<ExecConfig>),
}

impl Credential {
    /// A static bearer credential (an access key or a minted token).
    pub fn bearer(token: impl Into<String>) -> Credential {
        Credential::Bearer(SecretString::from(token.into()))
    }

    /// An exec plugin speaking `client.authentication.k8s.io/v1`.
    pub fn exec(command: impl Into<String>, args: Vec<String>) -> Credential {
        Credential::Exec(Box::new(ExecConfig {
            api_version: Some(EXEC_API_VERSION.to_owned()),
            command: Some(command.into()),
            args: Some(args),
            // v1 requires the mode; a plugin run by a library cannot prompt anyone.
            interactive_mode: Some(kube_client::config::ExecInteractiveMode::Never),
            ..Default::default()
        }))
    }

    pub(crate) fn auth_info(&self) -> AuthInfo {
        match self {
            Credential::Bearer(token) => AuthInfo {
                token: Some(token.clone()),
                ..Default::default()
            },
            Credential::Exec(exec) => AuthInfo {
                exec: Some((**exec).clone()),
                ..Default::default()
            },
        }
    }

    pub(crate) fn bearer_secret(&self) -> Option<&str> {
        match self {
            Credential::Bearer(token) => Some(token.expose_secret()),
            Credential::Exec(_) => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::Exec(exec) => f
                .debug_struct("Exec")
                .field("command", &exec.command)
                .field("args", &exec.args)
                .finish(),
        }
    }
}

/// Which kind of server the URL points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endpoint {
    /// A central gateway: every target, each under its full prefix.
    #[default]
    Central,
    /// A direct cluster endpoint (an agent inside one cluster): prefixes without the cluster
    /// segment, no management API.
    Direct,
}

/// A gateway URL, the CA to verify it with, and a credential; hands out one
/// `kube_client::Client` per [`Target`].
///
/// Every client is a plain kube client whose `cluster_url` carries the target's prefix
/// (kube-client keeps a base path and joins request paths onto it), so `Api<Pod>`, watches,
/// logs and exec work unchanged.
#[derive(Clone)]
pub struct GatewayClient {
    url: String,
    endpoint: Endpoint,
    ca_pem: Option<Vec<u8>>,
    ca_der: Option<Vec<Vec<u8>>>,
    accept_invalid_certs: bool,
    credential: Credential,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("ca", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("credential", &self.credential)
            .finish()
    }
}

impl GatewayClient {
    /// A client of the central gateway at `url` (`https://host:port`, optionally with a path
    /// the gateway is mounted under).
    pub fn new(url: &str, credential: Credential) -> Result<GatewayClient, Error> {
        Ok(GatewayClient {
            url: normalize_url(url)?,
            endpoint: Endpoint::Central,
            ca_pem: None,
            ca_der: None,
            accept_invalid_certs: false,
            credential,
        })
    }

    /// A client of a direct cluster endpoint (an agent) at `url`.
    pub fn direct(url: &str, credential: Credential) -> Result<GatewayClient, Error> {
        let mut client = GatewayClient::new(url, credential)?;
        client.endpoint = Endpoint::Direct;
        Ok(client)
    }

    /// Trusts exactly the certificates in `pem` (instead of the system roots).
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<GatewayClient, Error> {
        let mut ders = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::InvalidCa(e.to_string()))?;
            ders.push(cert.as_ref().to_vec());
        }
        if ders.is_empty() {
            return Err(Error::InvalidCa("no PEM certificate found".into()));
        }
        self.ca_pem = Some(pem.to_vec());
        self.ca_der = Some(ders);
        Ok(self)
    }

    /// Skips TLS verification. Only for throwaway test setups; kubeconfigs generated from this
    /// client say `insecure-skip-tls-verify: true`.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> GatewayClient {
        self.accept_invalid_certs = accept;
        self
    }

    /// The same gateway and CA with another credential.
    pub fn with_credential(&self, credential: Credential) -> GatewayClient {
        GatewayClient {
            credential,
            ..self.clone()
        }
    }

    /// The gateway URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Central gateway or direct endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The CA bundle (PEM), if one was set.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// Whether TLS verification is off.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The server URL of `target`: gateway URL + the target's prefix.
    pub fn server_url(&self, target: &Target) -> Result<String, Error> {
        target.validate()?;
        let path = match self.endpoint {
            Endpoint::Central => target.path(),
            Endpoint::Direct => target
                .direct_path()
                .ok_or(Error::NoManagementOnDirectEndpoint)?,
        };
        Ok(format!("{}{path}", self.url))
    }

    /// A kube-client `Config` for `target`.
    pub fn config(&self, target: &Target) -> Result<kube_client::Config, Error> {
        let server = self.server_url(target)?;
        let uri: http::Uri =
            server
                .parse()
                .map_err(|e: http::uri::InvalidUri| Error::InvalidUrl {
                    url: server.clone(),
                    reason: e.to_string(),
                })?;
        let mut config = kube_client::Config::new(uri);
        config.root_cert = self.ca_der.clone();
        config.accept_invalid_certs = self.accept_invalid_certs;
        config.auth_info = self.credential.auth_info();
        Ok(config)
    }

    /// A kube client for `target`. Must be called inside a Tokio runtime.
    pub fn client(&self, target: &Target) -> Result<kube_client::Client, Error> {
        // The TLS stack is built on aws-lc-rs only; installing it as the process default is
        // harmless when it already is, and needed when no provider was chosen yet.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = self.config(target)?;
        Ok(kube_client::Client::try_from(config)?)
    }

    /// Typed management API calls.
    pub fn management(&self) -> Result<Management, Error> {
        Ok(Management::new(self.client(&Target::Management)?))
    }

    /// A client for a connected cluster.
    pub fn cluster(&self, cluster: &str) -> Result<kube_client::Client, Error> {
        self.client(&Target::cluster(cluster))
    }

    /// A client for a legacy virtual cluster.
    pub fn virtual_cluster(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<kube_client::Client, Error> {
        self.client(&Target::virtual_cluster(cluster, namespace, name))
    }

    /// A client for a project space.
    pub fn project_space(&self, project: &str, space: &str) -> Result<kube_client::Client, Error> {
        self.client(&Target::project_space(project, space))
    }

    /// A client for a project virtual cluster.
    pub fn project_virtual_cluster(
        &self,
        project: &str,
        virtual_cluster: &str,
    ) -> Result<kube_client::Client, Error> {
        self.client(&Target::project_virtual_cluster(project, virtual_cluster))
    }
}

/// Annotation of a `Cluster` naming its direct endpoint (a host, or a URL).
pub const DIRECT_ENDPOINT_ANNOTATION: &str = "loft.sh/direct-cluster-endpoint";
/// Annotation of a `Cluster`: `"true"` when its direct endpoint is not TLS-verifiable.
pub const DIRECT_ENDPOINT_INSECURE_ANNOTATION: &str = "loft.sh/direct-cluster-endpoint-insecure";
/// Annotation of a `Cluster`: base64 PEM CA of its direct endpoint.
pub const DIRECT_ENDPOINT_CA_ANNOTATION: &str = "loft.sh/direct-cluster-endpoint-ca-data";

impl GatewayClient {
    /// A client of `cluster`'s direct endpoint, from its `loft.sh/direct-cluster-endpoint*`
    /// annotations, with this client's credential; `None` when the cluster has none.
    ///
    /// The annotations decide where the credential is sent and, as loftctl honours
    /// `…-insecure: "true"`, whether the endpoint's certificate is checked: read the Cluster
    /// from a gateway you trust. An endpoint that is not `https` is refused.
    pub fn direct_endpoint_of(
        &self,
        cluster: &kubegate_api::Cluster,
    ) -> Result<Option<GatewayClient>, Error> {
        let Some(annotations) = cluster.metadata.annotations.as_ref() else {
            return Ok(None);
        };
        let Some(host) = annotations
            .get(DIRECT_ENDPOINT_ANNOTATION)
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        else {
            return Ok(None);
        };
        let url = if host.contains("://") {
            host.to_owned()
        } else {
            format!("https://{host}")
        };
        // Whoever can annotate the Cluster chooses where this client's credential goes; over
        // plain HTTP anyone on the way would read it too.
        if !url.starts_with("https://") {
            return Err(Error::InvalidUrl {
                url: kubegate_routing::redact_url(&url),
                reason: format!("{DIRECT_ENDPOINT_ANNOTATION} must be an https endpoint"),
            });
        }
        let mut direct = GatewayClient::direct(&url, self.credential.clone())?;
        if let Some(ca) = annotations
            .get(DIRECT_ENDPOINT_CA_ANNOTATION)
            .filter(|c| !c.is_empty())
        {
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca.trim())
                .map_err(|e| Error::InvalidCa(format!("{DIRECT_ENDPOINT_CA_ANNOTATION}: {e}")))?;
            direct = direct.with_ca_pem(&pem)?;
        }
        let insecure = annotations
            .get(DIRECT_ENDPOINT_INSECURE_ANNOTATION)
            .is_some_and(|v| v == "true");
        Ok(Some(direct.danger_accept_invalid_certs(insecure)))
    }
}

fn normalize_url(url: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: kubegate_routing::redact_url(url),
        reason: reason.to_owned(),
    };
    // Any `@` after the scheme: a password may hold `/`, `?` or `#`, which would otherwise
    // hide the userinfo from a check that stops at the authority's usual end.
    if url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .contains('@')
    {
        return Err(invalid("user info is not allowed"));
    }
    let parsed: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match parsed.scheme_str() {
        Some("https") | Some("http") => {}
        _ => return Err(invalid("the scheme must be https (or http)")),
    }
    if parsed.authority().is_none() {
        return Err(invalid("no host"));
    }
    if parsed.query().is_some() {
        return Err(invalid("a query is not allowed"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_per_endpoint_kind() {
        let central =
            GatewayClient::new("https://gw.example:8443/", Credential::bearer("k")).unwrap();
        assert_eq!(
            central.server_url(&Target::cluster("a")).unwrap(),
            "https://gw.example:8443/kubernetes/cluster/a"
        );
        let mounted = GatewayClient::new("https://gw.example/kg", Credential::bearer("k")).unwrap();
        assert_eq!(
            mounted.server_url(&Target::Management).unwrap(),
            "https://gw.example/kg/kubernetes/management"
        );
        let direct =
            GatewayClient::direct("https://agent.example", Credential::bearer("k")).unwrap();
        assert_eq!(
            direct.server_url(&Target::cluster("a")).unwrap(),
            "https://agent.example/kubernetes/cluster"
        );
        assert!(matches!(
            direct.server_url(&Target::Management),
            Err(Error::NoManagementOnDirectEndpoint)
        ));
        assert!(central.server_url(&Target::cluster("../b")).is_err());
        for bad in ["gw.example", "ftp://gw", "https://gw?x=1", "/relative"] {
            assert!(
                GatewayClient::new(bad, Credential::bearer("k")).is_err(),
                "{bad}"
            );
        }
    }

    /// A URL's userinfo or query may hold a credential: refused, and never shown.
    #[test]
    fn urls_with_credentials_are_refused_without_showing_them() {
        for (bad, shown) in [
            (
                "https://admin:pw1@gw:8443/base",
                "https://<redacted>@gw:8443/base",
            ),
            ("https://gw/?token=pw1", "https://gw/?<redacted>"),
            ("https://admin:ab/pw1@gw", "https://<redacted>@gw"),
            ("https://u:pw1?x@gw", "https://<redacted>"),
            ("https://gw/?token=a@pw1", "https://<redacted>"),
        ] {
            let err = GatewayClient::new(bad, Credential::bearer("k")).unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("pw1"), "{text}");
                assert!(text.contains(shown), "{text}");
            }
        }
    }

    #[test]
    fn direct_endpoint_from_cluster_annotations() {
        let gw = GatewayClient::new("https://gw", Credential::bearer("k")).unwrap();
        let mut cluster = kubegate_api::Cluster::new("a", Default::default());
        assert!(gw.direct_endpoint_of(&cluster).unwrap().is_none());
        cluster.metadata.annotations = Some(
            [
                (
                    DIRECT_ENDPOINT_ANNOTATION.to_owned(),
                    "agent.example:8443".to_owned(),
                ),
                (
                    DIRECT_ENDPOINT_INSECURE_ANNOTATION.to_owned(),
                    "true".to_owned(),
                ),
            ]
            .into(),
        );
        let direct = gw.direct_endpoint_of(&cluster).unwrap().unwrap();
        assert_eq!(direct.endpoint(), Endpoint::Direct);
        // Never over plain HTTP.
        let mut plain = cluster;
        if let Some(a) = plain.metadata.annotations.as_mut() {
            a.insert(
                DIRECT_ENDPOINT_ANNOTATION.to_owned(),
                "http://agent.example:8443".to_owned(),
            );
        }
        let err = gw.direct_endpoint_of(&plain).unwrap_err().to_string();
        assert!(err.contains("must be an https endpoint"), "{err}");
        assert!(direct.accepts_invalid_certs());
        assert_eq!(
            direct.server_url(&Target::cluster("a")).unwrap(),
            "https://agent.example:8443/kubernetes/cluster"
        );
    }

    #[test]
    fn debug_never_shows_the_credential() {
        let client = GatewayClient::new("https://gw", Credential::bearer("kgak_secret")).unwrap();
        let text = format!("{client:?}");
        assert!(!text.contains("kgak_secret"), "{text}");
    }

    #[test]
    fn garbage_ca_is_refused() {
        let client = GatewayClient::new("https://gw", Credential::bearer("k")).unwrap();
        assert!(client.with_ca_pem(b"not a pem").is_err());
    }
}
