"""Replication cost: acks=all on RF=3 (min.insync.replicas=2) against acks=1 on RF=1, same run.

Issue 9, section 5: the ratio of the two produce throughputs, goal >= 0.6
(Kafka's 2014 benchmark measured 0.51 for three-way synchronous
replication). The script starts its own cluster (`minilog cluster up`:
etcd and `--brokers` brokers in a temp dir, perf/_cluster.py) and creates two
topics with `--partitions` partitions each:

- baseline: replication factor 1, produced with acks=1;
- replicated: replication factor 3, min.insync.replicas=2, acks=all.

With `--baseline single` the baseline runs instead against one broker with
no `--metadata` (perf/_common.BrokerProcess), the way minilog runs without
a cluster. Each round produces `--num-records` records of `--record-size`
bytes to each topic in turn (baseline first, then replicated, alternating
over `--rounds`), with the producer at the client's defaults except acks;
throughput is records / (first produce() -> flush() returned), as in
producer_perf.py, so every record counted was acknowledged under its acks.
The reported figure of each mode is its median round; ratio =
replicated / baseline.

Replication lag (`--lag-seconds S`, off by default): a producer (acks
`--lag-acks`, default all) sends to partition 0 of the replicated topic at
`--lag-rate` records/s for S seconds (`achieved_rate` says whether that rate
was sustained: acknowledged records over the time to the final flush), while this
process asks every replica's broker, every `--lag-sample-ms`, for its own
high watermark of partition 0 (DescribeTopicPartitions sent to that
broker). For each follower sample (time t, high watermark h) the lag is t
minus the time the leader was first seen with a high watermark >= h; the
p50/p99/max of those is reported. It is only as fine as the sampling
interval, and it is honest only if the broker answers DescribeTopicPartitions
from its own replica (the script checks that the followers' answers differ
from the leader's at least once, and says "not measurable" otherwise).

Examples:
    python perf/replication_perf.py --num-records 200000 --json
    python perf/replication_perf.py --rounds 3 --partitions 3 --lag-seconds 10 --lag-rate 20000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from contextlib import ExitStack

import _cluster as cl
import _common as c
import _workloads as w

MIN_INSYNC = 2


class _Counter:
    __slots__ = ("acked", "errors", "first_error")

    def __init__(self) -> None:
        self.acked = 0
        self.errors = 0
        self.first_error: str | None = None

    def __call__(self, err, report=None) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors += 1
            if self.first_error is None:
                self.first_error = repr(err)


def create_topic(bootstrap: str, topic: str, partitions: int, rf: int, config: dict) -> None:
    import minilog

    with minilog.Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions, rf, config)
        # every partition led and its ISR complete before the clock starts
        cl.wait_for(lambda: _ready(admin, topic, partitions, rf), f"{topic} fully replicated", 60)


def _ready(admin, topic: str, partitions: int, rf: int) -> bool:
    parts = admin.metadata().partitions.get(topic, [])
    return len(parts) == partitions and all(p.leader >= 0 and len(p.isr) == rf for p in parts)


def produce_round(bootstrap: str, topic: str, acks, records: w.Records, n: int,
                  args: argparse.Namespace, label: str) -> dict:
    """Produce `n` records to `topic`; records/s from the first produce() to flush() returning."""
    import minilog

    settings = {**c.producer_settings(args), "acks": acks}
    counter = _Counter()
    producer = minilog.Producer(bootstrap, **settings)
    values = records.values
    keys = records.keys
    try:
        with c.progress(args, label, n) as advance:
            t0 = time.perf_counter_ns()
            done = 0
            for chunk in c.chunks(n, 20_000):
                if keys is None:
                    value = values[0]
                    for _ in range(chunk):
                        producer.produce(topic, value, on_delivery=counter)
                else:
                    for i in range(done, done + chunk):
                        j = i % len(values)
                        producer.produce(topic, values[j], key=keys[j], on_delivery=counter)
                done += chunk
                advance(chunk)
            producer.flush()
            t1 = time.perf_counter_ns()
        producer.poll(0)
    finally:
        producer.close()
    seconds = (t1 - t0) / 1e9
    out = {"records_per_sec": n / seconds, "mb_per_sec": records.value_bytes(n) / seconds / c.MiB,
           "seconds": seconds, "acked": counter.acked, "errors": counter.errors}
    if counter.first_error:
        out["first_error"] = counter.first_error
    return out


def measure_lag(bootstrap: str, topic: str, args: argparse.Namespace) -> dict:
    """Follower high watermark behind the leader's, in ms, under a paced producer."""
    import minilog

    with minilog.Admin(bootstrap) as admin:
        part = admin.metadata().partitions[topic][0]
        leader, followers = part.leader, [r for r in part.replicas if r != part.leader]
        samples: dict[int, list[tuple[float, int]]] = {r: [] for r in part.replicas}
        stop = threading.Event()
        sent = _Counter()

        def produce() -> None:
            producer = minilog.Producer(bootstrap, acks=c.acks_value(args.lag_acks))
            interval = 1.0 / args.lag_rate
            start = time.perf_counter()
            i = 0
            value = b"x" * args.record_size
            try:
                while not stop.is_set():
                    due = start + i * interval
                    now = time.perf_counter()
                    if due > now:
                        time.sleep(due - now)
                    producer.produce(topic, value, partition=0, on_delivery=sent)
                    i += 1
                producer.flush()
            finally:
                producer.close()

        thread = threading.Thread(target=produce, daemon=True)
        t_start = time.perf_counter()
        thread.start()
        deadline = t_start + args.lag_seconds
        try:
            while time.perf_counter() < deadline:
                for replica in part.replicas:
                    hw = _local_high_watermark(admin, topic, replica)
                    if hw is not None:
                        samples[replica].append((time.perf_counter(), hw))
                time.sleep(args.lag_sample_ms / 1000)
        finally:
            stop.set()
            thread.join()
            t_end = time.perf_counter()    # the producer has flushed: every record answered
    leader_samples = samples[leader]
    lags_ns: list[int] = []
    differed = False
    for f in followers:
        for t, hw in samples[f]:
            seen = next((lt for lt, lhw in leader_samples if lhw >= hw), None)
            if seen is None:
                continue
            differed = differed or any(lhw != hw for lt, lhw in leader_samples if abs(lt - t) < 0.01)
            lags_ns.append(max(0, int((t - seen) * 1e9)))
    result = {"rate": args.lag_rate, "acks": args.lag_acks, "seconds": args.lag_seconds,
              "sample_ms": args.lag_sample_ms, "acked": sent.acked, "errors": sent.errors,
              "achieved_rate": sent.acked / (t_end - t_start),  # below `rate`: not sustained
              "leader": leader, "followers": followers}
    if not differed:
        result["lag_ms"] = "not measurable: followers answered with the leader's high watermark"
    else:
        result["lag_ms"] = c.percentiles_ms(lags_ns)
    return result


def _local_high_watermark(admin, topic: str, broker_id: int) -> int | None:
    """Broker `broker_id`'s answer for partition 0's high watermark (None when it fails)."""
    from minilog.protocol import ApiKey

    try:
        # the client's request to one chosen broker (private: the public API asks the controller)
        payload = admin._loop.run(lambda: admin._async._request(
            ApiKey.DESCRIBE_TOPIC_PARTITIONS, {"topics": [topic]}, node=broker_id))
    except Exception:  # a broker that is busy or gone: no sample this time
        return None
    for t in payload["topics"]:
        for p in t["partitions"]:
            if p["partition"] == 0:
                return int(p["high_watermark"])
    return None


def run(args: argparse.Namespace) -> dict:
    records = w.generate(args.workload, min(args.num_records, 100_000), record_size=args.record_size,
                         seed=args.seed)
    suffix = f"{int(time.time() * 1000) % 10**8}"
    base_topic, repl_topic = f"repl-perf-rf1-{suffix}", f"repl-perf-rf3-{suffix}"
    result: dict = {"tool": "replication_perf", "num_records": args.num_records,
                    "workload": w.describe(args), "partitions": args.partitions,
                    "brokers": args.brokers, "baseline": args.baseline, "rounds": args.rounds,
                    "settings": c.producer_settings(args), "env": c.environment()}
    with ExitStack() as stack:
        cluster = stack.enter_context(cl.LocalCluster(args.brokers, args.broker_set))
        base_bootstrap = cluster.bootstrap
        if args.baseline == "single":
            single = stack.enter_context(c.BrokerProcess(None, args.broker_set))
            base_bootstrap = single.address
        create_topic(base_bootstrap, base_topic, args.partitions, 1, {})
        create_topic(cluster.bootstrap, repl_topic, args.partitions, 3,
                     {"min.insync.replicas": str(MIN_INSYNC)})
        rounds: dict[str, list[dict]] = {"baseline": [], "replicated": []}
        for i in range(args.rounds):
            rounds["baseline"].append(produce_round(base_bootstrap, base_topic, 1, records,
                                                    args.num_records, args, f"acks=1 RF=1 #{i + 1}"))
            rounds["replicated"].append(produce_round(cluster.bootstrap, repl_topic, "all", records,
                                                      args.num_records, args, f"acks=all RF=3 #{i + 1}"))
        if args.lag_seconds > 0:
            result["replication_lag"] = measure_lag(cluster.bootstrap, repl_topic, args)
    for mode, runs in rounds.items():
        result[mode] = {"median_records_per_sec": statistics.median(r["records_per_sec"] for r in runs),
                        "median_mb_per_sec": statistics.median(r["mb_per_sec"] for r in runs),
                        "errors": sum(r["errors"] for r in runs),
                        "runs": {str(i + 1): r for i, r in enumerate(runs)}}   # flattened by emit()
    result["baseline"]["what"] = "acks=1, replication factor 1"
    result["replicated"]["what"] = f"acks=all, replication factor 3, min.insync.replicas={MIN_INSYNC}"
    result["ratio"] = (result["replicated"]["median_records_per_sec"]
                       / result["baseline"]["median_records_per_sec"])
    result["goal_ratio"] = 0.6
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-records", type=int, default=200_000, help="records per round and mode")
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians reported")
    parser.add_argument("--baseline", choices=["cluster", "single"], default="cluster",
                        help="acks=1 RF=1 on the same cluster (default) or on a lone broker")
    parser.add_argument("--lag-seconds", type=float, default=0,
                        help="also measure replication lag for this long (0: skip)")
    parser.add_argument("--lag-rate", type=float, default=10_000, help="records/s during the lag phase")
    parser.add_argument("--lag-sample-ms", type=float, default=5)
    parser.add_argument("--lag-acks", default="all", choices=["1", "all"],
                        help="acks of the lag phase's producer (1: the leader runs ahead of its ISR)")
    parser.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                        help="`minilog serve --set` for every broker (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.add_workload_args(parser)
    c.add_producer_args(parser)
    args = parser.parse_args(argv)
    if args.acks is not None:
        parser.error("--acks is fixed by the comparison (1 for the baseline, all for replicated)")
    c.emit(args, "minilog replication perf", run(args))


if __name__ == "__main__":
    main()
