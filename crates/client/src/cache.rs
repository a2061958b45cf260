//! Token cache for the exec credential plugin: a minted `DirectClusterEndpointToken` is reused
//! until it is `refresh_after` old, then replaced; when the gateway cannot be reached, a cached
//! token is still handed out up to its own expiry (loftctl's behaviour, spec/loft-api.md §2).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kubegate_api::AccessKeyScope;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::exec::ExecCredential;
use crate::{Error, GatewayClient};

/// A cached token is not handed out in its last seconds: the request it is used for must still
/// reach the server before the token expires.
const EXPIRY_MARGIN_SECS: i64 = 30;

/// Which token the plugin prints.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenSource {
    /// The gateway client's own bearer credential (an access key), unchanged and without expiry.
    AccessKey,
    /// A `DirectClusterEndpointToken` minted with this lifetime and scope, cached.
    DirectClusterEndpointToken {
        /// Requested lifetime (`None` = the gateway's default).
        ttl: Option<Duration>,
        /// Requested scope (`None` = the caller's).
        scope: Option<AccessKeyScope>,
    },
}

/// When a cached token is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Age after which a new token is requested (loftctl: 30 minutes).
    pub refresh_after: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_after: Duration::from_secs(30 * 60),
        }
    }
}

/// One cached token. `Debug` redacts it.
#[derive(Clone)]
pub struct CachedToken {
    /// The token (secret).
    pub token: SecretString,
    /// When it was issued (Unix seconds).
    pub requested_at: i64,
    /// When it stops being valid (Unix seconds), if known.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("requested_at", &self.requested_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl CachedToken {
    fn usable_at(&self, now: i64) -> bool {
        self.expires_at
            .is_none_or(|exp| now + EXPIRY_MARGIN_SECS < exp)
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheFile {
    #[serde(default)]
    tokens: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    token: String,
    requested_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// A JSON file of cached tokens, keyed by a digest of gateway URL, credential and request (the
/// credential itself is never written). Written atomically with owner-only permissions.
#[derive(Clone, Debug)]
pub struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    /// A cache stored at `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> TokenCache {
        TokenCache { path: path.into() }
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached token for `gateway` + `source`, whatever its age.
    pub fn get(
        &self,
        gateway: &GatewayClient,
        source: &TokenSource,
    ) -> Result<Option<CachedToken>, Error> {
        let key = cache_key(gateway, source)?;
        Ok(self.load()?.tokens.get(&key).map(|e| CachedToken {
            token: SecretString::from(e.token.clone()),
            requested_at: e.requested_at,
            expires_at: e.expires_at,
        }))
    }

    /// A token for `gateway` + `source` at time `now` (Unix seconds): the cached one while it is
    /// younger than `policy.refresh_after` and unexpired; otherwise a new one from the gateway,
    /// stored for next time. If the gateway cannot be reached (connection failure, 5xx or 429),
    /// a cached token that has not expired is returned instead. A refusal (401, 403, …) is
    /// returned as the error: the gateway has said no, and a cached token would hide it.
    pub async fn token(
        &self,
        gateway: &GatewayClient,
        source: &TokenSource,
        policy: &RefreshPolicy,
        now: i64,
    ) -> Result<CachedToken, Error> {
        let (ttl, scope) = match source {
            TokenSource::AccessKey => {
                let key = gateway.credential().bearer_secret().ok_or(Error::NoToken)?;
                return Ok(CachedToken {
                    token: SecretString::from(key.to_owned()),
                    requested_at: now,
                    expires_at: None,
                });
            }
            TokenSource::DirectClusterEndpointToken { ttl, scope } => (*ttl, scope.clone()),
        };
        let key = cache_key(gateway, source)?;
        let cached = self.get(gateway, source)?;
        let refresh_after = i64::try_from(policy.refresh_after.as_secs()).unwrap_or(i64::MAX);
        if let Some(c) = &cached {
            let fresh = now.saturating_sub(c.requested_at) < refresh_after && now >= c.requested_at;
            if fresh && c.usable_at(now) {
                return Ok(c.clone());
            }
        }
        match mint(gateway, ttl, scope).await {
            Ok(token) => {
                let expires_at = jwt_expiry(&token).or_else(|| {
                    ttl.map(|t| now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)))
                });
                let fresh = CachedToken {
                    token: SecretString::from(token),
                    requested_at: now,
                    expires_at,
                };
                self.store(&key, &fresh)?;
                Ok(fresh)
            }
            Err(e) if is_unreachable(&e) => match cached {
                Some(c) if c.usable_at(now) => {
                    tracing::warn!(
                        error = %e,
                        "the gateway could not issue a new token; using the cached one until it expires"
                    );
                    Ok(c)
                }
                _ => Err(Error::NoValidToken {
                    source: Box::new(e),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// The ExecCredential for `token`, in `api_version`.
    pub fn exec_credential(
        token: &CachedToken,
        api_version: &str,
    ) -> Result<ExecCredential, Error> {
        ExecCredential::new(api_version, token.token.expose_secret(), token.expires_at)
    }

    /// Drops every cached token (e.g. after logging in with another key).
    pub fn clear(&self) -> Result<(), Error> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                context: "removing",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn load(&self) -> Result<CacheFile, Error> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                // A damaged cache only costs a new token; it must not stop the plugin.
                Ok(serde_json::from_slice(&bytes).unwrap_or_default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CacheFile::default()),
            Err(source) => Err(Error::Io {
                context: "reading",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn store(&self, key: &str, token: &CachedToken) -> Result<(), Error> {
        let mut file = self.load()?;
        file.tokens.insert(
            key.to_owned(),
            Entry {
                token: token.token.expose_secret().to_owned(),
                requested_at: token.requested_at,
                expires_at: token.expires_at,
            },
        );
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::Encoding {
            context: "token cache",
            message: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
    }
}

async fn mint(
    gateway: &GatewayClient,
    ttl: Option<Duration>,
    scope: Option<AccessKeyScope>,
) -> Result<String, Error> {
    let management = gateway.management()?;
    let object = management
        .create_direct_cluster_endpoint_token(ttl, scope)
        .await?;
    object
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or(Error::NoToken)
}

/// Transport failures and server-side trouble mean "could not ask"; anything else is an answer.
fn is_unreachable(error: &Error) -> bool {
    match error {
        Error::Kube(kube_client::Error::Api(status)) => status.code >= 500 || status.code == 429,
        Error::Kube(_) => true,
        _ => false,
    }
}

fn cache_key(gateway: &GatewayClient, source: &TokenSource) -> Result<String, Error> {
    let mut digest = sha2::Sha256::new();
    digest.update(gateway.url().as_bytes());
    digest.update([0]);
    match gateway.credential() {
        crate::Credential::Bearer(token) => digest.update(token.expose_secret().as_bytes()),
        crate::Credential::Exec(exec) => {
            digest.update(exec.command.as_deref().unwrap_or_default().as_bytes());
            for arg in exec.args.iter().flatten() {
                digest.update([0]);
                digest.update(arg.as_bytes());
            }
        }
    }
    digest.update([0]);
    if let TokenSource::DirectClusterEndpointToken { ttl, scope } = source {
        digest.update(ttl.map_or(0, |t| t.as_secs()).to_be_bytes());
        let scope = serde_json::to_vec(scope).map_err(|e| Error::Encoding {
            context: "scope",
            message: e.to_string(),
        })?;
        digest.update(&scope);
    }
    Ok(digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The `exp` claim of a JWT, read without verifying it: the gateway verifies, the client only
/// needs to know when to ask again.
pub(crate) fn jwt_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<i64>,
    }
    serde_json::from_slice::<Claims>(&bytes).ok()?.exp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credential;

    fn jwt(exp: i64) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b(r#"{"alg":"ES256"}"#),
            b(&format!(r#"{{"exp":{exp},"sub":"x"}}"#))
        )
    }

    #[test]
    fn reads_jwt_expiry() {
        assert_eq!(jwt_expiry(&jwt(1234)), Some(1234));
        assert_eq!(jwt_expiry("kgak_not_a_jwt"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }

    fn gateway(url: &str, key: &str) -> GatewayClient {
        GatewayClient::new(url, Credential::bearer(key)).unwrap()
    }

    fn dcet() -> TokenSource {
        TokenSource::DirectClusterEndpointToken {
            ttl: None,
            scope: None,
        }
    }

    fn temp_cache(name: &str) -> TokenCache {
        let dir =
            std::env::temp_dir().join(format!("kubegate-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TokenCache::new(dir.join("tokens.json"))
    }

    /// Nothing listens on port 9 of localhost: every mint attempt is a transport failure.
    const UNREACHABLE: &str = "https://127.0.0.1:9";

    #[tokio::test]
    async fn fresh_cached_token_is_used_without_asking() {
        let cache = temp_cache("fresh");
        let gw = gateway(UNREACHABLE, "k1");
        let key = cache_key(&gw, &dcet()).unwrap();
        cache
            .store(
                &key,
                &CachedToken {
                    token: SecretString::from(jwt(10_000)),
                    requested_at: 1_000,
                    expires_at: Some(10_000),
                },
            )
            .unwrap();
        let policy = RefreshPolicy::default();
        let got = cache
            .token(&gw, &dcet(), &policy, 1_000 + 60)
            .await
            .unwrap();
        assert_eq!(got.token.expose_secret(), jwt(10_000));
        // Older than 30 minutes: a refresh is attempted, fails (unreachable) and the cached
        // token is still returned because it has not expired.
        let got = cache
            .token(&gw, &dcet(), &policy, 1_000 + 1_801)
            .await
            .unwrap();
        assert_eq!(got.expires_at, Some(10_000));
        // Expired: no token at all.
        let err = cache
            .token(&gw, &dcet(), &policy, 10_000)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoValidToken { .. }), "{err}");
        // Another credential or gateway never sees this entry.
        assert!(
            cache
                .get(&gateway(UNREACHABLE, "k2"), &dcet())
                .unwrap()
                .is_none()
        );
        assert!(
            !std::fs::read_to_string(cache.path())
                .unwrap()
                .contains("k1"),
            "the credential is not written"
        );
        cache.clear().unwrap();
        assert!(cache.get(&gw, &dcet()).unwrap().is_none());
    }

    #[tokio::test]
    async fn access_key_source_needs_no_gateway() {
        let cache = temp_cache("key");
        let gw = gateway(UNREACHABLE, "kgak_x");
        let t = cache
            .token(&gw, &TokenSource::AccessKey, &RefreshPolicy::default(), 5)
            .await
            .unwrap();
        assert_eq!(t.token.expose_secret(), "kgak_x");
        assert_eq!(t.expires_at, None);
        assert!(!cache.path().exists());
    }
}
