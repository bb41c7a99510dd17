"""Large values (1 MiB by default): minilog MB/s against a plain socket, same bytes, same run.

Four measurements, one after the other on the same machine:

* baseline: this process `sendall`s `--num-records` x `--record-size` bytes
  over loopback TCP to a child Python process that `recv_into`s a reused
  buffer and answers one byte at the end; MB/s = bytes / (connect ->
  that byte). This is the most a Python sender and receiver move here.
* produce: `Producer.produce()` of the same values (one call per value)
  then `flush()`; MB/s = value bytes / (first produce -> flush returned).
  The broker writes them to its log, so this includes the disk write
  (page cache) the baseline does not have.
* consume: a fresh `Consumer` reads them all back through `poll()`;
  MB/s = value bytes / (first poll -> the poll that returned the last one).
* file write: the same bytes written with `write()` into a new file in the
  broker's data dir (no fsync, no Python around it): what the broker's log
  write alone costs here (`produce_vs_file_write`).

The figure the issue asks for is each minilog MB/s divided by the baseline
MB/s (`produce_vs_socket`, `consume_vs_socket`; goal >= 0.5).

The private broker gets `message.max.bytes` and the topic
`max.message.bytes` large enough for one full batch (`--batch-size`, or one
value if larger).

Example:
    python perf/large_values.py --num-records 200 --json
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import _common as c

_CHUNK = 1 << 20


def _sink() -> None:
    """Child process: receive until the sender half-closes, then answer one byte."""
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    total = 0
    while True:
        n = conn.recv_into(view)
        if not n:
            break
        total += n
    conn.sendall(b"k")
    conn.close()
    print(total, flush=True)


def socket_baseline(value: bytes, count: int) -> dict:
    child = subprocess.Popen([sys.executable, __file__, "--_sink"], stdout=subprocess.PIPE)
    try:
        port = int(child.stdout.readline())
        t0 = time.perf_counter_ns()
        sock = socket.create_connection(("127.0.0.1", port))
        for _ in range(count):
            sock.sendall(value)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"k"
        t1 = time.perf_counter_ns()
        sock.close()
        received = int(child.stdout.readline())
    finally:
        child.wait(10)
    total = len(value) * count
    assert received == total, (received, total)
    seconds = (t1 - t0) / 1e9
    return {"bytes": total, "seconds": seconds, "mb_per_sec": total / seconds / c.MiB}


def file_baseline(value: bytes, count: int, directory: str | None) -> dict:
    """write() the same bytes into a new file where the broker keeps its log (no fsync).

    The broker must put every produced byte into its log; this is what that
    costs here without any Python around it (on this VM, fresh page-cache
    pages are slow: see docs/performance.md).
    """
    fd, path = tempfile.mkstemp(prefix="large-values-baseline-", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            t0 = time.perf_counter_ns()
            for _ in range(count):
                f.write(value)
            t1 = time.perf_counter_ns()
    finally:
        os.unlink(path)
    total = len(value) * count
    seconds = (t1 - t0) / 1e9
    return {"bytes": total, "seconds": seconds, "mb_per_sec": total / seconds / c.MiB}


def produce(args, bootstrap: str, topic: str, value: bytes, broker) -> dict:
    import minilog

    producer = minilog.Producer(bootstrap, **c.producer_settings(args))
    errors: list = []
    cpu: dict = {}

    def on_delivery(err, report=None) -> None:
        if err is not None:
            errors.append(repr(err))

    try:
        with c.profiled(_only(args, "produce"), broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "produce", args.num_records) as advance:
            t0 = time.perf_counter_ns()
            for _ in range(args.num_records):
                producer.produce(topic, value, on_delivery=on_delivery)
                advance(1)
            producer.flush()
            t1 = time.perf_counter_ns()
    finally:
        producer.close()
    total = len(value) * args.num_records
    seconds = (t1 - t0) / 1e9
    out = {"seconds": seconds, "mb_per_sec": total / seconds / c.MiB, "errors": len(errors),
           "cpu": cpu}
    if errors:
        out["first_error"] = errors[0]
    return out


def consume(args, bootstrap: str, topic: str, broker) -> dict:
    import minilog

    consumer = minilog.Consumer(bootstrap, fetch_max_bytes=args.fetch_max_bytes,
                                max_partition_fetch_bytes=args.max_partition_fetch_bytes)
    consumer.assign([(topic, p, 0) for p in range(args.partitions)])
    count = 0
    total = 0
    cpu: dict = {}
    try:
        with c.profiled(_only(args, "consume"), broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "consume", args.num_records) as advance:
            t0 = t_last = time.perf_counter_ns()
            while count < args.num_records:
                records = consumer.poll(timeout_ms=1000, max_records=1000)
                now = time.perf_counter_ns()
                if records:
                    count += len(records)
                    total += sum(len(r.value) for r in records)
                    t_last = now
                    advance(len(records))
                elif (now - t_last) / 1e9 > args.timeout_s:
                    break
    finally:
        consumer.close()
    seconds = max(1e-9, (t_last - t0) / 1e9)
    return {"records": count, "bytes": total, "seconds": seconds,
            "mb_per_sec": total / seconds / c.MiB, "cpu": cpu}


def _only(args, phase: str):
    """Profile only the phase named by --profile-phase (two phases, one profile file)."""
    if args.profile_phase == phase:
        return args
    return argparse.Namespace(profile_broker=None, profile_client=None, profile_gil=False)


def main(argv=None) -> None:
    if argv is None and sys.argv[1:] == ["--_sink"]:
        _sink()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=200)
    parser.add_argument("--record-size", type=int, default=c.MiB, help="value bytes (1 MiB)")
    parser.add_argument("--fetch-max-bytes", type=int, default=64 * c.MiB)
    parser.add_argument("--max-partition-fetch-bytes", type=int, default=16 * c.MiB)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--profile-phase", choices=["produce", "consume"], default="produce",
                        help="which phase --profile-broker/--profile-client cover")
    c.add_common_args(parser)
    c.add_producer_args(parser, linger_ms=0, batch_size=c.MiB)
    args = parser.parse_args(argv)
    # A batch may hold several values (linger 0 still batches what queues up
    # while a request is in flight), so the limit covers a whole batch.
    limit = max(args.record_size, args.batch_size) + 64 * 1024
    args.broker_set = [f"message.max.bytes={limit}", *args.broker_set]
    value = os.urandom(args.record_size)
    topic = c.topic_name(args, "large-values")
    result = {"tool": "large_values", "topic": topic, "num_records": args.num_records,
              "record_size": args.record_size, "settings": c.producer_settings(args),
              "env": c.environment()}
    result["socket"] = socket_baseline(value, args.num_records)
    with c.broker_for(args) as (bootstrap, broker):
        c.create_topic(bootstrap, topic, args.partitions, {"max.message.bytes": str(limit)})
        result["produce"] = produce(args, bootstrap, topic, value, broker)
        result["consume"] = consume(args, bootstrap, topic, broker)
        # After the broker's writes, not before: deleting the baseline file
        # would hand its just-touched pages to the broker's log, and a write
        # into pages the VM has not handed out yet costs far more (see docs).
        result["file_write"] = file_baseline(value, args.num_records,
                                             broker.data_dir if broker else args.data_dir)
    base = result["socket"]["mb_per_sec"]
    result["produce_vs_socket"] = result["produce"]["mb_per_sec"] / base
    result["consume_vs_socket"] = result["consume"]["mb_per_sec"] / base
    result["produce_vs_file_write"] = (result["produce"]["mb_per_sec"]
                                       / result["file_write"]["mb_per_sec"])
    c.emit(args, "minilog large values", result)


if __name__ == "__main__":
    main()
