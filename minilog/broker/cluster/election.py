"""The controller's rules: what a partition's state should become, given who is alive. Pure.

`next_state(state, view)` is the whole policy; the controller (controller.py)
applies it to every partition by compare-and-swap, and a test can check it
case by case. The controller is level-triggered: it asks "is this state
right for the cluster as it is now?", never "what happened?", so a new
controller that re-reads everything, a watch that skipped intermediate
changes, and a retry after etcd was down all reach the same states.

Rules, first match wins (Kafka's controller, with KIP-966's last replica
standing; `live` means registered with the epoch the controller knows, so a
broker that restarted counts as dead until its removal from ISRs is done):

    case                      condition                                   new state
    ------------------------  ------------------------------------------  ---------------------------------------
    controlled-shutdown       leader live, asked to shut down, another    leader = first such (replica order),
                              live ISR member not shutting down           epoch + 1, ISR = live ISR
    preferred-rebalance       leader live, rebalance on, preferred        leader = preferred, epoch + 1,
                              replica != leader, live, in ISR, not        ISR = live ISR
                              shutting down
    dead-followers-out        leader live, some ISR member dead           same leader and epoch, ISR = live ISR
    steady                    leader live                                 (no change)
    clean-election            leader dead or none, a live ISR member      leader = first live ISR member (replica
                                                                          order, not shutting down first),
                                                                          epoch + 1, ISR = live ISR
    unclean-election          no live ISR member, unclean election on,    leader = first live replica,
                              a live replica                              epoch + 1, ISR = (leader,)
    last-replica-standing     no live ISR member                          leader = NO_LEADER (epoch + 1 if there
                                                                          was a leader), ISR = the last leader
                                                                          alone (it has every acknowledged
                                                                          write); elected again when it returns

Why the ISR keeps exactly one member when nobody is alive: every ISR member
holds every acknowledged write (the high watermark never passes an ISR
member's log end), so any would do; keeping the last leader alone means a
dead follower does not stay in the ISR forever, and the partition comes
back as soon as the replica most likely to be complete returns, never with
an out-of-sync one (unless unclean election is on).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, replace

from minilog.metastore import NO_LEADER, PartitionState

__all__ = ["ClusterView", "next_state", "RULES"]

RULES = ("controlled-shutdown", "preferred-rebalance", "dead-followers-out", "steady",
         "clean-election", "unclean-election", "last-replica-standing")


@dataclass(frozen=True)
class ClusterView:
    """What the rules may know about the brokers."""

    live: Set[int]                       # registered, with the epoch the controller knows
    shutting_down: Set[int] = frozenset()
    unclean: bool = False                # unclean.leader.election.enable
    rebalance: bool = True               # auto.leader.rebalance.enable


def _in_order(state: PartitionState, members: Set[int]) -> list[int]:
    """`members` in replica order (preferred first)."""
    return [r for r in state.replicas if r in members]


def next_state(state: PartitionState, view: ClusterView) -> tuple[str, PartitionState | None]:
    """(rule that matched, the state to store or None when `state` is right as it is)."""
    live_isr = _in_order(state, set(state.isr) & set(view.live))
    movable = [b for b in live_isr if b not in view.shutting_down]

    def elect(leader: int, isr: list[int]) -> PartitionState:
        return replace(state, leader=leader, leader_epoch=state.leader_epoch + 1, isr=tuple(isr))

    if state.leader != NO_LEADER and state.leader in view.live:
        others = [b for b in movable if b != state.leader]
        if state.leader in view.shutting_down and others:
            return "controlled-shutdown", elect(others[0], live_isr)
        preferred = state.replicas[0]
        if (view.rebalance and preferred != state.leader and preferred in movable
                and state.leader not in view.shutting_down):
            return "preferred-rebalance", elect(preferred, live_isr)
        if len(live_isr) != len(state.isr):
            return "dead-followers-out", replace(state, isr=tuple(live_isr))
        return "steady", None
    if live_isr:
        return "clean-election", elect((movable or live_isr)[0], live_isr)
    live_replicas = _in_order(state, set(view.live))
    if view.unclean and live_replicas:
        candidates = [b for b in live_replicas if b not in view.shutting_down] or live_replicas
        return "unclean-election", elect(candidates[0], [candidates[0]])
    if state.leader == NO_LEADER:
        return "last-replica-standing", None             # already offline: wait for the ISR member
    last = (state.leader,) if state.leader in state.isr else state.isr[:1]
    return "last-replica-standing", replace(state, leader=NO_LEADER,
                                            leader_epoch=state.leader_epoch + 1, isr=last)
