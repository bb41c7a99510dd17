"""The controller: one broker at a time keeps every partition's leader and ISR right.

Theory of operation. Every broker runs `Controller.run` under its session;
it blocks in `campaign` (etcd's election: the controller key under the
broker's lease) until this broker is elected, then loops:

1. take the picture as it is (the follower keeps it current);
2. work out who is alive: a broker is live when it is registered with the
   registration epoch this controller last accepted for it (or one it never
   saw: a newcomer, or one whose absence a finished pass already handled).
   A broker that came back with a new epoch (it restarted, or lost its
   lease and registered again) without the controller seeing it absent is
   dead until a pass has corrected every partition for its death; only then
   is its new epoch accepted, so a restarted broker is never left in an
   ISR (or leading) with a log it may have lost the tail of;
3. for every partition, `election.next_state` (pure) says what its state
   should be; each change is one `update_partition_state` compare-and-swap
   guarded by this controller's fence (its term), with the rule re-applied
   to the state read if the CAS lost a race (an ISR change by the leader);
4. wait for the next change of the picture, and repeat.

The accepted epochs are stored (`ROOT/broker_epochs`, a fenced write after
each pass that changed them), so a new controller starts from what its
predecessor accepted and also catches a broker that restarted while no
controller was watching; with nothing stored (a new cluster) it accepts
the epochs registered when it took over.

Fencing: every write carries `fence_for(term)`. A controller whose lease
lapsed (paused, cut off) fails every write with `NotController` and goes
back to campaigning; its stale picture can change nothing.

Error handling: `Unavailable` (etcd down) and `CasContention` make the pass
stop and retry after a backoff; partitions deleted meanwhile are skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import trio

from minilog.metastore import (
    BrokerSession,
    CasContention,
    Compare,
    ControllerRecord,
    KVStore,
    MetaStoreError,
    NotController,
    PartitionState,
    Put,
    Unavailable,
    UnknownTopicOrPartition,
    fence_for,
    update_partition_state,
)

from .election import ClusterView, next_state
from .follower import Backoff, MetadataFollower
from .picture import ClusterPicture

__all__ = ["Controller", "ControllerStatistics"]

log = logging.getLogger("minilog.broker.cluster")


@dataclass(frozen=True)
class ControllerStatistics:
    terms: int                  # times elected
    passes: int                 # passes over every partition
    changes: int                # partition states written
    fenced: int                 # writes refused because the term was over
    by_rule: dict[str, int] = field(default_factory=dict)   # changes per election rule


class Controller:
    """The controller loop of one broker.

    Args:
        kv: the store.
        follower: keeps the picture current (and wakes the loop).
        unclean: unclean.leader.election.enable.
        rebalance: auto.leader.rebalance.enable.
    """

    def __init__(self, kv: KVStore, follower: MetadataFollower, *, unclean: bool = False,
                 rebalance: bool = True) -> None:
        self.kv = kv
        self.follower = follower
        self.picture: ClusterPicture = follower.picture
        self.unclean = unclean
        self.rebalance = rebalance
        self.term: ControllerRecord | None = None
        self._terms = 0
        self._passes = 0
        self._changes = 0
        self._fenced = 0
        self._by_rule: dict[str, int] = {}
        self._idle = trio.Event()

    def statistics(self) -> ControllerStatistics:
        return ControllerStatistics(self._terms, self._passes, self._changes, self._fenced,
                                    dict(self._by_rule))

    async def run(self, session: BrokerSession) -> None:
        """Campaign, control while elected, campaign again when fenced; until cancelled."""
        backoff = Backoff()
        while True:
            try:
                term = await session.campaign()
            except Unavailable:
                await backoff.sleep()
                continue
            backoff.reset()
            self.term = term
            self._terms += 1
            log.info("broker %d is the controller (epoch %d)", term.broker_id, term.epoch)
            try:
                await self._control(term)
            except NotController as exc:
                self._fenced += 1
                log.warning("controller epoch %d fenced (%s); campaigning again", term.epoch, exc)
            finally:
                self.term = None

    async def _control(self, term: ControllerRecord) -> None:
        stored = self.picture.broker_epochs
        accepted = dict(stored) if stored is not None else {
            b: reg.epoch for b, reg in self.picture.brokers.items()}
        backoff = Backoff()
        while True:
            change = self.follower.change_event()      # taken before the pass: nothing is missed
            try:
                accepted = await self._pass(term, accepted)
                backoff.reset()
            except (Unavailable, CasContention) as exc:
                log.info("controller pass interrupted (%s); retrying", exc)
                await backoff.sleep()
                continue
            await change.wait()

    def view(self, accepted: dict[int, int]) -> ClusterView:
        # A broker this controller never saw is new (or its death was handled already);
        # one seen with another epoch restarted: dead until the pass that handles it is done.
        live = {b for b, reg in self.picture.brokers.items() if accepted.get(b, reg.epoch) == reg.epoch}
        return ClusterView(frozenset(live), frozenset(self.picture.shutting_down), self.unclean,
                           self.rebalance)

    async def _pass(self, term: ControllerRecord, accepted: dict[int, int]) -> dict[int, int]:
        """One pass over every partition; returns the registration epochs now accepted."""
        self._passes += 1
        # Brokers registered now; those with an epoch not yet accepted count as dead in this pass.
        registered = {b: reg.epoch for b, reg in self.picture.brokers.items()}
        view = self.view(accepted)
        fence = fence_for(term, self.picture.keys)
        before = dict(self._by_rule)
        for (topic, p), state in sorted(self.picture.states.items()):
            _rule, wanted = next_state(state, view)
            if wanted is None:
                continue
            await self._write(topic, p, view, fence)
        done = {r: n - before.get(r, 0) for r, n in self._by_rule.items() if n != before.get(r, 0)}
        if done:
            dead = sorted(set(self.picture.brokers) - set(view.live))
            log.info("controller pass: %s (live %s%s)", ", ".join(f"{n} {r}" for r, n in sorted(done.items())),
                     sorted(view.live), f", restarted {dead}" if dead else "")
        # Every partition is right for the deaths seen: accept the brokers' current epochs,
        # and store them, so that the next controller knows them too.
        if registered != self.picture.broker_epochs:
            value = json.dumps({str(b): e for b, e in sorted(registered.items())}).encode()
            result = await self.kv.txn(fence, [Put(self.picture.keys.broker_epochs(), value)])
            if not result.succeeded:
                raise NotController(f"controller epoch {term.epoch} is over")
        return registered

    async def _write(self, topic: str, p: int, view: ClusterView, fence: list[Compare]) -> None:
        last: list[tuple[str, bool]] = []

        def fn(current: PartitionState) -> PartitionState | None:
            rule, wanted = next_state(current, view)
            last.append((rule, wanted is not None))
            return wanted

        try:
            stored = await update_partition_state(self.kv, topic, p, fn, fence=fence,
                                                  keys=self.picture.keys)
        except UnknownTopicOrPartition:
            return                                   # deleted meanwhile
        except (NotController, Unavailable, CasContention):
            raise
        except MetaStoreError as exc:
            log.warning("%s-%d: controller write failed: %s", topic, p, exc)
            return
        rule, wrote = last[-1]
        if wrote:
            self._changes += 1
            self._by_rule[rule] = self._by_rule.get(rule, 0) + 1
            log.debug("%s-%d: %s: leader %d epoch %d isr %s", topic, p, rule, stored.leader,
                     stored.leader_epoch, list(stored.isr))
