//! Data-driven decision tests: every policy under `tests/fixtures/decisions/`, the role
//! packs with their fixtures, and the embedded demo, each run through its own `tests:`.

use std::path::{Path, PathBuf};

use iot_authz::policy::source::{DEFAULT_MAX_POLICY_BYTES, read_paths};
use iot_authz::policy::{Snapshot, compile_sources};
use iot_authz::testing::{self, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn load(paths: &[&str]) -> Snapshot {
    let paths: Vec<PathBuf> = paths.iter().map(|p| root().join(p)).collect();
    let sources = read_paths(&paths, DEFAULT_MAX_POLICY_BYTES).unwrap();
    compile_sources(&sources).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every case and fails with the list of failures; returns the number of cases.
fn run_all(snapshot: &Snapshot) -> usize {
    let results = testing::run(snapshot, iot_authz::policy::syntax::now());
    let failures: Vec<String> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Passed)
        .map(|r| format!("{}: {}: {:?}", r.document, r.name, r.outcome))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    results.len()
}

#[test]
fn evaluation_fixtures() {
    let dir = root().join("tests/fixtures/decisions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let snapshot = load(&[file.to_str().unwrap()]);
        assert!(run_all(&snapshot) > 0, "{} has no cases", file.display());
    }
}

#[test]
fn role_packs_reproduce_their_seeds() {
    let snapshot = load(&["packs", "packs/fixtures"]);
    let cases = run_all(&snapshot);
    assert!(cases > 500, "only {cases} cases");
}

#[test]
fn embedded_demo_passes_its_tests_and_matches_the_files() {
    let embedded = compile_sources(&iot_authz::demo::sources()).unwrap();
    run_all(&embedded);
    let from_files = load(&["packs", "demo"]);
    assert_eq!(embedded.revision, from_files.revision);
    assert!(embedded.counts.roles >= 30);
}
