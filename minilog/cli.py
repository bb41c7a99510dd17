"""The `minilog` command line: a thin click layer over the client and broker.

Every command parses its arguments, calls the library, and turns library
errors into one line on stderr plus a named exit code; no tracebacks.
"""

from __future__ import annotations

import click

from ._version import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minilog")
def main() -> None:
    """minilog: a Kafka-like partitioned commit-log broker in pure Python."""


if __name__ == "__main__":  # pragma: no cover
    main()
