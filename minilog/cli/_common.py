"""Helpers the client commands share: exit codes, `--bootstrap-server`, and
one error funnel from `minilog.errors` to one stderr line and a named exit code.

Theory of operation: every client command (`topics ...`, `produce`, `consume`,
`groups ...`) is decorated with `@bootstrap_option` and `@handle_errors`.
The command body calls the client library and lets its typed exceptions
escape; `handle_errors` catches them, prints `minilog: error: <message>` on
stderr and exits with the code that `exit_code_for` picks. The command itself
raises `CliError(message, code)` for problems it finds on its own (a bad
`--config` pair, a bad `--format` field). No traceback reaches the user:
anything that is not a `MinilogError`, `CliError` or `OSError` is a bug in
minilog, and `handle_errors` reports it as one `minilog: internal error:`
line (exit 1); `MINILOG_DEBUG=1` prints its traceback too. Our code raises
typed errors for bad input, so that line should never be seen.

A closed stdout (`minilog groups list | head -1`: the reader exited) is not an
error: the command stops quietly with EXIT_OK, as Unix tools do. A write to it
raises BrokenPipeError (rich's console raises `StdoutClosed` instead of
exiting 1); `handle_errors` checks that stdout really is the closed pipe (a
broken pipe to the broker is a connection error, exit 3), points stdout at
/dev/null so the interpreter's final flush stays quiet, and exits 0.

Arguments are checked by click before a command runs: `TOPIC` (a click
type: non-empty, at most 249 of Kafka's legal characters [a-zA-Z0-9._-])
for every argument or option that names a topic, `non_empty` for ids.

Exit codes are named here and listed in docs/cli.md; scripts may rely on
them, so a number never changes meaning. Like DBDB's `tool.py`.
"""

from __future__ import annotations

import functools
import os
import select
import string
import sys
import traceback
from typing import Any, NoReturn, TypeVar
from collections.abc import Callable, Iterable

import click

from minilog._exceptions import sole_exception

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_BROKER_UNAVAILABLE",
    "EXIT_TOPIC_NOT_FOUND",
    "EXIT_TOPIC_EXISTS",
    "EXIT_INVALID_CONFIG",
    "EXIT_TIMEOUT",
    "EXIT_DELIVERY_FAILED",
    "EXIT_UNSUPPORTED",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "CliError",
    "StdoutClosed",
    "stdout_closed",
    "silence_stdout",
    "console",
    "DEFAULT_BOOTSTRAP_SERVER",
    "BOOTSTRAP_ENV",
    "bootstrap_option",
    "client_options",
    "handle_errors",
    "exit_code_for",
    "fail",
    "parse_config_pairs",
    "TOPIC",
    "TopicName",
    "topic_name_problem",
    "non_empty",
    "DEBUG_ENV",
    "INT32_MAX",
    "INT64_MAX",
    "PARTITIONS_MAX",
    "REPLICATION_FACTOR_MAX",
    "RecordFormatter",
]

EXIT_OK = 0                   # success
EXIT_ERROR = 1                # any other error reported by the broker or client
EXIT_USAGE = 2                # bad arguments, bad --format, bad input line (click uses 2 too)
EXIT_BROKER_UNAVAILABLE = 3   # could not connect to --bootstrap-server, or it went away
EXIT_TOPIC_NOT_FOUND = 4      # unknown topic or partition
EXIT_TOPIC_EXISTS = 5         # topics create: the name is taken
EXIT_INVALID_CONFIG = 6       # unknown config key, bad value, bad partition/replication count
EXIT_TIMEOUT = 7              # the broker did not answer within the request timeout
EXIT_DELIVERY_FAILED = 8      # produce: at least one record was not acknowledged
EXIT_UNSUPPORTED = 9          # the feature is not available in this build or broker
EXIT_INTERRUPTED = 130        # Ctrl-C (128 + SIGINT), as shells report it

EXIT_CODES: dict[str, int] = {
    name: value for name, value in globals().items() if name.startswith("EXIT_") and isinstance(value, int)
}

DEFAULT_BOOTSTRAP_SERVER = "localhost:9092"
BOOTSTRAP_ENV = "MINILOG_BOOTSTRAP_SERVER"

F = TypeVar("F", bound=Callable[..., Any])


class StdoutClosed(Exception):
    """The reader of stdout has gone (`| head`): stop quietly with EXIT_OK."""


def stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (Linux reports POLLERR on it)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not a real file (CliRunner, an IDE console)
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
    return any(event & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
               for _, event in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so later writes and the exit flush are quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def console(**options: Any) -> Any:
    """A rich Console on stdout whose broken pipe raises StdoutClosed (rich's own
    handler exits 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise StdoutClosed()

    return _Console(**options)


class CliError(Exception):
    """A problem the CLI reports itself: one line, one exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    raise CliError(message, code)


# ----------------------------------------------------------------------------
# Topic names and ids

INT32_MAX = 2**31 - 1   # ms, counts and partition numbers travel as int32
INT64_MAX = 2**63 - 1   # offsets travel as int64
# `topics create --partitions` (and so the largest partition number + 1): the broker's limit
# (PARTITIONS_MAX in minilog/broker/app.py; test_cli_broker checks that they agree).
PARTITIONS_MAX = 10_000
REPLICATION_FACTOR_MAX = 32_767  # int16 on the wire
TOPIC_NAME_MAX = 249  # Kafka's limit (a partition directory is NAME-NNN)
_TOPIC_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


def topic_name_problem(name: str) -> str | None:
    """Why `name` is not a legal topic name (Kafka's rules), or None when it is."""
    if not name:
        return "a topic name must not be empty"
    if name in (".", ".."):
        return f"a topic name cannot be {name!r}"
    if len(name) > TOPIC_NAME_MAX:
        return f"a topic name is at most {TOPIC_NAME_MAX} characters, got {len(name)}"
    bad = sorted(set(name) - _TOPIC_CHARS)
    if bad:
        return (f"topic name {name!r} has illegal character(s) {''.join(bad)!r}: "
                "use ASCII letters, digits, '.', '_' and '-'")
    return None


class _BadTopicName(click.BadParameter):
    exit_code = EXIT_INVALID_CONFIG


class TopicName(click.ParamType):
    """A click type for topic names; a bad one exits EXIT_INVALID_CONFIG (as the
    broker's INVALID_TOPIC_EXCEPTION does) before anything connects."""

    name = "topic"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = topic_name_problem(value)
        if problem is not None:
            raise _BadTopicName(problem, ctx=ctx, param=param)
        return str(value)


TOPIC = TopicName()


def non_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: refuse an empty string (a group id, a key...) with EXIT_USAGE."""
    if isinstance(value, str) and not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


# ----------------------------------------------------------------------------
# --bootstrap-server


def _check_bootstrap(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Accept `host:port[,host:port...]`; reject anything else with one line."""
    for address in value.split(","):
        host, sep, port = address.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"expected HOST:PORT, got {address!r}")
    return value


REQUEST_TIMEOUT_ENV = "MINILOG_REQUEST_TIMEOUT_MS"
REQUEST_TIMEOUT_MS_DEFAULT = 10_000  # ms: a CLI user waits this long for an absent broker
_META_TIMEOUT = "minilog.request_timeout_ms"


def _store_timeout(ctx: click.Context, param: click.Parameter, value: int) -> int:
    ctx.meta[_META_TIMEOUT] = value
    return value


def client_options() -> dict[str, Any]:
    """Options every client object of this command gets (request_timeout_ms)."""
    ctx = click.get_current_context(silent=True)
    timeout_ms = ctx.meta.get(_META_TIMEOUT) if ctx is not None else None
    return {"request_timeout_ms": timeout_ms or REQUEST_TIMEOUT_MS_DEFAULT}


def bootstrap_option(func: F) -> F:
    """`--bootstrap-server HOST:PORT` (env MINILOG_BOOTSTRAP_SERVER, default localhost:9092)
    and `--request-timeout-ms MS` (env MINILOG_REQUEST_TIMEOUT_MS, default 10000)."""
    func = click.option(
        "--request-timeout-ms",
        envvar=REQUEST_TIMEOUT_ENV,
        type=click.IntRange(1000, INT32_MAX),
        default=REQUEST_TIMEOUT_MS_DEFAULT,
        show_default=True,
        show_envvar=True,
        expose_value=False,
        is_eager=True,
        callback=_store_timeout,
        help="Give up on an unreachable or silent broker after this long.",
    )(func)
    return click.option(
        "--bootstrap-server",
        "bootstrap_server",
        envvar=BOOTSTRAP_ENV,
        default=DEFAULT_BOOTSTRAP_SERVER,
        show_default=True,
        show_envvar=True,
        metavar="HOST:PORT",
        callback=_check_bootstrap,
        help="Broker to connect to.",
    )(func)


# ----------------------------------------------------------------------------
# Errors -> one line and an exit code

# Kafka error codes (protocol/_error_codes.py numbers) that have their own exit code.
_CODE_EXITS = {
    3: EXIT_TOPIC_NOT_FOUND,       # UNKNOWN_TOPIC_OR_PARTITION
    7: EXIT_TIMEOUT,               # REQUEST_TIMED_OUT
    8: EXIT_BROKER_UNAVAILABLE,    # BROKER_NOT_AVAILABLE
    17: EXIT_INVALID_CONFIG,       # INVALID_TOPIC_EXCEPTION (bad topic name)
    36: EXIT_TOPIC_EXISTS,         # TOPIC_ALREADY_EXISTS
    37: EXIT_INVALID_CONFIG,       # INVALID_PARTITIONS
    38: EXIT_INVALID_CONFIG,       # INVALID_REPLICATION_FACTOR
    40: EXIT_INVALID_CONFIG,       # INVALID_CONFIG
    44: EXIT_INVALID_CONFIG,       # POLICY_VIOLATION
    35: EXIT_UNSUPPORTED,          # UNSUPPORTED_VERSION
}

# minilog.errors class names, most specific first. Looked up by name so this
# module imports before (and without) the client library.
_CLASS_EXITS = (
    ("UnknownTopicOrPartitionError", EXIT_TOPIC_NOT_FOUND),
    ("TopicAlreadyExistsError", EXIT_TOPIC_EXISTS),
    ("InvalidConfigError", EXIT_INVALID_CONFIG),
    ("ConfigError", EXIT_INVALID_CONFIG),
    ("BrokerUnavailableError", EXIT_BROKER_UNAVAILABLE),
    ("RequestTimeoutError", EXIT_TIMEOUT),
    ("UnsupportedVersionError", EXIT_UNSUPPORTED),
)


def _error_classes() -> tuple[type | None, list[tuple[type, int]]]:
    try:
        from .. import errors
    except ImportError:  # the client library has not landed in this build
        return None, []
    pairs = [(getattr(errors, name), code) for name, code in _CLASS_EXITS if hasattr(errors, name)]
    return getattr(errors, "MinilogError", None), pairs


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception escaping a command."""
    if isinstance(exc, CliError):
        return exc.code
    _, pairs = _error_classes()
    for cls, code in pairs:
        if isinstance(exc, cls):
            return code
    error_code = getattr(exc, "code", None)
    if isinstance(error_code, int) and error_code in _CODE_EXITS:
        return _CODE_EXITS[error_code]
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return EXIT_BROKER_UNAVAILABLE if isinstance(exc, ConnectionError) else EXIT_TIMEOUT
    return EXIT_ERROR


def error_message(exc: BaseException) -> str:
    """One line: the exception's message, its kind when it has none."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, CliError):
        text = f"{type(exc).__name__}: {text}"
    return text


def report(message: str) -> None:
    """Print one error line on stderr."""
    click.echo(f"minilog: error: {message}", err=True)


DEBUG_ENV = "MINILOG_DEBUG"


def report_internal_error(exc: BaseException) -> None:
    """A bug in minilog: one line, and the traceback only with MINILOG_DEBUG=1."""
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split())
    click.echo(f"minilog: internal error: {type(exc).__name__}: {text} "
               f"(run with {DEBUG_ENV}=1 for the traceback)", err=True)


def handle_errors(func: F) -> F:
    """Turn CliError, minilog errors and connection errors into one line + exit code.

    Error handling: `click.exceptions.Exit` / `Abort` / usage errors pass
    through to click. `KeyboardInterrupt` exits EXIT_INTERRUPTED quietly.
    Only `MinilogError`, `CliError` and `OSError` are expected; anything
    else is a minilog bug, reported as one `internal error` line with exit
    EXIT_ERROR (the traceback with MINILOG_DEBUG=1). The fix for such a line
    is to make our code raise a typed error, not to widen this list.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        base, _ = _error_classes()
        expected: tuple[type[BaseException], ...] = (CliError, OSError)
        if base is not None:
            expected += (base,)
        try:
            try:
                return func(*args, **kwargs)
            except BaseExceptionGroup as group:
                # trio's strict exception groups: judge the one error inside.
                raise sole_exception(group) from None
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except StdoutClosed:
            silence_stdout()
            sys.exit(EXIT_OK)
        except BrokenPipeError as exc:
            if stdout_closed():
                silence_stdout()
                sys.exit(EXIT_OK)
            report(error_message(exc))           # a pipe to the broker: a connection error
            sys.exit(exit_code_for(exc))
        except expected as exc:
            report(error_message(exc))
            sys.exit(exit_code_for(exc))
        except Exception as exc:
            report_internal_error(exc)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------
# --config K=V


def parse_config_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """`["retention.ms=1000", ...]` -> `{"retention.ms": "1000"}`.

    Values stay strings: the broker parses and validates them against its
    config table (one place for the rules) and answers INVALID_CONFIG.

    Raises:
        CliError(EXIT_INVALID_CONFIG): a pair without `=` or with an empty key.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"--config expects KEY=VALUE, got {pair!r}", EXIT_INVALID_CONFIG)
        out[key] = value.strip()
    return out


# ----------------------------------------------------------------------------
# consume --format

FORMAT_FIELDS = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")
_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\\\": "\\"}


def _unescape(text: str) -> str:
    """Turn the two-character sequences \\t, \\n, \\\\ into tab, newline, backslash."""
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in _ESCAPES:
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _text(data: bytes | None) -> str:
    return "null" if data is None else bytes(data).decode("utf-8", "replace")


def _headers_text(headers: Any) -> str:
    if not headers:
        return ""
    return ",".join(f"{k}:{_text(v)}" for k, v in headers)


class RecordFormatter:
    """Renders records with a Python format string over FORMAT_FIELDS.

    key and value are decoded as UTF-8 with replacement; a missing key or
    value prints `null` (as kafka-console-consumer does); headers print as
    `k1:v1,k2:v2`. `\\t` and `\\n` in the template become tab and newline.

    Raises (constructor): CliError(EXIT_USAGE) for an unknown field, a
    positional field or a template that does not render.
    """

    def __init__(self, template: str) -> None:
        self.template = _unescape(template)
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            fail(f"bad --format {template!r}: {exc}", EXIT_USAGE)
        for _, field, _, _ in parsed:
            if field is None:
                continue
            root = field.split(".", 1)[0].split("[", 1)[0]
            if root not in FORMAT_FIELDS:
                fail(
                    f"bad --format field {{{field}}}: use {', '.join(f'{{{f}}}' for f in FORMAT_FIELDS)}",
                    EXIT_USAGE,
                )
        sample = dict(topic="t", partition=0, offset=0, timestamp=0, key="k", value="v", headers="")
        try:
            self.template.format(**sample)
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            fail(f"bad --format {template!r}: {exc}", EXIT_USAGE)

    def __call__(self, record: Any) -> str:
        return self.template.format(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=_text(record.key),
            value=_text(record.value),
            headers=_headers_text(record.headers),
        )


def stdout_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
