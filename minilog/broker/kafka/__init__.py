"""The Kafka listener: Kafka's binary protocol beside minilog's native one.

Rules:
- It is one more `ListenerConfig` in the broker's list, with
  `KafkaServerCodec` (`minilog.protocol.kafka`) as its codec and the same
  limits as the native listener (frame size before allocation, idle and
  per-request timeouts, read-ahead). Requests become the same request
  objects, so produce, fetch, topics, offsets and committed offsets are
  shared with the native listener; only the classic group APIs have
  handlers of their own (`handlers.py`).
- `listener.py` builds the listener; enabled by `kafka.port` (or `minilog serve --kafka-port N`); 0 picks a
  free port, -1 (the default) runs no Kafka listener.
"""
