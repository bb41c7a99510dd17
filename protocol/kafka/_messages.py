"""The Kafka APIs minilog speaks, as data: key, versions, request and response schemas.

Facts from Kafka's message definitions (clients/src/main/resources/common/
message/*.json), restricted to the versions minilog implements. Each range
starts at v0 because old librdkafka enables a feature only when the
advertised range includes an exact low version. Field names are the
snake_case forms of Kafka's; where Kafka's JSON names a field for a later
version (e.g. OffsetCommit's `GenerationIdOrMemberEpoch`), the later name is
kept so one handler serves every version.

Not here on purpose: telemetry (key 71; librdkafka would start pushing
metrics), transactions, SASL, and every flexible-only API. The only flexible
version in this table is ApiVersions v3 (`flexible="3+"`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import Array, Field, parse_versions

__all__ = ["Api", "APIS", "API_BY_KEY", "ApiKey"]

F = Field


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    versions: str                  # the versions minilog accepts and answers, e.g. "0-4"
    flexible: str | None           # the flexible versions, or None
    request: tuple[Field, ...]
    response: tuple[Field, ...]

    @property
    def version_min(self) -> int:
        bounds = parse_versions(self.versions)
        assert bounds is not None
        return bounds[0]

    @property
    def version_max(self) -> int:
        bounds = parse_versions(self.versions)
        assert bounds is not None
        return bounds[1]

    def is_flexible(self, version: int) -> bool:
        bounds = parse_versions(self.flexible)
        return bounds is not None and bounds[0] <= version <= bounds[1]


class ApiKey:
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22


_THROTTLE_V1 = F("throttle_time_ms", "int32", "1+")

PRODUCE = Api(ApiKey.PRODUCE, "Produce", "0-7", None, (
    F("transactional_id", "string", "3+", nullable="3+", default=None),
    F("acks", "int16"),
    F("timeout_ms", "int32"),
    F("topic_data", Array((
        F("name", "string"),
        F("partition_data", Array((
            F("index", "int32"),
            F("records", "records", nullable="0+"),
        ))),
    ))),
), (
    F("responses", Array((
        F("name", "string"),
        F("partition_responses", Array((
            F("index", "int32"),
            F("error_code", "int16"),
            F("base_offset", "int64"),
            F("log_append_time_ms", "int64", "2+", default=-1),
            F("log_start_offset", "int64", "5+", default=-1),
        ))),
    ))),
    _THROTTLE_V1,
))

FETCH = Api(ApiKey.FETCH, "Fetch", "0-4", None, (
    F("replica_id", "int32", default=-1),
    F("max_wait_ms", "int32"),
    F("min_bytes", "int32"),
    F("max_bytes", "int32", "3+", default=0x7FFFFFFF),
    F("isolation_level", "int8", "4+", default=0),
    F("topics", Array((
        F("topic", "string"),
        F("partitions", Array((
            F("partition", "int32"),
            F("fetch_offset", "int64"),
            F("partition_max_bytes", "int32"),
        ))),
    ))),
), (
    _THROTTLE_V1,
    F("responses", Array((
        F("topic", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("error_code", "int16"),
            F("high_watermark", "int64"),
            F("last_stable_offset", "int64", "4+", default=-1),
            F("aborted_transactions", Array((
                F("producer_id", "int64"),
                F("first_offset", "int64"),
            )), "4+", nullable="4+", default=None),
            F("records", "records", nullable="0+"),
        ))),
    ))),
))

LIST_OFFSETS = Api(ApiKey.LIST_OFFSETS, "ListOffsets", "0-2", None, (
    F("replica_id", "int32", default=-1),
    F("isolation_level", "int8", "2+"),
    F("topics", Array((
        F("name", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("timestamp", "int64"),
            F("max_num_offsets", "int32", "0", default=1),
        ))),
    ))),
), (
    F("throttle_time_ms", "int32", "2+"),
    F("topics", Array((
        F("name", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("error_code", "int16"),
            F("old_style_offsets", Array("int64"), "0"),
            F("timestamp", "int64", "1+", default=-1),
            F("offset", "int64", "1+", default=-1),
        ))),
    ))),
))

METADATA = Api(ApiKey.METADATA, "Metadata", "0-4", None, (
    # v0: an empty array means all topics; v1+: null means all, empty means none
    F("topics", Array((F("name", "string"),)), nullable="1+"),
    F("allow_auto_topic_creation", "bool", "4+", default=True),
), (
    F("throttle_time_ms", "int32", "3+"),
    F("brokers", Array((
        F("node_id", "int32"),
        F("host", "string"),
        F("port", "int32"),
        F("rack", "string", "1+", nullable="1+", default=None),
    ))),
    F("cluster_id", "string", "2+", nullable="2+", default=None),
    F("controller_id", "int32", "1+", default=-1),
    F("topics", Array((
        F("error_code", "int16"),
        F("name", "string"),
        F("is_internal", "bool", "1+"),
        F("partitions", Array((
            F("error_code", "int16"),
            F("partition_index", "int32"),
            F("leader_id", "int32"),
            F("replica_nodes", Array("int32")),
            F("isr_nodes", Array("int32")),
        ))),
    ))),
))

OFFSET_COMMIT = Api(ApiKey.OFFSET_COMMIT, "OffsetCommit", "0-3", None, (
    F("group_id", "string"),
    F("generation_id_or_member_epoch", "int32", "1+", default=-1),
    F("member_id", "string", "1+"),
    F("retention_time_ms", "int64", "2-4", default=-1),
    F("topics", Array((
        F("name", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("committed_offset", "int64"),
            F("commit_timestamp", "int64", "1", default=-1),
            F("committed_metadata", "string", nullable="0+"),
        ))),
    ))),
), (
    F("throttle_time_ms", "int32", "3+"),
    F("topics", Array((
        F("name", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("error_code", "int16"),
        ))),
    ))),
))

OFFSET_FETCH = Api(ApiKey.OFFSET_FETCH, "OffsetFetch", "0-3", None, (
    F("group_id", "string"),
    # v2+: null asks for every partition the group has committed
    F("topics", Array((
        F("name", "string"),
        F("partition_indexes", Array("int32")),
    )), nullable="2+"),
), (
    F("throttle_time_ms", "int32", "3+"),
    F("topics", Array((
        F("name", "string"),
        F("partitions", Array((
            F("partition_index", "int32"),
            F("committed_offset", "int64"),
            F("metadata", "string", nullable="0+"),
            F("error_code", "int16"),
        ))),
    ))),
    F("error_code", "int16", "2+"),
))

FIND_COORDINATOR = Api(ApiKey.FIND_COORDINATOR, "FindCoordinator", "0-1", None, (
    F("key", "string"),
    F("key_type", "int8", "1+"),
), (
    _THROTTLE_V1,
    F("error_code", "int16"),
    F("error_message", "string", "1+", nullable="1+", default=None),
    F("node_id", "int32"),
    F("host", "string"),
    F("port", "int32"),
))

JOIN_GROUP = Api(ApiKey.JOIN_GROUP, "JoinGroup", "0-2", None, (
    F("group_id", "string"),
    F("session_timeout_ms", "int32"),
    F("rebalance_timeout_ms", "int32", "1+", default=-1),
    F("member_id", "string"),
    F("protocol_type", "string"),
    F("protocols", Array((
        F("name", "string"),
        F("metadata", "bytes"),
    ))),
), (
    F("throttle_time_ms", "int32", "2+"),
    F("error_code", "int16"),
    F("generation_id", "int32", default=-1),
    F("protocol_name", "string"),
    F("leader", "string"),
    F("member_id", "string"),
    F("members", Array((
        F("member_id", "string"),
        F("metadata", "bytes"),
    ))),
))

HEARTBEAT = Api(ApiKey.HEARTBEAT, "Heartbeat", "0-1", None, (
    F("group_id", "string"),
    F("generation_id", "int32"),
    F("member_id", "string"),
), (
    _THROTTLE_V1,
    F("error_code", "int16"),
))

LEAVE_GROUP = Api(ApiKey.LEAVE_GROUP, "LeaveGroup", "0-1", None, (
    F("group_id", "string"),
    F("member_id", "string"),
), (
    _THROTTLE_V1,
    F("error_code", "int16"),
))

SYNC_GROUP = Api(ApiKey.SYNC_GROUP, "SyncGroup", "0-1", None, (
    F("group_id", "string"),
    F("generation_id", "int32"),
    F("member_id", "string"),
    F("assignments", Array((
        F("member_id", "string"),
        F("assignment", "bytes"),
    ))),
), (
    _THROTTLE_V1,
    F("error_code", "int16"),
    F("assignment", "bytes"),
))

DESCRIBE_GROUPS = Api(ApiKey.DESCRIBE_GROUPS, "DescribeGroups", "0-4", None, (
    F("groups", Array("string")),
    F("include_authorized_operations", "bool", "3+"),
), (
    _THROTTLE_V1,
    F("groups", Array((
        F("error_code", "int16"),
        F("group_id", "string"),
        F("group_state", "string"),
        F("protocol_type", "string"),
        F("protocol_data", "string"),
        F("members", Array((
            F("member_id", "string"),
            F("group_instance_id", "string", "4+", nullable="4+", default=None),
            F("client_id", "string"),
            F("client_host", "string"),
            F("member_metadata", "bytes"),
            F("member_assignment", "bytes"),
        ))),
        F("authorized_operations", "int32", "3+", default=-(1 << 31)),
    ))),
))

LIST_GROUPS = Api(ApiKey.LIST_GROUPS, "ListGroups", "0-2", None, (), (
    _THROTTLE_V1,
    F("error_code", "int16"),
    F("groups", Array((
        F("group_id", "string"),
        F("protocol_type", "string"),
    ))),
))

API_VERSIONS = Api(ApiKey.API_VERSIONS, "ApiVersions", "0-3", "3+", (
    F("client_software_name", "string", "3+"),
    F("client_software_version", "string", "3+"),
), (
    F("error_code", "int16"),
    F("api_keys", Array((
        F("api_key", "int16"),
        F("min_version", "int16"),
        F("max_version", "int16"),
    ))),
    _THROTTLE_V1,
))

CREATE_TOPICS = Api(ApiKey.CREATE_TOPICS, "CreateTopics", "0-3", None, (
    F("topics", Array((
        F("name", "string"),
        F("num_partitions", "int32"),
        F("replication_factor", "int16"),
        F("assignments", Array((
            F("partition_index", "int32"),
            F("broker_ids", Array("int32")),
        ))),
        F("configs", Array((
            F("name", "string"),
            F("value", "string", nullable="0+"),
        ))),
    ))),
    F("timeout_ms", "int32", default=60000),
    F("validate_only", "bool", "1+"),
), (
    F("throttle_time_ms", "int32", "2+"),
    F("topics", Array((
        F("name", "string"),
        F("error_code", "int16"),
        F("error_message", "string", "1+", nullable="0+", default=None),
    ))),
))

DELETE_TOPICS = Api(ApiKey.DELETE_TOPICS, "DeleteTopics", "0-1", None, (
    F("topic_names", Array("string")),
    F("timeout_ms", "int32"),
), (
    _THROTTLE_V1,
    F("responses", Array((
        F("name", "string"),
        F("error_code", "int16"),
    ))),
))

INIT_PRODUCER_ID = Api(ApiKey.INIT_PRODUCER_ID, "InitProducerId", "0", None, (
    F("transactional_id", "string", nullable="0+"),
    F("transaction_timeout_ms", "int32"),
), (
    F("throttle_time_ms", "int32"),
    F("error_code", "int16"),
    F("producer_id", "int64", default=-1),
    F("producer_epoch", "int16"),
))

APIS: tuple[Api, ...] = (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS,
    API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID,
)
API_BY_KEY: dict[int, Api] = {api.key: api for api in APIS}
