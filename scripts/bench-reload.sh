#!/usr/bin/env bash
# Reload under load: fixed-rate ext_authz Check load over loopback while a policy with
# 1,000,000 role assignments is rewritten every 10 seconds (write, then rename, as editors
# and ConfigMap updates do), against the same load with no reloads, in the same run.
# Reports p50/p99/p99.9 and errors for both, the p99 ratio, and how many reloads
# succeeded (iot_authz_policy_reloads_total on /metrics).
#
# Usage: scripts/bench-reload.sh [SECONDS] [RATE] [ASSIGNMENTS] [EVERY]
#        (defaults 60 2000 1000000 10)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; rate="${2:-2000}"; assignments="${3:-1000000}"; every="${4:-10}"
source scripts/bench-common.sh
reloads() { curl -sf "http://127.0.0.1:$http/metrics" | awk '/^iot_authz_policy_reloads_total\{result="success"\}/ {print $2}'; }

# A large policy beside the demo: users u0..u99999 with built-in roles at every level of a
# 10 subscription x 10 resource group x 100 target tree.
gen() {
  python3 - "$assignments" > "$work/big.tmp" <<'PY'
import json, random, sys
n = int(sys.argv[1])
rnd = random.Random(7)
roles = ["Reader", "Contributor", "Owner", "Deployment Viewer", "Security Reader"]
out = []
for i in range(n):
    s, g, t = rnd.randrange(10), rnd.randrange(10), rnd.randrange(100)
    level = rnd.random()
    scope = f"/subscriptions/b{s}"
    if level > 0.05:
        scope += f"/resourceGroups/rg{g}"
    if level > 0.25:
        scope += f"/providers/Microsoft.Edge/targets/t{t}"
    out.append({"id": f"big-{i}", "principal": f"user:u{rnd.randrange(100000)}@contoso.com",
                "role": roles[rnd.randrange(len(roles))], "scope": scope})
json.dump({"version": 1, "assignments": out}, sys.stdout, separators=(",", ":"))
PY
  mv "$work/big.tmp" "$work/policy/big.json"
}
# Generation G: a one-assignment document beside it, written then renamed. Any change to
# the watched directory reloads every document in it, so each generation is a new revision
# of the whole 1M-assignment policy: read, parsed, validated, compiled and swapped in.
touch_generation() { # G
  printf 'version: 1\nassignments:\n  - {id: generation-%s, principal: "user:gen@contoso.com", role: Reader, scope: /subscriptions/b0}\n' "$1" > "$work/gen.tmp"
  mv "$work/gen.tmp" "$work/policy/generation.yaml"
}
mkdir -p "$work/policy"
t0=$(date +%s.%N)
gen
touch_generation 0
echo "# generated $assignments assignments ($(du -h "$work/policy/big.json" | cut -f1)) in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"

grpc=$(free_port); http=$(free_port)
"$bin" serve --policy packs/ --policy demo/ --policy "$work/policy" \
  --max-policy-bytes $((1024 * 1024 * 1024)) --policy-poll-seconds 0 \
  --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" > "$work/authz.log" 2>&1 & pids+=($!)
wait_ready "$http" 300
machine
echo "# seconds=$seconds rate=$rate assignments=$assignments reload every ${every}s; RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"${pids[0]}"/status)"

load() {
  "$bin" load --target ext-authz --addr 127.0.0.1:"$grpc" --rate "$rate" --duration "$seconds" \
    --warmup 2 --connections 4 --concurrency 64 --json
}

steady=$(load)
echo "steady:  $steady"

before=$(reloads)
# The rewriter: a new revision every $every seconds while the load runs.
( g=1; while :; do sleep "$every"; touch_generation "$g"; g=$((g + 1)); done ) & rewriter=$!; pids+=($rewriter)
during=$(load)
kill "$rewriter" 2>/dev/null || true
after=$(reloads)
echo "reloads: $during"
echo "reloads_succeeded=$((${after%.*} - ${before%.*})) RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"${pids[0]}"/status)"
python3 - "$steady" "$during" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"p99 steady {a['p99_us']:.0f} us, during reloads {b['p99_us']:.0f} us: ratio {b['p99_us'] / a['p99_us']:.2f} "
      f"(target <= 2); errors {a['errors']} / {b['errors']}")
PY
grep -iE "rejected|error" "$work/authz.log" | head -5 || true
