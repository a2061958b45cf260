//! Route + RequestInfo over a mix of realistic requests (issue 2, item 4).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use kubegate::routing::{RequestInfo, Router};

#[path = "common/routing_mix.rs"]
mod routing_mix;
use routing_mix::MIX;

fn route_and_request_info(c: &mut Criterion) {
    let router = Router::central();
    c.bench_function("route+request_info/mix (per request)", |b| {
        let mut i = 0;
        b.iter(|| {
            let (method, path, query) = MIX[i % MIX.len()];
            i += 1;
            let route = router.route(path, query).unwrap();
            let info = RequestInfo::parse(method, &route.rest, route.query).unwrap();
            std::hint::black_box((route.target, info.is_long_running(), info.verb.len()));
        })
    });
    c.bench_function("route+request_info/list pods", |b| {
        b.iter(|| {
            let route = router
                .route(std::hint::black_box(MIX[0].1), MIX[0].2)
                .unwrap();
            let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
            std::hint::black_box(info.resource);
        })
    });
}

criterion_group!(benches, route_and_request_info);
criterion_main!(benches);
