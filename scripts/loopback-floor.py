#!/usr/bin/env python3
"""The machine's floor for a request/response over loopback TCP: two processes bounce one
byte over a TCP_NODELAY connection, back to back and paced (a 200 us pause between
exchanges, like a fixed-rate load). No HTTP/2, no gRPC, no authorization: any service's
round trip on this machine costs at least this much.

Usage: scripts/loopback-floor.py [EXCHANGES]   (default 20000)
"""
import os
import socket
import sys
import time


def run(exchanges, pause, cpus):
    allowed = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # inherited by the forked echo process
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(64)
            if not data:
                os._exit(0)
            conn.sendall(data)
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for _ in range(exchanges):
        start = time.perf_counter_ns()
        client.sendall(b"x")
        client.recv(64)
        latencies.append(time.perf_counter_ns() - start)
        if pause:
            time.sleep(pause)
    client.close()
    os.waitpid(pid, 0)
    os.sched_setaffinity(0, allowed)
    latencies.sort()
    pick = lambda q: latencies[min(int(len(latencies) * q), len(latencies) - 1)] / 1000
    return pick(0.5), pick(0.99)


def main():
    exchanges = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    first = min(os.sched_getaffinity(0))
    for place, cpus in (("any CPU", None), (f"both on CPU {first}", {first})):
        for label, pause in (("back to back", 0), ("paced, 200 us apart", 0.0002)):
            p50, p99 = run(exchanges, pause, cpus)
            print(
                f"loopback TCP round trip, {label}, {place}: p50 {p50:.1f} us, p99 {p99:.1f} us"
            )


if __name__ == "__main__":
    main()
