#!/usr/bin/env bash
# The service over gRPC on loopback, client and server on the same cores: `iot-authz serve`
# on the embedded demo policy, driven by `iot-authz load`.
#   - ext_authz Check at a fixed rate (latency from the intended send time);
#   - native Check, closed loop;
#   - BatchCheck of 1000 checks per call, closed loop (checks/s).
# Also prints the server's CPU time per request (from /proc), which does not depend on
# how busy the rest of the machine is.
# Usage: scripts/bench-service.sh [SECONDS] [RATE] [EXTRA SERVE FLAGS...]   (defaults 20 5000)
# CPUS=LIST (a taskset CPU list, e.g. CPUS=0) runs the server and the client on those CPUs
# only; unset, the scheduler places them (BENCHMARKS.md "Where the two processes run").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"; rate="${2:-5000}"; shift $(($# > 2 ? 2 : $#))
source scripts/bench-common.sh

# Both processes on the CPUs of CPUS, or wherever the scheduler puts them.
place=()
if [ -n "${CPUS:-}" ]; then place=(taskset -c "$CPUS"); fi

grpc=$(free_port); http=$(free_port)
"${place[@]}" "$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" "$@" > "$work/authz.log" 2>&1 & pids+=($!)
server=${pids[0]}
wait_ready "$http" 10

hz=$(getconf CLK_TCK)
run() { # label, load arguments...
  local label=$1; shift
  local before after out
  before=$(cpu_ticks "$server")
  out=$("${place[@]}" "$bin" load --addr 127.0.0.1:"$grpc" --duration "$seconds" --json "$@")
  after=$(cpu_ticks "$server")
  python3 - "$label" "$out" "$((after - before))" "$hz" "$seconds" <<'PY'
import json, sys
label, out, ticks, hz, seconds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
# The warm-up second is not in the counts but is in the CPU time: scale by its share.
requests = out["requests"] * (seconds + 1) / seconds
cpu_us = ticks / hz * 1e6 / max(requests, 1)
print(f"{label}: {out['requests_per_second']:.0f} req/s, {out['checks_per_second']:.0f} checks/s, "
      f"p50 {out['p50_us']:.0f} us, p90 {out['p90_us']:.0f} us, p99 {out['p99_us']:.0f} us, "
      f"p99.9 {out['p999_us']:.0f} us, errors {out['errors']}; server CPU {cpu_us:.1f} us per request")
PY
}

machine
echo "# seconds=$seconds rate=$rate serve flags: ${*:-none} cpus: ${CPUS:-any}"
run "ext_authz fixed ${rate}/s" --target ext-authz --rate "$rate" --connections 4 --concurrency 64
run "Check closed loop" --target check --connections 4 --concurrency 32
run "BatchCheck x1000 closed loop" --target batch-check --batch 1000 --connections 2 --concurrency 4 --threads 1
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
