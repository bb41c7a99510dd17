"""Issue 8's broker items, each against a real `minilog serve` over real sockets:
hostile or unlucky clients get clear errors and the broker keeps serving the others."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct

import pytest

from minilog.protocol import ApiKey, ErrorCode, build_batch, encode_request

from conftest import RawClient, fetch_payload, produce_payload, wait_until


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): the abrupt disconnect of a killed client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_issue_8_item_7_abrupt_disconnects_are_debug_lines(broker_factory):
    """Clients reset mid-request and while a large answer is being sent: one DEBUG line
    each, no ERROR, no traceback, and the broker serves on."""
    b = broker_factory("--log-level", "DEBUG")
    c = b.client()
    assert c.create_topic("t") == 0
    for _ in range(8):
        assert c.produce("t", 0, build_batch([os.urandom(400_000)]))["error_code"] == 0
    frame = b"".join(bytes(p) for p in encode_request(
        ApiKey.PRODUCE, 0, 1, "x", produce_payload("t", 0), [build_batch([b"v"] * 100)]))

    mid_request = b.client()                   # accepted: it has had an answer
    mid_request.fetch("t", 0, 0, max_bytes=1)
    mid_request.sock.sendall(frame[: len(frame) // 2])
    _reset(mid_request.sock)

    mid_answer = b.client()                    # 4 x 3.2 MB of answers asked, 1 byte read
    mid_answer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(4):
        mid_answer.send(ApiKey.FETCH, fetch_payload("t", 0, 0, max_bytes=8 << 20))
    assert mid_answer.sock.recv(1)
    _reset(mid_answer.sock)

    wait_until(lambda: b.logs().count("closed: ") >= 2 or "failed" in b.logs(),
               "the broker noticed both resets", timeout_s=20)
    logs = b.logs()
    assert "Traceback" not in logs and "ERROR" not in logs, logs[-5000:]
    assert c.produce("t", 0, build_batch([b"ok"]))["base_offset"] == 8


def test_issue_8_item_4_an_attachment_is_used_at_most_once(broker):
    """A produce whose partition entries all name one attachment is INVALID_REQUEST, writes
    nothing, and leaves the connection usable; distinct attachments are accepted."""
    c = broker.client()
    assert c.create_topic("t", 3) == 0
    batch = build_batch([b"x" * 1000] * 10)
    amplifying = {"acks": -1, "timeout_ms": 5000, "topics": [
        {"topic": "t", "partitions": [{"partition": p, "records": 0} for p in (0, 1, 2, 0)]}]}
    c.send(ApiKey.PRODUCE, amplifying, [batch])
    r = c.receive(check_schema=False)
    assert r.payload["error_code"] == ErrorCode.INVALID_REQUEST, r.payload
    assert "attachment 0" in r.payload["error_message"]
    for p in range(3):
        assert c.fetch("t", p, 0)[0]["high_watermark"] == 0
    distinct = {"acks": -1, "timeout_ms": 5000, "topics": [
        {"topic": "t", "partitions": [{"partition": p, "records": p} for p in range(3)]}]}
    r = c.request(ApiKey.PRODUCE, distinct, [batch, batch, batch])
    assert [p["error_code"] for p in r.payload["topics"][0]["partitions"]] == [0, 0, 0]
    assert [c.fetch("t", p, 0)[0]["high_watermark"] for p in range(3)] == [10, 10, 10]


def test_issue_8_item_1_longest_topic_names_delete_and_survive_restart(broker):
    """Topics with names of the longest legal lengths are created, deleted and re-created;
    an orphan directory with such a name (a crash mid-deletion) does not stop a restart."""
    names = ["a" * 249, "b" * 214, "c" * 230]
    c = broker.client()
    for name in names:
        assert c.create_topic(name, 3) == 0
        assert c.produce(name, 2, build_batch([b"v"]))["error_code"] == 0
    r = c.request(ApiKey.DELETE_TOPICS, {"topics": names[:2], "timeout_ms": 5000})
    assert [t["error_code"] for t in r.payload["topics"]] == [0, 0], r.payload
    left = sorted(os.listdir(broker.data_dir))
    assert not [d for d in left if d.startswith(("a" * 249, "b" * 214))], left
    os.mkdir(os.path.join(broker.data_dir, "d" * 249 + "-0"))      # no topic names it
    c.close()
    assert broker.stop() == 0
    broker.start()
    wait_until(lambda: not os.path.exists(os.path.join(broker.data_dir, "d" * 249 + "-0")),
               "the orphan directory is removed at start")
    c = broker.client()
    assert c.fetch(names[2], 2, 0)[0]["high_watermark"] == 1
    assert c.create_topic(names[0], 1) == 0
    assert c.fetch(names[0], 0, 0)[0]["high_watermark"] == 0
    assert "ERROR" not in broker.logs()


def _start_with_fd_limit(broker_factory, limit: int):
    """A broker whose RLIMIT_NOFILE soft limit is `limit` (inherited from this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        return broker_factory()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fds(b) -> int:
    return len(os.listdir(f"/proc/{b.proc.pid}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_issue_8_item_2_creation_beyond_the_descriptor_budget_is_refused(broker_factory):
    """With RLIMIT_NOFILE 1024, 2,000 partitions are refused up front with a reason; nothing
    leaks, and creations and connections go on working."""
    b = _start_with_fd_limit(broker_factory, 1024)
    c = b.client()
    before = _fds(b)
    r = c.request(ApiKey.CREATE_TOPICS, {"topics": [
        {"name": "big", "num_partitions": 2000, "replication_factor": 1, "configs": {}}],
        "timeout_ms": 5000, "validate_only": False})
    t = r.payload["topics"][0]
    assert t["error_code"] == ErrorCode.RESOURCE_LIMIT_EXCEEDED, t
    assert "file descriptors" in t["error_message"] and "RLIMIT_NOFILE 1024" in t["error_message"]
    assert _fds(b) < before + 20                   # a leak was ~950
    assert not [d for d in os.listdir(b.data_dir) if d.startswith("big-")]
    assert c.create_topic("small", 100) == 0
    others = [b.client() for _ in range(20)]
    assert all(o.produce("small", i, build_batch([b"v"]))["error_code"] == 0
               for i, o in enumerate(others))


def test_issue_8_item_2_a_failed_creation_is_undone(broker):
    """A creation failing at partition 5 of 10 closes partitions 0-4 and removes their
    directories: a retry after the obstacle is gone succeeds with empty partitions."""
    obstacle = os.path.join(broker.data_dir, "t-5")
    with open(obstacle, "w") as f:                   # a file where partition 5's dir goes
        f.write("not a directory")
    c = broker.client()
    before = _fds(broker)
    code = c.create_topic("t", 10)
    assert code == ErrorCode.KAFKA_STORAGE_ERROR
    assert sorted(d for d in os.listdir(broker.data_dir) if d.startswith("t-")) == ["t-5"]
    assert _fds(broker) < before + 20
    assert c.produce("t", 0, build_batch([b"v"]))["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    os.remove(obstacle)
    assert c.create_topic("t", 10) == 0
    assert [c.fetch("t", p, 0)[0]["high_watermark"] for p in range(10)] == [0] * 10


def test_issue_8_item_3_other_clients_are_served_while_topics_are_created(broker_factory):
    """A Metadata request auto-creating 2,000 topics runs off the event loop with one
    metadata write: another client's produce is answered before that request's answer,
    every topic exists afterwards, and one request may create at most 10,000 partitions."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("2,000 partitions need RLIMIT_NOFILE >= 4096 (the descriptor budget)")
    broker = _start_with_fd_limit(broker_factory, 8192)
    c = broker.client()
    assert c.create_topic("t") == 0
    names = [f"auto-{i:04d}" for i in range(2000)]
    creator = broker.client()
    creator.sock.settimeout(300)                 # 2,000 topics take a while under load
    creator.send(ApiKey.METADATA, {"topics": names, "allow_auto_topic_creation": True})
    wait_until(lambda: any(d.startswith("auto-") for d in os.listdir(broker.data_dir)),
               "the creation started")
    c.send(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"during"])])
    ready = select.select([c.sock, creator.sock], [], [], 60)[0]
    assert ready == [c.sock], "the produce was not answered while the topics were created"
    assert c.receive().payload["topics"][0]["partitions"][0]["error_code"] == 0
    r = creator.receive()
    assert [t["error_code"] for t in r.payload["topics"]] == [0] * 2000
    assert all(len(t["partitions"]) == 1 for t in r.payload["topics"])
    with open(os.path.join(broker.data_dir, "topics.json")) as f:
        assert set(names) <= set(json.load(f)["topics"])

    r = c.request(ApiKey.CREATE_TOPICS, {"topics": [
        {"name": f"wide-{i}", "num_partitions": 6000, "replication_factor": 1, "configs": {}}
        for i in range(2)], "timeout_ms": 5000, "validate_only": True})
    assert [t["error_code"] for t in r.payload["topics"]] == [0, ErrorCode.RESOURCE_LIMIT_EXCEEDED]
    assert "at most 10000 partitions" in r.payload["topics"][1]["error_message"]


def _served(client) -> bool:
    """The broker answers this client (an ApiVersions round trip)."""
    try:
        client.request(ApiKey.API_VERSIONS, {})
        return True
    except (ConnectionError, OSError):
        return False


def _served_client(b) -> RawClient:
    """A client the broker has accepted and answered (retried while the start-up probe's
    connection, closed by `BrokerProcess.start`, may still hold a slot)."""
    def attempt():
        c = b.client()
        if _served(c):
            return c
        c.close()
        return None
    return wait_until(attempt, "a client is served")


def test_issue_8_item_6_connections_per_address(broker_factory):
    """max.connections.per.ip: the sixth socket from one address is closed at once; another
    address is still served, and a freed slot can be taken again."""
    b = broker_factory("--set", "max.connections.per.ip=5")
    mine = [_served_client(b) for _ in range(5)]
    sixth = RawClient(b.host, b.port)
    assert sixth.is_closed_by_peer()
    other = socket.socket()
    other.bind(("127.0.0.2", 0))
    other.connect((b.host, b.port))
    from_elsewhere = RawClient(b.host, b.port)      # its socket is swapped for the bound one
    from_elsewhere.sock.close()
    from_elsewhere.sock = other
    assert _served(from_elsewhere)
    mine.pop().close()
    wait_until(lambda: _served(RawClient(b.host, b.port)), "a freed slot is taken again")


def test_issue_8_item_6_a_request_must_arrive_whole_in_time(broker_factory):
    """A client dripping one byte at a time is never idle, yet is closed once its request
    has not arrived whole within request.arrival.timeout.ms; others are served throughout."""
    b = broker_factory("--set", "request.arrival.timeout.ms=1000",
                       "--set", "connections.max.idle.ms=500")
    frame = b"".join(bytes(p) for p in encode_request(      # longer than the drip lasts
        ApiKey.PRODUCE, 0, 1, "x", produce_payload("t", 0), [build_batch([b"v" * 10_000])]))
    drip = b.client()
    assert _served(drip)
    closed = False
    for i in range(400):                    # paced by the 50 ms read below, ~20 s at most
        try:
            drip.sock.send(frame[i: i + 1])
        except OSError:
            closed = True
            break
        if drip.is_closed_by_peer(timeout_s=0.05):
            closed = True
            break
    assert closed, "a client dripping bytes was never closed"
    assert "did not arrive within 1 s" in b.logs()
    assert _served(b.client())


def test_issue_8_item_6_idle_sockets_leave_slots_for_new_clients(broker_factory):
    """At max.connections a new client takes the slot of the longest-idle connection;
    connections with a request in flight are never the ones evicted."""
    b = broker_factory("--set", "max.connections=5")
    idle = [_served_client(b) for _ in range(5)]
    newcomer = b.client()
    assert _served(newcomer)
    wait_until(lambda: idle[0].is_closed_by_peer(timeout_s=0.1), "the longest-idle one went")
    assert all(_served(c) for c in idle[1:])
