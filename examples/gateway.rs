//! The reference kubegate gateway.
//!
//! ```text
//! cargo run --release --example gateway                      # first run: imports ~/.kube/config
//! cargo run --release --example gateway -- --config kubegate.yaml
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kubegate::gateway::{Config, Gateway, ServerLimits, bootstrap};

// mimalloc rather than glibc's allocator: a proxy allocates and frees many small buffers per
// request across tasks, where glibc's arena consolidation and heap trimming showed up in
// profiles. In `proxy_load` (64 HTTPS connections) it cut the gateway's CPU time per request by
// ≈ 8 % (crates/proxy/README.md).
//
// It is linked with its `override` feature, so it *is* the process's `malloc`/`free`, and Rust
// keeps its default allocator (`System`, which calls `malloc` for every alignment up to 16).
// That is cheaper than `#[global_allocator] MiMalloc`, whose `GlobalAlloc` sends every
// allocation through `mi_malloc_aligned`: 1,712 fewer instructions per proxied request (77,041
// → 75,329, `crates/proxy/scripts/instructions-per-request.sh reference`). C code linked in
// (aws-lc) allocates from mimalloc too.

/// kubegate: one authenticated, authorized, audited front door to many Kubernetes API servers.
#[derive(Debug, Parser)]
#[command(name = "kubegate", version)]
struct Args {
    /// Config file. Without it, kubegate runs on a config generated into the state directory
    /// from your kubeconfig ($KUBECONFIG or ~/.kube/config).
    #[arg(long, short, env = "KUBEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// State directory for the generated config, keys and certificates (no-config mode).
    #[arg(long, env = "KUBEGATE_STATE_DIR", default_value = "kubegate-state")]
    state_dir: PathBuf,
    /// Listen address (no-config mode; with a config file, `listen:` applies).
    #[arg(long, default_value = kubegate::gateway::config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Worker threads. Default: the CPUs this process may run on (affinity mask, cgroup
    /// quota). With one, everything runs on a single-threaded runtime, which costs less per
    /// request than a one-worker pool.
    #[arg(long, env = "KUBEGATE_WORKER_THREADS")]
    worker_threads: Option<NonZeroUsize>,
}

fn main() -> ExitCode {
    // The one reference to mimalloc's object file: without it the linker, which takes an archive
    // member only for a symbol still undefined when it reaches it, would leave mimalloc out and
    // glibc's `malloc` would stay, silently. The call into C stays (it cannot be proven free of effects).
    let _ = mimalloc::MiMalloc.version();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match kubegate::proxy::runtime::build(args.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubegate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match runtime.block_on(run(args)) {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("kubegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Exec, attach and port-forward sessions may still be open: shutting the runtime down
    // ends them, and their audit events are written before the process exits.
    gateway.shut_down_runtime(runtime, RUNTIME_SHUTDOWN_TIMEOUT);
    eprintln!("kubegate: stopped");
    ExitCode::SUCCESS
}

/// How long the runtime's threads get to stop once serving has ended (blocking tasks, such
/// as file I/O under way, cannot be interrupted).
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until SIGINT or SIGTERM; the gateway is returned for the last step of `main`.
async fn run(args: Args) -> Result<Gateway, Box<dyn std::error::Error>> {
    let (config, first_run) = match &args.config {
        Some(path) => (Config::load(path)?, None),
        None => {
            let boot = bootstrap::load_or_create(&args.state_dir, args.listen)?;
            let config = boot.config.clone();
            (config, Some(boot))
        }
    };
    let gateway = Gateway::new(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("https://{addr}");
    let config_path = match &first_run {
        Some(boot) => boot.config_path.clone(),
        None => args.config.clone().unwrap_or_default(),
    };
    if let Some(boot) = first_run {
        report_first_run(&gateway, &boot, &url, &config)?;
    }
    eprintln!(
        "kubegate listening on {url} ({} clusters)",
        config.clusters.len()
    );
    tokio::spawn(watch_config(
        gateway.clone(),
        config_path,
        config.watched_files(),
    ));
    gateway
        .serve(listener, ServerLimits::default(), shutdown_signal())
        .await;
    Ok(gateway)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    eprintln!("kubegate: shutting down (watches end now, in-flight requests may finish)");
}

/// Reloads the config on SIGHUP and whenever the file, or a file it names (certificates, keys,
/// CA bundles: `Config::watched_files`), changes; a config that does not load or compile is
/// refused with a log line and the running one stays. A renewed serving certificate (cert-manager)
/// or a rotated CA bundle is picked up within a tick, and a reload refused because a named file
/// was not there yet (a Secret volume updated after its ConfigMap) is tried again when it comes.
/// `files` are those of the config the gateway started on, read once already.
async fn watch_config(gateway: Gateway, path: PathBuf, mut files: Vec<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    let mut seen = stamps(&path, &files);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        let forced = tokio::select! {
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let now = stamps(&path, &files);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let result = match Config::load(&path) {
            Ok(config) => {
                // Watched from now on: the files of the config just read, loaded or not. The
                // config's own stamp stays the one taken before it was read, so an edit made
                // meanwhile is still seen as a change.
                let named = config.watched_files();
                if named != files {
                    files = named;
                    let config_stamp = seen.first().cloned().flatten();
                    seen = stamps(&path, &files);
                    if let Some(first) = seen.first_mut() {
                        *first = config_stamp;
                    }
                }
                gateway.reload(config).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => tracing::info!(path = %path.display(), "configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "new configuration refused; keeping the running one")
            }
        }
    }
}

/// What tells a file changed: its modification time, size, device and inode (a Secret
/// volume's update swaps a symlink, which `metadata` follows), or that it is not there.
type Stamp = Option<(std::time::SystemTime, u64, u64, u64)>;

fn stamps(config: &PathBuf, files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    std::iter::once(config)
        .chain(files)
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.dev(), m.ino()))
        })
        .collect()
}

fn report_first_run(
    gateway: &Gateway,
    boot: &bootstrap::Bootstrapped,
    url: &str,
    config: &Config,
) -> Result<(), Box<dyn std::error::Error>> {
    for (context, reason) in &boot.skipped {
        eprintln!("kubegate: skipped kubeconfig context {context:?}: {reason}");
    }
    let Some(key) = &boot.admin_key else {
        eprintln!(
            "kubegate: using {} (kubeconfig for the admin: {})",
            boot.config_path.display(),
            boot.kubeconfig_path.display()
        );
        return Ok(());
    };
    let ca = std::fs::read(&gateway.serving_cert().cert_file)?;
    bootstrap::write_kubeconfig(&boot.kubeconfig_path, url, &ca, key.expose(), config)?;
    match &boot.source_kubeconfig {
        Some(path) if !config.clusters.is_empty() => println!(
            "Imported {} cluster(s) from {}.",
            config.clusters.len(),
            path.display()
        ),
        _ => println!(
            "No kubeconfig contexts to import: serving the management API only. Add clusters to {}.",
            boot.config_path.display()
        ),
    }
    println!("Admin access key (shown once): {}", key.expose());
    println!("Kubeconfig: {}", boot.kubeconfig_path.display());
    println!(
        "  kubectl --kubeconfig {} --context kubegate-management get clusters",
        boot.kubeconfig_path.display()
    );
    for c in &config.clusters {
        println!(
            "  kubectl --kubeconfig {} --context kubegate_{} get pods",
            boot.kubeconfig_path.display(),
            c.name
        );
    }
    Ok(())
}
