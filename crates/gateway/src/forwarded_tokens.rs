//! Identity mode `oidc`: instead of impersonating, the gateway forwards a short-lived token it
//! minted for the caller's identity. An upstream kube-apiserver started with
//! `--oidc-issuer-url=<gateway>/oidc --oidc-client-id=<the upstream's audience>
//! --oidc-username-claim=sub --oidc-username-prefix=- --oidc-groups-claim=groups` trusts it.
//!
//! Each upstream has an audience of its own (`oidcAudience`, by default `kubegate/<target>`),
//! never the gateway's (`kubegate`): whoever reads the requests an upstream receives (its
//! operator, a tenant running a virtual cluster) must not be able to replay the token at the
//! gateway, where it would carry no access-key scope, nor at another upstream; and the
//! tokens the gateway hands its own clients must not be accepted by the upstreams.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kubegate_authz::Identity;
use kubegate_tokens::{Audience, MintRequest, Minter, SubjectKind};

/// Lifetime of a forwarded token.
pub const FORWARDED_TOKEN_TTL: Duration = Duration::from_secs(300);
/// A cached token is reused while it has at least this long left.
const MIN_REMAINING: u64 = 60;
/// Cached identities at most (the cache is cleared when full; it refills on demand).
const MAX_ENTRIES: usize = 10_000;

/// Tokens minted for forwarding, cached per upstream audience and identity.
#[derive(Default)]
pub struct ForwardedTokens {
    cache: Mutex<HashMap<String, (String, u64)>>,
}

/// The cached tokens are live credentials: only their number is shown.
impl std::fmt::Debug for ForwardedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        f.debug_struct("ForwardedTokens")
            .field("cached", &cached)
            .finish()
    }
}

impl ForwardedTokens {
    /// A token for `identity`, for the upstream whose audience is `audience`, minted or
    /// cached.
    pub fn token_for(
        &self,
        minter: &Minter,
        audience: &str,
        identity: &Identity,
        now: u64,
    ) -> Result<String, kubegate_tokens::Error> {
        let key = fingerprint(audience, identity);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, expires)) = cache.get(&key)
            && *expires > now + MIN_REMAINING
        {
            return Ok(token.clone());
        }
        let minted = minter.mint_for(
            &MintRequest {
                subject: identity.name.clone(),
                groups: identity
                    .groups
                    .iter()
                    .filter(|g| g.as_str() != kubegate_authz::ALL_AUTHENTICATED)
                    .cloned()
                    .collect(),
                uid: identity.uid.clone(),
                name: identity.name.clone(),
                kind: SubjectKind::User,
                generation: 0,
                scope: None,
                ttl: Some(FORWARDED_TOKEN_TTL),
                parent: None,
                login: false,
            },
            &Audience::new([audience]),
            now,
        )?;
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        let token = minted.token().to_owned();
        cache.insert(key, (token.clone(), minted.expires_at));
        Ok(token)
    }
}

fn fingerprint(audience: &str, identity: &Identity) -> String {
    let mut key = format!("{audience}\u{0}{}\u{0}{}\u{0}", identity.name, identity.uid);
    for g in &identity.groups {
        key.push_str(g);
        key.push('\u{0}');
    }
    key
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn tokens_are_per_audience_and_never_shown_by_debug() {
        let keys = kubegate_tokens::KeySet::generate(kubegate_tokens::Algorithm::Es256).unwrap();
        let minter = Minter::new(
            Arc::new(keys),
            "https://gw/oidc",
            Audience::new([crate::TOKEN_AUDIENCE]),
        );
        let viewer =
            Identity::authenticated("viewer", "u1", vec!["devs".into()], Default::default());
        let tokens = ForwardedTokens::default();
        let now = kubegate_tokens::unix_now();
        let a = tokens
            .token_for(&minter, "kubegate/cluster/a", &viewer, now)
            .unwrap();
        let b = tokens
            .token_for(&minter, "kubegate/cluster/b", &viewer, now)
            .unwrap();
        assert_ne!(a, b, "each upstream gets a token of its own");
        assert_eq!(
            tokens
                .token_for(&minter, "kubegate/cluster/a", &viewer, now)
                .unwrap(),
            a,
            "cached"
        );
        let shown = format!("{tokens:?}");
        assert_eq!(shown, "ForwardedTokens { cached: 2 }");
        assert!(!shown.contains(&a) && !shown.contains("eyJ"));
    }
}
