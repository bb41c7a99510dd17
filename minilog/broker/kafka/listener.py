"""The Kafka listener's `ListenerConfig` (see the package docstring)."""


from __future__ import annotations

from minilog.protocol import ServerCodec
from minilog.protocol.kafka import KafkaServerCodec

from ..connection import ConnectionLimits
from ..listeners import ListenerConfig

__all__ = ["kafka_codec", "kafka_listener", "KAFKA_LISTENER"]

KAFKA_LISTENER = "kafka"


def kafka_codec(limits: ConnectionLimits) -> ServerCodec:
    """A Kafka-protocol codec bounded by the listener's frame limit."""
    return KafkaServerCodec(limits.frame_bytes_max)


def kafka_listener(host: str, port: int, advertised_host: str | None = None) -> ListenerConfig:
    return ListenerConfig(KAFKA_LISTENER, host, port, kafka_codec, advertised_host)
