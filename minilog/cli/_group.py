"""The root click group and the helpers every command shares.

Error handling: each command is wrapped by `_common.handle_errors`, which
turns `minilog.errors` exceptions into one line on stderr and a named exit
code. No traceback reaches the user. Errors click finds while parsing (an
unknown flag, a value out of an `IntRange`, a bad `TOPIC`) are one line too,
`minilog: error: <message> (see '<command> --help')`, with click's exit code
(EXIT_USAGE, or the code the parameter type set), instead of click's
multi-line usage block.
"""

from __future__ import annotations

import click
from click.exceptions import Exit, NoArgsIsHelpError, UsageError

from .._version import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _one_line(exc: UsageError) -> Exit:
    message = " ".join(exc.format_message().split())
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    click.echo(f"minilog: error: {message}{hint}", err=True)
    return Exit(exc.exit_code)


class _Main(click.Group):
    """The root group: usage errors anywhere below it print one line."""

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _one_line(exc) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minilog")
def main() -> None:
    """minilog: a Kafka-like partitioned commit-log broker in pure Python."""
