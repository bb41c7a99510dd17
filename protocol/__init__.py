"""minilog's wire and batch formats, sans-IO: bytes in, messages out.

Installed as `minilog.protocol`. Imports nothing from the rest of the
project and performs no I/O.

Layout: shared by every codec at the top (the record batch: `_batch_header`,
`_records`, `_compression`, `_varint`; `_error_codes`; API keys in `_api`;
the request model in `_messages`; what a codec is in `_codec`), then one
package per wire protocol: `native/` (msgpack frames) and `kafka/`.
"""

from ._batch_header import *  # noqa: F403
from ._batch_header import __all__ as _header_all
from ._errors import *  # noqa: F403
from ._errors import __all__ as _errors_all
from ._records import *  # noqa: F403
from ._records import __all__ as _records_all
from ._validate import *  # noqa: F403
from ._validate import __all__ as _validate_all
from ._error_codes import *  # noqa: F403
from ._error_codes import __all__ as _error_codes_all
from ._api import *  # noqa: F403
from ._api import __all__ as _api_all
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._messages_admin import *  # noqa: F403
from ._messages_admin import __all__ as _messages_admin_all
from ._messages_groups import *  # noqa: F403
from ._messages_groups import __all__ as _messages_groups_all
from ._codec import *  # noqa: F403
from ._codec import __all__ as _codec_all
# native's names star-imported from its modules, not from the package: mypy does not follow a star
# import of a package that re-exports by star imports inside this import cycle (package <-> parent).
from .native._codec import *  # noqa: F403
from .native._frames import *  # noqa: F403
from .native._schemas import *  # noqa: F403
from .native import __all__ as _native_all

__all__ = [*_header_all, *_errors_all, *_records_all, *_validate_all, *_error_codes_all, *_api_all,
           *_messages_all, *_messages_admin_all, *_messages_groups_all, *_codec_all, *_native_all]
