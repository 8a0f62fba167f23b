#!/usr/bin/env bash
# Decode blow-ups: the server's peak resident set (VmHWM) when it is sent one, then eight
# at once, 4 MiB requests that decode to millions of elements (by default Envoy
# CheckRequests whose metadata is one ListValue of two million empty values, two bytes each
# on the wire), and the latency of ordinary ext_authz Checks sent meanwhile at a fixed rate
# by `iot-authz load`.
#
#   scripts/bench-blowup.sh                      # the release binary (built if needed)
#   IOT_AUTHZ_BIN=path/to/iot-authz scripts/bench-blowup.sh   # another build, for A/B
#   SHAPE=native-groups scripts/bench-blowup.sh  # or native-headers: the native API
#
# The request is encoded once by python3 and sent as raw gRPC over h2c by curl
# (--http2-prior-knowledge), so the senders cost next to nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${IOT_AUTHZ_BIN:-}" ]]; then
  cargo build --release --quiet
  IOT_AUTHZ_BIN=target/release/iot-authz
fi
bin=$IOT_AUTHZ_BIN
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_kib() { awk '/VmHWM/ {print $2}' /proc/"$1"/status; }

# SHAPE=envoy-list (default): CheckRequest{attributes{metadata_context{filter_metadata{
# "ns": {"x": [2,000,000 empty values]}}}}}, 4,000,042 bytes, to ext_authz.
# SHAPE=native-groups: iotauthz.v1 CheckRequest with 2,000,000 empty groups, to Check.
# SHAPE=native-headers: CheckHttpRequest with 380,000 distinct empty headers, to CheckHttp.
# Each under the default 4 MiB message limit; one gRPC frame.
shape=${SHAPE:-envoy-list}
case $shape in
  envoy-list) method=envoy.service.auth.v3.Authorization/Check ;;
  native-groups) method=iotauthz.v1.Authorizer/Check ;;
  native-headers) method=iotauthz.v1.Authorizer/CheckHttp ;;
  *) echo "unknown SHAPE $shape" >&2; exit 2 ;;
esac
python3 - "$work/blowup.bin" "$shape" <<'PY'
import struct, sys
def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)
def field(number, body):
    return varint(number << 3 | 2) + varint(len(body)) + body
if sys.argv[2] == "envoy-list":
    value = field(6, b"\x0a\x00" * 2_000_000)                # Value.list_value
    entry = field(1, b"x") + field(2, value)                  # Struct.fields entry
    namespace = field(1, b"ns") + field(2, field(1, entry))   # filter_metadata entry
    message = field(1, field(11, field(1, namespace)))        # attributes.metadata_context
elif sys.argv[2] == "native-groups":
    message = field(1, b"user:x") + b"\x2a\x00" * 2_000_000    # principal, groups
else:
    message = field(1, b"GET") + field(2, b"/") + b"".join(     # method, path, headers
        field(4, field(1, b"%x" % i)) for i in range(380_000))
with open(sys.argv[1], "wb") as f:
    f.write(b"\0" + struct.pack(">I", len(message)) + message)
PY

grpc=$(free_port)
http=$(free_port)
"$bin" serve --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" >"$work/serve.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

# One blow-up; its grpc-status (and message) into out.$1.
blowup() {
  curl -sv --http2-prior-knowledge --max-time 120 -H "content-type: application/grpc" \
    -H "te: trailers" --data-binary @"$work/blowup.bin" -o /dev/null \
    http://127.0.0.1:"$grpc"/"$method" 2>&1 |
    grep -o 'grpc-status: [0-9]*' >"$work/out.$1" || echo "no status" >"$work/out.$1"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# binary: $bin; shape: $shape, $(stat -c %s "$work/blowup.bin") bytes"
base=$(hwm_kib "$server")
echo "peak RSS at rest: $((base / 1024)) MiB"
blowup 0
echo "answer: $(cat "$work/out.0")"
one=$(hwm_kib "$server")
echo "peak RSS after one blow-up: $((one / 1024)) MiB (+$(((one - base) / 1024)) MiB)"

# Ordinary Checks at 200/s for 8 s while eight blow-ups run at once.
"$bin" load --target ext-authz --addr 127.0.0.1:"$grpc" --rate 200 --duration 8 \
  --warmup 1 --connections 2 --concurrency 16 >"$work/load.txt" 2>&1 &
load=$!
pids+=("$load")
sleep 2
start=$(date +%s.%N)
senders=()
for i in $(seq 1 8); do blowup "$i" & senders+=($!); done
wait "${senders[@]}"
end=$(date +%s.%N)
wait "$load" || true
eight=$(hwm_kib "$server")
echo "their answers: $(cat "$work"/out.[1-8] | sort | uniq -c | xargs)"
echo "eight blow-ups at once took $(python3 -c "print(f'{$end - $start:.2f}')") s"
echo "peak RSS after eight at once: $((eight / 1024)) MiB (+$(((eight - base) / 1024)) MiB)"
echo "ordinary Checks meanwhile:"
sed 's/^/  /' "$work/load.txt"
