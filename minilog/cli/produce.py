"""`minilog produce TOPIC`: send `--value` or one record per stdin line.

Theory of operation: like kafka-console-producer. Without `--value`, each
line of stdin (bytes, the line ending stripped) is one record's value; with
`--key-separator S` the line splits at the first S into key and value. The
records go through one `minilog.Producer`, which batches them; at the end
the command flushes and waits for every delivery report.

Output: nothing on success. On failure, one stderr line naming how many
records failed and the first error, and a non-zero exit (the first error's
own code, e.g. EXIT_TOPIC_NOT_FOUND, or EXIT_DELIVERY_FAILED).

Error handling: a line without the separator stops reading with
EXIT_USAGE after flushing what was already sent (kafka-console-producer
fails the same way). `--partition P` that TOPIC does not have exits
EXIT_TOPIC_NOT_FOUND before anything is sent (as `consume --partition`).
Delivery is bounded by `--delivery-timeout-ms` (default 30 s, retries
included: a retriable error such as NOT_ENOUGH_REPLICAS under `--acks all`
is retried until then) plus a short grace for the final flush. Ctrl-C flushes nothing more and exits
EXIT_INTERRUPTED.
"""

from __future__ import annotations

import sys
from typing import BinaryIO
from collections.abc import Iterator

import click

from ._common import (
    EXIT_DELIVERY_FAILED,
    EXIT_USAGE,
    INT32_MAX,
    PARTITIONS_MAX,
    TOPIC,
    CliError,
    bootstrap_option,
    client_options,
    exit_code_for,
    fail,
    handle_errors,
)
from ._group import main

_ACKS = {"0": 0, "1": 1, "all": "all", "-1": "all"}
_COMPRESSION = ("none", "gzip", "lz4", "zstd")
_FLUSH_GRACE_S = 5.0  # seconds the final flush may take beyond --delivery-timeout-ms
_CLOSE_ON_ERROR_S = 5.0  # seconds close() may flush after Ctrl-C or an error


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


class _Deliveries:
    """Counts delivery reports; keeps the first error."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: BaseException | None = None

    def __call__(self, err, report=None) -> None:  # on_delivery(err, report)
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err if isinstance(err, BaseException) else CliError(str(err))


@main.command()
@click.argument("topic", type=TOPIC)
@click.option("--key", "-k", default=None, help="Key for every record (UTF-8).")
@click.option("--value", "-v", default=None,
              help="Send this one value instead of reading stdin.")
@click.option("--key-separator", "-s", default=None, metavar="S",
              help="Split each stdin line at the first S into key and value.")
@click.option("--partition", type=click.IntRange(0, PARTITIONS_MAX - 1), default=None,
              help="Send to this partition (default: by key hash, sticky without a key).")
@click.option("--header", "headers", multiple=True, metavar="K=V",
              help="Add a header to every record. Repeatable.")
@click.option("--acks", type=click.Choice(list(_ACKS)), default="1", show_default=True,
              help="0: fire and forget; 1: the leader wrote it; all: the in-sync replicas did.")
@click.option("--compression", "--compression-type", "compression",
              type=click.Choice(_COMPRESSION), default="none", show_default=True,
              help="Batch compression codec.")
@click.option("--linger-ms", type=click.IntRange(0, INT32_MAX), default=5, show_default=True,
              help="Wait this long to fill a batch.")
@click.option("--delivery-timeout-ms", type=click.IntRange(1, INT32_MAX), default=30_000,
              show_default=True,
              help="Give up on a record (retries included) after this long.")
@bootstrap_option
@handle_errors
def produce(topic: str, key: str | None, value: str | None, key_separator: str | None,
            partition: int | None, headers: tuple[str, ...], acks: str, compression: str,
            linger_ms: int, delivery_timeout_ms: int, bootstrap_server: str) -> None:
    """Send records to TOPIC: --value, or one record per stdin line."""
    if key_separator == "":
        fail("--key-separator must not be empty", EXIT_USAGE)
    if key_separator is not None and (key is not None or value is not None):
        fail("--key-separator reads keys from stdin; do not combine it with --key or --value",
             EXIT_USAGE)
    header_list = []
    for pair in headers:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            fail(f"--header expects K=V, got {pair!r}", EXIT_USAGE)
        header_list.append((name, text.encode()))
    key_bytes = key.encode() if key is not None else None
    sep_bytes = key_separator.encode() if key_separator is not None else None

    import minilog
    from minilog.errors import MinilogError

    deliveries = _Deliveries()
    producer = minilog.Producer(bootstrap_server, acks=_ACKS[acks], linger_ms=linger_ms,
                                compression_type=compression,
                                delivery_timeout_ms=delivery_timeout_ms, **client_options())
    sent = 0
    try:
        if partition is not None:
            _check_partition(producer, topic, partition)

        def send(k: bytes | None, v: bytes) -> None:
            nonlocal sent
            try:
                producer.produce(topic, v, key=k, partition=partition,
                                 headers=header_list or None, on_delivery=deliveries)
            except MinilogError:
                raise
            except (TypeError, ValueError) as exc:  # the client refused an argument
                fail(f"cannot produce to {topic}: {exc}", EXIT_USAGE)
            sent += 1

        if value is not None:
            send(key_bytes, value.encode())
        else:
            for number, line in enumerate(_lines(sys.stdin.buffer), 1):
                if sep_bytes is None:
                    send(key_bytes, line)
                    continue
                k, found, v = line.partition(sep_bytes)
                if not found:
                    producer.flush(delivery_timeout_ms / 1000 + _FLUSH_GRACE_S)
                    fail(f"line {number}: no key separator {key_separator!r} found", EXIT_USAGE)
                send(k, v)
        remaining = producer.flush(delivery_timeout_ms / 1000 + _FLUSH_GRACE_S)
    except BaseException:
        # Ctrl-C or an error: give in-flight records a moment, never hang on the way out.
        producer.close(_CLOSE_ON_ERROR_S)
        raise
    producer.close()
    if deliveries.failed or remaining:
        failed = deliveries.failed + (remaining or 0)
        err = deliveries.first_error
        reason = f": {err}" if err is not None else " (flush timed out)"
        code = exit_code_for(err) if err is not None else EXIT_DELIVERY_FAILED
        fail(f"{failed} of {sent} records not delivered{reason}",
             code if code != 1 else EXIT_DELIVERY_FAILED)


def _check_partition(producer, topic: str, partition: int) -> None:
    """Raise UnknownTopicOrPartitionError unless TOPIC has `partition` (and exists)."""
    count = len(producer.partitions_for(topic))
    if partition >= count:
        from minilog.errors import UnknownTopicOrPartitionError

        raise UnknownTopicOrPartitionError(
            message=f"topic {topic} has no partition {partition} (it has {count})")
