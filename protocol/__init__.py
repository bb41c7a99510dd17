"""minilog's wire and batch formats, sans-IO: bytes in, messages out.

Installed as `minilog.protocol`. Imports nothing from the rest of the
project and performs no I/O.
"""

from ._batch_header import *  # noqa: F401,F403
from ._batch_header import __all__ as _header_all
from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all

__all__ = [*_header_all, *_errors_all]
