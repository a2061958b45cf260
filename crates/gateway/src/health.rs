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
/// How many upstreams are probed at once. One at a time, a gateway in front of hundreds of
/// clusters would spend [`PROBE_TIMEOUT`] on each black-holed one in turn, and `/readyz` would
/// report rounds minutes old; this many at a time, a round takes about one timeout per this
/// many unreachable upstreams, with a bounded number of sockets open.
pub const PROBE_CONCURRENCY: usize = 32;

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
        let mut current = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // `/readyz` tells anyone only how many are unreachable; which, and why, is logged
        // here when it changes.
        for (name, problem) in &results {
            let before = current.get(name);
            match problem {
                Some(why) if before != Some(problem) => {
                    tracing::warn!(upstream = %name, cause = %why, "upstream unreachable");
                }
                None if before.is_some_and(Option::is_some) => {
                    tracing::info!(upstream = %name, "upstream reachable again");
                }
                _ => {}
            }
        }
        *current = results;
    }
}

fn targets(config: &Config) -> Vec<(String, UpstreamConfig)> {
    config
        .kubernetes_upstreams()
        .into_iter()
        .map(|(_, key, upstream)| (key.path(), upstream.clone()))
        .collect()
}

/// Probes every target, [`PROBE_CONCURRENCY`] at a time.
async fn probe_all(targets: Vec<(String, UpstreamConfig)>) -> BTreeMap<String, Option<String>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(targets)
        .map(|(name, upstream)| async move {
            let problem = probe(&upstream).await;
            (name, problem)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await
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
            // Not holding the gateway while the round runs: it may be dropped meanwhile.
            drop(shared);
            let results = probe_all(targets(&config)).await;
            let Some(shared) = weak.upgrade() else { break };
            shared.upstream_health.set(results);
            drop(shared);
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(port: u16) -> UpstreamConfig {
        serde_json::from_value(serde_json::json!({"server": format!("https://127.0.0.1:{port}")}))
            .expect("a minimal upstream")
    }

    /// A round over many black-holed upstreams (a listener whose accept queue is full drops
    /// further SYNs, so connecting hangs) takes a timeout per [`PROBE_CONCURRENCY`] of them,
    /// not one each. The clock is tokio's paused one: it jumps to each timeout once nothing
    /// else can run, so the elapsed time counts timeouts waited in turn, not the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn a_round_waits_out_timeouts_side_by_side() {
        let full = tokio::net::TcpSocket::new_v4().unwrap();
        full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let full = full.listen(0).unwrap();
        let full_port = full.local_addr().unwrap().port();
        // Fills the accept queue (backlog 0 holds one connection; nobody accepts).
        let _queued = std::net::TcpStream::connect(("127.0.0.1", full_port)).unwrap();
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = open.local_addr().unwrap().port();
        let black_holed = 2 * PROBE_CONCURRENCY;
        let mut targets: Vec<_> = (0..black_holed)
            .map(|i| (format!("cluster/hung-{i:03}"), upstream(full_port)))
            .collect();
        targets.push(("cluster/open".into(), upstream(open_port)));
        let started = tokio::time::Instant::now();
        let results = probe_all(targets).await;
        let waited = started.elapsed();
        assert_eq!(results.len(), black_holed + 1);
        assert_eq!(results["cluster/open"], None);
        for i in 0..black_holed {
            let problem = results[&format!("cluster/hung-{i:03}")].as_deref();
            assert_eq!(
                problem,
                Some(format!("connecting to 127.0.0.1:{full_port} timed out").as_str())
            );
        }
        // Two batches of timeouts, not 64 in a row.
        assert!(waited <= PROBE_TIMEOUT * 3, "{waited:?}");
        assert!(waited >= PROBE_TIMEOUT * 2, "{waited:?}");
    }
}
