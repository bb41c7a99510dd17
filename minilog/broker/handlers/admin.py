"""Handlers of cluster metadata and topic administration.

Rules: answers describe this broker as the listener the request came
through sees it (its own address and port, its codec's API versions); in a
cluster, METADATA lists every live broker at its advertised address for
that listener, the controller, and each partition's leader, epoch,
replicas and ISR from the cluster picture (every partition, not only
local ones). Administrative refusals are error codes per topic or resource.
"""

from __future__ import annotations

from typing import Any

from minilog import __version__
from minilog.protocol import (
    CONFIG_OP_DELETE,
    CONFIG_OP_SET,
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    AlterConfigsResult,
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsEntry,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    DescribeConfigsResource,
    DescribeConfigsResult,
    DescribedPartition,
    DescribedTopic,
    DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse,
    ErrorCode,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
    MetadataBroker,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
    PartitionMetadata,
    TopicResult,
    error_message,
)

from .._services import BrokerServices, Handler, RequestContext
from ..config import BROKER_CONFIG_KEYS, TOPIC_CONFIG_KEYS, TOPIC_DEFAULT_FROM_BROKER, BrokerConfig

__all__ = ["HANDLERS"]


async def handle_api_versions(services: BrokerServices, request: ApiVersionsRequest,
                              ctx: RequestContext) -> ApiVersionsResponse:
    versions = [list(v) for v in ctx.listener.api_versions]
    return ApiVersionsResponse(0, versions, __version__, services.broker_id)


def _partition_metadata(services: BrokerServices, topic: str, p: int,
                        live: set[int] | None) -> PartitionMetadata:
    """One partition as METADATA reports it: from the cluster picture when there is one
    (`live`: the brokers listed), else from this broker's replica."""
    cluster = services.cluster
    state = (cluster.partition_state(topic, p) if cluster is not None
             else services.replicas.partition_state(topic, p))
    if state is None:
        return PartitionMetadata(p, int(ErrorCode.LEADER_NOT_AVAILABLE), -1, -1, [], [])
    # A leader that is not live (none elected, or not yet replaced) cannot be reached.
    code = ErrorCode.LEADER_NOT_AVAILABLE if live is not None and state.leader not in live else ErrorCode.NONE
    return PartitionMetadata(p, int(code), state.leader, state.leader_epoch, list(state.replicas),
                             list(state.isr))


def _brokers(services: BrokerServices, ctx: RequestContext) -> tuple[list[MetadataBroker], int]:
    """(brokers as the listener the request came through reaches them, controller id)."""
    cluster = services.cluster
    if cluster is None:
        return [MetadataBroker(services.broker_id, ctx.advertised_host, ctx.listener.port)], \
            services.broker_id
    return ([MetadataBroker(b, host, port) for b, host, port in cluster.live_brokers(ctx.listener.name)],
            cluster.controller_id)


async def handle_metadata(services: BrokerServices, request: MetadataRequest,
                          ctx: RequestContext) -> MetadataResponse:
    metadata = services.metadata
    names = request.topics if request.topics is not None else metadata.topic_names()
    unknown = list(dict.fromkeys(name for name in names if metadata.topic(name) is None))
    codes: dict[str, ErrorCode] = {}
    if unknown:                         # all at once: one metadata write, logs opened off the loop
        codes = (await services.admin.auto_create_topics(unknown)
                 if request.allow_auto_topic_creation
                 else dict.fromkeys(unknown, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
    brokers, controller_id = _brokers(services, ctx)
    live = {b.node_id for b in brokers} if services.cluster is not None else None
    topics = []
    for name in names:
        meta = metadata.topic(name)
        if meta is None:
            code = codes.get(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            if code == ErrorCode.NONE:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION    # deleted meanwhile
            topics.append(MetadataTopic(name, int(code), []))
            continue
        topics.append(MetadataTopic(name, 0, [_partition_metadata(services, name, p, live)
                                              for p in range(meta.partitions)], meta.internal))
    return MetadataResponse(brokers, metadata.cluster_id, controller_id, topics)


def _described(services: BrokerServices, topic: str, p: int) -> DescribedPartition:
    """A partition for `topics describe`: leader, replicas and ISR from the cluster
    picture when there is one, offsets and size from this broker's replica if it has one."""
    local = services.replicas.describe_partition(topic, p)
    cluster = services.cluster
    state = cluster.partition_state(topic, p) if cluster is not None else None
    if state is None:
        return local
    if local.error_code:
        local = DescribedPartition(p, 0, -1, -1, [], [])
    local.leader, local.leader_epoch = state.leader, state.leader_epoch
    local.replicas, local.isr = list(state.replicas), list(state.isr)
    return local


async def handle_describe_topic_partitions(services: BrokerServices,
                                           request: DescribeTopicPartitionsRequest,
                                           ctx: RequestContext) -> DescribeTopicPartitionsResponse:
    metadata = services.metadata
    names = request.topics if request.topics is not None else metadata.topic_names()
    topics = []
    for name in names:
        meta = metadata.topic(name)
        if meta is None:
            topics.append(DescribedTopic(name, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), []))
            continue
        topics.append(DescribedTopic(name, 0, [_described(services, name, p)
                                               for p in range(meta.partitions)], meta.internal))
    return DescribeTopicPartitionsResponse(topics)


def _result(name: str, code: ErrorCode, message: str | None = None) -> TopicResult:
    return TopicResult(name, int(code), (message or error_message(code)) if code else None)


async def handle_create_topics(services: BrokerServices, request: CreateTopicsRequest,
                               ctx: RequestContext) -> CreateTopicsResponse:
    specs = [(t.name, t.num_partitions, t.replication_factor, t.configs) for t in request.topics]
    outcome = await services.admin.create_topics(specs, validate_only=request.validate_only)
    return CreateTopicsResponse([_result(t.name, code, message)
                                 for t, (code, message) in zip(request.topics, outcome, strict=True)])


async def handle_delete_topics(services: BrokerServices, request: DeleteTopicsRequest,
                               ctx: RequestContext) -> DeleteTopicsResponse:
    results = []
    for name in request.topics:
        code, message = await services.admin.delete_topic(name)
        results.append(_result(name, code, message))
    return DeleteTopicsResponse(results)


async def handle_create_partitions(services: BrokerServices, request: CreatePartitionsRequest,
                                   ctx: RequestContext) -> CreatePartitionsResponse:
    results = []
    for t in request.topics:
        code, message = await services.admin.create_partitions(t.name, t.count,
                                                               validate_only=request.validate_only)
        results.append(_result(t.name, code, message))
    return CreatePartitionsResponse(results)


def _config_source(config: BrokerConfig, topic_overrides: dict[str, str], key: str) -> tuple[bool, str]:
    if key in topic_overrides:
        return False, "TOPIC_CONFIG"
    broker_key = next((b for b, t in TOPIC_DEFAULT_FROM_BROKER.items() if t == key), None)
    if broker_key is not None and not config.is_default(broker_key):
        return False, "STATIC_BROKER_CONFIG"
    return True, "DEFAULT_CONFIG"


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _describe_resource(services: BrokerServices, res: DescribeConfigsResource) -> DescribeConfigsResult:
    config = services.config
    rtype, name, wanted = res.resource_type, res.resource_name, res.config_names
    entry = DescribeConfigsResult(rtype, name)
    if rtype == RESOURCE_TOPIC:
        meta = services.metadata.topic(name)
        if meta is None:
            entry.error_code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            entry.error_message = f"unknown topic {name!r}"
            return entry
        effective = config.topic_config(meta.configs)
        for key in TOPIC_CONFIG_KEYS:
            if wanted is None or key.name in wanted:
                is_default, source = _config_source(config, meta.configs, key.name)
                entry.configs.append(DescribeConfigsEntry(key.name, _fmt(effective[key.name]), False,
                                                          is_default, source))
    elif rtype == RESOURCE_BROKER and name in ("", str(services.broker_id)):
        for key in BROKER_CONFIG_KEYS:
            if wanted is None or key.name in wanted:
                default = config.is_default(key.name)
                entry.configs.append(DescribeConfigsEntry(
                    key.name, _fmt(config[key.name]), True, default,
                    "DEFAULT_CONFIG" if default else "STATIC_BROKER_CONFIG"))
    else:
        entry.error_code = int(ErrorCode.INVALID_REQUEST)
        entry.error_message = f"unknown resource type {rtype} or name {name!r}"
    return entry


async def handle_describe_configs(services: BrokerServices, request: DescribeConfigsRequest,
                                  ctx: RequestContext) -> DescribeConfigsResponse:
    return DescribeConfigsResponse([_describe_resource(services, res) for res in request.resources])


async def handle_incremental_alter_configs(services: BrokerServices,
                                           request: IncrementalAlterConfigsRequest,
                                           ctx: RequestContext) -> IncrementalAlterConfigsResponse:
    results = []
    for res in request.resources:
        entry = AlterConfigsResult(res.resource_type, res.resource_name)
        results.append(entry)
        if res.resource_type != RESOURCE_TOPIC:
            entry.error_code = int(ErrorCode.INVALID_REQUEST)
            entry.error_message = ("only topic configs can be altered; broker settings are "
                                   "static (restart with --set)")
            continue
        changes: dict[str, str | None] = {}
        bad = None
        for c in res.configs:
            if c.op == CONFIG_OP_SET:
                changes[c.name] = c.value
            elif c.op == CONFIG_OP_DELETE:
                changes[c.name] = None
            else:
                bad = f"config op {c.op} is not supported (0 set, 1 delete)"
        if bad:
            entry.error_code, entry.error_message = int(ErrorCode.INVALID_REQUEST), bad
            continue
        code, message = await services.admin.alter_topic_configs(res.resource_name, changes,
                                                           validate_only=request.validate_only)
        entry.error_code, entry.error_message = int(code), (message if code else None)
    return IncrementalAlterConfigsResponse(results)


HANDLERS: dict[type, Handler] = {
    ApiVersionsRequest: handle_api_versions,
    MetadataRequest: handle_metadata,
    DescribeTopicPartitionsRequest: handle_describe_topic_partitions,
    CreateTopicsRequest: handle_create_topics,
    DeleteTopicsRequest: handle_delete_topics,
    CreatePartitionsRequest: handle_create_partitions,
    DescribeConfigsRequest: handle_describe_configs,
    IncrementalAlterConfigsRequest: handle_incremental_alter_configs,
}
