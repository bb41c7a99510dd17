"""The `__consumer_offsets` record format and the loader (minilog.broker.groups._offsets)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from minilog.broker.groups._offsets import (
    OffsetStore,
    encode_commit,
    encode_commit_v1,
    encode_group_metadata,
    encode_group_tombstone,
    iter_offset_records,
)
from minilog.protocol import CorruptBatchError, build_batch

TS = 1_700_000_000_000


def replay_slow(buf):
    store = OffsetStore()
    for _, k, v in iter_offset_records(buf):
        store.apply(k, v)
    return store


def test_latest_commit_wins_and_tombstones_delete():
    """Later commits overwrite earlier ones; a group tombstone drops the group;
    offset -1 deletes one partition's offset; metadata records are kept."""
    buf = b"".join([
        encode_commit("g", [("t", 0, 5, -1, None), ("t", 1, 7, 2, "m")], TS),
        encode_group_metadata("g", 3, "sticky", TS + 1),
        encode_commit("g", [("t", 0, 9, -1, None)], TS + 2),
        encode_commit("h", [("t", 0, 1, -1, None)], TS + 3),
        encode_commit("g", [("t", 1, -1, -1, None)], TS + 4),
        encode_group_tombstone("h", TS + 5),
    ])
    store = OffsetStore()
    assert store.load([buf]) == 6
    assert {tp: o.offset for tp, o in store.fetch("g").items()} == {("t", 0): 9}
    assert store.fetch("g", [("t", 1), ("t", 2)]) == {("t", 1): None, ("t", 2): None}
    assert store.metadata["g"].group_epoch == 3
    assert store.groups() == {"g"}
    assert store.fetch("h") == {}


# Few partition sets, overlapping, so equal v2 keys repeat and interleave.
TP_SETS = [[("t", 0)], [("t", 1)], [("t", 0), ("t", 1)], [("t", 1), ("t", 0), ("u", 0)],
           [("u", 0), ("u", 0)], [("u", 0), ("t", 1)]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["g", "h", "a-much-longer-group-name" * 4]),
                          st.sampled_from(TP_SETS).flatmap(lambda tps: st.tuples(*[
                              st.tuples(st.just(t), st.just(p), st.integers(-1, 2**40),
                                        st.integers(-1, 9), st.none() | st.text(max_size=80))
                              for t, p in tps])).map(list),
                          st.sampled_from(["v2", "v2", "v2", "v1", "tombstone", "metadata"])),
                max_size=60),
       st.integers(1, 4))
def test_fused_loader_equals_reference_replay(ops, chunks):
    """The deferring loader and the record-by-record replay agree on any history
    (version-1 and version-2 commits mixed, overlapping partition sets, tombstones,
    metadata, keys needing 1- and 2-byte length varints, any split into reads),
    and both agree with a model dict (latest value per key, tombstones drop groups)."""
    model: dict = {}
    epochs: dict = {}
    pieces = []
    for i, (group, rows, kind) in enumerate(ops):
        if kind == "tombstone":
            pieces.append(encode_group_tombstone(group, TS + i))
            model.pop(group, None)
            epochs.pop(group, None)
            continue
        if kind == "metadata":
            pieces.append(encode_group_metadata(group, i, "sticky", TS + i))
            epochs[group] = i
            continue
        pieces.append((encode_commit if kind == "v2" else encode_commit_v1)(group, rows, TS + i))
        g = model.setdefault(group, {})
        for t, p, o, e, m in rows:
            if o < 0:
                g.pop((t, p), None)
            else:
                g[(t, p)] = (o, e, m)
    buf = b"".join(pieces)
    fast, slow = OffsetStore(), replay_slow(buf)
    cut = [0] + sorted({len(b"".join(pieces[:j])) for j in range(0, len(pieces) + 1, chunks)}
                       | {len(buf)})[1:]
    fast.load([buf[a:b] for a, b in zip(cut, cut[1:])])
    assert fast.groups() == slow.groups()
    assert {g: m.group_epoch for g, m in fast.metadata.items()} == epochs
    assert fast.last_commit_ms == slow.last_commit_ms
    for group in set(model) | fast.groups() | slow.groups():
        got = {tp: (om.offset, om.leader_epoch, om.metadata) for tp, om in fast.fetch(group).items()}
        assert got == model.get(group, {})
        assert fast.fetch(group) == slow.fetch(group)


def test_version_1_history_still_loads_and_v2_keys_name_the_partitions():
    """A log written before format 2 (v1 commits) loads, also followed by v2 commits
    of overlapping partition sets; equal v2 key bytes mean the same partitions."""
    buf = b"".join([
        encode_commit_v1("g", [("t", 0, 5, -1, None), ("t", 1, 7, 2, "m")], TS),
        encode_commit("g", [("t", 1, 8, -1, None), ("t", 0, 6, -1, None)], TS + 1),
        encode_commit("g", [("t", 0, 9, -1, None)], TS + 2),
        encode_commit_v1("g", [("t", 2, 3, -1, None)], TS + 3),
        encode_commit("g", [("t", 0, 6, -1, None), ("t", 1, 10, -1, None)], TS + 4),
    ])
    store = OffsetStore()
    assert store.load([buf]) == 5
    assert {tp: o.offset for tp, o in store.fetch("g").items()} == {
        ("t", 0): 6, ("t", 1): 10, ("t", 2): 3}
    assert store.last_commit_ms["g"] == TS + 4
    keys = [k for _, k, _ in iter_offset_records(buf)]
    assert keys[1] == keys[4] != keys[2]
    assert msgpack.unpackb(keys[1]) == [2, "o", "g", [["t", [0, 1]]]]
    assert msgpack.unpackb(keys[0]) == [1, "o", "g"]


def test_trailing_partial_batch_is_ignored_and_next_offset_reported():
    """A read may end mid-batch: the loader applies the whole ones and says where to resume."""
    a = bytearray(encode_commit("g", [("t", 0, 1, -1, None)], TS))
    b = bytearray(encode_commit("g", [("t", 0, 2, -1, None)], TS))
    b[0:8] = (1).to_bytes(8, "big")        # base offset 1, as the log stamps it
    store = OffsetStore()
    count, next_offset = store.load_buffer(bytes(a) + bytes(b)[:-5])
    assert (count, next_offset) == (1, 1)
    assert store.fetch("g")[("t", 0)].offset == 1


def test_corrupt_batch_is_refused():
    """A flipped byte fails the CRC; an unknown key format is refused, never misread."""
    bad = bytearray(encode_commit("g", [("t", 0, 1, -1, None)], TS))
    bad[-3] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        OffsetStore().load([bytes(bad)])
    alien = build_batch([b"x"], [msgpack.packb([99, "o", "g"])])
    with pytest.raises(CorruptBatchError):
        OffsetStore().load([alien])


def test_foreign_layout_takes_the_general_path():
    """A batch with several records (not what the coordinator writes) still loads."""
    k = msgpack.packb([1, "o", "g"])
    v1 = msgpack.packb([1, [["t", 0, 4, -1, None, TS]]])
    v2 = msgpack.packb([1, [["t", 0, 6, -1, None, TS]]])
    store = OffsetStore()
    assert store.load([build_batch([v1, v2], [k, k], timestamps=[TS, TS + 5])]) == 2
    assert store.fetch("g")[("t", 0)].offset == 6


def test_overlapping_partition_sets_replay_in_log_order():
    """Deferred v2 commits are applied in log order, not in first-seen-key order;
    a key too long for the inline framing (3-byte varint) takes the general path."""
    long_group = "x" * 9000
    buf = b"".join([
        encode_commit("g", [("t", 0, 1, -1, None)], TS),
        encode_commit("g", [("t", 0, 2, -1, None), ("t", 1, 2, -1, None)], TS + 1),
        encode_commit("g", [("t", 0, 3, -1, None)], TS + 2),
        encode_commit(long_group, [("t", 0, 4, -1, None)], TS + 3),
        encode_commit(long_group, [("t", 0, 5, -1, None)], TS + 4),
    ])
    store = OffsetStore()
    assert store.load([buf]) == 5
    assert {tp: o.offset for tp, o in store.fetch("g").items()} == {("t", 0): 3, ("t", 1): 2}
    assert {tp: o.offset for tp, o in store.fetch(long_group).items()} == {("t", 0): 5}
