//! Signing keys (private, parsed once) and verifying keys (public, parsed once).
//!
//! Both keep aws-lc-rs objects built at load time, so no call to sign or verify re-parses DER.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
    RsaPublicKeyComponents,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::jwk::Jwk;
use crate::{Algorithm, Error, b64};

/// Smallest RSA modulus accepted for signing or verification, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

enum KeyPairInner {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key with its algorithm, `kid` and precomputed JWS header.
///
/// `Debug` shows only the algorithm and `kid`; the private key is never formatted.
pub struct SigningKey {
    inner: KeyPairInner,
    public: VerifyingKey,
    /// base64url of `{"alg":..,"kid":..,"typ":"JWT"}`, built once so minting only encodes claims.
    header_b64: String,
}

/// PEM text of a private key. `Debug` is redacted; read it with [`SecretPem::expose`].
pub struct SecretPem(String);

impl SecretPem {
    /// The PEM text (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem([redacted])")
    }
}

/// A public key bound to exactly one algorithm and one `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: String,
    key: ParsedPublicKey,
    jwk: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn rejected(e: &aws_lc_rs::error::KeyRejected) -> Error {
    Error::KeyRejected(e.description_())
}

impl SigningKey {
    /// Generates a fresh key: P-256 for `ES256`, Ed25519 for `EdDSA`, 3072-bit RSA for `RS256`.
    pub fn generate(alg: Algorithm) -> Result<SigningKey, Error> {
        let inner = match alg {
            Algorithm::Es256 => KeyPairInner::Ecdsa(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| Error::KeyGeneration)?,
            ),
            Algorithm::Rs256 => KeyPairInner::Rsa(
                RsaKeyPair::generate(KeySize::Rsa3072).map_err(|_| Error::KeyGeneration)?,
            ),
            Algorithm::EdDsa => {
                KeyPairInner::Ed25519(Ed25519KeyPair::generate().map_err(|_| Error::KeyGeneration)?)
            }
            _ => {
                return Err(Error::UnsupportedKey(
                    "kubegate signs only with ES256, RS256 or EdDSA",
                ));
            }
        };
        SigningKey::from_inner(inner)
    }

    /// Loads a private key from PEM: PKCS#8 (`PRIVATE KEY`: P-256, Ed25519 or RSA), SEC1
    /// (`EC PRIVATE KEY`, P-256) or PKCS#1 (`RSA PRIVATE KEY`). The algorithm follows from the
    /// key type: P-256 → `ES256`, Ed25519 → `EdDSA`, RSA (≥ 2048 bits) → `RS256`.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, Error> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| Error::KeyPem("no PKCS#8, SEC1 or PKCS#1 private key found"))?;
        let inner = match &der {
            PrivateKeyDer::Pkcs1(k) => KeyPairInner::Rsa(
                RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|e| rejected(&e))?,
            ),
            PrivateKeyDer::Sec1(k) => KeyPairInner::Ecdsa(
                EcdsaKeyPair::from_private_key_der(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    k.secret_sec1_der(),
                )
                .map_err(|e| rejected(&e))?,
            ),
            PrivateKeyDer::Pkcs8(k) => return SigningKey::from_pkcs8_der(k.secret_pkcs8_der()),
            _ => return Err(Error::KeyPem("unsupported private key encoding")),
        };
        SigningKey::from_inner(inner)
    }

    /// Loads an unencrypted PKCS#8 DER private key (P-256, Ed25519 or RSA).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, Error> {
        let inner = if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
        {
            KeyPairInner::Ecdsa(k)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            KeyPairInner::Ed25519(k)
        } else {
            KeyPairInner::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|_| {
                Error::UnsupportedKey("PKCS#8 key is not P-256, Ed25519 or RSA >= 2048 bits")
            })?)
        };
        SigningKey::from_inner(inner)
    }

    fn from_inner(inner: KeyPairInner) -> Result<SigningKey, Error> {
        let (alg, public) = match &inner {
            KeyPairInner::Ecdsa(k) => (
                Algorithm::Es256,
                PublicParts::Ec(k.public_key().as_ref().to_vec()),
            ),
            KeyPairInner::Ed25519(k) => (
                Algorithm::EdDsa,
                PublicParts::Ed25519(k.public_key().as_ref().to_vec()),
            ),
            KeyPairInner::Rsa(k) => {
                if k.public_modulus_len() < MIN_RSA_MODULUS_BYTES {
                    return Err(Error::UnsupportedKey(
                        "RSA keys must have at least 2048 bits",
                    ));
                }
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                (Algorithm::Rs256, PublicParts::Rsa { n: c.n, e: c.e })
            }
        };
        let public = VerifyingKey::from_parts(alg, &public, None)?;
        let header = serde_json::json!({"alg": alg.name(), "kid": public.kid, "typ": "JWT"});
        let header_b64 = b64::encode(header.to_string().as_bytes());
        Ok(SigningKey {
            inner,
            public,
            header_b64,
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.alg
    }

    /// The RFC 7638 thumbprint of the public key, used as `kid`.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Serializes the private key as PKCS#8 PEM, to persist a generated key.
    pub fn to_pkcs8_pem(&self) -> Result<SecretPem, Error> {
        let der: Vec<u8> = match &self.inner {
            KeyPairInner::Ecdsa(k) => k
                .to_pkcs8v1()
                .map_err(|_| Error::KeyGeneration)?
                .as_ref()
                .to_vec(),
            KeyPairInner::Ed25519(k) => k
                .to_pkcs8v1()
                .map_err(|_| Error::KeyGeneration)?
                .as_ref()
                .to_vec(),
            KeyPairInner::Rsa(k) => {
                let d: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    k.as_der().map_err(|_| Error::KeyGeneration)?;
                d.as_ref().to_vec()
            }
        };
        Ok(SecretPem(pem_encode("PRIVATE KEY", &der)))
    }

    pub(crate) fn header_b64(&self) -> &str {
        &self.header_b64
    }

    /// Signs `message` and returns the raw signature in JWS form (`r || s` for ECDSA).
    /// Tokens are made with [`crate::Minter`]; this is the bare primitive underneath.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            KeyPairInner::Ecdsa(k) => Ok(k
                .sign(&SystemRandom::new(), message)
                .map_err(|_| Error::Signing)?
                .as_ref()
                .to_vec()),
            KeyPairInner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            KeyPairInner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|_| Error::Signing)?;
                Ok(sig)
            }
        }
    }
}

/// Public key material in the form a JWK carries it.
enum PublicParts {
    /// Uncompressed SEC1 point `04 || x || y`.
    Ec(Vec<u8>),
    Ed25519(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl VerifyingKey {
    fn from_parts(
        alg: Algorithm,
        parts: &PublicParts,
        kid: Option<&str>,
    ) -> Result<VerifyingKey, Error> {
        let (key, jwk) = match (alg, parts) {
            (Algorithm::Es256 | Algorithm::Es384, PublicParts::Ec(point)) => {
                let (crv, coord) = if alg == Algorithm::Es256 {
                    ("P-256", 32)
                } else {
                    ("P-384", 48)
                };
                if point.len() != 1 + 2 * coord || point.first() != Some(&4) {
                    return Err(Error::UnsupportedKey(
                        "EC point is not an uncompressed point of the curve",
                    ));
                }
                let key = ParsedPublicKey::new(alg.verification(), point.as_slice())
                    .map_err(|e| rejected(&e))?;
                let jwk = Jwk {
                    kty: "EC".into(),
                    crv: Some(crv.into()),
                    x: Some(b64::encode(&point[1..=coord])),
                    y: Some(b64::encode(&point[1 + coord..])),
                    ..empty_jwk()
                };
                (key, jwk)
            }
            (Algorithm::EdDsa, PublicParts::Ed25519(x)) => {
                let key = ParsedPublicKey::new(alg.verification(), x.as_slice())
                    .map_err(|e| rejected(&e))?;
                let jwk = Jwk {
                    kty: "OKP".into(),
                    crv: Some("Ed25519".into()),
                    x: Some(b64::encode(x)),
                    ..empty_jwk()
                };
                (key, jwk)
            }
            (_, PublicParts::Rsa { n, e }) if alg.is_rsa() => {
                let n = strip_leading_zeros(n);
                let e = strip_leading_zeros(e);
                if n.len() < MIN_RSA_MODULUS_BYTES {
                    return Err(Error::UnsupportedKey(
                        "RSA keys must have at least 2048 bits",
                    ));
                }
                let params = alg
                    .rsa_params()
                    .ok_or(Error::UnsupportedKey("not an RSA algorithm"))?;
                let key = RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .map_err(|e| rejected(&e))?;
                let jwk = Jwk {
                    kty: "RSA".into(),
                    n: Some(b64::encode(n)),
                    e: Some(b64::encode(e)),
                    ..empty_jwk()
                };
                (key, jwk)
            }
            _ => return Err(Error::UnsupportedKey("key type does not match algorithm")),
        };
        let thumbprint = jwk.thumbprint()?;
        let kid = kid.map_or(thumbprint, str::to_owned);
        let jwk = Jwk {
            use_: Some("sig".into()),
            alg: Some(alg.name().into()),
            kid: Some(kid.clone()),
            ..jwk
        };
        Ok(VerifyingKey { alg, kid, key, jwk })
    }

    /// Builds a verifying key from a JWK bound to `alg`.
    ///
    /// The key's `kid` is the JWK's `kid` when present, otherwise its RFC 7638 thumbprint. A JWK
    /// that names a different `alg`, has `use` other than `sig`, lacks `verify` in `key_ops`, or
    /// whose type or curve does not fit `alg` is refused.
    pub fn from_jwk(jwk: &Jwk, alg: Algorithm) -> Result<VerifyingKey, Error> {
        if let Some(a) = &jwk.alg
            && a != alg.name()
        {
            return Err(Error::UnsupportedKey(
                "JWK alg differs from the requested algorithm",
            ));
        }
        if let Some(u) = &jwk.use_
            && u != "sig"
        {
            return Err(Error::UnsupportedKey("JWK is not a signature key"));
        }
        if let Some(ops) = &jwk.key_ops
            && !ops.iter().any(|o| o == "verify")
        {
            return Err(Error::UnsupportedKey("JWK key_ops exclude verify"));
        }
        let field = |v: &Option<String>, what: &'static str| -> Result<Vec<u8>, Error> {
            v.as_deref()
                .and_then(b64::decode)
                .ok_or(Error::UnsupportedKey(what))
        };
        let parts = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) if alg == Algorithm::Es256 => {
                ec_point(&field(&jwk.x, "EC x")?, &field(&jwk.y, "EC y")?, 32)?
            }
            ("EC", Some("P-384")) if alg == Algorithm::Es384 => {
                ec_point(&field(&jwk.x, "EC x")?, &field(&jwk.y, "EC y")?, 48)?
            }
            ("OKP", Some("Ed25519")) if alg == Algorithm::EdDsa => {
                PublicParts::Ed25519(field(&jwk.x, "OKP x")?)
            }
            ("RSA", _) if alg.is_rsa() => PublicParts::Rsa {
                n: field(&jwk.n, "RSA n")?,
                e: field(&jwk.e, "RSA e")?,
            },
            _ => {
                return Err(Error::UnsupportedKey(
                    "JWK type or curve does not fit the algorithm",
                ));
            }
        };
        VerifyingKey::from_parts(alg, &parts, jwk.kid.as_deref())
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (`use: sig`, `alg`, `kid` set).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Checks a raw signature over `message` with this key's one algorithm: the bare
    /// primitive under token verification (JWS signatures are `r || s` for ECDSA).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| Error::BadSignature)
    }
}

fn ec_point(x: &[u8], y: &[u8], coord: usize) -> Result<PublicParts, Error> {
    if x.len() != coord || y.len() != coord {
        return Err(Error::UnsupportedKey("EC coordinate has the wrong length"));
    }
    let mut p = Vec::with_capacity(1 + 2 * coord);
    p.push(4);
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    Ok(PublicParts::Ec(p))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

fn empty_jwk() -> Jwk {
    Jwk {
        kty: String::new(),
        use_: None,
        key_ops: None,
        alg: None,
        kid: None,
        crv: None,
        x: None,
        y: None,
        n: None,
        e: None,
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
