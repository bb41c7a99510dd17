"""Kafka's binary protocol, sans-IO: frames, headers and the schemas of the APIs minilog serves.

Installed as `minilog.protocol.kafka`. Like the rest of `protocol/`, it does
no I/O and imports nothing outside the protocol package. The Kafka listener
(`minilog.broker.kafka`) gives each connection a `KafkaServerCodec`, which
turns frames into the broker's codec-neutral request objects and response
objects back into frames, in the version each request used.
"""

from ._classic_model import *  # noqa: F403
from ._classic_model import __all__ as _classic_all
from ._codec import *  # noqa: F403
from ._codec import __all__ as _codec_all
from ._consumer_protocol import *  # noqa: F403
from ._consumer_protocol import __all__ as _consumer_all
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._server import *  # noqa: F403
from ._server import __all__ as _server_all
from ._types import *  # noqa: F403
from ._types import __all__ as _types_all

__all__ = [*_codec_all, *_messages_all, *_types_all, *_server_all, *_classic_all, *_consumer_all]
