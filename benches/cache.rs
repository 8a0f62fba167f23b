//! The decision cache's hit path against evaluating, on the embedded demo policy.
//!
//! `cargo bench --bench cache`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use iot_authz::policy::{CheckRequest, compile_sources};
use iot_authz::server::cache::{CacheCounters, CacheOptions, DecisionCache};

fn requests() -> Vec<(String, String, String)> {
    let principals = [
        "user:alice@contoso.com",
        "user:carol@contoso.com",
        "user:dave@contoso.com",
        "user:nobody",
    ];
    let actions = [
        "Microsoft.Edge/targets/read",
        "Microsoft.Edge/targets/write",
        "Microsoft.Edge/targets/delete",
    ];
    let mut out = Vec::new();
    for p in principals {
        for a in actions {
            for t in ["line-1", "line-2", "line-3"] {
                out.push((
                    p.to_owned(),
                    a.to_owned(),
                    format!("/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/{t}"),
                ));
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let Ok(snapshot) = compile_sources(&iot_authz::demo::sources()) else {
        eprintln!("the demo policy does not compile");
        std::process::exit(1);
    };
    let reqs = requests();
    let at = iot_authz::policy::syntax::now();
    let cache = DecisionCache::new(
        CacheOptions {
            capacity: 10_000,
            ttl: Duration::from_secs(3600),
        },
        CacheCounters::default(),
    );
    let mut group = c.benchmark_group("decision");
    let mut i = 0usize;
    group.bench_function("evaluate", |b| {
        b.iter(|| {
            let (p, a, s) = &reqs[i % reqs.len()];
            i += 1;
            let req = CheckRequest {
                principal: p,
                groups: &[],
                action: a,
                data_action: false,
                scope: s,
                at,
            };
            black_box(snapshot.verdict(black_box(&req)).ok())
        })
    });
    // Warm the cache so every lookup below is a hit.
    for (p, a, s) in &reqs {
        let req = CheckRequest {
            principal: p,
            groups: &[],
            action: a,
            data_action: false,
            scope: s,
            at,
        };
        let _ = cache.decide(1, &snapshot, &req);
    }
    let mut i = 0usize;
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let (p, a, s) = &reqs[i % reqs.len()];
            i += 1;
            let req = CheckRequest {
                principal: p,
                groups: &[],
                action: a,
                data_action: false,
                scope: s,
                at,
            };
            black_box(cache.decide(1, &snapshot, black_box(&req)).ok())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
