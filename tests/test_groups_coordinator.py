"""GroupCoordinator and GroupMembership together in one trio run on a fake
broker, driven by MockClock (autojump): heartbeats, session and rebalance
timeouts, auto-commit timing, reload after restart. Never sleeps for real."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import trio

from minilog.broker._services import RequestContext
from minilog.broker.groups import OFFSETS_TOPIC, CoordinatorConfig, GroupCoordinator
from minilog.broker.handlers import HANDLERS
from minilog.broker.groups import group_partition, java_string_hash
from minilog.client._membership import GroupMembership
from minilog.protocol import decode_request, encode_response_payload


class FakePartition:
    """The slice of broker.Partition the coordinator uses, in memory."""

    def __init__(self):
        self.batches: list[bytes] = []
        self.log_start_offset = 0
        self.log_end_offset = 0

    async def append(self, batch, acks=-1):
        struct.pack_into(">q", batch, 0, self.log_end_offset)   # stamp the base offset
        count = struct.unpack_from(">i", batch, 57)[0]
        self.batches.append((self.log_end_offset, bytes(batch)))
        self.log_end_offset += max(count, 1)

    async def wait_idle(self):
        pass

    def read(self, offset, max_bytes, max_offset=None):
        return b"".join(b for base, b in self.batches if base >= offset)


class FakeBroker:
    broker_id, host, port = 0, "127.0.0.1", 9092

    def __init__(self, topics, offsets_partitions=3):
        self.topics = dict(topics)
        self.offsets = {p: FakePartition() for p in range(offsets_partitions)}

    def partition(self, topic, p):
        return self.offsets.get(p) if topic == OFFSETS_TOPIC else None

    def topic_metadata(self, name):
        n = self.topics.get(name)
        return SimpleNamespace(partitions=n) if n else None


class FakeCluster:
    """Routes the membership's requests straight to the coordinator's handlers."""

    def __init__(self, coordinator):
        self.coordinator = coordinator
        self.down = False

    async def request(self, node, api_key, payload, attachments=()):
        if self.down:
            from minilog.errors import BrokerUnavailableError
            raise BrokerUnavailableError("down")
        await trio.lowlevel.checkpoint()
        # Through the native codec's request model and the broker's group handlers,
        # as a real request goes (minus the socket).
        request = decode_request(api_key, 0, payload, [])
        services = SimpleNamespace(groups=self.coordinator, broker_id=0)
        response = await HANDLERS[type(request)](services, request, RequestContext(1, "test", 0))
        payload, _ = encode_response_payload(api_key, response)
        return SimpleNamespace(payload=payload)

    async def request_any(self, api_key, payload, attachments=()):
        return await self.request(None, api_key, payload)


class DirectMembership(GroupMembership):
    """GroupMembership whose coordinator connection is the FakeCluster itself."""

    async def _coordinator_conn(self):
        self._coordinator = 0
        cluster = self._hooks.cluster

        class Conn:
            usable = True

            async def request(self, api_key, payload):
                return await cluster.request(0, api_key, payload)

            async def aclose(self):
                pass

        return Conn()


class FakeConsumer:
    """The GroupHooks surface, plus a caller loop that 'processes' 10 records per
    partition per poll."""

    def __init__(self, cluster, nursery):
        self.cluster, self.nursery = cluster, nursery
        self.states: dict = {}
        self.calls: list = []
        self.log: list = []

    def assigned(self):
        return set(self.states)

    def assign(self, parts):
        for tp in parts:
            self.states.setdefault(tp, None)

    def revoke(self, parts):
        out = {tp: self.states[tp] for tp in parts if self.states.get(tp) is not None}
        for tp in parts:
            self.states.pop(tp, None)
        return out

    def positions(self):
        return {tp: o for tp, o in self.states.items() if o is not None}

    def call_on_caller(self, fn, *args):
        self.calls.append((fn, args))

    async def poll(self, membership):
        while self.calls:
            fn, args = self.calls.pop(0)
            fn(*args)
        for tp in list(self.states):
            if self.states[tp] is None:
                committed = await membership.committed_for_reset([tp])
                self.states[tp] = committed.get(tp, 0)
            self.log.append((tp, self.states[tp], trio.current_time()))
            self.states[tp] += 10
        membership.on_poll()


def consumer_config(**kw):
    base = dict(group_id="g", enable_auto_commit=True, auto_commit_interval_ms=5000,
                session_timeout_ms=3000, max_poll_interval_ms=10000,
                partition_assignment_strategy="sticky", client_id="c")
    base.update(kw)
    return SimpleNamespace(**base)


async def start_member(nursery, cluster, polling=True, poll_every_s=0.1, **kw):
    consumer = FakeConsumer(cluster, nursery)
    m = DirectMembership(consumer, consumer_config(**kw))
    await m.subscribe(["t"])
    cancel = trio.CancelScope()

    async def caller():
        with cancel:
            while True:
                await consumer.poll(m)
                await trio.sleep(poll_every_s)

    if polling:
        nursery.start_soon(caller)
    return m, consumer, cancel


def config(**kw):
    base = dict(offsets_topic_num_partitions=3, session_timeout_min_ms=100,
                heartbeat_interval_ms=1000)
    base.update(kw)
    return CoordinatorConfig(**base)


async def wait_for(predicate, timeout_s=60.0, step_s=0.01):
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(step_s)
    return trio.current_time()


def test_java_string_hash_matches_java():
    """Kafka's placement: Java String.hashCode, then abs % partitions."""
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("hello") == 99162322
    assert 0 <= group_partition("any", 50) < 50


async def test_two_members_split_then_session_timeout(autojump_clock):
    """Two members split 6 partitions 3/3; one process 'freezes' (no heartbeats,
    no polls); the coordinator's timer removes it after its session timeout
    and the survivor owns all 6 within one more heartbeat."""
    broker = FakeBroker({"t": 6})
    coord = GroupCoordinator(broker, config())
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        async with trio.open_nursery() as member_nursery:
            _a, ca, _ = await start_member(nursery, cluster)
            _b, cb, _stop_b = await start_member(member_nursery, cluster)
            await wait_for(lambda: len(ca.states) == 3 and len(cb.states) == 3)
            frozen_at = trio.current_time()
            member_nursery.cancel_scope.cancel()   # b freezes: its tasks stop
        t = await wait_for(lambda: len(ca.states) == 6)
        assert 3.0 <= t - frozen_at <= 3.0 + 1.5, t - frozen_at
        assert coord.groups["g"].state.value == "stable"
        nursery.cancel_scope.cancel()


async def test_auto_commit_commits_what_poll_returned_before(autojump_clock):
    """Every auto_commit_interval_ms the member commits the positions as of the
    previous poll (records the caller has finished), never ahead of them."""
    broker = FakeBroker({"t": 2})
    coord = GroupCoordinator(broker, config())
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        m, c, stop = await start_member(nursery, cluster, auto_commit_interval_ms=1000,
                                        poll_every_s=0.25)
        await wait_for(lambda: len(c.states) == 2)
        await trio.sleep(5)
        stop.cancel()                      # caller stops polling
        last_positions = dict(c.positions())
        await trio.sleep(3)                # more auto-commits fire
        committed = {tp: om.offset for tp, om in coord.store.fetch("g").items()}
        # The last poll's records (10 per partition) are not confirmed processed.
        assert committed == {tp: o - 10 for tp, o in last_positions.items()}
        commits = m.stats["commits"]
        assert 5 <= commits <= 9, commits  # about one per second, only while there is progress
        nursery.cancel_scope.cancel()


async def test_revocation_waits_for_the_owner_and_commits_first(autojump_clock):
    """A joining member gets a partition only after the owner's caller ran its
    revoke step and committed; the new owner resumes exactly at that commit."""
    broker = FakeBroker({"t": 2})
    coord = GroupCoordinator(broker, config())
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        _a, ca, _ = await start_member(nursery, cluster)
        await wait_for(lambda: len(ca.states) == 2)
        await trio.sleep(2)
        _b, cb, _ = await start_member(nursery, cluster)
        await wait_for(lambda: len(cb.states) == 1 and cb.log)
        (tp,) = cb.states
        a_last = max(o for p, o, _ in ca.log if p == tp)
        b_first = min(o for p, o, _ in cb.log if p == tp)
        assert b_first == a_last + 10          # no gap, no duplicate
        a_end = max(t for p, _, t in ca.log if p == tp)
        b_start = min(t for p, _, t in cb.log if p == tp)
        assert a_end < b_start                 # never two owners
        nursery.cancel_scope.cancel()


async def test_caller_that_stops_polling_loses_its_partitions(autojump_clock):
    """max_poll_interval_ms without poll(): the member leaves; the other member
    gets everything; when the caller polls again it rejoins and gets a share."""
    broker = FakeBroker({"t": 4})
    coord = GroupCoordinator(broker, config())
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        _a, ca, _ = await start_member(nursery, cluster)
        b, cb, stop_b = await start_member(nursery, cluster, max_poll_interval_ms=4000)
        await wait_for(lambda: len(ca.states) == 2 and len(cb.states) == 2)
        stop_b.cancel()
        stalled_at = trio.current_time()
        t = await wait_for(lambda: len(ca.states) == 4)
        # detected by the heartbeat loop (poll seen up to one interval late), then
        # the survivor's next heartbeat: max_poll_interval + 2 heartbeat intervals
        assert 4.0 <= t - stalled_at <= 4.0 + 2.0 + 0.1, t - stalled_at
        assert b.stats["poll_timeouts"] == 1
        await cb.poll(b)                       # the caller comes back
        nursery.start_soon(_poll_forever, cb, b)
        await wait_for(lambda: len(ca.states) == 2 and len(cb.states) == 2)
        nursery.cancel_scope.cancel()


async def _poll_forever(consumer, membership):
    while True:
        await consumer.poll(membership)
        await trio.sleep(0.1)


async def test_restart_reloads_offsets_and_epochs(autojump_clock):
    """A new coordinator on the same partitions has the same offsets and a
    group epoch that never goes back; the old members must rejoin."""
    broker = FakeBroker({"t": 2})
    coord = GroupCoordinator(broker, config())
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        m, c, _ = await start_member(nursery, cluster, auto_commit_interval_ms=500)
        await wait_for(lambda: len(c.states) == 2)
        await trio.sleep(3)
        before = coord.store.fetch("g")
        epoch = coord.groups["g"].group_epoch
        coord2 = GroupCoordinator(broker, config())
        coord2.load_nowait()
        assert coord2.store.fetch("g") == before
        assert coord2.store.metadata["g"].group_epoch == epoch
        cluster.coordinator = coord2
        await nursery.start(coord2.run)
        await wait_for(lambda: "g" in coord2.groups and len(c.states) == 2
                       and m.member_epoch > epoch)
        assert m.stats["fenced"] == 1
        nursery.cancel_scope.cancel()


async def test_offsets_of_an_empty_group_expire_after_retention(autojump_clock):
    """offsets.retention.minutes after a group became empty its offsets are
    deleted (a tombstone is written, so a reload agrees); an active group's stay."""
    broker = FakeBroker({"t": 2})
    wall = [1_700_000_000_000]
    coord = GroupCoordinator(broker, config(offsets_retention_ms=60_000,
                                            offsets_retention_check_interval_ms=1000),
                             wall_ms=lambda: wall[0])
    coord.load_nowait()
    cluster = FakeCluster(coord)
    codes = await coord.commit("old", "", -1, [{"topic": "t", "partitions": [
        {"partition": 0, "committed_offset": 5, "committed_leader_epoch": -1,
         "committed_metadata": None}]}])
    assert set(codes.values()) == {0}
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        _m, c, _ = await start_member(nursery, cluster, auto_commit_interval_ms=500)
        await wait_for(lambda: len(c.states) == 2)
        wall[0] += 30_000
        await trio.sleep(2)
        assert "old" in coord.store.groups()
        wall[0] += 31_000
        await wait_for(lambda: "old" not in coord.store.groups())
        assert "g" in coord.store.groups()              # has a member: kept
        nursery.cancel_scope.cancel()
    reloaded = GroupCoordinator(broker, config())
    reloaded.load_nowait()
    assert "old" not in reloaded.store.groups() and "g" in reloaded.store.groups()


async def test_a_member_that_cannot_join_sees_the_error_at_poll(autojump_clock):
    """A session timeout outside the broker's bounds is not retried forever: the
    next poll() raises the broker's error and the member stops heartbeating."""
    from minilog.errors import BrokerError

    broker = FakeBroker({"t": 2})
    coord = GroupCoordinator(broker, config(session_timeout_min_ms=5000))
    coord.load_nowait()
    cluster = FakeCluster(coord)
    async with trio.open_nursery() as nursery:
        m, c, _ = await start_member(nursery, cluster, polling=False, session_timeout_ms=100)
        await wait_for(lambda: c.calls)
        with pytest.raises(BrokerError) as err:
            await c.poll(m)
        assert "session_timeout_ms" in str(err.value)
        assert not m.subscribed and "g" not in coord.groups
        nursery.cancel_scope.cancel()
