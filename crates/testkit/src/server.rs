//! The server: accept loop, TLS, and the request pipeline (authentication → impersonation →
//! authorization → record → faults → handler), in kube-apiserver's filter order.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::Error;
use crate::authn::Authenticator;
use crate::authz::{Authorizer, AuthorizerChain};
use crate::certs::{CertifiedKey, TestCa};
use crate::conn::{ConnControl, ResettableStream};
use crate::faults::Faults;
use crate::identity::{SYSTEM_MASTERS, UserInfo};
use crate::kubeconfig::{Credential, write_kubeconfig};
use crate::rbac::{Rbac, RbacAuthorizer};
use crate::recorder::{RecordedRequest, Recorder};
use crate::resources::{self, NAMESPACES, RESOURCES};
use crate::store::Store;

/// The path of the raw upgrade echo endpoint.
pub const UPGRADE_ECHO_PATH: &str = "/testkit/upgrade-echo";

/// How to start a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct TestApiServerConfig {
    /// Authorizes everyone not in `system:masters` (the admin is). Required: there is no
    /// allow-all default.
    pub authorizer: Arc<dyn Authorizer>,
    /// Accept unauthenticated requests as `system:anonymous` (default: 401).
    pub anonymous: bool,
    /// Events kept for watches resuming from a resourceVersion (older → 410 Expired).
    pub watch_history: usize,
    /// Namespaces created at start.
    pub namespaces: Vec<String>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (default 1000, as
    /// kube-apiserver's `--http2-max-streams-per-connection`). Raise it for benches that hold
    /// more watches than that on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

impl TestApiServerConfig {
    /// RBAC (kube-apiserver's bootstrap discovery roles plus `rbac`) via `kubegate-authz`.
    /// To change RBAC while the server runs, build an `Arc<RbacAuthorizer>` yourself, pass it
    /// to [`Self::new`] and call [`RbacAuthorizer::set`].
    pub fn with_rbac(rbac: &Rbac) -> Result<Self, Error> {
        let mut all = Rbac::bootstrap();
        all.roles.extend(rbac.roles.iter().cloned());
        all.cluster_roles.extend(rbac.cluster_roles.iter().cloned());
        all.role_bindings.extend(rbac.role_bindings.iter().cloned());
        all.cluster_role_bindings
            .extend(rbac.cluster_role_bindings.iter().cloned());
        Ok(Self::new(RbacAuthorizer::new(&all)?))
    }

    /// A config with this authorizer, namespaces `default`, `kube-system`, `kube-public`.
    pub fn new(authorizer: impl Authorizer) -> Self {
        Self {
            authorizer: Arc::new(authorizer),
            anonymous: false,
            watch_history: 100_000,
            namespaces: vec!["default".into(), "kube-system".into(), "kube-public".into()],
            http2_max_concurrent_streams: 1000,
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) authn: Authenticator,
    pub(crate) authz: AuthorizerChain,
    pub(crate) recorder: Recorder,
    pub(crate) faults: Faults,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) host: String,
    /// Bytes of list bodies serialized so far (see [`TestApiServer::list_bytes_produced`]).
    pub(crate) list_bytes: Arc<AtomicU64>,
}

/// A running fake kube-apiserver. Dropping it stops the server, ends open connections and
/// removes its temporary directory.
pub struct TestApiServer {
    shared: Arc<Shared>,
    ca: TestCa,
    addr: SocketAddr,
    url: String,
    admin_token: String,
    admin: UserInfo,
    dir: PathBuf,
    kubeconfig: PathBuf,
    shutdown: watch::Sender<bool>,
    token_seq: AtomicU64,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token stays out of Debug output.
        f.debug_struct("TestApiServer")
            .field("url", &self.url)
            .field("admin", &self.admin)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

fn random_hex() -> String {
    // Throwaway tokens only need to be unguessable across concurrently running tests; the key
    // pair generator is a CSPRNG, so a digest of a fresh public key serves.
    let key = rcgen::KeyPair::generate()
        .map(|k| k.public_key_raw().to_vec())
        .unwrap_or_default();
    key.iter()
        .skip(1)
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TestApiServer {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start(config: TestApiServerConfig) -> Result<Self, Error> {
        // Harmless if another provider is already installed: configs name theirs explicitly.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = TestCa::generate()?;
        let serving = ca.serving_cert()?;
        let tls = crate::tls::server_config(&ca, &serving)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let authn = Authenticator::new(config.anonymous);
        let shared = Arc::new(Shared {
            store: Store::new(config.watch_history),
            authn,
            authz: AuthorizerChain {
                inner: config.authorizer.clone(),
            },
            recorder: Recorder::default(),
            faults: Faults::default(),
            shutdown: shutdown_rx.clone(),
            host: addr.to_string(),
            list_bytes: Arc::new(AtomicU64::new(0)),
        });
        for ns in &config.namespaces {
            let obj = serde_json::json!({"metadata": {"name": ns}});
            shared
                .store
                .create(NAMESPACES, "", obj, false)
                .map_err(Error::from)?;
        }
        let admin = UserInfo::new("kubegate-testkit-admin").with_group(SYSTEM_MASTERS);
        let admin_token = random_hex();
        shared.authn.add_token(admin_token.clone(), admin.clone());
        let dir = std::env::temp_dir().join(format!(
            "kubegate-testkit-{}-{}-{}",
            std::process::id(),
            DIR_SEQ.fetch_add(1, Ordering::Relaxed),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let url = format!("https://{addr}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &url,
            ca.pem(),
            &Credential::Token(admin_token.clone()),
        )?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(config.http2_max_concurrent_streams);
        let acceptor = TlsAcceptor::from(tls);
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            builder,
            shared.clone(),
            shutdown_rx,
        ));
        Ok(Self {
            shared,
            ca,
            addr,
            url,
            admin_token,
            admin,
            dir,
            kubeconfig,
            shutdown: shutdown_tx,
            token_seq: AtomicU64::new(0),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &rustls_pki_types::CertificateDer<'static> {
        self.ca.der()
    }

    /// A bearer token for `kubegate-testkit-admin` (group `system:masters`: allowed
    /// everything, including impersonation).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The admin identity.
    pub fn admin_user(&self) -> &UserInfo {
        &self.admin
    }

    /// A kubeconfig for the admin token (context `testkit`, namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's temporary directory (removed on drop), for kubeconfigs and caches.
    pub fn temp_dir(&self) -> &Path {
        &self.dir
    }

    /// Mints a bearer token for `user` (`system:authenticated` is added on use).
    pub fn mint_token(&self, user: UserInfo) -> String {
        let token = format!(
            "{}{}",
            random_hex(),
            self.token_seq.fetch_add(1, Ordering::Relaxed)
        );
        self.shared.authn.add_token(token.clone(), user);
        token
    }

    /// Mints a client certificate for `user` (CN = name, O = first group).
    pub fn mint_client_cert(&self, user: UserInfo) -> Result<CertifiedKey, Error> {
        let cert = self.ca.client_cert(&user)?;
        self.shared.authn.add_cert(cert.cert_der.to_vec(), user);
        Ok(cert)
    }

    /// Writes a kubeconfig for this server with `credential` into the temp dir.
    pub fn kubeconfig_for(&self, name: &str, credential: &Credential) -> Result<PathBuf, Error> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        write_kubeconfig(&path, &self.url, self.ca.pem(), credential)?;
        Ok(path)
    }

    /// A rustls client config trusting this server (HTTP/1.1 ALPN), optionally with a client
    /// certificate.
    pub fn client_tls_config(
        &self,
        client: Option<&CertifiedKey>,
    ) -> Result<rustls::ClientConfig, Error> {
        crate::tls::client_config(&self.ca, client)
    }

    /// The request log.
    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    /// Everything recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.requests()
    }

    /// The latest recorded request whose path ends with `suffix`: what a test asserts on
    /// after sending one request through a proxy.
    pub fn last_request_to(&self, suffix: &str) -> Option<RecordedRequest> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with(suffix))
    }

    /// The misbehaviour knobs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    fn resource(resource: &str) -> Result<usize, Error> {
        resources::lookup(resource).ok_or_else(|| Error::UnknownResource(resource.to_owned()))
    }

    /// Creates an object (`resource` as kubectl names it: `configmaps`, `cm`,
    /// `widgets.example.com`, ...; `namespace` ignored for cluster-scoped resources).
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> Result<Value, Error> {
        let res = Self::resource(resource)?;
        let ns = if RESOURCES[res].namespaced {
            namespace
        } else {
            ""
        };
        Ok(self
            .shared
            .store
            .create(res, ns, object, false)?
            .value
            .clone())
    }

    /// Reads an object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>, Error> {
        let res = Self::resource(resource)?;
        let ns = if RESOURCES[res].namespaced {
            namespace
        } else {
            ""
        };
        Ok(self
            .shared
            .store
            .get(res, ns, name)
            .map(|o| o.value.clone()))
    }

    /// Changes an object in place (one MODIFIED event).
    pub fn modify(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, Error> {
        let res = Self::resource(resource)?;
        let ns = if RESOURCES[res].namespaced {
            namespace
        } else {
            ""
        };
        let stored = self.shared.store.modify(res, ns, name, false, |v| {
            f(v);
            Ok(())
        })?;
        Ok(stored.value.clone())
    }

    /// Deletes an object.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<(), Error> {
        let res = Self::resource(resource)?;
        let ns = if RESOURCES[res].namespaced {
            namespace
        } else {
            ""
        };
        self.shared.store.delete(res, ns, name, false)?;
        Ok(())
    }

    /// Seeds `count` ConfigMaps `bulk-00000..` in `namespace`, each with `data_bytes` bytes
    /// of data, for large-list tests (e.g. 1024 × 64 KiB ≈ 64 MiB). Returns the total data size.
    pub fn seed_configmaps(
        &self,
        namespace: &str,
        count: usize,
        data_bytes: usize,
    ) -> Result<usize, Error> {
        let payload = "x".repeat(data_bytes);
        for i in 0..count {
            let obj = serde_json::json!({
                "metadata": {"name": format!("bulk-{i:05}"), "labels": {"testkit/bulk": "true"}},
                "data": {"payload": payload},
            });
            self.shared.store.create(1, namespace, obj, false)?;
        }
        Ok(count * data_bytes)
    }

    /// Emits `n` MODIFIED events for one object by bumping an annotation `n` times.
    pub fn generate_events(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        n: usize,
    ) -> Result<(), Error> {
        for i in 0..n {
            self.modify(resource, namespace, name, |v| {
                v["metadata"]["annotations"]["testkit/counter"] = Value::String(i.to_string());
            })?;
        }
        Ok(())
    }

    /// Sends a BOOKMARK (current resourceVersion) to every open watch that asked for
    /// bookmarks (`allowWatchBookmarks=true`).
    pub fn send_bookmark(&self) {
        self.shared.store.bookmark();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// Bytes of list bodies serialized so far, over every list served. A list body is made a
    /// chunk at a time as the connection takes it, so while a client holds back reading, this
    /// shows how far the list got: a proxy that streams lets it run only as far as the buffers
    /// on the way hold; one that collects the body lets it run to the end.
    pub fn list_bytes_produced(&self) -> u64 {
        self.shared.list_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let control = Arc::new(ConnControl::default());
            let stream = ResettableStream::new(tcp, control.clone());
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let peer_cert: Option<Arc<[u8]>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::from(c.as_ref()));
            let conn_control = control.clone();
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let peer_cert = peer_cert.clone();
                let control = conn_control.clone();
                async move {
                    Ok::<_, Infallible>(
                        crate::pipeline::handle(shared, peer, peer_cert, control, req).await,
                    )
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                () = control.killed.notified() => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}
