"""The native codec: msgpack frames (`_frames.py`) <-> the request model.

Rules:
- One `NativeServerCodec` per connection; it implements `ServerCodec`
  (`protocol/_codec.py`): sans-IO, raises only `FrameError`.
- An unknown API key or an unsupported version becomes
  `BadRequest(UNSUPPORTED_VERSION)`; a payload that does not fit the API's
  schema becomes `BadRequest(INVALID_REQUEST)` naming the first bad field
  (a produce with acks=0 gets no answer even then, as Kafka). So does a
  payload naming one attachment twice: each attachment is used at most once.
- `ErrorResponse` is encoded as the API's empty response payload with a
  top-level `error_code` and `error_message`.

Theory of operation: the fast path converts a payload with the compiled
decoder of its API (`_convert.py`); only when that fails does the schema's
`check` run, to name the bad field. Responses go back through the compiled
encoders; record bytes leave as frame attachments, never copied.
"""

from __future__ import annotations

from typing import Any

from .._api import ApiKey
from .._codec import NEED_DATA, DecodedRequest
from .._error_codes import ErrorCode
from .._errors import FrameError
from .._messages import REQUEST_TYPES, RESPONSE_TYPES, BadRequest, ErrorResponse, RequestHeader
from ._convert import AttachmentReused, Mismatch, decoder_for, encoder_for
from ._frames import FrameDecoder, FrameLimits, encode_response
from ._schemas import OPT, REQUEST_SCHEMAS, RESPONSE_SCHEMAS, SUPPORTED_VERSIONS, check

__all__ = ["NativeServerCodec", "decode_request", "encode_response_payload", "empty_payload"]

# The APIs this codec speaks: those with a native schema.
_DECODERS = {key: decoder_for(REQUEST_TYPES[key], spec) for key, spec in REQUEST_SCHEMAS.items()}
_ENCODERS = {RESPONSE_TYPES[key]: encoder_for(RESPONSE_TYPES[key]) for key in RESPONSE_SCHEMAS}


def empty_payload(spec: Any) -> Any:
    """The zero value of a schema: empty lists, 0, "", None for OPT, False."""
    if isinstance(spec, OPT):
        return None
    if isinstance(spec, dict):
        return {name: empty_payload(sub) for name, sub in spec.items()}
    if isinstance(spec, list):
        return []
    if spec is int:
        return 0
    if spec is str:
        return ""
    if spec is bool:
        return False
    if spec is float:
        return 0.0
    return None


def decode_request(api_key: int, api_version: int, payload: dict[str, Any],
                   attachments: list[Any]) -> Any:
    """The request object for one native payload, or a `BadRequest`. Never raises."""
    decode = _DECODERS.get(api_key)
    versions = SUPPORTED_VERSIONS.get(api_key)
    if decode is None or versions is None or not versions[0] <= api_version <= versions[1]:
        return BadRequest(ErrorCode.UNSUPPORTED_VERSION,
                          f"api key {api_key} version {api_version} is not supported")
    silent = api_key == ApiKey.PRODUCE and payload.get("acks") == 0
    try:
        return decode(payload, list(attachments))     # a copy: the decoder takes what it uses
    except (Mismatch, KeyError):                      # KeyError: a required field is absent
        pass
    except AttachmentReused as exc:
        return BadRequest(ErrorCode.INVALID_REQUEST,
                          f"attachment {exc.args[0]} is referenced more than once",
                          respond=not silent)
    try:
        check(REQUEST_SCHEMAS[api_key], payload)       # the authority: names the bad field
    except FrameError as exc:
        return BadRequest(ErrorCode.INVALID_REQUEST, str(exc), respond=not silent)
    raise AssertionError(f"api {api_key}: the decoder refused a payload the schema accepts")


def encode_response_payload(api_key: int, response: Any) -> tuple[dict[str, Any], list[Any]]:
    """(payload map, attachments) of a response object of API `api_key`."""
    if type(response) is ErrorResponse:
        spec = RESPONSE_SCHEMAS.get(api_key)
        payload = empty_payload(spec) if spec is not None else {}
        payload["error_code"] = int(response.error_code)
        payload["error_message"] = response.error_message
        return payload, []
    attachments: list[Any] = []
    return _ENCODERS[type(response)](response, attachments), attachments


class NativeServerCodec:
    """The server side of minilog's msgpack frames for one connection.

    Args:
        limits: the frame decoder's hard limits (frame size before allocation, ...).
    """

    name = "native"

    def __init__(self, limits: FrameLimits = FrameLimits()) -> None:
        self._decoder = FrameDecoder("server", limits)
        self.feed = self._decoder.feed

    @property
    def buffered_bytes(self) -> int:
        return self._decoder.buffered_bytes

    def next_request(self) -> DecodedRequest | Any:
        frame: Any = self._decoder.next_frame()
        if frame is NEED_DATA:
            return NEED_DATA
        size = 1024                    # a body allowance, plus the attachments
        for attachment in frame.attachments:
            size += len(attachment)
        header = RequestHeader(frame.api_key, frame.api_version, frame.correlation_id,
                               frame.client_id, size)
        return header, decode_request(frame.api_key, frame.api_version, frame.payload,
                                      frame.attachments)

    def encode_response(self, header: RequestHeader, response: Any) -> list[Any]:
        payload, attachments = encode_response_payload(header.api_key, response)
        return encode_response(header.correlation_id, payload, attachments)

    def api_versions(self) -> list[list[int]]:
        return [[int(key), lo, hi] for key, (lo, hi) in sorted(SUPPORTED_VERSIONS.items())]
