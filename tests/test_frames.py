"""Wire frames and payload schemas: round trips, limits, and garbage."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilog.protocol import (
    NEED_DATA,
    REQUEST_SCHEMAS,
    REQUEST_TYPES,
    RESPONSE_SCHEMAS,
    SUPPORTED_VERSIONS,
    ApiKey,
    BadRequest,
    ErrorCode,
    ErrorResponse,
    FetchPartitionResponse,
    FetchResponse,
    FetchTopicResponse,
    NativeServerCodec,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
    RequestHeader,
    FrameDecoder,
    FrameError,
    FrameLimits,
    LimitExceededError,
    Request,
    Response,
    check,
    encode_request,
    encode_response,
)

CASES = [
    (encode_request(ApiKey.PRODUCE, 0, 1, "cli", {"acks": 1}, [b"batch-bytes", b""]),
     Request(0, 0, 1, "cli", {"acks": 1}, [b"batch-bytes", b""])),
    (encode_request(ApiKey.METADATA, 0, 2**31 - 1, "", {"topics": None}),
     Request(3, 0, 2**31 - 1, "", {"topics": None}, [])),
    (encode_response(9, {"error_code": 0}, [b"x" * 70000]),
     Response(9, {"error_code": 0}, [b"x" * 70000])),
]


# Exact bytes, written out field by field (docs/protocol.md's layout): an encoder change
# that round-trips with its own decoder but breaks other peers fails here.
PINNED = [
    (encode_request(ApiKey.METADATA, 0, 7, "c", {"topics": None}),
     b"\x00\x00\x00\x14"              # frame_length 20 = 4 + body
     b"\x00\x00\x00\x10"              # body_length 16
     b"\x96"                          # array of 6: the request body
     b"\x03\x00\x07"                  # api_key 3, api_version 0, correlation_id 7
     b"\xa1c"                         # client_id "c"
     b"\x81\xa6topics\xc0"             # payload {"topics": nil}
     b"\x90",                         # attachment sizes []
     Request(3, 0, 7, "c", {"topics": None}, [])),
    (encode_request(ApiKey.PRODUCE, 0, 1, "p", {"acks": 1}, [b"AB"]),
     b"\x00\x00\x00\x15\x00\x00\x00\x0f"  # frame 21 = 4 + body 15 + attachment 2
     b"\x96\x00\x00\x01\xa1p"
     b"\x81\xa4acks\x01"
     b"\x91\x02"                      # one attachment of 2 bytes ...
     b"AB",                            # ... raw, after the body
     Request(0, 0, 1, "p", {"acks": 1}, [b"AB"])),
    (encode_response(9, {"error_code": 0}, [b"xyz", b""]),
     b"\x00\x00\x00\x19\x00\x00\x00\x12"  # frame 25 = 4 + body 18 + 3
     b"\x93\x09"                      # array of 3: correlation_id 9
     b"\x81\xaaerror_code\x00"
     b"\x92\x03\x00"                  # attachments of 3 and 0 bytes
     b"xyz",
     Response(9, {"error_code": 0}, [b"xyz", b""])),
]


@pytest.mark.parametrize("pieces,data,expected", PINNED)
def test_pinned_frame_bytes(pieces, data, expected):
    """Known frames encode to exactly these bytes and decode from them three ways."""
    assert b"".join(bytes(p) for p in pieces) == data
    check_decode(data, expected)


def _normalise(frame):
    return frame._replace(attachments=[bytes(a) for a in frame.attachments])


def check_decode(data: bytes, expected) -> None:
    """Decode whole, byte by byte, and with trailing bytes of the next frame."""
    role = "server" if isinstance(expected, Request) else "client"
    whole = FrameDecoder(role)
    whole.feed(data)
    assert _normalise(whole.next_frame()) == expected
    assert whole.next_frame() is NEED_DATA

    by_byte = FrameDecoder(role)
    got = NEED_DATA
    for i in range(len(data)):
        assert got is NEED_DATA
        by_byte.feed(data[i : i + 1])
        got = by_byte.next_frame()
    assert _normalise(got) == expected

    trailing = FrameDecoder(role)
    trailing.feed(data + data[:5])
    assert _normalise(trailing.next_frame()) == expected
    assert trailing.next_frame() is NEED_DATA
    assert trailing.buffered_bytes == 5


@pytest.mark.parametrize("pieces,expected", CASES)
def test_round_trip_whole_bytewise_trailing(pieces, expected):
    """Every case decodes the same whole, byte by byte, and with trailing data."""
    check_decode(b"".join(bytes(p) for p in pieces), expected)


def test_oversized_frame_rejected_before_allocation():
    """A 2 GiB length prefix fails at once, without waiting for or buffering the bytes."""
    dec = FrameDecoder("server")
    dec.feed(struct.pack(">II", 2**31, 10))
    with pytest.raises(LimitExceededError):
        dec.next_frame()
    with pytest.raises(FrameError):  # sticky
        dec.next_frame()


def test_msgpack_limits_apply():
    """Arrays and strings above the limits are refused."""
    limits = FrameLimits(array_items_max=10, string_bytes_max=16)
    for payload in ({"a": list(range(11))}, {"a": "x" * 17}):
        dec = FrameDecoder("server", limits)
        dec.feed(b"".join(encode_request(3, 0, 1, "c", payload)))
        with pytest.raises(FrameError):
            dec.next_frame()


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],                      # wrong arity
        ["x", 0, 1, "c", {}, []],       # api key not an int
        [0, 0, 1, "c", [], []],         # payload not a map
        [0, 0, 1, "c", {}, [5]],        # attachment overruns the frame
        [0, 0, 1, "c", {}, [-1]],       # negative attachment size
        "not an array",
    ],
)
def test_malformed_bodies_raise_frame_error(body):
    """Structurally wrong bodies raise FrameError, nothing else."""
    packed = msgpack.packb(body)
    dec = FrameDecoder("server")
    dec.feed(struct.pack(">II", 4 + len(packed), len(packed)) + packed)
    with pytest.raises(FrameError):
        dec.next_frame()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_frame_error(data):
    """Random bytes either decode, wait for more data, or raise FrameError."""
    for role in ("server", "client"):
        dec = FrameDecoder(role)
        dec.feed(data)
        try:
            while dec.next_frame() is not NEED_DATA:
                pass
        except FrameError:
            pass


@pytest.mark.parametrize("seed", range(5))
def test_mutated_valid_frames_decode_or_raise_frame_error(seed):
    """Random byte flips of valid frames never escape as anything but FrameError."""
    rng = random.Random(seed)
    for pieces, _ in CASES[:2]:
        data = bytearray(b"".join(bytes(p) for p in pieces))
        for _ in range(300):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            dec = FrameDecoder("server")
            dec.feed(bytes(mutated))
            try:
                dec.next_frame()
            except FrameError:
                pass


def test_every_api_has_request_and_response_schema():
    """The native schema tables, its versions and the request model agree on the APIs."""
    assert set(REQUEST_SCHEMAS) == set(RESPONSE_SCHEMAS) == set(SUPPORTED_VERSIONS)
    assert set(REQUEST_SCHEMAS) <= set(REQUEST_TYPES)


def test_schema_check_names_the_bad_field():
    """A well-formed frame with a bad field is reported with the field's path."""
    spec = REQUEST_SCHEMAS[ApiKey.PRODUCE]
    good = {"acks": 1, "timeout_ms": 100,
            "topics": [{"topic": "t", "partitions": [{"partition": 0, "records": 0}]}]}
    check(spec, good)
    bad = {**good, "topics": [{"topic": "t", "partitions": [{"partition": "0", "records": 0}]}]}
    with pytest.raises(FrameError, match=r"topics\[0\].partitions\[0\].partition"):
        check(spec, bad)
    with pytest.raises(FrameError, match="acks: missing"):
        check(spec, {"timeout_ms": 1, "topics": []})


def test_absent_optional_fields_are_filled_with_none():
    """A peer that predates an optional field is served: the field reads as None."""
    spec = REQUEST_SCHEMAS[ApiKey.CONSUMER_GROUP_HEARTBEAT]
    payload = {"group_id": "g", "member_id": "", "member_epoch": 0, "rebalance_timeout_ms": 1,
               "subscribed_topic_names": ["t"], "server_assignor": None,
               "topic_partitions": None, "client_id": "c"}
    check(spec, payload)
    assert payload["session_timeout_ms"] is None


def test_large_frames_fed_in_random_chunks_decode_identically():
    """Frames above the chunked threshold (gathered as chunks, joined once, buffer taken over)
    and small ones, fed in seeded random chunk sizes, with next_frame called at random."""
    for seed in range(12):
        rng = random.Random(seed)
        frames = []
        for i in range(16):
            att = [rng.randbytes(rng.choice([0, 10, 300_000, 1_100_000]))
                   for _ in range(rng.randint(0, 3))]
            frames.append((i, att, b"".join(encode_request(0, 0, i, "c", {"x": i}, att))))
        stream = b"".join(f[2] for f in frames)
        dec = FrameDecoder("server")
        got = []
        pos = 0
        while pos < len(stream):
            n = rng.choice([1, 7, 1000, 65536, 262144, 3_000_000])
            chunk = stream[pos:pos + n]
            if rng.random() < 0.3:     # a reused receive buffer: the decoder must copy it
                buf = bytearray(chunk)
                dec.feed(memoryview(buf))
                buf[:] = b"\xff" * len(buf)
            else:
                dec.feed(chunk)
            pos += n
            assert dec.buffered_bytes <= len(stream) - sum(len(f[2]) for f in frames[:len(got)])
            if rng.random() < 0.5:
                continue
            while (f := dec.next_frame()) is not NEED_DATA:
                got.append(f)
        while (f := dec.next_frame()) is not NEED_DATA:
            got.append(f)
        assert [g.correlation_id for g in got] == [f[0] for f in frames], seed
        for g, f in zip(got, frames):
            assert [bytes(a) for a in g.attachments] == f[1], seed
            assert g.payload == {"x": f[0]}
            for a in g.attachments:   # writable views: the broker stamps offsets in place
                assert isinstance(a, memoryview) and not a.readonly
        assert dec.buffered_bytes == 0


def test_large_frame_limits_checked_before_gathering():
    """A large frame over the limit fails on its prefix; a large frame with a bad attachment
    table fails with FrameError after it is gathered, and the decoder stays poisoned."""
    dec = FrameDecoder("server", FrameLimits(frame_bytes_max=1 << 20))
    dec.feed(struct.pack(">II", (1 << 20) + 1, 10))
    with pytest.raises(LimitExceededError):
        dec.next_frame()
    body = msgpack.packb([0, 0, 1, "c", {}, [600_000]])   # says 600,000, has 500,000
    frame = struct.pack(">II", 4 + len(body) + 500_000, len(body)) + body + bytes(500_000)
    dec = FrameDecoder("server")
    dec.feed(frame[:1000])
    assert dec.next_frame() is NEED_DATA
    for i in range(1000, len(frame), 65536):
        dec.feed(frame[i:i + 65536])
    with pytest.raises(FrameError):
        dec.next_frame()
    with pytest.raises(FrameError):
        dec.next_frame()


def _serve(data: bytes):
    codec = NativeServerCodec()
    codec.feed(data)
    return codec, codec.next_request()


def test_native_codec_decodes_to_the_request_model():
    """A produce frame becomes a ProduceRequest whose records are a writable view of the frame."""
    payload = {"acks": -1, "timeout_ms": 100,
               "topics": [{"topic": "t", "partitions": [{"partition": 2, "records": 0}]}]}
    _, (header, request) = _serve(b"".join(encode_request(ApiKey.PRODUCE, 0, 5, "cli", payload, [b"BATCH"])))
    assert (header.api_key, header.correlation_id, header.client_id) == (0, 5, "cli")
    assert header.size_bytes >= 5
    assert request == ProduceRequest(-1, 100, [ProduceTopic("t", [ProducePartition(2, request.topics[0]
                                                                                   .partitions[0].records)])])
    records = request.topics[0].partitions[0].records
    assert bytes(records) == b"BATCH" and not records.readonly


@pytest.mark.parametrize("api_key,version,payload,code,respond", [
    (ApiKey.METADATA, 9, {"topics": None, "allow_auto_topic_creation": False},
     ErrorCode.UNSUPPORTED_VERSION, True),
    (999, 0, {}, ErrorCode.UNSUPPORTED_VERSION, True),
    (ApiKey.FETCH, 0, {"replica_id": -1}, ErrorCode.INVALID_REQUEST, True),
    (ApiKey.PRODUCE, 0, {"acks": 0, "topics": "oops"}, ErrorCode.INVALID_REQUEST, False),
])
def test_native_codec_bad_requests(api_key, version, payload, code, respond):
    """Unknown APIs and versions, and payloads off their schema, become BadRequest (answered
    unless acks=0), with the bad field named; the codec stays usable."""
    codec, (_, request) = _serve(b"".join(encode_request(api_key, version, 1, "c", payload)))
    assert type(request) is BadRequest
    assert (request.error_code, request.respond) == (code, respond)
    if code == ErrorCode.INVALID_REQUEST:
        assert "payload." in request.message
    codec.feed(b"".join(encode_request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, 2, "c", {"topics": None})))
    assert codec.next_request()[1].topics is None


def test_native_codec_encodes_responses():
    """Response objects become schema-shaped payloads; records travel as attachments;
    ErrorResponse is the API's empty response with a top-level error."""
    codec = NativeServerCodec()
    fetch = FetchResponse(0, [FetchTopicResponse("t", [FetchPartitionResponse(0, records=b"REC"),
                                                       FetchPartitionResponse(1)])])
    dec = FrameDecoder("client")
    dec.feed(b"".join(bytes(p) for p in codec.encode_response(RequestHeader(1, 0, 7, "c"), fetch)))
    frame = dec.next_frame()
    check(RESPONSE_SCHEMAS[ApiKey.FETCH], frame.payload)
    parts = frame.payload["topics"][0]["partitions"]
    assert (parts[0]["records"], parts[1]["records"]) == (0, -1)
    assert [bytes(a) for a in frame.attachments] == [b"REC"]
    dec.feed(b"".join(bytes(p) for p in codec.encode_response(
        RequestHeader(0, 0, 8, "c"), ErrorResponse(int(ErrorCode.REQUEST_TIMED_OUT), "slow"))))
    frame = dec.next_frame()
    assert frame.payload == {"topics": [], "error_code": 7, "error_message": "slow"}
