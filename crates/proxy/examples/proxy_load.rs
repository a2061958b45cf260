//! Load bench (run by hand, not in CI): the same fake kube-apiserver reached directly, through
//! the kubegate-proxy stack, through nginx and through `kubectl proxy`.
//!
//! ```sh
//! cargo build --profile dist -p kubegate-proxy --example proxy_load
//! taskset -c 0 target/dist/examples/proxy_load [seconds-per-run]
//! ```
//!
//! `dist` is the workspace's build for deployment (fat LTO); a `--release` build runs too and
//! measures what the quick start builds.
//!
//! The driver (load generator + the testkit upstream, a child process) stays on CPU 0; every
//! proxy under test is started with `taskset -c 1` (`PROXY_LOAD_PROXY_CPUS=0` puts them on
//! CPU 0 too). Each table also reports the proxy process's CPU time per request (user + system,
//! all threads, from `/proc/<pid>/stat`), which varies much less between runs than req/s on a
//! shared VM. A full run starts with the loopback round-trip floor. The kubegate stack here is
//! the proxy crate's own composition: routing → metrics → audit (JSON lines to a file, written
//! by `BackgroundJsonLines` as the gateway does) → authn (an access key, looked up by digest in a
//! kubegate-tokens `AccessKeyIndex`) → authz (the key's access-key scope, then kubegate-authz
//! RBAC, through `RbacAuthorizer`) → `ForwardService` (impersonating the user).
//!
//! Each case runs with HTTPS/1.1 clients, plain HTTP/1.1 clients, and HTTP/2 clients over TLS
//! (ALPN `h2`, 8 streams per connection: what kubectl and client-go speak to a server that
//! offers it; `kubectl proxy` serves plain HTTP only, so it is in the plain table alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kubegate_authz::{CompiledScope, Policy};
use kubegate_proxy::{
    AuditLayer, Authenticated, Authenticator, AuthnError, AuthnLayer, AuthzLayer,
    BackgroundJsonLines, ClientAddr, Credential, ForwardService, Identity, LongRunning,
    MetricsLayer, RbacAuthorizer, RequestMeta, Upstream, UpstreamPath,
};
use kubegate_routing::{RequestInfo, Router};
use kubegate_testkit::{Rbac, TestApiServer, TestApiServerConfig, UserInfo};
use kubegate_tokens::{AccessKeyDigest, AccessKeyIndex};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

// The allocator the reference gateway binary uses (examples/gateway.rs): mimalloc built with
// its `override` feature as the process's `malloc`, under Rust's default `System` allocator.

const GATEWAY_TOKEN: &str = "bench-user-kubegate-token";
/// The reference gateway's row.
const REFERENCE: &str = "kubegate reference gateway (examples/gateway)";
/// nginx logging every request as Debian's nginx.conf has it (`PROXY_LOAD_NGINX_ACCESS_LOG=1`).
const NGINX_ACCESS_LOG: &str = "nginx, access log on (Debian's default: a write per request)";
/// The same log buffered in 64 KiB.
const NGINX_ACCESS_LOG_BUFFERED: &str = "nginx, access log buffered (buffer=64k)";

fn main() {
    // Keeps mimalloc's object file, and with it its `malloc`, in the link (examples/gateway.rs).
    let _ = mimalloc::MiMalloc.version();
    let args: Vec<String> = std::env::args().collect();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    match args.get(1).map(String::as_str) {
        Some("upstream") => rt().block_on(upstream(PathBuf::from(&args[2]))),
        // The runtime the reference gateway picks for the CPUs it is given (one, here:
        // current-thread), unless `PROXY_LOAD_GATEWAY_WORKERS` says how many workers.
        Some("gateway") => {
            // The subscriber the reference gateway installs (examples/gateway.rs). Without one,
            // `tracing`'s `log` feature (which kube-client turns on) sends every span of h2's
            // to the `log` fallback: ≈ 4 % of an h2 request's instructions, which the gateway
            // never spends.
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let workers = std::env::var("PROXY_LOAD_GATEWAY_WORKERS")
                .ok()
                .and_then(|w| w.parse().ok());
            kubegate_proxy::runtime::build(workers)
                .unwrap()
                .block_on(gateway(PathBuf::from(&args[2]), &args[3]));
        }
        Some("echo") => echo(&args[2]),
        other => {
            let secs = other.and_then(|s| s.parse().ok()).unwrap_or(5);
            rt().block_on(drive(Duration::from_secs(secs)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// upstream role: a testkit apiserver; writes its coordinates to `dir/upstream.json`.

async fn upstream(dir: PathBuf) {
    let rbac = Rbac::default()
        .with_objects(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "impersonator"},
                   "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
                             {"apiGroups": ["authentication.k8s.io"], "resources": ["uids"], "verbs": ["impersonate"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "gateway"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "kubegate-gateway"}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "reader"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "bench-reads"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bench"}]}),
        ])
        .unwrap();
    let mut config = TestApiServerConfig::with_rbac(&rbac).unwrap();
    config.http2_max_concurrent_streams = 20_000;
    let api = TestApiServer::start(config).await.unwrap();
    api.recorder().set_enabled(false);
    api.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "small"}, "data": {"d": "x".repeat(900)}}),
    )
    .unwrap();
    api.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "big"}, "data": {"d": "x".repeat(1 << 20)}}),
    )
    .unwrap();
    api.create("namespaces", "", json!({"metadata": {"name": "bulk"}}))
        .unwrap();
    api.seed_configmaps("bulk", 256, 1 << 20).unwrap();
    let info = json!({
        "url": api.url(),
        "ca_pem": api.ca_pem(),
        "gateway_token": api.mint_token(UserInfo::new("kubegate-gateway")),
        "bench_token": api.mint_token(UserInfo::new("bench")),
    });
    publish(
        &dir.join("upstream.json"),
        &serde_json::to_vec(&info).unwrap(),
    );
    std::future::pending::<()>().await;
}

// ---------------------------------------------------------------------------------------------
// gateway role: the kubegate-proxy stack on a plain and a TLS port.

/// Access keys as the gateway checks them (kubegate-tokens: SHA-256 digest of the presented
/// bearer looked up in an index, constant-time compare), each with its owner and its compiled
/// access-key scope.
struct AccessKeys(AccessKeyIndex<(Identity, Arc<CompiledScope>)>);
impl AccessKeys {
    fn bench() -> Self {
        let mut index = AccessKeyIndex::new();
        // Restricted to the bench cluster, as a `loft create accesskey --cluster` key would be.
        let scope = CompiledScope::from_json(br#"{"clusters":[{"cluster":"bench"}]}"#).unwrap();
        index.insert(
            AccessKeyDigest::of(GATEWAY_TOKEN),
            (
                Identity::authenticated("bench", "", vec![], Default::default()),
                Arc::new(scope),
            ),
        );
        AccessKeys(index)
    }
}
impl Authenticator for AccessKeys {
    type Scope = Arc<CompiledScope>;
    type Future = std::future::Ready<Result<Authenticated<Arc<CompiledScope>>, AuthnError>>;
    fn authenticate(&self, req: &Parts) -> Self::Future {
        std::future::ready(self.check(req))
    }
}
impl AccessKeys {
    fn check(&self, req: &Parts) -> Result<Authenticated<Arc<CompiledScope>>, AuthnError> {
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthnError::Unauthorized)?;
        let (identity, scope) = self.0.lookup(bearer).ok_or(AuthnError::Unauthorized)?;
        Ok(Authenticated {
            identity: identity.clone(),
            scope: Some(Arc::clone(scope)),
        })
    }
}

/// Gateway RBAC for [`RbacAuthorizer`] (the access key's scope first, then this policy, as
/// the gateway decides): bench may read configmaps.
fn gateway_policy() -> Policy {
    let role = ClusterRole {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("bench-reads".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "bench".into(),
            ..Default::default()
        }]),
    };
    Policy::compile(&[], &[role], &[], &[binding]).unwrap()
}

/// Routes `req` as the gateway does and records the result for the layers: `UpstreamPath`,
/// `LongRunning` and, `with_meta`, `RequestMeta` (the audit and metrics layers' input).
/// Whether the request was routable.
fn route_request(router: &Router, req: &mut Request<Incoming>, with_meta: bool) -> bool {
    let Ok(route) = router.route(req.uri().path(), req.uri().query()) else {
        return false;
    };
    let Ok(info) = RequestInfo::parse(req.method().as_str(), &route.rest, route.query) else {
        return false;
    };
    let Ok(up) = UpstreamPath::from_route(route.raw_rest, route.query) else {
        return false;
    };
    let meta = with_meta.then(|| RequestMeta::new(&route.target, &info));
    let lr = LongRunning(info.is_long_running());
    let ext = req.extensions_mut();
    ext.insert(up);
    ext.insert(lr);
    if let Some(meta) = meta {
        ext.insert(meta);
    }
    true
}

/// `PROXY_LOAD_H2_FOR_EVERY_REQUEST=1`: the gateway offering h2 sends short requests over h2
/// too, instead of over HTTP/1.1 connections as by default (measures h2's own cost).
fn h2_for_every_request() -> bool {
    std::env::var("PROXY_LOAD_H2_FOR_EVERY_REQUEST").is_ok_and(|v| v == "1")
}

/// The name of the gateway offering the upstream h2 in the tables.
fn h2_gateway_name() -> &'static str {
    if h2_for_every_request() {
        "kubegate (h2 for every request)"
    } else {
        "kubegate (default: h2 offered)"
    }
}

/// `proto` is `h2` or `h1` (what the gateway offers the upstream in ALPN), or `h1-bare`.
async fn gateway(dir: PathBuf, proto: &str) {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("upstream.json")).unwrap()).unwrap();
    let upstream = Upstream::builder("bench", info["url"].as_str().unwrap())
        .ca_bundle_pem(info["ca_pem"].as_str().unwrap())
        .credential(Credential::BearerToken(
            info["gateway_token"].as_str().unwrap().into(),
        ))
        .http2(proto == "h2")
        .http1_connections_for_short_requests(if h2_for_every_request() {
            0
        } else {
            kubegate_proxy::DEFAULT_HTTP1_CONNECTIONS_FOR_SHORT_REQUESTS
        })
        .build()
        .unwrap();
    let mut registry = Registry::default();
    let router = Arc::new(Router::central());
    // `h1-bare`: routing and `ForwardService` alone (a fixed `Impersonate-User: bench`, as
    // nginx sends), no metrics, audit, authentication or authorization: what the hyper server,
    // the hyper-util client and rustls cost before any layer does its work.
    if proto == "h1-bare" {
        let bench = Identity::authenticated("bench", "", vec![], Default::default());
        let bare = tower::ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                if route_request(&router, &mut req, false) {
                    req.extensions_mut().insert(bench.clone());
                }
                req
            })
            .service(ForwardService::new(upstream));
        return serve_gateway(&dir, proto, bare).await;
    }
    let audit = std::io::BufWriter::new(
        std::fs::File::create(dir.join(format!("audit-{proto}.log"))).unwrap(),
    );
    let stack = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            route_request(&router, &mut req, true);
            req
        })
        .layer(MetricsLayer::new(&mut registry))
        // The sink the gateway uses for its audit file: JSON lines from a writer thread.
        .layer(AuditLayer::new(BackgroundJsonLines::spawn(audit).unwrap()))
        .layer(AuthnLayer::new(AccessKeys::bench()))
        .layer(AuthzLayer::new(RbacAuthorizer::new(
            Router::central(),
            gateway_policy(),
        )))
        .service(ForwardService::new(upstream));
    serve_gateway(&dir, proto, stack).await;
}

/// Serves `stack` on a plain and a TLS port and publishes them in `dir/gateway-<proto>.json`.
async fn serve_gateway<S, B>(dir: &Path, proto: &str, stack: S)
where
    S: tower::Service<Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("front.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("front.key")).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ports = json!({"plain": plain.local_addr().unwrap().port(), "tls": secure.local_addr().unwrap().port()});
    publish(
        &dir.join(format!("gateway-{proto}.json")),
        ports.to_string().as_bytes(),
    );

    let serve = |listener: TcpListener, acceptor: Option<tokio_rustls::TlsAcceptor>| {
        let stack = stack.clone();
        async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let stack = stack.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        kubegate_proxy::ext::make_room(req.extensions_mut());
                        req.extensions_mut().insert(ClientAddr(peer));
                        tower::Service::call(&mut stack.clone(), req)
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // Idle watches hold streams open; hyper's default of 200 would cap them.
                    builder.http2().max_concurrent_streams(20_000);
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                });
            }
        }
    };
    tokio::join!(serve(plain, None), serve(secure, Some(acceptor)));
}

// ---------------------------------------------------------------------------------------------
// driver

#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    tls: bool,
    prefix: String,
    token: String,
    /// The proxy's process, whose CPU time per request is reported (`None`: direct).
    pid: Option<u32>,
}

struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `bytes` to `path` so that a reader polling with [`wait_file`] sees all or nothing.
fn publish(path: &Path, bytes: &[u8]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_file(p: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(b) = std::fs::read(p) {
            return b;
        }
        assert!(Instant::now() < deadline, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (user + system, all threads) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime is
    // the 12th, stime the 13th.
    let after = s.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// Clock ticks per second (`getconf CLK_TCK`, asked once), 100 on Linux unless told otherwise.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn drive(secs: Duration) {
    let dir = std::env::temp_dir().join(format!("kubegate-proxy-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut procs = Procs(Vec::new());
    // `PROXY_LOAD_PROXY_CPUS` moves the proxies under test (default: CPU 1, the driver's
    // neighbour); `0` puts them on the driver's own CPU, which takes the cost of waking another
    // CPU out of the latency figures.
    let proxy_cpus = std::env::var("PROXY_LOAD_PROXY_CPUS").unwrap_or_else(|_| "1".into());

    procs.0.push(
        Command::new(&exe)
            .arg("upstream")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let info: serde_json::Value =
        serde_json::from_slice(&wait_file(&dir.join("upstream.json"))).unwrap();
    let upstream_url = info["url"].as_str().unwrap().to_owned();
    let upstream_addr: SocketAddr = upstream_url.trim_start_matches("https://").parse().unwrap();
    let ca_pem = info["ca_pem"].as_str().unwrap().to_owned();
    let bench_token = info["bench_token"].as_str().unwrap().to_owned();
    let gateway_token_upstream = info["gateway_token"].as_str().unwrap().to_owned();

    // A serving certificate for the proxies' TLS listeners.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("front.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("front.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), &ca_pem).unwrap();

    let mut gw_ports = Vec::new();
    let mut gw_pids = Vec::new();
    for proto in ["h2", "h1", "h1-bare"] {
        // `PROXY_LOAD_GATEWAY_WRAP` runs the gateways under a command, e.g.
        // `valgrind --tool=callgrind` to count their instructions per request.
        let mut gw = Command::new("taskset");
        gw.args(["-c", &proxy_cpus]);
        if let Ok(wrap) = std::env::var("PROXY_LOAD_GATEWAY_WRAP") {
            gw.args(wrap.split_whitespace());
        }
        let gw = gw
            .arg(&exe)
            .arg("gateway")
            .arg(&dir)
            .arg(proto)
            .spawn()
            .unwrap();
        gw_pids.push(gw.id());
        procs.0.push(gw);
        let ports: serde_json::Value =
            serde_json::from_slice(&wait_file(&dir.join(format!("gateway-{proto}.json")))).unwrap();
        gw_ports.push((
            ports["plain"].as_u64().unwrap() as u16,
            ports["tls"].as_u64().unwrap() as u16,
        ));
    }
    let gw_pid = gw_pids[0];
    let (gw_plain, gw_tls) = gw_ports[0];
    let (gw1_plain, gw1_tls) = gw_ports[1];
    let (bare_plain, bare_tls) = gw_ports[2];

    // nginx: same upstream, keepalive pool, the gateway's credential + impersonation.
    let nginx_config = |name: &str, plain: u16, tls: u16, access_log: &str| {
        format!(
            "daemon off; master_process off; worker_processes 1; error_log {d}/{name}-error.log; pid {d}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
  access_log {access_log};
  keepalive_requests 100000000;
  client_body_temp_path {d}/{name}-body; proxy_temp_path {d}/{name}-proxy;
  fastcgi_temp_path {d}/{name}-fcgi; uwsgi_temp_path {d}/{name}-uwsgi; scgi_temp_path {d}/{name}-scgi;
  upstream kube {{ server {up}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{plain};
    listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {d}/front.pem; ssl_certificate_key {d}/front.key;
    location = /nginx_status {{ stub_status; }}
    location /kubernetes/cluster/bench/ {{
      proxy_pass https://kube/;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer {tok}\";
      proxy_set_header Impersonate-User bench;
      proxy_ssl_trusted_certificate {d}/upstream-ca.pem;
      proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_session_reuse on;
      proxy_buffering off;
    }}
  }}
}}
",
            d = dir.display(),
            up = upstream_addr,
            tok = gateway_token_upstream,
        )
    };
    let have_nginx = Path::new("/usr/sbin/nginx").exists();
    let start_nginx = |name: &str, access_log: &str, wrap: Option<String>| {
        let (plain, tls) = (free_port(), free_port());
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, nginx_config(name, plain, tls, access_log)).unwrap();
        std::fs::write(dir.join(format!("{name}.port")), plain.to_string()).unwrap();
        let mut nginx = Command::new("taskset");
        nginx.args(["-c", &proxy_cpus]);
        if let Some(wrap) = wrap {
            nginx.args(wrap.split_whitespace());
        }
        let child = nginx
            .args(["/usr/sbin/nginx", "-c"])
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (plain, tls, child)
    };
    // nginx as the bench has always compared with: no access log. `PROXY_LOAD_NGINX_WRAP` runs
    // it under a command, like `PROXY_LOAD_GATEWAY_WRAP`; `/nginx_status` (stub_status) counts
    // its requests, and `nginx.port` tells the instruction-count script where.
    let (nginx_plain, nginx_tls, nginx_pid) = if have_nginx {
        let (plain, tls, child) =
            start_nginx("nginx", "off", std::env::var("PROXY_LOAD_NGINX_WRAP").ok());
        let pid = child.id();
        procs.0.push(child);
        (plain, tls, Some(pid))
    } else {
        (0, 0, None)
    };
    // `PROXY_LOAD_NGINX_ACCESS_LOG=1`: nginx twice more, each logging every request as kubegate
    // audits every request: with the access log Debian's nginx.conf turns on (the `combined`
    // format, one write(2) per request), and with that log buffered in 64 KiB (nginx's
    // `buffer=`, the group commit kubegate's audit writer does). Rows of their own: the targets
    // are judged against nginx without a log.
    let nginx_logging: Vec<(&'static str, u16, u16, u32)> = if have_nginx
        && std::env::var("PROXY_LOAD_NGINX_ACCESS_LOG").is_ok_and(|v| v == "1")
    {
        [
            (NGINX_ACCESS_LOG, "nginx-access-log", "access.log"),
            (
                NGINX_ACCESS_LOG_BUFFERED,
                "nginx-access-log-buffered",
                "access-buffered.log combined buffer=64k flush=5s",
            ),
        ]
        .into_iter()
        .map(|(row, name, log)| {
            let (plain, tls, child) = start_nginx(name, &format!("{}/{log}", dir.display()), None);
            let pid = child.id();
            procs.0.push(child);
            (row, plain, tls, pid)
        })
        .collect()
    } else {
        Vec::new()
    };

    // `PROXY_LOAD_REFERENCE_GATEWAY=<binary>`: the reference gateway (`examples/gateway`, built
    // apart, e.g. `cargo build --profile dist --example gateway`) as one more HTTPS path, on a
    // config that gives it the same work as the stack above: the bench's access key (scoped to
    // the cluster), gateway RBAC, an audit file, the default upstream settings.
    let reference_bin =
        std::env::var_os("PROXY_LOAD_REFERENCE_GATEWAY").filter(|bin| !bin.is_empty());
    if reference_bin.is_some() {
        std::fs::write(
            dir.join("reference-upstream-token"),
            &gateway_token_upstream,
        )
        .unwrap();
    }
    let start_reference = |name: &str, audit: bool| {
        let bin = reference_bin.as_ref()?;
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            reference_gateway_config(&dir, port, &upstream_url, audit.then_some(name)),
        )
        .unwrap();
        let mut gw = Command::new("taskset");
        gw.args(["-c", &proxy_cpus]);
        if let Ok(wrap) = std::env::var("PROXY_LOAD_GATEWAY_WRAP") {
            gw.args(wrap.split_whitespace());
        }
        // Its start-up lines and any error, for when its port never opens.
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let gw = gw
            .arg(bin)
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Some((port, gw))
    };
    let reference = start_reference("reference", true).map(|(port, gw)| {
        let pid = gw.id();
        procs.0.push(gw);
        (port, pid)
    });
    // `PROXY_LOAD_REFERENCE_AUDIT_OFF=1` adds the reference gateway once more with its audit
    // log off (`audit.sink: none`), everything else the same: a diagnostic row that shows what
    // the audit log costs, in the same run. It is not a configuration the targets are judged on.
    let reference_audit_off = std::env::var("PROXY_LOAD_REFERENCE_AUDIT_OFF")
        .is_ok_and(|v| v == "1")
        .then(|| start_reference("reference-audit-off", false))
        .flatten()
        .map(|(port, gw)| {
            let pid = gw.id();
            procs.0.push(gw);
            (port, pid)
        });

    // kubectl proxy with the bench user's own token (kubectl proxy forwards its own credential).
    let kubeconfig = dir.join("bench.kubeconfig");
    kubegate_testkit::write_kubeconfig(
        &kubeconfig,
        &upstream_url,
        &ca_pem,
        &kubegate_testkit::Credential::Token(bench_token.clone()),
    )
    .unwrap();
    let kubectl_port = free_port();
    procs.0.push(
        Command::new("taskset")
            .args(["-c", &proxy_cpus, "kubectl", "proxy", "--port"])
            .arg(kubectl_port.to_string())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let kubectl_pid = procs.0.last().map(Child::id);
    for p in [kubectl_port]
        .into_iter()
        .chain(nginx_pid.map(|_| nginx_plain))
        .chain(nginx_logging.iter().map(|&(_, plain, _, _)| plain))
        .chain(reference.map(|(port, _)| port))
        .chain(reference_audit_off.map(|(port, _)| port))
    {
        wait_port(p).await;
    }

    let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let mut tls_targets = vec![
        Target {
            name: "direct",
            addr: upstream_addr,
            tls: true,
            prefix: String::new(),
            token: bench_token.clone(),
            pid: None,
        },
        Target {
            name: h2_gateway_name(),
            addr: loopback(gw_tls),
            tls: true,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[0]),
        },
        Target {
            name: "kubegate (h1 upstream)",
            addr: loopback(gw1_tls),
            tls: true,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[1]),
        },
        Target {
            name: "kubegate, forwarding only (h1 upstream)",
            addr: loopback(bare_tls),
            tls: true,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[2]),
        },
        Target {
            name: "nginx",
            addr: loopback(nginx_tls),
            tls: true,
            prefix: "/kubernetes/cluster/bench".into(),
            token: String::new(),
            pid: nginx_pid,
        },
    ];
    if let Some((port, pid)) = reference {
        tls_targets.insert(
            3,
            Target {
                name: REFERENCE,
                addr: loopback(port),
                tls: true,
                prefix: "/kubernetes/cluster/bench".into(),
                token: GATEWAY_TOKEN.into(),
                pid: Some(pid),
            },
        );
    }
    let logging_nginx = |plain_http: bool| {
        nginx_logging
            .iter()
            .map(move |&(name, plain, tls, pid)| Target {
                name,
                addr: loopback(if plain_http { plain } else { tls }),
                tls: !plain_http,
                prefix: "/kubernetes/cluster/bench".into(),
                token: String::new(),
                pid: Some(pid),
            })
    };
    tls_targets.extend(logging_nginx(false));
    if let Some((port, pid)) = reference_audit_off {
        // Before the forwarding-only gateway and nginx's rows.
        let at = tls_targets.len() - 2 - nginx_logging.len();
        tls_targets.insert(
            at,
            Target {
                name: "kubegate reference gateway, audit log off (diagnostic)",
                addr: loopback(port),
                tls: true,
                prefix: "/kubernetes/cluster/bench".into(),
                token: GATEWAY_TOKEN.into(),
                pid: Some(pid),
            },
        );
    }
    let mut plain_targets = vec![
        Target {
            name: h2_gateway_name(),
            addr: loopback(gw_plain),
            tls: false,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[0]),
        },
        Target {
            name: "kubegate (h1 upstream)",
            addr: loopback(gw1_plain),
            tls: false,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[1]),
        },
        Target {
            name: "kubegate, forwarding only (h1 upstream)",
            addr: loopback(bare_plain),
            tls: false,
            prefix: "/kubernetes/cluster/bench".into(),
            token: GATEWAY_TOKEN.into(),
            pid: Some(gw_pids[2]),
        },
        Target {
            name: "nginx",
            addr: loopback(nginx_plain),
            tls: false,
            prefix: "/kubernetes/cluster/bench".into(),
            token: String::new(),
            pid: nginx_pid,
        },
        Target {
            name: "kubectl proxy",
            addr: loopback(kubectl_port),
            tls: false,
            prefix: String::new(),
            token: String::new(),
            pid: kubectl_pid,
        },
    ];
    // After nginx, before kubectl proxy.
    let at = plain_targets.len() - 1;
    plain_targets.splice(at..at, logging_nginx(true));
    let client_tls = {
        let mut roots = rustls::RootCertStore::empty();
        for pem in [ca_pem.as_str(), cert.pem().as_str()] {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };

    let mut out = String::new();
    // What one loopback round trip costs before any proxy does any work: the floor under the
    // one-connection latency figures, on the proxies' CPU and on the driver's own.
    if std::env::var("PROXY_LOAD_ONLY").is_err() {
        let _ = writeln_s(
            &mut out,
            "\nloopback round trip of 1 byte (blocking sockets, no proxy):",
        );
        for (cpus, what) in [
            (proxy_cpus.as_str(), "echo on the proxies' CPUs"),
            ("0", "echo on the driver's CPU"),
        ] {
            let (p50, p99) = round_trip(&exe, cpus);
            let _ = writeln_s(
                &mut out,
                &format!("- {what} ({cpus}): p50 {p50:.1} µs, p99 {p99:.1} µs"),
            );
        }
    }
    let small = "/api/v1/namespaces/default/configmaps/small";
    let big = "/api/v1/namespaces/default/configmaps/big";
    // kubectl and client-go speak HTTP/2 to a TLS server that offers it; HTTP/1.1 clients are
    // the other half of the world (curl, scripts, older tools, nginx-style health checks).
    let h2 = Protocol::Http2 {
        streams_per_connection: 8,
    };
    let client_tls_h2 = {
        let mut c = (*client_tls).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    for (label, targets, protocol, tls) in [
        (
            "HTTPS/1.1 client",
            tls_targets.as_slice(),
            Protocol::Http1,
            &client_tls,
        ),
        (
            "plain HTTP/1.1 client",
            plain_targets.as_slice(),
            Protocol::Http1,
            &client_tls,
        ),
        (
            "HTTP/2 client over TLS (ALPN h2)",
            tls_targets.as_slice(),
            h2,
            &client_tls_h2,
        ),
    ] {
        for (what, path, concurrency) in [
            ("small GET (1 KiB)", small, 64),
            ("small GET (1 KiB)", small, 1),
            ("1 MiB GET", big, 8),
        ] {
            let case = format!("{what}, {}", protocol.spread(concurrency));
            // `PROXY_LOAD_ONLY=<text>` runs only the cases whose title contains it (profiling).
            if let Ok(only) = std::env::var("PROXY_LOAD_ONLY")
                && !format!("{case}, {label}").contains(&only)
            {
                continue;
            }
            let _ = writeln_s(
                &mut out,
                &format!(
                    "\n{case}, {label}\n| path | req/s | p50 µs | p99 µs | req/s vs first | added p50 µs | proxy CPU µs/req |\n|---|---|---|---|---|---|---|"
                ),
            );
            // `PROXY_LOAD_ROUNDS=N` measures each target N times, the targets taking turns, so
            // that every path sees the same mix of the VM's fast and slow phases.
            let rounds: usize = std::env::var("PROXY_LOAD_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(1)
                .max(1);
            let present: Vec<&Target> = targets
                .iter()
                .filter(|t| t.name != "nginx" || nginx_pid.is_some())
                .collect();
            let mut samples: Vec<Vec<Sample>> = present.iter().map(|_| Vec::new()).collect();
            for _ in 0..rounds {
                for (t, s) in present.iter().zip(samples.iter_mut()) {
                    s.push(load(t, path, concurrency, secs, tls, protocol).await);
                }
            }
            let mut first: Option<(f64, u64)> = None;
            for (t, s) in present.into_iter().zip(samples) {
                let r = summarize(s, secs);
                let (base_rps, base_p50) = *first.get_or_insert((r.0, r.1));
                let _ = writeln_s(
                    &mut out,
                    &format!(
                        "| {} | {:.0} | {} | {} | {:.2} | {} | {} |",
                        t.name,
                        r.0,
                        r.1,
                        r.2,
                        r.0 / base_rps,
                        r.1 as i64 - base_p50 as i64,
                        r.4.map_or("—".to_owned(), |c| format!("{c:.1}"))
                    ),
                );
                println!(
                    "{case} {label} {}: {:.0} req/s p50 {} µs p99 {} µs ({} errors)",
                    t.name, r.0, r.1, r.2, r.3
                );
            }
        }
    }

    // The memory cases run too when `PROXY_LOAD_ONLY` names them ("256 MiB list", "idle
    // watches"), or when it is unset.
    let wanted =
        |title: &str| std::env::var("PROXY_LOAD_ONLY").map_or(true, |only| title.contains(&only));
    // 256 MiB list through kubegate: growth of the gateway's peak RSS.
    if wanted("256 MiB list") {
        let before = rss_kib(gw_pid, "VmHWM:");
        let t = &plain_targets[0];
        let (bytes, elapsed) = stream_list(t, "/api/v1/namespaces/bulk/configmaps").await;
        let after = rss_kib(gw_pid, "VmHWM:");
        let _ = writeln_s(
            &mut out,
            &format!(
                "\n256 MiB list through {} (plain HTTP/1.1 client): {} MiB in {:.2} s; gateway peak RSS {} MiB → {} MiB (growth {} MiB)",
                t.name,
                bytes >> 20,
                elapsed.as_secs_f64(),
                before / 1024,
                after / 1024,
                (after.saturating_sub(before)) / 1024
            ),
        );
    }

    // Idle watches over one HTTP/2 connection to the gateway.
    let n_watches = 10_000;
    if wanted("idle watches") {
        let before = rss_kib(gw_pid, "VmRSS:");
        let watches = hold_watches(&plain_targets[0], n_watches).await;
        let held = watches.len() as u32;
        let after = rss_kib(gw_pid, "VmRSS:");
        drop(watches);
        let _ = writeln_s(
            &mut out,
            &format!(
                "\n{held} idle watches through {} (one h2c client connection; watches take h2 streams upstream): gateway RSS {} MiB → {} MiB, {:.1} KiB per watch",
                plain_targets[0].name,
                before / 1024,
                after / 1024,
                (after.saturating_sub(before)) as f64 / f64::from(held.max(1))
            ),
        );
    }

    // The same through the reference gateway (the binary people deploy), which serves HTTPS
    // only: HTTP/2 over TLS, 100 streams per connection, the most a kube-apiserver (and the
    // reference gateway) allows on one. Its RSS counts each client connection's TLS and
    // HTTP/2 state too, shared by 100 watches.
    if wanted("idle watches")
        && let Some(t) = tls_targets.iter().find(|t| t.name == REFERENCE)
        && let Some(pid) = t.pid
    {
        let per_connection = 100;
        let before = rss_kib(pid, "VmRSS:");
        let (watches, connections) =
            hold_watches_tls(t, &client_tls_h2, n_watches, per_connection).await;
        let held = watches.len() as u32;
        let after = rss_kib(pid, "VmRSS:");
        drop(watches);
        drop(connections);
        let _ = writeln_s(
            &mut out,
            &format!(
                "\n{held} idle watches through {} ({} HTTP/2 client connections over TLS, {per_connection} streams each): gateway RSS {} MiB → {} MiB, {:.1} KiB per watch",
                t.name,
                n_watches.div_ceil(per_connection),
                before / 1024,
                after / 1024,
                (after.saturating_sub(before)) as f64 / f64::from(held.max(1))
            ),
        );
    }
    println!("{out}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// echo role: answers every byte on one TCP connection (the round-trip calibration).
fn echo(port_file: &str) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    publish(Path::new(port_file), port.to_string().as_bytes());
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// p50/p99 µs of 20,000 one-byte round trips to an echo process pinned to `cpus`.
fn round_trip(exe: &Path, cpus: &str) -> (f64, f64) {
    use std::io::{Read, Write};
    let port_file =
        std::env::temp_dir().join(format!("kubegate-echo-{}-{cpus}", std::process::id()));
    let _ = std::fs::remove_file(&port_file);
    let mut child = Command::new("taskset")
        .args(["-c", cpus])
        .arg(exe)
        .arg("echo")
        .arg(&port_file)
        .spawn()
        .unwrap();
    let port: u16 = String::from_utf8(wait_file(&port_file))
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = [0u8; 1];
    let mut lat: Vec<f64> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            conn.write_all(b"x").unwrap();
            conn.read_exact(&mut buf).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(conn);
    let _ = child.wait();
    let _ = std::fs::remove_file(&port_file);
    lat.sort_by(f64::total_cmp);
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

/// The reference gateway's config for the bench: HTTPS on `port` with the bench's serving
/// certificate, the testkit as cluster `bench` (default upstream settings: h2 offered, short
/// requests over HTTP/1.1), the bench's access key scoped to that cluster, read access to
/// configmaps there through gateway RBAC, and a Metadata-level audit file.
fn reference_gateway_config(
    dir: &Path,
    port: u16,
    upstream_url: &str,
    audit_log: Option<&str>,
) -> String {
    let d = dir.display();
    let digest = AccessKeyDigest::of(GATEWAY_TOKEN).to_hex();
    let audit = match audit_log {
        Some(name) => format!("{{sink: file, path: {d}/audit-{name}.log, level: Metadata}}"),
        None => "{sink: none}".to_owned(),
    };
    let state = format!("{}-state", audit_log.unwrap_or("reference-audit-off"));
    format!(
        r#"listen: 127.0.0.1:{port}
stateDir: {d}/{state}
tls: {{certFile: {d}/front.pem, keyFile: {d}/front.key}}
audit: {audit}
clusters:
  - name: bench
    upstream: {{server: "{upstream_url}", caFile: {d}/upstream-ca.pem, tokenFile: {d}/reference-upstream-token}}
users:
  - {{name: bench}}
accessKeys:
  - {{name: bench, user: bench, sha256: {digest}, scope: {{clusters: [{{cluster: bench}}]}}}}
rbac:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata: {{name: reader}}
    rules:
      - {{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}}
      - {{apiGroups: [management.loft.sh], resources: [clusters], resourceNames: [bench], verbs: [use]}}
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {{name: bench-reads}}
    roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}}
    subjects: [{{kind: User, name: bench, apiGroup: rbac.authorization.k8s.io}}]
"#
    )
}

fn writeln_s(out: &mut String, s: &str) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(out, "{s}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP version the load generator speaks to every target of one table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1: one connection per request in flight.
    Http1,
    /// HTTP/2 (ALPN `h2`), as kubectl and client-go speak it: this many streams in flight
    /// on each connection.
    Http2 { streams_per_connection: usize },
}

impl Protocol {
    /// How `concurrency` requests in flight are spread, for a case's title.
    fn spread(self, concurrency: usize) -> String {
        let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        match self {
            Protocol::Http1 => plural(concurrency, "connection"),
            Protocol::Http2 { .. } => format!(
                "{} on {}",
                plural(concurrency, "stream"),
                plural(self.connections(concurrency), "connection")
            ),
        }
    }

    fn connections(self, concurrency: usize) -> usize {
        match self {
            Protocol::Http1 => concurrency,
            Protocol::Http2 {
                streams_per_connection,
            } => concurrency.div_ceil(streams_per_connection),
        }
    }
}

/// One client connection, either version.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
    }
}

/// Opens a connection to `t` speaking `protocol` (HTTP/2 only over TLS, negotiated by ALPN:
/// `tls` must offer `h2`).
async fn connect(t: &Target, tls: &Arc<rustls::ClientConfig>, protocol: Protocol) -> Sender {
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if !t.tls {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        return Sender::Http1(send);
    }
    let s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    if protocol == Protocol::Http1 {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        return Sender::Http1(send);
    }
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "{} did not negotiate h2",
        t.name
    );
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    Sender::Http2(send)
}

/// A GET of `path` on `t`: origin-form with `Host` for HTTP/1.1, absolute (`:scheme` and
/// `:authority`) for HTTP/2.
fn request(t: &Target, path: &str, protocol: Protocol) -> Request<Empty<Bytes>> {
    let mut r = match protocol {
        Protocol::Http1 => Request::get(format!("{}{path}", t.prefix)).header("host", "127.0.0.1"),
        Protocol::Http2 { .. } => Request::get(format!(
            "https://127.0.0.1:{}{}{path}",
            t.addr.port(),
            t.prefix
        ))
        .version(http::Version::HTTP_2),
    };
    if !t.token.is_empty() {
        r = r.header("authorization", format!("Bearer {}", t.token));
    }
    r.body(Empty::new()).unwrap()
}

/// What one load run against one target measured.
struct Sample {
    /// Latencies (µs) of the requests in the measured window.
    latencies: Vec<u64>,
    errors: usize,
    /// Requests served, warm-up included (the CPU figure's divisor).
    served: usize,
    /// The proxy's CPU ticks over the run (warm-up included).
    cpu_ticks: Option<u64>,
}

/// Requests/s, p50 and p99 latency (µs), errors and proxy CPU µs per request over `samples`
/// (the rounds of one target), each measured for `secs`.
fn summarize(samples: Vec<Sample>, secs: Duration) -> (f64, u64, u64, usize, Option<f64>) {
    let measured = secs.as_secs_f64() * samples.len() as f64;
    let errors = samples.iter().map(|s| s.errors).sum();
    let served: usize = samples.iter().map(|s| s.served).sum();
    let ticks: Option<u64> = samples.iter().map(|s| s.cpu_ticks).sum();
    let cpu_us_per_request =
        ticks.map(|t| t as f64 / ticks_per_second() * 1e6 / served.max(1) as f64);
    let mut all: Vec<u64> = samples.into_iter().flat_map(|s| s.latencies).collect();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    (
        all.len() as f64 / measured,
        pct(0.50),
        pct(0.99),
        errors,
        cpu_us_per_request,
    )
}

/// `concurrency` requests in flight against `t`, spread over connections as `protocol` says,
/// each sent as soon as the one before it on its connection or stream finished, for `secs`
/// after a 1 s warm-up.
async fn load(
    t: &Target,
    path: &str,
    concurrency: usize,
    secs: Duration,
    tls: &Arc<rustls::ClientConfig>,
    protocol: Protocol,
) -> Sample {
    let ticks_before = t.pid.map(cpu_ticks);
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + secs;
    let connections = protocol.connections(concurrency);
    for c in 0..connections {
        // The streams (HTTP/2) or the one request at a time (HTTP/1.1) of connection `c`.
        let streams = concurrency / connections + usize::from(c < concurrency % connections);
        let senders: Vec<Sender> = match connect(t, tls, protocol).await {
            Sender::Http2(s) => (0..streams).map(|_| Sender::Http2(s.clone())).collect(),
            http1 => vec![http1],
        };
        for mut send in senders {
            let (target, tls) = (t.clone(), tls.clone());
            let (parts, _) = request(t, path, protocol).into_parts();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0usize;
                let mut done = 0usize;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let req = Request::from_parts(parts.clone(), Empty::new());
                    if send.ready().await.is_err() {
                        // The server closed the connection (e.g. a keep-alive request limit).
                        errors += 1;
                        send = connect(&target, &tls, protocol).await;
                        continue;
                    }
                    match send.send(req).await {
                        Ok(res) => {
                            let ok = res.status().is_success();
                            let _ = res.into_body().collect().await;
                            if !ok {
                                errors += 1;
                            }
                            done += 1;
                            if now >= start {
                                lat.push(now.elapsed().as_micros() as u64);
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            send = connect(&target, &tls, protocol).await;
                        }
                    }
                }
                (lat, errors, done)
            }));
        }
    }
    let mut sample = Sample {
        latencies: Vec::new(),
        errors: 0,
        served: 0,
        cpu_ticks: None,
    };
    for task in tasks {
        let (l, e, d) = task.await.unwrap();
        sample.latencies.extend(l);
        sample.errors += e;
        sample.served += d;
    }
    // A proxy that died reads as 0 ticks: saturate rather than wrap.
    sample.cpu_ticks = t
        .pid
        .zip(ticks_before)
        .map(|(pid, before)| cpu_ticks(pid).saturating_sub(before));
    sample
}

async fn stream_list(t: &Target, path: &str) -> (usize, Duration) {
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let mut send = connect(t, &tls, Protocol::Http1).await;
    let start = Instant::now();
    let res = send.send(request(t, path, Protocol::Http1)).await.unwrap();
    let mut body = res.into_body();
    let mut bytes = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            bytes += d.len();
        }
    }
    (bytes, start.elapsed())
}

/// Opens `n` watches multiplexed on one h2c connection and waits until each has its response
/// head; returns the held responses.
/// `n` idle watches on `t` over HTTP/2 connections over TLS, `per_connection` streams on each;
/// the connections are returned too, to be held as long as the watches.
async fn hold_watches_tls(
    t: &Target,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
    per_connection: usize,
) -> (Vec<http::Response<Incoming>>, Vec<Sender>) {
    let protocol = Protocol::Http2 {
        streams_per_connection: per_connection,
    };
    let mut connections = Vec::new();
    for _ in 0..n.div_ceil(per_connection) {
        connections.push(connect(t, tls, protocol).await);
    }
    let senders: Vec<_> = connections
        .iter()
        .map(|c| match c {
            Sender::Http2(send) => send.clone(),
            Sender::Http1(_) => panic!("{} did not speak HTTP/2", t.name),
        })
        .collect();
    let held = open_watches(t, n, protocol, |i| senders[i / per_connection].clone()).await;
    (held, connections)
}

/// `n` idle watches on `t` over one h2c connection.
async fn hold_watches(t: &Target, n: usize) -> Vec<http::Response<Incoming>> {
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Origin form with `Host`, as every watch has been sent since this case was written.
    open_watches(t, n, Protocol::Http1, |_| send.clone()).await
}

/// Starts `n` watches of distinct objects, watch `i` on `sender(i)`, and returns those that
/// were answered with a success, once the gateway has settled (buffers allocated for the
/// streams).
async fn open_watches(
    t: &Target,
    n: usize,
    form: Protocol,
    sender: impl Fn(usize) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
) -> Vec<http::Response<Incoming>> {
    let mut heads = Vec::with_capacity(n);
    for i in 0..n {
        let mut send = sender(i);
        let req = request(
            t,
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Didle-{i}"
            ),
            form,
        );
        heads.push(tokio::spawn(async move {
            send.ready().await.ok()?;
            let res = send.send_request(req).await.ok()?;
            res.status().is_success().then_some(res)
        }));
    }
    let mut held = Vec::new();
    for h in heads {
        if let Ok(Some(res)) = h.await {
            held.push(res);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    held
}
