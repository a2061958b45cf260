#![no_main]
//! Arbitrary bytes as a bearer token: the kubegate verifier and an external OIDC issuer must
//! never panic and never accept. The key is fixed (a test key) so seeds signed by it reach the
//! signature and claims checks; every seed is invalid for this verifier (wrong issuer,
//! audience or algorithm), and the fuzzer cannot forge a signature.

use std::sync::{Arc, OnceLock};

use kubegate_tokens::{Algorithm, KeySet, OidcIssuer, OidcIssuerConfig, SigningKey, Verifier};
use libfuzzer_sys::fuzz_target;

const EC_PKCS8: &str = include_str!("../../crates/tokens/tests/data/ec_pkcs8.pem");
const RSA_PKCS8: &str = include_str!("../../crates/tokens/tests/data/rsa_pkcs8.pem");
const NOW: u64 = 1_800_000_000;

struct Targets {
    verifier: Verifier,
    oidc: OidcIssuer,
}

fn targets() -> &'static Targets {
    static T: OnceLock<Targets> = OnceLock::new();
    T.get_or_init(|| {
        let ec = SigningKey::from_pem(EC_PKCS8.as_bytes()).unwrap();
        let rsa = SigningKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
        let keys = KeySet::new(rsa).rotate(ec);
        let mut cfg = OidcIssuerConfig::new("https://fuzz.invalid/idp", "fuzz-client");
        cfg.signing_algs = vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa];
        cfg.groups_claim = Some("groups".into());
        let oidc = OidcIssuer::new(cfg, &keys.jwks()).unwrap();
        let verifier = Verifier::new(Arc::new(keys), "https://fuzz.invalid/gw", "fuzz-aud")
            .with_cache_capacity(64);
        Targets { verifier, oidc }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = targets();
    let token = String::from_utf8_lossy(data);
    assert!(t.verifier.verify(&token, NOW, |_| Some(0)).is_err());
    assert!(t.oidc.verify(&token, NOW).is_err());
    // The JWKS parser sees the same bytes.
    let _ = OidcIssuer::from_jwks_json(t.oidc.config().clone(), data);
});
