//! `cli`: a small command-line client for a kubegate gateway, built on `kubegate-client`.
//!
//! ```text
//! cargo run --example cli -- login https://127.0.0.1:8443 --access-key "$KEY" --ca-file ca.pem
//! cargo run --example cli -- whoami
//! cargo run --example cli -- use cluster a            # writes context loft_a into ~/.kube/config
//! cargo run --example cli -- use space s1 --project p1
//! cargo run --example cli -- use vcluster pv1 --project p1
//! cargo run --example cli -- use vcluster vc1 --cluster a --namespace team   # legacy
//! cargo run --example cli -- use management
//! cargo run --example cli -- create token --ttl 3600
//! cargo run --example cli -- create accesskey --name ci --cluster a
//! ```
//!
//! Contexts call `cli token` as an exec credential plugin by default: it prints a
//! `client.authentication.k8s.io/v1` ExecCredential holding a short-lived gateway token, cached
//! for 30 minutes and reused up to its expiry while the gateway is unreachable. `--static-token`
//! embeds the access key instead. A `--direct-cluster-endpoint` context (a cluster, or a legacy
//! virtual cluster on it) asks for tokens narrowed to that cluster (`cli token --cluster
//! <name>`): the agent runs inside the cluster, where its admins can read what it is sent, and
//! such a token works nowhere else. With `--static-token` it holds the access key itself (said
//! so when written).
//!
//! Progress and errors go to stderr in plain words; results go to stdout. Exit codes:
//! 0 success, 1 any other failure, 2 bad usage, 3 not logged in, 4 credentials refused (401),
//! 5 forbidden (403), 6 gateway unreachable, 7 not found (404).
// A CLI talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use kubegate_client::api::{AccessKeyScope, AccessKeyScopeCluster, AccessKeyScopeProject};
use kubegate_client::{
    AccessKeyRequest, ContextNaming, Credential, Error, ExecCredential, GatewayClient,
    KubeconfigAuth, RefreshPolicy, Target, TokenCache, TokenSource, merge_into_file,
};

/// A command-line client for a kubegate gateway.
#[derive(Parser, Debug)]
#[command(
    name = "cli",
    version,
    about = "A command-line client for a kubegate gateway.",
    after_help = "Exit codes: 0 success, 1 other failure, 2 bad usage, 3 not logged in, \
                  4 credentials refused, 5 forbidden, 6 gateway unreachable, 7 not found."
)]
struct Cli {
    /// Where login details are kept (default: $KUBEGATE_CLI_CONFIG or ~/.kubegate/config.json).
    #[arg(long, global = true, env = "KUBEGATE_CLI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log in to a gateway with an access key; the key is checked before it is saved.
    Login(LoginArgs),
    /// Show who the saved credential belongs to.
    Whoami {
        /// Print the full `Self` object as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a kubeconfig context for a target and switch to it.
    Use {
        #[command(subcommand)]
        target: UseTarget,
    },
    /// Exec credential plugin: print an ExecCredential for kubectl.
    Token(TokenArgs),
    /// Create tokens and access keys.
    Create {
        #[command(subcommand)]
        what: CreateWhat,
    },
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Gateway URL, e.g. https://gateway.example:8443.
    url: String,
    /// Access key (or set KUBEGATE_ACCESS_KEY).
    #[arg(long, env = "KUBEGATE_ACCESS_KEY", hide_env_values = true)]
    access_key: String,
    /// PEM file with the CA that signed the gateway's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Do not verify the gateway's certificate (test setups only).
    #[arg(long)]
    insecure: bool,
}

#[derive(Subcommand, Debug)]
enum UseTarget {
    /// A connected cluster.
    Cluster {
        /// Cluster name.
        name: String,
        #[command(flatten)]
        out: UseArgs,
    },
    /// A project virtual cluster (`--project`), or a legacy one (`--cluster` + `--namespace`).
    Vcluster {
        /// Virtual cluster name.
        name: String,
        /// Project of the virtual cluster instance.
        #[arg(long, conflicts_with_all = ["cluster", "namespace"])]
        project: Option<String>,
        /// Host cluster of a legacy virtual cluster.
        #[arg(long, requires = "namespace")]
        cluster: Option<String>,
        /// Host namespace of a legacy virtual cluster.
        #[arg(long, requires = "cluster")]
        namespace: Option<String>,
        #[command(flatten)]
        out: UseArgs,
    },
    /// A project space.
    Space {
        /// Space name.
        name: String,
        /// Project of the space.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        out: UseArgs,
    },
    /// The management API.
    Management {
        #[command(flatten)]
        out: UseArgs,
    },
}

#[derive(Args, Debug)]
struct UseArgs {
    /// Kubeconfig to merge into (default: first path of $KUBECONFIG, or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Embed the access key instead of calling this program as an exec plugin.
    #[arg(long)]
    static_token: bool,
    /// Context name prefix instead of loftctl's `loft`.
    #[arg(long)]
    prefix: Option<String>,
    /// Do not make the new context the current one.
    #[arg(long)]
    no_switch: bool,
    /// Connect to the cluster's direct endpoint (its agent) instead of the gateway.
    #[arg(long)]
    direct_cluster_endpoint: bool,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Print the saved access key itself instead of a short-lived token.
    #[arg(long)]
    access_key: bool,
    /// Lifetime of minted tokens, in seconds (default: the gateway's).
    #[arg(long)]
    ttl: Option<u64>,
    /// Age in seconds after which a cached token is replaced.
    #[arg(long, default_value_t = 30 * 60, hide = true)]
    refresh_after: u64,
    /// Mint tokens narrowed to these clusters and projects (a direct-cluster-endpoint
    /// context asks for its own cluster alone, so a token an agent sees works nowhere else).
    #[command(flatten)]
    scope: ScopeArgs,
}

#[derive(Subcommand, Debug)]
enum CreateWhat {
    /// Mint a DirectClusterEndpointToken and print it.
    Token {
        /// Lifetime in seconds (default: the gateway's).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Create an access key of the logged-in user and print it (shown only once).
    Accesskey {
        /// Object name (default: chosen by the gateway).
        #[arg(long)]
        name: Option<String>,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(Args, Debug)]
struct ScopeArgs {
    /// Restrict to this cluster (repeatable).
    #[arg(long = "cluster")]
    clusters: Vec<String>,
    /// Restrict to this project (repeatable).
    #[arg(long = "project")]
    projects: Vec<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Option<AccessKeyScope> {
        if self.clusters.is_empty() && self.projects.is_empty() {
            return None;
        }
        Some(AccessKeyScope {
            clusters: self
                .clusters
                .iter()
                .map(|c| AccessKeyScopeCluster { cluster: c.clone() })
                .collect(),
            projects: self
                .projects
                .iter()
                .map(|p| AccessKeyScopeProject { project: p.clone() })
                .collect(),
            ..Default::default()
        })
    }
}

/// A failure with the exit code scripts see.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn from_error(error: &Error, url: &str) -> Failure {
        if let Some(status) = error.status() {
            let detail = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            return match status.code {
                401 => Failure::new(
                    4,
                    format!(
                        "the gateway at {url} did not accept the saved credentials ({detail}); log in again"
                    ),
                ),
                403 => Failure::new(5, format!("not allowed: {detail}")),
                404 => Failure::new(7, format!("not found: {detail}")),
                code => Failure::new(
                    1,
                    format!("the gateway refused the request ({code}): {detail}"),
                ),
            };
        }
        match error {
            Error::Kube(_) | Error::NoValidToken { .. } => {
                Failure::new(6, format!("could not reach the gateway at {url}: {error}"))
            }
            other => Failure::new(1, other.to_string()),
        }
    }
}

/// What `login` saves: the gateway, how to trust it, and the access key. Kept as plain JSON so
/// other tools can read it; the file is owner-only.
struct Profile {
    server: String,
    ca_pem: Option<String>,
    insecure: bool,
    access_key: String,
}

impl Profile {
    fn load(path: &Path) -> Result<Profile, Failure> {
        let not_logged_in = || {
            Failure::new(
                3,
                format!(
                    "not logged in (no usable {}); run `cli login <URL> --access-key <KEY>` first",
                    path.display()
                ),
            )
        };
        let text = std::fs::read_to_string(path).map_err(|_| not_logged_in())?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| not_logged_in())?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Ok(Profile {
            server: field("server").ok_or_else(not_logged_in)?,
            ca_pem: field("caPem"),
            insecure: v.get("insecure").and_then(|x| x.as_bool()).unwrap_or(false),
            access_key: field("accessKey").ok_or_else(not_logged_in)?,
        })
    }

    fn save(&self, path: &Path) -> Result<(), Failure> {
        let doc = serde_json::json!({
            "server": self.server,
            "caPem": self.ca_pem,
            "insecure": self.insecure,
            "accessKey": self.access_key,
        });
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            std::io::Write::write_all(&mut file, doc.to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Failure::new(1, format!("could not save {}: {e}", path.display())))
    }

    fn gateway(&self) -> Result<GatewayClient, Failure> {
        let mut gateway = GatewayClient::new(&self.server, Credential::bearer(&self.access_key))
            .map_err(|e| Failure::new(1, e.to_string()))?;
        if let Some(pem) = &self.ca_pem {
            gateway = gateway
                .with_ca_pem(pem.as_bytes())
                .map_err(|e| Failure::new(1, e.to_string()))?;
        }
        Ok(gateway.danger_accept_invalid_certs(self.insecure))
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
    }
}

fn default_kubeconfig() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        .unwrap_or_else(|| home().join(".kube").join("config"))
}

fn token_cache(config: &Path) -> TokenCache {
    TokenCache::new(config.with_file_name("token-cache.json"))
}

/// The program entry point (also reused by the kubegate-client tests).
#[tokio::main(flavor = "current_thread")]
pub(crate) async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let config = absolute(
        &cli.config
            .clone()
            .unwrap_or_else(|| home().join(".kubegate").join("config.json")),
    );
    match run(cli.command, &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(command: Command, config: &Path) -> Result<(), Failure> {
    match command {
        Command::Login(args) => login(args, config).await,
        Command::Whoami { json } => whoami(config, json).await,
        Command::Use { target } => use_target(target, config).await,
        Command::Token(args) => token(args, config).await,
        Command::Create { what } => create(what, config).await,
    }
}

async fn login(args: LoginArgs, config: &Path) -> Result<(), Failure> {
    let ca_pem = match &args.ca_file {
        Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
            Failure::new(
                1,
                format!("could not read the CA file {}: {e}", file.display()),
            )
        })?),
        None => None,
    };
    let profile = Profile {
        server: args.url.trim_end_matches('/').to_owned(),
        ca_pem,
        insecure: args.insecure,
        access_key: args.access_key,
    };
    let gateway = profile.gateway()?;
    eprintln!("Checking the access key with {} ...", profile.server);
    let me = gateway
        .management()
        .map_err(|e| Failure::from_error(&e, &profile.server))?
        .whoami()
        .await
        .map_err(|e| Failure::from_error(&Error::Kube(e), &profile.server))?;
    profile.save(config)?;
    token_cache(config)
        .clear()
        .map_err(|e| Failure::new(1, e.to_string()))?;
    eprintln!(
        "Logged in to {} as {}. Details saved in {}.",
        profile.server,
        subject(&me),
        config.display()
    );
    Ok(())
}

fn subject(me: &kubegate_client::api::Self_) -> String {
    let status = me.status.clone().unwrap_or_default();
    if let Some(user) = status.user.filter(|u| !u.name.is_empty()) {
        return format!("user {}", user.name);
    }
    if let Some(team) = status.team.filter(|t| !t.name.is_empty()) {
        return format!("team {}", team.name);
    }
    format!("subject {}", status.subject)
}

async fn whoami(config: &Path, json: bool) -> Result<(), Failure> {
    let profile = Profile::load(config)?;
    let gateway = profile.gateway()?;
    let me = gateway
        .management()
        .map_err(|e| Failure::from_error(&e, &profile.server))?
        .whoami()
        .await
        .map_err(|e| Failure::from_error(&Error::Kube(e), &profile.server))?;
    if json {
        let text = serde_json::to_string_pretty(&me).map_err(|e| Failure::new(1, e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    let status = me.status.clone().unwrap_or_default();
    println!("{}", subject(&me));
    if !status.groups.is_empty() {
        println!("groups: {}", status.groups.join(", "));
    }
    if !status.access_key.is_empty() {
        println!("access key: {}", status.access_key);
    }
    if let Some(scope) = status.access_key_scope.filter(|s| !s.is_unrestricted()) {
        let scope = serde_json::to_string(&scope).map_err(|e| Failure::new(1, e.to_string()))?;
        println!("scope: {scope}");
    }
    Ok(())
}

async fn use_target(target: UseTarget, config: &Path) -> Result<(), Failure> {
    let (target, out) = match target {
        UseTarget::Cluster { name, out } => (Target::cluster(name), out),
        UseTarget::Vcluster {
            name,
            project: Some(project),
            out,
            ..
        } => (Target::project_virtual_cluster(project, name), out),
        UseTarget::Vcluster {
            name,
            cluster: Some(cluster),
            namespace: Some(namespace),
            out,
            ..
        } => (Target::virtual_cluster(cluster, namespace, name), out),
        UseTarget::Vcluster { .. } => {
            return Err(Failure::new(
                2,
                "say which virtual cluster: --project P, or --cluster C --namespace N for a legacy one",
            ));
        }
        UseTarget::Space { name, project, out } => (Target::project_space(project, name), out),
        UseTarget::Management { out } => (Target::Management, out),
    };
    target
        .validate()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    let profile = Profile::load(config)?;
    let gateway = profile.gateway()?;
    let naming = match &out.prefix {
        Some(p) => {
            ContextNaming::with_prefix(p.clone()).map_err(|e| Failure::new(2, e.to_string()))?
        }
        None => ContextNaming::loftctl(),
    };
    let mut endpoint = gateway.clone();
    let mut plugin_args = vec![
        "token".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    if out.direct_cluster_endpoint {
        let cluster = match &target {
            Target::Cluster { cluster } | Target::VirtualCluster { cluster, .. } => cluster.clone(),
            _ => {
                return Err(Failure::new(
                    2,
                    "--direct-cluster-endpoint works with `use cluster` and legacy virtual clusters",
                ));
            }
        };
        let management = gateway
            .management()
            .map_err(|e| Failure::from_error(&e, &profile.server))?;
        let api: kubegate_client::kube_client::Api<kubegate_client::api::Cluster> =
            kubegate_client::kube_client::Api::all(management.client().clone());
        let object = api
            .get(&cluster)
            .await
            .map_err(|e| Failure::from_error(&Error::Kube(e), &profile.server))?;
        endpoint = gateway
            .direct_endpoint_of(&object)
            .map_err(|e| Failure::new(1, e.to_string()))?
            .ok_or_else(|| {
                Failure::new(
                    7,
                    format!("cluster {cluster:?} has no direct cluster endpoint"),
                )
            })?;
        // The agent runs inside the cluster, where the cluster's admins can read what it is
        // sent: a token narrowed to this cluster (which admits its legacy virtual clusters
        // too) works nowhere else if read there (at the central, at other clusters).
        plugin_args.extend(["--cluster".to_owned(), cluster]);
        if out.static_token {
            eprintln!(
                "Note: with --static-token the context holds your access key itself, which the \
                 agent (and whoever can read what it is sent) sees; without it, the context \
                 gets short-lived tokens good for this cluster alone."
            );
        }
    }
    let auth = if out.static_token {
        KubeconfigAuth::Token(profile.access_key.clone().into())
    } else {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(1, format!("cannot find this program's path: {e}")))?;
        // The plugin hands kubectl short-lived minted tokens, so the access key itself stays in
        // the owner-only config file.
        KubeconfigAuth::Exec {
            command: exe.display().to_string(),
            args: plugin_args,
        }
    };
    let entry = endpoint
        .kubeconfig_entry(&target, &naming, Some(auth))
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let kubeconfig = absolute(&out.kubeconfig.unwrap_or_else(default_kubeconfig));
    let current = (!out.no_switch).then_some(entry.name.as_str());
    merge_into_file(&kubeconfig, std::slice::from_ref(&entry), current)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    eprintln!(
        "Context {:?} for {target} written to {}{}.",
        entry.name,
        kubeconfig.display(),
        if out.no_switch {
            ""
        } else {
            " and made current"
        }
    );
    Ok(())
}

async fn token(args: TokenArgs, config: &Path) -> Result<(), Failure> {
    let profile = Profile::load(config)?;
    let gateway = profile.gateway()?;
    let api_version =
        ExecCredential::requested_version(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref())
            .map_err(|e| Failure::new(1, e.to_string()))?;
    let source = if args.access_key {
        TokenSource::AccessKey
    } else {
        TokenSource::DirectClusterEndpointToken {
            ttl: args.ttl.map(Duration::from_secs),
            scope: args.scope.scope(),
        }
    };
    let policy = RefreshPolicy {
        refresh_after: Duration::from_secs(args.refresh_after),
    };
    let token = token_cache(config)
        .token(&gateway, &source, &policy, now())
        .await
        .map_err(|e| Failure::from_error(&e, &profile.server))?;
    let credential = TokenCache::exec_credential(&token, api_version)
        .and_then(|c| c.to_json())
        .map_err(|e| Failure::new(1, e.to_string()))?;
    println!("{credential}");
    Ok(())
}

async fn create(what: CreateWhat, config: &Path) -> Result<(), Failure> {
    let profile = Profile::load(config)?;
    let management = profile
        .gateway()?
        .management()
        .map_err(|e| Failure::from_error(&e, &profile.server))?;
    let fail = |e| Failure::from_error(&Error::Kube(e), &profile.server);
    match what {
        CreateWhat::Token { ttl, scope } => {
            let object = management
                .create_direct_cluster_endpoint_token(ttl.map(Duration::from_secs), scope.scope())
                .await
                .map_err(fail)?;
            let token = object
                .status
                .map(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Failure::new(1, "the gateway returned no token"))?;
            println!("{token}");
        }
        CreateWhat::Accesskey {
            name,
            display_name,
            ttl,
            scope,
        } => {
            let request = AccessKeyRequest {
                name,
                display_name,
                ttl: ttl.map(Duration::from_secs),
                scope: scope.scope(),
                ..Default::default()
            };
            let object = management.create_access_key(&request).await.map_err(fail)?;
            let name = object.metadata.name.clone().unwrap_or_default();
            if object.spec.key.is_empty() {
                return Err(Failure::new(1, "the gateway returned no key"));
            }
            eprintln!("Access key {name:?} created; it is shown only this once.");
            println!("{}", object.spec.key);
        }
    }
    Ok(())
}
