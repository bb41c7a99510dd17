"""The request model, part 3: consumer groups (see `_messages.py` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ._api import ApiKey

__all__ = [
    "TopicPartitions",
    "FindCoordinatorRequest",
    "Coordinator",
    "FindCoordinatorResponse",
    "ConsumerGroupHeartbeatRequest",
    "ConsumerGroupHeartbeatResponse",
    "ConsumerGroupDescribeRequest",
    "DescribedGroupMember",
    "DescribedGroup",
    "ConsumerGroupDescribeResponse",
    "OffsetCommitPartition",
    "OffsetCommitTopic",
    "OffsetCommitRequest",
    "OffsetCommitPartitionResponse",
    "OffsetCommitTopicResponse",
    "OffsetCommitResponse",
    "OffsetFetchRequest",
    "OffsetFetchPartitionResponse",
    "OffsetFetchTopicResponse",
    "OffsetFetchResponse",
    "ListGroupsRequest",
    "ListedGroup",
    "ListGroupsResponse",
    "DeleteGroupsRequest",
    "DeleteGroupsResult",
    "DeleteGroupsResponse",
]


@dataclass(slots=True)
class TopicPartitions:
    topic: str
    partitions: list[int]


# -- consumer groups -------------------------------------------------------------------------

@dataclass(slots=True)
class FindCoordinatorRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.FIND_COORDINATOR
    key_type: int                        # 0: group
    keys: list[str]


@dataclass(slots=True)
class Coordinator:
    key: str
    node_id: int = -1
    host: str = ""
    port: int = -1
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class FindCoordinatorResponse:
    coordinators: list[Coordinator]


@dataclass(slots=True)
class ConsumerGroupHeartbeatRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CONSUMER_GROUP_HEARTBEAT
    group_id: str
    member_id: str                       # "" to join; the coordinator assigns one
    member_epoch: int                    # 0 to join, -1 to leave, else the current epoch
    rebalance_timeout_ms: int
    subscribed_topic_names: list[str] | None     # None: unchanged since the last heartbeat
    server_assignor: str | None
    topic_partitions: list[TopicPartitions] | None   # partitions the member owns now
    client_id: str
    session_timeout_ms: int | None = None        # None: the broker's default


@dataclass(slots=True)
class ConsumerGroupHeartbeatResponse:
    error_code: int
    error_message: str | None
    member_id: str | None
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: list[TopicPartitions] | None     # None: unchanged


@dataclass(slots=True)
class ConsumerGroupDescribeRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CONSUMER_GROUP_DESCRIBE
    group_ids: list[str]


@dataclass(slots=True)
class DescribedGroupMember:
    member_id: str
    client_id: str
    client_host: str
    member_epoch: int
    subscribed_topic_names: list[str]
    assignment: list[TopicPartitions]


@dataclass(slots=True)
class DescribedGroup:
    group_id: str
    error_code: int = 0
    error_message: str | None = None
    group_state: str = "empty"          # empty | assigning | reconciling | stable | dead
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor_name: str = ""
    members: list[DescribedGroupMember] = field(default_factory=list)


@dataclass(slots=True)
class ConsumerGroupDescribeResponse:
    groups: list[DescribedGroup]


@dataclass(slots=True)
class OffsetCommitPartition:
    partition: int
    committed_offset: int
    committed_leader_epoch: int = -1
    committed_metadata: str | None = None


@dataclass(slots=True)
class OffsetCommitTopic:
    topic: str
    partitions: list[OffsetCommitPartition]


@dataclass(slots=True)
class OffsetCommitRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_COMMIT
    group_id: str
    member_id: str
    member_epoch: int                    # -1 for a commit outside group membership
    topics: list[OffsetCommitTopic]


@dataclass(slots=True)
class OffsetCommitPartitionResponse:
    partition: int
    error_code: int


@dataclass(slots=True)
class OffsetCommitTopicResponse:
    topic: str
    partitions: list[OffsetCommitPartitionResponse]


@dataclass(slots=True)
class OffsetCommitResponse:
    topics: list[OffsetCommitTopicResponse]


@dataclass(slots=True)
class OffsetFetchRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_FETCH
    group_id: str
    member_id: str | None
    member_epoch: int
    topics: list[TopicPartitions] | None     # None: every partition the group committed


@dataclass(slots=True)
class OffsetFetchPartitionResponse:
    partition: int
    committed_offset: int
    committed_leader_epoch: int
    metadata: str | None
    error_code: int = 0


@dataclass(slots=True)
class OffsetFetchTopicResponse:
    topic: str
    partitions: list[OffsetFetchPartitionResponse]


@dataclass(slots=True)
class OffsetFetchResponse:
    error_code: int
    topics: list[OffsetFetchTopicResponse]


@dataclass(slots=True)
class ListGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_GROUPS
    states_filter: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    group_state: str


@dataclass(slots=True)
class ListGroupsResponse:
    error_code: int
    groups: list[ListedGroup]


@dataclass(slots=True)
class DeleteGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_GROUPS
    group_ids: list[str]


@dataclass(slots=True)
class DeleteGroupsResult:
    group_id: str
    error_code: int


@dataclass(slots=True)
class DeleteGroupsResponse:
    results: list[DeleteGroupsResult]
