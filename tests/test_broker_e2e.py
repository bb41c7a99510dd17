"""End to end against a real `minilog serve` process: produce, fetch, long poll,
restarts (clean and kill -9), SIGTERM, and the `serve` flags."""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import time

import pytest

from minilog.protocol import ApiKey, build_batch, decode_records

from conftest import _SERVE, fetch_payload


def _values(data: bytes, topic: str = "t", partition: int = 0, min_offset: int = 0):
    return [(r.offset, r.value) for r in decode_records(data, topic, partition, min_offset=min_offset)]


def test_produce_fetch_round_trip(broker):
    """Batches produced with acks=1 and acks=all come back byte-identical, at dense offsets."""
    c = broker.client()
    assert c.create_topic("t", 3) == 0
    b1 = build_batch([b"a", b"b", b"c"], keys=[b"k1", None, b"k3"])
    b2 = build_batch([b"d"])
    r1 = c.produce("t", 1, b1, acks=1)
    r2 = c.produce("t", 1, b2, acks=-1)
    assert (r1["error_code"], r1["base_offset"]) == (0, 0)
    assert (r2["error_code"], r2["base_offset"]) == (0, 3)
    p, data = c.fetch("t", 1, 0)
    assert p["error_code"] == 0 and p["high_watermark"] == 4 and p["log_start_offset"] == 0
    assert _values(data, partition=1) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
    assert len(data) == len(b1) + len(b2)
    assert data[8:12] == b1[8:12] and data[len(b1) + 21:] == b2[21:]   # bytes after the CRC untouched
    p, data = c.fetch("t", 1, 3)
    assert _values(data, partition=1, min_offset=3) == [(3, b"d")]
    p, data = c.fetch("t", 1, 4)                       # at the log end: empty, no error
    assert p["error_code"] == 0 and data == b""
    assert c.list_offset("t", 1, -2)["offset"] == 0
    assert c.list_offset("t", 1, -1)["offset"] == 4


def test_pipelined_requests_answered_in_order(broker):
    """200 produces sent before reading anything are all answered, in request order."""
    c = broker.client()
    c.create_topic("t")
    batch = build_batch([b"x" * 100] * 10)
    ids = [c.send(ApiKey.PRODUCE, {"acks": 1, "timeout_ms": 1000, "topics": [
        {"topic": "t", "partitions": [{"partition": 0, "records": 0}]}]}, [batch]) for _ in range(200)]
    got = []
    for _ in ids:
        frame = c.receive()
        got.append((frame.correlation_id, frame.payload["topics"][0]["partitions"][0]["base_offset"]))
    assert got == [(cid, i * 10) for i, cid in enumerate(ids)]


def test_long_poll_fetch_wakes_when_data_arrives(broker):
    """A fetch that may wait 30 s is answered, with the data, once another client produces.

    The answer has to come from the produce: the fetch waits up to fetch.max.wait.ms (30 s)
    and the client gives up reading after 10 s, so a fetch that only returned at its deadline
    fails the test with a timeout; no time is measured."""
    c, producer = broker.client(), broker.client()
    c.create_topic("t")
    c.send(ApiKey.FETCH, fetch_payload("t", 0, 0, max_wait_ms=30_000, min_bytes=1))
    # The fetch is parked: no answer within 200 ms (a checked condition, not a bare sleep).
    readable, _, _ = select.select([c.sock], [], [], 0.2)
    assert not readable
    producer.produce("t", 0, build_batch([b"wake"]))
    c.sock.settimeout(10)
    frame = c.receive()
    p = frame.payload["topics"][0]["partitions"][0]
    assert _values(bytes(frame.attachments[p["records"]])) == [(0, b"wake")]


def test_long_poll_fetch_times_out_empty(broker):
    """With no data, a fetch waits (at least) max_wait_ms and returns empty.

    Only the lower bound is checked, which load cannot break; the upper one is the client's
    10 s read deadline (a fetch that never returned fails with a timeout)."""
    c = broker.client()
    c.create_topic("t")
    c.sock.settimeout(10)
    started = time.monotonic()
    p, data = c.fetch("t", 0, 0, max_wait_ms=300, min_bytes=1)
    waited_s = time.monotonic() - started
    assert p["error_code"] == 0 and data == b"" and waited_s >= 0.25


def _fill(c, topic="t", partitions=2, batches=5):
    expected = {}
    for p in range(partitions):
        for i in range(batches):
            r = c.produce(topic, p, build_batch([f"{p}-{i}-{j}".encode() for j in range(3)]))
            assert r["error_code"] == 0
        _, data = c.fetch(topic, p, 0)
        expected[p] = _values(data, topic, p)
    return expected


def _read_all(c, topic="t", partitions=2):
    return {p: _values(c.fetch(topic, p, 0)[1], topic, p) for p in range(partitions)}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_topics_and_data_survive_restart(broker, how):
    """After a clean stop or kill -9 the broker serves the same topics, offsets and data."""
    c = broker.client()
    assert c.create_topic("t", 2, {"retention.ms": "3600000"}) == 0
    expected = _fill(c)
    c.close()
    if how == "sigterm":
        assert broker.stop(signal.SIGTERM) == 0
    else:
        broker.kill()
    broker.start()
    c = broker.client()
    meta = c.request(ApiKey.METADATA, {"topics": ["t"], "allow_auto_topic_creation": False}).payload
    assert len(meta["topics"][0]["partitions"]) == 2
    assert _read_all(c) == expected
    r = c.produce("t", 0, build_batch([b"after"]))
    assert r["base_offset"] == 15
    cfg = c.request(ApiKey.DESCRIBE_CONFIGS, {"resources": [
        {"resource_type": 2, "resource_name": "t", "config_names": ["retention.ms"]}]}).payload
    assert cfg["results"][0]["configs"][0]["value"] == "3600000"


def test_sigterm_exits_zero_with_clean_shutdown_marker(broker):
    """SIGTERM: exit code 0, every partition dir has the clean-shutdown marker."""
    c = broker.client()
    c.create_topic("t", 2)
    c.produce("t", 0, build_batch([b"x"]))
    assert broker.stop(signal.SIGTERM) == 0
    for p in range(2):
        assert os.path.exists(os.path.join(broker.data_dir, f"t-{p}", ".clean-shutdown"))
    assert "stopped" in broker.logs()


def test_sigint_exits_zero(broker):
    """Ctrl-C stops the broker cleanly too."""
    assert broker.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("args, needle", [
    (["--set", "no.such.key=1"], "no.such.key"),
    (["--set", "log.retention.ms=abc"], "log.retention.ms"),
    (["--set", "num.partitions=0"], "num.partitions"),
    (["--set", "novalue"], "KEY=VALUE"),
    (["--port", "70000"], "--port"),
    (["--bogus-flag"], "bogus"),
    (["--config", "/nonexistent/file.toml"], "file.toml"),
])
def test_bad_serve_flags_one_line_error(tmp_path, args, needle):
    """A bad flag or setting: one line on stderr, exit code 2, no traceback, no data dir."""
    out = subprocess.run([*_SERVE, "--data-dir", str(tmp_path / "d"), "--port", "0", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_config_file_and_set_precedence(broker_factory, tmp_path):
    """--config TOML (nested tables) sets broker keys; --set wins over it."""
    path = tmp_path / "broker.toml"
    path.write_text('num.partitions = 2\n[log.retention]\nms = 1234567\n')
    b = broker_factory("--config", str(path), "--set", "num.partitions=3")
    c = b.client()
    meta = c.request(ApiKey.METADATA, {"topics": ["auto"], "allow_auto_topic_creation": True}).payload
    assert len(meta["topics"][0]["partitions"]) == 3
    cfg = c.request(ApiKey.DESCRIBE_CONFIGS, {"resources": [
        {"resource_type": 2, "resource_name": "auto", "config_names": ["retention.ms"]}]}).payload
    entry = cfg["results"][0]["configs"][0]
    assert entry["value"] == "1234567" and entry["source"] == "STATIC_BROKER_CONFIG"


def test_second_broker_on_same_data_dir_refused(broker, tmp_path):
    """The data dir is locked: a second broker exits 1 with one line instead of sharing it."""
    out = subprocess.run([*_SERVE, "--data-dir", broker.data_dir, "--port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "in use" in out.stderr


def test_port_in_use_exits_one_with_one_line(broker, tmp_path):
    """Binding a port another broker holds fails with one stderr line and exit code 1."""
    out = subprocess.run([*_SERVE, "--data-dir", str(tmp_path / "other"), "--port", str(broker.port)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and "minilog serve: error:" in out.stderr


@pytest.mark.parametrize("acks", [1, "all"])
def test_sigkill_mid_stream_loses_no_acked_record(broker, acks):
    """Issue 3: SIGKILL the broker while a producer streams into it, restart it on the
    same data dir: every acked (partition, offset, value) is there at that offset,
    offsets are dense from 0 without duplicates, and the producer failed every
    record it could not deliver with a typed error instead of hanging."""
    import threading

    import minilog
    from minilog.errors import MinilogError

    topic, partitions, kill_after, after_kill = "durable", 4, 3000, 2000
    pad = b"." * 1000            # the broker does real I/O: the kill finds data in flight
    c = broker.client()
    assert c.create_topic(topic, partitions) == 0
    c.close()

    acked: dict[bytes, tuple[int, int]] = {}     # value -> (partition, offset)
    failed: dict[bytes, BaseException] = {}
    reported_twice: list = []
    lock = threading.Lock()
    enough = threading.Event()

    def on_delivery(err, report):
        with lock:
            if report.value in acked or report.value in failed:
                reported_twice.append((report, err))
            elif err is None:
                acked[report.value] = (report.partition, report.offset)
                if len(acked) >= kill_after:
                    enough.set()
            else:
                failed[report.value] = err

    killed = threading.Event()
    at_kill: list[tuple[int, int]] = []     # (records produced, acks served) when killed
    progress = [0]

    def killer():               # kills at an arbitrary moment of the producer's stream
        if enough.wait(30):
            with lock:
                at_kill.append((progress[0], len(acked)))
            os.kill(broker.proc.pid, signal.SIGKILL)
            broker.proc.wait()
            killed.set()

    killer_thread = threading.Thread(target=killer, daemon=True)
    producer = minilog.Producer(broker.bootstrap, acks=acks, linger_ms=1, batch_size=4096,
                                delivery_timeout_ms=3000, request_timeout_ms=2000,
                                retry_backoff_ms=50)
    produced, killed_at = 0, None
    try:
        killer_thread.start()
        deadline = time.monotonic() + 30
        while killed_at is None or produced < killed_at + after_kill:
            producer.produce(topic, b"v%08d" % produced + pad, partition=produced % partitions,
                             on_delivery=on_delivery)
            produced += 1
            progress[0] = produced
            if killed_at is None and killed.is_set():
                killed_at = produced
            assert time.monotonic() < deadline, f"only {len(acked)} acked of {produced} produced"
        remaining = producer.flush(10)     # what is left when flush's own 10 s ran out
    finally:
        enough.set()             # the killer never waits past a failed test
        # close(timeout=5) returns once its flush gave up and the loop thread ended; the
        # 60 s join is a deadline for a hang, not a measurement.
        closer = threading.Thread(target=producer.close, kwargs={"timeout": 5}, daemon=True)
        closer.start()
        closer.join(60)
        killer_thread.join(5)
    # The producer failed what it could not deliver, with typed errors, and did not hang.
    assert remaining == 0 and not closer.is_alive(), remaining
    assert not reported_twice, reported_twice[:3]
    assert len(acked) + len(failed) == produced, (len(acked), len(failed), produced)
    assert failed, "records produced after the kill cannot all have been acked"
    untyped = [e for e in failed.values() if not isinstance(e, MinilogError)]
    assert not untyped, untyped[:3]
    seen_offsets = collections.Counter(acked.values())
    assert max(seen_offsets.values()) == 1, "two acked records were given one offset"

    broker.start()               # same data dir, new free port
    with minilog.Consumer(broker.bootstrap, auto_offset_reset="earliest",
                          max_poll_records=5000) as consumer:
        tps = [(topic, p) for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        consumer.assign([(topic, p, 0) for p in range(partitions)])
        stored: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 20
        while any(consumer.position(topic, p) < ends[(topic, p)] for p in range(partitions)):
            for r in consumer.poll(timeout_ms=500):
                stored[r.partition].append((r.offset, r.value))
            assert time.monotonic() < deadline, {p: len(v) for p, v in stored.items()}
    summary = (f"acks={acks}: (produced, acks served) at the kill {at_kill}; produced "
               f"{produced}, acked {len(acked)}, failed {len(failed)}, errors "
               f"{dict(collections.Counter(type(e).__name__ for e in failed.values()))}")
    by_value: dict[bytes, tuple[int, int]] = {}
    for p, records in stored.items():
        offsets = [o for o, _ in records]
        assert offsets == list(range(ends[(topic, p)])), f"partition {p}: offsets not dense; {summary}"
        for o, v in records:
            assert v not in by_value, f"{v[:9]!r} stored twice: {by_value[v]} and {(p, o)}"
            by_value[v] = (p, o)
    missing = sorted((v[:9], po, by_value.get(v)) for v, po in acked.items() if by_value.get(v) != po)
    unacked_present = sum(1 for v in by_value if v not in acked)
    foreign = [v[:9] for v in by_value if v not in acked and v not in failed]
    summary += f"; stored {len(by_value)}, not acked but stored {unacked_present}"
    assert not missing, (f"{len(missing)} acked records lost or moved, e.g. (value, acked at, "
                         f"stored at) {missing[:5]}; {summary}")
    assert not foreign, f"records nobody produced: {foreign[:5]}; {summary}"
    print(summary)
