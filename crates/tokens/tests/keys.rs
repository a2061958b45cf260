//! Key loading, `kid` thumbprints, JWKS validity (checked with an independent JWT library),
//! secrecy of private keys, minting lifetimes and the discovery document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kubegate_tokens::{
    Algorithm, Audience, DISCOVERY_PATH, DiscoveryDocument, Error, JwkSet, KeySet, MintRequest,
    Minter, SigningKey, SubjectKind, VerifyingKey,
};

const EC_PKCS8: &str = include_str!("data/ec_pkcs8.pem");
const EC_SEC1: &str = include_str!("data/ec_sec1.pem");
const RSA_PKCS8: &str = include_str!("data/rsa_pkcs8.pem");
const RSA_PKCS1: &str = include_str!("data/rsa_pkcs1.pem");
const ED_PKCS8: &str = include_str!("data/ed25519_pkcs8.pem");
const RSA_1024: &str = include_str!("data/rsa1024_pkcs1.pem");
const EC_P384: &str = include_str!("data/ec_p384_pkcs8.pem");

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn pem_formats_load_with_the_right_algorithm() {
    let cases = [
        ("ec_pkcs8", EC_PKCS8, Algorithm::Es256),
        ("ec_sec1", EC_SEC1, Algorithm::Es256),
        ("rsa_pkcs8", RSA_PKCS8, Algorithm::Rs256),
        ("rsa_pkcs1", RSA_PKCS1, Algorithm::Rs256),
        ("ed25519_pkcs8", ED_PKCS8, Algorithm::EdDsa),
    ];
    for (name, pem, alg) in cases {
        let k = SigningKey::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(k.algorithm(), alg, "{name}");
    }
    // The same key in two encodings has the same kid.
    let a = SigningKey::from_pem(EC_PKCS8.as_bytes()).unwrap();
    let b = SigningKey::from_pem(EC_SEC1.as_bytes()).unwrap();
    assert_eq!(a.kid(), b.kid());
    let a = SigningKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
    let b = SigningKey::from_pem(RSA_PKCS1.as_bytes()).unwrap();
    assert_eq!(a.kid(), b.kid());
}

#[test]
fn weak_or_foreign_keys_are_refused() {
    assert!(matches!(
        SigningKey::from_pem(RSA_1024.as_bytes()),
        Err(Error::UnsupportedKey(_) | Error::KeyRejected(_))
    ));
    assert!(matches!(
        SigningKey::from_pem(EC_P384.as_bytes()),
        Err(Error::UnsupportedKey(_))
    ));
    assert!(matches!(
        SigningKey::from_pem(b"not a pem"),
        Err(Error::KeyPem(_))
    ));
    assert!(matches!(
        SigningKey::generate(Algorithm::Ps256),
        Err(Error::UnsupportedKey(_))
    ));
}

#[test]
fn generated_keys_persist_as_pkcs8() {
    for alg in [Algorithm::Es256, Algorithm::Rs256, Algorithm::EdDsa] {
        let k = SigningKey::generate(alg).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.expose().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(pem.expose().as_bytes()).unwrap();
        assert_eq!(again.kid(), k.kid());
        assert_eq!(again.algorithm(), alg);
        assert_eq!(format!("{pem:?}"), "SecretPem([redacted])");
    }
}

#[test]
fn private_keys_never_in_debug_or_errors() {
    for pem in [EC_PKCS8, RSA_PKCS1, ED_PKCS8] {
        let k = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let body = pem_body(pem);
        let set = KeySet::new(k);
        let minter = Minter::new(Arc::new(set.clone()), "i", Audience::new(["a"]));
        for text in [
            format!("{:?}", set.active()),
            format!("{set:?}"),
            format!("{minter:?}"),
            set.jwks().to_json(),
        ] {
            assert!(!text.contains(&body[..40]), "private key leaked: {text}");
            assert!(
                !text.contains(&body[body.len() - 40..]),
                "private key leaked: {text}"
            );
        }
    }
    // A corrupted key's error does not echo the PEM.
    let broken = EC_PKCS8.replace("MIG", "MIH");
    let err = SigningKey::from_pem(broken.as_bytes()).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&pem_body(&broken)[..20]));
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    for pem in [EC_PKCS8, RSA_PKCS8, ED_PKCS8] {
        let k = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let jwk = k.verifying_key().jwk();
        assert_eq!(k.kid(), jwk.thumbprint().unwrap());
        // Cross-check with jsonwebtoken's independent implementation.
        let theirs: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(serde_json::to_value(jwk).unwrap()).unwrap();
        assert_eq!(
            k.kid(),
            theirs
                .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap()
        );
    }
}

#[test]
fn jwks_is_a_valid_rfc7517_set() {
    let keys = KeySet::new(SigningKey::from_pem(EC_PKCS8.as_bytes()).unwrap())
        .rotate(SigningKey::from_pem(RSA_PKCS8.as_bytes()).unwrap())
        .rotate(SigningKey::from_pem(ED_PKCS8.as_bytes()).unwrap());
    let json: serde_json::Value = serde_json::from_str(&keys.jwks().to_json()).unwrap();
    let list = json["keys"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let mut kids = HashSet::new();
    for k in list {
        let obj = k.as_object().unwrap();
        let kty = obj["kty"].as_str().unwrap();
        assert_eq!(obj["use"], "sig");
        assert!(
            kids.insert(obj["kid"].as_str().unwrap().to_owned()),
            "kid unique"
        );
        let members: HashSet<&str> = obj.keys().map(String::as_str).collect();
        let expected: HashSet<&str> = match kty {
            "EC" => ["kty", "use", "alg", "kid", "crv", "x", "y"].into(),
            "RSA" => ["kty", "use", "alg", "kid", "n", "e"].into(),
            "OKP" => ["kty", "use", "alg", "kid", "crv", "x"].into(),
            other => panic!("unexpected kty {other}"),
        };
        assert_eq!(members, expected, "{kty}: no private or stray members");
        for v in obj.values() {
            let s = v.as_str().unwrap();
            assert!(!s.contains('='), "base64url without padding");
        }
    }
    // An independent library accepts the set and verifies our tokens with it.
    let theirs: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json).unwrap();
    let minter = Minter::new(Arc::new(keys.clone()), "iss", Audience::new(["aud"]));
    for active in [EC_PKCS8, RSA_PKCS8, ED_PKCS8] {
        let k = SigningKey::from_pem(active.as_bytes()).unwrap();
        let set = Arc::new(keys.rotate(k));
        let m = Minter::new(Arc::clone(&set), "iss", Audience::new(["aud"]));
        let t = m.mint(&request(), 1_800_000_000).unwrap();
        let jwk = theirs.find(&t.kid).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let header = jsonwebtoken::decode_header(t.token()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["aud"]);
        validation.set_issuer(&["iss"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(t.token(), &dk, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
    }
    drop(minter);

    // Our own parser reads the set back into verifying keys with the same kids.
    let back = JwkSet::from_json(keys.jwks().to_json().as_bytes()).unwrap();
    for (jwk, orig) in back.keys.iter().zip(keys.verifying_keys()) {
        let alg = Algorithm::from_name(jwk.alg.as_deref().unwrap()).unwrap();
        let vk = VerifyingKey::from_jwk(jwk, alg).unwrap();
        assert_eq!(vk.kid(), orig.kid());
    }
}

#[test]
fn verify_only_keys_and_duplicates() {
    let a = SigningKey::generate(Algorithm::Es256).unwrap();
    let b = SigningKey::generate(Algorithm::Es256).unwrap();
    let b_pub = b.verifying_key().clone();
    let set = KeySet::new(a).with_verify_only(b_pub.clone()).unwrap();
    assert_eq!(set.verifying_keys().len(), 2);
    assert_eq!(
        set.with_verify_only(b_pub).unwrap_err(),
        Error::DuplicateKeyId
    );
    let set = KeySet::new(b);
    // Rotating to the same key keeps one entry.
    let same =
        SigningKey::from_pem(set.active().to_pkcs8_pem().unwrap().expose().as_bytes()).unwrap();
    assert_eq!(set.rotate(same).verifying_keys().len(), 1);
}

fn request() -> MintRequest {
    MintRequest {
        subject: "alice".into(),
        groups: vec![],
        uid: "u".into(),
        name: "alice".into(),
        kind: SubjectKind::User,
        generation: 0,
        scope: None,
        ttl: None,
        parent: None,
        login: false,
    }
}

#[test]
fn minted_lifetime_is_capped() {
    let keys = Arc::new(KeySet::generate(Algorithm::Es256).unwrap());
    let m = Minter::new(keys, "iss", Audience::new(["aud"]))
        .with_default_ttl(Duration::from_secs(300))
        .with_max_ttl(Duration::from_secs(3600));
    let now = 1_000;
    assert_eq!(m.mint(&request(), now).unwrap().expires_at, now + 300);
    let mut r = request();
    r.ttl = Some(Duration::from_secs(48 * 3600));
    assert_eq!(m.mint(&r, now).unwrap().expires_at, now + 3600);
    r.ttl = Some(Duration::from_secs(60));
    assert_eq!(m.mint(&r, now).unwrap().expires_at, now + 60);
    r.ttl = Some(Duration::ZERO);
    assert!(matches!(m.mint(&r, now), Err(Error::InvalidTtl(_))));
    r.ttl = Some(Duration::from_secs(60));
    assert!(matches!(
        m.mint(&r, u64::MAX - 1),
        Err(Error::InvalidTtl(_))
    ));

    let t = m.mint(&request(), now).unwrap();
    let dbg = format!("{t:?}");
    assert!(dbg.contains("[redacted]") && !dbg.contains(t.token()));
    let t2 = m.mint(&request(), now).unwrap();
    assert_ne!(t.jti, t2.jti, "jti is unique");
}

#[test]
fn discovery_document_matches_kube_apiserver_shape() {
    let keys = KeySet::generate(Algorithm::Es256)
        .unwrap()
        .rotate(SigningKey::generate(Algorithm::Rs256).unwrap());
    let doc = DiscoveryDocument::for_issuer("https://gw.example/oidc/", &keys);
    let json: serde_json::Value = serde_json::from_str(&doc.to_json()).unwrap();
    assert_eq!(json["issuer"], "https://gw.example/oidc/");
    assert_eq!(json["jwks_uri"], "https://gw.example/oidc/openid/v1/jwks");
    assert_eq!(
        json["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(
        json["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        json["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "RS256"])
    );
    assert_eq!(DISCOVERY_PATH, "/.well-known/openid-configuration");
    let custom = DiscoveryDocument::new("https://i", "https://i/keys", &keys);
    assert_eq!(custom.jwks_uri, "https://i/keys");
}
