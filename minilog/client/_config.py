"""Client options: defaults, validation, and the bootstrap list parser.

Every option is checked at construction; a bad one raises `ConfigError`
naming it, so a typo never surfaces later as a hang or a broker error.
Names are the snake_case forms of Kafka's client settings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from minilog.errors import ConfigError
from minilog.protocol import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD
from minilog.protocol._compression import codec_available

__all__ = ["ProducerConfig", "ConsumerConfig", "AdminConfig", "parse_bootstrap", "CODECS"]

CODECS = {None: CODEC_NONE, "none": CODEC_NONE, "gzip": CODEC_GZIP, "lz4": CODEC_LZ4,
          "zstd": CODEC_ZSTD, "snappy": CODEC_SNAPPY}
_INT32_MAX = 2**31 - 1


def parse_bootstrap(bootstrap_servers) -> list[tuple[str, int]]:
    """"host:port[,host:port]" (or a list of such strings) -> [(host, port)]."""
    if isinstance(bootstrap_servers, str):
        items = bootstrap_servers.split(",")
    elif isinstance(bootstrap_servers, (list, tuple)):
        items = list(bootstrap_servers)
    else:
        raise ConfigError("bootstrap_servers", "expected 'host:port[,host:port]'")
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("bootstrap_servers", f"{item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ConfigError("bootstrap_servers", "no servers given")
    return out


def _int(name: str, value: Any, lo: int, hi: int = 2**63 - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(name, f"expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, f"expected True or False, got {value!r}")
    return value


def _choice(name: str, value: Any, choices) -> Any:
    if value not in choices:
        raise ConfigError(name, f"expected one of {sorted(map(str, choices))}, got {value!r}")
    return value


def _client_id(value: Any) -> str:
    if not isinstance(value, str) or len(value.encode()) > 255:
        raise ConfigError("client_id", "expected a string of at most 255 bytes")
    return value


@dataclass(frozen=True)
class ProducerConfig:
    acks: int = 1                          # -1/"all", 0 or 1
    linger_ms: int = 5                     # wait this long to fill a batch
    batch_size: int = 16384                # bytes; a partition's batch is sent when full
    compression_type: str | None = None    # None|none|gzip|lz4|zstd|snappy
    max_in_flight: int = 5                 # pipelined produce requests per broker
    retries: int = _INT32_MAX              # retries of a batch on retriable errors
    retry_backoff_ms: int = 100            # wait before a retry
    delivery_timeout_ms: int = 120000      # give up on a batch after this long
    request_timeout_ms: int = 30000        # one request's timeout
    max_block_ms: int = 60000              # produce() blocks this long on full buffer / metadata
    buffer_memory: int = 33554432          # bytes of records not yet delivered
    enable_idempotence: bool = False       # producer id + sequence numbers
    client_id: str = "minilog"
    metadata_max_age_ms: int = 300000      # refresh metadata at least this often
    max_request_size: int = 1048576        # bytes; a produce request's size, and a record's limit
    socket_connection_setup_timeout_ms: int = 5000   # connect timeout (refused: at once)

    @property
    def codec(self) -> int:
        return CODECS[self.compression_type]

    @classmethod
    def from_kwargs(cls, **kwargs) -> ProducerConfig:
        _unknown(cls, kwargs)
        c = cls(**kwargs)
        acks = c.acks
        if acks == "all":
            acks = -1
        _choice("acks", acks, (-1, 0, 1))
        _int("linger_ms", c.linger_ms, 0, 3_600_000)
        _int("batch_size", c.batch_size, 1, 64 * 1024 * 1024)
        codec = _choice("compression_type", c.compression_type, CODECS)
        if not codec_available(CODECS[codec]):
            raise ConfigError("compression_type", f"{codec} is not available in this install")
        _int("max_in_flight", c.max_in_flight, 1, 1000)
        _int("retries", c.retries, 0, _INT32_MAX)
        _int("retry_backoff_ms", c.retry_backoff_ms, 0, 3_600_000)
        _int("request_timeout_ms", c.request_timeout_ms, 1, _INT32_MAX)
        _int("delivery_timeout_ms", c.delivery_timeout_ms, 1, _INT32_MAX)
        _int("max_block_ms", c.max_block_ms, 0, _INT32_MAX)
        _int("buffer_memory", c.buffer_memory, 1024)
        _bool("enable_idempotence", c.enable_idempotence)
        _client_id(c.client_id)
        _int("metadata_max_age_ms", c.metadata_max_age_ms, 0)
        _int("max_request_size", c.max_request_size, 1024, 100 * 1024 * 1024)
        _int("socket_connection_setup_timeout_ms", c.socket_connection_setup_timeout_ms, 1, _INT32_MAX)
        if c.enable_idempotence and acks != -1:
            raise ConfigError("acks", "enable_idempotence requires acks='all' (as in Kafka)")
        if c.enable_idempotence and c.max_in_flight > 5:
            raise ConfigError("max_in_flight", "must be <= 5 with enable_idempotence")
        object.__setattr__(c, "acks", acks)
        return c


@dataclass(frozen=True)
class ConsumerConfig:
    group_id: str | None = None
    auto_offset_reset: str = "latest"          # latest|earliest|error
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = 5000
    session_timeout_ms: int = 45000
    max_poll_interval_ms: int = 300000
    partition_assignment_strategy: str | None = None  # None = the broker's default (sticky)
    fetch_min_bytes: int = 1
    fetch_max_bytes: int = 52428800
    max_partition_fetch_bytes: int = 1048576
    fetch_max_wait_ms: int = 500
    max_poll_records: int = 500
    request_timeout_ms: int = 30000
    client_id: str = "minilog"
    check_crcs: bool = True
    metadata_max_age_ms: int = 300000
    socket_connection_setup_timeout_ms: int = 5000   # connect timeout (refused: at once)

    @classmethod
    def from_kwargs(cls, **kwargs) -> ConsumerConfig:
        _unknown(cls, kwargs)
        c = cls(**kwargs)
        if c.group_id is not None and (not isinstance(c.group_id, str) or not c.group_id):
            raise ConfigError("group_id", "expected a non-empty string or None")
        _choice("auto_offset_reset", c.auto_offset_reset, ("latest", "earliest", "error"))
        _bool("enable_auto_commit", c.enable_auto_commit)
        _int("auto_commit_interval_ms", c.auto_commit_interval_ms, 1)
        _int("session_timeout_ms", c.session_timeout_ms, 1)
        _int("max_poll_interval_ms", c.max_poll_interval_ms, 1)
        if c.partition_assignment_strategy is not None:
            _choice("partition_assignment_strategy", c.partition_assignment_strategy,
                    ("range", "roundrobin", "sticky", "uniform"))
        _int("fetch_min_bytes", c.fetch_min_bytes, 0, _INT32_MAX)
        _int("fetch_max_bytes", c.fetch_max_bytes, 1, _INT32_MAX)
        _int("max_partition_fetch_bytes", c.max_partition_fetch_bytes, 1, _INT32_MAX)
        _int("fetch_max_wait_ms", c.fetch_max_wait_ms, 0, _INT32_MAX)
        _int("max_poll_records", c.max_poll_records, 1, 10_000_000)
        _int("request_timeout_ms", c.request_timeout_ms, 1, _INT32_MAX)
        _client_id(c.client_id)
        _bool("check_crcs", c.check_crcs)
        _int("metadata_max_age_ms", c.metadata_max_age_ms, 0)
        _int("socket_connection_setup_timeout_ms", c.socket_connection_setup_timeout_ms, 1, _INT32_MAX)
        if c.request_timeout_ms <= c.fetch_max_wait_ms:
            raise ConfigError("request_timeout_ms", "must be larger than fetch_max_wait_ms")
        return c


@dataclass(frozen=True)
class AdminConfig:
    request_timeout_ms: int = 30000
    client_id: str = "minilog"
    metadata_max_age_ms: int = 300000
    socket_connection_setup_timeout_ms: int = 5000   # connect timeout (refused: at once)

    @classmethod
    def from_kwargs(cls, **kwargs) -> AdminConfig:
        _unknown(cls, kwargs)
        c = cls(**kwargs)
        _int("request_timeout_ms", c.request_timeout_ms, 1, _INT32_MAX)
        _client_id(c.client_id)
        _int("metadata_max_age_ms", c.metadata_max_age_ms, 0)
        _int("socket_connection_setup_timeout_ms", c.socket_connection_setup_timeout_ms, 1, _INT32_MAX)
        return c


def _unknown(cls, kwargs: dict) -> None:
    known = {f.name for f in fields(cls)}
    for name in kwargs:
        if name not in known:
            raise ConfigError(name, f"unknown option for {cls.__name__[:-6]}; "
                                    f"known: {', '.join(sorted(known))}")
