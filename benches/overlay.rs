//! The store's incremental path (criterion): applying assignment writes as an overlay
//! over a compiled base against compiling the whole policy again, and check latency with
//! an overlay against none, on the engine benchmark's workload (`workload/mod.rs`; by
//! default 1,000,000 assignments).
//!
//! ```text
//! cargo bench --bench overlay                                  # full size
//! IOT_AUTHZ_BENCH_ASSIGNMENTS=10k cargo bench --bench overlay  # quick run
//! ```
//!
//! The workload's assignments are the store's (the last document, in id order, as the
//! store lists them); roles, groups, links and deny assignments are the files.
//! Benchmarks: `apply/1` and `apply/1000` (`OverlayBase::apply` with one change, a grant
//! to a principal the policy has never named, and with 1,000: 500 revocations and 500
//! grants), `apply/full_recompile` (`compile_documents` of the same documents, what every
//! write cost before), `check/base` and `check/overlay_1000` (the engine benchmark's
//! requests, one check per iteration).

mod check_loop;
mod workload;

use std::hint::black_box;
use std::process::exit;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use iot_authz::policy::document::AssignmentDoc;
use iot_authz::policy::overlay::OverlayBase;
use iot_authz::policy::syntax::parse_time;
use iot_authz::policy::{CheckRequest, compile_documents};

use check_loop::{rotate, size_from_env};
use workload::{SEED, Workload};

const REQUESTS: usize = 1 << 14;

fn main() {
    let size = size_from_env();
    let model = Workload::new(size, SEED);
    // The assignments in a last, store-like document, as the store lists them.
    let (docs, store) = model.store_documents();
    let t = Instant::now();
    let Ok(base) = compile_documents(&docs) else {
        eprintln!("the generated policy does not compile");
        exit(2);
    };
    let first_compile = t.elapsed();
    let t = Instant::now();
    let prepared = OverlayBase::new(&base, store.len());
    println!(
        "{} assignments; compile {first_compile:.2?}; base prepared for overlays in {:.2?}",
        base.counts.assignments,
        t.elapsed()
    );

    // One grant to a new principal; and 500 revocations plus 500 grants.
    let template = store.first().cloned().unwrap_or_default();
    let grant = |n: usize| AssignmentDoc {
        principal: format!("user:new-{n}@contoso.com"),
        id: Some(format!("zz-new-{n:05}")),
        ..template.clone()
    };
    let one: Vec<(String, Option<AssignmentDoc>)> = vec![("zz-new-00000".into(), Some(grant(0)))];
    let step = (store.len() / 500).max(1);
    let mut thousand: Vec<(String, Option<AssignmentDoc>)> = store
        .iter()
        .step_by(step)
        .take(500)
        .filter_map(|a| a.id.clone().map(|id| (id, None)))
        .chain((0..500).map(|n| (format!("zz-new-{n:05}"), Some(grant(n)))))
        .collect();
    thousand.sort_by(|a, b| a.0.cmp(&b.0));
    let apply = |changes: &[(String, Option<AssignmentDoc>)]| {
        prepared.apply(changes.iter().map(|(k, v)| (k.as_str(), v.as_ref())), None)
    };
    let Ok(overlay) = apply(&thousand) else {
        eprintln!("the overlay does not apply");
        exit(2);
    };

    // 10,000 revocations and 10,000 grants pending compaction, then one more grant: laid
    // over the last overlay (what a write costs the store now) or gathered again from
    // every change (what it cost before `apply_over`).
    let step = (store.len() / 10_000).max(1);
    let mut pending: Vec<(String, Option<AssignmentDoc>)> = store
        .iter()
        .step_by(step)
        .take(10_000)
        .filter_map(|a| a.id.clone().map(|id| (id, None)))
        .chain((0..10_000).map(|n| (format!("zz-new-{n:05}"), Some(grant(n)))))
        .collect();
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    let Ok(last) = apply(&pending) else {
        eprintln!("the overlay of 20,000 changes does not apply");
        exit(2);
    };
    let written = "zz-new-10000";
    pending.push((written.into(), Some(grant(10_000))));
    let over_last = || {
        prepared.apply_over(
            Some(&last),
            |id| id == written,
            pending
                .iter()
                .map(|(k, v)| (k.as_str(), move || Ok(v.as_ref()))),
            None,
        )
    };

    let changes = overlay.overlay_len();
    println!(
        "overlay of {changes} changes: {} bytes of heap, {:.0} bytes per change",
        overlay.overlay_bytes(),
        overlay.overlay_bytes() as f64 / changes.max(1) as f64
    );
    let Ok(at) = parse_time(workload::AT) else {
        exit(2);
    };
    let requests = model.requests(REQUESTS, SEED ^ 0x5eed);
    let checks: Vec<CheckRequest<'_>> = requests.iter().map(|r| r.check(at)).collect();

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("apply");
        group.bench_function("1", |b| b.iter_with_large_drop(|| apply(black_box(&one))));
        group.bench_function("1000", |b| {
            b.iter_with_large_drop(|| apply(black_box(&thousand)))
        });
        group.bench_function("20000_plus_1_gathered_again", |b| {
            b.iter_with_large_drop(|| apply(black_box(&pending)))
        });
        group.bench_function("20000_plus_1_over_the_last", |b| {
            b.iter_with_large_drop(over_last)
        });
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time((first_compile * 12).max(Duration::from_secs(5)));
        group.bench_function("full_recompile", |b| {
            b.iter_with_large_drop(|| compile_documents(black_box(&docs)))
        });
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("check");
        group.bench_function("base", |b| rotate(b, &base, &checks));
        group.bench_function("overlay_1000", |b| rotate(b, &overlay, &checks));
        group.finish();
    }
    criterion.final_summary();
}
