#!/usr/bin/env bash
# Coverage-guided fuzzing of iot-authz (cargo-fuzz / libFuzzer), see fuzz/README.md.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 20)
#
# Builds every target of fuzz/ and runs each for SECONDS_PER_TARGET seconds on a copy of
# its seed corpus plus its kept reproducers (fuzz/corpus/<target>/ and
# fuzz/regressions/<target>/ are never written to). Any crash, panic, failed
# invariant, timeout or out-of-memory fails the target: the reproducer is kept in
# fuzz/artifacts/<target>/ and its path printed. Ends with the line `N passed, N failed`
# (targets) and exits non-zero when any target failed.
#
# Environment:
#   FUZZ_TARGETS="a b"   run only these targets (default: every target of fuzz/)
#   FUZZ_SANITIZER=none  skip AddressSanitizer (default: address, falling back to none
#                        when the sanitizer build fails)
#   FUZZ_TOOLCHAIN=stable|nightly   force the toolchain (default: as below)
#   CARGO_BUILD_JOBS=N   parallel build jobs (cargo's own setting)
#
# Toolchain: cargo-fuzz needs nightly-only flags (-Z). A nightly toolchain is used when
# `rustup toolchain list` shows one; otherwise the default (stable) toolchain with
# RUSTC_BOOTSTRAP=1. The build profile is in fuzz/Cargo.toml (why: see there).
# One target runs at a time (libFuzzer uses one core).
set -uo pipefail

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz_dir=$root/fuzz
cd "$fuzz_dir" || exit 2
started=$(date +%s)

# cargo-fuzz itself: one on PATH, or installed into the project-local root .tools/ (never
# the user's cargo bin).
export PATH="$root/.tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz into $root/.tools"
    cargo install cargo-fuzz --version 0.13.2 --locked --root "$root/.tools" ||
        { echo "fuzz: cannot install cargo-fuzz" >&2; echo "0 passed, 1 failed"; exit 1; }
fi

# The toolchain.
toolchain=()
cargo_fuzz="cargo fuzz"
want=${FUZZ_TOOLCHAIN:-auto}
if [ "$want" = nightly ] || { [ "$want" = auto ] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list 2>/dev/null | grep -q '^nightly'; }; then
    toolchain=(+nightly)
    cargo_fuzz="cargo +nightly fuzz"
    echo "fuzz: toolchain nightly ($(rustc +nightly --version))"
else
    [ "$want" = stable ] && toolchain=(+stable)
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz="RUSTC_BOOTSTRAP=1 cargo ${toolchain[*]} fuzz"
    echo "fuzz: toolchain $(rustc "${toolchain[@]}" --version) with RUSTC_BOOTSTRAP=1"
fi
fuzz() { cargo "${toolchain[@]}" fuzz "$@"; }
# Safe Rust cannot use a stack frame after return; ASan's fake stacks only cost time.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=0}

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: no fuzz targets found" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/iot-authz-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Build every target once; fall back to no sanitizer when the ASan build fails.
sanitizer=${FUZZ_SANITIZER:-address}
build_started=$(date +%s)
echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
# Every target in one cargo build when all are wanted, else one by one.
build_all() {
    if [ -z "${FUZZ_TARGETS:-}" ]; then
        fuzz build -s "$1" --codegen-units 16 >"$work/build.log" 2>&1
        return
    fi
    for t in "${targets[@]}"; do
        fuzz build -s "$1" --codegen-units 16 "$t" >"$work/build.log" 2>&1 || return 1
    done
}
build_ok=1
build_all "$sanitizer" || build_ok=0
if [ $build_ok -eq 0 ] && [ "$sanitizer" != none ]; then
    tail -n 20 "$work/build.log"
    echo "fuzz: the $sanitizer sanitizer build failed; falling back to -s none"
    sanitizer=none
    build_ok=1
    build_all none || build_ok=0
fi
if [ $build_ok -eq 0 ]; then
    tail -n 40 "$work/build.log"
    echo "fuzz: build failed"
    echo "0 passed, ${#targets[@]} failed"
    exit 1
fi
echo "fuzz: built in $(($(date +%s) - build_started)) s"

passed=0
failed=0
failed_targets=()
for t in "${targets[@]}"; do
    corpus=$work/corpus-$t
    mkdir -p "$corpus"
    # The seeds, and every reproducer kept in regressions/ (replayed at start-up).
    for dir in "$fuzz_dir/corpus/$t" "$fuzz_dir/regressions/$t"; do
        if [ -d "$dir" ]; then
            cp -R "$dir/." "$corpus/"
        fi
    done
    mkdir -p "$fuzz_dir/artifacts/$t"
    marker=$work/marker-$t
    touch "$marker"
    log=$work/$t.log
    echo "fuzz: $t for ${seconds}s ($(find "$corpus" -type f | wc -l) seeds)"
    fuzz run -s "$sanitizer" --codegen-units 16 "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    stats=$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed 's/^stat:://' | tr -s ' ' | tr '\n' ' ')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
    if [ $status -eq 0 ]; then
        passed=$((passed + 1))
        echo "fuzz: $t passed: ${cov:-?}; ${stats:-}"
    else
        failed=$((failed + 1))
        failed_targets+=("$t")
        echo "fuzz: $t FAILED (exit $status); libFuzzer said:"
        grep -v -E '^(#[0-9]+|INFO:|MS:|Base64:)' "$log" | grep -v '^\s*$' | tail -n 40
        reproducer=$(find "$fuzz_dir/artifacts/$t" -type f -newer "$marker" 2>/dev/null | head -n 1)
        if [ -n "$reproducer" ]; then
            echo "fuzz: reproducer: $reproducer"
            echo "fuzz:   replay:   (cd fuzz && $cargo_fuzz run -s $sanitizer $t ${reproducer#"$fuzz_dir/"})"
            echo "fuzz:   minimize: (cd fuzz && $cargo_fuzz tmin -s $sanitizer $t ${reproducer#"$fuzz_dir/"})"
        else
            echo "fuzz: no reproducer was written; full log follows"
            tail -n 60 "$log"
        fi
    fi
done

[ "$failed" -gt 0 ] && echo "fuzz: failed targets: ${failed_targets[*]}"
echo "fuzz: done in $(($(date +%s) - started)) s (sanitizer: $sanitizer)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
