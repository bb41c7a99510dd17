"""The request model's view of the groups: descriptions, listings and the wire <-> pure payloads.

Rules:
- The pure layer (`_group.Group`, `_offsets.OffsetStore`, `_classic`)
  speaks dicts and tuples; handlers speak the codec-neutral request model
  (`minilog.protocol`). Every translation between the two is here, so the
  coordinator keeps only ownership, ordering and time.
- A group id is one kind or the other (native or classic), but each
  describe API shows both kinds: a native DescribeGroups shows a classic
  group with its generation standing for the epochs, Kafka's DescribeGroups
  shows a native group as a "consumer" group with its members' ids.
- Everything here is pure: the coordinator passes in what it read (the
  group, the classic description, the store, whether the partition is
  loaded) and acts on what comes back.
"""

from __future__ import annotations

from typing import Any

from minilog.protocol import (
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    DescribedGroup,
    DescribedGroupMember,
    ErrorCode,
    OffsetCommitPartitionResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopicResponse,
    OffsetFetchPartitionResponse,
    OffsetFetchResponse,
    OffsetFetchTopicResponse,
    TopicPartitions,
)
from minilog.protocol.kafka import (
    ClassicDescribedGroup,
    ClassicDescribedMember,
    decode_assignment,
    decode_subscription_topics,
)

from ._group import Group, GroupState, HeartbeatResult
from ._offsets import OffsetStore

__all__ = ["describe_native", "describe_classic", "group_state", "heartbeat_payload", "heartbeat_response",
           "commit_payload", "commit_response", "fetch_response"]

# A classic group's state under the native group states' names.
_CLASSIC_STATES = {"Empty": "empty", "PreparingRebalance": "assigning",
                   "CompletingRebalance": "reconciling", "Stable": "stable", "Dead": "dead"}


def describe_native(group_id: str, *, group: Group | None, classic: dict[str, Any] | None,
                    store: OffsetStore, loaded: bool, default_assignor: str) -> DescribedGroup:
    """A group as minilog's DescribeGroups shows it (classic groups included).

    Args:
        group: the native group, if one is in memory.
        classic: `ClassicGroups.describe(group_id)`, None when not a classic group.
        store: the committed offsets and group metadata.
        loaded: whether the group's offsets partition is loaded here.
    """
    entry = DescribedGroup(group_id, assignor_name=default_assignor)
    if not loaded:
        entry.error_code = int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
    elif classic is not None and (classic["members"] or group is None):
        _describe_classic_as_native(entry, classic)
    elif group is not None:
        d = group.describe()
        entry.group_state, entry.group_epoch = d["group_state"], d["group_epoch"]
        entry.assignment_epoch, entry.assignor_name = d["assignment_epoch"], d["assignor_name"]
        entry.members = [DescribedGroupMember(
            m["member_id"], m["client_id"], m["client_host"], m["member_epoch"],
            m["subscribed_topic_names"], tps(m["assignment"]) or []) for m in d["members"]]
    elif group_id in store.groups():
        meta = store.metadata.get(group_id)
        if meta:
            entry.group_epoch = entry.assignment_epoch = meta.group_epoch
            entry.assignor_name = meta.assignor
    else:
        entry.error_code = int(ErrorCode.GROUP_ID_NOT_FOUND)
        entry.group_state = "dead"
        entry.error_message = f"unknown group {group_id!r}"
    return entry


def _describe_classic_as_native(entry: DescribedGroup, d: dict[str, Any]) -> None:
    """Fill a native description from a classic group's: the generation stands for the epochs,
    the chosen protocol for the assignor, and the members' subscriptions and assignments are read
    from Kafka's consumer protocol bytes when they are in that format."""
    entry.group_state = _CLASSIC_STATES[d["group_state"]]
    entry.group_epoch = entry.assignment_epoch = d["generation_id"]
    entry.assignor_name = d["protocol_data"] or entry.assignor_name
    entry.members = [DescribedGroupMember(
        m["member_id"], m["client_id"], m["client_host"], d["generation_id"],
        decode_subscription_topics(m["member_metadata"]) or [],
        [TopicPartitions(t, ps) for t, ps in decode_assignment(m["member_assignment"]) or []])
        for m in d["members"]]


def describe_classic(group_id: str, *, group: Group | None, classic: dict[str, Any] | None,
                     store: OffsetStore) -> ClassicDescribedGroup:
    """A group as Kafka's DescribeGroups shows it (minilog's own groups included)."""
    if classic is not None:
        return ClassicDescribedGroup(group_id, 0, str(classic["group_state"]), str(classic["protocol_type"]),
                                     str(classic["protocol_data"]), [
            ClassicDescribedMember(m["member_id"], m["client_id"], m["client_host"],
                                   m["member_metadata"], m["member_assignment"])
            for m in classic["members"]])
    if group is not None and group.members:
        return ClassicDescribedGroup(group_id, 0, "Stable", "consumer", group.assignor, [
            ClassicDescribedMember(m, "", "", b"", b"") for m in group.members])
    if group is not None or group_id in store.groups():
        return ClassicDescribedGroup(group_id, 0, "Empty", "consumer")
    return ClassicDescribedGroup(group_id, 0, "Dead")


def group_state(group: Group | None, classic: dict[str, Any] | None) -> str:
    """The group's state by the native names (ListGroups' filter and column)."""
    if classic is not None and classic["members"]:
        return _CLASSIC_STATES[str(classic["group_state"])]
    return group.state.value if group is not None else GroupState.EMPTY.value


def tps(tp_list: list[dict[str, Any]] | None) -> list[TopicPartitions] | None:
    """The pure layer's [{"topic", "partitions"}] as request-model objects."""
    if tp_list is None:
        return None
    return [TopicPartitions(tp["topic"], list(tp["partitions"])) for tp in tp_list]


def heartbeat_payload(request: ConsumerGroupHeartbeatRequest) -> dict[str, Any]:
    """A ConsumerGroupHeartbeat request as the pure layer's payload."""
    owned = request.topic_partitions
    return {"group_id": request.group_id, "member_id": request.member_id,
            "member_epoch": request.member_epoch, "rebalance_timeout_ms": request.rebalance_timeout_ms,
            "subscribed_topic_names": request.subscribed_topic_names,
            "server_assignor": request.server_assignor,
            "topic_partitions": None if owned is None else [
                {"topic": tp.topic, "partitions": tp.partitions} for tp in owned],
            "client_id": request.client_id, "session_timeout_ms": request.session_timeout_ms}


def heartbeat_response(result: HeartbeatResult) -> ConsumerGroupHeartbeatResponse:
    return ConsumerGroupHeartbeatResponse(0, None, result.member_id, result.member_epoch,
                                          result.heartbeat_interval_ms, tps(result.assignment))


def commit_payload(request: OffsetCommitRequest) -> list[dict[str, Any]]:
    """An OffsetCommit request's topics as the coordinator's `commit` takes them."""
    return [{"topic": t.topic, "partitions": [
        {"partition": q.partition, "committed_offset": q.committed_offset,
         "committed_leader_epoch": q.committed_leader_epoch,
         "committed_metadata": q.committed_metadata} for q in t.partitions]}
        for t in request.topics]


def commit_response(request: OffsetCommitRequest,
                    codes: dict[tuple[str, int], ErrorCode]) -> OffsetCommitResponse:
    return OffsetCommitResponse([OffsetCommitTopicResponse(t.topic, [
        OffsetCommitPartitionResponse(q.partition, int(codes[(t.topic, q.partition)]))
        for q in t.partitions]) for t in request.topics])


def fetch_response(found: dict[tuple[str, int], Any]) -> OffsetFetchResponse:
    """`OffsetStore.fetch`'s answer ((topic, partition) -> OffsetAndMetadata | None) on the wire."""
    by_topic: dict[str, list[OffsetFetchPartitionResponse]] = {}
    for (topic, part), om in sorted(found.items()):
        by_topic.setdefault(topic, []).append(OffsetFetchPartitionResponse(
            part, om.offset if om else -1, om.leader_epoch if om else -1,
            om.metadata if om else None, 0))
    return OffsetFetchResponse(0, [OffsetFetchTopicResponse(t, ps) for t, ps in by_topic.items()])
