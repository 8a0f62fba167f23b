#!/usr/bin/env python3
"""Connection slots and header memory against the release binary (issue 20, item 2).

Starts `target/release/iot-authz serve` on the demo policy with `--max-connections N`
(default 20) and the given timeouts, then, one after the other:

  1. trickle: N clients send a request line and then one header line every 200 ms, never
     ending; an ordinary request (`GET /metrics` on a new connection) is tried every
     100 ms. Reports how long each trickler held its slot and when the first ordinary
     request was answered again.
  2. idle: N clients send one request, read the answer and stay silent (keep-alive).
     Reports how long each kept its slot, and the first ordinary answer after.
  3. probes: while N tricklers hold every ordinary slot, `/healthz` is asked 20 times
     (each on a new connection); reports how many were answered and their latency.
  4. gRPC idle: one HTTP/2 connection with no stream that sends a PING every 100 ms;
     reports when the server closed it.
  5. header bomb, on a second server with the default connection limit (10,000): C
     clients (default 1000) each send 400 KB of header bytes with no end at once; reports
     the server's RSS growth (VmRSS before, peak VmHWM during) per client and how the
     connections ended.

Usage: scripts/bench-slots.py [--connections N] [--bombs C] [--header-read-timeout-ms MS]
       [--idle-timeout-ms MS] [--grpc-idle-timeout-ms MS]
Builds the release binary first (`cargo build --release`). Prints one JSON object.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wait_ready(http, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("iot-authz did not become ready")


def answered(http, path="/metrics", timeout=1.0):
    """Status of one request on a new connection, or None if the server closed it."""
    try:
        with socket.create_connection(("127.0.0.1", http), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            head = s.recv(64)
            if not head.startswith(b"HTTP/1.1 "):
                return None
            return int(head[9:12])
    except OSError:
        return None


def held_until_closed(sock, started, trickle):
    """Seconds from `started` until the server closes `sock` (sending a header line
    every 200 ms when `trickle`)."""
    sock.settimeout(0.2)
    i = 0
    while True:
        try:
            if trickle:
                sock.sendall(f"x-{i}: y\r\n".encode())
                i += 1
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started


def first_answer_after(http, started, limit):
    while time.monotonic() - started < limit:
        if answered(http) is not None:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def slot_round(http, n, trickle, limit):
    started = time.monotonic()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", http))
        if trickle:
            s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
        else:
            s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            s.settimeout(5)
            s.recv(65536)
        socks.append(s)
    held = [None] * n

    def watch(i):
        held[i] = held_until_closed(socks[i], started, trickle)

    threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    refused_at_start = answered(http) is None
    back = first_answer_after(http, started, limit)
    for t in threads:
        t.join(limit)
    for s in socks:
        s.close()
    held = [h for h in held if h is not None]
    return {
        "ordinary_request_refused_while_held": refused_at_start,
        "slot_held_s": {"min": round(min(held), 2), "max": round(max(held), 2)} if held else None,
        "first_ordinary_answer_after_s": round(back, 2) if back is not None else None,
    }


def probes_while_squatted(http, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", http))
        s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
        socks.append(s)
    time.sleep(0.2)  # let the server accept every squatter before probing
    latencies, ok = [], 0
    for _ in range(20):
        t = time.monotonic()
        if answered(http, "/healthz") == 200:
            ok += 1
            latencies.append((time.monotonic() - t) * 1000)
    ordinary = answered(http)
    for s in socks:
        s.close()
    latencies.sort()
    return {
        "probes_answered": f"{ok}/20",
        "probe_latency_ms_median": round(latencies[len(latencies) // 2], 2) if latencies else None,
        "ordinary_request_meanwhile": ordinary,
    }


def header_bomb(http, pid, clients, per_client=400 * 1024):
    before = rss_kib(pid)
    ended = {"answered_431": 0, "closed": 0, "kept": 0}
    lock = threading.Lock()
    chunk = b"a" * 16384

    def bomb():
        try:
            s = socket.create_connection(("127.0.0.1", http), timeout=5)
        except OSError:
            with lock:
                ended["closed"] += 1
            return
        outcome = "kept"
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: ")
            sent = 0
            while sent < per_client:
                s.sendall(chunk)
                sent += len(chunk)
            s.settimeout(3)
            head = s.recv(64)
            outcome = "answered_431" if head.startswith(b"HTTP/1.1 431") else "closed"
        except OSError:
            outcome = "closed"
        finally:
            s.close()
        with lock:
            ended[outcome] += 1

    threads = [threading.Thread(target=bomb, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    peak = rss_kib(pid, "VmHWM")
    return {
        "clients": clients,
        "bytes_sent_per_client": per_client,
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "peak_growth_per_client_kib": round((peak - before) / clients, 1),
        "ended": ended,
    }


def grpc_idle(grpc, limit):
    s = socket.create_connection(("127.0.0.1", grpc))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    started = time.monotonic()
    s.settimeout(0.1)
    pings = 0
    last_ping = 0.0
    acked_settings = False
    while time.monotonic() - started < limit:
        try:
            data = s.recv(65536)
            if not data:
                break
            if not acked_settings:
                s.sendall(bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))
                acked_settings = True
        except socket.timeout:
            pass
        except OSError:
            break
        if time.monotonic() - last_ping < 0.1:
            continue
        try:
            s.sendall(bytes([0, 0, 8, 6, 0, 0, 0, 0, 0]) + pings.to_bytes(8, "big"))
            pings += 1
            last_ping = time.monotonic()
        except OSError:
            break
    closed = time.monotonic() - started
    s.close()
    return {"closed_after_s": round(closed, 2), "pings_sent": pings, "kept_past_limit": closed >= limit}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--bombs", type=int, default=1000)
    ap.add_argument("--header-read-timeout-ms", type=int, default=10_000)
    ap.add_argument("--idle-timeout-ms", type=int, default=60_000)
    ap.add_argument("--grpc-idle-timeout-ms", type=int, default=300_000)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                          "release", "iot-authz")
    with tempfile.TemporaryDirectory() as work:
        def serve(max_connections):
            grpc, http = free_port(), free_port()
            log = open(os.path.join(work, f"serve-{http}.log"), "w")
            server = subprocess.Popen(
                [binary, "serve", "--grpc-addr", f"127.0.0.1:{grpc}", "--http-addr",
                 f"127.0.0.1:{http}", "--policy", "packs", "--policy", "demo/demo.yaml",
                 "--max-connections", str(max_connections),
                 "--header-read-timeout-ms", str(args.header_read_timeout_ms),
                 "--idle-timeout-ms", str(args.idle_timeout_ms),
                 "--grpc-idle-timeout-ms", str(args.grpc_idle_timeout_ms)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            wait_ready(http)
            return server, grpc, http

        n = args.connections
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load": open("/proc/loadavg").read().split()[:3],
            "max_connections": n,
            "header_read_timeout_ms": args.header_read_timeout_ms,
            "idle_timeout_ms": args.idle_timeout_ms,
            "grpc_idle_timeout_ms": args.grpc_idle_timeout_ms,
        }
        server, grpc, http = serve(n)
        try:
            report["trickle"] = slot_round(http, n, True, args.header_read_timeout_ms / 1000 + 10)
            report["idle_keep_alive"] = slot_round(http, n, False, args.idle_timeout_ms / 1000 + 10)
            report["probes_while_squatted"] = probes_while_squatted(http, n)
            report["grpc_idle"] = grpc_idle(grpc, args.grpc_idle_timeout_ms / 1000 + 10)
        finally:
            server.terminate()
            server.wait(15)
        # The header bomb needs room for every client: the default connection limit.
        server, grpc, http = serve(10_000)
        try:
            report["header_bomb"] = header_bomb(http, server.pid, args.bombs)
        finally:
            server.terminate()
            server.wait(15)
        print(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()
