"""`minilog consume TOPIC`: print records until Ctrl-C, `--max-messages` or `--timeout-ms`.

Theory of operation: like kafka-console-consumer.

* Without `--group` the consumer assigns itself partitions: every partition
  of TOPIC (from `Admin.describe_topic`), or only `--partition P`. It starts
  at the log end (new records only), at the log start with
  `--from-beginning`, or at `--offset O` (`earliest` / `latest` / a number;
  needs `--partition`). A number outside the partition's log is clamped to
  [log start, log end] (as `groups reset-offsets` does) with one
  `minilog: warning:` line on stderr naming where it starts instead, so a
  consume past the end does not wait silently. Nothing is committed.
* With `--group G` the consumer joins the group through `subscribe` and
  commits what it printed after each poll, so a second run goes on where
  this one stopped; `--from-beginning` only matters for a group with no
  committed offset (auto_offset_reset=earliest), as in Kafka. A member whose
  broker is gone only retries its heartbeats (poll stays empty), so after
  each idle second the command asks the broker for a log end offset: with no
  broker for `--request-timeout-ms` that fails and the command exits 3
  (EXIT_BROKER_UNAVAILABLE), as without `--group`.

Each record is printed with `--format` (Python format fields topic,
partition, offset, timestamp, key, value, headers; default `{value}`), and
stdout is flushed after each poll so pipes see records as they arrive.

Stopping: `--max-messages N` after N records, `--timeout-ms T` when no
record arrived for T ms, Ctrl-C (SIGINT) or SIGTERM at any time. On every
path the consumer is closed (a group member leaves its group) and no
traceback is printed; Ctrl-C exits EXIT_INTERRUPTED (130), the other stops
exit 0. A closed stdout (`| head`) stops quietly too.

Signals are deferred: the SIGINT/SIGTERM handlers only record the signal,
and the command acts on it at safe points (after each poll, at most
_POLL_MS_MAX later). A KeyboardInterrupt raised asynchronously inside the
client could land between a `with lock:`'s acquire and its block (in
`Consumer.poll`'s `threading.Condition`, or in `trio.from_thread.run`'s
queue), leaving that lock held by the main thread; the client's trio thread
then blocks on it forever and close() never returns. A second Ctrl-C exits
at once (EXIT_INTERRUPTED), for a start-up or close that waits on a broker.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    INT32_MAX,
    INT64_MAX,
    PARTITIONS_MAX,
    TOPIC,
    RecordFormatter,
    StdoutClosed,
    non_empty,
    bootstrap_option,
    client_options,
    fail,
    handle_errors,
    silence_stdout,
    stdout_closed,
)
from ._group import main

_POLL_MS_MAX = 500           # ms: longest single poll, so stop conditions are checked often
_POLL_RECORDS_MAX = 10_000   # records per poll
_PROBE_IDLE_S = 1.0          # s: with --group, idle this long -> ask the broker for a log end


def _parse_offset(text: str | None) -> int | str | None:
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("earliest", "beginning"):
        return "earliest"
    if lowered in ("latest", "end"):
        return "latest"
    try:
        offset = int(lowered)
    except ValueError:
        fail(f"--offset expects a number, earliest or latest, got {text!r}", EXIT_USAGE)
    if not 0 <= offset <= INT64_MAX:
        fail(f"--offset must be in 0..{INT64_MAX}, got {offset}", EXIT_USAGE)
    return offset


class _Terminated(Exception):
    """SIGTERM arrived: stop like --max-messages did."""


class _DeferredSignals:
    """SIGINT/SIGTERM handlers that only record the signal; `check()` raises it at a safe point."""

    def __init__(self) -> None:
        self.pending: int | None = None

    def handler(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.pending is not None:
            os._exit(EXIT_INTERRUPTED)      # a second Ctrl-C: the user will not wait
        self.pending = signum

    def check(self) -> None:
        """Raise KeyboardInterrupt (SIGINT) or _Terminated (SIGTERM) if one arrived."""
        if self.pending == signal.SIGINT:
            raise KeyboardInterrupt
        if self.pending is not None:
            raise _Terminated()


@main.command()
@click.argument("topic", type=TOPIC)
@click.option("--group", "-g", default=None, callback=non_empty, help="Join consumer group G and commit offsets.")
@click.option("--from-beginning", is_flag=True,
              help="Start at the log start (with --group: when the group has no offset yet).")
@click.option("--max-messages", "-n", type=click.IntRange(1, INT64_MAX), default=None,
              help="Exit after printing N records.")
@click.option("--partition", "-p", type=click.IntRange(0, PARTITIONS_MAX - 1), default=None,
              help="Read only this partition.")
@click.option("--offset", "-o", default=None, metavar="O",
              help="Start offset in --partition: a number, earliest or latest.")
@click.option("--timeout-ms", type=click.IntRange(0, INT32_MAX), default=None,
              help="Exit when no record arrived for T ms.")
@click.option("--format", "-f", "template", default="{value}", show_default=True,
              help="Python format string over topic, partition, offset, timestamp, key, value, headers.")
@bootstrap_option
@handle_errors
def consume(topic: str, group: str | None, from_beginning: bool, max_messages: int | None,
            partition: int | None, offset: str | None, timeout_ms: int | None, template: str,
            bootstrap_server: str) -> None:
    """Print records from TOPIC until Ctrl-C, --max-messages or --timeout-ms."""
    formatter = RecordFormatter(template)
    start = _parse_offset(offset)
    if start is not None and partition is None:
        fail("--offset needs --partition", EXIT_USAGE)
    if start is not None and from_beginning:
        fail("give --from-beginning or --offset, not both", EXIT_USAGE)
    if group is not None and (partition is not None or start is not None):
        fail("--group assigns partitions itself; drop --partition/--offset", EXIT_USAGE)
    if from_beginning:
        start = "earliest"

    import minilog

    previous_term = signal.getsignal(signal.SIGTERM)
    previous_int = signal.getsignal(signal.SIGINT)
    signals = _DeferredSignals()
    signal.signal(signal.SIGTERM, signals.handler)
    signal.signal(signal.SIGINT, signals.handler)
    consumer = None
    code = EXIT_OK
    try:
        numbers = _partitions(minilog, bootstrap_server, topic)  # EXIT_TOPIC_NOT_FOUND early
        signals.check()
        if group is not None:
            # We commit what we printed, after printing it; auto-commit could run ahead.
            consumer = minilog.Consumer(bootstrap_server, group_id=group, enable_auto_commit=False,
                                        auto_offset_reset="earliest" if from_beginning else "latest",
                                        **client_options())
            consumer.subscribe([topic])
        else:
            consumer = minilog.Consumer(bootstrap_server, **client_options())
            _assign(consumer, topic, numbers, partition, start)
        signals.check()
        probe = None
        if group is not None:
            # A group member whose broker died only retries its heartbeats: poll() stays
            # empty and says nothing. A cheap request while idle turns that into
            # BrokerUnavailableError (exit 3) after the request timeout, as docs/cli.md says.
            probe_tp = (topic, numbers[0])
            probe = lambda: consumer.end_offsets([probe_tp])
        _loop(consumer, formatter, max_messages, timeout_ms, commit=group is not None,
              probe=probe, stopped=signals.check)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except (_Terminated, StdoutClosed):
        code = EXIT_OK
    except BrokenPipeError:
        if not stdout_closed():
            raise                       # a pipe to the broker, not ours: handle_errors says so
        code = EXIT_OK
    finally:
        if consumer is not None:
            _close_quietly(consumer)      # a Ctrl-C now exits at once (signals.handler)
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        _flush_stdout()
    if code != EXIT_OK:
        sys.exit(code)


def _partitions(minilog: Any, bootstrap_server: str, topic: str) -> list[int]:
    """TOPIC's partition numbers; raises UnknownTopicOrPartitionError for a missing topic."""
    with minilog.Admin(bootstrap_server, **client_options()) as admin:
        desc = admin.describe_topic(topic)
    return sorted(p.partition for p in desc.partitions)


def _assign(consumer: Any, topic: str, numbers: list[int], partition: int | None,
            start: int | str | None) -> None:
    """Assign every partition of topic (or just `partition`) at `start`."""
    if partition is not None:
        if partition not in numbers:
            from minilog.errors import UnknownTopicOrPartitionError

            raise UnknownTopicOrPartitionError(
                message=f"topic {topic} has no partition {partition} (it has {len(numbers)})")
        numbers = [partition]
    if isinstance(start, int):
        consumer.assign([(topic, p, _clamped(consumer, topic, p, start)) for p in numbers])
        return
    consumer.assign([(topic, p) for p in numbers])
    if start == "earliest":
        consumer.seek_to_beginning()
    else:
        consumer.seek_to_end()


def _clamped(consumer: Any, topic: str, partition: int, offset: int) -> int:
    """`offset`, or the nearer end of the partition's log when it is outside it (with a
    warning line: the consumer would otherwise reset quietly and wait at the log end)."""
    tp = (topic, partition)
    lo = consumer.beginning_offsets([tp])[tp]
    hi = consumer.end_offsets([tp])[tp]
    if lo <= offset <= hi:
        return offset
    start = min(max(offset, lo), hi)
    where = "log end" if start == hi else "log start"
    click.echo(f"minilog: warning: {topic}-{partition}: offset {offset} is outside the log "
               f"[{lo}, {hi}]; starting at the {where}, offset {start}", err=True)
    return start


def _loop(consumer: Any, formatter: RecordFormatter, max_messages: int | None,
          timeout_ms: int | None, commit: bool, probe: Callable[[], object] | None = None,
          stopped: Callable[[], None] = lambda: None) -> None:
    """Poll and print until a stop condition; commit after each printed poll.

    `probe`, when given, runs after every _PROBE_IDLE_S without records; it raises
    (BrokerUnavailableError) when the broker is gone. `stopped` runs after every
    poll and raises to stop (a deferred Ctrl-C or SIGTERM).
    """
    out = sys.stdout
    printed = 0
    idle_since = probed_at = time.monotonic()
    while max_messages is None or printed < max_messages:
        wait_ms = _POLL_MS_MAX
        if timeout_ms is not None:
            left_ms = timeout_ms - (time.monotonic() - idle_since) * 1000
            if left_ms <= 0:
                return
            wait_ms = max(1, min(wait_ms, int(left_ms)))
        limit = _POLL_RECORDS_MAX
        if max_messages is not None:
            limit = min(limit, max_messages - printed)
        records = consumer.poll(timeout_ms=wait_ms, max_records=limit)
        stopped()
        if not records:
            if stdout_closed():
                raise StdoutClosed()   # `| head` exited: stop now, not at the next record
            if probe is not None and time.monotonic() - probed_at >= _PROBE_IDLE_S:
                probe()
                probed_at = time.monotonic()
            continue
        idle_since = probed_at = time.monotonic()
        out.write("".join(formatter(r) + "\n" for r in records))
        out.flush()
        printed += len(records)
        if commit:
            consumer.commit()


def _close_quietly(consumer: Any) -> None:
    """Close the consumer; a second Ctrl-C during close still exits without a traceback."""
    try:
        consumer.close()
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)
    except Exception:
        pass


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        silence_stdout()    # so the interpreter's exit flush stays quiet
