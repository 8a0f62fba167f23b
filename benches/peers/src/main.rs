//! iot-authz against peer engines (Cedar, casbin-rs, regorus) on one Azure-style RBAC
//! workload. See `README.md` beside `Cargo.toml`.
//!
//! ```text
//! cargo run --release -p iot-authz-peers -- --json peers.json
//! ```

// Shared with the other benchmark tool, which uses a different part of it.
#[allow(dead_code)]
#[path = "../../alloc/mod.rs"]
mod alloc;
mod engines;
mod reference;
mod workload;

use std::hint::black_box;
use std::process::exit;
use std::time::Instant;

use serde_json::{Value as Json, json};

use engines::Engine;
use workload::{SEED, Size, Workload};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const USAGE: &str = "\
usage: iot-authz-peers [options]

  --json PATH         also write the results as JSON to PATH
  --runs N            timed runs over all checks per engine (default 5)
  --batch N           checks per timed batch, for the per-check median (default 100)
  --load-runs N       loads per engine for the load-time median (default 3)
  --engines LIST      comma-separated subset of: iot-authz,iot-authz-patterns,cedar,casbin,regorus
                      (default all; cedar also reports `cedar (prebuilt requests)`)
  --seed N            workload seed (default 0x1a2b3c4d5e6f7081)
  --users N           users (default 10000)
  --assignments N     role assignments (default 50000)
  --checks N          checks (default 100000)
";

struct Options {
    json: Option<String>,
    runs: usize,
    batch: usize,
    load_runs: usize,
    engines: Vec<String>,
    seed: u64,
    size: Size,
}

fn parse_number(flag: &str, text: &str) -> u64 {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.replace('_', "").parse(),
    };
    parsed.unwrap_or_else(|_| {
        eprintln!("{flag}: expected a number, got `{text}`\n\n{USAGE}");
        exit(2)
    })
}

fn options() -> Options {
    let mut o = Options {
        json: None,
        runs: 5,
        batch: 100,
        load_runs: 3,
        engines: ALL.iter().map(|s| (*s).to_owned()).collect(),
        seed: SEED,
        size: Size::ISSUE,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            exit(0);
        }
        let Some(value) = args.next() else {
            eprintln!("{flag}: missing value\n\n{USAGE}");
            exit(2)
        };
        let n = || parse_number(&flag, &value) as usize;
        match flag.as_str() {
            "--json" => o.json = Some(value.clone()),
            "--runs" => o.runs = n().max(1),
            "--batch" => o.batch = n().max(1),
            "--load-runs" => o.load_runs = n().max(1),
            "--engines" => {
                o.engines = value.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = o.engines.iter().find(|e| !ALL.contains(&e.as_str())) {
                    eprintln!("--engines: unknown engine `{bad}`\n\n{USAGE}");
                    exit(2);
                }
            }
            "--seed" => o.seed = parse_number(&flag, &value),
            "--users" => o.size.users = n().max(1),
            "--assignments" => o.size.assignments = n().max(1),
            "--checks" => o.size.checks = n().max(1),
            _ => {
                eprintln!("unknown option `{flag}`\n\n{USAGE}");
                exit(2);
            }
        }
    }
    o
}

const ALL: [&str; 5] = [
    "iot-authz",
    "iot-authz-patterns",
    "cedar",
    "casbin",
    "regorus",
];

/// An engine behind one type, so the harness can hold them together.
enum Loaded {
    IotAuthz(Box<engines::iot_authz::IotAuthz>),
    Cedar(engines::cedar::Cedar),
    Casbin(engines::casbin::Casbin),
    Rego(engines::rego::Rego),
}

fn load(name: &str, w: &Workload) -> Result<Loaded, String> {
    Ok(match name {
        "iot-authz" => Loaded::IotAuthz(Box::new(engines::iot_authz::load(w, true)?)),
        "iot-authz-patterns" => Loaded::IotAuthz(Box::new(engines::iot_authz::load(w, false)?)),
        "cedar" => Loaded::Cedar(engines::cedar::load(w)?),
        "casbin" => Loaded::Casbin(engines::casbin::load(w)?),
        "regorus" => Loaded::Rego(engines::rego::load(w)?),
        _ => return Err(format!("unknown engine {name}")),
    })
}

impl Loaded {
    fn engine(&mut self) -> &mut dyn Engine {
        match self {
            Self::IotAuthz(e) => &mut **e,
            Self::Cedar(e) => e,
            Self::Casbin(e) => e,
            Self::Rego(e) => e,
        }
    }
}

/// Loads an engine and answers the first check: "ready to query" means that.
fn load_ready(name: &str, w: &Workload) -> Loaded {
    let mut engine = load(name, w).unwrap_or_else(|e| {
        eprintln!("{name}: failed to load the workload: {e}");
        exit(3)
    });
    let (p, a, s) = w.check_strings(&w.checks[0]);
    black_box(engine.engine().check(p, a, s));
    engine
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

struct Timing {
    /// Mean ns per check of each run.
    run_means: Vec<f64>,
    /// Median over runs of the per-run mean.
    median_of_means: f64,
    /// Median over every timed batch (of every run) of ns per check.
    batch_median: f64,
    batch_p99: f64,
}

/// Times `runs` passes over all checks, in batches of `batch`.
fn time_checks(
    n: usize,
    runs: usize,
    batch: usize,
    mut check: impl FnMut(usize) -> bool,
) -> Timing {
    let mut run_means = Vec::with_capacity(runs);
    let mut batches = Vec::with_capacity(runs * n.div_ceil(batch));
    for _ in 0..runs {
        let mut total = 0u128;
        let mut allowed = 0usize;
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let t = Instant::now();
            for i in start..end {
                allowed += usize::from(check(black_box(i)));
            }
            let ns = t.elapsed().as_nanos();
            total += ns;
            batches.push(ns as f64 / (end - start) as f64);
            start = end;
        }
        black_box(allowed);
        run_means.push(total as f64 / n as f64);
    }
    let median_of_means = median(&mut run_means.clone());
    let batch_median = median(&mut batches);
    let batch_p99 = batches[((batches.len() as f64 * 0.99) as usize).min(batches.len() - 1)];
    Timing {
        run_means,
        median_of_means,
        batch_median,
        batch_p99,
    }
}

/// What the machine is.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Row {
    name: String,
    load_ms: Vec<f64>,
    heap_peak: i64,
    heap_retained: i64,
    rss_growth_kib: Option<i64>,
    timing: Timing,
}

fn main() {
    let o = options();
    let started = Instant::now();
    let t = Instant::now();
    let w = Workload::new(o.size, o.seed);
    let generated = t.elapsed();
    let levels = {
        let mut l = [0usize; 4];
        for a in &w.assignments {
            l[w.scopes[a.scope as usize].level as usize] += 1;
        }
        l
    };
    println!(
        "workload (seed {:#x}): {} scopes (1 root, {} subscriptions, {} resource groups, {} targets), \
         {} catalog actions, {} roles, {} users, {} assignments (root {}, subscription {}, \
         resource group {}, target {}), {} checks; generated in {:.2?}",
        w.seed,
        w.scopes.len(),
        w.scopes.iter().filter(|s| s.level == 1).count(),
        w.scopes.iter().filter(|s| s.level == 2).count(),
        w.scopes.iter().filter(|s| s.level == 3).count(),
        w.catalog.len(),
        w.roles.len(),
        w.users.len(),
        w.assignments.len(),
        levels[0],
        levels[1],
        levels[2],
        levels[3],
        w.checks.len(),
        generated
    );

    let t = Instant::now();
    let expected = reference::answers(&w);
    let allowed = expected.iter().filter(|&&a| a).count();
    println!(
        "reference: {allowed} of {} checks allowed ({:.1} %), computed in {:.2?}",
        expected.len(),
        100.0 * allowed as f64 / expected.len() as f64,
        t.elapsed()
    );
    let strings: Vec<(&str, &str, &str)> = w.checks.iter().map(|c| w.check_strings(c)).collect();

    // Phase 1: load every engine once (time and heap), then check every answer against the
    // reference. Nothing is timed per check until every engine agrees on every check.
    let mut loaded: Vec<(String, Loaded, f64, alloc::HeapWindow, Option<i64>)> = Vec::new();
    for name in &o.engines {
        let rss_before = proc_status_kib("VmRSS");
        let t = Instant::now();
        let (engine, heap) = alloc::measure(|| load_ready(name, &w));
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let rss_growth = match (rss_before, proc_status_kib("VmRSS")) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        };
        println!(
            "{name}: loaded in {load_ms:.1} ms; heap peak during load {:.1} MiB, retained {:.1} MiB",
            mib(heap.peak),
            mib(heap.retained)
        );
        loaded.push((name.clone(), engine, load_ms, heap, rss_growth));
    }
    let mut disagreements = 0;
    for (name, engine, ..) in &mut loaded {
        let t = Instant::now();
        let e = engine.engine();
        let mut wrong = Vec::new();
        for (i, &(p, a, s)) in strings.iter().enumerate() {
            if e.check(p, a, s) != expected[i] {
                wrong.push(i);
            }
        }
        if wrong.is_empty() {
            println!(
                "{name}: agrees with the reference on all {} checks ({:.2?})",
                strings.len(),
                t.elapsed()
            );
            continue;
        }
        disagreements += wrong.len();
        eprintln!(
            "{name}: DISAGREES with the reference on {} of {} checks; the first:",
            wrong.len(),
            strings.len()
        );
        for &i in wrong.iter().take(10) {
            let (p, a, s) = strings[i];
            eprintln!(
                "  check #{i}: principal {p}, action {a}, scope {s}: reference says {}, {name} says {}",
                if expected[i] { "allow" } else { "deny" },
                if expected[i] { "deny" } else { "allow" },
            );
        }
    }
    if disagreements > 0 {
        eprintln!("engines disagree with the reference: nothing was timed");
        exit(1);
    }

    // Phase 2: time the checks, engine by engine.
    let mut rows: Vec<Row> = Vec::new();
    let n = strings.len();
    for (name, engine, load_ms, heap, rss_growth) in &mut loaded {
        // One monomorphised loop per engine: no dynamic dispatch inside the timed region.
        macro_rules! timed {
            ($e:expr) => {{
                let e = $e;
                time_checks(n, o.runs, o.batch, |i| {
                    let (p, a, s) = strings[i];
                    e.check(p, a, s)
                })
            }};
        }
        let timing = match engine {
            Loaded::IotAuthz(e) => timed!(e),
            Loaded::Cedar(e) => timed!(e),
            Loaded::Casbin(e) => timed!(e),
            Loaded::Rego(e) => timed!(e),
        };
        println!(
            "{name}: {:.0} ns/check (median of {} run means), batch median {:.0} ns",
            timing.median_of_means, o.runs, timing.batch_median
        );
        rows.push(Row {
            name: name.clone(),
            load_ms: vec![*load_ms],
            heap_peak: heap.peak,
            heap_retained: heap.retained,
            rss_growth_kib: *rss_growth,
            timing,
        });
        if let Loaded::Cedar(cedar) = engine {
            // Cedar without the cost of building its `Request`s from strings.
            let requests: Vec<_> = strings
                .iter()
                .map(|&(p, a, s)| cedar.request(p, a, s))
                .collect();
            let timing = time_checks(n, o.runs, o.batch, |i| cedar.decide(&requests[i]));
            println!(
                "cedar (prebuilt requests): {:.0} ns/check, batch median {:.0} ns",
                timing.median_of_means, timing.batch_median
            );
            rows.push(Row {
                name: "cedar (prebuilt requests)".into(),
                load_ms: vec![*load_ms],
                heap_peak: heap.peak,
                heap_retained: heap.retained,
                rss_growth_kib: *rss_growth,
                timing,
            });
        }
    }
    drop(loaded);

    // Phase 3: more loads for the load-time median.
    for name in &o.engines {
        for _ in 1..o.load_runs {
            let t = Instant::now();
            let engine = load_ready(name, &w);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(engine);
            for row in rows
                .iter_mut()
                .filter(|r| r.name.starts_with(name.as_str()))
            {
                row.load_ms.push(ms);
            }
        }
    }

    report(&o, &w, allowed, &mut rows, started);
}

fn report(o: &Options, w: &Workload, allowed: usize, rows: &mut [Row], started: Instant) {
    let load_median: Vec<f64> = rows
        .iter()
        .map(|r| median(&mut r.load_ms.clone()))
        .collect();
    let ours = rows.iter().position(|r| r.name == "iot-authz");
    // Every other engine is a peer; iot-authz's own variants are reported, not compared.
    let peers: Vec<usize> = (0..rows.len())
        .filter(|&i| !rows[i].name.starts_with("iot-authz"))
        .collect();
    let fastest_peer = peers.iter().copied().min_by(|&a, &b| {
        rows[a]
            .timing
            .median_of_means
            .total_cmp(&rows[b].timing.median_of_means)
    });
    let fastest_loading_peer = peers
        .iter()
        .copied()
        .min_by(|&a, &b| load_median[a].total_cmp(&load_median[b]));

    println!();
    println!(
        "{:<26} {:>12} {:>14} {:>14} {:>14} {:>12} {:>12} {:>12}",
        "engine",
        "load ms",
        "ns/check",
        "batch median",
        "checks/s",
        "heap peak",
        "heap kept",
        "RSS growth"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<26} {:>12.1} {:>14.0} {:>14.0} {:>14.0} {:>8.1} MiB {:>8.1} MiB {:>8} MiB",
            r.name,
            load_median[i],
            r.timing.median_of_means,
            r.timing.batch_median,
            1e9 / r.timing.median_of_means,
            mib(r.heap_peak),
            mib(r.heap_retained),
            r.rss_growth_kib
                .map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    let mut verdicts = json!({});
    if let Some(us) = ours {
        println!();
        for p in (0..rows.len()).filter(|&i| Some(i) != ours) {
            println!(
                "{:<26} per check {:>9.1}x slower than iot-authz (batch medians {:.1}x); load {:>8.1}x slower",
                rows[p].name,
                rows[p].timing.median_of_means / rows[us].timing.median_of_means,
                rows[p].timing.batch_median / rows[us].timing.batch_median,
                load_median[p] / load_median[us],
            );
        }
        if let (Some(fp), Some(fl)) = (fastest_peer, fastest_loading_peer) {
            let check_ratio = rows[fp].timing.median_of_means / rows[us].timing.median_of_means;
            let load_ratio = load_median[fl] / load_median[us];
            println!(
                "target: >= 100x faster per check than the fastest peer ({}): {:.1}x -> {}",
                rows[fp].name,
                check_ratio,
                if check_ratio >= 100.0 {
                    "MET"
                } else {
                    "MISSED"
                }
            );
            println!(
                "target: faster to load than every peer (fastest: {}): {:.1}x -> {}",
                rows[fl].name,
                load_ratio,
                if load_ratio > 1.0 { "MET" } else { "MISSED" }
            );
            verdicts = json!({
                "fastestPeer": rows[fp].name,
                "checkRatioVsFastestPeer": check_ratio,
                "checkTargetMet": check_ratio >= 100.0,
                "fastestLoadingPeer": rows[fl].name,
                "loadRatioVsFastestLoadingPeer": load_ratio,
                "loadTargetMet": load_ratio > 1.0,
            });
        }
    }
    println!("total {:.1?}", started.elapsed());

    if let Some(path) = &o.json {
        let engines: Vec<Json> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "engine": r.name,
                    "loadMs": {"median": load_median[i], "runs": r.load_ms},
                    "nsPerCheck": {
                        "medianOfRunMeans": r.timing.median_of_means,
                        "runMeans": r.timing.run_means,
                        "batchMedian": r.timing.batch_median,
                        "batchP99": r.timing.batch_p99,
                    },
                    "checksPerSecond": 1e9 / r.timing.median_of_means,
                    "heapPeakDuringLoadBytes": r.heap_peak,
                    "heapRetainedAfterLoadBytes": r.heap_retained,
                    "rssGrowthDuringLoadKiB": r.rss_growth_kib,
                    "ratioVsIotAuthz": ours.map(|us| json!({
                        "perCheck": r.timing.median_of_means / rows[us].timing.median_of_means,
                        "load": load_median[i] / load_median[us],
                    })),
                })
            })
            .collect();
        let doc = json!({
            "workload": {
                "seed": format!("{:#x}", w.seed),
                "scopes": w.scopes.len(),
                "catalogActions": w.catalog.len(),
                "roles": w.roles.len(),
                "users": w.users.len(),
                "assignments": w.assignments.len(),
                "checks": w.checks.len(),
                "allowed": allowed,
            },
            "method": {
                "runs": o.runs,
                "batch": o.batch,
                "loadRuns": o.load_runs,
                "load": "generated workload -> engine's own encoding -> engine ready, first check answered",
                "perCheck": "from (principal, action, scope) strings to a decision, request construction included",
                "memory": "counting global allocator switched on around the first load: peak and retained live heap; RSS growth from /proc/self/status VmRSS",
            },
            "machine": {
                "cpu": cpu_model(),
                "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "engines": engines,
            "targets": verdicts,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("--json {path}: {e}");
            exit(2);
        }
        println!("wrote {path}");
    }
}
