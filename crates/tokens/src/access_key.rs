//! Access keys: long-lived bearer secrets, stored only as SHA-256 digests.
//!
//! A generated key is `kgak_` followed by 43 base64url characters (256 bits from the operating
//! system's RNG). The prefix lets secret scanners find leaked keys. Keys created elsewhere
//! (e.g. Loft's 64-character keys) have no prefix and still work: lookup is by digest of
//! whatever string was presented.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::digest;
use kubegate_api::{AccessKeySpec, AccessKeyType};
use rand::TryRng;
use rand::rngs::SysRng;
use subtle::ConstantTimeEq;

use crate::{Error, b64};

/// Prefix of every generated access key.
pub const ACCESS_KEY_PREFIX: &str = "kgak_";

/// Random bytes in a generated key.
const SECRET_BYTES: usize = 32;

/// Length of the base64url body of a generated key (32 bytes, no padding).
const BODY_LEN: usize = 43;

/// A bearer access key in clear text. `Debug` is redacted. Equality compares the keys'
/// SHA-256 digests in constant time: how long it takes depends on the keys' lengths, never on
/// where they differ.
#[derive(Clone)]
pub struct AccessKeySecret(String);

impl PartialEq for AccessKeySecret {
    fn eq(&self, other: &Self) -> bool {
        self.digest() == other.digest()
    }
}

impl Eq for AccessKeySecret {}

impl fmt::Debug for AccessKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKeySecret([redacted])")
    }
}

impl AccessKeySecret {
    /// Generates a new key from the OS RNG.
    pub fn generate() -> Result<AccessKeySecret, Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        SysRng.try_fill_bytes(&mut bytes).map_err(|_| Error::Rng)?;
        let mut s = String::with_capacity(ACCESS_KEY_PREFIX.len() + BODY_LEN);
        s.push_str(ACCESS_KEY_PREFIX);
        b64::encode_into(&bytes, &mut s);
        Ok(AccessKeySecret(s))
    }

    /// Wraps a key received from a client or a store.
    pub fn from_presented(key: impl Into<String>) -> AccessKeySecret {
        AccessKeySecret(key.into())
    }

    /// The key text, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest to store and look up by.
    pub fn digest(&self) -> AccessKeyDigest {
        AccessKeyDigest::of(&self.0)
    }
}

/// Whether `s` has the shape of a key this crate generates (`kgak_` + 43 base64url chars).
/// Useful to route a bearer token to the access-key path and for secret scanning; never a
/// substitute for lookup.
pub fn is_generated_access_key(s: &str) -> bool {
    s.strip_prefix(ACCESS_KEY_PREFIX).is_some_and(|body| {
        body.len() == BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// SHA-256 of an access key: what is stored instead of the key. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct AccessKeyDigest([u8; 32]);

impl AccessKeyDigest {
    /// The digest of a presented key.
    pub fn of(presented: &str) -> AccessKeyDigest {
        let d = digest::digest(&digest::SHA256, presented.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        AccessKeyDigest(out)
    }

    /// Wraps stored digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> AccessKeyDigest {
        AccessKeyDigest(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, the stored form.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Parses the stored hex form.
    pub fn from_hex(hex: &str) -> Result<AccessKeyDigest, Error> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(Error::AccessKeyFormat);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or(Error::AccessKeyFormat)?;
            let lo = hex_val(pair[1]).ok_or(Error::AccessKeyFormat)?;
            *o = hi << 4 | lo;
        }
        Ok(AccessKeyDigest(out))
    }

    /// Whether `presented` hashes to this digest, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        *self == AccessKeyDigest::of(presented)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl AccessKeyDigest {
    /// The digest as four words, for comparing and hashing a word at a time.
    fn words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut lanes = [0u8; 8];
            lanes.copy_from_slice(bytes);
            *word = u64::from_le_bytes(lanes);
        }
        words
    }
}

impl PartialEq for AccessKeyDigest {
    /// Constant time, a word at a time (`subtle` keeps the compiler from stopping at the first
    /// difference).
    fn eq(&self, other: &AccessKeyDigest) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0].ct_eq(&b[0]) & a[1].ct_eq(&b[1]) & a[2].ct_eq(&b[2]) & a[3].ct_eq(&b[3])).into()
    }
}

impl Eq for AccessKeyDigest {}

impl std::hash::Hash for AccessKeyDigest {
    /// The first word only: a SHA-256 digest is uniformly distributed already, and a client
    /// cannot choose the digests of the keys the index holds.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.words()[0]);
    }
}

/// Hashes the one word [`AccessKeyDigest`]'s `Hash` writes by taking it as it is: the
/// index's keys need no SipHash (≈ 270 instructions per lookup) to be spread.
#[derive(Default, Clone, Copy, Debug)]
struct DigestWordHasher(u64);

impl std::hash::Hasher for DigestWordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached from `AccessKeyDigest` (it writes one `u64`); folded in for any other use.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

type DigestMap<V> = HashMap<AccessKeyDigest, V, std::hash::BuildHasherDefault<DigestWordHasher>>;

impl fmt::Debug for AccessKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest of a 256-bit secret reveals nothing; a prefix is enough to correlate logs.
        write!(f, "AccessKeyDigest({}…)", &self.to_hex()[..12])
    }
}

/// In-memory index from digest to whatever the store keeps for a key.
#[derive(Clone, Debug)]
pub struct AccessKeyIndex<V> {
    map: DigestMap<V>,
}

impl<V> Default for AccessKeyIndex<V> {
    fn default() -> Self {
        AccessKeyIndex {
            map: DigestMap::default(),
        }
    }
}

impl<V> AccessKeyIndex<V> {
    /// An empty index.
    pub fn new() -> AccessKeyIndex<V> {
        AccessKeyIndex::default()
    }

    /// Adds or replaces the value for `digest`.
    pub fn insert(&mut self, digest: AccessKeyDigest, value: V) -> Option<V> {
        self.map.insert(digest, value)
    }

    /// Removes the value for `digest`.
    pub fn remove(&mut self, digest: &AccessKeyDigest) -> Option<V> {
        self.map.remove(digest)
    }

    /// The value stored for the presented key. The key is hashed first, so the map probe
    /// leaks nothing about stored keys; the final equality is constant-time.
    pub fn lookup(&self, presented: &str) -> Option<&V> {
        self.map.get(&AccessKeyDigest::of(presented))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The lifecycle of one stored key (spec/loft-api.md §2): `disabled`, `ttl` counted from
/// creation or, with `ttlAfterLastActivity`, from the last use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyPolicy {
    /// The object is kept but the key is rejected.
    pub disabled: bool,
    /// Lifetime in seconds; 0 = no expiry.
    pub ttl: u64,
    /// Count `ttl` from `last_activity` instead of `created_at`.
    pub ttl_after_last_activity: bool,
    /// Who manages the key.
    pub key_type: AccessKeyType,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Last use, seconds since the Unix epoch (`status.lastActivity`).
    pub last_activity: Option<u64>,
}

impl AccessKeyPolicy {
    /// The policy of an `AccessKey` spec, with times taken from its metadata and status.
    /// A negative `ttl` on the wire counts as none.
    pub fn from_spec(
        spec: &AccessKeySpec,
        created_at: u64,
        last_activity: Option<u64>,
    ) -> AccessKeyPolicy {
        AccessKeyPolicy {
            disabled: spec.disabled,
            ttl: u64::try_from(spec.ttl).unwrap_or(0),
            ttl_after_last_activity: spec.ttl_after_last_activity,
            key_type: spec.r#type.clone(),
            created_at,
            last_activity,
        }
    }

    /// When the key stops working, if ever.
    pub fn expires_at(&self) -> Option<u64> {
        if self.ttl == 0 {
            return None;
        }
        let from = if self.ttl_after_last_activity {
            self.last_activity
                .unwrap_or(self.created_at)
                .max(self.created_at)
        } else {
            self.created_at
        };
        Some(from.saturating_add(self.ttl))
    }

    /// Whether the key may be used at `now`.
    pub fn check(&self, now: u64) -> Result<(), Error> {
        if self.disabled {
            return Err(Error::AccessKeyDisabled);
        }
        match self.expires_at() {
            Some(at) if now >= at => Err(Error::AccessKeyExpired),
            _ => Ok(()),
        }
    }
}

/// Global TTL limits of the Authentication config (spec/loft-api.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessKeyLimits {
    /// `accessKeyMaxTTLSeconds`: 0 = no global limit.
    pub max_ttl_seconds: u64,
    /// `loginAccessKeyTTLSeconds`: TTL of `Login` keys; 0 = they do not expire.
    pub login_ttl_seconds: u64,
}

impl Default for AccessKeyLimits {
    /// No global limit; login keys live 20 days (Loft's default when unset).
    fn default() -> Self {
        AccessKeyLimits {
            max_ttl_seconds: 0,
            login_ttl_seconds: 20 * 24 * 3600,
        }
    }
}

impl AccessKeyLimits {
    /// The TTL a new key of `key_type` gets when `requested` seconds (0 = none) are asked for.
    pub fn effective_ttl(&self, key_type: &AccessKeyType, requested: u64) -> u64 {
        let ttl = if *key_type == AccessKeyType::Login && requested == 0 {
            self.login_ttl_seconds
        } else {
            requested
        };
        match (self.max_ttl_seconds, ttl) {
            (0, t) => t,
            (max, 0) => max,
            (max, t) => t.min(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_equal_when_their_texts_are() {
        let a = AccessKeySecret::from_presented("kgak_same");
        assert_eq!(a, AccessKeySecret::from_presented("kgak_same"));
        assert_ne!(a, AccessKeySecret::from_presented("kgak_samf"));
        assert_ne!(a, AccessKeySecret::from_presented("kgak_sam"));
    }

    #[test]
    fn generated_keys_have_prefix_entropy_and_shape() {
        let a = AccessKeySecret::generate().unwrap();
        let b = AccessKeySecret::generate().unwrap();
        assert_ne!(a, b);
        assert!(is_generated_access_key(a.expose()));
        assert_eq!(a.expose().len(), ACCESS_KEY_PREFIX.len() + BODY_LEN);
        let raw = b64::decode(&a.expose()[ACCESS_KEY_PREFIX.len()..]).unwrap();
        assert_eq!(raw.len() * 8, 256);
        assert!(!format!("{a:?}").contains(&a.expose()[5..]));
    }

    #[test]
    fn shape_check_rejects_near_misses() {
        assert!(!is_generated_access_key("kgak_short"));
        assert!(!is_generated_access_key(&format!(
            "kgak_{}",
            "a".repeat(42) + "+"
        )));
        assert!(!is_generated_access_key(&format!(
            "KGAK_{}",
            "a".repeat(43)
        )));
        assert!(is_generated_access_key(&format!("kgak_{}", "a".repeat(43))));
    }

    #[test]
    fn digest_hex_round_trip_and_match() {
        let k = AccessKeySecret::generate().unwrap();
        let d = k.digest();
        assert_eq!(AccessKeyDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(d.matches(k.expose()));
        assert!(!d.matches(&k.expose()[1..]));
        assert!(AccessKeyDigest::from_hex("zz").is_err());
        assert!(AccessKeyDigest::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn digests_differing_in_any_byte_are_unequal_and_the_index_finds_each() {
        let d = AccessKeyDigest::of("kgak_example");
        assert_eq!(d, AccessKeyDigest::from_hex(&d.to_hex()).unwrap());
        for i in 0..32 {
            let mut other = d.0;
            other[i] ^= 0x80;
            assert_ne!(d, AccessKeyDigest(other), "byte {i}");
        }
        // Digests that share their first word (the hash) are still told apart.
        let mut index = AccessKeyIndex::new();
        let mut same_first_word = d.0;
        same_first_word[31] ^= 1;
        index.insert(d, "a");
        index.insert(AccessKeyDigest(same_first_word), "b");
        for n in 0..200 {
            index.insert(AccessKeyDigest::of(&format!("key-{n}")), "other");
        }
        assert_eq!(index.lookup("kgak_example"), Some(&"a"));
        assert_eq!(index.map.get(&AccessKeyDigest(same_first_word)), Some(&"b"));
        assert_eq!(index.lookup("key-7"), Some(&"other"));
        assert_eq!(index.lookup("key-200"), None);
        assert_eq!(index.len(), 202);
    }

    #[test]
    fn index_looks_up_by_presented_key() {
        let k = AccessKeySecret::generate().unwrap();
        let loft_style = "x".repeat(64);
        let mut idx = AccessKeyIndex::new();
        idx.insert(k.digest(), "alice");
        idx.insert(AccessKeyDigest::of(&loft_style), "bob");
        assert_eq!(idx.lookup(k.expose()), Some(&"alice"));
        assert_eq!(idx.lookup(&loft_style), Some(&"bob"));
        assert_eq!(idx.lookup("kgak_nope"), None);
        idx.remove(&k.digest());
        assert_eq!(idx.lookup(k.expose()), None);
    }

    fn policy(ttl: u64, after_activity: bool, last: Option<u64>) -> AccessKeyPolicy {
        AccessKeyPolicy {
            disabled: false,
            ttl,
            ttl_after_last_activity: after_activity,
            key_type: AccessKeyType::User,
            created_at: 1_000,
            last_activity: last,
        }
    }

    #[test]
    fn ttl_counts_from_creation() {
        let p = policy(100, false, Some(1_090));
        assert!(p.check(1_099).is_ok());
        assert!(matches!(p.check(1_100), Err(Error::AccessKeyExpired)));
    }

    #[test]
    fn ttl_after_last_activity_slides() {
        let p = policy(100, true, Some(1_090));
        assert!(p.check(1_150).is_ok());
        assert!(matches!(p.check(1_190), Err(Error::AccessKeyExpired)));
        // Never used: counts from creation.
        assert!(matches!(
            policy(100, true, None).check(1_100),
            Err(Error::AccessKeyExpired)
        ));
    }

    #[test]
    fn zero_ttl_never_expires_and_disabled_always_fails() {
        assert!(policy(0, false, None).check(u64::MAX).is_ok());
        let mut p = policy(0, false, None);
        p.disabled = true;
        assert!(matches!(p.check(0), Err(Error::AccessKeyDisabled)));
    }

    #[test]
    fn from_spec_reads_wire_fields() {
        let spec = AccessKeySpec {
            ttl: -5,
            disabled: true,
            ttl_after_last_activity: true,
            r#type: AccessKeyType::Login,
            ..AccessKeySpec::default()
        };
        let p = AccessKeyPolicy::from_spec(&spec, 10, Some(20));
        assert_eq!(p.ttl, 0);
        assert!(p.disabled && p.ttl_after_last_activity);
        assert_eq!(p.key_type, AccessKeyType::Login);
    }

    #[test]
    fn global_limits() {
        let l = AccessKeyLimits::default();
        assert_eq!(l.effective_ttl(&AccessKeyType::Login, 0), 20 * 24 * 3600);
        assert_eq!(l.effective_ttl(&AccessKeyType::User, 0), 0);
        let capped = AccessKeyLimits {
            max_ttl_seconds: 3600,
            login_ttl_seconds: 0,
        };
        assert_eq!(capped.effective_ttl(&AccessKeyType::User, 0), 3600);
        assert_eq!(capped.effective_ttl(&AccessKeyType::User, 60), 60);
        assert_eq!(capped.effective_ttl(&AccessKeyType::User, 7200), 3600);
        assert_eq!(capped.effective_ttl(&AccessKeyType::Login, 0), 3600);
    }
}
