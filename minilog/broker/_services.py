"""What request handlers and the connection server may use of the broker.

Rules:
- This is a leaf module: it imports the protocol, the broker's config and
  metadata types, and nothing that imports it back. `Broker` satisfies
  `BrokerServices` structurally (mypy checks it where the broker hands
  itself to the handlers); handlers, the connection server and the group
  coordinator's handlers see only this interface, never the `Broker` class.
- Handlers take a request object of the request model and a
  `RequestContext` and return a response object (or None: no answer, as
  for a produce with acks=0). They never see which codec a request came
  through; what differs per listener (its address, its codec's API
  versions) is in the context.
- Partition-level work goes through `ReplicaService`, topic
  administration through `TopicAdminService`, cluster metadata through
  `MetadataView`, groups through `GroupService`; each is a Protocol here,
  so a test or another broker shape (a replicated one) can stand in.

Task-safety: everything runs on the broker's trio thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Awaitable, Callable, Iterable, Sequence

from minilog.protocol import ErrorCode

from .config import BrokerConfig
from .metadata import TopicMeta

if TYPE_CHECKING:
    from minilog import protocol as p
    from minilog.protocol import kafka as pk

    from .groups.classic import ClassicGroups

__all__ = [
    "RequestContext",
    "ListenerInfo",
    "PartitionState",
    "BrokerServices",
    "MetadataView",
    "ClusterView",
    "ReplicaService",
    "TopicAdminService",
    "GroupService",
    "Handler",
]


@dataclass(frozen=True)
class ListenerInfo:
    """What a handler may know about the listener a request came through."""

    name: str                       # "native", "kafka", ...
    port: int                       # the bound port (advertised in METADATA)
    advertised_host: str | None     # None: the address the client connected to
    api_versions: tuple[tuple[int, int, int], ...] = ()   # this codec's (key, min, max)


@dataclass
class RequestContext:
    """What a handler may know about the connection a request came from."""

    connection_id: int
    client_host: str
    client_port: int
    local_host: str = ""            # the address the client connected to
    listener: ListenerInfo = field(default_factory=lambda: ListenerInfo("native", 0, None))
    client_id: str = ""
    requests: int = 0               # requests read on this connection so far

    @property
    def advertised_host(self) -> str:
        return self.listener.advertised_host or self.local_host


@dataclass(frozen=True)
class PartitionState:
    """Leadership of one partition, as METADATA reports it and as the control plane
    stores it (`version` counts every change, ISR changes included: Kafka's
    partition epoch)."""

    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    version: int = 0


class ClusterView(Protocol):
    """The cluster as this broker knows it (`BrokerServices.cluster`; None on a single broker)."""

    @property
    def controller_id(self) -> int: ...

    def live_brokers(self, listener: str) -> list[tuple[int, str, int]]:
        """(id, advertised host, port) of every live broker with a listener of that name."""
        ...

    def endpoint(self, broker_id: int, listener: str) -> tuple[str, int] | None:
        """A live broker's advertised (host, port) on the named listener, or None."""
        ...

    def partition_state(self, topic: str, partition: int) -> PartitionState | None:
        """The partition's leader, epoch, replicas and ISR as stored, or None."""
        ...

    async def ensure_offsets_topic(self) -> None:
        """Create the consumer-offsets topic if it does not exist yet (FIND_COORDINATOR)."""
        ...


class MetadataView(Protocol):
    """Read-only cluster metadata."""

    @property
    def cluster_id(self) -> str: ...

    def topic(self, name: str) -> TopicMeta | None: ...

    def topic_names(self) -> list[str]: ...


class ReplicaService(Protocol):
    """The replica manager: partition roles, appends, reads, offsets."""

    def partition_state(self, topic: str, partition: int) -> PartitionState | None: ...

    def describe_partition(self, topic: str, partition: int) -> p.DescribedPartition: ...

    async def append_records(self, topic: str, partition: int, records: p.Records | None,
                             acks: int, timeout_s: float) -> p.ProducePartitionResponse: ...

    async def fetch_records(self, request: p.FetchRequest) -> list[p.FetchTopicResponse]: ...

    def list_offset(self, topic: str, partition: int, timestamp: int) -> p.ListOffsetsPartitionResponse: ...

    def offsets_for_leader_epoch(self, request: p.OffsetForLeaderEpochRequest
                                 ) -> list[p.OffsetForLeaderTopicResult]: ...


class TopicAdminService(Protocol):
    """Topic administration; every method returns (code, message) instead of raising."""

    async def create_topics(self, specs: Sequence[tuple[str, int, int, dict[str, Any]]], *,
                            validate_only: bool = False) -> list[tuple[ErrorCode, str | None]]: ...

    async def create_topic(self, name: str, num_partitions: int, replication_factor: int,
                           configs: dict[str, Any], *, validate_only: bool = False
                           ) -> tuple[ErrorCode, str | None]: ...

    async def auto_create_topics(self, names: Sequence[str]) -> dict[str, ErrorCode]: ...

    async def delete_topic(self, name: str) -> tuple[ErrorCode, str | None]: ...

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False
                                ) -> tuple[ErrorCode, str | None]: ...

    async def alter_topic_configs(self, name: str, changes: dict[str, str | None], *,
                                  validate_only: bool = False) -> tuple[ErrorCode, str | None]: ...


class GroupService(Protocol):
    """The group coordinator, as the group handlers use it."""

    @property
    def heartbeat_interval_ms(self) -> int: ...

    def is_coordinator_for(self, group_id: str) -> bool: ...

    async def heartbeat_request(self, request: p.ConsumerGroupHeartbeatRequest, *,
                                client_host: str) -> p.ConsumerGroupHeartbeatResponse: ...

    def describe_group(self, group_id: str) -> p.DescribedGroup: ...

    async def commit_offsets(self, request: p.OffsetCommitRequest) -> p.OffsetCommitResponse: ...

    def fetch_offsets(self, request: p.OffsetFetchRequest) -> p.OffsetFetchResponse: ...

    def list_groups(self, states: Iterable[str]) -> list[p.ListedGroup]: ...

    async def delete_group(self, group_id: str) -> ErrorCode: ...

    @property
    def classic(self) -> ClassicGroups: ...          # Kafka clients' JoinGroup/SyncGroup groups

    def describe_classic(self, group_id: str) -> pk.ClassicDescribedGroup: ...


class BrokerServices(Protocol):
    """Everything a handler may use. `Broker` implements it."""

    @property
    def broker_id(self) -> int: ...

    @property
    def config(self) -> BrokerConfig: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def metadata(self) -> MetadataView: ...

    @property
    def replicas(self) -> ReplicaService: ...

    @property
    def admin(self) -> TopicAdminService: ...

    @property
    def groups(self) -> GroupService | None: ...

    @property
    def cluster(self) -> ClusterView | None:
        """The cluster picture (None: a single broker, which is the whole cluster)."""
        ...

    async def allocate_producer_id(self, producer_id: int, producer_epoch: int) -> tuple[int, int]:
        """(id, epoch) for INIT_PRODUCER_ID: a bumped epoch for a known id, else a new id."""
        ...


Handler = Callable[[BrokerServices, Any, RequestContext], Awaitable[Any]]
