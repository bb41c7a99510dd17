"""Handlers of the classic group APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups).

Rules: the same contract as every handler (`minilog.broker.handlers`): take
a request object and the context, return a response object, raise nothing
on purpose. They use the group coordinator's classic groups
(`GroupService.classic`) and nothing else of the broker. Only the Kafka
listener produces these requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minilog.broker.groups._group import GroupError
from minilog.protocol import ErrorCode
from minilog.protocol.kafka import _classic_model as c

from .._services import BrokerServices, Handler, RequestContext
from ..config import BrokerConfig

__all__ = ["HANDLERS", "LONG_WAITS"]


def _not_coordinator(services: BrokerServices, group_id: str) -> int | None:
    groups = services.groups
    if groups is None:
        return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    if not groups.is_coordinator_for(group_id):
        return int(ErrorCode.NOT_COORDINATOR)
    return None


async def handle_join_group(services: BrokerServices, request: c.JoinGroupRequest,
                            ctx: RequestContext) -> c.JoinGroupResponse:
    code = _not_coordinator(services, request.group_id)
    if code is not None:
        return c.JoinGroupResponse(code)
    assert services.groups is not None
    try:
        result = await services.groups.classic.join(
            group_id=request.group_id, member_id=request.member_id, client_id=ctx.client_id,
            client_host=ctx.client_host, session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms, protocol_type=request.protocol_type,
            protocols=request.protocols)
    except GroupError as exc:
        return c.JoinGroupResponse(int(exc.code), member_id=request.member_id)
    return c.JoinGroupResponse(result.error_code, result.generation_id, result.protocol_name, result.leader,
                               result.member_id, list(result.members))


async def handle_sync_group(services: BrokerServices, request: c.SyncGroupRequest,
                            ctx: RequestContext) -> c.SyncGroupResponse:
    code = _not_coordinator(services, request.group_id)
    if code is not None:
        return c.SyncGroupResponse(code)
    assert services.groups is not None
    try:
        assignment = await services.groups.classic.sync(
            group_id=request.group_id, member_id=request.member_id, generation_id=request.generation_id,
            assignments=request.assignments)
    except GroupError as exc:
        return c.SyncGroupResponse(int(exc.code))
    return c.SyncGroupResponse(0, assignment)


async def handle_heartbeat(services: BrokerServices, request: c.HeartbeatRequest,
                           ctx: RequestContext) -> c.HeartbeatResponse:
    code = _not_coordinator(services, request.group_id)
    if code is not None:
        return c.HeartbeatResponse(code)
    assert services.groups is not None
    try:
        services.groups.classic.heartbeat(group_id=request.group_id, member_id=request.member_id,
                                          generation_id=request.generation_id)
    except GroupError as exc:
        return c.HeartbeatResponse(int(exc.code))
    return c.HeartbeatResponse(0)


async def handle_leave_group(services: BrokerServices, request: c.LeaveGroupRequest,
                             ctx: RequestContext) -> c.LeaveGroupResponse:
    code = _not_coordinator(services, request.group_id)
    if code is not None:
        return c.LeaveGroupResponse(code)
    assert services.groups is not None
    try:
        services.groups.classic.leave(group_id=request.group_id, member_id=request.member_id)
    except GroupError as exc:
        return c.LeaveGroupResponse(int(exc.code))
    return c.LeaveGroupResponse(0)


async def handle_describe_groups(services: BrokerServices, request: c.DescribeGroupsRequest,
                                 ctx: RequestContext) -> c.DescribeGroupsResponse:
    out = []
    for group_id in request.groups:
        code = _not_coordinator(services, group_id)
        if code is not None:
            out.append(c.ClassicDescribedGroup(group_id, code))
            continue
        assert services.groups is not None
        out.append(services.groups.describe_classic(group_id))
    return c.DescribeGroupsResponse(out)


HANDLERS: dict[type, Handler] = {
    c.JoinGroupRequest: handle_join_group,
    c.SyncGroupRequest: handle_sync_group,
    c.HeartbeatRequest: handle_heartbeat,
    c.LeaveGroupRequest: handle_leave_group,
    c.DescribeGroupsRequest: handle_describe_groups,
}

# How long (ms) a request may wait on top of request.timeout.ms: a JoinGroup until the round
# completes (the group's rebalance timeout; this member's own is what it allows for, as Kafka's
# clients do), a follower's SyncGroup until the leader's arrives (at most its session timeout,
# itself at most group.max.session.timeout.ms).
LONG_WAITS: dict[type, Callable[[Any, BrokerConfig], int]] = {
    c.JoinGroupRequest: lambda r, config: max(r.rebalance_timeout_ms, r.session_timeout_ms, 0),
    c.SyncGroupRequest: lambda r, config: config.group_max_session_timeout_ms,
}
