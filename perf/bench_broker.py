"""Broker hot-path benchmark: raw-protocol produce/fetch against `minilog serve`.

Measures, on loopback, against a broker subprocess on a temp data dir:
- produce throughput: 16 KiB batches, pipelined (window of in-flight requests), acks=1;
- fetch throughput: reading the same data back with 1 MiB fetches;
- small-produce latency: one 100-byte record per request, one at a time (p50/p99).

Usage: python perf/bench_broker.py [--mb 512] [--batch-kib 16] [--window 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from minilog.protocol import ApiKey, FrameDecoder, build_batch, encode_request


def start_broker(data_dir: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())",
                             "serve", "--data-dir", data_dir, "--port", "0", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    return proc, int(line.rsplit(":", 1)[1])


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dec = FrameDecoder("client")
        self.cid = 0

    def send(self, key, payload, attachments=()) -> None:
        self.cid += 1
        self.sock.sendall(b"".join(encode_request(key, 0, self.cid, "bench", payload, attachments)))

    def recv(self):
        while True:
            f = self.dec.next_frame()
            if isinstance(f, tuple):
                return f
            self.dec.feed(self.sock.recv(1 << 20))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), robust to a loaded machine."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce_payload(acks=1):
    return {"acks": acks, "timeout_ms": 30000,
            "topics": [{"topic": "bench", "partitions": [{"partition": 0, "records": 0}]}]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--batch-kib", type=int, default=16)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--latency-requests", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_broker(os.path.join(tmp, "data"))
        try:
            c = Conn(port)
            c.send(ApiKey.CREATE_TOPICS, {"topics": [{"name": "bench", "num_partitions": 1,
                   "replication_factor": 1, "configs": {}}], "timeout_ms": 1000, "validate_only": False})
            c.recv()
            record = os.urandom(1000)
            batch = build_batch([record] * (args.batch_kib * 1024 // 1010))
            n = args.mb * 1024 * 1024 // len(batch)
            t0 = time.perf_counter()
            cpu0 = cpu_seconds(proc.pid)
            inflight = 0
            for _ in range(n):
                c.send(ApiKey.PRODUCE, produce_payload(), [batch])
                inflight += 1
                if inflight >= args.window:
                    c.recv()
                    inflight -= 1
            for _ in range(inflight):
                c.recv()
            produce_s = time.perf_counter() - t0
            produce_cpu = cpu_seconds(proc.pid) - cpu0
            total = n * len(batch)

            t0 = time.perf_counter()
            offset, got = 0, 0
            while got < total:
                c.send(ApiKey.FETCH, {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1,
                                      "max_bytes": 1 << 20, "isolation_level": 0, "topics": [
                                          {"topic": "bench", "partitions": [{"partition": 0,
                                           "fetch_offset": offset, "partition_max_bytes": 1 << 20,
                                           "current_leader_epoch": -1}]}]})
                f = c.recv()
                data = f.attachments[0]
                got += len(data)
                assert len(data) % len(batch) == 0 and data   # whole, uniform batches
                offset = (got // len(batch)) * (args.batch_kib * 1024 // 1010)
            fetch_s = time.perf_counter() - t0

            small = build_batch([b"x" * 100])
            cpu0 = cpu_seconds(proc.pid)
            lat = []
            for _ in range(args.latency_requests):
                t = time.perf_counter()
                c.send(ApiKey.PRODUCE, produce_payload(), [small])
                c.recv()
                lat.append((time.perf_counter() - t) * 1000)
            small_cpu = cpu_seconds(proc.pid) - cpu0
            lat.sort()
            result = {
                "batch_bytes": len(batch), "batches": n,
                "produce_mb_s": round(total / produce_s / 1e6, 1),
                "fetch_mb_s": round(total / fetch_s / 1e6, 1),
                "small_produce_ms_p50": round(statistics.median(lat), 3),
                "small_produce_ms_p99": round(lat[int(len(lat) * 0.99)], 3),
                # broker CPU per request: what the broker itself costs, independent of load
                "broker_cpu_us_per_16k_batch": round(produce_cpu / n * 1e6, 1),
                "broker_cpu_mb_s": round(total / produce_cpu / 1e6, 1) if produce_cpu else None,
                "broker_cpu_us_per_small_produce": round(small_cpu / len(lat) * 1e6, 1),
            }
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
