//! JWS compact serialization (RFC 7515 §7.1): signing, and strict parsing with the key chosen
//! by the verifier, never by the token.

use serde::{Deserialize, Serialize};

use crate::alg::HeaderAlg;
use crate::{Algorithm, Error, SigningKey, VerifyingKey, b64};

/// Signs `claims` with `key`: `base64url(header) . base64url(claims) . base64url(sig)`.
pub(crate) fn sign<T: Serialize>(key: &SigningKey, claims: &T) -> Result<String, Error> {
    let payload = serde_json::to_vec(claims).map_err(|_| Error::Encode)?;
    let header = key.header_b64();
    let mut out = String::with_capacity(header.len() + payload.len() * 4 / 3 + 700);
    out.push_str(header);
    out.push('.');
    b64::encode_into(&payload, &mut out);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(&sig, &mut out);
    Ok(out)
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Any critical extension is one we do not implement (RFC 7515 §4.1.11), e.g. `b64: false`.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token split and its header checked, signature not yet verified.
pub(crate) struct Unverified<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    payload: &'a str,
}

/// Splits `token`, decodes its header and refuses `none`, `HS*`, unknown algorithms and
/// critical extensions before any key is consulted.
pub(crate) fn parse(token: &str, max_len: usize) -> Result<Unverified<'_>, Error> {
    if token.len() > max_len {
        return Err(Error::TokenTooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    if token.is_empty() {
        return Err(Error::Malformed("empty token"));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed(
            "a JWS has exactly three dot-separated parts",
        ));
    };
    if h.is_empty() || p.is_empty() {
        return Err(Error::Malformed("empty header or payload"));
    }
    let header_bytes = b64::decode(h).ok_or(Error::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| Error::Malformed("header is not a JOSE header object"))?;
    let alg = match HeaderAlg::classify(&header.alg) {
        HeaderAlg::Known(a) => a,
        HeaderAlg::None => return Err(Error::AlgorithmNone),
        HeaderAlg::Symmetric => return Err(Error::SymmetricAlgorithm),
        HeaderAlg::Unknown => return Err(Error::UnsupportedAlgorithm),
    };
    if header.crit.is_some() {
        return Err(Error::Malformed(
            "critical header extensions are not supported",
        ));
    }
    if s.is_empty() {
        return Err(Error::Malformed("empty signature"));
    }
    Ok(Unverified {
        alg,
        kid: header.kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
        payload: p,
    })
}

impl Unverified<'_> {
    /// Checks the signature with `key` (whose algorithm must equal the header's) and returns
    /// the decoded payload bytes.
    pub(crate) fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>, Error> {
        if key.algorithm() != self.alg {
            return Err(Error::AlgorithmMismatch {
                token: self.alg,
                key: key.algorithm(),
            });
        }
        let sig =
            b64::decode(self.signature).ok_or(Error::Malformed("signature is not base64url"))?;
        key.verify_signature(self.signing_input.as_bytes(), &sig)?;
        b64::decode(self.payload).ok_or(Error::Malformed("payload is not base64url"))
    }
}
