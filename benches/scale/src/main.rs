//! Scale benchmark of the iot-authz engine (issue "Performance", part 2): the workload of
//! `benches/workload/mod.rs` at 100,000 principals, 10,000 scopes and 200 roles, with a
//! growing number of assignments (10k, 100k, 1M and 5M by default). For each size: compile
//! time, the exact heap of the compiled snapshot per assignment, the heap peak during a
//! compile, the growth of the resident set, and the median and p99 of single checks.
//!
//! ```text
//! cargo run --release -p iot-authz-scale -- --json scale.json --png docs/scale.png
//! cargo run --release -p iot-authz-scale -- --sizes 10k,100k --checks 50000   # quick
//! cargo run --release -p iot-authz-scale -- --from-json scale.json --png docs/scale.png
//! ```
//!
//! Each size runs in a fresh child process (the same executable), so the resident-set
//! figures and the peak resident set of one size are not skewed by memory the allocator kept
//! from the previous one. The child prints its result as one JSON line; the parent prints a
//! markdown table ready for BENCHMARKS.md and writes the JSON and the plot.
//!
//! Method, per size:
//!
//! - The model (`Workload::new`), its documents and the requests are generated first (not
//!   timed as part of the compile).
//! - **Compile**: `compile_documents` on the in-memory documents (as `benches/engine.rs`),
//!   the first compile, then a few more (`--compiles`, default 5 up to 100k assignments,
//!   2 up to 1M, 1 above); the median is over those repeats; the drop of a snapshot is not
//!   timed.
//! - **Memory**: a counting `#[global_allocator]` (`benches/alloc/mod.rs`). *Snapshot heap* = the live
//!   heap the first compile leaves behind (everything it allocated and did not free: the
//!   snapshot, nothing else, since the documents are only borrowed); the tool checks it
//!   against the heap freed when the snapshot is dropped at the end. *Compile peak* = the
//!   highest live heap during the first compile above its start (snapshot plus
//!   temporaries). *RSS growth* = `VmRSS` after the first compile minus before it (includes
//!   glibc's chunk overhead and freed temporaries the allocator keeps resident).
//! - **Checks**: `--requests` distinct requests from `Workload::requests` (half built to
//!   be allowed), walked in turn `--checks` times after one untimed pass. Each check is
//!   timed on its own with two `Instant::now()` calls; the median cost of a pair of
//!   `Instant::now()` calls with nothing between them (measured first, 1M pairs) is
//!   subtracted from the reported percentiles and printed separately. As a cross-check, the
//!   mean of a batched loop with no per-check timer (`--checks` checks again) is reported
//!   too. Allocation counting is off while checks are timed; one extra counted pass gives
//!   the allocations per check.

// The generator, shared with `benches/engine.rs`.
#[path = "../../workload/mod.rs"]
mod workload;

// Shared with the other benchmark tool, which uses a different part of it.
#[allow(dead_code)]
#[path = "../../alloc/mod.rs"]
mod alloc;
mod plot;
mod report;

use std::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Parser;
use iot_authz::policy::syntax::parse_time;
use iot_authz::policy::{CheckRequest, compile_documents};

use report::{Machine, Report, SizeResult};
use workload::{SEED, Size, Workload};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "iot-authz-scale",
    about = "Compile time, memory per assignment and check latency of iot-authz from 10k to 5M assignments"
)]
struct Args {
    /// Numbers of assignments, comma-separated (`10000`, `10k`, `1M`, `2.5M`).
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg, default_value = "10k,100k,1M,5M")]
    sizes: Vec<usize>,
    /// Principals (users, devices, service principals and groups), the same at every size.
    #[arg(long, value_parser = parse_count_arg, default_value = "100k")]
    principals: usize,
    /// Scopes, the same at every size.
    #[arg(long, value_parser = parse_count_arg, default_value = "10k")]
    scopes: usize,
    /// Roles, the same at every size.
    #[arg(long, default_value_t = 200)]
    roles: usize,
    /// Distinct requests drawn from the workload, walked in turn.
    #[arg(long, value_parser = parse_count_arg, default_value = "65536")]
    requests: usize,
    /// Individually timed checks per size (and as many again in the batched loop).
    #[arg(long, value_parser = parse_count_arg, default_value = "262144")]
    checks: usize,
    /// Compiles after the first (the median is over these); default 5 up to 100k
    /// assignments, 2 up to 1M, 1 above.
    #[arg(long)]
    compiles: Option<usize>,
    /// Workload seed (decimal or 0x-prefixed hex).
    #[arg(long, value_parser = parse_seed, default_value_t = SEED)]
    seed: u64,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the plot (PNG).
    #[arg(long)]
    png: Option<PathBuf>,
    /// Measure nothing: read a previous `--json` output and print its table (and draw
    /// `--png`).
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// Measure the store's incremental path instead, at the first of `--sizes`: the heap
    /// an overlay of this many assignment changes holds with the store's own record of
    /// each change (bytes per change, against 300 B), and the allocations of
    /// `Snapshot::check` with that overlay (must be none: the tool fails otherwise).
    #[arg(long, value_parser = parse_count_arg)]
    overlay_changes: Option<usize>,
    /// Internal: measure one size in this process and print its result as JSON.
    #[arg(long, hide = true)]
    child: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if let Some(changes) = args.overlay_changes {
        overlay(&args, changes)
    } else if let Some(n) = args.child {
        child(&args, n)
    } else if let Some(path) = &args.from_json {
        std::fs::read(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| {
                serde_json::from_slice::<Report>(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .and_then(|report| finish(&args, &report))
    } else {
        parent(&args)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iot-authz-scale: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every size in its own child process and reports.
fn parent(args: &Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let mut report = Report {
        command: command_line(),
        machine: Machine::detect(),
        started: date_utc(),
        finished: String::new(),
        seed: args.seed,
        results: Vec::new(),
    };
    eprintln!(
        "{} | nproc {} | {} | clocksource {} | {}",
        report.started,
        report.machine.nproc,
        report.machine.cpu,
        report.machine.clocksource,
        report.machine.rustc
    );
    for &n in &args.sizes {
        let mut cmd = Command::new(&exe);
        cmd.arg("--child")
            .arg(n.to_string())
            .arg("--principals")
            .arg(args.principals.to_string())
            .arg("--scopes")
            .arg(args.scopes.to_string())
            .arg("--roles")
            .arg(args.roles.to_string())
            .arg("--requests")
            .arg(args.requests.to_string())
            .arg("--checks")
            .arg(args.checks.to_string())
            .arg("--seed")
            .arg(args.seed.to_string());
        if let Some(k) = args.compiles {
            cmd.arg("--compiles").arg(k.to_string());
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "the run at {} assignments failed ({})",
                workload::label(n),
                out.status
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("");
        let result: SizeResult = serde_json::from_str(line)
            .map_err(|e| format!("the run at {n} assignments printed no result: {e}"))?;
        eprintln!("{}", report::row(&result));
        report.results.push(result);
    }
    report.finished = date_utc();
    finish(args, &report)
}

/// Prints the markdown and writes the JSON and the plot.
fn finish(args: &Args, report: &Report) -> Result<(), String> {
    let markdown = report::markdown(report);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(markdown.as_bytes())
        .map_err(|e| format!("stdout: {e}"))?;
    if let Some(path) = &args.json
        && args.from_json.as_ref() != Some(path)
    {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.png {
        plot::draw(path, report).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The store's incremental path at the first of `--sizes` (see `--overlay-changes`): the
/// workload's assignments become the store's document (in id order, as the store lists
/// them); half the changes revoke base assignments, half grant new ones (new ids, half of
/// them to principals the base does not know). Bytes per change = the heap the overlaid
/// snapshot holds above the base (its tables and strings; the base is shared) plus the
/// store's record of the changes (`store::Incremental`'s map of changed ids to the
/// revision they were written at, the same type), over the number of changes.
fn overlay(args: &Args, changes: usize) -> Result<(), String> {
    use iot_authz::policy::document::AssignmentDoc;
    use iot_authz::policy::overlay::OverlayBase;
    use std::collections::BTreeMap;

    let assignments = args.sizes.first().copied().unwrap_or(1_000_000);
    let size = Size {
        principals: args.principals,
        assignments,
        scopes: args.scopes,
        roles: args.roles,
    };
    let model = Workload::new(size, args.seed);
    // The assignments in a last, store-like document, as the store lists them.
    let (docs, store) = model.store_documents();
    let base = compile_documents(&docs).map_err(|e| format!("compile: {e}"))?;
    drop(docs);
    let prepared = OverlayBase::new(&base, store.len());
    let template = store.first().cloned().unwrap_or_default();
    let known: Vec<String> = model
        .principals
        .iter()
        .take(changes)
        .map(|p| p.to_string())
        .collect();
    let revoked = changes / 2;
    let step = (store.len() / revoked.max(1)).max(1);
    let mut list: Vec<(String, Option<AssignmentDoc>)> = store
        .iter()
        .step_by(step)
        .take(revoked)
        .filter_map(|a| a.id.clone().map(|id| (id, None)))
        .collect();
    for n in 0..changes - list.len() {
        let principal = match known.get(n) {
            Some(p) if n % 2 == 0 => p.clone(),
            _ => format!("user:new-{n}@contoso.com"),
        };
        let id = format!(
            "{:08x}-0000-4000-8000-{n:012x}",
            n.wrapping_mul(2_654_435_761)
        );
        list.push((
            id.clone(),
            Some(AssignmentDoc {
                principal,
                id: Some(id),
                ..template.clone()
            }),
        ));
    }
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let n = list.len();

    let (overlaid, overlay_heap) =
        alloc::measure(|| prepared.apply(list.iter().map(|(k, v)| (k.as_str(), v.as_ref())), None));
    let overlaid = overlaid.map_err(|e| format!("the overlay does not apply: {}", e.0))?;
    let (record, record_heap) = alloc::measure(|| {
        list.iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i as i64))
            .collect::<BTreeMap<String, i64>>()
    });
    alloc::counting(true);
    let per_change = (overlay_heap.retained + record_heap.retained) as f64 / n.max(1) as f64;
    println!(
        "{} assignments in the base; an overlay of {n} changes ({} revocations, {} grants): overlay {} B ({:.0} B/change; its own estimate {} B), the store's record {} B ({:.0} B/change): {per_change:.0} B per change (aim: 300 B)",
        base.counts.assignments,
        revoked,
        n - revoked,
        overlay_heap.retained,
        overlay_heap.retained as f64 / n.max(1) as f64,
        overlaid.overlay_bytes(),
        record_heap.retained,
        record_heap.retained as f64 / n.max(1) as f64,
    );
    drop(record);

    // Every request of the workload, and one per changed principal, against the overlay.
    let at = parse_time(workload::AT).map_err(|e| format!("reference time: {e}"))?;
    let requests = model.requests(args.requests.max(1), args.seed ^ 0x5eed);
    let mut checks: Vec<CheckRequest<'_>> = requests.iter().map(|r| r.check(at)).collect();
    let first = *checks.first().ok_or("no requests")?;
    for (_, value) in &list {
        if let Some(a) = value {
            checks.push(CheckRequest {
                principal: &a.principal,
                scope: &a.scope,
                ..first
            });
        }
    }
    // Twice: the first pass shows any allocation made once per process (none expected
    // either), the second that no request allocates.
    let mut allowed = 0;
    let mut window = alloc::HeapWindow::default();
    for pass in 1..=2 {
        let mut allocating = Vec::new();
        let (count, heap) = alloc::measure(|| {
            let mut count = 0;
            for (i, r) in checks.iter().enumerate() {
                let before = alloc::allocations();
                count += usize::from(overlaid.check(r).is_ok_and(|d| d.allowed));
                if alloc::allocations() != before {
                    allocating.push(i);
                }
            }
            count
        });
        alloc::counting(true);
        // A request the base alone allocates for too (its subjects outgrow the engine's
        // stack buffers) is the engine's, not the overlay's: reported, not failed.
        let (base_too, overlay_only): (Vec<usize>, Vec<usize>) =
            allocating.iter().partition(|&&i| {
                let before = alloc::allocations();
                let _ = base.check(&checks[i]);
                alloc::allocations() != before
            });
        if !base_too.is_empty() {
            println!(
                "pass {pass}: {} of {} checks allocate with or without the overlay (the base alone allocates for them too)",
                base_too.len(),
                checks.len()
            );
        }
        let allocating = overlay_only;
        if !allocating.is_empty() {
            let shown: Vec<String> = allocating
                .iter()
                .take(5)
                .map(|&i| format!("{:?}", checks[i]))
                .collect();
            return Err(format!(
                "pass {pass}: Snapshot::check with an overlay allocated in {} of {} checks, e.g. {}",
                allocating.len(),
                checks.len(),
                shown.join("; ")
            ));
        }
        (allowed, window) = (count, heap);
    }
    println!(
        "{} checks against the overlay ({allowed} allowed): none allocates where the base does not; peak heap {} B",
        checks.len(),
        window.peak
    );
    if per_change > 300.0 {
        eprintln!("over the aim of 300 B per change");
    }
    Ok(())
}

/// Measures one size in this process (a child of [`parent`]).
fn child(args: &Args, assignments: usize) -> Result<(), String> {
    let size = Size {
        principals: args.principals,
        assignments,
        scopes: args.scopes,
        roles: args.roles,
    };
    let label = size.label();
    let load_before = report::load_average();
    let heap_at_start = alloc::live();

    // Workload, documents and requests.
    let t = Instant::now();
    let model = Workload::new(size, args.seed);
    let generate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let docs = model.documents();
    let documents_s = t.elapsed().as_secs_f64();
    let heap_documents = alloc::live() - heap_at_start;
    let requests = model.requests(args.requests.max(1), args.seed ^ 0x5eed);
    eprintln!(
        "[{label}] workload: {} principals, {} assignments, {} scopes, {} roles; generated in {generate_s:.2} s, documents in {documents_s:.2} s ({:.0} MiB of heap)",
        model.principals.len(),
        model.assignments.len(),
        model.scopes.total(),
        model.roles.len(),
        heap_documents as f64 / 1_048_576.0,
    );

    // First compile, with its memory figures.
    let rss_before = report::proc_status_bytes("VmRSS");
    let heap_before = alloc::live();
    let allocations_before = alloc::allocations();
    alloc::reset_peak();
    let t = Instant::now();
    let snapshot = compile_documents(&docs).map_err(|e| format!("compile: {e}"))?;
    let compile_first_s = t.elapsed().as_secs_f64();
    let snapshot_heap = alloc::live() - heap_before;
    let compile_peak = alloc::peak() - heap_before;
    let compile_allocations = alloc::allocations() - allocations_before;
    let rss_after = report::proc_status_bytes("VmRSS");
    let rss_growth = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let counts = snapshot.counts;
    eprintln!(
        "[{label}] first compile {compile_first_s:.3} s; snapshot heap {:.1} MiB ({:.1} B/assignment), compile peak {:.1} MiB, RSS growth {:.1} MiB",
        snapshot_heap as f64 / 1_048_576.0,
        snapshot_heap as f64 / counts.assignments.max(1) as f64,
        compile_peak as f64 / 1_048_576.0,
        rss_growth.unwrap_or(0) as f64 / 1_048_576.0,
    );

    // More compiles for the median.
    let repeats = args.compiles.unwrap_or(match assignments {
        0..=100_000 => 5,
        100_001..=1_000_000 => 2,
        _ => 1,
    });
    let mut compile_repeats_s = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        let again = compile_documents(black_box(&docs)).map_err(|e| format!("compile: {e}"))?;
        compile_repeats_s.push(t.elapsed().as_secs_f64());
        drop(again);
    }
    eprintln!("[{label}] more compiles: {compile_repeats_s:.3?} s");
    drop(docs);
    drop(model);

    // Requests.
    let at = parse_time(workload::AT).map_err(|e| format!("reference time: {e}"))?;
    let checks: Vec<CheckRequest<'_>> = requests.iter().map(|r| r.check(at)).collect();
    let mut held: Vec<usize> = requests.iter().map(|r| r.held).collect();
    held.sort_unstable();
    let held_mean = held.iter().sum::<usize>() as f64 / held.len().max(1) as f64;

    // One counted pass: validity, decisions, allocations per check (and a warm-up).
    let allocations_before = alloc::allocations();
    let mut allowed = 0usize;
    for req in &checks {
        match snapshot.check(req) {
            Ok(d) => allowed += usize::from(d.allowed),
            Err(e) => return Err(format!("a generated request is invalid: {e}")),
        }
    }
    let allocations_per_check =
        (alloc::allocations() - allocations_before) as f64 / checks.len() as f64;

    // Timed checks, counting off.
    alloc::counting(false);
    let timer = timer_overhead(1 << 20);
    let total = args.checks.max(1);
    let mut samples: Vec<u32> = Vec::with_capacity(total);
    let mut i = 0usize;
    for _ in 0..total {
        let req = &checks[i];
        i += 1;
        if i == checks.len() {
            i = 0;
        }
        let t0 = Instant::now();
        let out = snapshot.check(black_box(req)).map(|d| d.allowed);
        let t1 = Instant::now();
        black_box(out.is_ok());
        samples.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
    }
    // The batched cross-check: the same number of checks, no timer around each.
    let mut batched_pass_means_ns = Vec::new();
    let mut done = 0usize;
    let mut batched_total_ns = 0f64;
    while done < total {
        let n = checks.len().min(total - done);
        let t = Instant::now();
        for req in &checks[..n] {
            black_box(snapshot.check(black_box(req)).map(|d| d.allowed).is_ok());
        }
        let ns = t.elapsed().as_nanos() as f64;
        batched_total_ns += ns;
        batched_pass_means_ns.push(ns / n as f64);
        done += n;
    }
    alloc::counting(true);

    samples.sort_unstable();
    let pick = |q: f64| {
        let idx = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        f64::from(samples[idx])
    };
    let raw_mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / samples.len() as f64;
    let minus = |v: f64| (v - timer.median).max(0.0);

    // The snapshot's heap, seen from the other side: what dropping it frees.
    let heap_before_drop = alloc::live();
    drop(snapshot);
    let snapshot_drop_freed = heap_before_drop - alloc::live();
    let load_after = report::load_average();

    let mut compile_sorted = compile_repeats_s.clone();
    compile_sorted.sort_by(f64::total_cmp);
    let result = SizeResult {
        label: label.clone(),
        assignments: counts.assignments,
        principals: counts.principals,
        groups: counts.groups,
        scopes: counts.scopes,
        roles: counts.roles,
        deny_assignments: counts.deny_assignments,
        load_before,
        load_after,
        generate_s,
        documents_s,
        documents_heap_bytes: heap_documents,
        compile_first_s,
        compile_median_s: if compile_sorted.is_empty() {
            compile_first_s
        } else {
            compile_sorted[compile_sorted.len() / 2]
        },
        compile_repeats_s,
        snapshot_heap_bytes: snapshot_heap,
        snapshot_drop_freed_bytes: snapshot_drop_freed,
        snapshot_allocations: compile_allocations,
        compile_peak_heap_bytes: compile_peak,
        rss_growth_bytes: rss_growth,
        peak_rss_bytes: report::proc_status_bytes("VmHWM"),
        requests: checks.len(),
        allowed,
        held_mean,
        held_median: held.get(held.len() / 2).copied().unwrap_or(0),
        held_p99: held.get(held.len() * 99 / 100).copied().unwrap_or(0),
        timer_overhead_ns: timer.median,
        timer_overhead_p99_ns: timer.p99,
        checks_timed: samples.len(),
        check_median_raw_ns: pick(0.5),
        check_p99_raw_ns: pick(0.99),
        check_median_ns: minus(pick(0.5)),
        check_p90_ns: minus(pick(0.9)),
        check_p99_ns: minus(pick(0.99)),
        check_p999_ns: minus(pick(0.999)),
        check_max_ns: minus(f64::from(samples[samples.len() - 1])),
        check_mean_timed_ns: minus(raw_mean),
        check_mean_batched_ns: batched_total_ns / total as f64,
        batched_pass_means_ns,
        allocations_per_check,
    };
    drop(requests);
    eprintln!(
        "[{label}] checks: median {:.0} ns, p99 {:.0} ns (timer {:.0} ns subtracted), batched mean {:.0} ns; {:.1}% allowed; snapshot drop freed {:.1} MiB",
        result.check_median_ns,
        result.check_p99_ns,
        result.timer_overhead_ns,
        result.check_mean_batched_ns,
        100.0 * allowed as f64 / result.requests as f64,
        snapshot_drop_freed as f64 / 1_048_576.0,
    );
    let line = serde_json::to_string(&result).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

struct TimerOverhead {
    median: f64,
    p99: f64,
}

/// The cost of the two `Instant::now()` calls around a check, with nothing between them.
fn timer_overhead(pairs: usize) -> TimerOverhead {
    let mut samples: Vec<u32> = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let t0 = Instant::now();
        let t1 = Instant::now();
        samples.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
    }
    samples.sort_unstable();
    TimerOverhead {
        median: f64::from(samples[samples.len() / 2]),
        p99: f64::from(samples[samples.len() * 99 / 100]),
    }
}

/// `10000`, `10_000`, `10k`, `1M`, `2.5M`.
fn parse_count(text: &str) -> Option<usize> {
    let text = text.trim().replace('_', "");
    let (number, unit) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1_000.0),
        'm' | 'M' => (&text[..text.len() - 1], 1_000_000.0),
        _ => (text.as_str(), 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value >= 0.0).then(|| (value * unit).round() as usize)
}

fn parse_count_arg(text: &str) -> Result<usize, String> {
    match parse_count(text) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a count like 10000, 10k or 1M, got `{text}`"
        )),
    }
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("seed `{text}`: {e}"))
}

/// This process's command line, as typed (program name shortened).
fn command_line() -> String {
    let mut words = vec!["iot-authz-scale".to_owned()];
    words.extend(std::env::args().skip(1));
    words.join(" ")
}

/// `date -u`, or seconds since the epoch where `date` is missing.
fn date_utc() -> String {
    Command::new("date")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{secs} s after the Unix epoch")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_seeds_parse() {
        assert_eq!(parse_count("10k"), Some(10_000));
        assert_eq!(parse_count("2.5M"), Some(2_500_000));
        assert_eq!(parse_count("1_000"), Some(1_000));
        assert_eq!(parse_seed("0x10"), Ok(16));
        assert_eq!(parse_seed("16"), Ok(16));
        assert!(parse_count_arg("0").is_err());
    }
}
