"""Kafka's binary protocol, sans-IO: frames, headers and the schemas of the APIs minilog serves.

Installed as `minilog.protocol.kafka`. Like the rest of `protocol/`, it does
no I/O and imports nothing outside the protocol package. The listener in
`minilog.broker` pumps a socket through `KafkaFrameDecoder`, turns each
`KafkaRequest` into the broker's codec-neutral requests, and writes the
pieces `encode_response` returns.
"""

from ._classic_model import *  # noqa: F403
from ._classic_model import __all__ as _classic_all
from ._codec import *  # noqa: F403
from ._codec import __all__ as _codec_all
from ._consumer_protocol import *  # noqa: F403
from ._consumer_protocol import __all__ as _consumer_all
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._types import *  # noqa: F403
from ._types import __all__ as _types_all

__all__ = [*_codec_all, *_messages_all, *_types_all, *_classic_all, *_consumer_all]
