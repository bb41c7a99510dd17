"""Replication's rules as pure functions (replication.py) and the HW checkpoint.

The truncation rule is checked against a seeded model of a partition's
history: random elections (clean or not), appends on the leader, partial
replication, and followers that truncate by epoch (with the real
LeaderEpochCache) before fetching; after every truncation the follower's
log must be a prefix of its leader's.
"""

from __future__ import annotations

import random

import pytest
import trio

from minilog.broker._services import PartitionState
from minilog.broker.config import BrokerConfig
from minilog.broker.log_manager import LogManager
from minilog.broker.metadata import TopicMeta
from minilog.broker.replica_manager import ReplicaManager
from minilog.broker.replication import (
    ReplicaProgress,
    epoch_end_offset,
    high_watermark_candidate,
    may_join_isr,
    out_of_sync,
    truncation_offset,
    update_progress,
)
from minilog.protocol import build_batch
from minilog.storage import LeaderEpochCache, read_hw_checkpoint, write_hw_checkpoint

# -- the truncation rule against a model ----------------------------------------------------


class Replica:
    """A replica's log as (epoch, record id) per offset, with the real epoch cache."""

    def __init__(self, tmp: str) -> None:
        self.log: list[tuple[int, int]] = []
        self.cache = LeaderEpochCache(tmp, persist=False)
        self.synced_epoch = -1            # the leader epoch it truncated for

    def append(self, entries: list[tuple[int, int]]) -> None:
        for epoch, uid in entries:
            assert epoch >= self.cache.latest_epoch, "an append older than the log's epoch"
            self.cache.assign(epoch, len(self.log))
            self.log.append((epoch, uid))

    def truncate(self, offset: int) -> None:
        del self.log[offset:]
        self.cache.truncate_from_end(offset)

    def end_for(self, epoch: int) -> tuple[int, int]:
        return epoch_end_offset(self.cache.entries, epoch, len(self.log))


def sync_with(follower: Replica, leader: Replica, epoch: int) -> None:
    """The fetcher's truncation loop."""
    for _ in range(100):
        latest = follower.cache.latest_epoch
        if latest < 0:
            follower.truncate(0)
            break
        leader_epoch, leader_end = leader.end_for(latest)
        offset, done = truncation_offset(leader_epoch, leader_end, follower.end_for,
                                         len(follower.log), 0)
        follower.truncate(offset)
        if done:
            break
    else:
        raise AssertionError("truncation did not end")
    follower.synced_epoch = epoch


@pytest.mark.parametrize("seed", range(40))
def test_truncation_by_epoch_leaves_a_prefix_of_the_leader(seed, tmp_path):
    """Whatever the history (unclean elections included), a follower that truncated by epoch
    holds a prefix of its leader's log, and replication keeps it one."""
    rng = random.Random(seed)
    replicas = [Replica(str(tmp_path / "none")) for _ in range(3)]
    leader, epoch, uid = 0, 0, 0
    replicas[0].cache.assign(0, 0)
    for _ in range(120):
        move = rng.random()
        if move < 0.15:                                   # election (clean or not)
            leader, epoch = rng.randrange(3), epoch + 1
            r = replicas[leader]
            r.cache.assign(epoch, len(r.log))             # Partition.become_leader
            r.synced_epoch = epoch
        elif move < 0.5:                                  # the leader appends
            count = rng.randint(1, 3)
            replicas[leader].append([(epoch, uid + i) for i in range(count)])
            uid += count
        else:                                             # a follower syncs or fetches
            f = rng.choice([i for i in range(3) if i != leader])
            follower, lead = replicas[f], replicas[leader]
            if follower.synced_epoch != epoch:
                sync_with(follower, lead, epoch)
            assert follower.log == lead.log[:len(follower.log)], f"seed {seed}"
            n = rng.randint(0, 4)
            follower.append(lead.log[len(follower.log):len(follower.log) + n])
            assert follower.log == lead.log[:len(follower.log)], f"seed {seed}"


def test_truncation_offset_cases():
    """The three answers of KIP-279's rule, with a follower log of epochs 1 [0,10), 3 [10,20)."""
    cache = {1: (1, 10), 2: (1, 10), 3: (3, 20)}
    own = cache.__getitem__
    assert truncation_offset(3, 25, own, 20, 5) == (20, True)          # leader has epoch 3
    assert truncation_offset(3, 15, own, 20, 5) == (15, True)          # its epoch 3 ends at 15
    assert truncation_offset(2, 14, own, 20, 5) == (10, False)         # leader lacks 3: cut, ask again
    assert truncation_offset(1, 8, own, 10, 5) == (8, True)
    assert truncation_offset(-1, -1, own, 20, 5) == (5, True)          # leader knows no such epoch


# -- leader rules ---------------------------------------------------------------------------


def test_high_watermark_is_min_leo_of_the_maximal_isr_and_strict_min_isr():
    f = {2: ReplicaProgress(log_end_offset=7), 3: ReplicaProgress(log_end_offset=4)}
    assert high_watermark_candidate(10, 1, [1, 2, 3], None, f, 2) == 4
    assert high_watermark_candidate(10, 1, [1, 2], None, f, 2) == 7
    assert high_watermark_candidate(10, 1, [1, 2], (1, 2, 3), f, 2) == 4     # pending addition counts
    assert high_watermark_candidate(10, 1, [1], None, f, 2) == -1            # below min ISR: frozen
    assert high_watermark_candidate(10, 1, [1], None, f, 1) == 10
    assert high_watermark_candidate(10, 1, [1, 2], None, {2: ReplicaProgress()}, 1) == -1  # unknown LEO


def test_follower_progress_and_isr_membership():
    p = ReplicaProgress()
    update_progress(p, 5, 10, now_s=1.0)                 # behind: not caught up
    assert p.last_caught_up_s == 0.0 and p.log_end_offset == 5
    update_progress(p, 10, 12, now_s=2.0)                # reached the LEO of the previous fetch
    assert p.last_caught_up_s == 1.0
    update_progress(p, 12, 12, now_s=3.0)                # at the log end
    assert p.last_caught_up_s == 3.0
    followers = {2: p, 3: ReplicaProgress(last_caught_up_s=0.5)}
    assert out_of_sync([1, 2, 3], 1, followers, now_s=3.2, lag_max_s=1.0) == [3]
    assert out_of_sync([1, 2, 3], 1, followers, now_s=4.5, lag_max_s=1.0) == [2, 3]
    assert may_join_isr(p, high_watermark=12, epoch_start_offset=11)
    assert not may_join_isr(p, high_watermark=13, epoch_start_offset=0)
    assert not may_join_isr(p, high_watermark=0, epoch_start_offset=13)


# -- the high-watermark checkpoint ----------------------------------------------------------


def test_hw_checkpoint_round_trip_and_malformed(tmp_path):
    hws = {("a.b-c", 0): 17, ("a.b-c", 11): 0, ("t", 3): 12345678901}
    write_hw_checkpoint(str(tmp_path), hws)
    assert read_hw_checkpoint(str(tmp_path)) == hws
    (tmp_path / "replication-offset-checkpoint").write_text("0\n2\nt 0 5\n")
    assert read_hw_checkpoint(str(tmp_path)) == {}        # count mismatch: start from 0
    assert read_hw_checkpoint(str(tmp_path / "missing")) == {}


class _NoControl:
    """A ClusterLink with no other broker and no store (this test never fetches or alters)."""

    broker_id = 1

    def broker_address(self, broker_id: int) -> tuple[str, int] | None:
        return None

    async def alter_isr(self, topic, partition, leader_epoch, isr):
        return None


async def test_restarted_replica_starts_at_the_checkpointed_high_watermark(tmp_path):
    """A follower's HW is checkpointed at shutdown; reopened, it exposes nothing above it
    (min(checkpoint, log end)), even when it then leads."""
    config = BrokerConfig.from_sources({})
    meta = TopicMeta("t", "t", 1, 3)
    follower_state = PartitionState(2, 0, (1, 2, 3), (1, 2, 3), 0)

    def manager() -> ReplicaManager:
        rm = ReplicaManager(1, config, logs=LogManager(str(tmp_path), retention_check_interval_s=60))
        rm.attach_link(_NoControl())
        return rm

    rm = manager()
    await rm.apply_partition_state(meta, 0, follower_state)
    part = rm.partition("t", 0)
    assert part is not None and not part.is_leader and part.high_watermark == 0
    for i in range(5):
        part.append_as_follower(build_batch([b"v%d" % i], base_offset=i, partition_leader_epoch=0))
    part.update_high_watermark_as_follower(3)
    assert part.high_watermark == 3
    for p in rm.clear():
        p.close()

    rm = manager()
    await rm.apply_partition_state(meta, 0, follower_state)
    part = rm.partition("t", 0)
    assert part is not None and part.log_end_offset == 5 and part.high_watermark == 3
    await rm.apply_partition_state(meta, 0, PartitionState(1, 1, (1, 2, 3), (1,), 1))
    assert part.is_leader and part.high_watermark == 5            # ISR of one: HW = LEO
    for p in rm.clear():
        p.close()
    await trio.lowlevel.checkpoint()


def test_epoch_end_offset_is_kafkas_end_offset_for():
    """Epochs 1 [0,10), 3 [10,20), log end 20."""
    entries = [(1, 0), (3, 10)]
    assert epoch_end_offset(entries, 3, 20) == (3, 20)
    assert epoch_end_offset(entries, 2, 20) == (1, 10)
    assert epoch_end_offset(entries, 1, 20) == (1, 10)
    assert epoch_end_offset(entries, 0, 20) == (0, 0)       # older than all: nothing before 0
    assert epoch_end_offset(entries, 4, 20) == (-1, -1)
    assert epoch_end_offset([], 1, 0) == (-1, -1)
