"""A history checker for the fault tests: what was sent, acknowledged and read, and what went wrong.

Theory of operation (Jepsen's Kafka checker, cut down to what minilog's
tests can observe). A test records a `History` while it runs:

* `sent(tp, value)` before a producer hands a value to the client (every
  value in a test is unique, so a value names one write);
* `acked(value, tp, offset)` when its delivery report says it was stored,
  `failed(value, err)` when it says it was not (a failed write is
  *indeterminate*: a timeout may still have stored it, so reading it back
  is no anomaly);
* `read(source, tp, offset, value)` for every record any reader saw. A
  reader that read a whole partition from its start to its end (the final
  read from each partition's leader, or each replica's files) calls
  `read_all(source, tp, records)`, which also marks that source
  *complete* for that partition;
* `committed(group, tp, offset)` for each committed offset a group was
  seen to hold, in the order seen, and `polled(consumer, tp, offset,
  session)` for each record a group member consumed, in order.

`check(history)` returns a `Report` listing each anomaly:

* lost: an acknowledged value missing from a complete read of its partition;
* conflicts: one (partition, offset) seen holding two different values
  (across acknowledgements, readers and replicas);
* unknown: a value read that no producer ever sent;
* duplicates: one value stored at two offsets (allowed for a producer that
  is not idempotent and retried; tests say whether they allow it);
* gaps: offsets missing from a complete read, which starts at offset 0
  (offsets are dense: no retention, compaction or transactions in these
  tests);
* backwards: a group's committed offset for a partition going down, or one
  consumer session polling an offset not above its previous one.

Pure and deterministic: no I/O, no clock. Unit-tested on hand-made histories
(tests/test_cluster_faults_checker.py) so each anomaly is known to be caught.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

__all__ = ["History", "Report", "check"]

TP = tuple[str, int]              # (topic, partition)
ACK = "ack"                       # the source name of a producer's acknowledgement


@dataclass
class History:
    """Everything a fault test saw. Not thread-safe: record from one thread (or one trio loop)."""

    sent_to: dict[bytes, TP] = field(default_factory=dict)
    acks: dict[bytes, tuple[TP, int]] = field(default_factory=dict)
    failures: dict[bytes, str] = field(default_factory=dict)
    reads: list[tuple[str, TP, int, bytes]] = field(default_factory=list)
    complete: set[tuple[str, TP]] = field(default_factory=set)
    commits: list[tuple[str, TP, int]] = field(default_factory=list)
    polls: list[tuple[str, Hashable, TP, int]] = field(default_factory=list)

    def sent(self, tp: TP, value: bytes) -> bytes:
        assert value not in self.sent_to, f"values must be unique; {value!r} sent twice"
        self.sent_to[value] = tp
        return value

    def acked(self, value: bytes, tp: TP, offset: int) -> None:
        assert offset >= 0, f"acknowledged {value!r} without an offset"
        self.acks[value] = (tp, offset)

    def failed(self, value: bytes, err: object) -> None:
        self.failures[value] = str(err)

    def read(self, source: str, tp: TP, offset: int, value: bytes) -> None:
        self.reads.append((source, tp, offset, value))

    def read_all(self, source: str, tp: TP, records: Iterable[tuple[int, bytes]]) -> None:
        """A whole partition as `source` holds it: (offset, value) from its start to its end."""
        self.complete.add((source, tp))
        for offset, value in records:
            self.read(source, tp, offset, value)

    def committed(self, group: str, tp: TP, offset: int) -> None:
        self.commits.append((group, tp, offset))

    def polled(self, consumer: str, tp: TP, offset: int, session: Hashable = 0) -> None:
        self.polls.append((consumer, session, tp, offset))

    @property
    def acked_count(self) -> int:
        return len(self.acks)


@dataclass(frozen=True)
class Report:
    lost: list[tuple[TP, int, bytes, tuple[str, ...]]]       # tp, acked offset, value, sources missing it
    conflicts: list[tuple[TP, int, dict[str, bytes]]]          # tp, offset, source -> value
    unknown: list[tuple[str, TP, int, bytes]]
    duplicates: list[tuple[bytes, tuple[tuple[TP, int], ...]]]
    gaps: list[tuple[str, TP, int, int]]                       # source, tp, first missing, next present
    backwards: list[str]
    acked: int = 0
    read_values: int = 0

    def problems(self, *, duplicates_allowed: bool = False) -> list[str]:
        """Every anomaly as one line (duplicates left out when the test allows them)."""
        out = [f"lost acked write {v!r} at {tp[0]}-{tp[1]}@{o} (missing from {', '.join(src)})"
               for tp, o, v, src in self.lost]
        out += [f"offset {tp[0]}-{tp[1]}@{o} holds two values: {_fmt(seen)}"
                for tp, o, seen in self.conflicts]
        out += [f"{src} read {v!r} at {tp[0]}-{tp[1]}@{o}, never sent" for src, tp, o, v in self.unknown]
        if not duplicates_allowed:
            out += [f"duplicate {v!r} at {', '.join(f'{tp[0]}-{tp[1]}@{o}' for tp, o in at)}"
                    for v, at in self.duplicates]
        out += [f"{src} misses {tp[0]}-{tp[1]}@{lo}..{hi - 1}" for src, tp, lo, hi in self.gaps]
        out += self.backwards
        return out

    def ok(self, *, duplicates_allowed: bool = False) -> bool:
        return not self.problems(duplicates_allowed=duplicates_allowed)

    def assert_ok(self, *, duplicates_allowed: bool = False, context: str = "") -> None:
        problems = self.problems(duplicates_allowed=duplicates_allowed)
        if problems:
            shown = "\n  ".join(problems[:40])
            more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
            raise AssertionError(f"history check failed{' (' + context + ')' if context else ''}: "
                                 f"{len(problems)} problem(s), {self.acked} acked, "
                                 f"{self.read_values} read\n  {shown}{more}")

    def __str__(self) -> str:
        problems = self.problems()
        head = f"{self.acked} acked, {self.read_values} distinct values read"
        return head + (": ok" if not problems else ":\n  " + "\n  ".join(problems))


def _fmt(seen: dict[str, bytes]) -> str:
    return ", ".join(f"{src}={v!r}" for src, v in sorted(seen.items()))


def check(history: History) -> Report:
    """Every anomaly in `history` (see the module docstring)."""
    at: dict[tuple[TP, int], dict[str, set[bytes]]] = collections.defaultdict(
        lambda: collections.defaultdict(set))
    where: dict[bytes, set[tuple[TP, int]]] = collections.defaultdict(set)
    by_source: dict[tuple[str, TP], dict[int, bytes]] = collections.defaultdict(dict)
    unknown = []
    for value, (tp, offset) in history.acks.items():
        at[(tp, offset)][ACK].add(value)
        where[value].add((tp, offset))
    for source, tp, offset, value in history.reads:
        at[(tp, offset)][source].add(value)
        by_source[(source, tp)][offset] = value
        where[value].add((tp, offset))
        if value not in history.sent_to:
            unknown.append((source, tp, offset, value))
    conflicts = []
    for (tp, offset), seen in sorted(at.items()):
        if len(set().union(*seen.values())) > 1:
            conflicts.append((tp, offset, {src: b"|".join(sorted(vs)) for src, vs in seen.items()}))

    held = {key: set(by_source[key].values()) for key in history.complete}
    lost = []
    for value, (tp, offset) in sorted(history.acks.items(), key=lambda kv: kv[1]):
        missing = tuple(sorted(src for src, ctp in history.complete
                               if ctp == tp and value not in held[(src, ctp)]))
        if missing:
            lost.append((tp, offset, value, missing))

    duplicates = [(v, tuple(sorted(places))) for v, places in where.items() if len(places) > 1]
    duplicates.sort(key=lambda d: d[1])

    gaps = []
    for src, tp in sorted(history.complete):
        offsets = [-1, *sorted(by_source[(src, tp)])]     # a complete read starts at offset 0
        for a, b in zip(offsets, offsets[1:], strict=False):
            if b != a + 1:
                gaps.append((src, tp, a + 1, b))

    read_values = len({v for _, _, _, v in history.reads})
    return Report(lost, conflicts, unknown, duplicates, gaps, _backwards(history),
                  acked=len(history.acks), read_values=read_values)


def _backwards(history: History) -> list[str]:
    out = []
    last_commit: dict[tuple[str, TP], int] = {}
    for group, tp, offset in history.commits:
        prev = last_commit.get((group, tp))
        if prev is not None and offset < prev:
            out.append(f"group {group} committed {tp[0]}-{tp[1]}@{offset} after @{prev}")
        last_commit[(group, tp)] = offset
    last_poll: dict[tuple[str, Hashable, TP], int] = {}
    for consumer, session, tp, offset in history.polls:
        prev = last_poll.get((consumer, session, tp))
        if prev is not None and offset <= prev:
            out.append(f"consumer {consumer} (session {session}) polled {tp[0]}-{tp[1]}@{offset} "
                       f"after @{prev}")
        last_poll[(consumer, session, tp)] = offset
    return out
