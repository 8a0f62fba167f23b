//! Engine benchmark (criterion): check latency, compile time and memory per assignment on a
//! synthetic Azure-like policy (see `workload/mod.rs`), by default at the issue's size:
//! 100,000 principals, 1,000,000 assignments, 10,000 scopes, 200 roles.
//!
//! ```text
//! cargo bench --bench engine                                  # full size
//! IOT_AUTHZ_BENCH_ASSIGNMENTS=10k cargo bench --bench engine  # quick run
//! IOT_AUTHZ_BENCH_MEMORY_ONLY=1 cargo bench --bench engine    # memory figures only
//! ```
//!
//! Benchmarks: `check/<size>` (a rotating set of pre-generated requests, about half
//! allowed, one check per iteration), `check/hit_allow` and `check/deny` (the same requests
//! split by decision), `compile/<size>` (`compile_documents` on in-memory documents, YAML
//! parsing excluded).
//!
//! Memory: the crate forbids `unsafe` (`unsafe_code = "forbid"`, which no `allow` can lift),
//! so the bench cannot install a counting `#[global_allocator]`. It reports the growth of
//! the resident set (`VmRSS`) across the first compile instead, with the snapshot kept
//! alive and the documents still held on both sides: an upper bound of the snapshot's heap,
//! since the allocator keeps some freed temporaries resident. For the exact live heap, run
//! the memory-only mode under `valgrind --tool=dhat` (see BENCHMARKS.md): it exits with the
//! snapshot still alive and the documents and model freed, so DHAT's "At t-end" is the
//! snapshot.

mod check_loop;
mod workload;

use std::hint::black_box;
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};
use iot_authz::policy::syntax::parse_time;
use iot_authz::policy::{CheckRequest, compile_documents};

use check_loop::{rotate, size_from_env};
use workload::{SEED, Workload};

/// Pre-generated requests per rotation (a power of two, indexed with a mask).
const REQUESTS: usize = 1 << 14;

fn main() {
    let size = size_from_env();
    let seed = std::env::var("IOT_AUTHZ_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let memory_only = std::env::var_os("IOT_AUTHZ_BENCH_MEMORY_ONLY").is_some();
    let label = size.label();
    let started = SystemTime::now();

    let t = Instant::now();
    let model = Workload::new(size, seed);
    let docs = model.documents();
    println!(
        "workload: {} principals, {} assignments, {} scopes, {} roles, seed {seed:#x}; generated in {:.2?}",
        model.principals.len(),
        model.assignments.len(),
        model.scopes.total(),
        model.roles.len(),
        t.elapsed()
    );

    // Memory: resident-set growth across the first compile (documents held throughout).
    let rss_before = proc_status_kib("VmRSS");
    let t = Instant::now();
    let snapshot = match compile_documents(&docs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the generated policy does not compile: {e}");
            exit(2);
        }
    };
    let first_compile = t.elapsed();
    let rss_after = proc_status_kib("VmRSS");
    let c = snapshot.counts;
    println!(
        "snapshot: {} principals, {} groups, {} assignments, {} deny assignments, {} scopes, {} roles, {} catalog actions; first compile {:.2?}",
        c.principals,
        c.groups,
        c.assignments,
        c.deny_assignments,
        c.scopes,
        c.roles,
        c.catalog_actions,
        first_compile
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before) * 1024;
        println!(
            "memory: resident set grew {:.1} MiB across compile = {:.0} bytes per assignment (upper bound of the snapshot's live heap); peak resident {:.1} MiB",
            grown as f64 / 1_048_576.0,
            grown as f64 / c.assignments.max(1) as f64,
            proc_status_kib("VmHWM").unwrap_or(0) as f64 / 1024.0
        );
    }
    if memory_only {
        drop(docs);
        drop(model);
        println!("memory-only mode: exiting with the snapshot alive");
        // Exit without dropping the snapshot, so a heap profiler's "at exit" is the snapshot.
        exit(0);
    }

    let Some(at) = parse_time(workload::AT).ok() else {
        eprintln!("bad reference time");
        exit(2);
    };
    let requests = model.requests(REQUESTS, seed ^ 0x5eed);
    let checks: Vec<CheckRequest<'_>> = requests.iter().map(|r| r.check(at)).collect();
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for req in &checks {
        match snapshot.check(req) {
            Ok(d) if d.allowed => allowed.push(*req),
            Ok(_) => denied.push(*req),
            Err(e) => {
                eprintln!("a generated request is invalid: {e}");
                exit(2);
            }
        }
    }
    let built = requests.iter().filter(|r| r.built_to_allow).count();
    let mut held: Vec<usize> = requests.iter().map(|r| r.held).collect();
    held.sort_unstable();
    println!(
        "requests: {} ({} built to allow); {} allowed ({:.1}%), {} denied; assignments held by the subjects of a request: mean {:.0}, median {}, p99 {}",
        checks.len(),
        built,
        allowed.len(),
        100.0 * allowed.len() as f64 / checks.len() as f64,
        denied.len(),
        held.iter().sum::<usize>() as f64 / held.len().max(1) as f64,
        held.get(held.len() / 2).copied().unwrap_or(0),
        held.get(held.len() * 99 / 100).copied().unwrap_or(0),
    );

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("check");
        group.bench_function(label.as_str(), |b| rotate(b, &snapshot, &checks));
        group.bench_function("hit_allow", |b| rotate(b, &snapshot, &allowed));
        group.bench_function("deny", |b| rotate(b, &snapshot, &denied));
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("compile");
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time((first_compile * 12).max(Duration::from_secs(5)));
        group.bench_function(label.as_str(), |b| {
            b.iter_with_large_drop(|| compile_documents(black_box(&docs)))
        });
        group.finish();
    }
    criterion.final_summary();

    // Criterion prints mean-based intervals; the figure the issue asks for is the median.
    println!("\nsummary (median of the per-sample means, from criterion's estimates.json):");
    for id in [
        format!("check/{label}"),
        "check/hit_allow".to_owned(),
        "check/deny".to_owned(),
        format!("compile/{label}"),
    ] {
        if let Some(ns) = median_ns(&id, started) {
            println!("  {id:<18} median {}", human(ns));
        }
    }
}

/// A field of /proc/self/status, in KiB (Linux only; `None` elsewhere).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// The median of a benchmark measured in this run, in nanoseconds.
fn median_ns(id: &str, since: SystemTime) -> Option<f64> {
    let home = match std::env::var_os("CRITERION_HOME") {
        Some(h) => PathBuf::from(h),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("criterion"),
    };
    let path = home.join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None; // filtered out of this run: stale figures
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.3} s", ns / 1_000_000_000.0)
    }
}
