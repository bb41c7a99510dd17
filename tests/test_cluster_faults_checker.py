"""The fault tests' history checker (tests/_checker.py) on hand-made histories: each anomaly is caught,
and a clean history passes."""

from __future__ import annotations

import random

import pytest

from _checker import History, check

T0 = ("t", 0)
T1 = ("t", 1)


def clean_history(n: int = 6) -> History:
    """Two partitions, every value acked at its offset, read back whole by the final reader."""
    h = History()
    for tp in (T0, T1):
        records = []
        for offset in range(n):
            v = h.sent(tp, f"{tp[1]}-{offset}".encode())
            h.acked(v, tp, offset)
            records.append((offset, v))
        h.read_all("final", tp, records)
    return h


def test_clean_history_passes() -> None:
    """A history with no anomaly reports none, and counts what it saw."""
    report = check(clean_history())
    assert report.ok(), str(report)
    assert report.acked == 12 and report.read_values == 12
    report.assert_ok()


def test_failed_write_read_back_is_no_anomaly() -> None:
    """A failed write is indeterminate (a timeout may have stored it): reading it is fine, missing it too."""
    h = clean_history()
    stored = h.sent(T0, b"timed-out")
    h.failed(stored, "RequestTimeoutError")
    h.failed(h.sent(T0, b"refused"), "NOT_ENOUGH_REPLICAS")
    h.read("final", T0, 6, stored)
    assert check(h).ok()


def test_lost_acked_write() -> None:
    """An acked value missing from a complete read of its partition is lost, and the reader is named."""
    h = clean_history()
    v = h.sent(T0, b"acked-then-lost")
    h.acked(v, T0, 6)
    h.read_all("replica-2", T0, [(o, f"0-{o}".encode()) for o in range(6)])
    report = check(h)
    assert [(tp, o, val) for tp, o, val, _ in report.lost] == [(T0, 6, b"acked-then-lost")]
    assert report.lost[0][3] == ("final", "replica-2")
    assert "lost acked write b'acked-then-lost' at t-0@6" in report.problems()[0]
    with pytest.raises(AssertionError, match="lost acked write"):
        report.assert_ok(context="seed 1")


def test_lost_only_counts_complete_readers() -> None:
    """A partial reader (a consumer that saw some records) does not make an acked value lost."""
    h = clean_history()
    h.read("consumer", T0, 0, b"0-0")
    assert check(h).ok()


def test_offset_with_two_values_across_replicas() -> None:
    """Two replicas holding different values at one offset (diverged logs) is a conflict."""
    h = History()
    a, b = h.sent(T0, b"a"), h.sent(T0, b"b")
    h.read_all("replica-1", T0, [(0, a)])
    h.read_all("replica-2", T0, [(0, b)])
    report = check(h)
    assert len(report.conflicts) == 1
    tp, offset, seen = report.conflicts[0]
    assert (tp, offset) == (T0, 0) and seen == {"replica-1": b"a", "replica-2": b"b"}
    assert "holds two values" in report.problems()[0]


def test_acked_offset_disagrees_with_log() -> None:
    """A value acknowledged at one offset but stored as another value there is a conflict."""
    h = History()
    a, b = h.sent(T0, b"a"), h.sent(T0, b"b")
    h.acked(a, T0, 0)
    h.read_all("final", T0, [(0, b), (1, a)])
    report = check(h)
    assert [(tp, o) for tp, o, _ in report.conflicts] == [(T0, 0)]
    assert report.conflicts[0][2] == {"ack": b"a", "final": b"b"}
    assert report.duplicates == [(b"a", ((T0, 0), (T0, 1)))]


def test_one_reader_seeing_an_offset_change() -> None:
    """The same consumer reading an offset twice and getting two values (a truncated, rewritten log)."""
    h = History()
    a, b = h.sent(T0, b"a"), h.sent(T0, b"b")
    h.read("consumer", T0, 0, a)
    h.read("consumer", T0, 0, b)
    assert check(h).conflicts == [(T0, 0, {"consumer": b"a|b"})]


def test_value_never_sent() -> None:
    """A value read that no producer sent (corruption, or a record from elsewhere) is reported."""
    h = clean_history()
    h.read("final", T1, 6, b"from-nowhere")
    report = check(h)
    assert report.unknown == [("final", T1, 6, b"from-nowhere")]
    assert not report.ok()


def test_duplicates_reported_unless_allowed() -> None:
    """One value at two offsets is a duplicate: an error for an idempotent producer, allowed otherwise."""
    h = History()
    v = h.sent(T0, b"retried")
    h.acked(v, T0, 1)
    h.read_all("final", T0, [(0, v), (1, v)])
    report = check(h)
    assert report.duplicates == [(b"retried", ((T0, 0), (T0, 1)))]
    assert not report.ok()
    assert report.ok(duplicates_allowed=True)


def test_gap_in_a_complete_read() -> None:
    """Offsets missing from a complete read (in the middle, or at its start) are gaps."""
    h = History()
    vs = [h.sent(T0, bytes([65 + i])) for i in range(4)]
    h.read_all("final", T0, [(1, vs[0]), (2, vs[1]), (5, vs[2])])
    assert check(h).gaps == [("final", T0, 0, 1), ("final", T0, 3, 5)]


def test_group_commit_going_backwards() -> None:
    """A group's committed offset for a partition going down is reported; other groups and partitions
    are independent."""
    h = clean_history()
    h.committed("g", T0, 3)
    h.committed("g", T1, 1)
    h.committed("other", T0, 1)
    h.committed("g", T0, 3)
    assert check(h).ok()
    h.committed("g", T0, 2)
    assert check(h).backwards == ["group g committed t-0@2 after @3"]


def test_consumer_polling_backwards_within_a_session() -> None:
    """Within one consumer session offsets only go up; a new session (after a rebalance) may re-read."""
    h = clean_history()
    for o in (0, 1, 2):
        h.polled("c1", T0, o, session=1)
    for o in (1, 2, 3):                       # re-read from the committed offset after a rebalance
        h.polled("c1", T0, o, session=2)
    assert check(h).ok()
    h.polled("c1", T0, 3, session=2)
    assert check(h).backwards == ["consumer c1 (session 2) polled t-0@3 after @3"]


def test_values_must_be_unique() -> None:
    """The checker relies on unique values: sending one twice is the test's bug, caught at once."""
    h = History()
    h.sent(T0, b"x")
    with pytest.raises(AssertionError, match="unique"):
        h.sent(T1, b"x")


@pytest.mark.parametrize("seed", range(5))
def test_random_single_fault_is_found(seed: int) -> None:
    """Seeded oracle: inject one random anomaly into a clean history; the checker reports exactly it."""
    rng = random.Random(seed)
    h = clean_history(n=rng.randint(3, 20))
    kind = rng.choice(["lose", "conflict", "unknown", "duplicate", "gap"])
    tp = rng.choice([T0, T1])
    src = [(o, v) for s, t, o, v in h.reads if t == tp]
    victim = rng.randrange(len(src))
    if kind == "lose":      # the replica lost an acked record and every later one shifted down
        rest = [v for o, v in src if o != victim]
        h.read_all("replica", tp, list(enumerate(rest)))
    elif kind == "conflict":
        h.read("replica", tp, victim, src[(victim + 1) % len(src)][1] + b"!")
        h.sent(tp, src[(victim + 1) % len(src)][1] + b"!")
    elif kind == "unknown":
        h.read("replica", tp, len(src), b"never")
    elif kind == "duplicate":
        h.read_all("replica", tp, [*src, (len(src), src[victim][1])])
    else:
        h.read_all("replica", tp, [(o, v) for o, v in src if o != victim] if victim else src[1:])
    report = check(h)
    found = {"lose": report.lost, "conflict": report.conflicts, "unknown": report.unknown,
             "duplicate": report.duplicates, "gap": report.gaps}
    assert found[kind], f"seed {seed}: {kind} not reported: {report}"
    assert not report.ok(), f"seed {seed}"
