//! Worst-case action-pattern matching: `*a*a*a*a*b` (and friends) against inputs of growing
//! length that almost match. A backtracking matcher is exponential or polynomial here; the
//! compiled greedy matcher is linear in the input for each literal part.
//!
//! `cargo bench --bench patterns`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iot_authz::policy::syntax::ActionPattern;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern_worst_case");
    // `*a*a*a*a*b` fails at once on its suffix; the variants ending in `*` must scan.
    for pattern in [
        "*a*a*a*a*b",
        "*a*a*a*a*b*",
        "*a*a*a*a*a*a*a*a*a*a*b*",
        "a*a*a*a*a*a*a*a*a*ab*",
    ] {
        let Ok(compiled) = ActionPattern::parse(pattern) else {
            eprintln!("pattern {pattern} does not parse");
            std::process::exit(1);
        };
        for len in [1_000usize, 10_000, 100_000] {
            let input = "a".repeat(len);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(pattern, len), &input, |b, input| {
                b.iter(|| black_box(compiled.matches_lower(black_box(input))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
