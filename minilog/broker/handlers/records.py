"""Handlers of the data path: produce, fetch, list offsets, producer ids.

Rules: per-batch work only (no record is decoded); record bytes arrive and
leave as memoryviews; validation and error mapping happen once, in the
replica manager and the partition, not here. `acks` is checked here, once
per request.
"""

from __future__ import annotations

from minilog.protocol import (
    ErrorCode,
    FetchRequest,
    FetchResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
    error_message,
)

from .._services import BrokerServices, Handler, RequestContext

__all__ = ["HANDLERS"]

_ACKS = (-1, 0, 1)


async def handle_produce(services: BrokerServices, request: ProduceRequest,
                         ctx: RequestContext) -> ProduceResponse | None:
    acks = request.acks
    if acks not in _ACKS:
        code = int(ErrorCode.INVALID_REQUIRED_ACKS)
        message = error_message(ErrorCode.INVALID_REQUIRED_ACKS)
        return ProduceResponse([ProduceTopicResponse(t.topic, [
            ProducePartitionResponse(pp.partition, code, message) for pp in t.partitions])
            for t in request.topics])
    timeout_s = max(request.timeout_ms, 0) / 1000
    append = services.replicas.append_records
    topics = []
    for t in request.topics:
        topic = t.topic
        topics.append(ProduceTopicResponse(topic, [
            await append(topic, pp.partition, pp.records, acks, timeout_s) for pp in t.partitions]))
    if acks == 0:
        return None
    return ProduceResponse(topics)


async def handle_fetch(services: BrokerServices, request: FetchRequest,
                       ctx: RequestContext) -> FetchResponse:
    return FetchResponse(0, await services.replicas.fetch_records(request))


async def handle_list_offsets(services: BrokerServices, request: ListOffsetsRequest,
                              ctx: RequestContext) -> ListOffsetsResponse:
    lookup = services.replicas.list_offset
    return ListOffsetsResponse([
        ListOffsetsTopicResponse(t.topic, [lookup(t.topic, pp.partition, pp.timestamp)
                                           for pp in t.partitions])
        for t in request.topics])


async def handle_init_producer_id(services: BrokerServices, request: InitProducerIdRequest,
                                  ctx: RequestContext) -> InitProducerIdResponse:
    if request.transactional_id is not None:
        return InitProducerIdResponse(int(ErrorCode.INVALID_REQUEST), -1, -1,
                                      "transactions are not supported")
    pid, epoch = await services.allocate_producer_id(request.producer_id, request.producer_epoch)
    return InitProducerIdResponse(0, pid, epoch)


async def handle_offset_for_leader_epoch(services: BrokerServices, request: OffsetForLeaderEpochRequest,
                                         ctx: RequestContext) -> OffsetForLeaderEpochResponse:
    return OffsetForLeaderEpochResponse(services.replicas.offsets_for_leader_epoch(request))


HANDLERS: dict[type, Handler] = {
    ProduceRequest: handle_produce,
    FetchRequest: handle_fetch,
    ListOffsetsRequest: handle_list_offsets,
    InitProducerIdRequest: handle_init_producer_id,
    OffsetForLeaderEpochRequest: handle_offset_for_leader_epoch,
}
