//! Access keys of the central gateway, validated at the agent by asking the central who the key
//! belongs to (`POST …/selves` with the key as bearer) and caching the answer.
//!
//! Cache rules (entries are keyed by the SHA-256 of the key; the key itself is never stored):
//! - an answer is reused for [`FRESH_FOR`] (30 s), then re-validated on the next use;
//! - a key the central refused is refused again for [`REFUSED_FOR`] without asking;
//! - while the central cannot be reached, an accepted key keeps working until
//!   [`STALE_IF_ERROR`] (10 min) after its last successful validation; a key the cache does not
//!   hold gets [`SelfAnswer::Unavailable`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubegate_api::Self_;
use sha2::Digest;

use super::FetchError;
use super::client::HttpsClient;

/// How long an answer of the central is used without asking again.
pub const FRESH_FOR: Duration = Duration::from_secs(30);
/// How long a refusal of the central is remembered.
pub const REFUSED_FOR: Duration = Duration::from_secs(5);
/// How long an accepted key keeps working after its last validation while the central is down.
pub const STALE_IF_ERROR: Duration = Duration::from_secs(600);
/// Most keys remembered; beyond it, expired entries and then the oldest are dropped.
pub const CAPACITY: usize = 10_000;

/// The `selves` request body.
const SELF_REQUEST: &[u8] = br#"{"apiVersion":"management.loft.sh/v1","kind":"Self","spec":{}}"#;

/// What the central said about a key.
#[derive(Debug, Clone)]
pub enum SelfAnswer {
    /// The key is valid; this is who it belongs to.
    Valid(Arc<Self_>),
    /// The central refused the key (the reason is for logs).
    Refused(String),
    /// The central cannot be reached and the key is not cached (the message says why).
    Unavailable(String),
}

#[derive(Debug, Clone)]
struct Entry {
    answer: Result<Arc<Self_>, String>,
    checked_at: Instant,
}

/// Validates access keys against the central gateway's `selves`.
#[derive(Debug)]
pub struct SelfCache {
    client: HttpsClient,
    url: String,
    central: String,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl SelfCache {
    /// Validates keys at `<central_url>/kubernetes/management/apis/management.loft.sh/v1/selves`.
    pub fn new(client: HttpsClient, central_url: &str) -> SelfCache {
        let central = central_url.trim_end_matches('/').to_owned();
        SelfCache {
            client,
            url: format!("{central}/kubernetes/management/apis/management.loft.sh/v1/selves"),
            central,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn remember(&self, digest: [u8; 32], entry: Entry) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(&digest) {
            entries.retain(|_, e| e.checked_at.elapsed() < STALE_IF_ERROR);
            if entries.len() >= CAPACITY
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.checked_at)
                    .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(digest, entry);
    }

    fn forget(&self, digest: &[u8; 32]) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(digest);
    }

    /// Says who `key` belongs to, from the cache or by asking the central.
    pub async fn check(&self, key: &str) -> SelfAnswer {
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        let cached = self.cached(&digest);
        if let Some(entry) = &cached {
            let age = entry.checked_at.elapsed();
            match &entry.answer {
                Ok(me) if age < FRESH_FOR => return SelfAnswer::Valid(Arc::clone(me)),
                Err(why) if age < REFUSED_FOR => return SelfAnswer::Refused(why.clone()),
                _ => {}
            }
        }
        match self.ask(key).await {
            Ok(Ok(me)) => {
                let me = Arc::new(me);
                self.remember(
                    digest,
                    Entry {
                        answer: Ok(Arc::clone(&me)),
                        checked_at: Instant::now(),
                    },
                );
                SelfAnswer::Valid(me)
            }
            Ok(Err(why)) => {
                self.remember(
                    digest,
                    Entry {
                        answer: Err(why.clone()),
                        checked_at: Instant::now(),
                    },
                );
                SelfAnswer::Refused(why)
            }
            Err(cause) => match cached {
                Some(Entry {
                    answer: Ok(me),
                    checked_at,
                }) if checked_at.elapsed() < STALE_IF_ERROR => {
                    tracing::warn!(central = %self.central, error = %cause, "the central gateway cannot be reached; using a cached access-key validation");
                    SelfAnswer::Valid(me)
                }
                _ => {
                    self.forget(&digest);
                    SelfAnswer::Unavailable(format!(
                        "the central gateway at {} cannot be reached: {cause}",
                        self.central
                    ))
                }
            },
        }
    }

    /// `Ok(Ok(self))`: valid; `Ok(Err(why))`: the central refused it; `Err(cause)`: no usable
    /// answer.
    async fn ask(&self, key: &str) -> Result<Result<Self_, String>, String> {
        let reply = match self
            .client
            .post_json(&self.url, key, SELF_REQUEST.to_vec())
            .await
        {
            Ok(r) => r,
            Err(FetchError::Invalid(why)) => return Ok(Err(why)),
            Err(e) => return Err(e.to_string()),
        };
        let status = reply.status;
        if status.is_success() {
            return match serde_json::from_slice::<Self_>(&reply.body) {
                Ok(me)
                    if me
                        .status
                        .as_ref()
                        .is_some_and(|s| !s.subject.is_empty() || s.user.is_some()) =>
                {
                    Ok(Ok(me))
                }
                Ok(_) => Err("the selves answer names no user".into()),
                Err(e) => Err(format!("the selves answer is not a Self object: {e}")),
            };
        }
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(format!("{} answered {status}", self.url));
        }
        Ok(Err(format!(
            "the central gateway answered {status} for the access key"
        )))
    }
}
