"""End-to-end latency: produce one record, a waiting consumer receives it.

In the spirit of Kafka's EndToEndLatency tool: one producer (linger 0 by
default) and one consumer in this process, one record in flight at a time,
paced at `--rate` records/s. Each sample is the time from just before
`Producer.produce()` to the moment `Consumer.poll()` hands back that record
(matched by a sequence number in the value), so it includes the producer's
accumulator and background thread, the produce request, the broker's append,
the fetch long-poll wake-up, the fetch response and the consumer's decode.
The producer is never flushed inside the timed window (that would add the
ack's return trip, which a consumer does not wait for).

The same run measures a baseline: a bare trio TCP round trip between this
process and a child process that echoes `--record-size` bytes, at the same
rate and count, and again back to back (no idle gap, so no wake-up cost).
That is the floor any broker round trip here sits on; the broker path has
two such hops (produce, then the fetch wake-up) plus two thread hand-offs.

`--workload` (perf/_workloads.py) chooses the records: `uniform` (keyless
`--record-size` values, the default), `keyed`, or `events` (JSON keyed by
order id). Each value carries the record's sequence number (its first 8
bytes, or an event's `eventId`), which is how the consumer matches it.

`--busy-caller` (issue 13, section 3): the caller spins (a Python busy loop
holding the GIL) between produce() calls instead of sleeping, as a CPU-busy
application thread would, and the consumer runs in its own process waiting
in poll(), so only the producer side shares its process with the busy
thread. Each sample is then the time from just before produce() in this
process to poll() returning the record in the consumer's process (both
read CLOCK_MONOTONIC through `time.perf_counter_ns`, one clock on Linux).

The producer runs at the client's defaults except `linger_ms=0` (the
issue's latency setting); every setting that differs is listed under
`settings`.

Examples:
    python perf/e2e_latency.py --num-records 10000 --rate 1000 --json
    python perf/e2e_latency.py --workload events --busy-caller --num-records 10000 --json
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import threading
import time

import _common as c
import _workloads as w

_SEQ = struct.Struct(">Q")


# --------------------------------------------------------------------------- trio baseline


def _echo_server(size: int) -> None:
    """Child process: accept one connection, echo every `size`-byte message back."""
    import trio

    async def handler(stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            while len(buf) >= size:
                await stream.send_all(bytes(buf[:size]))
                del buf[:size]

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(handler, listeners)

    trio.run(main)


def trio_round_trip(count: int, rate: float, size: int, warmup: int) -> dict:
    """Round trips of `size` bytes to a trio echo server in another process."""
    import trio

    child = subprocess.Popen([sys.executable, __file__, "--_echo-server", str(size)],
                             stdout=subprocess.PIPE)
    try:
        port = int(child.stdout.readline())
        samples: list[int] = []

        async def main() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            payload = b"x" * size
            interval_ns = int(1e9 / rate) if rate > 0 else 0
            start = time.perf_counter_ns()
            for i in range(warmup + count):
                due = start + i * interval_ns
                now = time.perf_counter_ns()
                if due > now:
                    await trio.sleep((due - now) / 1e9)
                t0 = time.perf_counter_ns()
                await stream.send_all(payload)
                got = 0
                while got < size:
                    got += len(await stream.receive_some(65536))
                if i >= warmup:
                    samples.append(time.perf_counter_ns() - t0)
            await stream.aclose()

        trio.run(main)
    finally:
        child.kill()
        child.wait()
    return c.percentiles_ms(samples)


# --------------------------------------------------------------------------- minilog


class _Hops:
    """`--hops`: timestamps inside the client to split each sample into hops.

    Wraps private methods of `minilog.client._connection.BrokerConnection`
    (`_send` / `_write_nowait` on the producer's thread, `_deliver` on the
    consumer's), so it
    is a diagnostic that may stop working when the client changes; then the
    result says `hops_unavailable` and the measurement runs unwrapped.
    Threads are told apart by the names the sync facade gives them.
    """

    NAMES = ("produce_to_send", "send", "sent_to_fetch_response", "fetch_response_to_poll")

    def __init__(self) -> None:
        self.marks: dict = {}
        self.rows: list[tuple] = []
        self.error = None
        try:
            from minilog.client import _connection
            cls = _connection.BrokerConnection
            orig_send, orig_deliver = cls._send, cls._deliver
        except (ImportError, AttributeError) as exc:
            self.error = repr(exc)
            return
        marks, now, current = self.marks, time.perf_counter_ns, threading.current_thread

        async def _send(conn, pieces):
            producer = current().name.startswith("minilog-producer")
            if producer and "send" not in marks:
                marks["send"] = now()
            await orig_send(conn, pieces)
            if producer and "sent" not in marks:
                marks["sent"] = now()

        orig_write = getattr(cls, "_write_nowait", None)

        def _write_nowait(conn, pieces):
            producer = current().name.startswith("minilog-producer")
            if producer and "send" not in marks:
                marks["send"] = now()
            written = orig_write(conn, pieces)
            if producer and written and "sent" not in marks:
                marks["sent"] = now()
            return written

        if orig_write is not None:   # newer clients write small frames without a checkpoint
            cls._write_nowait = _write_nowait

        def _deliver(conn, frame):
            if ("fetched" not in marks and getattr(frame, "attachments", None)
                    and current().name.startswith("minilog-consumer")):
                marks["fetched"] = now()
            return orig_deliver(conn, frame)

        cls._send, cls._deliver = _send, _deliver

    def start(self, t0: int) -> None:
        self.marks.clear()
        self.marks["t0"] = t0

    def end(self, t3: int) -> None:
        m = self.marks
        if "send" in m and "sent" in m and "fetched" in m:
            self.rows.append((m["send"] - m["t0"], m["sent"] - m["send"],
                              m["fetched"] - m["sent"], t3 - m["fetched"]))

    def result(self) -> dict:
        if self.error:
            return {"hops_unavailable": self.error}
        return {"hops_ms": {name: c.percentiles_ms([r[i] for r in self.rows])
                            for i, name in enumerate(self.NAMES)}}


class _Stamped:
    """The workload's records, each value stamped with its sequence number."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.records = w.generate(args.workload, args.warmup + args.num_records,
                                  record_size=args.record_size, seed=args.seed)
        self.events = args.workload == "events"

    def record(self, i: int) -> tuple[bytes | None, bytes]:
        """(key, value) of the i-th record sent."""
        j = i % len(self.records)
        key = None if self.records.keys is None else self.records.keys[j]
        value = self.records.values[j]
        if self.events:
            cut = w.EVENT_ID_SLICE
            return key, value[:cut.start] + b"%016x" % i + value[cut.stop:]
        return key, _SEQ.pack(i) + value[_SEQ.size:]


def seq_of(value: bytes, events: bool) -> int:
    """The sequence number `_Stamped.record` put in `value`."""
    if events:
        return int(value[w.EVENT_ID_SLICE], 16)
    return _SEQ.unpack_from(value)[0]


def minilog_e2e(args: argparse.Namespace, bootstrap: str, broker) -> dict:
    import minilog

    hops = _Hops() if args.hops else None

    topic = c.topic_name(args, "e2e")
    c.create_topic(bootstrap, topic, args.partitions)
    stamped = _Stamped(args)
    producer = minilog.Producer(bootstrap, **c.producer_settings(args))
    consumer = minilog.Consumer(bootstrap)
    consumer.assign([(topic, p, 0) for p in range(args.partitions)])
    samples: list[int] = []
    interval_ns = int(1e9 / args.rate) if args.rate > 0 else 0
    timeouts = 0
    cpu: dict = {}
    total = args.warmup + args.num_records
    try:
        with c.profiled(args, broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "e2e", total) as advance:
            start = time.perf_counter_ns()
            for i in range(total):
                due = start + i * interval_ns
                now = time.perf_counter_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                key, value = stamped.record(i)
                t0 = time.perf_counter_ns()
                if hops:
                    hops.start(t0)
                producer.produce(topic, value, key=key)
                if not _receive(consumer, i, args.timeout_ms, stamped.events):
                    timeouts += 1
                    continue
                t1 = time.perf_counter_ns()
                if i >= args.warmup:
                    samples.append(t1 - t0)
                    if hops:
                        hops.end(t1)
                if i % 100 == 99:
                    producer.poll(0)
                    advance(100)
        producer.flush()
    finally:
        consumer.close()
        producer.close()
    out = {"latency_ms": c.percentiles_ms(samples), "timeouts": timeouts, "topic": topic,
           "cpu": cpu}
    if hops:
        out.update(hops.result())
    return out


def _receive(consumer, seq: int, timeout_ms: float, events: bool) -> bool:
    """Poll until the record with sequence `seq` arrives; False on timeout."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=timeout_ms, max_records=1):
            if seq_of(record.value, events) == seq:
                return True
    return False


# --------------------------------------------------------------------------- --busy-caller


def busy_caller_e2e(args: argparse.Namespace, bootstrap: str, broker) -> dict:
    """A spinning caller produces here; a consumer process waiting in poll() receives."""
    topic = c.topic_name(args, "e2e-busy")
    c.create_topic(bootstrap, topic, args.partitions)
    stamped = _Stamped(args)
    total = args.warmup + args.num_records
    spec = {"bootstrap": bootstrap, "topic": topic, "partitions": args.partitions,
            "count": total, "events": stamped.events, "timeout_ms": args.timeout_ms}
    child = subprocess.Popen([sys.executable, __file__, "--_consumer", json.dumps(spec)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer process did not start")
        sent = _spin_and_produce(args, bootstrap, broker, topic, stamped, total)
        out, _ = child.communicate(timeout=args.timeout_ms / 1000 + 60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    received = dict(json.loads(out)["received"])
    samples = [received[i] - sent["t0"][i] for i in range(args.warmup, total) if i in received]
    return {"latency_ms": c.percentiles_ms(samples), "topic": topic,
            "timeouts": args.num_records - len(samples), "cpu": sent["cpu"],
            "caller": "busy: spins between produce() calls; the consumer is its own process"}


def _spin_and_produce(args, bootstrap, broker, topic, stamped: _Stamped, total: int) -> dict:
    """Produce `total` records paced at --rate, spinning (not sleeping) until each is due."""
    import minilog

    producer = minilog.Producer(bootstrap, **c.producer_settings(args))
    interval_ns = int(1e9 / args.rate) if args.rate > 0 else 0
    perf_ns = time.perf_counter_ns
    t0s = [0] * total
    cpu: dict = {}
    try:
        with c.profiled(args, broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "e2e (busy caller)", total) as advance:
            start = perf_ns()
            for i in range(total):
                due = start + i * interval_ns
                while perf_ns() < due:   # the application's work: Python holding the GIL
                    pass
                key, value = stamped.record(i)
                t0s[i] = perf_ns()
                producer.produce(topic, value, key=key)
                if i % 100 == 99:
                    producer.poll(0)
                    advance(100)
            producer.flush()
    finally:
        producer.close()
    return {"t0": t0s, "cpu": cpu}


def _consumer_process(spec: dict) -> None:
    """Child of --busy-caller: poll until every record came; print [seq, receipt ns] pairs."""
    import minilog

    consumer = minilog.Consumer(spec["bootstrap"])
    received: list[tuple[int, int]] = []
    try:
        consumer.assign([(spec["topic"], p, 0) for p in range(spec["partitions"])])
        consumer.poll(timeout_ms=0)
        print("ready", flush=True)
        last = time.monotonic()
        while len(received) < spec["count"]:
            records = consumer.poll(timeout_ms=100)
            t = time.perf_counter_ns()
            if records:
                last = time.monotonic()
                received.extend((seq_of(r.value, spec["events"]), t) for r in records)
            elif time.monotonic() - last > spec["timeout_ms"] / 1000:
                break
    finally:
        consumer.close()
    print(json.dumps({"received": received}), flush=True)


def main(argv=None) -> None:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--_echo-server":
        _echo_server(int(sys.argv[2]))
        return
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--_consumer":
        _consumer_process(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=10_000, help="measured records")
    parser.add_argument("--warmup", type=int, default=200, help="records sent before measuring")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s (0: back to back)")
    parser.add_argument("--record-size", type=int, default=100,
                        help="value bytes (>= 8; uniform and keyed workloads)")
    parser.add_argument("--busy-caller", action="store_true",
                        help="the caller spins between produce() calls instead of sleeping; "
                             "the consumer runs in its own process")
    parser.add_argument("--timeout-ms", type=float, default=5000, help="give up on one record")
    parser.add_argument("--skip-baseline", action="store_true", help="no trio round-trip baseline")
    parser.add_argument("--baseline-only", action="store_true", help="only the trio baseline")
    parser.add_argument("--hops", action="store_true",
                        help="also split each sample into client-side hops (wraps private "
                             "client methods; a diagnostic)")
    w.add_workload_args(parser)
    c.add_common_args(parser)
    c.add_producer_args(parser, linger_ms=0)
    args = parser.parse_args(argv)
    if args.record_size < _SEQ.size:
        parser.error("--record-size must be at least 8")
    if args.busy_caller and args.hops:
        parser.error("--hops splits hops inside one process; not with --busy-caller")

    result: dict = {"tool": "e2e_latency", "num_records": args.num_records, "rate": args.rate,
                    "workload": w.describe(args), "busy_caller": args.busy_caller,
                    "settings": c.producer_settings(args), "env": c.environment()}
    if not args.skip_baseline:
        # Paced like the measurement (the CPU idles between records, so wake-ups
        # cost), and back to back (what "a bare trio round trip" usually means).
        result["baseline_trio_round_trip_ms"] = trio_round_trip(
            args.num_records, args.rate, args.record_size, args.warmup)
        if args.rate > 0:
            result["baseline_trio_round_trip_back_to_back_ms"] = trio_round_trip(
                args.num_records, 0, args.record_size, args.warmup)
    if not args.baseline_only:
        with c.broker_for(args) as (bootstrap, broker):
            run = busy_caller_e2e if args.busy_caller else minilog_e2e
            result.update(run(args, bootstrap, broker))
    c.emit(args, "minilog end-to-end latency", result)


if __name__ == "__main__":
    main()
