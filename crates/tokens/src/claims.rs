//! The claims of a kubegate token: registered claims, `groups`, and the private `"loft.sh"`
//! claim of spec/loft-api.md §2 and §5.

use std::fmt;

use kubegate_api::AccessKeyScope;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The claims kubegate mints and verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the gateway's issuer URL.
    pub iss: String,
    /// Subject: the Kubernetes user name the token stands for.
    pub sub: String,
    /// Audience(s).
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Unique token id, the handle for revocation.
    pub jti: String,
    /// Kubernetes groups of the subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The private Loft claim.
    #[serde(rename = "loft.sh")]
    pub loft: LoftClaim,
}

/// The private `"loft.sh"` claim: `{uid, name, kind, gen, scope}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoftClaim {
    /// UID of the user or team.
    pub uid: String,
    /// Kubernetes object name of the user or team.
    pub name: String,
    /// What `name` refers to.
    pub kind: SubjectKind,
    /// Token generation (`gen` on the wire); must equal the subject's current
    /// `spec.tokenGeneration`, so bumping that revokes every token of the subject.
    #[serde(rename = "gen")]
    pub generation: i64,
    /// Access-key scope the token is limited to; absent = the subject's full permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AccessKeyScope>,
    /// The access key the token was made from, directly or through other tokens (its uid;
    /// kubegate's own claim): the token is good only while that key is. The
    /// [`Verifier`](crate::Verifier) cannot know that; its caller checks the key
    /// still exists and is usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The token is a login's session (kubegate's own claim): the gateway's `/auth/login`
    /// minted it for a password login's key. Only such a token, presented as the session
    /// cookie, may make access keys that outlive it; any other token, however it is presented,
    /// makes keys that end with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub login: bool,
}

/// The `kind` of a [`LoftClaim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    /// A `User`.
    User,
    /// A `Team`.
    Team,
    /// Loft's built-in administrator identity (`LoftAdmin`).
    LoftAdmin,
}

/// The `aud` claim: one audience is written as a string, several as an array; both are read.
#[derive(Clone, PartialEq, Eq)]
pub struct Audience(Vec<String>);

impl Audience {
    /// An audience list.
    pub fn new<I, S>(values: I) -> Audience
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Audience(values.into_iter().map(Into::into).collect())
    }

    /// Whether `aud` is one of the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        self.0.iter().any(|a| a == aud)
    }

    /// The audiences.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Audience, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(Audience(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loft_claim_wire_shape() {
        let c = LoftClaim {
            uid: "u-1".into(),
            name: "alice".into(),
            kind: SubjectKind::User,
            generation: 3,
            scope: None,
            parent: None,
            login: false,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"uid":"u-1","name":"alice","kind":"User","gen":3}"#
        );
        let session = LoftClaim {
            parent: Some("key-1".into()),
            login: true,
            ..c
        };
        let wire = serde_json::to_string(&session).unwrap();
        assert_eq!(
            wire,
            r#"{"uid":"u-1","name":"alice","kind":"User","gen":3,"parent":"key-1","login":true}"#
        );
        assert_eq!(serde_json::from_str::<LoftClaim>(&wire).unwrap(), session);
        let admin: SubjectKind = serde_json::from_str(r#""LoftAdmin""#).unwrap();
        assert_eq!(admin, SubjectKind::LoftAdmin);
    }

    #[test]
    fn audience_string_or_array() {
        let one: Audience = serde_json::from_str(r#""a""#).unwrap();
        let many: Audience = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert!(one.contains("a") && !one.contains("b"));
        assert!(many.contains("b"));
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""a""#);
        assert_eq!(serde_json::to_string(&many).unwrap(), r#"["a","b"]"#);
        assert!(serde_json::from_str::<Audience>("7").is_err());
    }
}
