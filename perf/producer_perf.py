"""Producer throughput and delivery latency, like kafka-producer-perf-test.

One Python process calls `Producer.produce(topic, value[, key=...])` once
per record, then `flush()`. The records come from `--workload` (see
perf/_workloads.py): `uniform` sends no key (the sticky partitioner, as in
Kafka's tool) and the same `--record-size` payload every time; `keyed` adds
keys of varying length; `events` sends JSON events of 250-450 bytes keyed by
order id. The producer runs at the client's defaults; every setting given
on the command line is listed under `settings` beside the figures. Throughput is
records / (first produce() -> flush() returned), so it counts every record
as acknowledged (acks>=1), not merely handed to the client; the rate of
the produce() calls alone is reported too (`produce_call_rate`).

Latency is per-record delivery latency from the `on_delivery` callback:
time from just before `produce()` to the callback running in `poll()`/
`flush()`. Like Kafka's tool it is sampled: every `--latency-sample-every`th
record carries a timestamped callback, the others a shared counting callback
(no closure per record). `--latency all` times every record (costs a closure
per record); `--latency none` passes no callback at all (pure produce() path;
then delivery is only checked by flush()).

Examples:
    python perf/producer_perf.py --num-records 2000000 --record-size 100 --json
    python perf/producer_perf.py --workload events --partitions 12 --num-records 200000 --json
"""

from __future__ import annotations

import argparse
import time
from itertools import cycle, islice, repeat

import _common as c
import _workloads as w


class _Counter:
    """The shared delivery callback: counts acks and errors, keeps the first error."""

    __slots__ = ("acked", "errors", "first_error")

    def __init__(self) -> None:
        self.acked = 0
        self.errors = 0
        self.first_error = None

    def __call__(self, err, report=None) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors += 1
            if self.first_error is None:
                self.first_error = repr(err)


def run(args: argparse.Namespace, bootstrap: str, broker) -> dict:
    import minilog

    topic = c.topic_name(args, "producer-perf")
    c.create_topic(bootstrap, topic, args.partitions)
    records = w.generate(args.workload, args.num_records, record_size=args.record_size,
                         seed=args.seed)
    value = records.values[0]
    counter = _Counter()
    samples: list[int] = []
    perf_ns = time.perf_counter_ns

    def timed(t0: int):
        def cb(err, report=None) -> None:
            counter(err, report)
            samples.append(perf_ns() - t0)
        return cb

    every = 1 if args.latency == "all" else max(1, args.latency_sample_every)
    callback = None if args.latency == "none" else counter
    settings = c.producer_settings(args)
    producer = minilog.Producer(bootstrap, **settings)
    produce = producer.produce
    group_rest = every - 1
    groups_per_chunk = max(1, args.progress_every // every)
    n_groups, tail = divmod(args.num_records, every)
    throttle_ns = int(1e9 * every / args.throughput) if args.throughput > 0 else 0
    cpu: dict = {}
    try:
        with c.profiled(args, broker), c.cpu_meter(broker, cpu), \
                c.progress(args, "produce", args.num_records) as advance:
            sent_groups = 0
            t_start = perf_ns()
            if records.keys is None:   # uniform: the tool adds nothing per record
                for groups in c.chunks(n_groups, groups_per_chunk):
                    for _ in repeat(None, groups):
                        if callback is None:
                            produce(topic, value)
                        else:
                            produce(topic, value, on_delivery=timed(perf_ns()))
                        for _ in repeat(None, group_rest):
                            produce(topic, value, on_delivery=callback)
                        if throttle_ns:
                            sent_groups += 1
                            _throttle(t_start, throttle_ns, sent_groups)
                    advance(groups * every)
                for _ in repeat(None, tail):
                    produce(topic, value, on_delivery=callback)
            else:                      # keyed records: one (key, value) pair per call
                pairs = cycle(list(zip(records.keys, records.values)))
                for groups in c.chunks(n_groups, groups_per_chunk):
                    for _ in repeat(None, groups):
                        k, v = next(pairs)
                        if callback is None:
                            produce(topic, v, key=k)
                        else:
                            produce(topic, v, key=k, on_delivery=timed(perf_ns()))
                        for k, v in islice(pairs, group_rest):
                            produce(topic, v, key=k, on_delivery=callback)
                        if throttle_ns:
                            sent_groups += 1
                            _throttle(t_start, throttle_ns, sent_groups)
                    advance(groups * every)
                for k, v in islice(pairs, tail):
                    produce(topic, v, key=k, on_delivery=callback)
            t_calls = perf_ns()
            producer.flush()
            t_end = perf_ns()
            advance(tail)
        producer.poll(0)
    finally:
        producer.close()

    seconds = (t_end - t_start) / 1e9
    n = args.num_records
    value_bytes = records.value_bytes(n)
    result = {
        "tool": "producer_perf", "topic": topic, "num_records": n,
        "workload": w.describe(args), "partitions": args.partitions,
        "settings": settings,   # every producer setting that differs from the client's default
        "seconds": seconds,
        "records_per_sec": n / seconds,
        "mb_per_sec": value_bytes / seconds / c.MiB,
        "avg_value_bytes": value_bytes / n if n else 0,
        "produce_call_rate": n / ((t_calls - t_start) / 1e9),
        "flush_seconds": (t_end - t_calls) / 1e9,
        "latency_mode": args.latency if args.latency == "none" else
        f"per-record on_delivery, 1 in {every}",
        "latency_ms": c.percentiles_ms(samples),
        "cpu": cpu,
        "env": c.environment(),
    }
    if callback is not None:
        result["acked"] = counter.acked
        result["errors"] = counter.errors
        if counter.first_error:
            result["first_error"] = counter.first_error
    return result


def _throttle(t_start: int, interval_ns: int, groups_sent: int) -> None:
    due = t_start + groups_sent * interval_ns
    now = time.perf_counter_ns()
    if due > now:
        time.sleep((due - now) / 1e9)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100,
                        help="value bytes (uniform and keyed workloads)")
    parser.add_argument("--throughput", type=float, default=-1,
                        help="max records/s (approximate); -1: as fast as possible")
    parser.add_argument("--latency", choices=["sample", "all", "none"], default="sample",
                        help="delivery latency: sampled callbacks (default), every record, none")
    parser.add_argument("--latency-sample-every", type=int, default=50)
    parser.add_argument("--progress-every", type=int, default=20_000, help="records per bar update")
    w.add_workload_args(parser)
    c.add_common_args(parser)
    c.add_producer_args(parser)
    args = parser.parse_args(argv)
    with c.broker_for(args) as (bootstrap, broker):
        result = run(args, bootstrap, broker)
    c.emit(args, "minilog producer perf", result)


if __name__ == "__main__":
    main()
