"""The Kafka listener's `ListenerConfig` (see the package docstring)."""


from __future__ import annotations

from minilog.protocol import ServerCodec
from minilog.protocol.kafka import KafkaServerCodec

from ..config import BrokerConfig
from ..connection import ConnectionLimits
from ..listeners import ListenerConfig
from .spec import parse_listeners

__all__ = ["kafka_codec", "kafka_listener", "configured_listeners", "KAFKA_LISTENER"]

KAFKA_LISTENER = "kafka"


def kafka_codec(limits: ConnectionLimits) -> ServerCodec:
    """A Kafka-protocol codec bounded by the listener's frame limit."""
    return KafkaServerCodec(limits.frame_bytes_max)


def kafka_listener(host: str, port: int, advertised_host: str | None = None) -> ListenerConfig:
    return ListenerConfig(KAFKA_LISTENER, host, port, kafka_codec, advertised_host)


def configured_listeners(config: BrokerConfig, host: str, port: int) -> list[ListenerConfig]:
    """The broker's listeners from its settings: `listeners` when set, else the native one at
    host:port, plus a Kafka one on the same host when `kafka.port` is set (>= 0) and
    `listeners` names none."""
    parsed = parse_listeners(config.listeners)
    out = [kafka_listener(h, p) if kind == KAFKA_LISTENER else ListenerConfig("native", h, p)
           for kind, h, p in parsed] or [ListenerConfig("native", host, port)]
    if config.kafka_port >= 0 and all(c.name != KAFKA_LISTENER for c in out):
        out.append(kafka_listener(out[0].host, config.kafka_port))
    return out
