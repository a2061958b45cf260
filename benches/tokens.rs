//! Criterion benches for kubegate-tokens: mint and verify per algorithm, cached verify, the
//! bare ES256 signature check that bounds uncached verification, and access-key lookup.
//!
//! Run: `cargo bench --bench tokens`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubegate::api::{AccessKeyScope, AccessKeyScopeProject, AccessKeyScopeSpace};
use kubegate::tokens::{
    AccessKeyDigest, AccessKeyIndex, AccessKeySecret, Algorithm, Audience, KeySet, MintRequest,
    Minter, SubjectKind, Verifier,
};

const ISS: &str = "https://gateway.example/oidc";
const AUD: &str = "kubegate";
const NOW: u64 = 1_800_000_000;

/// A realistic token: a few groups and a scope of two projects and a space.
fn request() -> MintRequest {
    MintRequest {
        subject: "alice@example.com".into(),
        groups: vec!["dev".into(), "ops".into(), "loft:team:platform".into()],
        uid: "3f1c7c1e-7f0e-4a8e-9d59-0d1f3a7c9b11".into(),
        name: "alice".into(),
        kind: SubjectKind::User,
        generation: 3,
        scope: Some(AccessKeyScope {
            projects: vec![
                AccessKeyScopeProject {
                    project: "payments".into(),
                },
                AccessKeyScopeProject {
                    project: "search".into(),
                },
            ],
            spaces: vec![AccessKeyScopeSpace {
                project: "default".into(),
                space: "alice-dev".into(),
            }],
            ..AccessKeyScope::default()
        }),
        ttl: Some(Duration::from_secs(1800)),
        parent: Some("9b2e4c1a-5d3f-4e6b-8a7c-1f0e2d3c4b5a".into()),
        login: false,
    }
}

fn name(alg: Algorithm) -> &'static str {
    alg.name()
}

fn mint(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokens/mint");
    g.throughput(Throughput::Elements(1));
    let req = request();
    for alg in [Algorithm::Es256, Algorithm::Rs256, Algorithm::EdDsa] {
        let keys = Arc::new(KeySet::generate(alg).unwrap());
        let minter = Minter::new(keys, ISS, Audience::new([AUD]));
        g.bench_function(name(alg), |b| {
            b.iter(|| black_box(minter.mint(black_box(&req), NOW).unwrap()))
        });
    }
    g.finish();
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokens/verify");
    g.throughput(Throughput::Elements(1));
    for alg in [Algorithm::Es256, Algorithm::Rs256, Algorithm::EdDsa] {
        let keys = Arc::new(KeySet::generate(alg).unwrap());
        let minter = Minter::new(Arc::clone(&keys), ISS, Audience::new([AUD]));
        let token = minter.mint(&request(), NOW).unwrap().into_token();
        let uncached = Verifier::new(Arc::clone(&keys), ISS, AUD).with_cache_capacity(0);
        g.bench_function(format!("{}/uncached", name(alg)), |b| {
            b.iter(|| {
                black_box(
                    uncached
                        .verify(black_box(&token), NOW, |_| Some(3))
                        .unwrap(),
                )
            })
        });
        let cached = Verifier::new(Arc::clone(&keys), ISS, AUD);
        cached.verify(&token, NOW, |_| Some(3)).unwrap();
        g.bench_function(format!("{}/cached", name(alg)), |b| {
            b.iter(|| black_box(cached.verify(black_box(&token), NOW, |_| Some(3)).unwrap()))
        });
        // The bare signature check over the same signing input: the floor for `uncached`.
        let signing_input = &token[..token.rfind('.').unwrap()];
        let sig = keys.active().sign(signing_input.as_bytes()).unwrap();
        let vk = keys.active().verifying_key();
        g.bench_function(format!("{}/raw_signature_check", name(alg)), |b| {
            b.iter(|| {
                vk.verify_signature(black_box(signing_input.as_bytes()), black_box(&sig))
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn access_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokens/access_key");
    let mut index = AccessKeyIndex::new();
    let mut keys = Vec::new();
    for i in 0..10_000 {
        let k = AccessKeySecret::generate().unwrap();
        index.insert(k.digest(), i);
        keys.push(k);
    }
    let probe = keys[4242].expose().to_owned();
    g.bench_function("lookup_10k", |b| {
        b.iter(|| black_box(index.lookup(black_box(&probe))))
    });
    g.bench_function("digest", |b| {
        b.iter(|| black_box(AccessKeyDigest::of(black_box(&probe))))
    });
    g.bench_function("generate", |b| {
        b.iter(|| black_box(AccessKeySecret::generate().unwrap()))
    });
    g.finish();
}

criterion_group!(benches, mint, verify, access_keys);
criterion_main!(benches);
