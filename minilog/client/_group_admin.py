"""Group administration, mixed into `AsyncAdmin` (and so the sync `Admin`).

Rules:
- Every group request goes to the group's coordinator (FIND_COORDINATOR).
- Offsets of a group with active members are never changed: `alter_group_offsets`
  and an executed reset raise `NonEmptyGroupError` (as Kafka's
  kafka-consumer-groups.sh refuses), and the coordinator refuses such a
  commit on its own too (member_epoch -1 is only accepted for an empty group).
- A reset target outside a partition's log is clamped to [log start, log end]
  with a warning in the plan, as Kafka does.
- An executed reset of a group the coordinator does not know (no members, no
  committed offsets) creates it; `allow_new_group=False` refuses that with
  `GroupIdNotFoundError` instead (the CLI's default, so a typo in a group id
  is not silently turned into a new group).

Theory of operation: `plan_offset_reset` reads the committed offsets, the
log start and end offsets, and (for --to-datetime) the first offset at or
after the time, and returns a `ResetPlan` (one row per partition: current,
target, warning). `reset_offsets(..., execute=True)` checks that the group
has no members and commits the plan with member epoch -1.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minilog.errors import (
    ConfigError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from minilog.protocol import ApiKey, ErrorCode

__all__ = ["GroupAdminMixin", "GroupListing", "GroupDescription", "MemberDescription",
           "PartitionOffsets", "ResetPlan", "ResetRow"]

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    client_id: str
    host: str
    member_epoch: int
    subscriptions: list[str]
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None          # None: nothing committed
    log_end_offset: int            # -1: the partition does not exist (its topic was deleted)
    lag: int | None                # log end - committed, negative when the commit is past the
                                   # log end; None without a commit or without the partition
    member_id: str | None          # the member that owns the partition now


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    group_epoch: int
    assignor: str
    members: list[MemberDescription]
    offsets: list[PartitionOffsets] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        """Records behind, summed over partitions (a negative lag does not offset another's)."""
        return sum(o.lag for o in self.offsets if o.lag is not None and o.lag > 0)


@dataclass(frozen=True)
class ResetRow:
    topic: str
    partition: int
    current: int | None
    target: int
    warning: str | None = None


@dataclass(frozen=True)
class ResetPlan:
    group_id: str
    topic: str
    rows: list[ResetRow]
    active_members: int
    new_group: bool = False        # the coordinator does not know the group (yet)

    @property
    def warnings(self) -> list[str]:
        return [r.warning for r in self.rows if r.warning]


def _to_ms(when) -> int:
    """ms since the epoch of a datetime (naive = local time) or of an int >= 0.

    Raises:
        ConfigError (a ValueError): not a datetime or int, or a time that
        cannot be expressed as ms since 1970-01-01T00:00:00Z (year 1 in a
        time zone east of UTC, a time before the epoch).
    """
    if isinstance(when, _dt.datetime):
        try:
            if when.tzinfo is None:
                when = when.astimezone()          # naive = local time, as Kafka's tool
            ms = int(when.timestamp() * 1000)
        except (ValueError, OverflowError, OSError) as exc:
            raise ConfigError("to_datetime", f"{when.isoformat()} is out of range: {exc}") from None
        if ms < 0:
            raise ConfigError("to_datetime",
                              f"{when.isoformat()} is before 1970-01-01T00:00:00Z")
        return ms
    if type(when) is int and when >= 0:
        return when
    raise ConfigError("to_datetime", f"expected a datetime or ms since the epoch, not {when!r}")


class GroupAdminMixin:
    """Group methods for AsyncAdmin. Uses `self._cluster`, `self._request`, `self.list_offsets`."""

    if TYPE_CHECKING:   # provided by AsyncAdmin
        async def _request(self, api_key: int, payload: dict, node: int | None = None) -> dict: ...
        async def list_offsets(self, query: dict) -> dict: ...
        async def metadata(self) -> Any: ...

    async def _coordinator_request(self, group_id: str, api_key: int, payload: dict) -> dict:
        found = await self._request(ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": [group_id]})
        entry = found["coordinators"][0]
        if entry["error_code"]:
            raise error_for_code(entry["error_code"], entry.get("error_message"))
        return await self._request(api_key, payload, entry["node_id"])

    async def list_groups(self, states: list[str] | None = None) -> list[GroupListing]:
        """Every group the cluster knows (with members or committed offsets)."""
        payload = await self._request(ApiKey.LIST_GROUPS, {"states_filter": list(states or [])})
        if payload["error_code"]:
            raise error_for_code(payload["error_code"])
        return [GroupListing(g["group_id"], g["group_state"]) for g in payload["groups"]]

    async def _describe_raw(self, group_id: str) -> dict:
        payload = await self._coordinator_request(group_id, ApiKey.CONSUMER_GROUP_DESCRIBE,
                                                  {"group_ids": [group_id]})
        g = payload["groups"][0]
        if g["error_code"]:
            raise error_for_code(g["error_code"], g.get("error_message")
                                 or f"unknown group {group_id!r}")
        return g

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """{(topic, partition): committed offset} of every partition the group committed."""
        payload = await self._coordinator_request(group_id, ApiKey.OFFSET_FETCH, {
            "group_id": group_id, "member_id": None, "member_epoch": -1, "topics": None})
        if payload["error_code"]:
            raise error_for_code(payload["error_code"])
        return {(t["topic"], q["partition"]): q["committed_offset"]
                for t in payload["topics"] for q in t["partitions"] if q["committed_offset"] >= 0}

    async def describe_group(self, group_id: str) -> GroupDescription:
        """State, members and assignment, committed offsets, log end offsets and lag.

        Raises:
            GroupIdNotFoundError: the group has neither members nor offsets.
        """
        g = await self._describe_raw(group_id)
        members = [MemberDescription(m["member_id"], m["client_id"], m["client_host"],
                                     m["member_epoch"], list(m["subscribed_topic_names"]),
                                     sorted((a["topic"], p) for a in m["assignment"]
                                            for p in a["partitions"]))
                   for m in g["members"]]
        owner = {tp: m.member_id for m in members for tp in m.assignment}
        committed = await self.list_group_offsets(group_id)
        tps = sorted(set(committed) | set(owner))
        ends = await self._log_ends(tps)
        offsets = []
        for tp in tps:
            c = committed.get(tp)
            end = ends.get(tp, -1)
            offsets.append(PartitionOffsets(tp[0], tp[1], c, end,
                                            end - c if c is not None and end >= 0 else None,
                                            owner.get(tp)))
        return GroupDescription(g["group_id"], g["group_state"], g["group_epoch"],
                                g["assignor_name"], members, offsets)

    async def _log_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Log end offsets of the partitions that exist; a deleted topic's are left out
        (committed offsets can outlive a topic for a moment, or on an older broker)."""
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in tps:
            by_topic.setdefault(tp[0], []).append(tp)
        ends: dict[TopicPartition, int] = {}
        for topic_tps in by_topic.values():
            try:
                ends.update(await self.list_offsets({tp: "latest" for tp in topic_tps}))
            except UnknownTopicOrPartitionError:
                for tp in topic_tps:           # one partition may be gone: ask one by one
                    try:
                        ends.update(await self.list_offsets({tp: "latest"}))
                    except UnknownTopicOrPartitionError:
                        pass
        return ends

    async def delete_group(self, group_id: str) -> None:
        """Delete an empty group and its committed offsets.

        Raises:
            GroupIdNotFoundError, NonEmptyGroupError.
        """
        payload = await self._coordinator_request(group_id, ApiKey.DELETE_GROUPS,
                                                  {"group_ids": [group_id]})
        code = payload["results"][0]["error_code"]
        if code == ErrorCode.GROUP_ID_NOT_FOUND:
            raise GroupIdNotFoundError(message=f"unknown group {group_id!r}")
        if code == ErrorCode.NON_EMPTY_GROUP:
            raise NonEmptyGroupError(message=f"group {group_id!r} has active members; "
                                             "stop its consumers first")
        if code:
            raise error_for_code(code)

    async def alter_group_offsets(self, group_id: str, offsets: dict[TopicPartition, int]) -> None:
        """Set committed offsets of an empty (or new) group.

        Raises:
            NonEmptyGroupError: the group has active members.
            BrokerError: the first per-partition error (e.g. unknown partition).
        """
        try:
            g = await self._describe_raw(group_id)
            if g["members"]:
                raise NonEmptyGroupError(message=(
                    f"group {group_id!r} has {len(g['members'])} active member(s); "
                    "stop its consumers before changing its offsets"))
        except GroupIdNotFoundError:
            pass
        by_topic: dict[str, list[dict]] = {}
        for (t, p), o in sorted(offsets.items()):
            by_topic.setdefault(t, []).append({"partition": p, "committed_offset": o,
                                               "committed_leader_epoch": -1,
                                               "committed_metadata": None})
        payload = await self._coordinator_request(group_id, ApiKey.OFFSET_COMMIT, {
            "group_id": group_id, "member_id": "", "member_epoch": -1,
            "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]})
        for t in payload["topics"]:
            for q in t["partitions"]:
                code = q["error_code"]
                if code == ErrorCode.UNKNOWN_MEMBER_ID:
                    raise NonEmptyGroupError(message=f"group {group_id!r} has active members")
                if code:
                    raise error_for_code(code, f"{t['topic']}-{q['partition']}: "
                                         f"{error_for_code(code).message}")

    async def plan_offset_reset(self, group_id: str, topic: str, *, to_earliest: bool = False,
                                to_latest: bool = False, to_offset: int | None = None,
                                to_datetime=None, shift_by: int | None = None) -> ResetPlan:
        """What a reset of `topic`'s offsets in `group_id` would commit (changes nothing).

        Exactly one of the keyword targets must be given.

        Raises:
            ValueError: no target or several, or a bad datetime.
            UnknownTopicOrPartitionError: the topic does not exist.
        """
        chosen = [to_earliest, to_latest, to_offset is not None, to_datetime is not None,
                  shift_by is not None]
        if sum(bool(c) for c in chosen) != 1:
            raise ValueError("give exactly one of to_earliest, to_latest, to_offset, "
                             "to_datetime, shift_by")
        meta = await self.metadata()
        count = meta.topics.get(topic)
        if not count:
            raise UnknownTopicOrPartitionError(message=f"unknown topic {topic!r}")
        tps = [(topic, p) for p in range(count)]
        new_group = False
        try:
            g = await self._describe_raw(group_id)
            active = len(g["members"])
        except GroupIdNotFoundError:
            active, new_group = 0, True
        committed = await self.list_group_offsets(group_id)
        starts = await self.list_offsets({tp: "earliest" for tp in tps})
        ends = await self.list_offsets({tp: "latest" for tp in tps})
        at_time = {}
        if to_datetime is not None:
            ms = _to_ms(to_datetime)
            at_time = await self.list_offsets({tp: ms for tp in tps})
        rows = []
        for tp in tps:
            lo, hi, cur = starts[tp], ends[tp], committed.get(tp)
            if to_earliest:
                want = lo
            elif to_latest:
                want = hi
            elif to_offset is not None:
                want = to_offset
            elif to_datetime is not None:
                want = at_time[tp] if at_time[tp] >= 0 else hi
            else:
                want = (cur if cur is not None else lo) + (shift_by or 0)
            target = min(max(want, lo), hi)
            warning = None
            if target != want:
                warning = (f"{tp[0]}-{tp[1]}: offset {want} is outside the log "
                           f"[{lo}, {hi}]; clamped to {target}")
            rows.append(ResetRow(tp[0], tp[1], cur, target, warning))
        return ResetPlan(group_id, topic, rows, active, new_group)

    async def reset_offsets(self, group_id: str, topic: str, *, execute: bool = False,
                            allow_new_group: bool = True, **target) -> ResetPlan:
        """Plan a reset (see plan_offset_reset) and, with execute=True, apply it.

        Raises:
            NonEmptyGroupError: execute=True while the group has active members.
            GroupIdNotFoundError: execute=True, allow_new_group=False and the
                group is unknown (nothing is committed).
        """
        if not isinstance(group_id, str) or not group_id:
            raise ConfigError("group_id", "expected a non-empty string")
        plan = await self.plan_offset_reset(group_id, topic, **target)
        if execute:
            if plan.new_group and not allow_new_group:
                raise GroupIdNotFoundError(message=(
                    f"unknown group {group_id!r}; resetting it would create it"))
            if plan.active_members:
                raise NonEmptyGroupError(message=(
                    f"group {group_id!r} has {plan.active_members} active member(s); "
                    "stop its consumers before resetting offsets"))
            await self.alter_group_offsets(group_id, {(r.topic, r.partition): r.target
                                                      for r in plan.rows})
        return plan
