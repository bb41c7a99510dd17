"""Consumer-group benchmarks: group consume throughput, rebalance time, coordinator load time.

    python perf/bench_groups.py [--records 600000] [--json] [--only throughput,rebalance,load]

Three measurements against a private `minilog serve` (or --bootstrap-server):

1. throughput: a 12-partition topic with `--records` 100-byte records; 1, 2
   and 4 member *processes* in a fresh group each consume it all (auto
   commit on). records/s = records / (last record - first record over all
   members); per member = its records / its own active span.
2. rebalance: 10 members (one process, one trio loop) on 100 partitions.
   join: from the 10th member's subscribe() to every partition owned again
   (on_assign ran) with the group stable. crash: one member stops
   heartbeating; from the moment the coordinator has removed it (seen
   through describe polling every 10 ms) to every partition owned again.
   Heartbeat interval and session timeout are printed with the figures: the
   survivors learn of a crash on their next heartbeat.
3. load: 1,000,000 partition commits (83,334 commit requests of 12
   partitions, as auto-commit of a 12-partition consumer writes them) are
   sent to a broker with one offsets partition; the broker is killed with
   SIGKILL and restarted; the coordinator's own log line gives the load time.
   Also the in-memory replay of 1,000,000 single-partition commit records
   (the worst case: one batch per partition commit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import BrokerProcess, emit, environment, split_address

GROUP_SETTINGS = ["group.min.session.timeout.ms=500", "group.consumer.heartbeat.interval.ms=500"]


# --------------------------------------------------------------------------- wire helpers

class Wire:
    """A pipelined raw protocol connection (perf only: no schema checks)."""

    def __init__(self, address: str) -> None:
        from minilog.protocol import FrameDecoder

        self.sock = socket.create_connection(split_address(address))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder("client")
        self.cid = 0

    def send(self, api_key, payload, attachments=()):
        from minilog.protocol import encode_request

        self.cid += 1
        self.sock.sendall(b"".join(bytes(p) for p in encode_request(
            api_key, 0, self.cid, "bench", payload, attachments)))

    def receive(self):
        while True:
            frame = self.decoder.next_frame()
            if isinstance(frame, tuple):
                return frame
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.decoder.feed(data)

    def request(self, api_key, payload, attachments=()):
        self.send(api_key, payload, attachments)
        return self.receive().payload


def create_topic(address, name, partitions):
    from minilog.protocol import ApiKey

    r = Wire(address).request(ApiKey.CREATE_TOPICS, {
        "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                    "configs": {}}], "timeout_ms": 10000, "validate_only": False})
    assert r["topics"][0]["error_code"] in (0, 36), r


def produce(address, topic, partitions, records, value_bytes=100, batch=1000):
    from minilog.protocol import ApiKey, build_batch

    w = Wire(address)
    value = b"v" * value_bytes
    per = records // partitions
    inflight = 0
    for p in range(partitions):
        for i in range(0, per, batch):
            b = build_batch([value] * min(batch, per - i))
            w.send(ApiKey.PRODUCE, {"acks": 1, "timeout_ms": 10000, "topics": [
                {"topic": topic, "partitions": [{"partition": p, "records": 0}]}]}, [b])
            inflight += 1
            if inflight >= 32:
                w.receive()
                inflight -= 1
    for _ in range(inflight):
        w.receive()
    return per * partitions


# --------------------------------------------------------------------------- 1. throughput

def member_main(address, group, topic, idle_s, session_ms=3000, forever=False, go_file=None):
    """Subprocess: join `group`; once `go_file` exists consume until idle; print
    {count, first, last}. Before the go file it polls with max_records=0, which
    runs the rebalance steps (revoke, assign) without taking records."""
    import trio

    from minilog.client.consumer import AsyncConsumer

    async def run():
        async with AsyncConsumer(address, group_id=group, auto_offset_reset="earliest",
                                 auto_commit_interval_ms=1000, session_timeout_ms=session_ms,
                                 partition_assignment_strategy="sticky",
                                 max_poll_records=5000) as c:
            await consume(c)

    async def consume(c):
        await c.subscribe([topic])
        while go_file and not os.path.exists(go_file):
            await c.poll(timeout_ms=20, max_records=0)
        count, first, last = 0, None, None
        idle_since = time.monotonic()
        while forever or time.monotonic() - idle_since < idle_s or count == 0:
            recs = await c.poll(timeout_ms=100)
            if recs:
                now = time.time()
                first = first or now
                last = now
                count += len(recs)
                idle_since = time.monotonic()
            elif count == 0 and not forever and time.monotonic() - idle_since > 60:
                break
        print(json.dumps({"count": count, "first": first, "last": last}), flush=True)
        os._exit(0)   # skip leaving the group: the measurement is done

    trio.run(run)


def bench_throughput(address, records):
    topic = "bench-groups"
    create_topic(address, topic, 12)
    t0 = time.perf_counter()
    n = produce(address, topic, 12, records)
    produce_s = time.perf_counter() - t0
    out = {"records": n, "partitions": 12, "value_bytes": 100,
           "produce_records_per_s": round(n / produce_s)}
    from minilog.protocol import ApiKey

    for members in (1, 2, 4):
        go_file = tempfile.mktemp(prefix="minilog-bench-go-")
        group = f"tp-{members}"
        procs = [subprocess.Popen([sys.executable, __file__, "--member", address, group, topic,
                                   "--go", go_file], stdout=subprocess.PIPE)
                 for _ in range(members)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:       # everyone joined and the group is stable
            g = Wire(address).request(ApiKey.CONSUMER_GROUP_DESCRIBE, {"group_ids": [group]})
            g = g["groups"][0]
            if g["group_state"] == "stable" and len(g["members"]) == members:
                break
            time.sleep(0.05)
        t_go = time.time()
        open(go_file, "w").close()
        results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
        os.unlink(go_file)
        total = sum(r["count"] for r in results)
        span = max(r["last"] for r in results if r["last"]) - t_go
        out[f"members_{members}"] = {
            "records_consumed": total,
            "records_per_s": round(total / span) if span > 0 else None,
            "per_member_records_per_s": [round(r["count"] / (r["last"] - r["first"]))
                                         if r["last"] and r["last"] > r["first"] else None
                                         for r in results],
            "per_member_records": [r["count"] for r in results],
        }
    return out


# --------------------------------------------------------------------------- 2. rebalance

def bench_rebalance(address, members=10, partitions=100, session_ms=3000):
    import trio

    from minilog.client.consumer import AsyncConsumer
    from minilog.protocol import ApiKey

    topic = "bench-rebalance"
    create_topic(address, topic, partitions)
    produce(address, topic, partitions, partitions * 10)
    owner: dict = {}

    def on_assign(name):
        return lambda parts: [owner.__setitem__(tp, name) for tp in parts]

    def on_revoke(name):
        return lambda parts: [owner.pop(tp, None) for tp in parts if owner.get(tp) == name]

    def describe():
        g = Wire(address).request(ApiKey.CONSUMER_GROUP_DESCRIBE, {"group_ids": ["rb"]})
        return g["groups"][0]

    async def member(name, consumers, stop):
        async with AsyncConsumer(address, group_id="rb", auto_offset_reset="earliest",
                                 session_timeout_ms=session_ms, auto_commit_interval_ms=1000) as c:
            consumers[name] = c
            await c.subscribe([topic], on_assign=on_assign(name), on_revoke=on_revoke(name))
            while not stop.is_set():
                await c.poll(timeout_ms=20)

    async def complete(expected_members):
        if len(owner) != partitions - len(victim_parts):
            return False
        g = await trio.to_thread.run_sync(describe)
        return g["group_state"] == "stable" and len(g["members"]) == expected_members

    async def wait(pred, timeout_s=60):
        with trio.fail_after(timeout_s):
            while not await pred():
                await trio.sleep(0.01)
        return time.perf_counter()

    result = {"members": members, "partitions": partitions, "session_timeout_ms": session_ms,
              "heartbeat_interval_ms": 500}
    victim_parts: set = set()

    async def run():
        consumers: dict = {}
        stop = trio.Event()
        # The victim is a separate process (SIGKILLed below); it owns its share
        # but does not report on_assign here, so count partitions it holds via describe.
        victim = subprocess.Popen([sys.executable, __file__, "--member", address, "rb", topic,
                                   "--session-ms", str(session_ms), "--forever"],
                                  stdout=subprocess.DEVNULL)
        try:
            async with trio.open_nursery() as nursery:
                for i in range(members - 2):
                    nursery.start_soon(member, f"m{i}", consumers, stop)

                async def victim_share():
                    g = await trio.to_thread.run_sync(describe)
                    own = {(a["topic"], p) for m in g["members"] for a in m["assignment"]
                           for p in a["partitions"]}
                    victim_parts.clear()
                    victim_parts.update(own - set(owner))
                    return await complete(members - 1)

                await wait(victim_share)
                t0 = time.perf_counter()
                nursery.start_soon(member, f"m{members - 2}", consumers, stop)

                async def joined():
                    g = await trio.to_thread.run_sync(describe)
                    own = {(a["topic"], p) for m in g["members"] for a in m["assignment"]
                           for p in a["partitions"]}
                    victim_parts.clear()
                    victim_parts.update(own - set(owner))
                    return await complete(members)

                t1 = await wait(joined)
                result["join_to_all_owned_s"] = round(t1 - t0, 3)
                t_kill = time.perf_counter()
                victim.kill()

                async def detected():
                    g = await trio.to_thread.run_sync(describe)
                    return len(g["members"]) == members - 1

                t_detect = await wait(detected)
                victim_parts.clear()
                t2 = await wait(lambda: complete(members - 1))
                result["crash_detected_after_s"] = round(t_detect - t_kill, 3)
                result["detection_to_all_owned_s"] = round(t2 - t_detect, 3)
                stop.set()
                nursery.cancel_scope.cancel()
        finally:
            victim.kill()
            victim.wait()

    trio.run(run)
    return result


# --------------------------------------------------------------------------- 3. load

def bench_load(commits=1_000_000, per_request=12):
    from minilog.broker.groups._offsets import OffsetStore, encode_commit
    from minilog.protocol import ApiKey

    out = {}
    data_dir = tempfile.mkdtemp(prefix="minilog-bench-load-")
    settings = GROUP_SETTINGS + ["offsets.topic.num.partitions=1"]
    broker = BrokerProcess(data_dir, settings)
    with broker:
        create_topic(broker.address, "load", per_request)
        w = Wire(broker.address)
        requests = commits // per_request
        t0 = time.perf_counter()
        inflight = 0
        for i in range(requests):
            w.send(ApiKey.OFFSET_COMMIT, {"group_id": "load-group", "member_id": "",
                                          "member_epoch": -1, "topics": [{
                                              "topic": "load", "partitions": [
                                                  {"partition": p, "committed_offset": i,
                                                   "committed_leader_epoch": -1,
                                                   "committed_metadata": None}
                                                  for p in range(per_request)]}]})
            inflight += 1
            if inflight >= 256:
                w.receive()
                inflight -= 1
        for _ in range(inflight):
            w.receive()
        out["commit_requests"] = requests
        out["partition_commits"] = requests * per_request
        out["commit_requests_per_s"] = round(requests / (time.perf_counter() - t0))
        broker.proc.kill()
        broker.proc.wait()
    broker2 = BrokerProcess(data_dir, settings)
    with broker2:
        deadline = time.monotonic() + 30
        line = None
        while time.monotonic() < deadline and line is None:
            for text in list(broker2._lines):
                if "group coordinator loaded" in text:
                    line = text
            time.sleep(0.05)
        m = re.search(r"loaded (\d+) records .* in ([\d.]+) s", line or "")
        out["restart_load_records"] = int(m.group(1)) if m else None
        out["restart_load_s"] = float(m.group(2)) if m else None
        r = Wire(broker2.address).request(ApiKey.OFFSET_FETCH, {
            "group_id": "load-group", "member_id": None, "member_epoch": -1, "topics": None})
        offsets = {q["committed_offset"] for t in r["topics"] for q in t["partitions"]}
        out["offsets_after_restart_exact"] = offsets == {requests - 1}
    # Worst case, in memory: one record batch per partition commit.
    buf = b"".join(encode_commit("g", [("t", i % 12, i, -1, None)], 1_700_000_000_000 + i)
                   for i in range(commits))
    t0 = time.perf_counter()
    store = OffsetStore()
    store.load([buf])
    out["in_memory_single_partition_commits"] = commits
    out["in_memory_single_partition_load_s"] = round(time.perf_counter() - t0, 3)
    buf = b"".join(encode_commit("g", [("t", p, i, -1, None) for p in range(12)],
                                 1_700_000_000_000 + i) for i in range(commits // 12))
    t0 = time.perf_counter()
    OffsetStore().load([buf])
    out["in_memory_12_partition_requests_load_s"] = round(time.perf_counter() - t0, 3)
    return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--member":
        session_ms = int(sys.argv[sys.argv.index("--session-ms") + 1]) \
            if "--session-ms" in sys.argv else 3000
        go_file = sys.argv[sys.argv.index("--go") + 1] if "--go" in sys.argv else None
        member_main(sys.argv[2], sys.argv[3], sys.argv[4], idle_s=2.0, session_ms=session_ms,
                    forever="--forever" in sys.argv, go_file=go_file)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_200_000)
    ap.add_argument("--commits", type=int, default=1_000_000)
    ap.add_argument("--only", default="throughput,rebalance,load")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    result = {"environment": environment()}
    if only & {"throughput", "rebalance"}:
        with BrokerProcess(None, GROUP_SETTINGS) as broker:
            if "throughput" in only:
                result["throughput"] = bench_throughput(broker.address, args.records)
            if "rebalance" in only:
                result["rebalance"] = bench_rebalance(broker.address)
    if "load" in only:
        result["load"] = bench_load(args.commits)
    emit(args, "consumer groups", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
