"""The root click group and the helpers every command shares.

Error handling: each command is wrapped by `_common.handle_errors`, which
turns `minilog.errors` exceptions into one line on stderr and a named exit
code. No traceback reaches the user.
"""

from __future__ import annotations

import click

from .._version import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minilog")
def main() -> None:
    """minilog: a Kafka-like partitioned commit-log broker in pure Python."""
