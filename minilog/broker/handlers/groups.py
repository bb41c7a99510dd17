"""Handlers of the consumer-group APIs: thin translations to the group coordinator.

Rules: the coordinator (`minilog.broker.groups`) owns the logic; these
functions only pick it from the services and answer
COORDINATOR_NOT_AVAILABLE, in each API's shape, when the broker runs none.
"""

from __future__ import annotations

import logging

from minilog.protocol import (
    ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    Coordinator,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DeleteGroupsResult,
    DescribedGroup,
    ErrorCode,
    ErrorResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitPartitionResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopicResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    error_message,
)

from .._services import BrokerServices, Handler, RequestContext
from ..groups.coordinator import OFFSETS_TOPIC, group_partition

__all__ = ["HANDLERS", "KEY_TYPE_GROUP"]

log = logging.getLogger("minilog.broker.handlers")

KEY_TYPE_GROUP = 0
_NOT_AVAILABLE = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
_NO_COORDINATOR = "the group coordinator is not available on this broker"


def _unavailable() -> ErrorResponse:
    return ErrorResponse(_NOT_AVAILABLE, _NO_COORDINATOR)


def _cluster_coordinator(services: BrokerServices, entry: Coordinator, ctx: RequestContext) -> None:
    """In a cluster, the coordinator of a group is the leader of its offsets partition."""
    cluster = services.cluster
    meta = services.metadata.topic(OFFSETS_TOPIC)
    assert cluster is not None
    state = cluster.partition_state(OFFSETS_TOPIC, group_partition(entry.key, meta.partitions)) \
        if meta is not None else None
    endpoint = cluster.endpoint(state.leader, ctx.listener.name) if state is not None else None
    if state is None or endpoint is None:
        entry.error_code = _NOT_AVAILABLE
        entry.error_message = error_message(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return
    entry.node_id, (entry.host, entry.port) = state.leader, endpoint


async def handle_find_coordinator(services: BrokerServices, request: FindCoordinatorRequest,
                                  ctx: RequestContext) -> FindCoordinatorResponse:
    groups = services.groups
    cluster = services.cluster
    if (cluster is not None and groups is not None and request.key_type == KEY_TYPE_GROUP
            and services.metadata.topic(OFFSETS_TOPIC) is None):
        try:                  # Kafka creates the offsets topic on the first FIND_COORDINATOR
            await cluster.ensure_offsets_topic()
        except Exception as exc:
            log.info("cannot create the offsets topic yet: %s", exc)
    out = []
    for key in request.keys:
        entry = Coordinator(key)
        if groups is not None and cluster is not None and request.key_type == KEY_TYPE_GROUP:
            _cluster_coordinator(services, entry, ctx)
        elif groups is None:
            entry.error_code, entry.error_message = _NOT_AVAILABLE, _NO_COORDINATOR
        elif request.key_type != KEY_TYPE_GROUP:
            entry.error_code = int(ErrorCode.INVALID_REQUEST)
            entry.error_message = "only group coordinators (key_type 0) exist"
        elif not groups.is_coordinator_for(key):
            entry.error_code = _NOT_AVAILABLE
            entry.error_message = error_message(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        else:
            entry.node_id, entry.host, entry.port = (services.broker_id, ctx.advertised_host,
                                                     ctx.listener.port)
        out.append(entry)
    return FindCoordinatorResponse(out)


async def handle_heartbeat(services: BrokerServices, request: ConsumerGroupHeartbeatRequest,
                           ctx: RequestContext) -> ConsumerGroupHeartbeatResponse | ErrorResponse:
    groups = services.groups
    if groups is None:
        return _unavailable()
    return await groups.heartbeat_request(request, client_host=ctx.client_host)


async def handle_describe(services: BrokerServices, request: ConsumerGroupDescribeRequest,
                          ctx: RequestContext) -> ConsumerGroupDescribeResponse:
    groups = services.groups
    if groups is None:
        return ConsumerGroupDescribeResponse([
            DescribedGroup(g, _NOT_AVAILABLE, group_state="dead") for g in request.group_ids])
    return ConsumerGroupDescribeResponse([groups.describe_group(g) for g in request.group_ids])


async def handle_offset_commit(services: BrokerServices, request: OffsetCommitRequest,
                               ctx: RequestContext) -> OffsetCommitResponse:
    groups = services.groups
    if groups is None:
        return OffsetCommitResponse([OffsetCommitTopicResponse(t.topic, [
            OffsetCommitPartitionResponse(p.partition, _NOT_AVAILABLE) for p in t.partitions])
            for t in request.topics])
    return await groups.commit_offsets(request)


async def handle_offset_fetch(services: BrokerServices, request: OffsetFetchRequest,
                              ctx: RequestContext) -> OffsetFetchResponse | ErrorResponse:
    groups = services.groups
    if groups is None:
        return _unavailable()
    return groups.fetch_offsets(request)


async def handle_list_groups(services: BrokerServices, request: ListGroupsRequest,
                             ctx: RequestContext) -> ListGroupsResponse | ErrorResponse:
    groups = services.groups
    if groups is None:
        return _unavailable()
    return ListGroupsResponse(0, groups.list_groups(request.states_filter))


async def handle_delete_groups(services: BrokerServices, request: DeleteGroupsRequest,
                               ctx: RequestContext) -> DeleteGroupsResponse:
    groups = services.groups
    results = []
    for group_id in request.group_ids:
        code = _NOT_AVAILABLE if groups is None else int(await groups.delete_group(group_id))
        results.append(DeleteGroupsResult(group_id, code))
    return DeleteGroupsResponse(results)


HANDLERS: dict[type, Handler] = {
    FindCoordinatorRequest: handle_find_coordinator,
    ConsumerGroupHeartbeatRequest: handle_heartbeat,
    ConsumerGroupDescribeRequest: handle_describe,
    OffsetCommitRequest: handle_offset_commit,
    OffsetFetchRequest: handle_offset_fetch,
    ListGroupsRequest: handle_list_groups,
    DeleteGroupsRequest: handle_delete_groups,
}
