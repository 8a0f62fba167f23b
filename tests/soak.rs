//! Soak: mixed load through the real Envoy into the real binary while its policy files are
//! rewritten every few seconds. Zero failed requests, zero wrong answers, and flat resident
//! memory. `IOT_AUTHZ_SOAK_SECONDS` sets the length (10 s by default; the test script runs
//! two minutes, `scripts/soak.sh MINUTES` longer).
//!
//! Expected answers come from the engine compiled in-process on each of the two policy
//! versions; the property tests tie that engine to the independent reference model of
//! SPEC §3. An answer is wrong when it matches neither version's decision.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iot_authz::policy::queries::HttpRequest;
use iot_authz::policy::source::read_paths;
use iot_authz::policy::{Snapshot, compile_sources};

use crate::support::{Envoy, Upstream, crypto, root};

const EXTRA_A: &str = "version: 1\n";
const EXTRA_B: &str = "version: 1\nassignments:\n  - {id: soak-1, principal: 'user:nobody@contoso.com', role: Contributor, scope: /subscriptions/s1/resourceGroups/factory}\n";
const PRINCIPALS: [&str; 5] = [
    "user:alice@contoso.com",
    "user:carol@contoso.com",
    "user:dave@contoso.com",
    "user:nobody@contoso.com",
    "user:erin@contoso.com",
];

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn expected(snapshot: &Snapshot, method: &str, path: &str, principal: &str) -> u16 {
    let headers = vec![("x-iotauthz-principal".to_owned(), principal.to_owned())];
    snapshot
        .check_http(&HttpRequest {
            method,
            path,
            headers: &headers,
            principal: None,
            groups: &[],
            metadata: None,
            peer_principal: None,
            verifier: None,
            at: iot_authz::policy::syntax::now(),
        })
        .unwrap()
        .status()
}

fn write_then_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_through_envoy_with_reloads() {
    crypto();
    let seconds: u64 = std::env::var("IOT_AUTHZ_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // The demo policy as files, plus one file that alternates between two versions.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["packs", "demo"] {
        for entry in std::fs::read_dir(root().join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(
                    &p,
                    dir.path().join(format!(
                        "{sub}-{}",
                        p.file_name().unwrap().to_str().unwrap()
                    )),
                )
                .unwrap();
            }
        }
    }
    let extra = dir.path().join("zz-extra.yaml");
    std::fs::write(&extra, EXTRA_A).unwrap();
    let version_a =
        compile_sources(&read_paths(&[dir.path().to_path_buf()], u64::MAX).unwrap()).unwrap();
    std::fs::write(&extra, EXTRA_B).unwrap();
    let version_b =
        compile_sources(&read_paths(&[dir.path().to_path_buf()], u64::MAX).unwrap()).unwrap();
    std::fs::write(&extra, EXTRA_A).unwrap();

    let (mut child, grpc, _) = crate::support::serve_binary(
        [
            std::ffi::OsStr::new("--policy-debounce-ms"),
            std::ffi::OsStr::new("50"),
            std::ffi::OsStr::new("--policy"),
            dir.path().as_os_str(),
        ],
        &[],
    );
    let upstream = Upstream::start().await;
    let envoy = Envoy::start("envoy.yaml", grpc, upstream.addr, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures, wrong) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (version_a, version_b) = (Arc::new(version_a), Arc::new(version_b));
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let client = reqwest::Client::new();
        let base = envoy.url("");
        let (stop, requests, failures, wrong) = (
            stop.clone(),
            requests.clone(),
            failures.clone(),
            wrong.clone(),
        );
        let (version_a, version_b) = (version_a.clone(), version_b.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 8;
                let principal = PRINCIPALS[(i % 5) as usize];
                let method = ["GET", "PUT", "DELETE"][((i / 5) % 3) as usize];
                let path = format!("/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-{}", (i / 15) % 3 + 1);
                let resp = client
                    .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"))
                    .header("x-iotauthz-principal", principal)
                    .send()
                    .await;
                requests.fetch_add(1, Ordering::Relaxed);
                let Ok(resp) = resp else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                if status != 200 && status != 403 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (a, b) = (expected(&version_a, method, &path, principal), expected(&version_b, method, &path, principal));
                if status != a && status != b {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Reload every 2 seconds; sample resident memory every second.
    let start = Instant::now();
    let pid = child.id();
    // Warm-up: allocator arenas, caches and connection pools settle.
    let warmup = Duration::from_secs((seconds * 3 / 10).max(4));
    let mut baseline = 0u64;
    let mut peak_after = 0u64;
    let mut reloads = 0;
    let mut next_reload = start + Duration::from_secs(2);
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if Instant::now() >= next_reload {
            reloads += 1;
            write_then_rename(&extra, if reloads % 2 == 1 { EXTRA_B } else { EXTRA_A });
            next_reload += Duration::from_secs(2);
        }
        let rss = rss_kib(pid);
        if start.elapsed() < warmup {
            baseline = baseline.max(rss);
        } else {
            peak_after = peak_after.max(rss);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let (requests, failures, wrong) = (
        requests.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    let growth = if baseline == 0 {
        0.0
    } else {
        (peak_after as f64 - baseline as f64) / baseline as f64 * 100.0
    };
    println!(
        "soak: {seconds} s, {requests} requests, {failures} failed, {wrong} wrong, {reloads} reloads, rss {baseline} KiB after warm-up, peak {peak_after} KiB ({growth:+.1}%)"
    );
    assert!(requests > seconds * 50, "too little load: {requests}");
    assert_eq!(failures, 0);
    assert_eq!(wrong, 0);
    assert!(reloads >= 2);
    // A leak shows over minutes; the short default run (10 s) is dominated by the
    // allocator settling, so it gets a looser bound than the long soak.
    let limit = if seconds >= 60 { 10.0 } else { 25.0 };
    assert!(
        growth < limit,
        "resident memory grew {growth:.1}% after warm-up ({baseline} -> {peak_after} KiB)"
    );
}
