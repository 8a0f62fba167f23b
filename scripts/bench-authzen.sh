#!/usr/bin/env bash
# AuthZEN evaluation against CheckHttp on the same run: `iot-authz serve` on the embedded
# demo policy, driven by `iot-authz load`, closed loop, client and server on loopback.
#   - CheckHttp over gRPC (HTTP/2): principal, method and path;
#   - AuthZEN `POST /access/v1/evaluation` over HTTP/1.1 keep-alive: the same principal,
#     method (action) and path (a route resource), so the same route and evaluation work.
# The two runs alternate ROUNDS times (default 3), so a change in how busy the machine is
# touches both; the report gives each run and the ratio of the medians.
# Usage: scripts/bench-authzen.sh [SECONDS] [ROUNDS]   (defaults 10 3)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"; rounds="${2:-3}"
source scripts/bench-common.sh

grpc=$(free_port); http=$(free_port)
"$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" > "$work/authz.log" 2>&1 & pids+=($!)
wait_ready "$http" 10

run() { # addr, target
  "$bin" load --addr "$1" --target "$2" --duration "$seconds" --connections 4 --concurrency 32 --json
}

machine
echo "# seconds=$seconds rounds=$rounds connections=4 concurrency=32, closed loop"
for _ in $(seq "$rounds"); do
  run 127.0.0.1:"$grpc" check-http >> "$work/check-http.all"
  run http://127.0.0.1:"$http" authzen >> "$work/authzen.all"
done
python3 - "$work/check-http.all" "$work/authzen.all" <<'PY'
import json, statistics, sys
def runs(path):
    dec = json.JSONDecoder(); text = open(path).read().strip(); out = []; i = 0
    while i < len(text):
        obj, i = dec.raw_decode(text, i); out.append(obj)
        while i < len(text) and text[i].isspace(): i += 1
    return out
check, authzen = runs(sys.argv[1]), runs(sys.argv[2])
for label, rs in (("CheckHttp (gRPC)", check), ("AuthZEN evaluation (HTTP/1.1)", authzen)):
    for r in rs:
        print(f"{label}: {r['requests_per_second']:.0f} req/s, p50 {r['p50_us']:.0f} us, "
              f"p99 {r['p99_us']:.0f} us, errors {r['errors']}, allowed {r['allowed']}")
c = statistics.median(r["requests_per_second"] for r in check)
a = statistics.median(r["requests_per_second"] for r in authzen)
print(f"median: CheckHttp {c:.0f} req/s, AuthZEN {a:.0f} req/s, AuthZEN/CheckHttp {a / c:.2f}")
PY
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
