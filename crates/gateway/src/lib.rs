#![doc = include_str!("../README.md")]

pub mod access;
pub mod audit;
pub mod auth;
pub mod authenticators;
pub mod authn;
pub mod bootstrap;
pub mod config;
pub mod directory;
pub mod error;
pub mod forwarded_tokens;
pub mod front_proxy;
pub mod health;
mod inflight;
pub mod management;
pub mod oidc;
mod ops;
pub mod policy;
pub mod ratelimit;
mod refusals;
pub mod remote;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kubegate_authz::WriteGate;
use kubegate_proxy::{AuditLayer, MetricsLayer};
use kubegate_routing::Router;
use kubegate_tokens::{Audience, KeySet, Minter, SigningKey, Verifier};
use tower::Layer;

pub use config::Config;
pub use error::{ConfigError, StoreError};
pub use server::ServerLimits;
pub use service::{GatewayService, Runtime, Shared};
pub use store::{FileStore, Store};

use crate::authn::Credentials;
use crate::directory::Directory;
use crate::upstreams::Upstreams;

/// The audience of tokens the gateway mints for its own endpoints.
pub const TOKEN_AUDIENCE: &str = "kubegate";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// An upstream could not be set up.
    #[error(transparent)]
    Upstream(#[from] upstreams::UpstreamError),
    /// The RBAC objects do not compile.
    #[error("rbac: {0}")]
    Policy(#[from] kubegate_authz::PolicyError),
    /// A signing key could not be loaded or generated.
    #[error("signing keys: {0}")]
    Keys(String),
    /// The mode's settings are inconsistent.
    #[error("{0}")]
    Mode(String),
    /// I/O (listener, audit file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A configured gateway: the service stack plus its listener settings.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    audit: Arc<audit::GatewayAuditSink>,
    metrics: MetricsLayer,
    /// Fixed at start, like the audit sink.
    max_recorded_body: usize,
    /// Swapped on reload, so rotated certificates and a new client CA reach new connections.
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    serving_cert: tls::ServingCert,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Gateway {
    /// Builds a gateway from a validated configuration, opening the embedded state store in the
    /// configured state directory, and generating signing keys and a serving certificate there
    /// on first run.
    pub async fn new(config: Config) -> Result<Gateway, GatewayError> {
        let store: Arc<dyn Store> = Arc::new(FileStore::open(&config.state_dir)?);
        Gateway::with_store(config, store).await
    }

    /// Builds a gateway over a caller-supplied [`Store`].
    pub async fn with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Gateway, GatewayError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let router = match (&config.mode, &config.agent) {
            (config::Mode::Agent, Some(agent)) => Router::agent(agent.cluster.clone())
                .map_err(|e| GatewayError::Mode(format!("agent.cluster: {e}")))?,
            (config::Mode::Agent, None) => {
                return Err(GatewayError::Mode(
                    "`mode: agent` needs an `agent` section".into(),
                ));
            }
            (config::Mode::Central, _) => Router::central(),
        };
        let keys = Arc::new(load_keys(&config)?);
        let issuer = config.issuer();
        let minter = Minter::new(
            Arc::clone(&keys),
            issuer.clone(),
            Audience::new([TOKEN_AUDIENCE]),
        )
        .with_max_ttl(Duration::from_secs(config.max_token_ttl_seconds));
        let verifier = Arc::new(Verifier::new(
            Arc::clone(&keys),
            issuer.clone(),
            TOKEN_AUDIENCE,
        ));
        // Subscribed before the snapshot, so a change landing in between is seen as a change.
        let changes = store.subscribe();
        let state = store.snapshot().await?;
        service::apply_revocations(&verifier, &state);
        let runtime = build_runtime(config.clone(), &state, Arc::clone(&verifier), None)?;
        let serving_cert = tls::ensure_serving_cert(
            config.tls.as_ref(),
            &config.state_dir,
            &config.serving_names(),
        )?;
        let tls = Arc::new(ArcSwap::new(server_tls(&config, &serving_cert)?));
        let audit = Arc::new(
            audit::GatewayAuditSink::open(&config.audit).map_err(|source| GatewayError::Io {
                context: "opening the audit log".into(),
                source,
            })?,
        );
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = MetricsLayer::new(&mut registry).with_max_targets(config.metrics_max_targets);
        audit.register_metrics(&mut registry);
        let refusals = refusals::Refusals::new(&mut registry);
        let authenticator_files = authenticators::files_read(&config);
        let authenticators = authenticators::from_config(&config)?;
        let shared = Arc::new(Shared {
            authenticators: ArcSwap::from_pointee(authenticators),
            authenticator_files: std::sync::Mutex::new(authenticator_files),
            applied_state: std::sync::Mutex::new(None),
            router,
            runtime: ArcSwap::from_pointee(runtime),
            store,
            keys,
            minter,
            issuer,
            forwarded_tokens: forwarded_tokens::ForwardedTokens::default(),
            upstream_health: health::UpstreamHealth::default(),
            auth: auth::AuthState::default(),
            registry: Arc::new(std::sync::Mutex::new(registry)),
            rebuild: tokio::sync::Mutex::new(()),
            in_flight: Arc::default(),
            key_creation: Arc::default(),
            impersonation_modes: kubegate_authz::ImpersonationModes::default(),
            refusals,
            audit: Arc::clone(&audit),
        });
        spawn_state_watcher(&shared, changes);
        health::spawn_prober(&shared);
        Ok(Gateway {
            shared,
            audit,
            metrics,
            max_recorded_body: config
                .audit
                .max_recorded_body_bytes
                .unwrap_or(kubegate_proxy::audit::DEFAULT_MAX_RECORDED_BODY),
            tls,
            serving_cert,
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The complete request stack: classification, metrics, audit, then the gateway service.
    /// It can be served by any hyper server (the embedder must insert
    /// [`ClientAddr`](kubegate_proxy::ClientAddr) per connection).
    pub fn service(&self) -> GatewayStack {
        service::Classify::new(
            Arc::clone(&self.shared),
            self.shutdown.clone(),
            self.metrics.layer(
                AuditLayer::from_arc(Arc::clone(&self.audit))
                    .with_max_recorded_body(self.max_recorded_body)
                    .layer(GatewayService::new(Arc::clone(&self.shared))),
            ),
        )
    }

    /// Waits until every audit event recorded so far is written out (the file sink writes on
    /// a thread of its own). Blocks the calling thread.
    pub fn flush_audit(&self) {
        self.audit.flush();
    }

    /// The last step of a gateway process, once the future that ran [`serve`](Self::serve)
    /// has returned from `runtime.block_on`: shuts `runtime` down, then writes out every
    /// audit event recorded.
    ///
    /// Shutting the runtime down drops the tasks still running, among them the bridges of
    /// exec, attach and port-forward sessions still open: each such session then ends, and
    /// its `ResponseComplete` event is recorded as it is dropped, after the flush `serve` did.
    /// The flush here writes those too, so a session the shutdown cut off is in the audit
    /// log with the time it ended. `timeout` bounds the wait for the runtime's threads (a
    /// blocking task cannot be interrupted); events of tasks not yet dropped by then are
    /// lost.
    ///
    /// Blocks the calling thread; call it outside the runtime (it consumes it).
    pub fn shut_down_runtime(&self, runtime: tokio::runtime::Runtime, timeout: Duration) {
        runtime.shutdown_timeout(timeout);
        self.audit.flush();
    }

    /// Shared state (runtime, store, keys).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The serving certificate in use.
    pub fn serving_cert(&self) -> &tls::ServingCert {
        &self.serving_cert
    }

    /// Replaces the configuration without touching open connections: policy, clusters, keys,
    /// audit levels, rate limits, the external authenticators (OIDC issuers, the agent's central
    /// gateway, the front proxy — rebuilt only when their settings changed, so key caches
    /// survive other reloads) and the TLS settings of new connections (serving certificate files
    /// re-read, front-proxy client CA). A configuration that does not compile is refused and the
    /// old one stays; so is a change of `mode`, `agent.cluster`, `listen`, `stateDir`,
    /// `signingKeys` (the list or the files), `issuer` or `maxTokenTtlSeconds`, which only a
    /// restart can apply.
    ///
    /// Reloads and refreshes of API-created state ([`Shared::refresh_state`], also run when the
    /// store changes) rebuild the runtime one at a time, each from the runtime and the state as
    /// they are once it runs, so neither undoes the other.
    pub async fn reload(&self, config: Config) -> Result<(), GatewayError> {
        // Held until the new runtime is stored: the comparison below and the state snapshot
        // are then the latest, and a key deleted meanwhile is applied by the refresh that
        // waits for this reload, on top of it.
        let _rebuilding = self.shared.rebuild.lock().await;
        let current = self.shared.runtime.load_full();
        let state = self.shared.store.snapshot().await?;
        // Everything that reads files (keys, certificates, CA bundles) and compiles (policy,
        // upstreams) runs on a blocking thread: on the one-thread runtime of a one-CPU gateway,
        // a slow volume (NFS, a stalled Secret mount) would otherwise stop every request for
        // as long as a read takes.
        let shared = Arc::clone(&self.shared);
        let built =
            tokio::task::spawn_blocking(move || Reloaded::build(&shared, &current, config, &state))
                .await
                .map_err(|e| GatewayError::Mode(format!("the reload stopped: {e}")))??;
        // Everything compiled: swap.
        let max_targets = built.runtime.config.metrics_max_targets;
        self.shared.runtime.store(Arc::new(built.runtime));
        self.metrics.set_max_targets(max_targets);
        if let Some((authenticators, files)) = built.authenticators {
            self.shared.authenticators.store(Arc::new(authenticators));
            *self
                .shared
                .authenticator_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = files;
        }
        self.tls.store(built.server_tls);
        Ok(())
    }

    /// Serves on `listener` until `shutdown` resolves: then watches end cleanly, the listener
    /// closes, and in-flight requests get [`ServerLimits::shutdown_grace`] to finish.
    ///
    /// Exec, attach and port-forward sessions are not in flight for the server: once
    /// upgraded, each is a bridge task of its own that runs until either side closes, and
    /// their `ResponseComplete` audit events are recorded only when the bridge ends. So they
    /// may still be open when this returns, after its final audit flush. A process that exits
    /// now drops them with the runtime and loses their events; end it with
    /// [`shut_down_runtime`](Self::shut_down_runtime) instead (the reference binary does).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        mut limits: ServerLimits,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let configured = self.shared.runtime.load().config.max_connections;
        if configured > 0 {
            limits.max_connections = configured;
        }
        let drain = self.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            // Watches end first, so the graceful wait is not held open by them.
            drain.cancel();
        };
        server::serve(
            listener,
            Arc::clone(&self.tls),
            self.service(),
            limits,
            shutdown,
        )
        .await;
        // The last requests' events reach the file before the process may exit.
        let audit = Arc::clone(&self.audit);
        let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
    }
}

/// The listener's TLS settings for `config`.
fn server_tls(
    config: &Config,
    serving_cert: &tls::ServingCert,
) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let client_ca = config
        .front_proxy
        .as_ref()
        .and_then(|f| f.client_ca_file.as_deref());
    Ok(tls::server_config_with_client_ca(serving_cert, client_ca)?)
}

/// The type of [`Gateway::service`].
pub type GatewayStack = service::Classify<
    kubegate_proxy::metrics::MetricsService<
        kubegate_proxy::audit::Audit<GatewayService, audit::GatewayAuditSink>,
    >,
>;

/// Keeps the runtime's view of API-created state current when the store changes underneath
/// (another replica, or an operator editing a Kubernetes-backed store).
fn spawn_state_watcher(shared: &Arc<Shared>, mut changes: tokio::sync::watch::Receiver<u64>) {
    let weak = Arc::downgrade(shared);
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(shared) = weak.upgrade() else { break };
            if let Err(e) = shared.refresh_state().await {
                tracing::warn!(error = %e, "refreshing API-created state failed");
            }
        }
    });
}

fn build_runtime(
    config: Config,
    state: &store::State,
    verifier: Arc<Verifier>,
    previous_upstreams: Option<&Upstreams>,
) -> Result<Runtime, GatewayError> {
    let policy = Arc::new(policy::compile(&config)?);
    let write_gate = WriteGate::new(Arc::clone(&policy), config.read_only);
    let directory = Directory::new(&config);
    let credentials = Credentials::new(&config, state, verifier);
    let upstreams = Upstreams::rebuild(&config, previous_upstreams)?;
    let limits = Arc::new(ratelimit::RateLimits::new(&config.rate_limits));
    Ok(Runtime {
        limits,
        config: Arc::new(config),
        directory: Arc::new(directory),
        policy,
        write_gate,
        credentials,
        upstreams: Arc::new(upstreams),
    })
}

/// What a reload builds before it swaps anything in.
struct Reloaded {
    runtime: Runtime,
    /// Rebuilt authenticators, with the files they read, when they changed.
    authenticators: Option<(
        Vec<Arc<dyn authenticators::ExternalAuthenticator>>,
        authenticators::FilesRead,
    )>,
    server_tls: Arc<rustls::ServerConfig>,
}

impl Reloaded {
    /// Checks and compiles `config` against the running `current`, reading every file it
    /// names. Blocking: file reads, key parsing, policy compilation.
    fn build(
        shared: &Shared,
        current: &Runtime,
        config: Config,
        state: &store::State,
    ) -> Result<Reloaded, GatewayError> {
        let old = &current.config;
        let file_sink = config.audit.sink == config::AuditSinkKind::File
            && old.audit.sink == config::AuditSinkKind::File;
        let restart_only = [
            ("mode", config.mode != old.mode),
            (
                "agent.cluster",
                config.agent.as_ref().map(|a| &a.cluster) != old.agent.as_ref().map(|a| &a.cluster),
            ),
            ("listen", config.listen != old.listen),
            ("stateDir", config.state_dir != old.state_dir),
            // The signing keys, the issuer and the token lifetime are built into the minter
            // and verifier once; a reload that seemed to apply them (dropping a compromised
            // key, say) while the old ones kept signing and verifying would be worse than a
            // refusal.
            ("signingKeys", config.signing_keys != old.signing_keys),
            ("issuer", config.issuer() != old.issuer()),
            (
                "maxTokenTtlSeconds",
                config.max_token_ttl_seconds != old.max_token_ttl_seconds,
            ),
            // Opened, bounded and sized once at start: a reload that accepted a new audit
            // file or connection limit and went on with the old would mislead whoever relies
            // on it (the audit level, per target, does reload).
            // Compared as applied: the file's settings only for a file sink, and a default
            // written out the same as left out.
            ("audit.sink", config.audit.sink != old.audit.sink),
            (
                "audit.path",
                file_sink && config.audit.path != old.audit.path,
            ),
            (
                "audit.maxSizeBytes",
                file_sink
                    && config
                        .audit
                        .max_size_bytes
                        .unwrap_or(audit::DEFAULT_MAX_SIZE)
                        != old.audit.max_size_bytes.unwrap_or(audit::DEFAULT_MAX_SIZE),
            ),
            (
                "audit.maxFiles",
                file_sink
                    && config.audit.max_files.unwrap_or(audit::DEFAULT_MAX_FILES)
                        != old.audit.max_files.unwrap_or(audit::DEFAULT_MAX_FILES),
            ),
            (
                "audit.maxRecordedBodyBytes",
                config
                    .audit
                    .max_recorded_body_bytes
                    .unwrap_or(kubegate_proxy::audit::DEFAULT_MAX_RECORDED_BODY)
                    != old
                        .audit
                        .max_recorded_body_bytes
                        .unwrap_or(kubegate_proxy::audit::DEFAULT_MAX_RECORDED_BODY),
            ),
            (
                "maxConnections",
                config.max_connections != old.max_connections,
            ),
        ];
        let changed = restart_only
            .iter()
            .find(|(_, changed)| *changed)
            .map(|(field, _)| *field);
        // The same key files, rewritten: what they hold now.
        let rewritten = || -> Result<bool, GatewayError> {
            Ok(!config.signing_keys.is_empty() && !same_keys(&load_keys(&config)?, &shared.keys))
        };
        let changed = match changed {
            Some(field) => Some(field),
            None if rewritten()? => Some("signingKeys (the key files' contents)"),
            None => None,
        };
        if let Some(field) = changed {
            return Err(GatewayError::Mode(format!(
                "`{field}` changes only with a restart; the running configuration stays"
            )));
        }
        // Rebuilt when their settings changed or a file they read did (a CA bundle rewritten
        // in place): a front proxy's certificate must be checked against the CA of the moment,
        // an issuer reached through the bundle of the moment. Left alone otherwise, so the
        // issuers' cached keys survive a reload.
        let authenticator_files = authenticators::files_read(&config);
        let files_changed = *shared
            .authenticator_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            != authenticator_files;
        let authenticators = (files_changed
            || config.oidc_issuers != old.oidc_issuers
            || config.agent != old.agent
            || config.front_proxy != old.front_proxy)
            .then(|| authenticators::from_config(&config))
            .transpose()?;
        // The self-signed pair is made once, at start (or when a reload drops `tls`).
        let serving_cert = if old.tls.is_none() && config.tls.is_none() {
            tls::existing_serving_cert(None, &config.state_dir)
        } else {
            tls::ensure_serving_cert(
                config.tls.as_ref(),
                &config.state_dir,
                &config.serving_names(),
            )?
        };
        let server_tls = server_tls(&config, &serving_cert)?;
        // Upstreams whose settings and files are unchanged keep their pooled connections.
        let runtime = build_runtime(
            config,
            state,
            Arc::clone(current.credentials.verifier()),
            Some(&current.upstreams),
        )?;
        Ok(Reloaded {
            runtime,
            authenticators: authenticators.map(|a| (a, authenticator_files)),
            server_tls,
        })
    }
}

/// Whether two key sets hold the same keys (by key id), the same one active.
fn same_keys(a: &KeySet, b: &KeySet) -> bool {
    let kids = |set: &KeySet| {
        set.verifying_keys()
            .iter()
            .map(|k| k.kid().to_owned())
            .collect::<Vec<_>>()
    };
    a.active().kid() == b.active().kid() && kids(a) == kids(b)
}

fn load_keys(config: &Config) -> Result<KeySet, GatewayError> {
    let keys_err = |e: String| GatewayError::Keys(e);
    if let Some((active, older)) = config.signing_keys.split_first() {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| keys_err(format!("{}: {e}", p.display())))
                .and_then(|pem| {
                    SigningKey::from_pem(&pem)
                        .map_err(|e| keys_err(format!("{}: {e}", p.display())))
                })
        };
        let mut set = KeySet::new(read(active)?);
        for path in older {
            set = set
                .with_verify_only(read(path)?.verifying_key().clone())
                .map_err(|e| keys_err(e.to_string()))?;
        }
        return Ok(set);
    }
    let path = config.state_dir.join("signing-key.pem");
    if path.exists() {
        let pem = std::fs::read(&path).map_err(|e| keys_err(format!("{}: {e}", path.display())))?;
        let key =
            SigningKey::from_pem(&pem).map_err(|e| keys_err(format!("{}: {e}", path.display())))?;
        return Ok(KeySet::new(key));
    }
    let key = SigningKey::generate(kubegate_tokens::Algorithm::Es256)
        .map_err(|e| keys_err(e.to_string()))?;
    let pem = key.to_pkcs8_pem().map_err(|e| keys_err(e.to_string()))?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| keys_err(format!("{}: {e}", config.state_dir.display())))?;
    tls::write_private(&path, pem.expose().as_bytes())
        .map_err(|e| keys_err(format!("{}: {e}", path.display())))?;
    Ok(KeySet::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload compares the signing keys the files hold now with those in use: a key file
    /// rewritten in place (a rotation) is a change, the same file read again is not.
    #[test]
    fn rewritten_key_files_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("kubegate-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("signing.pem");
        let write_new_key = || {
            let pair = rcgen::KeyPair::generate().unwrap();
            std::fs::write(&file, pair.serialize_pem()).unwrap();
        };
        write_new_key();
        let config = Config::parse(
            &format!(
                "listen: 127.0.0.1:0\nstateDir: {}\nsigningKeys: [{}]\n",
                dir.display(),
                file.display()
            ),
            std::path::Path::new("c.yaml"),
        )
        .unwrap();
        let running = load_keys(&config).unwrap();
        assert!(same_keys(&load_keys(&config).unwrap(), &running));
        write_new_key();
        assert!(!same_keys(&load_keys(&config).unwrap(), &running));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
