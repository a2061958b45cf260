//! The known JWT attacks, each refused with its own error, plus the verifier's checks of
//! time, issuer, audience, revocation, generation and its cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kubegate_api::{AccessKeyScope, AccessKeyScopeProject};
use kubegate_tokens::{
    Algorithm, Audience, Claims, Error, KeySet, LoftClaim, MintRequest, Minter, SigningKey,
    SubjectKind, Verifier,
};

const ISS: &str = "https://gateway.example/oidc";
const AUD: &str = "kubegate";
const NOW: u64 = 1_800_000_000;

fn request() -> MintRequest {
    MintRequest {
        subject: "alice".into(),
        groups: vec!["dev".into()],
        uid: "uid-alice".into(),
        name: "alice".into(),
        kind: SubjectKind::User,
        generation: 1,
        scope: None,
        ttl: Some(Duration::from_secs(600)),
        parent: None,
        login: false,
    }
}

fn gen1(_: &LoftClaim) -> Option<i64> {
    Some(1)
}

struct Fixture {
    keys: Arc<KeySet>,
    minter: Minter,
    verifier: Verifier,
}

fn fixture(alg: Algorithm) -> Fixture {
    let keys = Arc::new(KeySet::generate(alg).unwrap());
    Fixture {
        minter: Minter::new(Arc::clone(&keys), ISS, Audience::new([AUD])),
        verifier: Verifier::new(Arc::clone(&keys), ISS, AUD),
        keys,
    }
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    (
        it.next().unwrap().into(),
        it.next().unwrap().into(),
        it.next().unwrap().into(),
    )
}

fn header_json(token: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(token).0).unwrap()).unwrap()
}

fn payload_json(token: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(token).1).unwrap()).unwrap()
}

/// Every error's text is free of the token and of its signature.
fn assert_no_echo(err: &Error, token: &str) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(token), "error echoes the token: {text}");
    let (_, p, s) = parts(token);
    for part in [p, s] {
        if part.len() >= 8 {
            assert!(!text.contains(&part), "error echoes a token part: {text}");
        }
    }
}

fn refuse(v: &Verifier, token: &str) -> Error {
    let err = v.verify(token, NOW, gen1).unwrap_err();
    assert_no_echo(&err, token);
    err
}

#[test]
fn round_trip_every_signing_algorithm() {
    for alg in [Algorithm::Es256, Algorithm::Rs256, Algorithm::EdDsa] {
        let f = fixture(alg);
        let minted = f.minter.mint(&request(), NOW).unwrap();
        assert_eq!(header_json(minted.token())["alg"], alg.name());
        assert_eq!(header_json(minted.token())["kid"], f.keys.active().kid());
        let claims = f.verifier.verify(minted.token(), NOW, gen1).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.jti, minted.jti);
        assert_eq!(claims.exp, NOW + 600);
        assert_eq!(claims.loft.kind, SubjectKind::User);
    }
}

#[test]
fn alg_none_is_refused() {
    let f = fixture(Algorithm::Es256);
    let minted = f.minter.mint(&request(), NOW).unwrap();
    let (_, p, s) = parts(minted.token());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, f.keys.active().kid()).as_bytes());
        for sig in ["", s.as_str()] {
            let forged = format!("{h}.{p}.{sig}");
            assert_eq!(refuse(&f.verifier, &forged), Error::AlgorithmNone, "{alg}");
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    for alg in [Algorithm::Rs256, Algorithm::Es256] {
        let f = fixture(alg);
        let kid = f.keys.active().kid().to_owned();
        // The classic confusion attack: the public key (as its JWK JSON, and as raw JWKS
        // bytes) used as an HMAC secret, hoping the verifier picks HS256 from the header.
        let jwk_json = serde_json::to_vec(f.keys.active().verifying_key().jwk()).unwrap();
        let jwks_json = f.keys.jwks().to_json().into_bytes();
        let claims = payload_json(f.minter.mint(&request(), NOW).unwrap().token());
        for secret in [jwk_json, jwks_json] {
            for hs in [
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::Algorithm::HS384,
                jsonwebtoken::Algorithm::HS512,
            ] {
                let mut header = jsonwebtoken::Header::new(hs);
                header.kid = Some(kid.clone());
                let forged = jsonwebtoken::encode(
                    &header,
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(&secret),
                )
                .unwrap();
                assert_eq!(refuse(&f.verifier, &forged), Error::SymmetricAlgorithm);
            }
        }
    }
}

#[test]
fn kid_swap_between_two_keys_of_the_set_fails_the_signature() {
    let a = SigningKey::generate(Algorithm::Es256).unwrap();
    let b = SigningKey::generate(Algorithm::Es256).unwrap();
    let b_kid = b.kid().to_owned();
    let keys = Arc::new(KeySet::new(b).rotate(a));
    let minter = Minter::new(Arc::clone(&keys), ISS, Audience::new([AUD]));
    let verifier = Verifier::new(Arc::clone(&keys), ISS, AUD);
    let token = minter.mint(&request(), NOW).unwrap().into_token();
    let (_, p, s) = parts(&token);
    let h = b64(format!(r#"{{"alg":"ES256","kid":"{b_kid}","typ":"JWT"}}"#).as_bytes());
    assert_eq!(
        refuse(&verifier, &format!("{h}.{p}.{s}")),
        Error::BadSignature
    );
}

#[test]
fn alg_kid_mismatch_is_refused() {
    let es = SigningKey::generate(Algorithm::Es256).unwrap();
    let rs = SigningKey::generate(Algorithm::Rs256).unwrap();
    let rs_kid = rs.kid().to_owned();
    let keys = Arc::new(KeySet::new(rs).rotate(es));
    let minter = Minter::new(Arc::clone(&keys), ISS, Audience::new([AUD]));
    let verifier = Verifier::new(Arc::clone(&keys), ISS, AUD);
    let token = minter.mint(&request(), NOW).unwrap().into_token();
    let (_, p, s) = parts(&token);
    // An ES256 signature presented under the RSA key's kid.
    let h = b64(format!(r#"{{"alg":"ES256","kid":"{rs_kid}"}}"#).as_bytes());
    assert_eq!(
        refuse(&verifier, &format!("{h}.{p}.{s}")),
        Error::AlgorithmMismatch {
            token: Algorithm::Es256,
            key: Algorithm::Rs256
        }
    );
    // And an RS256 label on the EC key.
    let h = b64(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, keys.active().kid()).as_bytes());
    assert_eq!(
        refuse(&verifier, &format!("{h}.{p}.{s}")),
        Error::AlgorithmMismatch {
            token: Algorithm::Rs256,
            key: Algorithm::Es256
        }
    );
}

#[test]
fn unknown_and_missing_kid() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let (_, p, s) = parts(&token);
    let unknown = format!("{}.{p}.{s}", b64(br#"{"alg":"ES256","kid":"nope"}"#));
    assert_eq!(refuse(&f.verifier, &unknown), Error::UnknownKeyId);

    // One key: a missing kid is resolved to it.
    let no_kid = format!("{}.{p}.{s}", b64(br#"{"alg":"ES256"}"#));
    assert!(matches!(
        f.verifier.verify(&no_kid, NOW, gen1),
        Err(Error::BadSignature)
    ));
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let single = Arc::new(KeySet::new(key));
    let claims = payload_json(
        &Minter::new(Arc::clone(&single), ISS, Audience::new([AUD]))
            .mint(&request(), NOW)
            .unwrap()
            .into_token(),
    );
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = None;
    let pem = single.active().to_pkcs8_pem().unwrap();
    let no_kid_ok = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.expose().as_bytes()).unwrap(),
    )
    .unwrap();
    let v = Verifier::new(Arc::clone(&single), ISS, AUD);
    assert!(v.verify(&no_kid_ok, NOW, gen1).is_ok());

    // Several keys: a missing kid is refused.
    let rotated = Arc::new(single.rotate(SigningKey::generate(Algorithm::Es256).unwrap()));
    let v = Verifier::new(rotated, ISS, AUD);
    assert_eq!(refuse(&v, &no_kid_ok), Error::MissingKeyId);
}

#[test]
fn embedded_jwk_and_jku_headers_are_ignored() {
    let f = fixture(Algorithm::Es256);
    let attacker = SigningKey::generate(Algorithm::Es256).unwrap();
    let claims = payload_json(f.minter.mint(&request(), NOW).unwrap().token());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(f.keys.active().kid().to_owned());
    header.jku = Some("https://attacker.example/jwks".into());
    header.jwk = Some(
        serde_json::from_value(serde_json::to_value(attacker.verifying_key().jwk()).unwrap())
            .unwrap(),
    );
    let pem = attacker.to_pkcs8_pem().unwrap();
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.expose().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(refuse(&f.verifier, &forged), Error::BadSignature);
}

#[test]
fn tampered_payload_fails_the_signature() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let (h, _, s) = parts(&token);
    let mut claims = payload_json(&token);
    claims["sub"] = "admin".into();
    claims["groups"] = serde_json::json!(["system:masters"]);
    let forged = format!("{h}.{}.{s}", b64(claims.to_string().as_bytes()));
    assert_eq!(refuse(&f.verifier, &forged), Error::BadSignature);
}

#[test]
fn expired_and_not_yet_valid() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let exp = NOW + 600;
    // Within the 60 s default leeway on both sides.
    assert!(f.verifier.verify(&token, exp + 60, gen1).is_ok());
    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD);
    assert!(v.verify(&token, NOW - 60, gen1).is_ok());

    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD);
    let err = v.verify(&token, exp + 61, gen1).unwrap_err();
    assert_eq!(err, Error::Expired { exp, now: exp + 61 });
    assert_no_echo(&err, &token);
    let err = v.verify(&token, NOW - 61, gen1).unwrap_err();
    assert_eq!(
        err,
        Error::NotYetValid {
            nbf: NOW,
            now: NOW - 61
        }
    );

    let strict = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_leeway(Duration::ZERO);
    assert!(matches!(
        strict.verify(&token, exp + 1, gen1),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn cached_tokens_still_expire() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    assert!(f.verifier.verify(&token, NOW, gen1).is_ok());
    assert_eq!(f.verifier.cached(), 1);
    assert!(f.verifier.verify(&token, NOW + 660, gen1).is_ok());
    assert!(matches!(
        f.verifier.verify(&token, NOW + 661, gen1),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn wrong_issuer_and_audience() {
    let f = fixture(Algorithm::Es256);
    let other_iss = Minter::new(
        Arc::clone(&f.keys),
        "https://evil.example",
        Audience::new([AUD]),
    );
    let t = other_iss.mint(&request(), NOW).unwrap().into_token();
    assert_eq!(refuse(&f.verifier, &t), Error::WrongIssuer);

    let other_aud = Minter::new(Arc::clone(&f.keys), ISS, Audience::new(["kube-apiserver"]));
    let t = other_aud.mint(&request(), NOW).unwrap().into_token();
    assert_eq!(refuse(&f.verifier, &t), Error::WrongAudience);
    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_audience("kube-apiserver");
    assert!(v.verify(&t, NOW, gen1).is_ok());

    // A token minted by the same minter for another party is refused by this one.
    let for_upstream = Audience::new(["kubegate/cluster/prod"]);
    let t = f
        .minter
        .mint_for(&request(), &for_upstream, NOW)
        .unwrap()
        .into_token();
    assert_eq!(payload_json(&t)["aud"], "kubegate/cluster/prod");
    assert_eq!(refuse(&f.verifier, &t), Error::WrongAudience);

    let many = Minter::new(Arc::clone(&f.keys), ISS, Audience::new(["x", AUD]));
    let t = many.mint(&request(), NOW).unwrap().into_token();
    assert!(payload_json(&t)["aud"].is_array());
    assert!(f.verifier.verify(&t, NOW, gen1).is_ok());
}

#[test]
fn revoked_jti_is_refused_even_when_cached() {
    let f = fixture(Algorithm::Es256);
    let minted = f.minter.mint(&request(), NOW).unwrap();
    let claims = f.verifier.verify(minted.token(), NOW, gen1).unwrap();
    f.verifier.revoke(&claims, NOW);
    assert_eq!(refuse(&f.verifier, minted.token()), Error::Revoked);
    let other = f.minter.mint(&request(), NOW).unwrap();
    assert!(f.verifier.verify(other.token(), NOW, gen1).is_ok());
    // The entry outlives the token's exp + leeway, then goes.
    f.verifier.revocations().purge(minted.expires_at + 60);
    assert_eq!(f.verifier.revocations().len(), 1);
    f.verifier.revocations().purge(minted.expires_at + 61);
    assert!(f.verifier.revocations().is_empty());
}

#[test]
fn bumped_generation_is_refused_even_when_cached() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    assert!(f.verifier.verify(&token, NOW, gen1).is_ok());
    let err = f.verifier.verify(&token, NOW, |_| Some(2)).unwrap_err();
    assert_eq!(
        err,
        Error::GenerationMismatch {
            token: 1,
            current: 2
        }
    );
    assert_no_echo(&err, &token);
    assert_eq!(
        f.verifier.verify(&token, NOW, |_| None).unwrap_err(),
        Error::UnknownSubject
    );
    // The closure sees the loft claim to find the subject.
    let seen = f.verifier.verify(&token, NOW, |c| {
        (c.name == "alice" && c.uid == "uid-alice").then_some(1)
    });
    assert!(seen.is_ok());
}

#[test]
fn truncated_tokens_never_verify() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_cache_capacity(0);
    for cut in 0..token.len() {
        assert!(
            v.verify(&token[..cut], NOW, gen1).is_err(),
            "prefix of {cut}"
        );
        assert!(
            v.verify(&token[cut + 1..], NOW, gen1).is_err(),
            "suffix at {cut}"
        );
    }
}

#[test]
fn garbage_is_malformed() {
    let f = fixture(Algorithm::Es256);
    let good = f.minter.mint(&request(), NOW).unwrap().into_token();
    let (h, p, s) = parts(&good);
    let cases = [
        String::new(),
        "a".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "....".into(),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}={}.{p}.{s}", ""),
        format!("{h}.{p}.{s}=="),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{p}."),
        format!("{}.{p}.{s}", b64(b"not json")),
        format!("{}.{p}.{s}", b64(b"[1,2]")),
        format!("{}.{p}.{s}", b64(br#"{"kid":"x"}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":7}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":"ES256","alg":"ES256"}"#)),
        format!(
            "{}.{p}.{s}",
            URL_SAFE_NO_PAD.encode(h.as_bytes()).replace('-', "+")
        ),
        "\u{0}\u{1}.\u{2}.\u{3}".into(),
        "eyJ.eyJ.eyJ".into(),
    ];
    for c in &cases {
        let err = f.verifier.verify(c, NOW, gen1).unwrap_err();
        assert!(
            matches!(err, Error::Malformed(_) | Error::BadSignature),
            "{c:?} gave {err:?}"
        );
    }
    // A valid signature over a payload that is not kubegate claims.
    assert!(matches!(
        f.verifier
            .verify(&format!("{h}.{}.{s}", b64(b"{}")), NOW, gen1),
        Err(Error::BadSignature)
    ));
    // Unknown algorithm names.
    for alg in ["ES512", "RS1", "", "ES256 "] {
        let forged = format!(
            "{}.{p}.{s}",
            b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes())
        );
        assert_eq!(
            refuse(&f.verifier, &forged),
            Error::UnsupportedAlgorithm,
            "{alg:?}"
        );
    }
    // Critical extensions (e.g. unencoded payloads) are not supported.
    let crit = format!(
        "{}.{p}.{s}",
        b64(br#"{"alg":"ES256","b64":false,"crit":["b64"]}"#)
    );
    assert!(matches!(refuse(&f.verifier, &crit), Error::Malformed(_)));
}

#[test]
fn signed_payload_with_wrong_shape_is_malformed() {
    // Signed by the real key but missing the loft claim: refused after the signature check.
    let f = fixture(Algorithm::Es256);
    let pem = f.keys.active().to_pkcs8_pem().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(f.keys.active().kid().to_owned());
    let claims = serde_json::json!({"iss": ISS, "aud": AUD, "sub": "x", "exp": NOW + 10, "iat": NOW, "jti": "j"});
    let t = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.expose().as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(refuse(&f.verifier, &t), Error::Malformed(_)));
}

#[test]
fn huge_tokens_are_refused_before_decoding() {
    let f = fixture(Algorithm::Es256);
    let huge = "a".repeat(1 << 20);
    assert_eq!(
        f.verifier.verify(&huge, NOW, gen1).unwrap_err(),
        Error::TokenTooLarge {
            len: 1 << 20,
            max: Verifier::DEFAULT_MAX_TOKEN_LEN
        }
    );
    // A real token with a scope too large for a tight limit.
    let mut req = request();
    req.scope = Some(AccessKeyScope {
        projects: (0..200)
            .map(|i| AccessKeyScopeProject {
                project: format!("project-{i}"),
            })
            .collect(),
        ..AccessKeyScope::default()
    });
    let big = f.minter.mint(&req, NOW).unwrap().into_token();
    assert!(big.len() > 4096);
    let tight = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_max_token_len(4096);
    assert!(matches!(
        tight.verify(&big, NOW, gen1),
        Err(Error::TokenTooLarge { .. })
    ));
    let claims = f.verifier.verify(&big, NOW, gen1).unwrap();
    assert_eq!(claims.loft.scope, req.scope);
}

#[test]
fn rotation_keeps_old_tokens_until_retired() {
    let f = fixture(Algorithm::Es256);
    let old = f.minter.mint(&request(), NOW).unwrap();
    let rotated = Arc::new(
        f.keys
            .rotate(SigningKey::generate(Algorithm::EdDsa).unwrap()),
    );
    let minter = Minter::new(Arc::clone(&rotated), ISS, Audience::new([AUD]));
    let new = minter.mint(&request(), NOW).unwrap();
    assert_ne!(old.kid, new.kid);
    assert_eq!(new.kid, rotated.active().kid());
    let v = Verifier::new(Arc::clone(&rotated), ISS, AUD);
    assert!(v.verify(old.token(), NOW, gen1).is_ok());
    assert!(v.verify(new.token(), NOW, gen1).is_ok());
    assert_eq!(rotated.jwks().keys.len(), 2);

    let retired = Arc::new(rotated.retire(&old.kid).unwrap());
    let v = Verifier::new(Arc::clone(&retired), ISS, AUD);
    assert_eq!(refuse(&v, old.token()), Error::UnknownKeyId);
    assert!(v.verify(new.token(), NOW, gen1).is_ok());
    assert_eq!(
        retired.retire(&new.kid).unwrap_err(),
        Error::RetireActiveKey
    );
    assert_eq!(retired.retire("nope").unwrap_err(), Error::UnknownKeyId);
}

#[test]
fn cache_is_bounded_and_keyed_by_hash() {
    let f = fixture(Algorithm::Es256);
    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_cache_capacity(32);
    for i in 0..200 {
        let t = f.minter.mint(&request(), NOW + i).unwrap().into_token();
        assert!(v.verify(&t, NOW + i, gen1).is_ok());
    }
    assert!(v.cached() <= 32, "cache holds {}", v.cached());
    assert!(v.cached() > 0);
    let dbg = format!("{v:?}");
    assert!(dbg.contains("cached"));
    v.clear_cache();
    assert_eq!(v.cached(), 0);
}

#[test]
fn claims_carry_scope_groups_and_kind() {
    let f = fixture(Algorithm::Es256);
    let mut req = request();
    req.kind = SubjectKind::Team;
    req.generation = 7;
    req.scope = Some(AccessKeyScope {
        projects: vec![AccessKeyScopeProject {
            project: "p1".into(),
        }],
        ..AccessKeyScope::default()
    });
    let t = f.minter.mint(&req, NOW).unwrap();
    let raw = payload_json(t.token());
    assert_eq!(raw["loft.sh"]["gen"], 7);
    assert_eq!(raw["loft.sh"]["kind"], "Team");
    assert_eq!(raw["loft.sh"]["scope"]["projects"][0]["project"], "p1");
    let c: Arc<Claims> = f.verifier.verify(t.token(), NOW, |_| Some(7)).unwrap();
    assert_eq!(c.groups, vec!["dev".to_owned()]);
    assert_eq!(c.loft.scope, req.scope);
    assert_eq!(c.nbf, Some(NOW));
    assert_eq!(c.iat, NOW);
}

#[test]
fn every_single_character_substitution_is_refused() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let v = Verifier::new(Arc::clone(&f.keys), ISS, AUD).with_cache_capacity(0);
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        for repl in [b'A', b'f', b'_', b'-', b'.', b'='] {
            if bytes[i] == repl {
                continue;
            }
            let mut t = bytes.to_vec();
            t[i] = repl;
            let t = String::from_utf8(t).unwrap();
            assert!(
                v.verify(&t, NOW, gen1).is_err(),
                "substitution at {i} verified"
            );
        }
    }
}

#[test]
fn deeply_nested_header_is_refused_not_a_crash() {
    let f = fixture(Algorithm::Es256);
    let token = f.minter.mint(&request(), NOW).unwrap().into_token();
    let (_, p, s) = parts(&token);
    let nested = format!(
        r#"{{"alg":"ES256","x":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    // serde_json skips unknown members iteratively: no recursion, so the header parses and the
    // signature (made over another header) fails.
    let forged = format!("{}.{p}.{s}", b64(nested.as_bytes()));
    assert_eq!(refuse(&f.verifier, &forged), Error::BadSignature);
    // Nesting in a member we do read hits serde_json's recursion limit.
    let nested_alg = format!(r#"{{"alg":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let forged = format!("{}.{p}.{s}", b64(nested_alg.as_bytes()));
    assert!(matches!(refuse(&f.verifier, &forged), Error::Malformed(_)));
}
