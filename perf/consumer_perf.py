"""Consumer throughput, like kafka-consumer-perf-test.

First the topic is filled (unless `--no-populate`): `--num-records` records
of `--workload` (see perf/_workloads.py: `uniform` keyless `--record-size`
values, `keyed`, or `events` JSON keyed by order id) through the Producer's
produce() (no callbacks), then flushed; that rate is reported as
`populate`. Then a
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

Producer and consumer run at the client's defaults (poll() included: it
returns up to the consumer's `max_poll_records`); every setting given on
the command line is listed under `settings` beside the figures.

Examples:
    python perf/consumer_perf.py --num-records 2000000 --record-size 100 --json
    python perf/consumer_perf.py --workload events --partitions 12 --num-records 200000 --json
"""

from __future__ import annotations

import argparse
import time

import _common as c
import _workloads as w


def populate(args: argparse.Namespace, bootstrap: str, topic: str, records: w.Records) -> dict:
    import minilog

    producer = minilog.Producer(bootstrap, **c.producer_settings(args))
    produce = producer.produce
    pool = len(records)
    t0 = time.perf_counter_ns()
    try:
        with c.progress(args, "populate", args.num_records) as advance:
            done = 0
            for n in c.chunks(args.num_records, 50_000):
                if records.keys is None:
                    value = records.values[0]
                    for _ in range(n):
                        produce(topic, value)
                else:
                    keys, values = records.keys, records.values
                    for i in range(done, done + n):
                        produce(topic, values[i % pool], key=keys[i % pool])
                done += n
                advance(n)
            producer.flush()
    finally:
        producer.close()
    seconds = (time.perf_counter_ns() - t0) / 1e9
    return {"seconds": seconds, "records_per_sec": args.num_records / seconds}


def consumer_settings(args: argparse.Namespace) -> dict:
    """The consumer keyword arguments given on the command line (the rest: client defaults)."""
    names = ("fetch_max_bytes", "max_partition_fetch_bytes", "max_poll_records")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def consume(args: argparse.Namespace, bootstrap: str, topic: str, broker,
            records_sent: w.Records) -> dict:
    import minilog

    consumer = minilog.Consumer(bootstrap, **consumer_settings(args))
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
                records = poll(timeout_ms=args.poll_timeout_ms)
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
        value_bytes = records_sent.value_bytes(count)   # what was sent, as if seen
    return {
        "records": count, "seconds": seconds, "records_per_sec": count / seconds,
        "mb_per_sec": value_bytes / seconds / c.MiB, "value_bytes": value_bytes,
        "polls": len(polls), "records_per_poll": count / max(1, len(polls)),
        "poll_latency_ms": c.percentiles_ms(polls), "timed_out": timed_out, "cpu": cpu,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100,
                        help="value bytes (uniform and keyed workloads)")
    parser.add_argument("--no-populate", action="store_true",
                        help="the topic already holds --num-records records")
    parser.add_argument("--max-poll-records", type=int, default=None,
                        help="consumer max_poll_records (default: the client's)")
    parser.add_argument("--poll-timeout-ms", type=int, default=1000)
    parser.add_argument("--timeout-ms", type=float, default=10_000,
                        help="stop if no record arrives for this long")
    parser.add_argument("--fetch-max-bytes", type=int, default=None)
    parser.add_argument("--max-partition-fetch-bytes", type=int, default=None)
    parser.add_argument("--touch", action="store_true", help="sum len(record.value) per record")
    w.add_workload_args(parser)
    c.add_common_args(parser)
    c.add_producer_args(parser)  # used to populate the topic
    args = parser.parse_args(argv)
    if args.no_populate and not args.topic:
        parser.error("--no-populate needs --topic")
    topic = c.topic_name(args, "consumer-perf")
    records = w.generate(args.workload, args.num_records, record_size=args.record_size,
                         seed=args.seed)
    result = {"tool": "consumer_perf", "topic": topic, "num_records": args.num_records,
              "workload": w.describe(args), "partitions": args.partitions,
              "settings": {"producer": c.producer_settings(args),
                           "consumer": consumer_settings(args)},
              "touch": args.touch, "env": c.environment()}
    with c.broker_for(args) as (bootstrap, broker):
        if not args.no_populate:
            c.create_topic(bootstrap, topic, args.partitions)
            result["populate"] = populate(args, bootstrap, topic, records)
        result.update(consume(args, bootstrap, topic, broker, records))
    c.emit(args, "minilog consumer perf", result)


if __name__ == "__main__":
    main()
