"""`minilog serve`: run the broker daemon in the foreground.

Settings come from Kafka's key names (docs/configuration.md): a TOML file
(`--config`, nested tables are joined with dots) and `--set KEY=VALUE`
pairs, which win. A bad flag, unknown key or bad value prints one line on
stderr and exits with EXIT_USAGE (2); a data dir the broker cannot use
exits with EXIT_ERROR (1). On start one line on stdout gives the listening
address; SIGTERM or SIGINT stops the broker cleanly and exits 0.

With `--metadata etcd://HOST:PORT[/ROOT]` the broker joins a cluster
(docs/cluster.md): it waits until it can read the cluster's metadata and
has registered, then prints the same line. A cluster member's SIGTERM is a
controlled shutdown (leaderships move first) unless
controlled.shutdown.enable=false.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from typing import Any, NoReturn

import click

from ._group import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _OneLineErrorCommand(click.Command):
    """Usage errors as one line on stderr (no usage dump), exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _fail(exc.format_message(), EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"minilog serve: error: {message}", err=True)
    sys.exit(code)


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return _flatten(tomllib.load(f))
    except OSError as exc:
        _fail(f"--config {path}: {exc.strerror or exc}", EXIT_USAGE)
    except tomllib.TOMLDecodeError as exc:
        _fail(f"--config {path}: not valid TOML: {exc}", EXIT_USAGE)


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"--set {pair!r}: expected KEY=VALUE", EXIT_USAGE)
        out[key.strip()] = value
    return out


@main.command("serve", cls=_OneLineErrorCommand)
@click.option("--data-dir", default="./minilog-data", show_default=True,
              help="Directory holding topics, partition logs and metadata.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9092, show_default=True,
              help="TCP port; 0 picks a free one (printed on start).")
@click.option("--kafka-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve Kafka's binary protocol on this port (setting kafka.port); 0 picks a free one.")
@click.option("--broker-id", type=click.IntRange(0, 2**31 - 1), default=None,
              help="Broker id (default: broker.id setting, 0).")
@click.option("--config", "config_file", default=None, metavar="FILE.toml",
              help="TOML file of broker settings by Kafka key.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A broker setting by Kafka key; repeatable; wins over --config.")
@click.option("--metadata", default=None, metavar="etcd://HOST:PORT[/ROOT]",
              help="Join the cluster whose metadata is in this etcd (default: none; a single "
                   "broker keeping its metadata in the data dir).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
              case_sensitive=False), default="INFO", show_default=True)
def serve(data_dir: str, host: str, port: int, kafka_port: int | None, broker_id: int | None,
          config_file: str | None, sets: tuple[str, ...], metadata: str | None, log_level: str) -> None:
    """Run a minilog broker in the foreground until SIGTERM or SIGINT."""
    import trio

    from minilog.broker.app import Broker
    from minilog.broker.config import BrokerConfig, ConfigError

    file_values = _read_config_file(config_file) if config_file else {}
    try:
        extra = {} if kafka_port is None else {"kafka.port": kafka_port}
        config = BrokerConfig.from_sources(file_values, _parse_sets(sets), extra)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    if metadata is not None:
        from minilog.broker.cluster import parse_metadata_url

        try:
            parse_metadata_url(metadata)
        except ValueError as exc:
            _fail(str(exc), EXIT_USAGE)
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    broker = Broker(config, data_dir, host=host, port=port, broker_id=broker_id,
                    install_signal_handlers=True, metadata=metadata)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            bound_host, bound_port = await nursery.start(broker.run)
            click.echo(f"minilog broker {broker.broker_id} listening on {bound_host}:{bound_port}")
            for bound in broker.listeners.bound[1:]:
                click.echo(f"minilog broker {broker.broker_id} {bound.info.name} listener on "
                           f"{bound.config.host}:{bound.info.port}")
            sys.stdout.flush()

    from minilog._exceptions import leaf_exceptions
    from minilog.storage import StorageError

    operating_errors = (OSError, ValueError, StorageError)   # a port in use, a bad data dir
    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(EXIT_OK)
    except operating_errors as exc:
        _fail(str(exc), EXIT_ERROR)
    except BaseExceptionGroup as group:   # trio with strict exception groups wraps them
        leaves = leaf_exceptions(group)
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            sys.exit(EXIT_OK)
        if leaves and all(isinstance(e, operating_errors) for e in leaves):
            _fail(str(leaves[0]), EXIT_ERROR)
        raise
    sys.exit(EXIT_OK)
