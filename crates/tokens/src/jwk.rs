//! JSON Web Keys (RFC 7517) and their RFC 7638 thumbprints.
//!
//! [`Jwk`] has no field for private key material (`d`, `p`, `q`, ...): a key set built from
//! this type can only ever publish public keys, and private members of an imported document
//! are dropped on parsing.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::{Error, b64};

/// One public JSON Web Key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`, `RSA` or `OKP`.
    pub kty: String,
    /// Intended use; kubegate publishes `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Permitted operations, if the publisher restricts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// The one JWS algorithm this key may be used with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Key id, matched against a token header's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Curve (`P-256`, `P-384`, `Ed25519`) for `EC` and `OKP` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// X coordinate (`EC`) or public key (`OKP`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate (`EC`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWK Set document: `{"keys": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys, in publication order.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a JWKS document.
    pub fn from_json(json: &[u8]) -> Result<JwkSet, Error> {
        serde_json::from_slice(json).map_err(|_| Error::Jwks("not a JWK Set JSON document"))
    }

    /// Serializes the set as compact JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings cannot fail to serialize; the fallback keeps library code panic-free.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"keys\":[]}"))
    }

    /// The first key whose `kid` equals `kid`.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

fn member<'a>(v: &'a Option<String>, name: &'static str) -> Result<&'a str, Error> {
    v.as_deref().ok_or(Error::Jwks(name))
}

impl Jwk {
    /// The RFC 7638 thumbprint (SHA-256, base64url without padding) over the required members
    /// of this key in lexicographic order.
    pub fn thumbprint(&self) -> Result<String, Error> {
        let q = |s: &str| serde_json::to_string(s).map_err(|_| Error::Jwks("member encoding"));
        let canonical = match self.kty.as_str() {
            "EC" => format!(
                "{{\"crv\":{},\"kty\":\"EC\",\"x\":{},\"y\":{}}}",
                q(member(&self.crv, "EC key without crv")?)?,
                q(member(&self.x, "EC key without x")?)?,
                q(member(&self.y, "EC key without y")?)?,
            ),
            "RSA" => format!(
                "{{\"e\":{},\"kty\":\"RSA\",\"n\":{}}}",
                q(member(&self.e, "RSA key without e")?)?,
                q(member(&self.n, "RSA key without n")?)?,
            ),
            "OKP" => format!(
                "{{\"crv\":{},\"kty\":\"OKP\",\"x\":{}}}",
                q(member(&self.crv, "OKP key without crv")?)?,
                q(member(&self.x, "OKP key without x")?)?,
            ),
            _ => return Err(Error::Jwks("unsupported kty")),
        };
        Ok(b64::encode(
            digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1 example key and its thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_members_are_dropped() {
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#,
        )
        .unwrap();
        assert!(!serde_json::to_string(&jwk).unwrap().contains("nWGxne"));
    }

    #[test]
    fn unsupported_kty_has_no_thumbprint() {
        let jwk: Jwk = serde_json::from_str(r#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap();
        assert!(matches!(jwk.thumbprint(), Err(Error::Jwks(_))));
    }
}
