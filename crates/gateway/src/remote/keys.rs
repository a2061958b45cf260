//! A remote issuer's signing keys: discovered from its `/.well-known/openid-configuration`,
//! fetched from its `jwks_uri`, cached, and refreshed when they age or when a token names a key
//! the cache does not hold.
//!
//! Refreshes are single-flight and rate-limited: a flood of tokens with made-up `kid`s costs at
//! most one fetch per [`MIN_REFRESH_INTERVAL`] (counted from the end of the last one). A fetch
//! runs in a task of its own: callers wait for it or not, and one that goes away (a client's
//! reset) neither stops it nor spoils the next. Keys that have aged are refreshed in the
//! background while they go on verifying (stale-while-revalidate), so a slow or hung issuer
//! delays only tokens that need keys not held; when the issuer cannot be reached, the keys
//! already held keep verifying (stale-if-error), however old they are.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use kubegate_tokens::{
    Algorithm, DISCOVERY_PATH, ExternalIdentity, JwkSet, OidcIssuer, OidcIssuerConfig,
};
use serde::Deserialize;

use super::FetchError;
use super::client::HttpsClient;

/// Keys older than this are re-fetched on the next use (the gateway's own `/oidc` serves its
/// JWKS with `max-age=300`).
pub const MAX_KEY_AGE: Duration = Duration::from_secs(300);
/// Least time between two fetch attempts.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The part of a discovery document the gateway needs. Lenient on purpose: providers differ in
/// which optional fields they fill.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
}

/// Where the issuer's identity comes from.
#[derive(Debug, Clone)]
pub enum IssuerOrigin {
    /// A configured issuer URL: the discovery document must name exactly this issuer.
    Configured,
    /// Whatever issuer the discovery document at `base` names (the central gateway, reached at
    /// its internal URL, may publish a different public issuer URL). A `jwks_uri` below that
    /// issuer is fetched below `base` instead, so the keys come over the same verified channel
    /// as the discovery document.
    Discovered {
        /// The URL the issuer is reached at (`<centralUrl>/oidc`).
        base: String,
    },
}

/// A verifier built from one fetch.
#[derive(Debug)]
pub struct Fetched {
    /// The verifier over the fetched keys.
    pub verifier: OidcIssuer,
    /// When the keys were fetched.
    pub fetched_at: Instant,
}

/// Why a token could not be verified.
#[derive(Debug)]
pub enum KeyFailure {
    /// No keys are held and the issuer cannot be reached (the message says why).
    Unavailable(String),
    /// The token does not verify.
    Invalid(kubegate_tokens::Error),
}

/// A fetch under way, which every caller that wants newer keys shares.
type Flight = Shared<BoxFuture<'static, Result<Arc<Fetched>, String>>>;

#[derive(Debug, Default)]
struct RefreshState {
    /// When the last fetch ended.
    last_end: Option<Instant>,
    last_error: Option<String>,
    flight: Option<Flight>,
}

/// What a caller wanting keys newer than those it saw can have.
enum Newer {
    /// Newer keys are held already.
    Held(Arc<Fetched>),
    /// A fetch is under way (perhaps just started) to wait for.
    Coming(Flight),
    /// The last fetch ended too recently to start another; its error, if it failed.
    NotYet(Option<String>),
}

/// Where the keys come from: what a fetch, in a task of its own, needs.
#[derive(Debug)]
struct Origin {
    client: HttpsClient,
    discovery_url: String,
    origin: IssuerOrigin,
    template: OidcIssuerConfig,
}

/// The cached keys of one issuer.
#[derive(Debug)]
pub struct KeySource {
    from: Arc<Origin>,
    current: Arc<ArcSwapOption<Fetched>>,
    refresh: Arc<Mutex<RefreshState>>,
    min_refresh_interval: Duration,
    /// [`MAX_KEY_AGE`], but for tests.
    max_key_age: Duration,
}

impl KeySource {
    /// Keys of the issuer whose discovery document is below `base_url`; `template` supplies
    /// the claim mapping and the default algorithms (used when the discovery document lists
    /// none); its `issuer_url` is replaced by the discovered one for [`IssuerOrigin::Discovered`].
    pub fn new(
        client: HttpsClient,
        base_url: &str,
        origin: IssuerOrigin,
        template: OidcIssuerConfig,
    ) -> KeySource {
        KeySource {
            from: Arc::new(Origin {
                client,
                discovery_url: format!("{}{DISCOVERY_PATH}", base_url.trim_end_matches('/')),
                origin,
                template,
            }),
            current: Arc::default(),
            refresh: Arc::default(),
            min_refresh_interval: MIN_REFRESH_INTERVAL,
            max_key_age: MAX_KEY_AGE,
        }
    }

    /// The same source with another least time between fetches than [`MIN_REFRESH_INTERVAL`].
    pub fn with_min_refresh_interval(mut self, interval: Duration) -> KeySource {
        self.min_refresh_interval = interval;
        self
    }

    /// The issuer of the keys held, if any were fetched.
    pub fn issuer(&self) -> Option<String> {
        self.current
            .load()
            .as_ref()
            .map(|f| f.verifier.config().issuer_url.clone())
    }

    /// The keys to verify with: the cached ones (a refresh starts in the background when they
    /// are older than [`MAX_KEY_AGE`]); fetched, and waited for, when none are held.
    pub async fn keys(&self) -> Result<Arc<Fetched>, String> {
        match self.current.load_full() {
            Some(held) => {
                if held.fetched_at.elapsed() >= self.max_key_age {
                    // Started (or already under way) and not waited for.
                    let _ = self.newer_than(Some(held.fetched_at));
                }
                Ok(held)
            }
            None => match self.newer_than(None) {
                Newer::Held(keys) => Ok(keys),
                Newer::Coming(flight) => flight.await,
                Newer::NotYet(error) => {
                    Err(error.unwrap_or_else(|| "no signing keys have been fetched yet".into()))
                }
            },
        }
    }

    /// Verifies `token`, refreshing the keys once if it names a key not held.
    pub async fn verify(&self, token: &str, now: u64) -> Result<ExternalIdentity, KeyFailure> {
        let keys = self.keys().await.map_err(KeyFailure::Unavailable)?;
        match keys.verifier.verify(token, now) {
            Err(kubegate_tokens::Error::UnknownKeyId | kubegate_tokens::Error::MissingKeyId) => {
                let newer = match self.newer_than(Some(keys.fetched_at)) {
                    Newer::Held(newer) => Some(newer),
                    Newer::Coming(flight) => flight.await.ok(),
                    Newer::NotYet(_) => None,
                };
                newer
                    .unwrap_or(keys)
                    .verifier
                    .verify(token, now)
                    .map_err(KeyFailure::Invalid)
            }
            other => other.map_err(KeyFailure::Invalid),
        }
    }

    /// Keys newer than those fetched at `seen`: held already, coming (a fetch under way, or
    /// one started now), or not yet (the last fetch ended less than the least interval ago).
    fn newer_than(&self, seen: Option<Instant>) -> Newer {
        let mut state = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = self.current.load_full()
            && Some(held.fetched_at) != seen
        {
            return Newer::Held(held);
        }
        if let Some(flight) = &state.flight {
            return Newer::Coming(flight.clone());
        }
        if let Some(end) = state.last_end
            && end.elapsed() < self.min_refresh_interval
        {
            return Newer::NotYet(state.last_error.clone());
        }
        let flight = self.launch();
        state.flight = Some(flight.clone());
        Newer::Coming(flight)
    }

    /// Starts a fetch in a task of its own, which publishes what it finds (the keys, or why
    /// there are none) and ends the flight, whoever is still waiting.
    fn launch(&self) -> Flight {
        let (from, current, refresh) = (
            Arc::clone(&self.from),
            Arc::clone(&self.current),
            Arc::clone(&self.refresh),
        );
        let task = tokio::spawn(async move {
            // Ends the flight even if the fetch panics, so the next caller starts another.
            let ended = FlightEnd(refresh);
            let result = from.fetch().await.map(Arc::new).map_err(|e| e.to_string());
            let mut state = ended.0.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(keys) => {
                    current.store(Some(Arc::clone(keys)));
                    state.last_error = None;
                }
                Err(why) => {
                    tracing::warn!(url = %from.discovery_url, error = %why, "fetching signing keys failed; the keys held, if any, go on verifying");
                    state.last_error = Some(why.clone());
                }
            }
            result
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(format!("fetching signing keys stopped: {e}")))
        }
        .boxed()
        .shared()
    }
}

/// Ends a fetch's flight when the fetch's task ends, however it ends.
struct FlightEnd(Arc<Mutex<RefreshState>>);

impl Drop for FlightEnd {
    fn drop(&mut self) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.flight = None;
        state.last_end = Some(Instant::now());
    }
}

impl Origin {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let discovery: Discovery = self.get_json(&self.discovery_url).await?;
        let mut config = self.template.clone();
        let jwks_url = match &self.origin {
            IssuerOrigin::Configured => {
                if discovery.issuer != config.issuer_url {
                    return Err(FetchError::Invalid(format!(
                        "{} names issuer {:?}, not the configured {:?}",
                        self.discovery_url, discovery.issuer, config.issuer_url
                    )));
                }
                discovery.jwks_uri.clone()
            }
            IssuerOrigin::Discovered { base } => {
                let issuer = discovery.issuer.trim_end_matches('/');
                let rebased = discovery
                    .jwks_uri
                    .strip_prefix(issuer)
                    .filter(|rest| rest.starts_with('/'))
                    .map(|rest| format!("{}{rest}", base.trim_end_matches('/')));
                config.issuer_url = discovery.issuer.clone();
                rebased.unwrap_or_else(|| discovery.jwks_uri.clone())
            }
        };
        let advertised: Vec<Algorithm> = discovery
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|name| Algorithm::from_name(name))
            .collect();
        if !advertised.is_empty() {
            config.signing_algs = advertised;
        }
        let reply = self.client.get(&jwks_url).await?;
        if !reply.status.is_success() {
            return Err(status_error(&jwks_url, reply.status));
        }
        let jwks = JwkSet::from_json(&reply.body)
            .map_err(|e| FetchError::Invalid(format!("{jwks_url}: {e}")))?;
        let verifier = OidcIssuer::new(config, &jwks)
            .map_err(|e| FetchError::Invalid(format!("{jwks_url}: {e}")))?;
        Ok(Fetched {
            verifier,
            fetched_at: Instant::now(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let reply = self.client.get(url).await?;
        if !reply.status.is_success() {
            return Err(status_error(url, reply.status));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| FetchError::Invalid(format!("{url}: not the expected JSON document: {e}")))
    }
}

fn status_error(url: &str, status: http::StatusCode) -> FetchError {
    if status.is_server_error() {
        FetchError::Unreachable(format!("{url} answered {status}"))
    } else {
        FetchError::Invalid(format!("{url} answered {status}"))
    }
}

/// The unverified `iss` of a JWT, used only to pick which verifier to ask.
pub fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    if payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|c| c.iss)
}

/// The claims of a JWT whose signature has already been verified.
pub fn verified_claims<T: serde::de::DeserializeOwned>(token: &str) -> Option<T> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use kubegate_tokens::{KeySet, SigningKey};

    /// An HTTPS issuer whose published key set the test can replace.
    struct Idp {
        url: String,
        jwks: Arc<Mutex<String>>,
        /// Key sets served (counted as each goes out, after `delay`).
        fetches: Arc<AtomicUsize>,
        /// Key-set requests received (counted as each arrives, before `delay`).
        asked: Arc<AtomicUsize>,
        /// How long the key set takes to arrive.
        delay: Arc<Mutex<Duration>>,
        client: HttpsClient,
    }

    async fn idp() -> Idp {
        let (listener, url, acceptor, client) = super::super::test_support::tls_listener().await;
        let discovery =
            serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/keys")}).to_string();
        let jwks = Arc::new(Mutex::new(String::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (served, counted, slow) = (Arc::clone(&jwks), Arc::clone(&fetches), Arc::clone(&delay));
        let arrived = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (discovery, served, counted, slow, arrived) = (
                    discovery.clone(),
                    Arc::clone(&served),
                    Arc::clone(&counted),
                    Arc::clone(&slow),
                    Arc::clone(&arrived),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        let keys = req.uri().path() == "/keys";
                        let (served, counted, discovery) =
                            (Arc::clone(&served), Arc::clone(&counted), discovery.clone());
                        let delay = if keys {
                            arrived.fetch_add(1, Ordering::SeqCst);
                            *slow.lock().unwrap()
                        } else {
                            Duration::ZERO
                        };
                        async move {
                            tokio::time::sleep(delay).await;
                            let body = if keys {
                                counted.fetch_add(1, Ordering::SeqCst);
                                served.lock().unwrap().clone()
                            } else {
                                discovery
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Idp {
            url,
            jwks,
            fetches,
            asked,
            delay,
            client,
        }
    }

    fn id_token(key: &SigningKey, iss: &str) -> String {
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = serde_json::json!({"alg": "ES256", "kid": key.kid()}).to_string();
        let now = kubegate_tokens::unix_now();
        let claims = serde_json::json!({"iss": iss, "aud": "app", "sub": "u1", "exp": now + 600})
            .to_string();
        let input = format!("{}.{}", enc(header.as_bytes()), enc(claims.as_bytes()));
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", enc(&sig))
    }

    fn source(idp: &Idp, interval: Duration) -> KeySource {
        let mut template = OidcIssuerConfig::new(idp.url.clone(), "app");
        template.signing_algs = vec![Algorithm::Es256];
        KeySource::new(
            idp.client.clone(),
            &idp.url,
            IssuerOrigin::Configured,
            template,
        )
        .with_min_refresh_interval(interval)
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_keys_once() {
        let idp = idp().await;
        let old = KeySet::generate(Algorithm::Es256).unwrap();
        *idp.jwks.lock().unwrap() = old.jwks().to_json();
        let keys = source(&idp, Duration::ZERO);
        let now = kubegate_tokens::unix_now();
        let who = keys
            .verify(&id_token(old.active(), &idp.url), now)
            .await
            .unwrap();
        assert_eq!(who.username, format!("{}#u1", idp.url));
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
        // Cached: no fetch for a known kid.
        keys.verify(&id_token(old.active(), &idp.url), now)
            .await
            .unwrap();
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

        // The issuer rotates; a token with the new kid makes the source refetch.
        let new = old.rotate(SigningKey::generate(Algorithm::Es256).unwrap());
        *idp.jwks.lock().unwrap() = new.jwks().to_json();
        keys.verify(&id_token(new.active(), &idp.url), now)
            .await
            .unwrap();
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unknown_kids_do_not_refetch_within_the_interval() {
        let idp = idp().await;
        let published = KeySet::generate(Algorithm::Es256).unwrap();
        *idp.jwks.lock().unwrap() = published.jwks().to_json();
        let keys = source(&idp, Duration::from_secs(3600));
        let now = kubegate_tokens::unix_now();
        keys.verify(&id_token(published.active(), &idp.url), now)
            .await
            .unwrap();
        for _ in 0..5 {
            let stranger = SigningKey::generate(Algorithm::Es256).unwrap();
            let result = keys.verify(&id_token(&stranger, &idp.url), now).await;
            assert!(matches!(
                result,
                Err(KeyFailure::Invalid(kubegate_tokens::Error::UnknownKeyId))
            ));
        }
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
    }

    /// A caller that goes away while its fetch runs (a client's reset, a timeout) neither
    /// stops the fetch nor holds back the next caller: the issuer rotated its key, a token
    /// signed with the new one started a fetch and was dropped, and the next such token is
    /// verified with the keys that fetch brings.
    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_spoil_the_refresh() {
        let idp = idp().await;
        let old = KeySet::generate(Algorithm::Es256).unwrap();
        *idp.jwks.lock().unwrap() = old.jwks().to_json();
        let keys = Arc::new(source(&idp, Duration::from_millis(500)));
        let now = kubegate_tokens::unix_now();
        keys.verify(&id_token(old.active(), &idp.url), now)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let new = old.rotate(SigningKey::generate(Algorithm::Es256).unwrap());
        *idp.jwks.lock().unwrap() = new.jwks().to_json();
        *idp.delay.lock().unwrap() = Duration::from_millis(300);
        let token = id_token(new.active(), &idp.url);
        let gone = tokio::spawn({
            let (keys, token) = (Arc::clone(&keys), token.clone());
            async move { keys.verify(&token, now).await.is_ok() }
        });
        // Dropped once its fetch is under way at the issuer.
        tokio::time::timeout(Duration::from_secs(10), async {
            while idp.asked.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the dropped caller's fetch reached the issuer");
        gone.abort();
        let who = keys.verify(&token, now).await;
        assert!(who.is_ok(), "{who:?}");
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 2, "one fetch, shared");
    }

    /// Keys that have aged go on verifying while newer ones are fetched: a slow (or hung)
    /// issuer delays nobody whose token the held keys verify.
    #[tokio::test]
    async fn aged_keys_verify_while_newer_ones_are_fetched() {
        let idp = idp().await;
        let published = KeySet::generate(Algorithm::Es256).unwrap();
        *idp.jwks.lock().unwrap() = published.jwks().to_json();
        let mut keys = source(&idp, Duration::ZERO);
        keys.max_key_age = Duration::from_millis(50);
        let fresh = keys.keys().await.unwrap();
        let long_ago = fresh.fetched_at;
        tokio::time::sleep(Duration::from_millis(60)).await;
        // The issuer takes 8 s; verifying must not wait for it (4 s is a failsafe for a slow
        // machine, not a measure: a verify that waited would take the 8 s).
        *idp.delay.lock().unwrap() = Duration::from_secs(8);
        let now = kubegate_tokens::unix_now();
        let who = tokio::time::timeout(
            Duration::from_secs(4),
            keys.verify(&id_token(published.active(), &idp.url), now),
        )
        .await
        .expect("verified without waiting for the slow issuer");
        assert!(who.is_ok(), "{who:?}");
        // The refresh went on in the background and replaced the aged keys.
        tokio::time::timeout(Duration::from_secs(30), async {
            while keys.keys().await.unwrap().fetched_at == long_ago {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the aged keys were replaced");
        assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_discovery_document_for_another_issuer_is_refused() {
        let idp = idp().await;
        *idp.jwks.lock().unwrap() = KeySet::generate(Algorithm::Es256).unwrap().jwks().to_json();
        let mut template = OidcIssuerConfig::new("https://not-this-one.example", "app");
        template.signing_algs = vec![Algorithm::Es256];
        let keys = KeySource::new(
            idp.client.clone(),
            &idp.url,
            IssuerOrigin::Configured,
            template,
        );
        match keys.keys().await {
            Err(why) => assert!(why.contains("not the configured"), "{why}"),
            Ok(_) => panic!("keys of another issuer were accepted"),
        }
    }

    #[test]
    fn peek_issuer_reads_only_well_formed_jwts() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", enc("{}"), enc(r#"{"iss":"https://idp"}"#));
        assert_eq!(peek_issuer(&token).as_deref(), Some("https://idp"));
        assert_eq!(peek_issuer("kgak_abc"), None);
        assert_eq!(peek_issuer(&format!("{token}.extra")), None);
        let no_iss = format!("{}.{}.sig", enc("{}"), enc(r#"{"sub":"x"}"#));
        assert_eq!(peek_issuer(&no_iss), None);
    }
}
