//! The gateway's one YAML configuration file, typed.
//!
//! Unknown fields are refused (a misspelt key must not silently fall back to a default), and
//! every error names the file, line, column and field.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kubegate_api::AccessKeyScope;
use kubegate_proxy::AuditLevel;
use kubegate_proxy::upstream::redact_url;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Default listen address when nothing is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serving certificate; a self-signed pair is generated into the state directory when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `central` (default) or `agent`.
    #[serde(default)]
    pub mode: Mode,
    /// Agent-mode settings (required when `mode: agent`).
    #[serde(default)]
    pub agent: Option<AgentConfig>,
    /// Public URL of the gateway's OIDC issuer (`https://host:port/oidc`). Defaults to
    /// `https://<listen>/oidc`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Directory for generated keys, certificates and API-created state.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// PEM files of signing keys; the first is the active key, the rest still verify. When empty,
    /// a key is generated into the state directory on first run.
    #[serde(default)]
    pub signing_keys: Vec<PathBuf>,
    /// Upper bound for every token the gateway mints, in seconds.
    #[serde(default = "default_max_token_ttl")]
    pub max_token_ttl_seconds: u64,
    /// When true, every mutating request is refused for everyone but gateway admins.
    #[serde(default)]
    pub read_only: bool,
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Whether `/metrics` may be read without credentials.
    #[serde(default)]
    pub public_metrics: bool,
    /// How many distinct targets the request metrics label by name; requests to further
    /// targets are counted under `other`. Targets come from request paths before
    /// authentication, so the bound keeps clients from growing the metrics without end.
    #[serde(default = "default_metrics_max_targets")]
    pub metrics_max_targets: usize,
    /// Connected clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Legacy virtual clusters, addressed by host cluster and namespace.
    #[serde(default)]
    pub virtual_clusters: Vec<LegacyVirtualClusterConfig>,
    /// Projects with their spaces and virtual clusters.
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Users known to the gateway.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Teams; each team name becomes a group of its members.
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    /// Static access keys, stored as SHA-256 digests.
    #[serde(default)]
    pub access_keys: Vec<StaticAccessKey>,
    /// Gateway RBAC: Kubernetes `Role`, `ClusterRole`, `RoleBinding`, `ClusterRoleBinding` objects.
    #[serde(default)]
    pub rbac: Vec<RbacObject>,
    /// Login and session settings for `/auth/`.
    #[serde(default)]
    pub auth: AuthConfig,
    /// External OIDC issuers whose ID tokens are accepted (like kube-apiserver's `--oidc-*` flags).
    #[serde(default)]
    pub oidc_issuers: Vec<OidcIssuerConfig>,
    /// Trusted front proxy that asserts identities with `X-Remote-User`/`X-Remote-Group`.
    #[serde(default)]
    pub front_proxy: Option<FrontProxyConfig>,
    /// Request rate limits.
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    /// Maximum number of open client connections (0 = unlimited).
    #[serde(default)]
    pub max_connections: usize,
    /// Reads (`get`, `list`) served at once per upstream (each Kubernetes target, each Grafana)
    /// and as many again for the gateway's own endpoints, as kube-apiserver's
    /// `--max-requests-inflight` (default 400; 0 = unlimited). Long-running requests are not
    /// counted.
    #[serde(default = "default_max_requests_in_flight")]
    pub max_requests_in_flight: usize,
    /// Writes (every other verb) served at once, counted as reads are, as kube-apiserver's
    /// `--max-mutating-requests-inflight` (default 200; 0 = unlimited).
    #[serde(default = "default_max_mutating_requests_in_flight")]
    pub max_mutating_requests_in_flight: usize,
}

/// The most rotated audit files `audit.maxFiles` may ask for: each rotation renames every one of
/// them in turn.
pub const MAX_AUDIT_FILES: usize = 1000;

/// `/auth/` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of a session cookie and of keys created by password login (seconds).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_seconds: u64,
    /// Failed logins allowed per user name and per source address within `loginWindowSeconds`
    /// (at least 1).
    #[serde(default = "default_login_failures")]
    pub max_login_failures: u32,
    /// The window for `maxLoginFailures` (seconds, at least 1).
    #[serde(default = "default_login_window")]
    pub login_window_seconds: u64,
    /// Origins allowed for cookie-authenticated mutating requests and WebSocket upgrades, in
    /// addition to the gateway's own (`https://<host>` of the request).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The longest an access key made through the API may live (Loft's
    /// `accessKeyMaxTTLSeconds`; 0, the default, sets no limit). A key asked for with no `ttl`
    /// or a longer one gets this one, as Loft bounds it; `sessionTtlSeconds` may not exceed it.
    #[serde(default, rename = "accessKeyMaxTTLSeconds")]
    pub access_key_max_ttl_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_seconds: default_session_ttl(),
            max_login_failures: default_login_failures(),
            login_window_seconds: default_login_window(),
            allowed_origins: Vec::new(),
            access_key_max_ttl_seconds: 0,
        }
    }
}

fn default_session_ttl() -> u64 {
    12 * 60 * 60
}

fn default_login_failures() -> u32 {
    5
}

fn default_login_window() -> u64 {
    300
}

/// An external OIDC issuer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// Issuer URL (`iss`); its JWKS is discovered from `/.well-known/openid-configuration`.
    pub issuer_url: String,
    /// Expected audience (client ID).
    pub client_id: String,
    /// CA bundle (PEM file) for the issuer's HTTPS endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Claim holding the user name (default `sub`).
    #[serde(default)]
    pub username_claim: Option<String>,
    /// Prefix for user names (`-` disables; default `<issuer>#` unless the claim is `email`).
    #[serde(default)]
    pub username_prefix: Option<String>,
    /// Claim holding groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Prefix for groups.
    #[serde(default)]
    pub groups_prefix: Option<String>,
}

/// A trusted authenticating proxy in front of the gateway.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontProxyConfig {
    /// Source networks (CIDR) the proxy connects from. Every configured check must pass: the
    /// source network (when listed) and the client certificate (when `clientCaFile` is set).
    #[serde(default)]
    pub trusted_cidrs: Vec<String>,
    /// CA bundle (PEM file) that issued the proxy's client certificate, like kube-apiserver's
    /// `--requestheader-client-ca-file`. Clients are asked for a certificate and those that
    /// present one not issued by this CA fail the TLS handshake; clients without one still
    /// connect but their identity headers are never believed. Read at start and again at each
    /// reload; an open connection's certificate is checked against the CA of the moment on
    /// its requests (again at least every minute), as kube-apiserver checks it on every
    /// request, so a replaced CA stops trusting connections made under the old one.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Common names the proxy's certificate may carry (`--requestheader-allowed-names`); empty
    /// means any certificate issued by `clientCaFile`.
    #[serde(default)]
    pub allowed_names: Vec<String>,
    /// Header names carrying the user (default `X-Remote-User`).
    #[serde(default)]
    pub username_headers: Vec<String>,
    /// Header names carrying groups (default `X-Remote-Group`).
    #[serde(default)]
    pub group_headers: Vec<String>,
}

/// Token-bucket rate limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Per authenticated identity.
    #[serde(default)]
    pub per_identity: Option<RateLimit>,
    /// Per target (cluster, virtual cluster, space, management API).
    #[serde(default)]
    pub per_target: Option<RateLimit>,
}

/// One token bucket: `requestsPerSecond` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Refill rate.
    pub requests_per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// Serving TLS material.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Gateway mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Serves every target and the management API.
    #[default]
    Central,
    /// A direct cluster endpoint inside one cluster.
    Agent,
}

/// Agent-mode settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// The name of the cluster this agent serves (as the central gateway knows it).
    pub cluster: String,
    /// The local cluster's API server.
    pub upstream: UpstreamConfig,
    /// The central gateway's URL.
    pub central_url: String,
    /// CA bundle (PEM file) to verify the central gateway with.
    #[serde(default)]
    pub central_ca_file: Option<PathBuf>,
}

/// Audit sink.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, `file` or `none` (default).
    #[serde(default)]
    pub sink: AuditSinkKind,
    /// Log file for `sink: file`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Rotate the file when it grows beyond this many bytes (default 100 MiB).
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
    /// Rotated files to keep (default 5, at most [`MAX_AUDIT_FILES`]; 0 truncates the file
    /// instead of rotating it).
    #[serde(default)]
    pub max_files: Option<usize>,
    /// Level of requests to the management API and to targets without an `auditLevel`
    /// (`Metadata` by default). `Request` and `RequestResponse` record JSON bodies, except for
    /// long-running requests (watch, exec, attach, port-forward, log) and credential-bearing
    /// resources (secrets, token requests and reviews, the management API's tokens and keys);
    /// `/auth`, `/oidc`, Grafana and the ops endpoints are always recorded at `Metadata`.
    #[serde(default)]
    pub level: AuditLevel,
    /// The largest body an event records (default 1 MiB); larger bodies stream through and
    /// the event says they were left out.
    #[serde(default)]
    pub max_recorded_body_bytes: Option<usize>,
}

/// Audit sink kind.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AuditSinkKind {
    /// No audit log.
    #[default]
    None,
    /// One JSON line per event on standard output.
    Stdout,
    /// One JSON line per event in a size-rotated file.
    File,
}

/// How the gateway reaches a Kubernetes API server.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://host:port[/base/path]`.
    pub server: String,
    /// CA bundle file (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// CA bundle, base64 of PEM (as kubeconfig's `certificate-authority-data`).
    #[serde(default)]
    pub ca_data: Option<String>,
    /// Skip TLS verification. Only ever for a cluster named here, never by default.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Bearer token (prefer `tokenFile`).
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the bearer token; re-read when it changes.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Client certificate (PEM file).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Client key (PEM file).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Client certificate, base64 of PEM.
    #[serde(default)]
    pub client_cert_data: Option<String>,
    /// Client key, base64 of PEM.
    #[serde(default)]
    pub client_key_data: Option<String>,
    /// `impersonate` (default), `passthrough` or `oidc`.
    #[serde(default)]
    pub identity_mode: IdentityMode,
    /// With `identityMode: oidc`, the audience (`aud`) of the tokens the gateway forwards: the
    /// upstream's `--oidc-client-id`. Default `kubegate/<target>` (`kubegate/cluster/<name>`,
    /// `kubegate/virtualcluster/<cluster>/<namespace>/<name>`,
    /// `kubegate/project/<project>/virtualcluster/<name>`). Never the gateway's own audience
    /// (`kubegate`), and never another upstream's: a token forwarded to one upstream must not
    /// be accepted by the gateway or by any other upstream.
    #[serde(default)]
    pub oidc_audience: Option<String>,
    /// Whether pooled requests may use HTTP/2 (offered by ALPN; default true). `false` keeps
    /// every connection HTTP/1.1, e.g. behind a load balancer whose HTTP/2 misbehaves; exec,
    /// attach and port-forward always use HTTP/1.1.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Requests at once on one HTTP/2 connection to the upstream before another is dialled
    /// (default 100). Keep it at or below the server's own cap (kube-apiserver's
    /// `--http2-max-streams-per-connection`, 1,000 by default): past that the server makes
    /// requests wait for a stream to end.
    #[serde(default)]
    pub http2_max_streams_per_connection: Option<u32>,
    /// With HTTP/2 offered, how many HTTP/1.1 connections requests that are not long-running
    /// may use (default 64); past that they share the h2 connections, as every request does
    /// at 0. Watches, logs followed and other long-running requests always take h2 streams
    /// when the upstream speaks h2.
    #[serde(default)]
    pub http1_connections_for_short_requests: Option<u32>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            // The URL as written may carry credentials (`https://admin:pw@host`, `?token=`).
            .field("server", &redact_url(&self.server))
            .field("ca_file", &self.ca_file)
            .field("ca_data", &self.ca_data.as_ref().map(|_| "<set>"))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field(
                "client_cert_data",
                &self.client_cert_data.as_ref().map(|_| "<set>"),
            )
            .field(
                "client_key_data",
                &self.client_key_data.as_ref().map(|_| "<redacted>"),
            )
            .field("identity_mode", &self.identity_mode)
            .field("oidc_audience", &self.oidc_audience)
            .field("http2", &self.http2)
            .field(
                "http2_max_streams_per_connection",
                &self.http2_max_streams_per_connection,
            )
            .field(
                "http1_connections_for_short_requests",
                &self.http1_connections_for_short_requests,
            )
            .finish()
    }
}

/// How the client's identity reaches an upstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMode {
    /// The gateway's credential plus `Impersonate-*` headers for the authenticated identity.
    #[default]
    Impersonate,
    /// The client's own bearer token, untouched, when it is an ID token of one of the
    /// gateway's `oidcIssuers` (which the upstream trusts too); any other `Authorization` (the
    /// gateway's own access keys and tokens, or a header beside a session cookie) is removed.
    Passthrough,
    /// A short-lived token the gateway mints for the caller (see `/oidc`), instead of
    /// impersonation; for upstreams that trust the gateway as an OIDC issuer.
    Oidc,
}

/// A connected cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name (RFC 1123 label): `/kubernetes/cluster/<name>/`.
    pub name: String,
    /// Display name for the management API.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The cluster's API server.
    pub upstream: UpstreamConfig,
    /// The cluster's Grafana, served at `/grafana/<name>/` (`server` is its base URL; a
    /// `token` here is a Grafana service-account token, the client's credential never is).
    #[serde(default)]
    pub grafana: Option<UpstreamConfig>,
    /// URL of this cluster's direct endpoint (an agent), if any.
    #[serde(default)]
    pub direct_endpoint: Option<String>,
    /// Base64 PEM of the CA that signed the direct endpoint's serving certificate, told to
    /// clients as Loft's `loft.sh/direct-cluster-endpoint-ca-data` (an agent's self-signed
    /// certificate is `<its stateDir>/serving.crt`, or the `tls.certFile` it serves).
    #[serde(default)]
    pub direct_endpoint_ca_data: Option<String>,
    /// Tell clients not to verify the direct endpoint's certificate
    /// (`loft.sh/direct-cluster-endpoint-insecure: "true"`).
    #[serde(default)]
    pub direct_endpoint_insecure: bool,
    /// Audit level for requests to this target (default: `audit.level`).
    #[serde(default)]
    pub audit_level: Option<AuditLevel>,
}

/// A legacy virtual cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyVirtualClusterConfig {
    /// Host cluster name.
    pub cluster: String,
    /// Namespace on the host cluster.
    pub namespace: String,
    /// Virtual cluster name.
    pub name: String,
    /// The virtual cluster's API server.
    pub upstream: UpstreamConfig,
    /// Audit level for requests to this target (default: `audit.level`).
    #[serde(default)]
    pub audit_level: Option<AuditLevel>,
}

/// A project.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    /// Project name.
    pub name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Spaces: one namespace each on a connected cluster.
    #[serde(default)]
    pub spaces: Vec<SpaceConfig>,
    /// Virtual cluster instances.
    #[serde(default)]
    pub virtual_clusters: Vec<ProjectVirtualClusterConfig>,
}

/// A project space: a namespace on a connected cluster, fenced to that namespace.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpaceConfig {
    /// Space name.
    pub name: String,
    /// The connected cluster holding the namespace.
    pub cluster: String,
    /// The namespace (defaults to the space name).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Audit level for requests to this target (default: `audit.level`).
    #[serde(default)]
    pub audit_level: Option<AuditLevel>,
}

impl SpaceConfig {
    /// The namespace requests are fenced to.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(&self.name)
    }
}

/// A project virtual cluster instance.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectVirtualClusterConfig {
    /// Instance name.
    pub name: String,
    /// The virtual cluster's API server.
    pub upstream: UpstreamConfig,
    /// Audit level for requests to this target (default: `audit.level`).
    #[serde(default)]
    pub audit_level: Option<AuditLevel>,
}

/// A user.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    /// Kubernetes user name.
    pub name: String,
    /// Stable UID (defaults to the name). Access keys and tokens belong to the UID they were
    /// made for: give a name back to someone else under a new UID, and the old holder's
    /// credentials stop working (as kube's service-account tokens do when the account is
    /// deleted and made again).
    #[serde(default)]
    pub uid: Option<String>,
    /// Token generation (Loft's `User.spec.tokenGeneration`): raising it revokes every
    /// token minted for the user before (session cookies, direct-cluster-endpoint tokens).
    #[serde(default)]
    pub token_generation: u64,
    /// Extra groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Argon2 password hash (PHC string) for `/auth/password/login`.
    #[serde(default)]
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("token_generation", &self.token_generation)
            .field("groups", &self.groups)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A team: its name becomes a group of each member.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamConfig {
    /// Team name.
    pub name: String,
    /// Member user names.
    #[serde(default)]
    pub members: Vec<String>,
    /// Extra groups every member gets.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An access key configured statically (only its digest is stored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticAccessKey {
    /// Name of the key.
    pub name: String,
    /// The user it authenticates as.
    pub user: String,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// Optional scope narrowing the user's permissions.
    #[serde(default)]
    pub scope: Option<AccessKeyScope>,
}

/// A gateway RBAC object, written as the Kubernetes object.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RbacObject {
    /// `rbac.authorization.k8s.io/v1` Role.
    Role(Role),
    /// `rbac.authorization.k8s.io/v1` ClusterRole.
    ClusterRole(ClusterRole),
    /// `rbac.authorization.k8s.io/v1` RoleBinding.
    RoleBinding(RoleBinding),
    /// `rbac.authorization.k8s.io/v1` ClusterRoleBinding.
    ClusterRoleBinding(ClusterRoleBinding),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("kubegate-state")
}

fn default_metrics_max_targets() -> usize {
    kubegate_proxy::metrics::DEFAULT_MAX_TARGETS
}

fn default_max_requests_in_flight() -> usize {
    400
}

fn default_max_mutating_requests_in_flight() -> usize {
    200
}

fn default_max_token_ttl() -> u64 {
    24 * 60 * 60
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            tls: None,
            mode: Mode::Central,
            agent: None,
            issuer: None,
            state_dir: default_state_dir(),
            signing_keys: Vec::new(),
            max_token_ttl_seconds: default_max_token_ttl(),
            read_only: false,
            audit: AuditConfig::default(),
            public_metrics: false,
            metrics_max_targets: default_metrics_max_targets(),
            clusters: Vec::new(),
            virtual_clusters: Vec::new(),
            projects: Vec::new(),
            users: Vec::new(),
            teams: Vec::new(),
            access_keys: Vec::new(),
            rbac: Vec::new(),
            auth: AuthConfig::default(),
            oidc_issuers: Vec::new(),
            front_proxy: None,
            rate_limits: RateLimitConfig::default(),
            max_connections: 0,
            max_requests_in_flight: default_max_requests_in_flight(),
            max_mutating_requests_in_flight: default_max_mutating_requests_in_flight(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                path: origin.to_owned(),
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })?;
        config.validate().map_err(|problem| ConfigError::Invalid {
            path: origin.to_owned(),
            field: problem.field,
            message: problem.message,
        })?;
        Ok(config)
    }

    /// The names a generated self-signed serving certificate is made for besides `localhost`
    /// and the loopback addresses: the host of an explicit `issuer` (the gateway's public
    /// URL), so clients that reach the gateway by that name can verify it.
    pub fn serving_names(&self) -> Vec<String> {
        self.issuer
            .as_deref()
            .and_then(|url| url.parse::<http::Uri>().ok())
            .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .filter(|h| !h.is_empty() && !["localhost", "127.0.0.1", "::1"].contains(&h.as_str()))
            .into_iter()
            .collect()
    }

    /// The issuer URL tokens are minted with.
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("https://{}/oidc", self.listen))
    }

    fn validate(&self) -> Result<(), Problem> {
        let label = |field: String, value: &str| {
            if kubegate_routing::is_dns1123_label(value) {
                Ok(())
            } else {
                Err(Problem::new(
                    field,
                    format!(
                        "{value:?} is not a valid name (lowercase RFC 1123 label: a-z, 0-9 and '-', at most 63 characters)"
                    ),
                ))
            }
        };
        let unique = |field: &str, names: &mut BTreeSet<String>, name: &str| {
            if names.insert(name.to_owned()) {
                Ok(())
            } else {
                Err(Problem::new(
                    field.to_owned(),
                    format!("duplicate name {name:?}"),
                ))
            }
        };
        // Users' names, uids and groups reach upstreams as impersonation headers: a value an
        // upstream would read differently (trimmed) or not at all is refused here, where the
        // file can be fixed, rather than on every request.
        let impersonable = |field: String, value: &str| {
            use kubegate_proxy::UnforwardableIdentity as Why;
            let why = match kubegate_proxy::check_impersonable_value(value, "value") {
                Ok(()) => return Ok(()),
                Err(Why::Padded(_)) => {
                    "must not start or end with a space or tab (an upstream would trim it off the impersonation header)"
                }
                Err(_) => {
                    "must not hold control characters (it is sent upstream in an impersonation header)"
                }
            };
            Err(Problem::new(field, format!("{value:?} {why}")))
        };
        if self.mode == Mode::Agent && self.agent.is_none() {
            return Err(Problem::new(
                "agent",
                "`mode: agent` needs an `agent` section".into(),
            ));
        }
        if let Some(agent) = &self.agent {
            label("agent.cluster".into(), &agent.cluster)?;
            check_upstream("agent.upstream", &agent.upstream)?;
        }
        let mut clusters = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            label(format!("clusters[{i}].name"), &c.name)?;
            unique(&format!("clusters[{i}].name"), &mut clusters, &c.name)?;
            check_upstream(&format!("clusters[{i}].upstream"), &c.upstream)?;
            if let Some(g) = &c.grafana {
                check_upstream(&format!("clusters[{i}].grafana"), g)?;
            }
            check_direct_endpoint(&format!("clusters[{i}]"), c)?;
        }
        let mut vcs = BTreeSet::new();
        for (i, v) in self.virtual_clusters.iter().enumerate() {
            label(format!("virtualClusters[{i}].cluster"), &v.cluster)?;
            label(format!("virtualClusters[{i}].namespace"), &v.namespace)?;
            label(format!("virtualClusters[{i}].name"), &v.name)?;
            let key = format!("{}/{}/{}", v.cluster, v.namespace, v.name);
            unique(&format!("virtualClusters[{i}]"), &mut vcs, &key)?;
            check_upstream(&format!("virtualClusters[{i}].upstream"), &v.upstream)?;
        }
        let mut projects = BTreeSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            label(format!("projects[{i}].name"), &p.name)?;
            unique(&format!("projects[{i}].name"), &mut projects, &p.name)?;
            let mut spaces = BTreeSet::new();
            for (j, s) in p.spaces.iter().enumerate() {
                let field = format!("projects[{i}].spaces[{j}]");
                label(format!("{field}.name"), &s.name)?;
                unique(&format!("{field}.name"), &mut spaces, &s.name)?;
                label(format!("{field}.namespace"), s.namespace())?;
                if !clusters.contains(&s.cluster) {
                    return Err(Problem::new(
                        format!("{field}.cluster"),
                        format!("no cluster named {:?} is configured", s.cluster),
                    ));
                }
            }
            let mut pvcs = BTreeSet::new();
            for (j, v) in p.virtual_clusters.iter().enumerate() {
                let field = format!("projects[{i}].virtualClusters[{j}]");
                label(format!("{field}.name"), &v.name)?;
                unique(&format!("{field}.name"), &mut pvcs, &v.name)?;
                check_upstream(&format!("{field}.upstream"), &v.upstream)?;
            }
        }
        self.check_oidc_audiences()?;
        let mut users = BTreeSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(Problem::new(
                    format!("users[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            impersonable(format!("users[{i}].name"), &u.name)?;
            unique(&format!("users[{i}].name"), &mut users, &u.name)?;
            if let Some(uid) = &u.uid {
                impersonable(format!("users[{i}].uid"), uid)?;
            }
            for (j, g) in u.groups.iter().enumerate() {
                impersonable(format!("users[{i}].groups[{j}]"), g)?;
            }
        }
        for (i, t) in self.teams.iter().enumerate() {
            impersonable(format!("teams[{i}].name"), &t.name)?;
            for (j, g) in t.groups.iter().enumerate() {
                impersonable(format!("teams[{i}].groups[{j}]"), g)?;
            }
            for (j, m) in t.members.iter().enumerate() {
                if !users.contains(m) {
                    return Err(Problem::new(
                        format!("teams[{i}].members[{j}]"),
                        format!("no user named {m:?} is configured"),
                    ));
                }
            }
        }
        let mut keys = BTreeSet::new();
        for (i, k) in self.access_keys.iter().enumerate() {
            unique(&format!("accessKeys[{i}].name"), &mut keys, &k.name)?;
            if !users.contains(&k.user) {
                return Err(Problem::new(
                    format!("accessKeys[{i}].user"),
                    format!("no user named {:?} is configured", k.user),
                ));
            }
            let digest_ok = k.sha256.len() == 64
                && k.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !digest_ok {
                return Err(Problem::new(
                    format!("accessKeys[{i}].sha256"),
                    "must be 64 lowercase hex digits (the SHA-256 of the key)".into(),
                ));
            }
        }
        for (field, limit) in [
            ("rateLimits.perIdentity", &self.rate_limits.per_identity),
            ("rateLimits.perTarget", &self.rate_limits.per_target),
        ] {
            // Zero, negative or NaN would shut everyone out for good (a `Retry-After` of
            // decades) after the first burst.
            if let Some(limit) = limit
                && !(limit.requests_per_second.is_finite() && limit.requests_per_second > 0.0)
            {
                return Err(Problem::new(
                    format!("{field}.requestsPerSecond"),
                    format!(
                        "must be a number greater than 0, not {}",
                        limit.requests_per_second
                    ),
                ));
            }
        }
        if self.audit.sink == AuditSinkKind::File && self.audit.path.is_none() {
            return Err(Problem::new(
                "audit.path",
                "`sink: file` needs a `path`".into(),
            ));
        }
        if let Some(front) = &self.front_proxy {
            if front.trusted_cidrs.is_empty() && front.client_ca_file.is_none() {
                return Err(Problem::new(
                    "frontProxy",
                    "needs `trustedCidrs`, `clientCaFile`, or both: identity headers are only believed from a known proxy".into(),
                ));
            }
            if !front.allowed_names.is_empty() && front.client_ca_file.is_none() {
                return Err(Problem::new(
                    "frontProxy.allowedNames",
                    "needs `clientCaFile` (names are read from the verified client certificate)"
                        .into(),
                ));
            }
        }
        let positive = [
            ("maxTokenTtlSeconds", self.max_token_ttl_seconds),
            (
                "auth.maxLoginFailures",
                u64::from(self.auth.max_login_failures),
            ),
            ("auth.loginWindowSeconds", self.auth.login_window_seconds),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Problem::new(field, "must be greater than 0".into()));
            }
        }
        let max_ttl = self.auth.access_key_max_ttl_seconds;
        if max_ttl > 0 && self.auth.session_ttl_seconds > max_ttl {
            return Err(Problem::new(
                "auth.sessionTtlSeconds",
                format!(
                    "must be at most auth.accessKeyMaxTTLSeconds ({max_ttl}): a login stores a key that lives as long as the session"
                ),
            ));
        }
        if let Some(n) = self.audit.max_files
            && n > MAX_AUDIT_FILES
        {
            return Err(Problem::new(
                "audit.maxFiles",
                format!("must be at most {MAX_AUDIT_FILES}"),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Every Kubernetes upstream the config names (the agent's, clusters', virtual clusters'),
    /// with the field that holds it and the key the gateway serves it under. Grafana upstreams
    /// are not Kubernetes API servers and are left out.
    pub fn kubernetes_upstreams(
        &self,
    ) -> Vec<(String, crate::upstreams::UpstreamKey, &UpstreamConfig)> {
        use crate::upstreams::UpstreamKey;
        let agent = self.agent.iter().map(|a| {
            (
                "agent.upstream".to_owned(),
                UpstreamKey::Cluster(a.cluster.clone()),
                &a.upstream,
            )
        });
        let clusters = self.clusters.iter().enumerate().map(|(i, c)| {
            (
                format!("clusters[{i}].upstream"),
                UpstreamKey::Cluster(c.name.clone()),
                &c.upstream,
            )
        });
        let legacy = self.virtual_clusters.iter().enumerate().map(|(i, v)| {
            let key =
                UpstreamKey::VirtualCluster(v.cluster.clone(), v.namespace.clone(), v.name.clone());
            (format!("virtualClusters[{i}].upstream"), key, &v.upstream)
        });
        let projects = self.projects.iter().enumerate().flat_map(|(i, p)| {
            p.virtual_clusters.iter().enumerate().map(move |(j, v)| {
                let key = UpstreamKey::ProjectVirtualCluster(p.name.clone(), v.name.clone());
                (
                    format!("projects[{i}].virtualClusters[{j}].upstream"),
                    key,
                    &v.upstream,
                )
            })
        });
        agent
            .chain(clusters)
            .chain(legacy)
            .chain(projects)
            .collect()
    }

    /// The files a reload reads again, for a watcher to reload on their change as on the
    /// config file's: the serving certificate and key, signing keys, CA bundles (front proxy,
    /// OIDC issuers, the central gateway, every Kubernetes upstream) and upstream client
    /// certificates and keys. Upstream token files are left out: forwarding re-reads them as
    /// they change.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let upstreams = self.kubernetes_upstreams();
        let upstream_files = upstreams.iter().flat_map(|(_, _, u)| {
            [&u.ca_file, &u.client_cert_file, &u.client_key_file]
                .into_iter()
                .flatten()
        });
        self.tls
            .iter()
            .flat_map(|t| [&t.cert_file, &t.key_file])
            .chain(&self.signing_keys)
            .chain(self.oidc_issuers.iter().filter_map(|i| i.ca_file.as_ref()))
            .chain(self.agent.iter().filter_map(|a| a.central_ca_file.as_ref()))
            .chain(
                self.front_proxy
                    .iter()
                    .filter_map(|f| f.client_ca_file.as_ref()),
            )
            .chain(upstream_files)
            .cloned()
            .collect()
    }

    /// Identity mode `oidc`: the token forwarded to an upstream is for that upstream alone, so
    /// its audience is neither the gateway's own (`kubegate`, which the gateway and its agents
    /// accept) nor another upstream's.
    fn check_oidc_audiences(&self) -> Result<(), Problem> {
        let mut seen = BTreeSet::new();
        for (field, key, upstream) in self.kubernetes_upstreams() {
            if upstream.identity_mode != IdentityMode::Oidc {
                continue;
            }
            let field = format!("{field}.oidcAudience");
            let audience = upstream
                .oidc_audience
                .clone()
                .unwrap_or_else(|| key.default_oidc_audience());
            if audience.is_empty() || audience == crate::TOKEN_AUDIENCE {
                return Err(Problem::new(
                    field,
                    format!(
                        "{audience:?} cannot be an upstream's audience: tokens forwarded with it would be accepted by the gateway itself"
                    ),
                ));
            }
            if !seen.insert(audience.clone()) {
                return Err(Problem::new(
                    field,
                    format!(
                        "{audience:?} is already another upstream's audience: a token forwarded to one would be accepted by the other"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A direct endpoint's TLS settings need the endpoint, and are one or the other (client-go
/// refuses a CA together with `insecure-skip-tls-verify` too); the CA must be base64 of a PEM
/// certificate, as clients decode it.
fn check_direct_endpoint(field: &str, c: &ClusterConfig) -> Result<(), Problem> {
    if c.direct_endpoint.is_none()
        && (c.direct_endpoint_ca_data.is_some() || c.direct_endpoint_insecure)
    {
        return Err(Problem::new(
            format!("{field}.directEndpoint"),
            "directEndpointCaData and directEndpointInsecure need a directEndpoint".into(),
        ));
    }
    let Some(data) = &c.direct_endpoint_ca_data else {
        return Ok(());
    };
    if c.direct_endpoint_insecure {
        return Err(Problem::new(
            format!("{field}.directEndpointInsecure"),
            "a CA and insecure together: set one of directEndpointCaData and directEndpointInsecure".into(),
        ));
    }
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    if !pem.is_some_and(|pem| pem.contains("-----BEGIN CERTIFICATE-----")) {
        return Err(Problem::new(
            format!("{field}.directEndpointCaData"),
            "must be base64 of a PEM certificate".into(),
        ));
    }
    Ok(())
}

/// What loading a config would refuse in an upstream's settings, as one message (bootstrap
/// skips a kubeconfig context with such settings instead of writing a config that cannot load).
pub(crate) fn upstream_problem(u: &UpstreamConfig) -> Option<String> {
    check_upstream("upstream", u)
        .err()
        .map(|p| format!("{}: {}", p.field, p.message))
}

fn check_upstream(field: &str, u: &UpstreamConfig) -> Result<(), Problem> {
    if !u.server.starts_with("https://") && !u.server.starts_with("http://") {
        return Err(Problem::new(
            format!("{field}.server"),
            // Redacted: a config error is printed and logged, and the URL may hold a password.
            format!("{:?} is not an http(s) URL", redact_url(&u.server)),
        ));
    }
    if u.token.is_some() && u.token_file.is_some() {
        return Err(Problem::new(
            format!("{field}.token"),
            "set either `token` or `tokenFile`, not both".into(),
        ));
    }
    let cert = u.client_cert_file.is_some() || u.client_cert_data.is_some();
    let key = u.client_key_file.is_some() || u.client_key_data.is_some();
    if cert != key {
        return Err(Problem::new(
            format!("{field}.clientCertFile"),
            "a client certificate needs its key and a key needs its certificate".into(),
        ));
    }
    // Presented only when no token is set, and never over plain HTTP.
    if cert && u.server.starts_with("http://") && u.token.is_none() && u.token_file.is_none() {
        return Err(Problem::new(
            format!("{field}.clientCertFile"),
            "a client certificate is only presented over https".into(),
        ));
    }
    // client-go refuses the same pair in a kubeconfig.
    if u.insecure_skip_tls_verify && (u.ca_file.is_some() || u.ca_data.is_some()) {
        return Err(Problem::new(
            format!("{field}.insecureSkipTlsVerify"),
            "specifying a CA bundle (caFile, caData) with insecureSkipTlsVerify is not allowed"
                .into(),
        ));
    }
    Ok(())
}

struct Problem {
    field: String,
    message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: String) -> Self {
        Problem {
            field: field.into(),
            message,
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    // serde-saphyr prefixes "error: line N column M: "; the location is reported separately.
    match line.split_once(": ") {
        Some(("error", rest)) => match rest.split_once(": ") {
            Some((loc, msg)) if loc.starts_with("line ") => msg.to_owned(),
            _ => rest.to_owned(),
        },
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let end = start + readme[start..].find("```").expect("the block ends");
        let config = Config::parse(&readme[start..end], Path::new("README.md"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.clusters[0].audit_level,
            Some(AuditLevel::RequestResponse)
        );
        assert_eq!(
            config.projects[0].spaces[0].audit_level,
            Some(AuditLevel::Request)
        );
        assert_eq!(config.audit.level, AuditLevel::Metadata);
        assert!(config.front_proxy.is_some() && !config.oidc_issuers.is_empty());
    }

    #[test]
    fn upstream_urls_are_shown_without_their_credentials() {
        let yaml = |server: &str| {
            format!(
                "listen: 127.0.0.1:0\nstateDir: /tmp/x\nclusters:\n  - name: a\n    upstream: {{server: {server:?}}}\n"
            )
        };
        let path = Path::new("c.yaml");
        let config = Config::parse(&yaml("https://admin:pw1@k8s:6443/base?token=s3cret"), path)
            .unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{:?}", config.clusters[0].upstream);
        assert!(
            !debug.contains("pw1") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(
            debug.contains(r#"server: "https://<redacted>@k8s:6443/base?<redacted>""#),
            "{debug}"
        );
        let Err(err) = Config::parse(&yaml("ftp://admin:pw1@k8s/?token=s3cret"), path) else {
            panic!("an ftp upstream is refused");
        };
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("pw1") && !text.contains("s3cret"), "{text}");
            assert!(text.contains("ftp://<redacted>@k8s/?<redacted>"), "{text}");
        }
    }

    #[test]
    fn a_self_signed_certificate_also_names_the_issuers_host() {
        let names = |issuer: &str| {
            let yaml = if issuer.is_empty() {
                String::new()
            } else {
                format!("issuer: {issuer:?}\n")
            };
            Config::parse(&yaml, Path::new("c.yaml"))
                .unwrap_or_else(|e| panic!("{e}"))
                .serving_names()
        };
        assert_eq!(names("https://gw.example.com/oidc"), ["gw.example.com"]);
        assert_eq!(names("https://[2001:db8::1]:8443/oidc"), ["2001:db8::1"]);
        assert!(names("https://127.0.0.1:8443/oidc").is_empty());
        assert!(
            names("").is_empty(),
            "the default issuer is the listen address"
        );
    }

    /// Upstream settings that contradict each other fail the load, naming the field.
    #[test]
    fn contradictory_upstream_settings_are_refused() {
        let path = Path::new("c.yaml");
        for (upstream, field, message) in [
            (
                r#"{server: "https://k8s:6443", caData: "Y2E=", insecureSkipTlsVerify: true}"#,
                "clusters[0].upstream.insecureSkipTlsVerify",
                "with insecureSkipTlsVerify is not allowed",
            ),
            (
                r#"{server: "http://k8s:8080", clientCertData: "Y2E=", clientKeyData: "Y2E="}"#,
                "clusters[0].upstream.clientCertFile",
                "only presented over https",
            ),
            (
                r#"{server: "https://k8s:6443", token: t, tokenFile: /t}"#,
                "clusters[0].upstream.token",
                "not both",
            ),
        ] {
            let yaml = format!("clusters:\n  - name: a\n    upstream: {upstream}\n");
            let err = Config::parse(&yaml, path).unwrap_err().to_string();
            assert!(
                err.contains(field) && err.contains(message),
                "{upstream}: {err}"
            );
        }
        // A plain-HTTP upstream the config names as such loads (and builds: the scheme is
        // the author's opt-in).
        let yaml =
            "clusters:\n  - name: a\n    upstream: {server: \"http://127.0.0.1:8080\", token: t}\n";
        let config = Config::parse(yaml, path).unwrap_or_else(|e| panic!("{e}"));
        crate::upstreams::build_one_for_test(&config.clusters[0].upstream)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Names, uids and groups reach upstreams as impersonation headers: a value an upstream
    /// would read as another (trimmed) or could not read fails the load, naming the field.
    #[test]
    fn identity_values_an_upstream_would_misread_are_refused() {
        let path = Path::new("c.yaml");
        for (yaml, field, message) in [
            (
                "users: [{name: \"alice \"}]",
                "users[0].name",
                "must not start or end with a space or tab",
            ),
            (
                "users: [{name: alice, uid: \"\\tu1\"}]",
                "users[0].uid",
                "must not start or end",
            ),
            (
                "users: [{name: alice, groups: [devs, \" system:masters\"]}]",
                "users[0].groups[1]",
                "must not start or end",
            ),
            (
                "users: [{name: \"al\\nice\"}]",
                "users[0].name",
                "must not hold control characters",
            ),
            (
                "teams: [{name: \"ops \"}]",
                "teams[0].name",
                "must not start or end",
            ),
            (
                "teams: [{name: ops, groups: [\"x\\u007f\"]}]",
                "teams[0].groups[0]",
                "must not hold control characters",
            ),
        ] {
            let err = Config::parse(yaml, path).unwrap_err().to_string();
            assert!(
                err.contains(field) && err.contains(message),
                "{yaml}: {err}"
            );
        }
        let fine = "users: [{name: jane doe, uid: u-1, groups: [\"team a\"]}]\nteams: [{name: ops, members: [jane doe]}]";
        Config::parse(fine, path).unwrap_or_else(|e| panic!("{e}"));
    }
}
