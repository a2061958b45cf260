//! Identity mode `oidc`: instead of impersonating, the gateway forwards a short-lived token it
//! minted for the caller's identity. An upstream kube-apiserver started with
//! `--oidc-issuer-url=<gateway>/oidc --oidc-client-id=kubegate --oidc-username-claim=sub
//! --oidc-username-prefix=- --oidc-groups-claim=groups` trusts it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kubegate_authz::Identity;
use kubegate_tokens::{MintRequest, Minter, SubjectKind};

/// Lifetime of a forwarded token.
pub const FORWARDED_TOKEN_TTL: Duration = Duration::from_secs(300);
/// A cached token is reused while it has at least this long left.
const MIN_REMAINING: u64 = 60;
/// Cached identities at most (the cache is cleared when full; it refills on demand).
const MAX_ENTRIES: usize = 10_000;

/// Tokens minted for forwarding, cached per identity.
#[derive(Debug, Default)]
pub struct ForwardedTokens {
    cache: Mutex<HashMap<String, (String, u64)>>,
}

impl ForwardedTokens {
    /// A token for `identity`, minted or cached.
    pub fn token_for(
        &self,
        minter: &Minter,
        identity: &Identity,
        now: u64,
    ) -> Result<String, kubegate_tokens::Error> {
        let key = fingerprint(identity);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, expires)) = cache.get(&key)
            && *expires > now + MIN_REMAINING
        {
            return Ok(token.clone());
        }
        let minted = minter.mint(
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
            },
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

fn fingerprint(identity: &Identity) -> String {
    let mut key = format!("{}\u{0}{}\u{0}", identity.name, identity.uid);
    for g in &identity.groups {
        key.push_str(g);
        key.push('\u{0}');
    }
    key
}
