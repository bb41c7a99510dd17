"""minilog's native wire protocol: length-prefixed msgpack frames with raw
record-batch attachments (`_frames`), the payload schemas (`_schemas`), and
the codec between them and the request model (`_codec`).
"""

from ._codec import *  # noqa: F403
from ._codec import __all__ as _codec_all
from ._frames import *  # noqa: F403
from ._frames import __all__ as _frames_all
from ._schemas import *  # noqa: F403
from ._schemas import __all__ as _schemas_all

__all__ = [*_frames_all, *_schemas_all, *_codec_all]
