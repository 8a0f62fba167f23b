//! Plan benchmark (SPEC §11) on the engine benchmark's synthetic policy (see
//! `workload/mod.rs`), by default 1,000,000 assignments, plus one extra document: a
//! principal that holds `*` at `/` with 1,000 deny assignments below (on random targets).
//!
//! ```text
//! cargo bench --bench plan                                   # full size
//! IOT_AUTHZ_BENCH_ASSIGNMENTS=10k cargo bench --bench plan   # quick run
//! ```
//!
//! Latency is measured per call (`std::time::Instant` around each plan, after a warm-up),
//! so the median and the 99th percentile are exact order statistics of the calls made:
//! `plan/held~150` plans for principals whose subjects hold 100 to 200 assignments (the
//! workload's requests, the action each was drawn with); `plan/root-1000-denies` plans for
//! the `*` holder.

mod workload;

use std::hint::black_box;
use std::process::exit;
use std::time::{Duration, Instant};

use iot_authz::policy::compile_documents;
use iot_authz::policy::document::{AssignmentDoc, DenyAssignmentDoc, Document, RoleDoc};
use iot_authz::policy::plan::PlanRequest;
use iot_authz::policy::syntax::parse_time;

use workload::{SEED, ScopeRef, Size, Workload};

const DENIES: usize = 1000;
const ROOT: &str = "user:plan-bench-root";

fn main() {
    let size = match std::env::var("IOT_AUTHZ_BENCH_ASSIGNMENTS") {
        Ok(text) => match text.trim_end_matches(['k', 'K', 'M']).parse::<usize>() {
            Ok(n) if text.ends_with('M') => Size::with_assignments(n * 1_000_000),
            Ok(n) if text.ends_with(['k', 'K']) => Size::with_assignments(n * 1_000),
            Ok(n) if n > 0 => Size::with_assignments(n),
            _ => {
                eprintln!("IOT_AUTHZ_BENCH_ASSIGNMENTS: expected a count like 10000, 10k or 1M");
                exit(2);
            }
        },
        Err(_) => Size::ISSUE,
    };
    let model = Workload::new(size, SEED);
    let mut docs = model.documents();
    // The `*` holder and its deny assignments, on random targets.
    let mut rng = workload::Rng::new(SEED ^ 0xde11);
    let targets = model.scopes.targets;
    let extra = Document {
        version: Some(1),
        roles: vec![RoleDoc {
            name: "Plan Bench Everything".into(),
            actions: vec!["*".into()],
            data_actions: vec!["*".into()],
            ..RoleDoc::default()
        }],
        assignments: vec![AssignmentDoc {
            principal: ROOT.into(),
            role: "Plan Bench Everything".into(),
            scope: "/".into(),
            id: None,
            not_before: None,
            not_after: None,
        }],
        deny_assignments: (0..DENIES)
            .map(|i| DenyAssignmentDoc {
                name: format!("plan-bench-deny-{i}"),
                principals: vec![ROOT.into()],
                actions: vec!["*".into()],
                scope: model
                    .scopes
                    .path(ScopeRef::Target(rng.below(targets.max(1)) as u32)),
                ..DenyAssignmentDoc::default()
            })
            .collect(),
        ..Document::default()
    };
    docs.push(("plan-bench.yaml".into(), extra));
    let t = Instant::now();
    let snapshot = match compile_documents(&docs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the generated policy does not compile: {e}");
            exit(2);
        }
    };
    println!(
        "policy: {} assignments, {} deny assignments, {} scopes; compiled in {:.2?}",
        snapshot.counts.assignments,
        snapshot.counts.deny_assignments,
        snapshot.counts.scopes,
        t.elapsed()
    );
    let Ok(at) = parse_time(workload::AT) else {
        exit(2);
    };
    let requests: Vec<_> = model
        .requests(1 << 14, SEED ^ 0x91a)
        .into_iter()
        .filter(|r| (100..=200).contains(&r.held))
        .collect();
    if requests.is_empty() {
        eprintln!("no principal holds 100 to 200 assignments at this size");
        exit(2);
    }
    let mut held: Vec<usize> = requests.iter().map(|r| r.held).collect();
    held.sort_unstable();
    println!(
        "held~150: {} requests, held median {}",
        requests.len(),
        held[held.len() / 2]
    );
    let plans: Vec<PlanRequest<'_>> = requests
        .iter()
        .map(|r| PlanRequest {
            principal: &r.principal,
            groups: &r.groups,
            action: &r.action,
            data_action: r.data_action,
            under: "/",
            at,
        })
        .collect();
    let mut include = 0usize;
    let stats = measure(&plans, 20_000, |p| {
        let plan = snapshot.plan(black_box(p));
        include += plan
            .as_ref()
            .map_or(0, |p| p.include.len() + p.exclude.len());
    });
    println!(
        "plan/held~150           median {:>10.2?}  p99 {:>10.2?}  mean entries {:.1}",
        stats.0,
        stats.1,
        include as f64 / stats.2 as f64
    );
    let root = [PlanRequest {
        principal: ROOT,
        groups: &[],
        action: "Microsoft.Edge/targets/read",
        data_action: false,
        under: "/",
        at,
    }];
    let mut entries = 0usize;
    let stats = measure(&root, 1000, |p| {
        let plan = snapshot.plan(black_box(p));
        entries = plan.map_or(0, |p| p.include.len() + p.exclude.len());
    });
    println!(
        "plan/root-1000-denies   median {:>10.2?}  p99 {:>10.2?}  entries {entries}",
        stats.0, stats.1
    );
}

/// Runs `f` over `inputs` round-robin, `calls` times after a warm-up of a tenth as many;
/// returns the median and the 99th percentile of the calls, and the number of calls.
fn measure<T>(inputs: &[T], calls: usize, mut f: impl FnMut(&T)) -> (Duration, Duration, usize) {
    for i in 0..calls / 10 {
        f(&inputs[i % inputs.len()]);
    }
    let mut times: Vec<Duration> = (0..calls)
        .map(|i| {
            let t = Instant::now();
            f(&inputs[i % inputs.len()]);
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[calls / 2], times[calls * 99 / 100], calls)
}
