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

Example:
    python perf/e2e_latency.py --num-records 10000 --rate 1000 --json
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import threading
import time

import _common as c

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


def minilog_e2e(args: argparse.Namespace, bootstrap: str, broker) -> dict:
    import minilog

    hops = _Hops() if args.hops else None

    topic = c.topic_name(args, "e2e")
    c.create_topic(bootstrap, topic, args.partitions)
    producer = minilog.Producer(bootstrap, acks=c.acks_value(args.acks), linger_ms=args.linger_ms,
                                batch_size=args.batch_size, compression_type=args.compression_type,
                                max_in_flight=args.max_in_flight)
    consumer = minilog.Consumer(bootstrap)
    consumer.assign([(topic, p, 0) for p in range(args.partitions)])
    pad = b"x" * max(0, args.record_size - _SEQ.size)
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
                value = _SEQ.pack(i) + pad
                t0 = time.perf_counter_ns()
                if hops:
                    hops.start(t0)
                producer.produce(topic, value)
                if not _receive(consumer, i, args.timeout_ms):
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


def _receive(consumer, seq: int, timeout_ms: float) -> bool:
    """Poll until the record with sequence `seq` arrives; False on timeout."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=timeout_ms, max_records=1):
            if _SEQ.unpack_from(record.value)[0] == seq:
                return True
    return False


def main(argv=None) -> None:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--_echo-server":
        _echo_server(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=10_000, help="measured records")
    parser.add_argument("--warmup", type=int, default=200, help="records sent before measuring")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s (0: back to back)")
    parser.add_argument("--record-size", type=int, default=100, help="value bytes (>= 8)")
    parser.add_argument("--timeout-ms", type=float, default=5000, help="give up on one record")
    parser.add_argument("--skip-baseline", action="store_true", help="no trio round-trip baseline")
    parser.add_argument("--baseline-only", action="store_true", help="only the trio baseline")
    parser.add_argument("--hops", action="store_true",
                        help="also split each sample into client-side hops (wraps private "
                             "client methods; a diagnostic)")
    c.add_common_args(parser)
    c.add_producer_args(parser, linger_ms=0, batch_size=16384)
    args = parser.parse_args(argv)
    if args.record_size < _SEQ.size:
        parser.error("--record-size must be at least 8")

    result: dict = {"tool": "e2e_latency", "num_records": args.num_records, "rate": args.rate,
                    "record_size": args.record_size, "acks": args.acks, "linger_ms": args.linger_ms,
                    "env": c.environment()}
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
            result.update(minilog_e2e(args, bootstrap, broker))
    c.emit(args, "minilog end-to-end latency", result)


if __name__ == "__main__":
    main()
