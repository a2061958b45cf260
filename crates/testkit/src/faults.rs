//! Misbehaviour knobs, settable while the server runs.

use std::sync::Mutex;
use std::time::Duration;

/// One way to misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long before handling the request (then answer normally).
    Delay(Duration),
    /// Drop the TCP connection with a reset (SO_LINGER 0), without answering.
    Reset,
    /// Answer with this status code and a Kubernetes Status body (e.g. 500, 503, 504, 429).
    Status(u16),
    /// Answer normally, but send the body in `chunk_size`-byte pieces with `interval` between.
    SlowBody {
        /// Bytes per chunk.
        chunk_size: usize,
        /// Pause between chunks.
        interval: Duration,
    },
    /// Answer an upgrade request (exec, upgrade echo) with this status instead of 101:
    /// 200 (body `ok`), 302 (with `Location`), 403 (Forbidden Status), or any other code.
    /// Non-upgrade requests are not affected.
    UpgradeStatus {
        /// Status code.
        code: u16,
        /// `Location` header for redirects.
        location: Option<String>,
    },
    /// Answer normally, with this `Set-Cookie` header added: an upstream (a tenant's virtual
    /// cluster, a Grafana) trying to plant a cookie on the gateway's host.
    SetCookie(String),
    /// Answer with 200 and this body of this `Content-Type`: a page a workload serves through a
    /// `proxy` subresource, or a tenant's API server serving a document of its choosing.
    Document {
        /// `Content-Type` values, each a header of its own (e.g. `["text/html"]`; two to
        /// see what a client makes of a contradiction).
        content_types: Vec<String>,
        /// The body.
        body: String,
    },
    /// Answer normally, but send no byte of the body until the gate is opened: a response
    /// held open for exactly as long as a test needs it, however slow the machine.
    HoldBody(BodyGate),
    /// Answer a non-upgrade request with this redirect (status and `Location`), body `ok`, the
    /// way a compromised or misconfigured API server might.
    Redirect {
        /// Status code (3xx).
        code: u16,
        /// `Location` header.
        location: String,
    },
}

/// What a [`Fault::HoldBody`] response waits on. Clones share the gate; once opened it stays
/// open. Two gates are equal when they are the same gate.
#[derive(Debug, Clone)]
pub struct BodyGate(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl BodyGate {
    /// A closed gate.
    pub fn new() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(false)))
    }

    /// Opens the gate: every held body, and any held later, is sent.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the gate is open.
    pub(crate) async fn opened(&self) {
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

impl Default for BodyGate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for BodyGate {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BodyGate {}

/// A fault with the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    fault: Fault,
    path_prefix: Option<String>,
    method: Option<http::Method>,
    remaining: Option<usize>,
}

impl FaultRule {
    /// Applies `fault` to every request until cleared.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            path_prefix: None,
            method: None,
            remaining: None,
        }
    }

    /// Only requests whose (encoded) path starts with `prefix`.
    #[must_use]
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Only requests with this method.
    #[must_use]
    pub fn method(mut self, method: http::Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only the next `n` matching requests.
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, method: &http::Method, path: &str, upgrade: bool) -> bool {
        if matches!(self.fault, Fault::UpgradeStatus { .. }) && !upgrade {
            return false;
        }
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self.remaining != Some(0)
    }
}

/// The active fault rules; the first matching rule wins.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    /// Adds a rule (after the existing ones).
    pub fn inject(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn take(&self, method: &http::Method, path: &str, upgrade: bool) -> Option<Fault> {
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rule = rules
            .iter_mut()
            .find(|r| r.matches(method, path, upgrade))?;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        let fault = rule.fault.clone();
        rules.retain(|r| r.remaining != Some(0));
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_and_counts_down() {
        let f = Faults::default();
        f.inject(
            FaultRule::new(Fault::Status(503))
                .path_prefix("/api/")
                .times(1),
        );
        f.inject(FaultRule::new(Fault::Reset).method(http::Method::POST));
        f.inject(FaultRule::new(Fault::UpgradeStatus {
            code: 403,
            location: None,
        }));
        let get = http::Method::GET;
        assert_eq!(f.take(&get, "/version", false), None);
        assert_eq!(f.take(&get, "/api/v1", false), Some(Fault::Status(503)));
        assert_eq!(f.take(&get, "/api/v1", false), None);
        assert_eq!(f.take(&http::Method::POST, "/x", false), Some(Fault::Reset));
        assert!(matches!(
            f.take(&get, "/x", true),
            Some(Fault::UpgradeStatus { code: 403, .. })
        ));
        f.clear();
        assert_eq!(f.take(&http::Method::POST, "/x", false), None);
    }
}
