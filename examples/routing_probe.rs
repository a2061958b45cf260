//! Route + RequestInfo over the routing bench's request mix, without criterion: for counting
//! instructions (exact and repeatable, unlike wall-clock time on a shared VM) and for timing
//! each request of the mix alone.
//!
//! ```text
//! cargo build --release --example routing_probe
//! target/release/examples/routing_probe time                 # ns per request, each request alone
//! valgrind --tool=callgrind target/release/examples/routing_probe mix 20000
//! valgrind --tool=callgrind target/release/examples/routing_probe item 6 20000
//! valgrind --tool=callgrind target/release/examples/routing_probe route 6 20000   # routing alone
//! valgrind --tool=callgrind target/release/examples/routing_probe info 6 20000    # RequestInfo alone
//! ```
//!
//! Instructions per request = (count at 2N − count at N) / N, which cancels start-up.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use kubegate::routing::{RequestInfo, Router};

#[path = "../benches/common/routing_mix.rs"]
mod routing_mix;
use routing_mix::MIX;

fn one(router: &Router, (method, path, query): (&'static str, &'static str, Option<&'static str>)) {
    let route = router.route(black_box(path), query).unwrap();
    let info = RequestInfo::parse(method, &route.rest, route.query).unwrap();
    black_box((route.target, info.is_long_running(), info.verb.len()));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let count = |i: usize, default: usize| arg(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let router = Router::central();
    match arg(1) {
        Some("mix") => {
            for i in 0..count(2, 100_000) {
                one(&router, MIX[i % MIX.len()]);
            }
        }
        Some("route") => {
            let request = MIX[count(2, 0) % MIX.len()];
            for _ in 0..count(3, 100_000) {
                let route = router.route(black_box(request.1), request.2).unwrap();
                black_box((route.target, route.rest.len()));
            }
        }
        Some("info") => {
            let (method, path, query) = MIX[count(2, 0) % MIX.len()];
            let rest = router.route(path, query).unwrap().rest.into_owned();
            for _ in 0..count(3, 100_000) {
                let info = RequestInfo::parse(method, black_box(&rest), query).unwrap();
                black_box((info.is_long_running(), info.verb.len()));
            }
        }
        Some("item") => {
            let request = MIX[count(2, 0) % MIX.len()];
            for _ in 0..count(3, 100_000) {
                one(&router, request);
            }
        }
        _ => {
            let n = count(2, 1_000_000);
            let mut total = 0.0;
            for (k, &request) in MIX.iter().enumerate() {
                // Best of five runs of n: the least disturbed by the rest of the machine.
                let best = (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..n {
                            one(&router, request);
                        }
                        start.elapsed().as_nanos() as f64 / n as f64
                    })
                    .fold(f64::MAX, f64::min);
                total += best;
                let (method, path, query) = request;
                println!(
                    "{k}: {best:6.1} ns  {method} {path}?{}",
                    query.unwrap_or("")
                );
            }
            println!("mean {:.1} ns", total / MIX.len() as f64);
        }
    }
}
