"""The metadata-store contract: every test runs against a real etcd and the in-memory store.

What passes here for both is what the cluster code may rely on; the
in-memory store (the seeded simulation's) is held to etcd's behaviour by
these same tests. Every test names `store_clock`: MockClock for the memory
backend (lease expiry in virtual time), the real clock for etcd.
"""

from __future__ import annotations

import pytest
import trio

from minilog.metastore import (
    Compacted,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    FutureRevision,
    Get,
    InvalidRequest,
    KVStore,
    LeaseKeeper,
    LeaseNotFound,
    Put,
    PutResult,
    RangeResult,
    EtcdStore,
    MemoryStore,
    StoreStatistics,
    Unavailable,
    prefix_range_end,
)
from _etcd_fixtures import etcd_binary, run_etcd

DEADLINE_S = 20.0  # bound on any wait for the store (virtual seconds for the memory backend)


async def test_put_get_revisions_and_versions(kv: KVStore, store_clock):
    """A key's create_revision stays, mod_revision follows each write, version counts writes."""
    first = await kv.put(b"/k", b"v1")
    second = await kv.put(b"/k", b"v2")
    assert second.revision == first.revision + 1
    assert second.prev_kv is not None and second.prev_kv.value == b"v1"
    got = await kv.get(b"/k")
    assert got.count == 1 and got.revision == second.revision
    (kv1,) = got.kvs
    assert (kv1.key, kv1.value, kv1.create_revision, kv1.mod_revision, kv1.version) == (
        b"/k", b"v2", first.revision, second.revision, 2,
    )  # fmt: skip
    deleted = await kv.delete(b"/k")
    assert deleted.deleted == 1 and deleted.revision == second.revision + 1
    assert [p.value for p in deleted.prev_kvs] == [b"v2"]
    assert (await kv.get(b"/k")).kvs == []
    again = await kv.put(b"/k", b"v3")
    (kv3,) = (await kv.get(b"/k")).kvs
    assert (kv3.create_revision, kv3.version) == (again.revision, 1)


async def test_prefix_get_is_sorted_bounded_and_limited(kv: KVStore, store_clock):
    """A prefix read returns exactly the keys under the prefix, sorted, and `limit` caps kvs not count."""
    for key in [b"/t/b", b"/t/a", b"/t/c", b"/tt", b"/s", b"/t"]:
        await kv.put(key, key)
    got = await kv.get(b"/t/", prefix=True)
    assert [x.key for x in got.kvs] == [b"/t/a", b"/t/b", b"/t/c"]
    limited = await kv.get(b"/t/", prefix=True, limit=2)
    assert [x.key for x in limited.kvs] == [b"/t/a", b"/t/b"] and limited.count == 3
    assert [x.key for x in (await kv.get(b"", prefix=True)).kvs] == [b"/s", b"/t", b"/t/a", b"/t/b", b"/t/c", b"/tt"]


def test_prefix_range_end_matches_etcd():
    """clientv3.GetPrefixRangeEnd: increment the last byte below 0xff."""
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


async def test_one_revision_per_write_transaction(kv: KVStore, store_clock):
    """A txn writing three keys raises the revision once; reads and empty deletes raise it not at all."""
    base = (await kv.put(b"/base", b"x")).revision
    result = await kv.txn([], [Put(b"/a", b"1"), Put(b"/b", b"2"), Put(b"/c", b"3")])
    assert result.succeeded and result.revision == base + 1
    assert {x.mod_revision for x in (await kv.get(b"/", prefix=True)).kvs if x.key != b"/base"} == {base + 1}
    assert (await kv.txn([], [Get(b"/a")])).revision == base + 1
    nothing = await kv.delete(b"/missing")
    assert nothing.deleted == 0 and nothing.revision == base + 1
    assert (await kv.put(b"/d", b"4")).revision == base + 2


async def test_txn_compares_on_every_target(kv: KVStore, store_clock):
    """Each compare target and operator behaves as etcd's, including on a missing key."""
    put = await kv.put(b"/c", b"abc")
    await kv.put(b"/c", b"abd")
    mod = put.revision + 1
    holds = [
        Compare.version(b"/c", "==", 2),
        Compare.version(b"/c", ">", 1),
        Compare.create_revision(b"/c", "==", put.revision),
        Compare.mod_revision(b"/c", "==", mod),
        Compare.mod_revision(b"/c", "<", mod + 1),
        Compare.mod_revision(b"/c", "!=", put.revision),
        Compare.value(b"/c", "==", b"abd"),
        Compare.value(b"/c", ">", b"abc"),
        Compare.value(b"/c", "<", b"abe"),
        Compare.lease(b"/c", "==", 0),
        Compare.exists(b"/c"),
        Compare.missing(b"/nope"),
        Compare.version(b"/nope", "==", 0),
        Compare.mod_revision(b"/nope", "==", 0),
    ]
    fails = [
        Compare.version(b"/c", "==", 1),
        Compare.mod_revision(b"/c", "==", put.revision),
        Compare.value(b"/c", "==", b"abc"),
        Compare.missing(b"/c"),
        Compare.exists(b"/nope"),
        Compare.value(b"/nope", "==", b""),  # a value compare on a missing key is always false
        Compare.value(b"/nope", "!=", b"x"),
    ]
    for c in holds:
        assert (await kv.txn([c], [])).succeeded, c
    for c in fails:
        assert not (await kv.txn([c], [])).succeeded, c
    assert not (await kv.txn(holds + fails[:1], [])).succeeded  # all compares must hold


async def test_txn_runs_one_branch_and_reads_its_own_writes(kv: KVStore, store_clock):
    """Success ops run when compares hold, failure ops otherwise; a read after a write in the txn sees it."""
    ok = await kv.txn([Compare.missing(b"/x")], [Put(b"/x", b"1"), Get(b"/x")], [Get(b"/x")])
    assert ok.succeeded
    assert isinstance(ok.responses[0], PutResult) and ok.responses[0].revision == ok.revision
    assert isinstance(ok.responses[1], RangeResult) and [x.value for x in ok.responses[1].kvs] == [b"1"]
    lost = await kv.txn([Compare.missing(b"/x")], [Put(b"/x", b"2")], [Get(b"/x"), Delete(b"/x")])
    assert not lost.succeeded and lost.revision == ok.revision + 1
    assert isinstance(lost.responses[0], RangeResult) and lost.responses[0].kvs[0].value == b"1"
    assert isinstance(lost.responses[1], DeleteResult) and lost.responses[1].deleted == 1
    assert (await kv.get(b"/x")).kvs == []


async def test_rejected_requests_change_nothing(kv: KVStore, store_clock):
    """An empty key, a key written twice in one txn, or an unknown lease is refused, and nothing changes."""
    revision = (await kv.put(b"/r", b"0")).revision
    with pytest.raises(InvalidRequest):
        await kv.put(b"", b"v")
    with pytest.raises(InvalidRequest):
        await kv.txn([], [Put(b"/r", b"1"), Put(b"/r", b"2")])
    with pytest.raises(InvalidRequest):
        await kv.txn([], [Delete(b"/", prefix=True), Put(b"/r", b"3")])
    with pytest.raises(LeaseNotFound):
        await kv.put(b"/r", b"4", lease=0x7E57)
    with pytest.raises(LeaseNotFound):
        await kv.txn([], [Put(b"/s", b"5"), Put(b"/r", b"6", lease=0x7E57)])
    after = await kv.get(b"/", prefix=True)
    assert after.revision == revision and [(x.key, x.value) for x in after.kvs] == [(b"/r", b"0")]


async def test_txn_size_is_bounded_like_etcd(kv: KVStore, store_clock):
    """128 ops per branch pass (etcd's --max-txn-ops default); 129 are refused and change nothing."""
    assert (await kv.txn([], [Put(b"/n/%03d" % i, b"x") for i in range(128)])).succeeded
    with pytest.raises(InvalidRequest):
        await kv.txn([], [Put(b"/m/%03d" % i, b"x") for i in range(129)])
    assert (await kv.get(b"/m/", prefix=True)).count == 0


async def test_cas_race_exactly_one_writer_wins(kv: KVStore, store_clock):
    """Writers racing a CAS on the same mod_revision: exactly one succeeds, and its value is stored."""
    for round_ in range(5):
        seen = await kv.put(b"/cas", b"start-%d" % round_)
        winners: list[bytes] = []

        async def writer(name: bytes, expected: int = seen.revision, winners: list[bytes] = winners) -> None:
            result = await kv.txn([Compare.mod_revision(b"/cas", "==", expected)], [Put(b"/cas", name)])
            if result.succeeded:
                winners.append(name)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(writer, b"writer-%d" % i)
        assert len(winners) == 1, winners
        assert (await kv.get(b"/cas")).kvs[0].value == winners[0]


async def test_cas_increments_lose_no_update(kv: KVStore, store_clock):
    """Four tasks incrementing a counter by read-then-CAS with retry end at exactly their total."""
    await kv.put(b"/counter", b"0")
    increments = 8

    async def incrementer() -> None:
        for _ in range(increments):
            while True:
                (cur,) = (await kv.get(b"/counter")).kvs
                nxt = str(int(cur.value) + 1).encode()
                guard = Compare.mod_revision(b"/counter", "==", cur.mod_revision)
                if (await kv.txn([guard], [Put(b"/counter", nxt)])).succeeded:
                    break

    with trio.fail_after(DEADLINE_S * 3):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(incrementer)
    assert (await kv.get(b"/counter")).kvs[0].value == str(4 * increments).encode()


async def test_lease_attach_info_and_revoke(kv: KVStore, store_clock):
    """Keys attached to a lease are listed by it and deleted together, in one revision, on revoke."""
    lease = await kv.grant_lease(30)
    assert lease.id != 0 and lease.ttl_s == 30
    await kv.put(b"/l/a", b"1", lease=lease.id)
    await kv.put(b"/l/b", b"2", lease=lease.id)
    await kv.put(b"/l/c", b"3", lease=lease.id)
    await kv.put(b"/l/c", b"3")  # a put without the lease detaches the key
    info = await kv.lease_info(lease.id)
    assert info.keys == [b"/l/a", b"/l/b"] and info.granted_ttl_s == 30 and 0 < info.ttl_s <= 30
    assert (await kv.get(b"/l/a")).kvs[0].lease == lease.id
    start = (await kv.get(b"/l/", prefix=True)).revision + 1
    async with kv.watch(b"/l/", prefix=True, start_revision=start) as events:
        await kv.revoke_lease(lease.id)
        with trio.fail_after(DEADLINE_S):
            deletes = [await events.__anext__(), await events.__anext__()]
    assert [(e.type, e.kv.key) for e in deletes] == [(EventType.DELETE, b"/l/a"), (EventType.DELETE, b"/l/b")]
    assert deletes[0].revision == deletes[1].revision == start
    assert [x.key for x in (await kv.get(b"/l/", prefix=True)).kvs] == [b"/l/c"]
    for call in (kv.keep_alive, kv.revoke_lease, kv.lease_info):
        with pytest.raises(LeaseNotFound):
            await call(lease.id)


async def test_lease_expiry_deletes_attached_keys(kv: KVStore, store_clock):
    """A lease nobody keeps alive expires no earlier than its TTL, and its keys go with it."""
    granted_at = trio.current_time()
    lease = await kv.grant_lease(1)
    put = await kv.put(b"/e/owned", b"x", lease=lease.id)
    await kv.put(b"/e/free", b"y")
    async with kv.watch(b"/e/owned", start_revision=put.revision + 1) as events:
        with trio.fail_after(DEADLINE_S):
            event = await events.__anext__()
    assert event.type == EventType.DELETE and event.kv.key == b"/e/owned"
    assert trio.current_time() - granted_at >= lease.ttl_s
    assert [x.key for x in (await kv.get(b"/e/", prefix=True)).kvs] == [b"/e/free"]
    with pytest.raises(LeaseNotFound):
        await kv.keep_alive(lease.id)
    with pytest.raises(LeaseNotFound):
        await kv.put(b"/e/late", b"z", lease=lease.id)


async def test_keep_alive_keeps_a_lease_alive(kv: KVStore, store_clock):
    """A lease kept alive outlives several TTLs with its keys; once the keeper stops, it expires."""
    lease = await kv.grant_lease(1)
    put = await kv.put(b"/ka", b"alive", lease=lease.id)
    keeper = LeaseKeeper(kv, lease)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.run)
        with trio.fail_after(DEADLINE_S):
            while trio.current_time() - started < 3 * lease.ttl_s:
                await keeper.wait_keep_alives(keeper.statistics().keep_alives + 1)
        assert (await kv.get(b"/ka")).kvs[0].mod_revision == put.revision
        assert (await kv.lease_info(lease.id)).ttl_s >= 0
        nursery.cancel_scope.cancel()
    assert keeper.statistics().keep_alives >= 3
    async with kv.watch(b"/ka", start_revision=put.revision + 1) as events:
        with trio.fail_after(DEADLINE_S):
            event = await events.__anext__()
    assert event.type == EventType.DELETE


async def test_keeper_reports_a_lost_lease(kv: KVStore, store_clock):
    """LeaseKeeper.run raises LeaseNotFound when the lease is revoked under it."""
    lease = await kv.grant_lease(3)
    keeper = LeaseKeeper(kv, lease, interval_s=0.1)

    async def revoke_after_one_keep_alive() -> None:
        await keeper.wait_keep_alives(1)
        await kv.revoke_lease(lease.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(revoke_after_one_keep_alive)
        with pytest.raises(LeaseNotFound), trio.fail_after(DEADLINE_S):
            await keeper.run()


async def _collect(events, until_revision: int) -> list[tuple[EventType, bytes, bytes, int]]:
    seen = []
    with trio.fail_after(DEADLINE_S):
        async for e in events:
            seen.append((e.type, e.kv.key, e.kv.value, e.revision))
            if e.revision >= until_revision:
                return seen
    raise AssertionError("watch ended")


async def _take(events, count: int) -> list[Event]:
    taken: list[Event] = []
    with trio.fail_after(DEADLINE_S):
        while len(taken) < count:
            taken.append(await events.__anext__())
    return taken


async def test_watch_from_a_revision_sees_every_change_in_order(kv: KVStore, store_clock):
    """A prefix watch from a past revision replays every change under the prefix, in revision order, once."""
    expected = []
    first = None
    for i in range(12):
        key = b"/w/%d" % (i % 3)
        if i % 4 == 3:
            result = await kv.delete(key)
            if result.deleted:
                expected.append((EventType.DELETE, key, b"", result.revision))
        else:
            put = await kv.put(key, b"v%d" % i)
            expected.append((EventType.PUT, key, b"v%d" % i, put.revision))
        await kv.put(b"/other/%d" % i, b"x")  # outside the prefix: never seen
        first = first or expected[0][3]
    txn = await kv.txn([], [Put(b"/w/a", b"A"), Put(b"/w/b", b"B")])
    expected += [(EventType.PUT, b"/w/a", b"A", txn.revision), (EventType.PUT, b"/w/b", b"B", txn.revision)]
    async with kv.watch(b"/w/", prefix=True, start_revision=first) as events:
        got = [(e.type, e.kv.key, e.kv.value, e.revision) for e in await _take(events, len(expected))]
    assert got == expected


async def test_watch_from_now_sees_concurrent_writes(kv: KVStore, store_clock):
    """A watch opened with no start revision sees every later write to its key, and no other key."""
    async with kv.watch(b"/live") as events:
        revisions = []
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                for i in range(10):
                    revisions.append((await kv.put(b"/live", b"%d" % i)).revision)
                    await kv.put(b"/live2", b"noise")

            nursery.start_soon(writer)
            got = [(e.kv.value, e.revision) for e in await _take(events, 10)]
        assert got == [(b"%d" % i, r) for i, r in enumerate(revisions)]


async def test_watch_from_a_compacted_revision_is_a_typed_error(kv: KVStore, store_clock):
    """After compaction at R, a watch from R works and a watch from R-1 raises Compacted(R)."""
    early = await kv.put(b"/z", b"1")
    await kv.put(b"/z", b"2")
    late = await kv.put(b"/z", b"3")
    await kv.compact(late.revision)
    with pytest.raises(Compacted) as info:
        async with kv.watch(b"/z", start_revision=early.revision) as events:
            with trio.fail_after(DEADLINE_S):
                await events.__anext__()
    assert info.value.compact_revision == late.revision
    async with kv.watch(b"/z", start_revision=late.revision) as events:
        assert await _collect(events, late.revision) == [(EventType.PUT, b"/z", b"3", late.revision)]
    with pytest.raises(Compacted):
        await kv.compact(early.revision)
    with pytest.raises(FutureRevision):
        await kv.compact(late.revision + 100)


async def test_delete_prefix_is_one_revision_of_ordered_events(kv: KVStore, store_clock):
    """Deleting a prefix removes its keys in one revision, reported as DELETE events in key order."""
    for key in [b"/d/2", b"/d/1", b"/d/3", b"/e"]:
        await kv.put(key, b"x")
    start = (await kv.get(b"/d/1")).revision + 1
    async with kv.watch(b"/", prefix=True, start_revision=start) as events:
        result = await kv.delete(b"/d/", prefix=True)
        assert result.deleted == 3 and [p.key for p in result.prev_kvs] == [b"/d/1", b"/d/2", b"/d/3"]
        got = [(e.type, e.kv.key, e.kv.value, e.revision) for e in await _take(events, 3)]
    assert got == [(EventType.DELETE, b"/d/%d" % i, b"", result.revision) for i in (1, 2, 3)]


async def test_unreachable_store_raises_unavailable(meta_backend, etcd_endpoint, store_clock, tmp_path):
    """Calls to a store that is down raise Unavailable, and an open watch ends with Unavailable."""
    if meta_backend == "memory":
        async with MemoryStore.open() as store:
            async with store.watch(b"/u") as events:
                assert store.statistics().watches_open == 1
                store.available = False
                with pytest.raises(Unavailable), trio.fail_after(DEADLINE_S):
                    await events.__anext__()
            with pytest.raises(Unavailable):
                await store.put(b"/u", b"x")
            assert store.statistics() == StoreStatistics(requests=2, unavailable=2, watches_open=0)
        return
    binary = etcd_binary()
    assert binary is not None
    with run_etcd(binary, str(tmp_path)) as server:
        async with EtcdStore.connect(server.endpoint, timeout_s=2.0) as store:
            await store.put(b"/u", b"x")
            async with store.watch(b"/u") as events:
                assert store.statistics().watches_open == 1
                server.proc.kill()
                with pytest.raises(Unavailable), trio.fail_after(DEADLINE_S):
                    await events.__anext__()
            with pytest.raises(Unavailable):
                await store.put(b"/u", b"y")
            with pytest.raises(Unavailable):
                await store.get(b"/u")
            assert store.statistics() == StoreStatistics(requests=4, unavailable=3, watches_open=0)


def test_metastore_imports_nothing_above_it():
    """minilog.metastore sits below the broker: it never imports the broker, client, CLI, storage or protocol."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "minilog" / "metastore"
    forbidden = ("minilog.broker", "minilog.client", "minilog.cli", "minilog.storage", "minilog.protocol")
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
            assert not any(n.startswith(forbidden) for n in names), f"{path.name} imports {names}"


@pytest.mark.parametrize("ci", [None, "true"])
def test_etcd_fixture_skips_without_etcd_but_fails_under_ci(tmp_path, ci):
    """No etcd binary: the etcd fixture skips with the reason locally, and fails when CI=true."""
    import os
    import pathlib
    import subprocess
    import sys

    (tmp_path / "test_needs_etcd.py").write_text(
        'pytest_plugins = ["_etcd_fixtures"]\n\ndef test_needs_etcd(etcd_server):\n    pass\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {"MINILOG_ETCD_BINARY": str(tmp_path / "no-etcd"), "PYTHONPATH": str(pathlib.Path(__file__).parent)}
    if ci:
        env["CI"] = ci
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_needs_etcd.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if ci:
        assert run.returncode == 1, run.stdout
        assert "etcd binary not found under CI" in run.stdout
    else:
        assert run.returncode == 0, run.stdout
        assert "1 skipped" in run.stdout and "install Debian's etcd-server" in run.stdout
