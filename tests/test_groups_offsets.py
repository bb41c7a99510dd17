"""The `__consumer_offsets` record format and the loader (minilog.broker.groups._offsets)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from minilog.broker.groups._offsets import (
    OffsetStore,
    encode_commit,
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


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["g", "h", "a-much-longer-group-name" * 4]),
                          st.lists(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 5),
                                             st.integers(-1, 2**40), st.integers(-1, 9),
                                             st.none() | st.text(max_size=80)),
                                   min_size=1, max_size=5),
                          st.booleans()),
                max_size=40))
def test_fused_loader_equals_reference_replay(ops):
    """The fused fast loader and the record-by-record replay agree on any history,
    and both agree with a model dict (latest value per key, tombstones drop groups)."""
    model: dict = {}
    pieces = []
    for i, (group, rows, tombstone) in enumerate(ops):
        if tombstone and i % 7 == 0:
            pieces.append(encode_group_tombstone(group, TS + i))
            model.pop(group, None)
            continue
        pieces.append(encode_commit(group, rows, TS + i))
        g = model.setdefault(group, {})
        for t, p, o, e, m in rows:
            if o < 0:
                g.pop((t, p), None)
            else:
                g[(t, p)] = (o, e, m)
    buf = b"".join(pieces)
    fast, slow = OffsetStore(), replay_slow(buf)
    fast.load([buf])
    for group in set(model) | fast.groups() | slow.groups():
        got = {tp: (om.offset, om.leader_epoch, om.metadata) for tp, om in fast.fetch(group).items()}
        assert got == model.get(group, {})
        assert fast.fetch(group) == slow.fetch(group)


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
