"""`minilog topics create | list | describe | delete | alter`: thin calls to `minilog.Admin`.

Theory of operation: each command parses its flags, opens one `Admin` on
`--bootstrap-server`, makes one or two calls and prints. Tables are drawn
with rich; when stdout is not a terminal the table is drawn wide enough not
to wrap, so scripts and tests see one row per partition. Errors escape as
`minilog.errors` exceptions and `handle_errors` turns them into one stderr
line and a named exit code (see `_common.py` and docs/cli.md).
"""

from __future__ import annotations

from typing import Any, Literal

import click

from ._common import (
    EXIT_INVALID_CONFIG,
    EXIT_USAGE,
    PARTITIONS_MAX,
    REPLICATION_FACTOR_MAX,
    TOPIC,
    bootstrap_option,
    client_options,
    console,
    fail,
    handle_errors,
    parse_config_pairs,
    stdout_is_terminal,
)
from ._group import main

_WIDE_COLUMNS = 200  # characters: table width when stdout is a pipe or a file


def _admin(bootstrap_server: str):
    import minilog

    return minilog.Admin(bootstrap_server, **client_options())


def _console():
    if stdout_is_terminal():
        return console(highlight=False)
    return console(highlight=False, width=_WIDE_COLUMNS, color_system=None, soft_wrap=False)


def _table(*headers: str, title: str | None = None):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False,
                  show_edge=False)
    for header in headers:
        justify: Literal["right", "left"] = "right" if header in _NUMERIC else "left"
        table.add_column(header, justify=justify, no_wrap=True)
    return table


_NUMERIC = {"PARTITION", "PARTITIONS", "LEADER", "EPOCH", "LOG-START-OFFSET", "LOG-END-OFFSET",
            "HIGH-WATERMARK", "SIZE", "REPLICATION-FACTOR"}


def _ids(values: Any) -> str:
    return ",".join(str(v) for v in values or ())


def _size(n: int | None) -> str:
    """Bytes as a short human figure: 0 B, 812 B, 4.0 KiB, 1.2 MiB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@main.group()
def topics() -> None:
    """Create, list, describe, alter and delete topics."""


@topics.command("create")
@click.argument("name", type=TOPIC)
@click.option("--partitions", "-p", type=click.IntRange(1, PARTITIONS_MAX), default=None,
              help="Number of partitions (default: the broker's num.partitions).")
@click.option("--replication-factor", "-r", type=click.IntRange(1, REPLICATION_FACTOR_MAX),
              default=None,
              help="Copies of each partition (default: the broker's default.replication.factor).")
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config by Kafka's name, e.g. retention.ms=604800000. Repeatable.")
@click.option("--if-not-exists", is_flag=True, help="Succeed quietly if the topic exists.")
@bootstrap_option
@handle_errors
def create(name: str, partitions: int | None, replication_factor: int | None,
           configs: tuple[str, ...], if_not_exists: bool, bootstrap_server: str) -> None:
    """Create topic NAME."""
    config = parse_config_pairs(configs)
    from minilog.errors import TopicAlreadyExistsError

    with _admin(bootstrap_server) as admin:
        try:
            admin.create_topic(name, -1 if partitions is None else partitions,  # -1: broker default
                               -1 if replication_factor is None else replication_factor, config)
        except TopicAlreadyExistsError:
            if not if_not_exists:
                raise
            return
    click.echo(f"Created topic {name}.")


@topics.command("list")
@click.option("--names-only", "-q", is_flag=True, help="Print only the names, one per line.")
@click.option("--internal", is_flag=True, help="Include internal topics (__consumer_offsets).")
@bootstrap_option
@handle_errors
def list_(names_only: bool, internal: bool, bootstrap_server: str) -> None:
    """List topics with their partition counts (sorted by name)."""
    with _admin(bootstrap_server) as admin:
        if names_only or not hasattr(admin, "metadata"):
            counts = {_topic_name(t): None for t in admin.list_topics(internal=internal)}
        else:
            counts = dict(admin.metadata().topics)
    names = sorted(n for n in counts if internal or not n.startswith("__"))
    if names_only:
        click.echo("".join(f"{n}\n" for n in names), nl=False)
        return
    table = _table("TOPIC", "PARTITIONS")
    for name in names:
        count = counts[name]
        table.add_row(name, "-" if count is None else str(count))
    _console().print(table)


def _topic_name(item: Any) -> str:
    return item if isinstance(item, str) else getattr(item, "name", str(item))


@topics.command("describe")
@click.argument("name", type=TOPIC, required=False)
@click.option("--under-replicated", "--under-replicated-partitions", "under_replicated", is_flag=True,
              help="Only partitions whose ISR is smaller than their replica set, and offline ones "
                   "(every topic unless NAME is given).")
@click.option("--unavailable", "--unavailable-partitions", "unavailable", is_flag=True,
              help="Only offline partitions: no leader, or a leader that is not alive.")
@bootstrap_option
@handle_errors
def describe(name: str | None, under_replicated: bool, unavailable: bool, bootstrap_server: str) -> None:
    """Show NAME's partitions (leader, replicas, ISR, offsets, size) and configs.

    With --under-replicated or --unavailable, list only the partitions in that
    state, of NAME or of every topic, one row each (nothing when all are well),
    as Kafka's `kafka-topics --describe --under-replicated-partitions` does.
    """
    if under_replicated or unavailable:
        _describe_unhealthy(bootstrap_server, name, unavailable_only=unavailable and not under_replicated)
        return
    if name is None:
        fail("describe needs a topic NAME (or --under-replicated / --unavailable for every topic)",
             EXIT_USAGE)
    with _admin(bootstrap_server) as admin:
        desc = admin.describe_topic(name)
        config: Any = desc.config
        if hasattr(admin, "describe_configs"):  # with each value's source (topic / default)
            config = admin.describe_configs(name, verbose=True)
    partitions = sorted(desc.partitions, key=lambda p: p.partition)
    replication = len(partitions[0].replicas) if partitions else 0
    total = sum(p.size_bytes or 0 for p in partitions)
    console = _console()
    policy = _config_value(config, "cleanup.policy")
    console.print(
        f"Topic: {desc.name}  PartitionCount: {len(partitions)}  "
        f"ReplicationFactor: {replication}  Size: {_size(total)}"
        + (f"  CleanupPolicy: {policy}" if policy else "")
    )
    ratios = [getattr(p, "cleanable_ratio", None) for p in partitions]
    compacted = any(r is not None for r in ratios)     # issue 12: the cleaner's dirty share
    table = _table("PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "LOG-START-OFFSET",
                   "LOG-END-OFFSET", "HIGH-WATERMARK", "SIZE", *(["CLEANABLE-RATIO"] if compacted else []))
    for p, ratio in zip(partitions, ratios):
        table.add_row(str(p.partition), _leader(p.leader), str(p.leader_epoch), _ids(p.replicas),
                      _ids(p.isr), str(p.log_start_offset), str(p.log_end_offset),
                      str(p.high_watermark), _size(p.size_bytes),
                      *([f"{ratio:.2f}" if ratio is not None else "-"] if compacted else []))
    console.print(table)
    configs = _config_rows(config)
    if configs:
        with_source = any(source for _, _, source in configs)
        config_table = _table("CONFIG", "VALUE", *(["SOURCE"] if with_source else []))
        for key, value, source in configs:
            config_table.add_row(key, value, *([source] if with_source else []))
        console.print(config_table)


def _leader(leader: int) -> str:
    """A partition's leader id; `none` when it has none (Kafka's tool prints the same)."""
    return "none" if leader < 0 else str(leader)


def _describe_unhealthy(bootstrap_server: str, name: str | None, *, unavailable_only: bool) -> None:
    """One Metadata request; print the under-replicated and offline partitions (see _health.py)."""
    from minilog.errors import UnknownTopicOrPartitionError

    from ._health import OFFLINE, UNDER_REPLICATED, unhealthy_partitions

    with _admin(bootstrap_server) as admin:
        meta = admin.metadata()
    if name is not None and name not in meta.partitions:
        raise UnknownTopicOrPartitionError(message=f"unknown topic {name!r}")
    statuses = (OFFLINE,) if unavailable_only else (OFFLINE, UNDER_REPLICATED)
    problems = unhealthy_partitions(meta.partitions, meta.brokers,
                                    topics=None if name is None else [name], statuses=statuses)
    if problems:
        _console().print(problems_table(problems))


def problems_table(problems: list[Any]) -> Any:
    """A table of `_health.PartitionHealth` rows (also `cluster status`'s)."""
    table = _table("TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "STATUS")
    for p in problems:
        table.add_row(p.topic, str(p.partition), _leader(p.leader), _ids(p.replicas), _ids(p.isr),
                      p.status)
    return table


_SOURCES = {"TOPIC_CONFIG": "topic", "DEFAULT_CONFIG": "default",
            "STATIC_BROKER_CONFIG": "broker", "DYNAMIC_BROKER_CONFIG": "broker"}


def _config_value(config: Any, key: str) -> str:
    """One config's value from {key: value} or {key: {"value": ...}} ("" when absent)."""
    entry = dict(config or {}).get(key)
    if isinstance(entry, dict):
        entry = entry.get("value")
    return "" if entry is None else str(entry)


def _config_rows(config: Any) -> list[tuple[str, str, str]]:
    """Sorted (key, value, source) from {key: value} or {key: {"value":, "source":}}."""
    rows = []
    for key, entry in dict(config or {}).items():
        source = ""
        if isinstance(entry, dict):
            source = str(entry.get("source") or "")
            source = _SOURCES.get(source, source.lower())
            entry = entry.get("value")
        rows.append((str(key), "" if entry is None else str(entry), source))
    return sorted(rows)


@topics.command("delete")
@click.argument("name", type=TOPIC)
@click.option("--if-exists", is_flag=True, help="Succeed quietly if the topic does not exist.")
@bootstrap_option
@handle_errors
def delete(name: str, if_exists: bool, bootstrap_server: str) -> None:
    """Delete topic NAME and its data."""
    from minilog.errors import UnknownTopicOrPartitionError

    with _admin(bootstrap_server) as admin:
        try:
            admin.delete_topic(name)
        except UnknownTopicOrPartitionError:
            if not if_exists:
                raise
            return
    click.echo(f"Deleted topic {name}.")


@topics.command("alter")
@click.argument("name", type=TOPIC)
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="Set a topic config. Repeatable.")
@click.option("--delete-config", "-d", "deleted", multiple=True, metavar="KEY",
              help="Reset a topic config to the broker default. Repeatable.")
@bootstrap_option
@handle_errors
def alter(name: str, configs: tuple[str, ...], deleted: tuple[str, ...], bootstrap_server: str) -> None:
    """Change NAME's configs: --config K=V sets, --delete-config K resets to the default."""
    changes: dict[str, str | None] = dict(parse_config_pairs(configs))
    for key in deleted:
        key = key.strip()
        if not key or "=" in key:
            fail(f"--delete-config expects a KEY, got {key!r}", EXIT_INVALID_CONFIG)
        if key in changes:
            fail(f"{key} is both set and deleted", EXIT_INVALID_CONFIG)
        changes[key] = None
    if not changes:
        fail("nothing to alter: give --config KEY=VALUE or --delete-config KEY", EXIT_INVALID_CONFIG)
    with _admin(bootstrap_server) as admin:
        admin.alter_configs(name, changes)
    click.echo(f"Altered topic {name}: " + ", ".join(
        f"{k}={v}" if v is not None else f"{k} reset" for k, v in changes.items()))
