"""Consumer throughput, like kafka-consumer-perf-test.

First the topic is filled (unless `--no-populate`): `--num-records` records
of `--record-size` bytes through the Producer's produce() (no callbacks,
large batches), then flushed; that rate is reported as `populate`. Then a
fresh `Consumer` assigns every partition from offset 0 and calls
`poll(timeout_ms, max_records)` until it has seen `--num-records` records.
Throughput is records / (first poll() call -> the poll() that returned the
last record). The consumer side includes fetch requests, the broker's
reads, the frames, the record decode and the hand-off to this thread.

By default the loop only counts `len(records)`, so the figure is the cost of
delivering Record objects to the caller; `--touch` also sums
`len(record.value)` per record, as Kafka's tool does for its byte count
(then MB/s is the bytes actually seen). Latency is the duration of each
poll() call (p50/p99/p999): how long a caller waits for the next batch.

Example (the issue's target run):
    python perf/consumer_perf.py --num-records 2000000 --record-size 100 --json
"""

from __future__ import annotations

import argparse
import os
import time

import _common as c


def populate(args: argparse.Namespace, bootstrap: str, topic: str) -> dict:
    import minilog

    producer = minilog.Producer(bootstrap, acks=1, linger_ms=args.linger_ms,
                                batch_size=args.batch_size,
                                compression_type=args.compression_type)
    value = os.urandom(args.record_size)
    produce = producer.produce
    t0 = time.perf_counter_ns()
    try:
        with c.progress(args, "populate", args.num_records) as advance:
            for n in c.chunks(args.num_records, 50_000):
                for _ in range(n):
                    produce(topic, value)
                advance(n)
            producer.flush()
    finally:
        producer.close()
    seconds = (time.perf_counter_ns() - t0) / 1e9
    return {"seconds": seconds, "records_per_sec": args.num_records / seconds}


def consume(args: argparse.Namespace, bootstrap: str, topic: str, broker) -> dict:
    import minilog

    kwargs = {}
    if args.fetch_max_bytes:
        kwargs["fetch_max_bytes"] = args.fetch_max_bytes
    if args.max_partition_fetch_bytes:
        kwargs["max_partition_fetch_bytes"] = args.max_partition_fetch_bytes
    consumer = minilog.Consumer(bootstrap, **kwargs)
    consumer.assign([(topic, p, 0) for p in range(args.partitions)])
    want = args.num_records
    count = 0
    value_bytes = 0
    polls: list[int] = []
    perf_ns = time.perf_counter_ns
    poll = consumer.poll
    timed_out = False
    cpu: dict = {}
    try:
        with c.profiled(args, broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "consume", want) as advance:
            t_start = t_last = perf_ns()
            shown = 0
            while count < want:
                t0 = perf_ns()
                records = poll(timeout_ms=args.poll_timeout_ms, max_records=args.max_poll_records)
                t1 = perf_ns()
                polls.append(t1 - t0)
                if records:
                    count += len(records)
                    t_last = t1
                    if args.touch:
                        for r in records:
                            value_bytes += len(r.value)
                    if count - shown >= 50_000:
                        advance(count - shown)
                        shown = count
                elif (t1 - t_last) / 1e6 > args.timeout_ms:
                    timed_out = True
                    break
    finally:
        consumer.close()
    seconds = max(1e-9, (t_last - t_start) / 1e9)
    if not args.touch:
        value_bytes = count * args.record_size
    return {
        "records": count, "seconds": seconds, "records_per_sec": count / seconds,
        "mb_per_sec": value_bytes / seconds / c.MiB, "value_bytes": value_bytes,
        "polls": len(polls), "records_per_poll": count / max(1, len(polls)),
        "poll_latency_ms": c.percentiles_ms(polls), "timed_out": timed_out, "cpu": cpu,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100, help="value bytes")
    parser.add_argument("--no-populate", action="store_true",
                        help="the topic already holds --num-records records")
    parser.add_argument("--max-poll-records", type=int, default=100_000)
    parser.add_argument("--poll-timeout-ms", type=int, default=1000)
    parser.add_argument("--timeout-ms", type=float, default=10_000,
                        help="stop if no record arrives for this long")
    parser.add_argument("--fetch-max-bytes", type=int, default=None)
    parser.add_argument("--max-partition-fetch-bytes", type=int, default=None)
    parser.add_argument("--touch", action="store_true", help="sum len(record.value) per record")
    c.add_common_args(parser)
    c.add_producer_args(parser)  # used to populate the topic
    args = parser.parse_args(argv)
    if args.no_populate and not args.topic:
        parser.error("--no-populate needs --topic")
    topic = c.topic_name(args, "consumer-perf")
    result = {"tool": "consumer_perf", "topic": topic, "num_records": args.num_records,
              "record_size": args.record_size, "partitions": args.partitions,
              "max_poll_records": args.max_poll_records, "touch": args.touch,
              "env": c.environment()}
    with c.broker_for(args) as (bootstrap, broker):
        if not args.no_populate:
            c.create_topic(bootstrap, topic, args.partitions)
            result["populate"] = populate(args, bootstrap, topic)
        result.update(consume(args, bootstrap, topic, broker))
    c.emit(args, "minilog consumer perf", result)


if __name__ == "__main__":
    main()
