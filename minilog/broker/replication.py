"""The rules of replication as pure functions, and the leader's ISR upkeep.

Kafka's Partition.scala and ReplicaFetcherThread are the model; the
numbers below are Kafka's.

Rules (each is one function here; the partition and the fetcher call them):
- Follower progress (`update_progress`): a follower's fetch offset is its
  log end. It is caught up at the time of a fetch that asks for the
  leader's log end; a fetch that asks for at least the log end the leader
  had at the follower's previous fetch makes it caught up as of that
  previous fetch (Kafka's lastCaughtUpTime).
- High watermark (`high_watermark_candidate`): the smallest log end over
  the maximal ISR (the ISR plus an addition still being stored: a replica
  the controller may already treat as in sync must hold everything below
  the HW). It does not advance while the ISR is smaller than
  min.insync.replicas (Kafka 4's strict min ISR, KIP-966), nor while an
  ISR member's log end is unknown (no fetch since this broker became
  leader), and never moves backwards.
- ISR shrink (`out_of_sync`): a follower in the ISR that has not been
  caught up for `replica.lag.time.max.ms`.
- ISR expansion (`may_join_isr`): a follower outside the ISR whose log end
  reached the HW and the start of the current leader epoch.
- Truncation after a leader change (`truncation_offset`, KIP-101 with
  KIP-279's fix, as Kafka's AbstractFetcherThread): ask the leader where the
  follower's latest epoch ends; the leader answers with the largest epoch
  it has at or below it and that epoch's end on its log. If this log has
  that epoch too, keep min(leader's end, own end of that epoch); if not,
  cut where the next older epoch ends here and ask again (the latest epoch
  here is then older, so this ends); if the leader knows no epoch that old,
  cut to the high watermark.

The partition (`partition.py`) applies the HW rule, `isr.py` the ISR
rules, `replica_fetcher.py` the truncation rule. Pure: no I/O, no trio.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ReplicaProgress",
    "update_progress",
    "high_watermark_candidate",
    "out_of_sync",
    "may_join_isr",
    "truncation_offset",
    "epoch_end_offset",
    "UNDEFINED_EPOCH",
]

UNDEFINED_EPOCH = -1


@dataclass(slots=True)
class ReplicaProgress:
    """What a leader knows of one follower (Kafka's Replica state)."""

    log_end_offset: int = -1            # -1: unknown (no fetch since this broker leads)
    last_caught_up_s: float = 0.0       # trio clock
    last_fetch_s: float = 0.0
    last_fetch_leader_leo: int = -1     # the leader's log end at that fetch


def update_progress(progress: ReplicaProgress, fetch_offset: int, leader_leo: int,
                    now_s: float) -> None:
    """Record a follower fetch at `fetch_offset` while the leader's log ends at `leader_leo`."""
    if fetch_offset >= leader_leo:
        progress.last_caught_up_s = now_s
    elif fetch_offset >= progress.last_fetch_leader_leo >= 0:
        progress.last_caught_up_s = max(progress.last_caught_up_s, progress.last_fetch_s)
    progress.log_end_offset = fetch_offset
    progress.last_fetch_s = now_s
    progress.last_fetch_leader_leo = leader_leo


def high_watermark_candidate(leader_leo: int, local_id: int, isr: Sequence[int],
                             pending_isr: Sequence[int] | None,
                             followers: Mapping[int, ReplicaProgress], min_insync: int) -> int:
    """The HW the leader may expose now, or -1 when it may not advance (see module rules)."""
    if len(isr) < min_insync:
        return -1
    hw = leader_leo
    members = set(isr) | set(pending_isr or ())
    for replica in members:
        if replica == local_id:
            continue
        progress = followers.get(replica)
        if progress is None or progress.log_end_offset < 0:
            return -1
        hw = min(hw, progress.log_end_offset)
    return hw


def out_of_sync(isr: Sequence[int], local_id: int, followers: Mapping[int, ReplicaProgress],
                now_s: float, lag_max_s: float) -> list[int]:
    """ISR members (never the leader) not caught up for `lag_max_s`."""
    return [r for r in isr if r != local_id
            and now_s - followers.get(r, ReplicaProgress()).last_caught_up_s > lag_max_s]


def may_join_isr(progress: ReplicaProgress, high_watermark: int, epoch_start_offset: int) -> bool:
    """Kafka's isFollowerInSync for an expansion."""
    leo = progress.log_end_offset
    return leo >= 0 and leo >= high_watermark and leo >= epoch_start_offset


def epoch_end_offset(entries: Sequence[tuple[int, int]], epoch: int,
                     log_end_offset: int) -> tuple[int, int]:
    """Kafka's LeaderEpochFileCache.endOffsetFor over the epoch cache's (epoch, start offset)
    entries: (the largest epoch <= `epoch`, where it ends), the log end for the latest epoch.

    An epoch older than every entry answers (`epoch`, the first entry's start): the log holds
    nothing of it before that point (the storage cache answers UNDEFINED there, which would
    let a follower keep records of a newer epoch the leader never had). An epoch newer than
    the latest answers (UNDEFINED, UNDEFINED), as Kafka.
    """
    if epoch < 0 or not entries:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH
    latest = entries[-1][0]
    if epoch == latest:
        return latest, log_end_offset
    if epoch > latest:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH
    i = bisect_right([e[0] for e in entries], epoch)       # the first entry newer than `epoch`
    if i == 0:
        return epoch, entries[0][1]
    return entries[i - 1][0], entries[i][1]


def truncation_offset(leader_epoch: int, leader_end_offset: int,
                      own_end_for: Callable[[int], tuple[int, int]], own_leo: int,
                      high_watermark: int) -> tuple[int, bool]:
    """Where a follower cuts its log after the leader answered OffsetForLeaderEpoch.

    Args:
        leader_epoch, leader_end_offset: the leader's answer for the follower's latest
            epoch (the largest epoch <= it on the leader's log, and its end there).
        own_end_for: the follower's `epoch_end_offset` for an epoch.
        own_leo, high_watermark: the follower's log end and HW.

    Returns:
        (offset to truncate to, done). Not done: the follower must ask again for its
        new latest epoch after cutting (its log holds an epoch the leader lacks).
    """
    if leader_end_offset == UNDEFINED_EPOCH or leader_epoch == UNDEFINED_EPOCH:
        return min(high_watermark, own_leo), True       # the leader knows no epoch this old
    own_epoch, own_end = own_end_for(leader_epoch)
    if own_epoch == UNDEFINED_EPOCH:
        return min(leader_end_offset, own_leo), True     # no epoch that old here either
    if own_epoch != leader_epoch:
        # This log lacks the leader's epoch: cut where the older epoch ends here, ask again.
        return min(own_end, own_leo), False
    return min(leader_end_offset, own_end, own_leo), True
