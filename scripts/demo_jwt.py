#!/usr/bin/env python3
"""Demo JWTs for scripts/demo.sh: a fresh ES256 key pair, its JWKS, and signed tokens.

    demo_jwt.py DIR

writes into DIR (made by the caller, removed when the demo stops):
    key.pem         the private key (P-256), generated now with `openssl`; never committed
    jwks.json       the public key as a JWKS, for Envoy's jwt_authn filter
    alice.jwt       sub alice@contoso.com (a factory operator, through group membership)
    frank.jwt       sub frank@contoso.com with groups [line-leads] (a token group)

Tokens have issuer https://issuer.iot-authz.example and audience iot-authz-demo (as in
deploy/envoy/envoy.yaml) and are valid for 12 hours. Only the Python standard library and
the openssl command are used.
"""

import base64
import json
import pathlib
import subprocess
import sys
import time

ISSUER = "https://issuer.iot-authz.example"
AUDIENCE = "iot-authz-demo"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_signature_to_jose(der: bytes) -> bytes:
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JOSE's r || s."""
    if der[0] != 0x30:
        raise ValueError("not a DER sequence")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    parts = []
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("not a DER integer")
        length = der[i + 1]
        value = der[i + 2:i + 2 + length].lstrip(b"\x00")
        parts.append(value.rjust(32, b"\x00"))
        i += 2 + length
    return parts[0] + parts[1]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(sys.argv[1])
    key = out / "key.pem"
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout",
                    "-out", str(key)], check=True)
    key.chmod(0o600)
    spki = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                          check=True, capture_output=True).stdout
    point = spki[-65:]
    if point[0] != 0x04:
        raise ValueError("unexpected public key encoding")
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "demo", "use": "sig",
           "x": b64url(point[1:33]), "y": b64url(point[33:])}
    (out / "jwks.json").write_text(json.dumps({"keys": [jwk]}))

    now = int(time.time())
    tokens = {
        "alice": {"sub": "alice@contoso.com"},
        "frank": {"sub": "frank@contoso.com", "groups": ["line-leads"]},
    }
    header = b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "demo"}).encode())
    for name, claims in tokens.items():
        claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 12 * 3600, **claims}
        signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        token = f"{signing_input}.{b64url(der_signature_to_jose(der))}"
        (out / f"{name}.jwt").write_text(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
