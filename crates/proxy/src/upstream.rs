//! An upstream Kubernetes API server: where it is, how to trust it, how to authenticate to it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// Whose identity the upstream sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// The gateway authenticates with its own credential and impersonates the authenticated
    /// user (`Impersonate-User/Group/Uid/Extra-*`). The default.
    #[default]
    Impersonate,
    /// The client's own bearer token is forwarded; no impersonation headers are added and the
    /// upstream credential is not sent.
    Passthrough,
}

/// How the gateway authenticates to the upstream. Secrets never appear in `Debug` output.
#[derive(Clone)]
pub enum Credential {
    /// No credential (e.g. passthrough mode with a CA-only upstream).
    None,
    /// A static bearer token.
    BearerToken(String),
    /// A bearer token read from a file and re-read when the file changes (projected service
    /// account tokens rotate).
    TokenFile(PathBuf),
    /// A TLS client certificate chain and private key, both PEM.
    ClientCert {
        /// PEM certificate chain.
        cert_pem: Vec<u8>,
        /// PEM private key.
        key_pem: Vec<u8>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::BearerToken(_) => f.write_str("BearerToken(<redacted>)"),
            Credential::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Credential::ClientCert { .. } => f.write_str("ClientCert { key: <redacted> }"),
        }
    }
}

/// Builder for [`Upstream`]. Its `Debug` output shows the URL as [`Error::InvalidUrl`] does,
/// without userinfo or query, and no credential.
#[derive(Clone)]
pub struct UpstreamBuilder {
    name: String,
    url: String,
    ca_pem: Option<Vec<u8>>,
    credential: Credential,
    identity_mode: IdentityMode,
    insecure_skip_tls_verify: bool,
    allow_plaintext: bool,
    allow_no_credential: bool,
    connect_timeout: Duration,
    response_header_timeout: Duration,
    token_file_recheck: Duration,
    tls_server_name: Option<String>,
    description: Option<String>,
    http2: bool,
    http2_max_streams: u32,
    http1_for_short_requests: u32,
    reject_forwarding_redirects: bool,
    rewrite_redirects: bool,
}

impl fmt::Debug for UpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("credential", &self.credential)
            .field("identity_mode", &self.identity_mode)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("allow_no_credential", &self.allow_no_credential)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_header_timeout", &self.response_header_timeout)
            .field("token_file_recheck", &self.token_file_recheck)
            .field("tls_server_name", &self.tls_server_name)
            .field("description", &self.description)
            .field("http2", &self.http2)
            .field("http2_max_streams", &self.http2_max_streams)
            .field("http1_for_short_requests", &self.http1_for_short_requests)
            .field(
                "reject_forwarding_redirects",
                &self.reject_forwarding_redirects,
            )
            .field("rewrite_redirects", &self.rewrite_redirects)
            .finish()
    }
}

/// `url` with its userinfo, query and fragment replaced by `<redacted>`: kubegate-routing's
/// [`redact_url`](kubegate_routing::redact_url), here where upstream URLs are built.
pub use kubegate_routing::redact_url;

/// The default of [`UpstreamBuilder::http2_max_streams_per_connection`].
pub const DEFAULT_HTTP2_MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The default of [`UpstreamBuilder::http1_connections_for_short_requests`].
pub const DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS: u32 = 64;

/// Silence on an upstream connection after which it is probed: an h2 PING, or a TCP keepalive
/// probe for HTTP/1.1 and upgraded connections (client-go: `ReadIdleTimeout` 30 s, dialer
/// `KeepAlive` 30 s).
pub(crate) const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long an h2 PING may go unanswered before the connection is taken for dead (client-go:
/// `PingTimeout` 15 s).
pub(crate) const KEEPALIVE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl UpstreamBuilder {
    /// Whether a redirect from the upstream (a 3xx with a `Location`) is replaced by a 502
    /// (default on, as kube-apiserver's aggregator does since CVE-2022-3172): a tenant-run API
    /// server, such as a virtual cluster, must not send the gateway's clients elsewhere. Turn
    /// it off for upstreams that redirect by design (a web UI such as Grafana).
    #[must_use]
    pub fn reject_forwarding_redirects(mut self, reject: bool) -> Self {
        self.reject_forwarding_redirects = reject;
        self
    }

    /// Whether, while redirects are rejected, one that points at the upstream itself is
    /// passed on instead, its `Location` rewritten onto the path the client used (default
    /// off). kube-apiserver's own `proxy` subresources send such redirects (a Service's
    /// `/` → `/login` comes back as `/api/v1/namespaces/…/services/…/proxy/login`), and
    /// kube's proxy transport rewrites them the same way (kubegate-routing's
    /// [`rewrite_location`](kubegate_routing::rewrite_location) says how). A redirect anywhere
    /// else still gets the 502. The client's prefix is its request path less the forwarded
    /// path ([`UpstreamPath`](crate::UpstreamPath), or the request path itself without one).
    #[must_use]
    pub fn rewrite_redirects(mut self, rewrite: bool) -> Self {
        self.rewrite_redirects = rewrite;
        self
    }

    /// Whether HTTP/2 is offered in ALPN for pooled requests (default on; upgrades always use
    /// HTTP/1.1). Off makes every concurrent request use its own pooled HTTP/1.1 connection.
    #[must_use]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// How many requests at once one h2 connection to the upstream carries (default
    /// [`DEFAULT_HTTP2_MAX_STREAMS_PER_CONNECTION`], at least 1); past that, another connection
    /// is dialled. An h2 server caps the streams of a connection (kube-apiserver's
    /// `--http2-max-streams-per-connection`, 1,000 by default; Go's servers 250), and a client
    /// that asks for more waits, in hyper with every request behind it, until a stream ends:
    /// with a thousand watches open through one connection, nothing else would get through.
    /// The default stays below the usual servers' caps, as Go's client assumes until the
    /// server says; raise it only to what the upstream allows.
    #[must_use]
    pub fn http2_max_streams_per_connection(mut self, streams: u32) -> Self {
        self.http2_max_streams = streams.max(1);
        self
    }

    /// With HTTP/2 offered, how many HTTP/1.1 connections the requests that are not
    /// long-running may use (default [`DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS`]); past
    /// that they share the h2 connections, as every request does at 0.
    ///
    /// Long-running requests ([`LongRunning`](crate::LongRunning): watches, logs followed,
    /// proxied streams) always go over h2 when the upstream speaks it: thousands of watches
    /// share a few connections. A short request costs less over a pooled HTTP/1.1 connection:
    /// no header compression state to keep and no task per stream in the client, so it is
    /// answered sooner (in this crate's load bench, 65 µs added at one connection where h2
    /// adds 110, and more requests per second at 64 connections). An upstream that refuses
    /// HTTP/1.1 in ALPN is noticed at the first such dial, and its short requests use h2
    /// from then on. Without HTTP/2 ([`http2`](Self::http2) off) this setting does nothing:
    /// every request uses HTTP/1.1, with no bound on connections.
    #[must_use]
    pub fn http1_connections_for_short_requests(mut self, connections: u32) -> Self {
        self.http1_for_short_requests = connections;
        self
    }

    /// How error messages name this upstream (default `cluster "<name>"`), e.g.
    /// `virtual cluster "team-a/dev"`.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// PEM bundle of CA certificates trusted for this upstream (required for `https` unless
    /// verification is explicitly skipped).
    #[must_use]
    pub fn ca_bundle_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The gateway's credential.
    #[must_use]
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// Impersonate (default) or passthrough.
    #[must_use]
    pub fn identity_mode(mut self, mode: IdentityMode) -> Self {
        self.identity_mode = mode;
        self
    }

    /// Turns off certificate verification. Only for clusters whose config says so by name.
    /// Not with a CA bundle ([`Error::InsecureWithCaBundle`]).
    #[must_use]
    pub fn insecure_skip_tls_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_tls_verify = skip;
        self
    }

    /// Lets an upstream in `Impersonate` mode build without a credential of its own (default:
    /// refused, [`Error::NoCredentialToImpersonateWith`], as a Kubernetes API server refuses
    /// an anonymous caller that asks to impersonate). For an upstream that needs none from
    /// the gateway: one that serves anonymous callers (a Grafana with anonymous access), or
    /// one behind a proxy that adds its own credential (the reference gateway allows it and
    /// warns).
    #[must_use]
    pub fn allow_no_credential(mut self, allow: bool) -> Self {
        self.allow_no_credential = allow;
        self
    }

    /// Lets an `http://` URL build (default: refused, [`Error::Plaintext`]). Over plain HTTP the
    /// upstream credential, the `Impersonate-*` headers naming each caller, and every body
    /// cross the network unprotected; say so only for an upstream reached over a link that is
    /// private by other means (a loopback address, a sidecar). A client certificate is never
    /// presented there, so one with `http://` is refused whatever this says.
    #[must_use]
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// TCP + TLS connect timeout (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a non-long-running request may wait for the upstream's response head
    /// (default 60 s, kube-apiserver's `--request-timeout`). Long-running requests have none,
    /// except that an upgrade (exec, attach, port-forward) waits this long for its `101` or
    /// error head; the session after it has no limit.
    #[must_use]
    pub fn response_header_timeout(mut self, timeout: Duration) -> Self {
        self.response_header_timeout = timeout;
        self
    }

    /// How often a token file is checked for changes (default 1 s).
    #[must_use]
    pub fn token_file_recheck(mut self, every: Duration) -> Self {
        self.token_file_recheck = every;
        self
    }

    /// Verify the upstream certificate against this name instead of the URL host
    /// (kubeconfig `tls-server-name`).
    #[must_use]
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Validates everything and builds the TLS configuration.
    pub fn build(self) -> Result<Upstream, Error> {
        let bad = |reason| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason,
        };
        let uri: Uri = self.url.parse().map_err(|_| bad("not a URI"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("missing scheme"))?;
        if scheme != Scheme::HTTPS && scheme != Scheme::HTTP {
            return Err(bad("scheme must be https or http"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        if self.identity_mode == IdentityMode::Passthrough
            && matches!(self.credential, Credential::ClientCert { .. })
        {
            return Err(Error::PassthroughWithClientCert(self.name));
        }
        if self.identity_mode == IdentityMode::Impersonate
            && matches!(self.credential, Credential::None)
            && !self.allow_no_credential
        {
            return Err(Error::NoCredentialToImpersonateWith(self.name));
        }
        if scheme == Scheme::HTTP {
            if !self.allow_plaintext {
                return Err(Error::Plaintext(self.name));
            }
            if matches!(self.credential, Credential::ClientCert { .. }) {
                return Err(Error::ClientCertOverPlaintext(self.name));
            }
        }
        if self.insecure_skip_tls_verify && self.ca_pem.is_some() {
            return Err(Error::InsecureWithCaBundle(self.name));
        }
        let server_name = self.tls_server_name.clone().unwrap_or_else(|| {
            authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let server_name = ServerName::try_from(server_name)
            .map_err(|_| bad("host is not a valid TLS server name"))?;
        let https = scheme == Scheme::HTTPS;
        let tls = Arc::new(self.tls_config(https)?);
        let mut upgrade = ClientConfig::clone(&tls);
        // Upgrades are HTTP/1.1 only (client-go forces ALPN http/1.1 for upgrade dials).
        upgrade.alpn_protocols = vec![b"http/1.1".to_vec()];
        let upgrade_tls = Arc::new(upgrade);
        // The `Host` of every request on an HTTP/1.1 connection, as hyper-util formats it
        // (`host:port` unless the port is the scheme's default), made once. (h2 sends
        // `:authority` instead.)
        let http1_host = {
            let default_port = if https { 443 } else { 80 };
            let value = match authority.port() {
                Some(port) if port.as_u16() != default_port => {
                    HeaderValue::try_from(format!("{}:{port}", authority.host()))
                }
                _ => HeaderValue::from_str(authority.host()),
            };
            value.map_err(|_| bad("host is not a valid header value"))?
        };
        // What the connection pool dials, made once.
        let dial = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| bad("scheme and host do not form a URI"))?;
        let credential = match &self.credential {
            Credential::BearerToken(t) => CredentialState::Static(
                bearer_value(t).ok_or_else(|| Error::InvalidToken(self.name.clone()))?,
            ),
            Credential::TokenFile(p) => CredentialState::File(TokenFile {
                path: p.clone(),
                recheck: self.token_file_recheck,
                state: Mutex::new(TokenFileState::default()),
            }),
            Credential::None | Credential::ClientCert { .. } => CredentialState::None,
        };
        Ok(Upstream {
            inner: Arc::new(Inner {
                description: self
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("cluster {:?}", self.name)),
                name: self.name,
                scheme,
                authority,
                base_path,
                server_name: server_name.to_owned(),
                tls,
                upgrade_tls,
                credential,
                identity_mode: self.identity_mode,
                http2: self.http2,
                http2_max_streams: self.http2_max_streams,
                http1_for_short_requests: self.http1_for_short_requests,
                http1_host,
                dial,
                reject_forwarding_redirects: self.reject_forwarding_redirects,
                rewrite_redirects: self.rewrite_redirects,
                insecure: self.insecure_skip_tls_verify,
                connect_timeout: self.connect_timeout,
                response_header_timeout: self.response_header_timeout,
            }),
        })
    }

    /// For `http://` upstreams a config is still built (the pooled connector type is shared) but
    /// never used, so it trusts nothing.
    fn tls_config(&self, https: bool) -> Result<ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls_err = |source| Error::Tls {
            upstream: self.name.clone(),
            source,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = if !https {
            builder.with_root_certificates(RootCertStore::empty())
        } else if self.insecure_skip_tls_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            let pem = self
                .ca_pem
                .as_deref()
                .ok_or_else(|| Error::MissingCaBundle(self.name.clone()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::InvalidCaBundle {
                    upstream: self.name.clone(),
                    reason: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| Error::InvalidCaBundle {
                    upstream: self.name.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(Error::InvalidCaBundle {
                    upstream: self.name.clone(),
                    reason: "no certificate found".to_owned(),
                });
            }
            builder.with_root_certificates(roots)
        };
        match &self.credential {
            Credential::ClientCert { cert_pem, key_pem } => {
                let bad = |reason: String| Error::InvalidClientCert {
                    upstream: self.name.clone(),
                    reason,
                };
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("certificate: {e}")))?;
                if chain.is_empty() {
                    return Err(bad("no certificate found".to_owned()));
                }
                // The key parser's error could echo input; report only that it failed.
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|_| bad("private key is not valid PEM".to_owned()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(e.to_string()))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

fn bearer_value(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    // Keeps the token out of HPACK tables and out of `Debug` output of header maps.
    v.set_sensitive(true);
    Some(v)
}

/// A configured upstream. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    description: String,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    upgrade_tls: Arc<ClientConfig>,
    credential: CredentialState,
    identity_mode: IdentityMode,
    http2: bool,
    http2_max_streams: u32,
    http1_for_short_requests: u32,
    /// `Host` for requests on HTTP/1.1 connections.
    http1_host: HeaderValue,
    /// `scheme://authority/`: what the connection pool dials.
    dial: Uri,
    reject_forwarding_redirects: bool,
    rewrite_redirects: bool,
    insecure: bool,
    connect_timeout: Duration,
    response_header_timeout: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Upstream")
            .field("name", &i.name)
            .field(
                "url",
                &format!("{}://{}{}", i.scheme, i.authority, i.base_path),
            )
            .field("credential", &i.credential)
            .field("identity_mode", &i.identity_mode)
            .field("insecure_skip_tls_verify", &i.insecure)
            .field("connect_timeout", &i.connect_timeout)
            .field("response_header_timeout", &i.response_header_timeout)
            .finish_non_exhaustive()
    }
}

enum CredentialState {
    None,
    Static(HeaderValue),
    File(TokenFile),
}

impl fmt::Debug for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialState::None => f.write_str("None"),
            CredentialState::Static(_) => f.write_str("BearerToken(<redacted>)"),
            CredentialState::File(t) => f.debug_tuple("TokenFile").field(&t.path).finish(),
        }
    }
}

/// How long the last good token of a token file stands in while the file cannot be read or
/// holds no token: long enough for any rotation (kubelet's swaps a symlink; tools that rewrite
/// in place leave it empty for a moment), short enough that a file gone for good shows as an
/// error naming it, not as the upstream's 401s once the old token expires.
const TOKEN_FILE_GRACE: Duration = Duration::from_secs(300);

struct TokenFile {
    path: PathBuf,
    recheck: Duration,
    state: Mutex<TokenFileState>,
}

struct TokenFileState {
    /// [`TOKEN_FILE_GRACE`], but for tests.
    grace: Duration,
    value: Option<HeaderValue>,
    modified: Option<SystemTime>,
    len: u64,
    checked: Option<Instant>,
    /// Since when the file has not given a token (logged once when it starts and ends).
    failing_since: Option<Instant>,
    /// Why, the last time it was read.
    last_error: Option<CredentialError>,
}

impl Default for TokenFileState {
    fn default() -> Self {
        TokenFileState {
            grace: TOKEN_FILE_GRACE,
            value: None,
            modified: None,
            len: 0,
            checked: None,
            failing_since: None,
            last_error: None,
        }
    }
}

/// Why the upstream credential could not be produced (no secret inside).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("reading the token file failed: {0}")]
    Io(std::io::ErrorKind),
    #[error("the token file does not hold a valid bearer token")]
    Invalid,
}

impl TokenFile {
    fn current(&self) -> Result<HeaderValue, CredentialError> {
        let now = Instant::now();
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked a moment ago: the answer then stands (the token, or past the grace the
        // file's error), so a file in trouble is not read again on every request.
        if let Some(at) = st.checked
            && now.duration_since(at) < self.recheck
        {
            let standing_in_too_long = st
                .failing_since
                .is_some_and(|since| now.duration_since(since) >= st.grace);
            match (&st.value, &st.last_error) {
                (Some(v), _) if !standing_in_too_long => return Ok(v.clone()),
                (_, Some(e)) if st.failing_since.is_some() => return Err(e.clone()),
                _ => {}
            }
        }
        st.checked = Some(now);
        match self.read(&mut st) {
            Ok(v) => {
                if st.failing_since.take().is_some() {
                    tracing::info!(path = %self.path.display(), "the upstream token file gives a token again");
                }
                Ok(v)
            }
            Err(e) => {
                st.last_error = Some(e.clone());
                let since = *st.failing_since.get_or_insert_with(|| {
                    tracing::warn!(path = %self.path.display(), error = %e, "the upstream token file gives no token; the last good one is used for up to {} s", TOKEN_FILE_GRACE.as_secs());
                    now
                });
                match &st.value {
                    // A rotation in progress: the last good token stands in, for a while.
                    Some(v) if now.duration_since(since) < st.grace => Ok(v.clone()),
                    _ => Err(e),
                }
            }
        }
    }

    /// The file's token: the one read before if the file has not changed (a metadata call is
    /// cheap; reading and re-validating happen only on change), else read and checked now.
    fn read(&self, st: &mut TokenFileState) -> Result<HeaderValue, CredentialError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| CredentialError::Io(e.kind()))?;
        let modified = meta.modified().ok();
        if let Some(v) = &st.value
            && st.failing_since.is_none()
            && modified == st.modified
            && meta.len() == st.len
        {
            return Ok(v.clone());
        }
        let bytes = std::fs::read(&self.path).map_err(|e| CredentialError::Io(e.kind()))?;
        let token = std::str::from_utf8(&bytes)
            .map_err(|_| CredentialError::Invalid)?
            .trim();
        if token.is_empty() {
            return Err(CredentialError::Invalid);
        }
        let v = bearer_value(token).ok_or(CredentialError::Invalid)?;
        st.value = Some(v.clone());
        st.modified = modified;
        st.len = meta.len();
        Ok(v)
    }
}

impl Upstream {
    /// Starts a builder. `name` is used in error messages and metrics (e.g. the cluster name);
    /// `url` is `https://host[:port][/base/path]`.
    pub fn builder(name: impl Into<String>, url: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            url: url.into(),
            ca_pem: None,
            credential: Credential::None,
            identity_mode: IdentityMode::Impersonate,
            insecure_skip_tls_verify: false,
            allow_plaintext: false,
            allow_no_credential: false,
            connect_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(60),
            token_file_recheck: Duration::from_secs(1),
            tls_server_name: None,
            description: None,
            http2: true,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS_PER_CONNECTION,
            http1_for_short_requests: DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS,
            reject_forwarding_redirects: true,
            rewrite_redirects: false,
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Impersonate or passthrough.
    pub fn identity_mode(&self) -> IdentityMode {
        self.inner.identity_mode
    }

    /// Whether pooled requests may use HTTP/2.
    pub fn http2(&self) -> bool {
        self.inner.http2
    }

    /// How many requests at once one h2 connection carries.
    pub fn http2_max_streams_per_connection(&self) -> u32 {
        self.inner.http2_max_streams
    }

    /// How many HTTP/1.1 connections short requests may use while HTTP/2 is offered.
    pub fn http1_connections_for_short_requests(&self) -> u32 {
        self.inner.http1_for_short_requests
    }

    /// Whether upstream redirects are replaced by a 502.
    pub fn rejects_forwarding_redirects(&self) -> bool {
        self.inner.reject_forwarding_redirects
    }

    /// Whether a redirect to the upstream itself is rewritten onto the client's path instead
    /// (see [`UpstreamBuilder::rewrite_redirects`]).
    pub fn rewrites_redirects(&self) -> bool {
        self.inner.rewrite_redirects
    }

    /// The upstream as a redirect's `Location` is compared with it.
    pub(crate) fn origin(&self) -> kubegate_routing::UpstreamOrigin<'_> {
        kubegate_routing::UpstreamOrigin {
            scheme: self.inner.scheme.as_str(),
            authority: self.inner.authority.as_str(),
            base_path: &self.inner.base_path,
        }
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// Response-header timeout for non-long-running requests.
    pub fn response_header_timeout(&self) -> Duration {
        self.inner.response_header_timeout
    }

    /// The `Host` header of requests on HTTP/1.1 connections.
    pub(crate) fn http1_host(&self) -> &HeaderValue {
        &self.inner.http1_host
    }

    /// `scheme://authority/`: what the connection pool dials.
    pub(crate) fn dial_uri(&self) -> &Uri {
        &self.inner.dial
    }

    pub(crate) fn scheme(&self) -> &Scheme {
        &self.inner.scheme
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    pub(crate) fn server_name(&self) -> &ServerName<'static> {
        &self.inner.server_name
    }

    pub(crate) fn tls(&self) -> &Arc<ClientConfig> {
        &self.inner.tls
    }

    pub(crate) fn upgrade_tls(&self) -> &Arc<ClientConfig> {
        &self.inner.upgrade_tls
    }

    pub(crate) fn is_https(&self) -> bool {
        self.inner.scheme == Scheme::HTTPS
    }

    /// How error messages name this upstream, e.g. `cluster "prod"`.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// The origin-form request target for a request path: base path + `pq`.
    pub(crate) fn origin_form(&self, pq: &PathAndQuery) -> Result<Uri, http::Error> {
        // Without a base path the request's own path is the upstream's: share it rather than
        // copy it into a string that `http` would parse again (≈ 600 instructions a request).
        let path_and_query = if self.inner.base_path.is_empty() {
            pq.clone()
        } else {
            PathAndQuery::try_from(self.path_for(pq))?
        };
        Ok(Uri::from(path_and_query))
    }

    /// Base path + `pq`, as an origin-form request target.
    pub(crate) fn path_for(&self, pq: &PathAndQuery) -> String {
        let mut s = String::with_capacity(self.inner.base_path.len() + pq.as_str().len());
        s.push_str(&self.inner.base_path);
        s.push_str(pq.as_str());
        s
    }

    /// The `Authorization` value of the gateway's own credential, if it uses a bearer token.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, CredentialError> {
        match &self.inner.credential {
            CredentialState::None => Ok(None),
            CredentialState::Static(v) => Ok(Some(v.clone())),
            CredentialState::File(f) => f.current().map(Some),
        }
    }

    /// The token file path, if any (for diagnostics; a path is not a secret).
    pub fn token_file(&self) -> Option<&Path> {
        match &self.inner.credential {
            CredentialState::File(f) => Some(&f.path),
            _ => None,
        }
    }
}

/// Accepts any certificate but still checks handshake signatures, so the connection is at least
/// bound to the key the peer presented. Used only with `insecure_skip_tls_verify`.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder with a credential, as impersonate mode (the default) requires.
    fn builder(name: &str, url: impl Into<String>) -> UpstreamBuilder {
        Upstream::builder(name, url).credential(Credential::BearerToken("t".into()))
    }

    #[test]
    fn impersonating_needs_a_credential_of_its_own() {
        let none = || Upstream::builder("c", "https://k8s:6443").insecure_skip_tls_verify(true);
        assert!(matches!(
            none().build(),
            Err(Error::NoCredentialToImpersonateWith(_))
        ));
        // Passthrough forwards the caller's own.
        assert!(
            none()
                .identity_mode(IdentityMode::Passthrough)
                .build()
                .is_ok()
        );
        // Said outright, for an upstream that is no API server.
        assert!(none().allow_no_credential(true).build().is_ok());
    }

    #[test]
    fn debug_redacts_secrets() {
        let up = builder("prod", "http://127.0.0.1:1")
            .allow_plaintext(true)
            .credential(Credential::BearerToken("s3cr3t-token".into()))
            .build()
            .unwrap();
        let dbg = format!("{up:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("redacted"));
        let c = Credential::ClientCert {
            cert_pem: b"CERT".to_vec(),
            key_pem: b"KEYMATERIAL".to_vec(),
        };
        assert!(!format!("{c:?}").contains("KEYMATERIAL"));
        let mut h = http::HeaderMap::new();
        h.insert("authorization", up.authorization().unwrap().unwrap());
        assert!(!format!("{h:?}").contains("s3cr3t"));
    }

    #[test]
    fn url_validation() {
        for (url, ok) in [
            ("https://10.0.0.1:6443", true),
            ("https://k8s.example.com/base/", true),
            ("http://127.0.0.1:8080", true),
            ("ftp://x", false),
            ("https://user:pw@x", false),
            ("https://x/?a=b", false),
            ("/relative", false),
        ] {
            let r = builder("c", url)
                .allow_plaintext(true)
                .insecure_skip_tls_verify(true)
                .build();
            assert_eq!(r.is_ok(), ok, "{url}: {r:?}");
        }
    }

    /// Plain HTTP only when asked for, never with a client certificate; a CA bundle and
    /// verification off together are a mistake either way.
    #[test]
    fn plaintext_and_insecure_settings_are_explicit_and_consistent() {
        let plain = || builder("c", "http://10.0.0.1:8080");
        assert!(matches!(plain().build(), Err(Error::Plaintext(_))));
        assert!(plain().allow_plaintext(true).build().is_ok());
        let with_cert = plain()
            .allow_plaintext(true)
            .credential(Credential::ClientCert {
                cert_pem: b"CERT".to_vec(),
                key_pem: b"KEY".to_vec(),
            });
        assert!(matches!(
            with_cert.build(),
            Err(Error::ClientCertOverPlaintext(_))
        ));
        let both = builder("c", "https://10.0.0.1:6443")
            .insecure_skip_tls_verify(true)
            .ca_bundle_pem(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(matches!(both.build(), Err(Error::InsecureWithCaBundle(_))));
    }

    #[test]
    fn url_errors_and_builder_debug_never_show_userinfo_or_query() {
        for (url, shown) in [
            (
                "https://admin:s3cret@k8s:6443",
                "https://<redacted>@k8s:6443",
            ),
            ("https://s3cret@k8s", "https://<redacted>@k8s"),
            (
                "https://k8s/base?token=s3cret",
                "https://k8s/base?<redacted>",
            ),
            // Not URIs at all (raw characters in the password), still redacted.
            ("https://admin:s3 cret@k8s", "https://<redacted>@k8s"),
            (
                "https://admin:s3/cr?et@k8s",
                "https://<redacted>@?<redacted>",
            ),
            (
                "https://k8s/?mail=a@b&token=s3cret",
                "https://<redacted>@?<redacted>",
            ),
        ] {
            let builder = builder("c", url)
                .allow_plaintext(true)
                .insecure_skip_tls_verify(true);
            let debug = format!("{builder:?}");
            assert!(!debug.contains("s3"), "{debug}");
            assert!(debug.contains(&format!("{shown:?}")), "{debug}");
            let err = builder.build().unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("s3"), "{text}");
                assert!(text.contains(shown), "{text}");
            }
        }
        // http's parser drops a fragment: the upstream builds, and keeps none.
        let builder = builder("c", "https://k8s/#s3cret").insecure_skip_tls_verify(true);
        assert!(!format!("{builder:?}").contains("s3"));
        assert!(!format!("{:?}", builder.build().unwrap()).contains("s3"));
        assert_eq!(redact_url("https://k8s/#s3cret"), "https://k8s/#<redacted>");
        assert_eq!(redact_url("https://k8s:6443/base"), "https://k8s:6443/base");
        assert_eq!(redact_url("/relative"), "/relative");
    }

    #[test]
    fn https_without_ca_is_refused_unless_insecure() {
        assert!(matches!(
            builder("c", "https://x").build(),
            Err(Error::MissingCaBundle(_))
        ));
        assert!(
            builder("c", "https://x")
                .insecure_skip_tls_verify(true)
                .build()
                .is_ok()
        );
        assert!(matches!(
            builder("c", "https://x").ca_bundle_pem("not pem").build(),
            Err(Error::InvalidCaBundle { .. })
        ));
    }

    #[test]
    fn passthrough_with_client_cert_is_refused() {
        let r = builder("c", "https://x")
            .insecure_skip_tls_verify(true)
            .identity_mode(IdentityMode::Passthrough)
            .credential(Credential::ClientCert {
                cert_pem: vec![],
                key_pem: vec![],
            })
            .build();
        assert!(matches!(r, Err(Error::PassthroughWithClientCert(_))));
    }

    #[test]
    fn bad_key_error_does_not_echo_key() {
        let r = builder("c", "https://x")
            .insecure_skip_tls_verify(true)
            .credential(Credential::ClientCert {
                cert_pem: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                    .to_vec(),
                key_pem: b"SECRETKEYBYTES".to_vec(),
            })
            .build();
        let e = r.unwrap_err().to_string();
        assert!(!e.contains("SECRETKEYBYTES"), "{e}");
    }

    #[test]
    fn base_path_is_prepended() {
        let up = builder("c", "http://h:1/prefix/")
            .allow_plaintext(true)
            .build()
            .unwrap();
        let pq = PathAndQuery::from_static("/api/v1/pods?limit=1");
        assert_eq!(up.origin_form(&pq).unwrap(), "/prefix/api/v1/pods?limit=1");
        // Without a base path (also when the URL ends in `/`), the path is the request's.
        for url in ["http://h:6443", "http://h:6443/"] {
            let up = builder("c", url).allow_plaintext(true).build().unwrap();
            let uri = up.origin_form(&pq).unwrap();
            assert_eq!(uri, "/api/v1/pods?limit=1");
            assert_eq!(uri.path_and_query(), Some(&pq));
        }
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("kubegate-proxy-tok-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let up = builder("c", "http://h:1")
            .allow_plaintext(true)
            .credential(Credential::TokenFile(path.clone()))
            .token_file_recheck(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer first");
        // A different length guarantees detection even on filesystems with coarse mtimes.
        std::fs::write(&path, "second-token").unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer second-token");
        // While the file is briefly missing or empty (rotation), the last good token is kept.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer second-token");
        std::fs::write(&path, "").unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer second-token");
        std::fs::write(&path, "third").unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer third");
        // ...but not for ever: past the grace the error names the file's trouble, where the
        // upstream would have answered 401 once the old token expired.
        std::fs::remove_file(&path).unwrap();
        if let CredentialState::File(file) = &up.inner.credential {
            file.state.lock().unwrap().grace = Duration::ZERO;
        }
        assert!(matches!(
            up.authorization(),
            Err(CredentialError::Io(std::io::ErrorKind::NotFound))
        ));
        // With the usual once-a-second check too: every request past the grace fails, not
        // only the one that checks.
        let cached = builder("c", "http://h:1")
            .allow_plaintext(true)
            .credential(Credential::TokenFile(path.clone()))
            .token_file_recheck(Duration::from_secs(3600))
            .build()
            .unwrap();
        assert!(cached.authorization().is_err(), "no file, no token yet");
        std::fs::write(&path, "cached").unwrap();
        if let CredentialState::File(file) = &cached.inner.credential {
            file.state.lock().unwrap().checked = None;
        }
        assert_eq!(cached.authorization().unwrap().unwrap(), "Bearer cached");
        std::fs::remove_file(&path).unwrap();
        if let CredentialState::File(file) = &cached.inner.credential {
            let mut state = file.state.lock().unwrap();
            state.grace = Duration::ZERO;
            state.checked = None;
        }
        for _ in 0..3 {
            assert!(
                cached.authorization().is_err(),
                "past the grace, every request"
            );
        }
        std::fs::write(&path, "fourth").unwrap();
        assert_eq!(up.authorization().unwrap().unwrap(), "Bearer fourth");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = builder("c", "http://h:1")
            .allow_plaintext(true)
            .credential(Credential::TokenFile(dir.join("nope")))
            .build()
            .unwrap();
        assert!(missing.authorization().is_err());
    }

    #[test]
    fn http1_host_is_made_as_hyper_util_makes_it() {
        for (url, http2, host) in [
            ("https://example.com", false, "example.com"),
            ("https://example.com:443", false, "example.com"),
            ("https://example.com:6443/base", false, "example.com:6443"),
            ("http://example.com:80", false, "example.com"),
            ("http://example.com:443", false, "example.com:443"),
            ("https://[::1]:8443", false, "[::1]:8443"),
            // With h2 offered an HTTP/1.1 connection may still be negotiated.
            ("https://example.com:6443", true, "example.com:6443"),
        ] {
            let up = builder("c", url)
                .allow_plaintext(true)
                .http2(http2)
                .insecure_skip_tls_verify(true)
                .build()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(up.http1_host().to_str().unwrap(), host, "{url}");
        }
    }
}
