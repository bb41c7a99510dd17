"""Broker memory: RSS with `--partitions` partitions and `--connections` idle connections.

Starts a private broker (its pid is needed for /proc/PID/status) and reads
its resident set size (VmRSS) and peak (VmHWM) after each stage:

1. `started`      the broker is listening, no topics;
2. `topics`       `--topics` topics created, `--partitions` partitions in all;
3. `data`         `--records-per-partition` records produced to every
                  partition (so every partition has an open segment and
                  index, as a broker that has served traffic does);
4. `connections`  `--connections` plain TCP connections opened and left idle
                  (raw connects, no request: the least an idle client costs;
                  the broker's per-connection task and buffers are what we
                  see here).

Each stage waits `--settle-s` before reading. The goal is RSS <= 150 MB at
the last stage with 1,000 partitions and 100 connections. Open file
descriptors are reported too (`/proc/PID/fd`).

Example:
    python perf/broker_memory.py --partitions 1000 --connections 100 --json
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import _common as c


def _stage(pid: int, settle_s: float) -> dict:
    time.sleep(settle_s)
    out = c.rss_bytes(pid)
    out["rss_mb"] = out["rss_bytes"] / 1e6
    out["rss_peak_mb"] = out["rss_peak_bytes"] / 1e6
    out["open_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def fill(bootstrap: str, topics: list[str], per_topic: int, records: int, size: int) -> None:
    import minilog

    producer = minilog.Producer(bootstrap, acks=1, linger_ms=5)
    value = b"m" * size
    try:
        for topic in topics:
            for p in range(per_topic):
                for _ in range(records):
                    producer.produce(topic, value, partition=p)
        producer.flush()
    finally:
        producer.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10, help="the partitions are spread over these")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--records-per-partition", type=int, default=1)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--settle-s", type=float, default=1.0)
    c.add_common_args(parser, partitions=1000)
    args = parser.parse_args(argv)
    if args.bootstrap_server:
        parser.error("broker_memory.py measures its private broker; drop --bootstrap-server")
    if args.partitions % args.topics:
        parser.error("--partitions must be a multiple of --topics")
    per_topic = args.partitions // args.topics
    base = c.topic_name(args, "mem")
    topics = [f"{base}-{i}" for i in range(args.topics)]
    result: dict = {"tool": "broker_memory", "partitions": args.partitions, "topics": args.topics,
                    "connections": args.connections,
                    "records_per_partition": args.records_per_partition,
                    "env": c.environment(), "stages": {}}
    stages = result["stages"]
    socks: list[socket.socket] = []
    with c.broker_for(args) as (bootstrap, broker):
        pid = broker.pid
        stages["started"] = _stage(pid, args.settle_s)
        with c.progress(args, "topics", args.topics) as advance:
            for t in topics:
                c.create_topic(bootstrap, t, per_topic)
                advance(1)
        stages["topics"] = _stage(pid, args.settle_s)
        if args.records_per_partition:
            fill(bootstrap, topics, per_topic, args.records_per_partition, args.record_size)
        stages["data"] = _stage(pid, args.settle_s)
        host, port = c.split_address(bootstrap)
        try:
            for _ in range(args.connections):
                socks.append(socket.create_connection((host, port)))
            stages["connections"] = _stage(pid, args.settle_s)
            alive = sum(1 for s in socks if _alive(s))
        finally:
            for s in socks:
                s.close()
    last = stages["connections"]
    result.update({"rss_mb": last["rss_mb"], "rss_peak_mb": last["rss_peak_mb"],
                   "connections_alive": alive, "goal_rss_mb": 150})
    c.emit(args, "minilog broker memory", result)


def _alive(sock: socket.socket) -> bool:
    """True if the broker has not closed this connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


if __name__ == "__main__":
    main()
