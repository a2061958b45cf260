//! Upstream reachability for `/readyz`: a TCP connect to every configured upstream, repeated in
//! the background, so readiness reports which clusters cannot be reached without putting a
//! credentialed request on any of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::{Config, UpstreamConfig};
use crate::service::Shared;

/// How often upstreams are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The latest probe result per upstream (`None`: reachable; `Some(why)`: not).
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    results: Mutex<BTreeMap<String, Option<String>>>,
}

impl UpstreamHealth {
    /// The latest results, by upstream name.
    pub fn snapshot(&self) -> BTreeMap<String, Option<String>> {
        self.results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, results: BTreeMap<String, Option<String>>) {
        *self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = results;
    }
}

fn targets(config: &Config) -> Vec<(String, UpstreamConfig)> {
    let mut out: Vec<(String, UpstreamConfig)> = config
        .clusters
        .iter()
        .map(|c| (format!("cluster/{}", c.name), c.upstream.clone()))
        .collect();
    if let Some(agent) = &config.agent {
        out.push((format!("cluster/{}", agent.cluster), agent.upstream.clone()));
    }
    out.extend(config.virtual_clusters.iter().map(|v| {
        (
            format!("virtualcluster/{}/{}/{}", v.cluster, v.namespace, v.name),
            v.upstream.clone(),
        )
    }));
    for p in &config.projects {
        out.extend(p.virtual_clusters.iter().map(|v| {
            (
                format!("project/{}/virtualcluster/{}", p.name, v.name),
                v.upstream.clone(),
            )
        }));
    }
    out
}

async fn probe(upstream: &UpstreamConfig) -> Option<String> {
    let uri: http::Uri = match upstream.server.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("invalid server URL: {e}")),
    };
    let Some(host) = uri.host() else {
        return Some("server URL has no host".into());
    };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Some(format!("connecting to {host}:{port} timed out")),
    }
}

/// Probes now and then every [`PROBE_INTERVAL`] while the gateway exists.
pub fn spawn_prober(shared: &Arc<Shared>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let Some(shared) = weak.upgrade() else { break };
            let config = Arc::clone(&shared.runtime.load().config);
            let mut results = BTreeMap::new();
            for (name, upstream) in targets(&config) {
                results.insert(name, probe(&upstream).await);
            }
            shared.upstream_health.set(results);
            drop(shared);
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}
