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
    windows: Windows,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Windows {
    fresh: Duration,
    refused: Duration,
    stale: Duration,
}

impl SelfCache {
    /// Validates keys at `<central_url>/kubernetes/management/apis/management.loft.sh/v1/selves`.
    pub fn new(client: HttpsClient, central_url: &str) -> SelfCache {
        let central = central_url.trim_end_matches('/').to_owned();
        SelfCache {
            client,
            url: format!("{central}/kubernetes/management/apis/management.loft.sh/v1/selves"),
            central,
            windows: Windows {
                fresh: FRESH_FOR,
                refused: REFUSED_FOR,
                stale: STALE_IF_ERROR,
            },
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The same cache with other time windows than [`FRESH_FOR`], [`REFUSED_FOR`] and
    /// [`STALE_IF_ERROR`].
    pub fn with_windows(mut self, fresh: Duration, refused: Duration, stale: Duration) -> Self {
        self.windows = Windows {
            fresh,
            refused,
            stale,
        };
        self
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
            let stale = self.windows.stale;
            entries.retain(|_, e| e.checked_at.elapsed() < stale);
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
                Ok(me) if age < self.windows.fresh => return SelfAnswer::Valid(Arc::clone(me)),
                Err(why) if age < self.windows.refused => return SelfAnswer::Refused(why.clone()),
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
                }) if checked_at.elapsed() < self.windows.stale => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Self_ {
        Self_ {
            status: Some(kubegate_api::SelfStatus {
                subject: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn digest(key: &str) -> [u8; 32] {
        sha2::Sha256::digest(key.as_bytes()).into()
    }

    fn entry(answer: Result<Arc<Self_>, String>) -> Entry {
        Entry {
            answer,
            checked_at: Instant::now(),
        }
    }

    /// A cache whose central is a port nothing listens on.
    async fn unreachable(fresh: Duration, stale: Duration) -> (SelfCache, String) {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_file =
            std::env::temp_dir().join(format!("kubegate-selves-{}.crt", uuid::Uuid::new_v4()));
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let client = HttpsClient::new(Some(&ca_file), "test").unwrap();
        let _ = std::fs::remove_file(&ca_file);
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", dead.local_addr().unwrap());
        drop(dead);
        let cache = SelfCache::new(client, &url).with_windows(fresh, REFUSED_FOR, stale);
        (cache, url)
    }

    #[tokio::test]
    async fn validated_keys_outlive_an_unreachable_central_until_the_stale_window_ends() {
        let (cache, url) = unreachable(Duration::ZERO, STALE_IF_ERROR).await;
        cache.remember(digest("known"), entry(Ok(Arc::new(named("alice")))));
        match cache.check("known").await {
            SelfAnswer::Valid(me) => assert_eq!(me.status.as_ref().unwrap().subject, "alice"),
            other => panic!("expected the cached answer, got {other:?}"),
        }
        match cache.check("unknown").await {
            SelfAnswer::Unavailable(message) => assert!(
                message.starts_with(&format!("the central gateway at {url} cannot be reached: ")),
                "{message}"
            ),
            other => panic!("expected Unavailable, got {other:?}"),
        }

        let (expired, _) = unreachable(Duration::ZERO, Duration::ZERO).await;
        expired.remember(digest("known"), entry(Ok(Arc::new(named("alice")))));
        assert!(matches!(
            expired.check("known").await,
            SelfAnswer::Unavailable(_)
        ));
        assert!(expired.cached(&digest("known")).is_none());
    }

    #[tokio::test]
    async fn fresh_answers_and_refusals_are_served_without_asking() {
        // No stale window: only the fresh-cache path can answer while the central is down.
        let (cache, _) = unreachable(FRESH_FOR, Duration::ZERO).await;
        cache.remember(digest("good"), entry(Ok(Arc::new(named("bob")))));
        cache.remember(digest("bad"), entry(Err("refused".into())));
        assert!(matches!(cache.check("good").await, SelfAnswer::Valid(_)));
        assert!(matches!(cache.check("bad").await, SelfAnswer::Refused(_)));
    }
}
