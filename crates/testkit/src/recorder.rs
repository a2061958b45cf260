//! Records what the server received, for assertions.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, Method, Version};
use tokio::sync::watch;

use crate::identity::UserInfo;

/// One received request, as seen after authentication and impersonation.
#[derive(Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// HTTP version (HTTP/1.1 or HTTP/2).
    pub version: Version,
    /// Path as sent (still percent-encoded).
    pub path: String,
    /// Raw query, if any.
    pub query: Option<String>,
    /// All request headers, exactly as received (including credentials: compare, don't log).
    pub headers: HeaderMap,
    /// The authenticated requestor (`None`: authentication failed → 401).
    pub authenticated: Option<UserInfo>,
    /// The impersonated user, when `Impersonate-*` headers were honoured.
    pub impersonated: Option<UserInfo>,
    /// The kube verb (`get`, `list`, `watch`, ...; lowercase method for non-resource paths).
    pub verb: String,
    /// The client's address: one per connection, so requests that came over one reused
    /// connection share it.
    pub peer: std::net::SocketAddr,
}

impl RecordedRequest {
    /// The user the request ran as: the impersonated user if any, else the requestor.
    pub fn effective_user(&self) -> Option<&UserInfo> {
        self.impersonated.as_ref().or(self.authenticated.as_ref())
    }

    /// All values of a header, as strings.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values can be credentials; show only the names.
        let names: Vec<&str> = self.headers.keys().map(http::HeaderName::as_str).collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("header_names", &names)
            .field("authenticated", &self.authenticated)
            .field("impersonated", &self.impersonated)
            .field("verb", &self.verb)
            .field("peer", &self.peer)
            .finish()
    }
}

/// The request log.
#[derive(Debug)]
pub struct Recorder {
    requests: Mutex<Vec<RecordedRequest>>,
    count: watch::Sender<usize>,
    enabled: AtomicBool,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            enabled: AtomicBool::new(true),
        }
    }
}

impl Recorder {
    /// Turns recording on or off (off for load benches, where the log would grow without
    /// bound). On by default.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, req: RecordedRequest) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        requests.push(req);
        let len = requests.len();
        drop(requests);
        self.count.send_replace(len);
    }

    /// Everything recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.count.send_replace(0);
    }

    /// Waits until a request matching `pred` has been recorded and returns it (the earliest
    /// match). Wrap in `tokio::time::timeout` to bound it.
    pub async fn wait_for(&self, pred: impl Fn(&RecordedRequest) -> bool) -> RecordedRequest {
        let mut rx = self.count.subscribe();
        loop {
            if let Some(found) = self
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|r| pred(r))
                .cloned()
            {
                return found;
            }
            // The sender lives as long as `self`, so this only fails if `self` is gone.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
