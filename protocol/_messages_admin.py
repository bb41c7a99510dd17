"""The request model, part 2: topic administration (see `_messages.py` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._api import ApiKey

__all__ = [
    "TopicResult",
    "CreatableTopic",
    "CreateTopicsRequest",
    "CreateTopicsResponse",
    "DeleteTopicsRequest",
    "DeleteTopicsResponse",
    "CreatePartitionsTopic",
    "CreatePartitionsRequest",
    "CreatePartitionsResponse",
    "DescribeConfigsResource",
    "DescribeConfigsRequest",
    "DescribeConfigsEntry",
    "DescribeConfigsResult",
    "DescribeConfigsResponse",
    "AlterableConfig",
    "AlterConfigsResource",
    "IncrementalAlterConfigsRequest",
    "AlterConfigsResult",
    "IncrementalAlterConfigsResponse",
    "DescribeTopicPartitionsRequest",
    "DescribedPartition",
    "DescribedTopic",
    "DescribeTopicPartitionsResponse",
    "InitProducerIdRequest",
    "InitProducerIdResponse",
]


@dataclass(slots=True)
class TopicResult:
    name: str
    error_code: int
    error_message: str | None = None


# -- topic administration --------------------------------------------------------------------

@dataclass(slots=True)
class CreatableTopic:
    name: str
    num_partitions: int                  # -1: the broker's num.partitions
    replication_factor: int              # -1: the broker's default.replication.factor
    configs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CreateTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_TOPICS
    topics: list[CreatableTopic]
    timeout_ms: int
    validate_only: bool = False


@dataclass(slots=True)
class CreateTopicsResponse:
    topics: list[TopicResult]


@dataclass(slots=True)
class DeleteTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_TOPICS
    topics: list[str]
    timeout_ms: int


@dataclass(slots=True)
class DeleteTopicsResponse:
    topics: list[TopicResult]


@dataclass(slots=True)
class CreatePartitionsTopic:
    name: str
    count: int


@dataclass(slots=True)
class CreatePartitionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_PARTITIONS
    topics: list[CreatePartitionsTopic]
    timeout_ms: int
    validate_only: bool = False


@dataclass(slots=True)
class CreatePartitionsResponse:
    results: list[TopicResult]


@dataclass(slots=True)
class DescribeConfigsResource:
    resource_type: int                   # RESOURCE_TOPIC or RESOURCE_BROKER
    resource_name: str
    config_names: list[str] | None = None


@dataclass(slots=True)
class DescribeConfigsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_CONFIGS
    resources: list[DescribeConfigsResource]


@dataclass(slots=True)
class DescribeConfigsEntry:
    name: str
    value: str | None
    read_only: bool
    is_default: bool
    source: str                          # TOPIC_CONFIG | STATIC_BROKER_CONFIG | DEFAULT_CONFIG


@dataclass(slots=True)
class DescribeConfigsResult:
    resource_type: int
    resource_name: str
    error_code: int = 0
    error_message: str | None = None
    configs: list[DescribeConfigsEntry] = field(default_factory=list)


@dataclass(slots=True)
class DescribeConfigsResponse:
    results: list[DescribeConfigsResult]


@dataclass(slots=True)
class AlterableConfig:
    name: str
    op: int                              # CONFIG_OP_SET or CONFIG_OP_DELETE
    value: str | None = None


@dataclass(slots=True)
class AlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: list[AlterableConfig]


@dataclass(slots=True)
class IncrementalAlterConfigsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.INCREMENTAL_ALTER_CONFIGS
    resources: list[AlterConfigsResource]
    validate_only: bool = False


@dataclass(slots=True)
class AlterConfigsResult:
    resource_type: int
    resource_name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class IncrementalAlterConfigsResponse:
    results: list[AlterConfigsResult]


@dataclass(slots=True)
class DescribeTopicPartitionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_TOPIC_PARTITIONS
    topics: list[str] | None = None


@dataclass(slots=True)
class DescribedPartition:
    partition: int
    error_code: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    log_start_offset: int = -1
    log_end_offset: int = -1
    high_watermark: int = -1
    size_bytes: int = -1
    cleanable_ratio: float | None = None    # compacted topics: dirty / cleanable bytes


@dataclass(slots=True)
class DescribedTopic:
    topic: str
    error_code: int
    partitions: list[DescribedPartition]
    is_internal: bool = False


@dataclass(slots=True)
class DescribeTopicPartitionsResponse:
    topics: list[DescribedTopic]


@dataclass(slots=True)
class InitProducerIdRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.INIT_PRODUCER_ID
    transactional_id: str | None
    transaction_timeout_ms: int
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass(slots=True)
class InitProducerIdResponse:
    error_code: int
    producer_id: int
    producer_epoch: int
    error_message: str | None = None
