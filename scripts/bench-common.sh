# Shared by the scripts/bench-*.sh benchmarks (sourced, not run): builds the release
# binary, makes a scratch directory, and kills every process started into `pids` on exit.
# shellcheck shell=bash
cargo build --release --quiet
bin=target/release/iot-authz
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until something listens on loopback port $1 (10 s).
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
# Waits until iot-authz's /readyz on HTTP port $1 answers 200, for at most $2 seconds.
wait_ready() {
  for _ in $(seq $(($2 * 10))); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "iot-authz not ready on :$1" >&2; exit 1
}
# User plus system CPU clock ticks of each pid given, space-separated.
cpu_ticks() { for p in "$@"; do awk '{printf "%d ", $14 + $15}' /proc/"$p"/stat; done; }
# User and system CPU clock ticks of each pid given: "user system" pairs, space-separated.
cpu_split_ticks() { for p in "$@"; do awk '{printf "%d %d ", $14, $15}' /proc/"$p"/stat; done; }
# The machine line every report starts with.
machine() { echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"; }
