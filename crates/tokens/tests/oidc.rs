//! External OIDC issuers: ID tokens signed by an independent JWT library, verified against a
//! JWKS document and mapped to users and groups the way kube-apiserver's `--oidc-*` flags do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubegate_tokens::{
    Algorithm, Error, ExternalIdentity, OidcIssuer, OidcIssuerConfig, SigningKey, UsernamePrefix,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://dex.example";
const CLIENT: &str = "kubernetes";
const NOW: u64 = 1_800_000_000;
const RSA_PKCS8: &str = include_str!("data/rsa_pkcs8.pem");
const EC_PKCS8: &str = include_str!("data/ec_pkcs8.pem");

struct Idp {
    rsa: jsonwebtoken::EncodingKey,
    ec: jsonwebtoken::EncodingKey,
    jwks: Value,
}

fn idp() -> Idp {
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PKCS8.as_bytes()).unwrap();
    let ec = jsonwebtoken::EncodingKey::from_ec_pem(EC_PKCS8.as_bytes()).unwrap();
    let mut rsa_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, jsonwebtoken::Algorithm::RS256).unwrap(),
    )
    .unwrap();
    rsa_jwk["kid"] = "rsa-1".into();
    rsa_jwk["use"] = "sig".into();
    let mut ec_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&ec, jsonwebtoken::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    ec_jwk["kid"] = "ec-1".into();
    // An encryption key and a symmetric key the verifier must skip.
    let enc = json!({"kty": "RSA", "use": "enc", "kid": "enc-1", "n": rsa_jwk["n"], "e": "AQAB"});
    let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    Idp {
        rsa,
        ec,
        jwks: json!({"keys": [rsa_jwk, ec_jwk, enc, oct]}),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "CgVhbGljZRIFbG9jYWw",
        "email": "alice@example.com",
        "email_verified": true,
        "groups": ["dev", "ops"],
        "hd": "example.com",
        "exp": NOW + 300,
        "iat": NOW,
    })
}

fn sign(
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    c: &Value,
) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, c, key).unwrap()
}

fn issuer(cfg: OidcIssuerConfig) -> OidcIssuer {
    OidcIssuer::from_jwks_json(cfg, idp().jwks.to_string().as_bytes()).unwrap()
}

fn rs(c: &Value) -> String {
    sign(&idp().rsa, jsonwebtoken::Algorithm::RS256, Some("rsa-1"), c)
}

#[test]
fn default_flags_prefix_sub_with_issuer() {
    let v = issuer(OidcIssuerConfig::new(ISSUER, CLIENT));
    let id = v.verify(&rs(&claims()), NOW).unwrap();
    assert_eq!(
        id,
        ExternalIdentity {
            username: format!("{ISSUER}#CgVhbGljZRIFbG9jYWw"),
            groups: vec![],
            subject: "CgVhbGljZRIFbG9jYWw".into(),
            expires_at: NOW + 300,
        }
    );
}

#[test]
fn email_claim_is_unprefixed_and_must_be_verified() {
    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.username_claim = "email".into();
    let v = issuer(cfg);
    assert_eq!(
        v.verify(&rs(&claims()), NOW).unwrap().username,
        "alice@example.com"
    );
    let mut c = claims();
    c["email_verified"] = false.into();
    assert_eq!(v.verify(&rs(&c), NOW).unwrap_err(), Error::EmailNotVerified);
    c["email_verified"] = "true".into();
    assert_eq!(v.verify(&rs(&c), NOW).unwrap_err(), Error::EmailNotVerified);
    c.as_object_mut().unwrap().remove("email_verified");
    assert!(v.verify(&rs(&c), NOW).is_ok());
}

#[test]
fn prefixes_and_groups() {
    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.username_claim = "email".into();
    cfg.username_prefix = UsernamePrefix::Custom("oidc:".into());
    cfg.groups_claim = Some("groups".into());
    cfg.groups_prefix = "oidc:".into();
    let v = issuer(cfg.clone());
    let id = v.verify(&rs(&claims()), NOW).unwrap();
    assert_eq!(id.username, "oidc:alice@example.com");
    assert_eq!(
        id.groups,
        vec!["oidc:dev".to_owned(), "oidc:ops".to_owned()]
    );

    let mut c = claims();
    c["groups"] = "solo".into();
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap().groups,
        vec!["oidc:solo".to_owned()]
    );
    c["groups"] = json!([1, 2]);
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap_err(),
        Error::InvalidClaim("groups".into())
    );
    c.as_object_mut().unwrap().remove("groups");
    assert!(v.verify(&rs(&c), NOW).unwrap().groups.is_empty());

    cfg.username_claim = "sub".into();
    cfg.username_prefix = UsernamePrefix::Disabled;
    let v = issuer(cfg);
    assert_eq!(
        v.verify(&rs(&claims()), NOW).unwrap().username,
        "CgVhbGljZRIFbG9jYWw"
    );
}

#[test]
fn username_claim_missing_or_not_a_string() {
    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.username_claim = "preferred_username".into();
    let v = issuer(cfg);
    assert_eq!(
        v.verify(&rs(&claims()), NOW).unwrap_err(),
        Error::MissingClaim("preferred_username".into())
    );
    let mut c = claims();
    c["preferred_username"] = json!(42);
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap_err(),
        Error::InvalidClaim("preferred_username".into())
    );
}

#[test]
fn required_claims() {
    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.required_claims = vec![("hd".into(), "example.com".into())];
    let v = issuer(cfg);
    assert!(v.verify(&rs(&claims()), NOW).is_ok());
    let mut c = claims();
    c["hd"] = "evil.com".into();
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap_err(),
        Error::RequiredClaim("hd".into())
    );
}

#[test]
fn issuer_audience_and_time() {
    let v = issuer(OidcIssuerConfig::new(ISSUER, CLIENT));
    let mut c = claims();
    c["iss"] = format!("{ISSUER}/").into();
    assert_eq!(v.verify(&rs(&c), NOW).unwrap_err(), Error::WrongIssuer);
    let mut c = claims();
    c["aud"] = json!(["other", CLIENT]);
    assert!(v.verify(&rs(&c), NOW).is_ok());
    c["aud"] = json!(["other"]);
    assert_eq!(v.verify(&rs(&c), NOW).unwrap_err(), Error::WrongAudience);
    let c = claims();
    assert!(matches!(
        v.verify(&rs(&c), NOW + 361),
        Err(Error::Expired { .. })
    ));
    let mut c = claims();
    c["nbf"] = json!(NOW + 120);
    assert!(matches!(
        v.verify(&rs(&c), NOW),
        Err(Error::NotYetValid { .. })
    ));
    let mut c = claims();
    c["exp"] = json!((NOW + 10) as f64 + 0.5);
    assert_eq!(v.verify(&rs(&c), NOW).unwrap().expires_at, NOW + 10);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    // jsonwebtoken insists on exp when encoding? No: encoding takes any claims.
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap_err(),
        Error::MissingClaim("exp".into())
    );
    let mut c = claims();
    c["exp"] = "soon".into();
    assert_eq!(
        v.verify(&rs(&c), NOW).unwrap_err(),
        Error::InvalidClaim("exp".into())
    );
}

#[test]
fn signing_algs_bind_keys() {
    // Default: RS256 only, as kube-apiserver. An ES256 token is refused even though the
    // JWKS has the EC key.
    let v = issuer(OidcIssuerConfig::new(ISSUER, CLIENT));
    let es = sign(
        &idp().ec,
        jsonwebtoken::Algorithm::ES256,
        Some("ec-1"),
        &claims(),
    );
    assert_eq!(v.verify(&es, NOW).unwrap_err(), Error::UnsupportedAlgorithm);

    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.signing_algs = vec![Algorithm::Rs256, Algorithm::Es256];
    let v = issuer(cfg);
    assert!(v.verify(&es, NOW).is_ok());
    // The EC signature under the RSA kid.
    let swapped = sign(
        &idp().ec,
        jsonwebtoken::Algorithm::ES256,
        Some("rsa-1"),
        &claims(),
    );
    assert_eq!(
        v.verify(&swapped, NOW).unwrap_err(),
        Error::AlgorithmMismatch {
            token: Algorithm::Es256,
            key: Algorithm::Rs256
        }
    );
    // Keys marked enc and symmetric keys are not usable.
    let enc = sign(
        &idp().rsa,
        jsonwebtoken::Algorithm::RS256,
        Some("enc-1"),
        &claims(),
    );
    assert_eq!(v.verify(&enc, NOW).unwrap_err(), Error::UnknownKeyId);
    let hs = sign(
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        jsonwebtoken::Algorithm::HS256,
        Some("hmac"),
        &claims(),
    );
    assert_eq!(v.verify(&hs, NOW).unwrap_err(), Error::SymmetricAlgorithm);
    // No kid while the issuer publishes two keys.
    let no_kid = sign(&idp().rsa, jsonwebtoken::Algorithm::RS256, None, &claims());
    assert_eq!(v.verify(&no_kid, NOW).unwrap_err(), Error::MissingKeyId);
}

#[test]
fn rsa_key_without_alg_verifies_each_allowed_rsa_alg() {
    let mut jwks = idp().jwks;
    let mut rsa = jwks["keys"][0].clone();
    rsa.as_object_mut().unwrap().remove("alg");
    jwks["keys"] = json!([rsa]);
    let mut cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    cfg.signing_algs = vec![Algorithm::Rs256, Algorithm::Ps256];
    let v = OidcIssuer::from_jwks_json(cfg, jwks.to_string().as_bytes()).unwrap();
    assert_eq!(v.keys().len(), 2);
    let ps = sign(
        &idp().rsa,
        jsonwebtoken::Algorithm::PS256,
        Some("rsa-1"),
        &claims(),
    );
    assert!(v.verify(&ps, NOW).is_ok());
    // Single key: a token without kid is resolved to it.
    let no_kid = sign(&idp().rsa, jsonwebtoken::Algorithm::RS256, None, &claims());
    assert!(v.verify(&no_kid, NOW).is_ok());
    let rs512 = sign(
        &idp().rsa,
        jsonwebtoken::Algorithm::RS512,
        Some("rsa-1"),
        &claims(),
    );
    assert_eq!(
        v.verify(&rs512, NOW).unwrap_err(),
        Error::UnsupportedAlgorithm
    );
}

#[test]
fn unusable_jwks_documents() {
    let cfg = OidcIssuerConfig::new(ISSUER, CLIENT);
    for doc in [
        "".to_owned(),
        "{}".to_owned(),
        r#"{"keys":[]}"#.to_owned(),
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned(),
        r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#.to_owned(),
    ] {
        assert!(
            matches!(
                OidcIssuer::from_jwks_json(cfg.clone(), doc.as_bytes()),
                Err(Error::Jwks(_))
            ),
            "{doc}"
        );
    }
    // Refresh swaps the keys: a token of a key no longer published stops verifying.
    let v = issuer(OidcIssuerConfig::new(ISSUER, CLIENT));
    let t = rs(&claims());
    assert!(v.verify(&t, NOW).is_ok());
    let other = SigningKey::generate(Algorithm::Rs256).unwrap();
    let mut jwk = serde_json::to_value(other.verifying_key().jwk()).unwrap();
    jwk["kid"] = "rsa-2".into();
    let refreshed = v
        .with_jwks(&serde_json::from_value(json!({"keys": [jwk]})).unwrap())
        .unwrap();
    assert_eq!(refreshed.verify(&t, NOW).unwrap_err(), Error::UnknownKeyId);
}
