//! The decision cache's hit path against evaluating: on the embedded demo policy
//! (`decision/*`) and on the engine benchmark's 1M-assignment policy (`decision_1M/*`).
//!
//! `cargo bench --bench cache` (generating and compiling the 1M policy takes a few seconds)

mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use iot_authz::policy::syntax::{Instant, parse_time};
use iot_authz::policy::{CheckRequest, Snapshot, compile_documents, compile_sources};
use iot_authz::server::cache::{CacheCounters, CacheOptions, DecisionCache};

/// The demo's requests: 4 principals × 3 actions × 3 targets.
fn demo_requests() -> Vec<(String, String, String)> {
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

/// `evaluate` (`Snapshot::verdict`) against `cache_hit` (`DecisionCache::decide` on a warm
/// cache, every lookup a hit checked against the exact request, as the server does), both
/// walking `checks` in turn.
fn compare(c: &mut Criterion, group: &str, snapshot: &Snapshot, checks: &[CheckRequest<'_>]) {
    let cache = DecisionCache::new(
        CacheOptions {
            capacity: 100_000,
            ttl: Duration::from_secs(3600),
        },
        CacheCounters::default(),
    );
    for req in checks {
        let _ = cache.decide(1, snapshot, req);
    }
    let mut group = c.benchmark_group(group);
    let mut i = 0usize;
    group.bench_function("evaluate", |b| {
        b.iter(|| {
            i += 1;
            black_box(snapshot.verdict(black_box(&checks[i % checks.len()])).ok())
        })
    });
    let mut i = 0usize;
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                cache
                    .decide(1, snapshot, black_box(&checks[i % checks.len()]))
                    .ok(),
            )
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let Ok(snapshot) = compile_sources(&iot_authz::demo::sources()) else {
        eprintln!("the demo policy does not compile");
        std::process::exit(1);
    };
    let at = iot_authz::policy::syntax::now();
    let reqs = demo_requests();
    let checks: Vec<CheckRequest<'_>> = reqs
        .iter()
        .map(|(p, a, s)| CheckRequest {
            principal: p,
            groups: &[],
            action: a,
            data_action: false,
            scope: s,
            at,
        })
        .collect();
    compare(c, "decision", &snapshot, &checks);

    let model = workload::Workload::new(workload::Size::ISSUE, workload::SEED);
    let Ok(big) = compile_documents(&model.documents()) else {
        eprintln!("the 1M-assignment policy does not compile");
        std::process::exit(1);
    };
    let at: Instant = parse_time(workload::AT).unwrap_or_default();
    let requests = model.requests(1 << 14, workload::SEED ^ 0x5eed);
    let checks: Vec<CheckRequest<'_>> = requests.iter().map(|r| r.check(at)).collect();
    compare(c, "decision_1M", &big, &checks);
}

criterion_group!(benches, bench);
criterion_main!(benches);
