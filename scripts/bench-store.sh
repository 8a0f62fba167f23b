#!/usr/bin/env bash
# The store over loopback: a real etcd holding N assignments (default 1,000,000), two
# iot-authz replicas following it.
#
#   scripts/bench-store.sh [N] [WRITES]
#
# Reports: the import into etcd (`iot-authz store import`), each replica's initial load
# (process start to /readyz 200: read the prefix, decode, compile with the files), and
# write visibility: WRITES grants through replica 1 (`iot-authz admin assign`), each
# followed at once by a Check on replica 2 at the write's token (grpcurl, `at_least`),
# timed together (two process starts included), with how many of those checks were not
# allowed (replica 2 not caught up within 2 s: UNAVAILABLE).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
writes=${2:-20}
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
etcd_bin=${IOT_AUTHZ_ETCD:-$(command -v etcd)}
grpcurl=${IOT_AUTHZ_GRPCURL:-.venv/bin/grpcurl}
machine
echo "# commit $(git rev-parse --short HEAD), N=$n assignments, $writes writes"

# The files: the roles and an administrator (in the files, so the store is assignments only).
cat > "$work/roles.yaml" <<'EOF'
version: 1
roles:
  - {name: Reader, id: r-reader, actions: ["*/read"]}
  - {name: App Administrator, id: r-admin, actions: ["*"]}
assignments:
  - {principal: "user:root", role: App Administrator, scope: /, id: root}
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
"$etcd_bin" --name b0 --data-dir "$work/etcd" --quota-backend-bytes 8589934592 \
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
  start=$(date +%s.%N)
  "$bin" serve --policy "$work/roles.yaml" --etcd-endpoints "$endpoints" \
    --grpc-addr "127.0.0.1:${grpc[$r]}" --http-addr "127.0.0.1:${http[$r]}" >/dev/null 2>"$work/serve-$r.log" &
  pids+=($!)
  wait_ready "${http[$r]}" 120
  end=$(date +%s.%N)
  echo "replica $r initial load (start to ready): $(echo "$end - $start" | bc) s, RSS $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/"${pids[-1]}"/status)"
done

lat=()
behind=0
for i in $(seq "$writes"); do
  start=$(date +%s.%N)
  token=$("$bin" admin --server "http://127.0.0.1:${grpc[1]}" --as user:root --json \
    assign --principal "user:w$i" --role Reader --scope /apps/bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  answer=$("$grpcurl" -plaintext -max-time 5 -d "{\"principal\":\"user:w$i\",\"action\":\"Devices/read\",\"scope\":\"/apps/bench/d\",\"atLeast\":\"$token\"}" \
    "127.0.0.1:${grpc[2]}" iotauthz.v1.Authorizer/Check 2>&1 || true)
  case "$answer" in
    *'"allowed": true'*) ;;
    *) behind=$((behind + 1)) ;;
  esac
  end=$(date +%s.%N)
  lat+=("$(echo "($end - $start) * 1000" | bc)")
done
printf '%s\n' "${lat[@]}" | sort -n | awk -v behind="$behind" '
  { v[NR] = $1 }
  END { printf "write then read at its token on the other replica (ms, 2 process starts included): p50 %.1f, p99 %.1f, max %.1f; %d of %d reads not caught up within 2 s\n",
        v[int((NR + 1) / 2)], v[int(NR * 0.99 + 0.999)], v[NR], behind, NR }'
