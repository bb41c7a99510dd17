"""Failover time: kill -9 a partition's leader while producing; time to the first acknowledged
write on the new leader.

Issue 9, section 5: goal < 2 s with the default lease settings
(broker.session.timeout.ms, the etcd lease TTL). The script starts its own
cluster (`minilog cluster up`: etcd and `--brokers` brokers in a temp dir,
perf/_cluster.py), creates a topic with one partition, replication factor 3
and min.insync.replicas=2, and runs a producer (acks=all, the client's
defaults otherwise) that sends one record every `--interval-ms` from its own
thread. Each round:

1. waits until the partition has a leader and a full ISR, and the producer
   has had `--warmup` records acknowledged since the previous round;
2. notes t_kill and sends SIGKILL to the leader's process (from the state
   file `cluster up` wrote);
3. waits for the first record *produced after t_kill* to be acknowledged:
   the old leader is dead, so that acknowledgement came from the new one;
   failover time = its acknowledgement time - t_kill;
4. restarts the killed broker (`minilog cluster up` on the same directory)
   and waits for it to rejoin the ISR before the next round (a broker that
   does not rejoin within a minute ends the run: `rejoined_isr` false).

Per round it reports the failover time, the old and new leader, and the
records that failed (retriable errors are retried by the client inside its
delivery timeout; a failure here is a record the client gave up on). The
resolution is `--interval-ms` (a record is sent that often).

Examples:
    python perf/failover_timer.py --json
    python perf/failover_timer.py --rounds 5 --broker-set broker.session.timeout.ms=3000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import _cluster as cl
import _common as c

MIN_INSYNC = 2
ROUND_TIMEOUT_S = 60.0   # kill -> acknowledged write, at most (then the round counts as failed)


class _Probe:
    """A producer thread: one record per interval; remembers when each record was sent and acked."""

    def __init__(self, bootstrap: str, topic: str, interval_s: float) -> None:
        import minilog

        self.topic = topic
        self.interval_s = interval_s
        self.producer = minilog.Producer(bootstrap, acks="all")
        self.lock = threading.Lock()
        self.sent_at: list[int] = []           # perf_counter_ns per record, by sequence number
        self.acked_at: dict[int, int] = {}     # sequence -> ack time (ns)
        self.failed: dict[int, str] = {}       # sequence -> error
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="failover-probe", daemon=True)

    def _callback(self, seq: int):
        def cb(err, report=None) -> None:
            now = time.perf_counter_ns()
            with self.lock:
                if err is None:
                    self.acked_at[seq] = now
                else:
                    self.failed[seq] = repr(err)
        return cb

    def _run(self) -> None:
        seq = 0
        next_due = time.perf_counter()
        while not self.stop.is_set():
            now = time.perf_counter()
            if next_due > now:
                time.sleep(next_due - now)
            with self.lock:
                self.sent_at.append(time.perf_counter_ns())
            self.producer.produce(self.topic, seq.to_bytes(8, "big"), partition=0,
                                  on_delivery=self._callback(seq))
            self.producer.poll(0)
            seq += 1
            next_due += self.interval_s

    def __enter__(self) -> _Probe:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        try:
            self.producer.flush(10)
        finally:
            self.producer.close()

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked_at)

    def first_ack_of_records_sent_after(self, t_ns: int) -> tuple[int, int] | None:
        """(sequence, ack time) of the earliest acknowledged record sent after `t_ns`."""
        with self.lock:
            seqs = [s for s, sent in enumerate(self.sent_at) if sent > t_ns and s in self.acked_at]
            if not seqs:
                return None
            seq = min(seqs, key=lambda s: self.acked_at[s])
            return seq, self.acked_at[seq]


def _partition(admin, topic: str):
    parts = admin.metadata().partitions.get(topic) or []
    return parts[0] if parts else None


def one_round(cluster: cl.LocalCluster, admin, probe: _Probe, topic: str, args: argparse.Namespace) -> dict:
    def healthy():
        p = _partition(admin, topic)
        return p if p is not None and p.leader >= 0 and len(p.isr) == 3 else None

    part = cl.wait_for(healthy, "a leader and a full ISR", ROUND_TIMEOUT_S, 0.05)
    base = probe.acked_count()
    cl.wait_for(lambda: probe.acked_count() >= base + args.warmup, "warm-up acknowledgements",
                ROUND_TIMEOUT_S, 0.01)
    failed_before = len(probe.failed)
    old_leader = part.leader
    t_kill = time.perf_counter_ns()
    cluster.kill(old_leader)
    try:
        seq, t_ack = cl.wait_for(lambda: probe.first_ack_of_records_sent_after(t_kill),
                                 "an acknowledged write after the kill", ROUND_TIMEOUT_S, 0.001)
    except RuntimeError:
        seq, t_ack = None, None
    new = _partition(admin, topic)
    cluster.restart()
    try:
        cl.wait_for(healthy, f"broker {old_leader} back in the ISR", ROUND_TIMEOUT_S, 0.05)
        rejoined = True
    except RuntimeError:
        rejoined = False
    return {"failover_s": None if t_ack is None else (t_ack - t_kill) / 1e9,
            "old_leader": old_leader, "new_leader": None if new is None else new.leader,
            "first_acked_sequence": seq, "failed_records": len(probe.failed) - failed_before,
            "rejoined_isr": rejoined}


def run(args: argparse.Namespace) -> dict:
    import minilog

    topic = f"failover-{int(time.time() * 1000) % 10**8}"
    result: dict = {"tool": "failover_timer", "brokers": 3, "rounds": args.rounds,
                    "interval_ms": args.interval_ms, "broker_settings": args.broker_set or "defaults",
                    "env": c.environment()}
    with cl.LocalCluster(3, args.broker_set) as cluster, minilog.Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, 1, 3, {"min.insync.replicas": str(MIN_INSYNC)})
        runs = []
        with _probe_for(cluster.bootstrap, topic, args) as probe:
            for i in range(args.rounds):
                if not args.no_progress:
                    c.stderr_console.print(f"[dim]round {i + 1}/{args.rounds}[/dim]")
                runs.append(one_round(cluster, admin, probe, topic, args))
                if not runs[-1]["rejoined_isr"]:
                    break    # the next round needs a full ISR; report what was measured
            first_error = next(iter(probe.failed.values()), None)
    times = [r["failover_s"] for r in runs if r["failover_s"] is not None]
    result["runs"] = {str(i + 1): r for i, r in enumerate(runs)}   # flattened by emit()
    result["failover_s"] = {"median": statistics.median(times) if times else None,
                            "max": max(times) if times else None, "count": len(times)}
    result["rounds_without_ack"] = len(runs) - len(times)
    if first_error:
        result["first_error"] = first_error
    result["goal_s"] = 2.0
    return result


def _probe_for(bootstrap: str, topic: str, args: argparse.Namespace) -> _Probe:
    return _Probe(bootstrap, topic, args.interval_ms / 1000)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="leader kills (the killed broker is restarted)")
    parser.add_argument("--interval-ms", type=float, default=5, help="one record this often (resolution)")
    parser.add_argument("--warmup", type=int, default=50, help="acks before each kill")
    parser.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                        help="`minilog serve --set` for every broker (repeatable); default: defaults")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no round lines on stderr")
    args = parser.parse_args(argv)
    c.emit(args, "minilog failover timer", run(args))


if __name__ == "__main__":
    main()
