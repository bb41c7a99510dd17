"""Request and response objects of the classic group APIs (JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, DescribeGroups).

Only Kafka clients speak these (minilog's own clients use server-side
assignment), so they live beside the Kafka codec rather than in the shared
request model; they follow its rules (slots dataclasses, codec-neutral
names, the handler routes on the class). Member metadata and assignments
are opaque bytes, as in Kafka: the group leader assigns, the broker relays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "JoinGroupRequest", "JoinGroupResponse",
    "SyncGroupRequest", "SyncGroupResponse",
    "HeartbeatRequest", "HeartbeatResponse",
    "LeaveGroupRequest", "LeaveGroupResponse",
    "DescribeGroupsRequest", "DescribeGroupsResponse", "ClassicDescribedGroup", "ClassicDescribedMember",
]


@dataclass(slots=True)
class JoinGroupRequest:
    API_KEY: ClassVar[int] = 11
    group_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int            # -1 (v0): the session timeout
    member_id: str                       # "" to join as a new member
    protocol_type: str                   # "consumer" for Kafka consumers
    protocols: list[tuple[str, bytes]]   # (assignor name, opaque metadata), by preference


@dataclass(slots=True)
class JoinGroupResponse:
    error_code: int
    generation_id: int = -1
    protocol_name: str = ""
    leader: str = ""
    member_id: str = ""
    members: list[tuple[str, bytes]] = field(default_factory=list)   # the leader's answer only


@dataclass(slots=True)
class SyncGroupRequest:
    API_KEY: ClassVar[int] = 14
    group_id: str
    generation_id: int
    member_id: str
    assignments: list[tuple[str, bytes]]   # the leader's: (member id, opaque assignment)


@dataclass(slots=True)
class SyncGroupResponse:
    error_code: int
    assignment: bytes = b""


@dataclass(slots=True)
class HeartbeatRequest:
    API_KEY: ClassVar[int] = 12
    group_id: str
    generation_id: int
    member_id: str


@dataclass(slots=True)
class HeartbeatResponse:
    error_code: int


@dataclass(slots=True)
class LeaveGroupRequest:
    API_KEY: ClassVar[int] = 13
    group_id: str
    member_id: str


@dataclass(slots=True)
class LeaveGroupResponse:
    error_code: int


@dataclass(slots=True)
class DescribeGroupsRequest:
    API_KEY: ClassVar[int] = 15
    groups: list[str]


@dataclass(slots=True)
class ClassicDescribedMember:
    member_id: str
    client_id: str
    client_host: str
    member_metadata: bytes
    member_assignment: bytes


@dataclass(slots=True)
class ClassicDescribedGroup:
    group_id: str
    error_code: int = 0
    group_state: str = "Dead"
    protocol_type: str = ""
    protocol_data: str = ""
    members: list[ClassicDescribedMember] = field(default_factory=list)


@dataclass(slots=True)
class DescribeGroupsResponse:
    groups: list[ClassicDescribedGroup]
