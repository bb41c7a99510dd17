"""Round-trip latency and throughput of the metadata store against a real etcd.

    python perf/bench_metastore.py [--endpoint http://127.0.0.1:2379] [--ops 2000] [--tasks 16] [--json]

Without `--endpoint` it starts a private single-member etcd (Debian's
etcd-server, default heartbeat and election settings) on free loopback
ports with a temp data dir, and stops it at the end.

Measured, each through `EtcdStore` (httpx on trio, pooled HTTP/1.1
connections to etcd's JSON gateway):
- put: sequential `put` of a 100-byte value, one task (latency percentiles);
- txn: sequential compare-and-swap (`mod_revision ==` the last write's
  revision, then put), one task: the shape of a partition-state update;
- get: sequential single-key `get`;
- put throughput: `--tasks` tasks putting concurrently, total ops/s.

Every etcd write is fsynced by etcd to its WAL before it answers, so the
write figures include the disk's fsync time; they are what the broker's
controller will see.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

from minilog.metastore import Compare, EtcdStore, Put, run_local_etcd

VALUE = b"x" * 100


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ordered[-1] / 1e6, "mean_ms": sum(ordered) / len(ordered) / 1e6}


async def _timed(ops: int, call: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    samples: list[int] = []
    for i in range(ops):
        start = time.perf_counter_ns()
        await call(i)
        samples.append(time.perf_counter_ns() - start)
    stats = _percentiles(samples)
    stats["ops_per_s"] = ops / (sum(samples) / 1e9)
    return stats


async def bench(endpoint: str, ops: int, tasks: int) -> dict[str, object]:
    async with EtcdStore.connect(endpoint) as kv:
        await kv.put(b"/bench/warm", VALUE)
        put = await _timed(ops, lambda i: kv.put(b"/bench/put/%d" % (i % 64), VALUE))
        last = [(await kv.put(b"/bench/cas", VALUE)).revision]

        async def cas(_: int) -> None:
            result = await kv.txn([Compare.mod_revision(b"/bench/cas", "==", last[0])], [Put(b"/bench/cas", VALUE)])
            assert result.succeeded
            last[0] = result.revision

        txn = await _timed(ops, cas)
        get = await _timed(ops, lambda i: kv.get(b"/bench/cas"))

        per_task = max(1, ops // tasks)

        async def putter(t: int) -> None:
            for i in range(per_task):
                await kv.put(b"/bench/tput/%d/%d" % (t, i % 16), VALUE)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for t in range(tasks):
                nursery.start_soon(putter, t)
        elapsed = time.perf_counter() - start
        await kv.delete(b"/bench/", prefix=True)
    return {
        "endpoint": endpoint,
        "ops": ops,
        "put": put,
        "txn_cas": txn,
        "get": get,
        "put_concurrent": {"tasks": tasks, "ops": per_task * tasks, "ops_per_s": per_task * tasks / elapsed},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="etcd client URL; default: start a private etcd")
    parser.add_argument("--ops", type=int, default=2000, help="operations per sequential phase")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent tasks for the throughput phase")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.endpoint:
        result = trio.run(bench, args.endpoint, args.ops, args.tasks)
    else:
        with tempfile.TemporaryDirectory() as tmp, run_local_etcd(tmp) as etcd:
            result = trio.run(bench, etcd.endpoint, args.ops, args.tasks)
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return 0
    for name in ("put", "txn_cas", "get"):
        s = result[name]
        assert isinstance(s, dict)
        print(f"{name:8} p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  max {s['max_ms']:.2f} ms  {s['ops_per_s']:.0f} ops/s (1 task)")
    c = result["put_concurrent"]
    assert isinstance(c, dict)
    print(f"put      {c['ops_per_s']:.0f} ops/s with {c['tasks']} tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
