#!/usr/bin/env bash
# The store over loopback: a real etcd holding N assignments (default 1,000,000), two
# iot-authz replicas following it.
#
#   scripts/bench-store.sh [N] [VISIBILITY_SECONDS] [SUSTAIN_SECONDS]
#
# Reports: the import into etcd (`iot-authz store import`); each replica's initial load
# (process start to /readyz 200: read the prefix, decode, compile with the files), with the
# read and total times the replica logs and the CPU time etcd and the replica spent; write
# visibility: for VISIBILITY_SECONDS (default 20), grants through replica 1's Admin API one
# at a time, each followed at once by a Check on replica 2 at the grant's token (`iot-authz
# load --target assign --check-addr`; the latency is from the grant's answer to the allowed
# Check; errors count grants refused or not seen within 2 s); and, unless SUSTAIN_SECONDS
# is 0 (default 60), ext_authz checks at 2,000/s on replica 2 alone for 20 s (the steady
# p99), then again for SUSTAIN_SECONDS while grants run through replica 1 at 500/s
# (GRANT_RATE, GRANTS_IN_FLIGHT: see below; an assignment write is validated and applied
# as an overlay on the last full compile), reporting the rate reached against the aim.
#
# PIN=1 gives replica 2 and its check load one CPU (the second) and everything else (etcd,
# replica 1, the grant load) the other, as when the replica answering the checks runs on
# a node of its own; without it all share every CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
# `on R`: the CPU pinning prefix for a process of role R (writer or reader), under PIN=1.
on() {
  if [ "${PIN:-0}" = 1 ]; then
    case $1 in writer) echo "taskset -c 0" ;; reader) echo "taskset -c 1" ;; esac
  fi
}
visibility=${2:-20}
sustain=${3:-60}
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
etcd_bin=${IOT_AUTHZ_ETCD:-$(command -v etcd)}
grpcurl=${IOT_AUTHZ_GRPCURL:-.venv/bin/grpcurl}
machine
echo "# commit $(git rev-parse --short HEAD), N=$n assignments${PIN:+, PIN=$PIN}"

# The files: the roles, an administrator, and the routes and a reader of the ext_authz
# load's requests (in the files, so the store is assignments only).
cat > "$work/roles.yaml" <<'EOF'
version: 1
roles:
  - {name: Reader, id: r-reader, actions: ["*/read"]}
  - {name: App Administrator, id: r-admin, actions: ["*"]}
assignments:
  - {principal: "user:root", role: App Administrator, scope: /, id: root}
  - {principal: "user:alice@contoso.com", role: Reader, scope: /subscriptions/s1, id: alice}
routes:
  - methods: [GET, HEAD]
    path: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
    action: Microsoft.Edge/targets/read
    scope: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
  - methods: [PUT, PATCH]
    path: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
    action: Microsoft.Edge/targets/write
    scope: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
  - methods: [DELETE]
    path: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
    action: Microsoft.Edge/targets/delete
    scope: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Edge/targets/{target}
EOF
python3 - "$n" "$work/assignments.json" <<'EOF'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write('{"version":1,"assignments":[')
    for i in range(n):
        if i:
            f.write(",")
        f.write(json.dumps({"principal": f"user:u{i % 100000}", "role": "Reader",
                            "scope": f"/apps/a{i % 1000}/devices/d{i}", "id": f"a-{i}"}))
    f.write("]}")
EOF

client=$(free_port); peer=$(free_port)
$(on writer) "$etcd_bin" --name b0 --data-dir "$work/etcd" --quota-backend-bytes 8589934592 \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "b0=http://127.0.0.1:$peer" --log-level error >/dev/null 2>&1 &
pids+=($!)
wait_port "$client"
endpoints="http://127.0.0.1:$client"

start=$(date +%s.%N)
"$bin" store --etcd-endpoints "$endpoints" import --max-bytes 1073741824 "$work/assignments.json" >/dev/null
end=$(date +%s.%N)
echo "import of $n assignments into etcd: $(echo "$end - $start" | bc) s"

declare -a grpc http
for r in 1 2; do
  grpc[$r]=$(free_port); http[$r]=$(free_port)
  etcd_cpu=$(cpu_ticks "${pids[0]}")
  start=$(date +%s.%N)
  role=writer; [ "$r" = 2 ] && role=reader
  $(on $role) "$bin" serve --policy "$work/roles.yaml" --etcd-endpoints "$endpoints" \
    --grpc-addr "127.0.0.1:${grpc[$r]}" --http-addr "127.0.0.1:${http[$r]}" >/dev/null 2>"$work/serve-$r.log" &
  pids+=($!)
  wait_ready "${http[$r]}" 120
  end=$(date +%s.%N)
  read_line=$(sed 's/\x1b\[[0-9;]*m//g' "$work/serve-$r.log" | grep -m1 'store read' || true)
  read_ms=$(sed -n 's/.*read_ms=\([0-9]*\).*/\1/p' <<<"$read_line")
  total_ms=$(sed -n 's/.*total_ms=\([0-9]*\).*/\1/p' <<<"$read_line")
  hz=$(getconf CLK_TCK)
  etcd_cpu=$(( $(cpu_ticks "${pids[0]}") - etcd_cpu ))
  echo "replica $r initial load (start to ready): $(echo "$end - $start" | bc) s (etcd read and decode ${read_ms:-?} ms, with the compile ${total_ms:-?} ms); CPU: replica $(echo "scale=2; $(cpu_ticks "${pids[-1]}") / $hz" | bc) s, etcd $(echo "scale=2; $etcd_cpu / $hz" | bc) s; RSS $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/"${pids[-1]}"/status)"
done

# One JSON report of `iot-authz load` as a line of figures.
summary() {
  python3 -c "import json, sys
r = json.load(sys.stdin)
print('%d requests, %.0f/s, errors %d, latency ms p50 %.2f, p99 %.2f, max %.2f' % (r['requests'],
      r['requests_per_second'], r['errors'], r['p50_us'] / 1000, r['p99_us'] / 1000, r['max_us'] / 1000))"
}

# Write visibility: one grant at a time, each checked on replica 2 at its token.
echo "write visibility (grant through replica 1, Check at its token on replica 2; ${visibility} s, one at a time): $(
  "$bin" load --target assign --addr "127.0.0.1:${grpc[1]}" --check-addr "127.0.0.1:${grpc[2]}" \
    --connections 1 --concurrency 1 --warmup 0 --duration "$visibility" --json | summary)"

if [ "$sustain" != 0 ]; then
  checks() {
    $(on reader) "$bin" load --target ext-authz --addr "127.0.0.1:${grpc[2]}" --rate 2000 --connections 4 \
      --concurrency 64 --warmup 1 --duration "$1" --json
  }
  echo "ext_authz at 2000/s on replica 2, no writes (20 s): $(checks 20 | summary)"
  replicas_cpu=$(cpu_ticks "${pids[1]}" "${pids[2]}")
  checks "$sustain" > "$work/under-writes.json" &
  load_pid=$!
  # At GRANT_RATE grants/s (default 500, the aim; writes arriving together are committed
  # together), at most GRANTS_IN_FLIGHT (default 64) at a time; GRANT_RATE=0 runs closed
  # loop instead (as many as the replica takes). A rate the replica cannot follow shows as
  # a lower rate reached and a long latency (coordinated omission is corrected).
  inflight=${GRANTS_IN_FLIGHT:-64}
  grant_rate=${GRANT_RATE:-500}
  if [ "$grant_rate" = 0 ]; then
    how="closed-loop, $inflight in flight"; rate_args=()
  else
    how="at $grant_rate/s, at most $inflight in flight"; rate_args=(--rate "$grant_rate")
  fi
  grants=$($(on writer) "$bin" load --target assign --addr "127.0.0.1:${grpc[1]}" --concurrency "$inflight" \
    "${rate_args[@]}" --connections 4 --warmup 1 --duration "$sustain" --json | summary || true)
  wait "$load_pid" || true
  read -r w0 r0 <<<"$replicas_cpu"; read -r w1 r1 <<<"$(cpu_ticks "${pids[1]}" "${pids[2]}")"
  hz=$(getconf CLK_TCK)
  echo "CPU of the replicas under writes: replica 1 (grants) $(echo "scale=2; ($w1 - $w0) / $hz" | bc) s, replica 2 (checks) $(echo "scale=2; ($r1 - $r0) / $hz" | bc) s"
  echo "ext_authz at 2000/s on replica 2 while grants run through replica 1 ($how, ${sustain} s): $(summary < "$work/under-writes.json")"
  echo "grants through replica 1 ($how): $grants"
fi
