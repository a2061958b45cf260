//! Who is calling: bearer credentials (kubegate JWTs and access keys) → [`Caller`].

use std::sync::Arc;

use kubegate_api::AccessKeyScope;
use kubegate_authz::{CompiledScope, Identity};
use kubegate_tokens::{AccessKeyIndex, Verifier};

use crate::config::Config;
use crate::directory::Directory;
use crate::store::State;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who (with `system:authenticated` added the Kubernetes way).
    pub identity: Identity,
    /// The credential's scope, compiled.
    pub scope: Arc<CompiledScope>,
    /// The credential's scope as sent on the wire (`None`: unrestricted); shared with the
    /// credential's record rather than copied for every request.
    pub raw_scope: Option<Arc<AccessKeyScope>>,
    /// Which credential was used.
    pub credential: CallerCredential,
}

impl Caller {
    /// When the presented credential expires (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        match &self.credential {
            CallerCredential::AccessKey(key) => key.expires_at,
            CallerCredential::Token { expires_at, .. }
            | CallerCredential::ExternalToken { expires_at } => Some(*expires_at),
            CallerCredential::FrontProxy => None,
        }
    }

    /// The access key (uid) behind the presented credential: the key itself, or the key a token
    /// was made from. A token minted for this caller carries it as its parent, so it stops
    /// working when that key is deleted, disabled or expires.
    pub fn root_key(&self) -> Option<String> {
        match &self.credential {
            CallerCredential::AccessKey(key) if !key.uid.is_empty() => Some(key.uid.clone()),
            CallerCredential::Token { parent, .. } => parent.clone(),
            _ => None,
        }
    }

    /// Whether the caller presented what a login gave it: a password login's `Login` key, or
    /// the session cookie of a session started with such a key (the token says so in its
    /// `login` claim, which only `POST /auth/login` sets, and only for a login's credential).
    /// Keys made with those are the user's own choice of lifetime, as a user who logs in to
    /// create a lasting key expects; a key made with any other expiring credential (a
    /// direct-cluster-endpoint token, a short-lived key, a session started with either, or
    /// any of them put into the session cookie) expires with it.
    pub fn is_login(&self) -> bool {
        match &self.credential {
            CallerCredential::AccessKey(key) => {
                key.key_type == crate::store::StoredAccessKey::LOGIN
            }
            CallerCredential::Token { session, login, .. } => *session && *login,
            _ => false,
        }
    }

    /// `ttl`, cut so that a credential minted with it does not outlive the one presented:
    /// a token or key made from a short-lived credential must not turn it into a lasting one.
    /// `None` when the presented credential has no time left.
    pub fn bounded_ttl(&self, ttl: std::time::Duration, now: u64) -> Option<std::time::Duration> {
        let ttl = match self.expires_at() {
            Some(expires_at) => ttl.min(std::time::Duration::from_secs(
                expires_at.saturating_sub(now),
            )),
            None => ttl,
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// What the gateway knows of an access key a caller presented (never the secret).
#[derive(Debug, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// The key object's name.
    pub name: String,
    /// Its Loft type (`User`, `Login`, …).
    pub key_type: String,
    /// When it expires (Unix seconds), if it does and that is known here.
    pub expires_at: Option<u64>,
    /// Its uid (`config/<name>` for a key of the config file; empty when not known here),
    /// which tokens made from it carry as their parent.
    pub uid: String,
}

/// The credential a caller presented (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerCredential {
    /// An access key.
    /// An access key: what the gateway knows of it, shared with its index entry (one
    /// reference count per request, whatever it holds).
    AccessKey(Arc<AccessKeyInfo>),
    /// Identity headers from a trusted front proxy.
    FrontProxy,
    /// A token the gateway minted.
    Token {
        /// Its `jti`.
        jti: String,
        /// Expiry, Unix seconds.
        expires_at: u64,
        /// The access key (uid) it was made from, if any.
        parent: Option<String>,
        /// Presented as the session cookie.
        session: bool,
        /// Minted as a login's session (the token's `login` claim: see
        /// [`kubegate_tokens::LoftClaim::login`]).
        login: bool,
    },
    /// An ID token of a configured external OIDC issuer (`oidcIssuers`), sent as the bearer
    /// token: the one credential identity mode `passthrough` forwards.
    ExternalToken {
        /// Expiry, Unix seconds.
        expires_at: u64,
    },
}

/// Why authentication failed. Clients only ever see `401 Unauthorized`; the reason goes to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnFailure {
    /// No `Authorization: Bearer` header (or more than one).
    #[error("no bearer credential")]
    Missing,
    /// The credential is not a known access key and not a valid token.
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// The access key is disabled.
    #[error("access key {0:?} is disabled")]
    Disabled(String),
    /// The access key or token expired.
    #[error("credential expired")]
    Expired,
    /// The key or token names a user the gateway does not know.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The key or token was made for another user of this name: one with another UID.
    #[error("the credential was made for an earlier user {0:?} (another UID)")]
    UserReplaced(String),
}

#[derive(Debug, Clone)]
struct KeyRecord {
    info: Arc<AccessKeyInfo>,
    user: String,
    /// The UID the key was made for (`None`: configured keys, and keys stored before UIDs were
    /// recorded).
    user_uid: Option<String>,
    scope: Arc<CompiledScope>,
    raw_scope: Option<Arc<AccessKeyScope>>,
    disabled: bool,
    /// Made with a token whose key is gone (deleted, disabled, or itself orphaned).
    orphaned: bool,
}

/// Authenticates bearer credentials against the configured and stored access keys and the
/// gateway's token verifier.
#[derive(Debug)]
pub struct Credentials {
    keys: AccessKeyIndex<KeyRecord>,
    verifier: Arc<Verifier>,
    generations: std::collections::BTreeMap<String, u64>,
    /// The keys tokens may be made from (uid → expiry): neither deleted nor disabled.
    parents: std::collections::HashMap<String, Option<i64>>,
}

impl Credentials {
    /// Indexes the keys of `config` and `state`.
    pub fn new(config: &Config, state: &State, verifier: Arc<Verifier>) -> Credentials {
        let parents = standing_keys(config, state);
        let mut keys = AccessKeyIndex::new();
        for k in &config.access_keys {
            if let Ok(digest) = kubegate_tokens::AccessKeyDigest::from_hex(&k.sha256) {
                keys.insert(
                    digest,
                    KeyRecord {
                        info: Arc::new(AccessKeyInfo {
                            name: k.name.clone(),
                            key_type: "User".into(),
                            expires_at: None,
                            uid: format!("config/{}", k.name),
                        }),
                        user: k.user.clone(),
                        user_uid: None,
                        scope: Arc::new(CompiledScope::new(k.scope.as_ref())),
                        raw_scope: k.scope.clone().map(Arc::new),
                        disabled: false,
                        orphaned: false,
                    },
                );
            }
        }
        for k in state.access_keys.values() {
            if let Ok(digest) = kubegate_tokens::AccessKeyDigest::from_hex(&k.sha256) {
                keys.insert(
                    digest,
                    KeyRecord {
                        info: Arc::new(AccessKeyInfo {
                            name: k.name.clone(),
                            key_type: k.key_type.clone(),
                            // Before the epoch: expired.
                            expires_at: k.expires_at.map(|e| u64::try_from(e).unwrap_or(0)),
                            uid: k.uid.clone(),
                        }),
                        user: k.user.clone(),
                        user_uid: k.user_uid.clone(),
                        scope: Arc::new(CompiledScope::new(k.scope.as_ref())),
                        raw_scope: k.scope.clone().map(Arc::new),
                        disabled: k.disabled,
                        orphaned: !k.disabled && !parents.contains_key(&k.uid),
                    },
                );
            }
        }
        // A user's generation is the configured one (Loft's `User.spec.tokenGeneration`,
        // raised by an operator) plus the store's (raised by an embedding platform through
        // `Store::bump_token_generation`): raising either revokes the user's tokens.
        let mut generations = state.token_generations.clone();
        for user in &config.users {
            let generation = generations.entry(user.name.clone()).or_insert(0);
            *generation = generation.saturating_add(user.token_generation);
        }
        Credentials {
            keys,
            verifier,
            generations,
            parents,
        }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The current token generation of a user.
    pub fn generation(&self, user: &str) -> u64 {
        self.generations.get(user).copied().unwrap_or(0)
    }

    /// A user token for `identity` at the user's current generation (so "revoke all my
    /// tokens" reaches it), limited to `scope`, living `ttl` (the minter's bound when `None`).
    pub fn user_token_request(
        &self,
        identity: &Identity,
        scope: Option<AccessKeyScope>,
        ttl: Option<std::time::Duration>,
        parent: Option<String>,
    ) -> kubegate_tokens::MintRequest {
        kubegate_tokens::MintRequest {
            subject: identity.name.clone(),
            groups: identity.groups.clone(),
            uid: identity.uid.clone(),
            name: identity.name.clone(),
            kind: kubegate_tokens::SubjectKind::User,
            generation: self.generation(&identity.name) as i64,
            scope,
            ttl,
            parent,
            login: false,
        }
    }

    /// Authenticates a bearer credential.
    pub fn authenticate(
        &self,
        bearer: &str,
        directory: &Directory,
        now: u64,
    ) -> Result<Caller, AuthnFailure> {
        if let Some(record) = self.keys.lookup(bearer) {
            if record.disabled {
                return Err(AuthnFailure::Disabled(record.info.name.clone()));
            }
            if record.orphaned {
                return Err(AuthnFailure::Invalid(
                    "the access key this key was made from (through a token) is gone".into(),
                ));
            }
            if record.info.expires_at.is_some_and(|e| e <= now) {
                return Err(AuthnFailure::Expired);
            }
            let user = directory
                .user(&record.user)
                .ok_or_else(|| AuthnFailure::UnknownUser(record.user.clone()))?;
            if record.user_uid.as_ref().is_some_and(|uid| *uid != user.uid) {
                return Err(AuthnFailure::UserReplaced(record.user.clone()));
            }
            return Ok(Caller {
                identity: Identity::authenticated(
                    user.name.clone(),
                    user.uid.clone(),
                    user.groups.clone(),
                    Default::default(),
                ),
                scope: Arc::clone(&record.scope),
                raw_scope: record.raw_scope.clone(),
                credential: CallerCredential::AccessKey(Arc::clone(&record.info)),
            });
        }
        if bearer.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(AuthnFailure::Invalid("not a known access key".into()));
        }
        let claims = self
            .verifier
            .verify(bearer, now, |loft| Some(self.generation(&loft.name) as i64))
            .map_err(|e| match e {
                kubegate_tokens::Error::Expired { .. } => AuthnFailure::Expired,
                other => AuthnFailure::Invalid(other.to_string()),
            })?;
        if let Some(parent) = &claims.loft.parent {
            // Made from a key: good only while the key is (not deleted, disabled or expired).
            let live = self
                .parents
                .get(parent)
                .is_some_and(|expires| expires.is_none_or(|e| e > now as i64));
            if !live {
                return Err(AuthnFailure::Invalid(
                    "the access key the token was made from is gone".into(),
                ));
            }
        }
        let user = directory
            .user(&claims.loft.name)
            .ok_or_else(|| AuthnFailure::UnknownUser(claims.loft.name.clone()))?;
        if claims.loft.uid != user.uid {
            return Err(AuthnFailure::UserReplaced(claims.loft.name.clone()));
        }
        Ok(Caller {
            identity: Identity::authenticated(
                user.name.clone(),
                user.uid.clone(),
                user.groups.clone(),
                Default::default(),
            ),
            scope: Arc::new(CompiledScope::new(claims.loft.scope.as_ref())),
            raw_scope: claims.loft.scope.clone().map(Arc::new),
            credential: CallerCredential::Token {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
                parent: claims.loft.parent.clone(),
                session: false,
                login: claims.loft.login,
            },
        })
    }
}

/// The most links a line of keys made with tokens may have between a key and its root (a key
/// made with a key, at login, or through a configured key): a key deeper down counts as gone.
/// No real use comes near it; it bounds the walks, and a cycle (which the API cannot make,
/// but a hand-edited state file could) is never a line that reaches a root.
const MAX_KEY_CHAIN: usize = 32;

/// The keys tokens and keys may be made from (uid → expiry): every configured key, and every
/// stored key that is not disabled and, when it was made with a token, whose parent key
/// stands too, all the way up, within [`MAX_KEY_CHAIN`] links.
fn standing_keys(config: &Config, state: &State) -> std::collections::HashMap<String, Option<i64>> {
    use std::collections::HashMap;
    let mut standing: HashMap<String, Option<i64>> = config
        .access_keys
        .iter()
        .map(|k| (format!("config/{}", k.name), None))
        .collect();
    let by_uid: HashMap<&str, &crate::store::StoredAccessKey> = state
        .access_keys
        .values()
        .map(|k| (k.uid.as_str(), k))
        .collect();
    // Per key: whether it stands, and how many links it is below its root.
    let mut decided: HashMap<&str, (bool, usize)> = HashMap::new();
    for key in state.access_keys.values() {
        // Walk up to a root, a missing parent, or a key already decided: what is above the
        // topmost key walked, as (stands, its links below the root).
        let mut chain = Vec::new();
        let mut at = Some(key);
        let above = loop {
            let Some(k) = at else { break Some((false, 0)) };
            if let Some(&known) = decided.get(k.uid.as_str()) {
                break Some(known);
            }
            if chain.len() > MAX_KEY_CHAIN {
                break None;
            }
            chain.push(k);
            match &k.parent {
                None => break Some((true, 0)),
                // A configured key stands while the configuration has it.
                Some(parent) if parent.starts_with("config/") => {
                    break Some((standing.contains_key(parent), 0));
                }
                Some(parent) => at = by_uid.get(parent.as_str()).copied(),
            }
        };
        match above {
            // From the top down: a disabled key, or one too deep, fails itself and every key
            // below it.
            Some((mut stands, mut depth)) => {
                let top_is_root = chain.last().is_some_and(|k| k.parent.is_none());
                for (i, k) in chain.iter().rev().enumerate() {
                    if !(i == 0 && top_is_root) {
                        depth += 1;
                    }
                    stands = stands && !k.disabled && depth <= MAX_KEY_CHAIN;
                    decided.insert(k.uid.as_str(), (stands, depth));
                }
            }
            // More than `MAX_KEY_CHAIN` links above it, none decided: too deep (or a cycle).
            None => {
                decided.insert(key.uid.as_str(), (false, MAX_KEY_CHAIN + 1));
            }
        }
    }
    for key in state.access_keys.values() {
        if decided
            .get(key.uid.as_str())
            .is_some_and(|&(stands, _)| stands)
        {
            standing.insert(key.uid.clone(), key.expires_at);
        }
    }
    standing
}

/// The bearer token of a request, read as kube-apiserver's bearer-token authenticator reads it
/// (apiserver `pkg/authentication/request/bearertoken`): exactly one `Authorization` header;
/// its value trimmed, split on spaces into at most three parts, the first `bearer` in any
/// case, the token the second (so `Bearer  x`, with two spaces, has none, and `Bearer x y` has
/// `x`). An upstream that is passed the header reads the same token the gateway checked. A
/// value with a byte `HeaderValue::to_str` refuses has no token.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    // `to_str`'s rule (visible ASCII, space, tab), folded without stopping early so that it
    // runs several bytes at a time over the token, which is most of the value.
    let valid = bytes.iter().fold(true, |ok, &b| {
        ok & (matches!(b, b' '..=b'~') | (b == b'\t'))
    });
    // All ASCII by now, where `trim_ascii` trims what Go's `strings.TrimSpace` would.
    let (scheme, rest) = bytes.trim_ascii().split_at_checked(BEARER.len())?;
    if !valid || !scheme.eq_ignore_ascii_case(BEARER) {
        return None;
    }
    let token = match rest.iter().position(|&b| b == b' ') {
        Some(end) => &rest[..end],
        None => rest,
    };
    let token = std::str::from_utf8(token).ok()?;
    (!token.is_empty()).then_some(token)
}

/// The scheme and the space after it.
const BEARER: &[u8] = b"bearer ";

#[cfg(test)]
mod tests {
    use super::bearer;
    use proptest::prelude::*;

    /// Which keys stand: configured keys; stored keys not disabled whose chain of parents (keys
    /// made with tokens) reaches a standing root.
    #[test]
    fn keys_made_with_tokens_stand_only_while_their_parents_do() {
        use crate::store::{State, StoredAccessKey};
        let config = crate::config::Config::parse(
            "listen: 127.0.0.1:0\nstateDir: /tmp/unused\nusers: [{name: alice}]\naccessKeys: [{name: ci, user: alice, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}]\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let key = |uid: &str, parent: Option<&str>, disabled: bool| StoredAccessKey {
            uid: uid.into(),
            parent: parent.map(Into::into),
            disabled,
            ..StoredAccessKey::for_test(uid, "alice", "User", 1, None)
        };
        let mut state = State::default();
        for k in [
            key("root", None, false),
            key("child", Some("root"), false),
            key("grandchild", Some("child"), false),
            key("off", None, true),
            key("below-off", Some("off"), false),
            key("orphan", Some("deleted"), false),
            key("from-config", Some("config/ci"), false),
            key("from-removed-config", Some("config/removed"), false),
            key("loop-a", Some("loop-b"), false),
            key("loop-b", Some("loop-a"), false),
        ] {
            state.access_keys.insert(k.uid.clone(), k);
        }
        let standing = |state: &State| {
            let mut uids: Vec<String> = super::standing_keys(&config, state).into_keys().collect();
            uids.sort();
            uids
        };
        assert_eq!(
            standing(&state),
            ["child", "config/ci", "from-config", "grandchild", "root"]
        );
        // Deleting the root ends its whole line.
        state.access_keys.remove("root");
        assert_eq!(standing(&state), ["config/ci", "from-config"]);

        // A line 40 keys deep from the configured key: whatever order the keys are looked at
        // in, a key 10 links down stands (a walk that runs too far decides only its own key).
        let mut deep = State::default();
        for depth in 1..=40 {
            let parent = if depth == 1 {
                "config/ci".to_owned()
            } else {
                format!("d{:02}", depth - 1)
            };
            let k = key(&format!("d{depth:02}"), Some(&parent), false);
            deep.access_keys.insert(format!("{:02}", 41 - depth), k);
        }
        let standing = super::standing_keys(&config, &deep);
        // The configured key's line: d01 is one link below it, d32 the last within reach.
        for depth in 1..=40 {
            let uid = format!("d{depth:02}");
            assert_eq!(standing.contains_key(&uid), depth <= 32, "{uid}");
        }
        // The same, looked at from the top down.
        let top_down: State = State {
            access_keys: deep
                .access_keys
                .into_values()
                .map(|k| (k.uid.clone(), k))
                .collect(),
            ..State::default()
        };
        let standing = super::standing_keys(&config, &top_down);
        for depth in 1..=40 {
            let uid = format!("d{depth:02}");
            assert_eq!(standing.contains_key(&uid), depth <= 32, "{uid}");
        }
    }

    fn headers(values: &[&[u8]]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        headers
    }

    /// kube-apiserver's rule transcribed from Go, on `str`: what the byte-wise version must
    /// agree with.
    fn bearer_by_str(headers: &http::HeaderMap) -> Option<&str> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        // auth := strings.TrimSpace(req.Header.Get("Authorization"))
        let auth = value.to_str().ok()?.trim();
        // parts := strings.SplitN(auth, " ", 3)
        let parts: Vec<&str> = auth.splitn(3, ' ').collect();
        // if len(parts) < 2 || strings.ToLower(parts[0]) != "bearer"
        if parts.len() < 2 || parts[0].to_lowercase() != "bearer" {
            return None;
        }
        // token := parts[1]; if len(token) == 0 { return nil, false, nil }
        let token = parts[1];
        (!token.is_empty()).then_some(token)
    }

    #[test]
    fn bearer_tokens() {
        let table: &[(&[&[u8]], Option<&str>)] = &[
            (&[b"Bearer abc.def"], Some("abc.def")),
            (&[b"bearer abc"], Some("abc")),
            (&[b"BEARER abc"], Some("abc")),
            (&[b"Bearer abc \t"], Some("abc")),
            (&[b" \tBearer abc"], Some("abc")),
            // kube's second part: a second space makes it empty, a later one ends it.
            (&[b"Bearer   abc \t"], None),
            (&[b"Bearer  abc"], None),
            (&[b"Bearer a b"], Some("a")),
            (&[b"Bearer a\tb"], Some("a\tb")),
            // No token, another scheme, no space after the scheme, a tab instead of it.
            (&[], None),
            (&[b"Bearer"], None),
            (&[b"Bearer "], None),
            (&[b"Bearer  \t "], None),
            (&[b"Basic YWJjOmRlZg=="], None),
            (&[b"Bearerabc"], None),
            (&[b"Bearer\tabc"], None),
            (&[b"Bearers abc"], None),
            // Two headers: neither counts. Bytes `to_str` refuses: no token.
            (&[b"Bearer a", b"Bearer b"], None),
            (&[b"Bearer caf\xc3\xa9"], None),
        ];
        for (values, expected) in table {
            let headers = headers(values);
            assert_eq!(bearer(&headers), *expected, "{values:?}");
            assert_eq!(bearer_by_str(&headers), *expected, "{values:?}");
        }
    }

    proptest! {
        #[test]
        fn bearer_agrees_with_the_str_rule(
            scheme in prop::sample::select(vec!["Bearer", "bearer", "BeArEr", "Basic", "Bearer\t", "", " Bearer", "\tbearer"]),
            gap in "[ \t]{0,3}",
            // Mostly token characters, some whitespace, now and then a byte `to_str` refuses
            // (DEL and other controls cannot be in a `HeaderValue` at all).
            token in proptest::collection::vec(prop_oneof![
                8 => 0x21u8..0x7f,
                2 => Just(b' '),
                1 => Just(b'\t'),
                1 => Just(0xc3u8),
            ], 0..12),
        ) {
            let mut value = format!("{scheme}{gap}").into_bytes();
            value.extend_from_slice(&token);
            if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                let mut headers = http::HeaderMap::new();
                headers.insert(http::header::AUTHORIZATION, value);
                prop_assert_eq!(bearer(&headers), bearer_by_str(&headers));
            }
        }
    }
}
