"""Request handlers, by API family, and the dispatcher that routes to them.

Handler contract::

    async def handle(services: BrokerServices, request: XRequest, ctx: RequestContext)
        -> XResponse | ErrorResponse | None

- `request` is an object of the request model (`minilog.protocol`
  `_messages`), already decoded and type-checked by the listener's codec;
  handlers never see which codec it came through.
- Return the API's response object, `ErrorResponse` when the request failed
  as a whole, or None to send nothing (acks=0 produce).
- Raise nothing on purpose: put error codes in the response. An escaping
  exception becomes UNKNOWN_SERVER_ERROR (logged with its traceback).
- The handler runs under request.timeout.ms (a fetch's long poll on top);
  when it expires, the client gets REQUEST_TIMED_OUT.
- Handlers use only `BrokerServices` (`_services.py`), never the broker.

Modules: `records` (produce, fetch, list offsets, producer ids), `admin`
(api versions, metadata, topics, configs), `groups` (the group APIs,
served by the group coordinator when the broker runs one).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from minilog.protocol import BadRequest, ErrorCode, ErrorResponse, FetchRequest, error_message

from .._services import BrokerServices, Handler, RequestContext
from ..kafka import handlers as kafka_handlers
from . import admin, groups, records

__all__ = ["HANDLERS", "dispatch"]

log = logging.getLogger("minilog.broker.handlers")

HANDLERS: dict[type, Handler] = {**records.HANDLERS, **admin.HANDLERS, **groups.HANDLERS,
                              **kafka_handlers.HANDLERS}


def error_response(code: ErrorCode, message: str | None = None) -> ErrorResponse:
    return ErrorResponse(int(code), message or error_message(code))


async def dispatch(services: BrokerServices, request: Any, ctx: RequestContext,
                   timeout_s: float) -> Any:
    """Route and time-bound one request; never raises (except Cancelled)."""
    kind = type(request)
    if kind is BadRequest:
        return error_response(ErrorCode(request.error_code), request.message) if request.respond else None
    handler = HANDLERS.get(kind)
    if handler is None:
        return error_response(ErrorCode.UNSUPPORTED_VERSION, f"{kind.__name__} is not served here")
    if kind is FetchRequest:           # a long poll may wait on top of the handling bound
        timeout_s += min(max(request.max_wait_ms, 0), services.config.fetch_max_wait_ms) / 1000
    elif kind in kafka_handlers.LONG_WAITS:   # a classic group's rebalance may wait on top too
        timeout_s += kafka_handlers.LONG_WAITS[kind](request, services.config) / 1000
    reply = None
    with trio.move_on_after(timeout_s) as scope:
        try:
            reply = await handler(services, request, ctx)
        except Exception:
            log.exception("%s: handler failed", kind.__name__)
            return error_response(ErrorCode.UNKNOWN_SERVER_ERROR)
    if scope.cancelled_caught:
        return error_response(ErrorCode.REQUEST_TIMED_OUT)
    return reply
