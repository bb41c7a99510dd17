"""`minilog groups list | describe G | reset-offsets G --topic T ... | delete G`.

Thin calls to `minilog.Admin`'s group methods (minilog/client/_group_admin.py).
`describe` prints kafka-consumer-groups.sh's columns (TOPIC PARTITION
CURRENT-OFFSET LOG-END-OFFSET LAG MEMBER); `reset-offsets` prints the plan
and changes nothing unless `--execute` is given. An executed reset of a
group that does not exist (no members, no committed offsets) would create
it, so it is refused (EXIT_GROUP_NOT_FOUND) unless `--allow-new-group` says
that is the intent (pre-seeding a group before its consumers start). Errors are one line on
stderr and a named exit code (`_common.py`); no traceback reaches the user.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import click

from minilog._logsafe import logsafe

from ._common import (
    EXIT_USAGE,
    INT64_MAX,
    TOPIC,
    bootstrap_option,
    client_options,
    fail,
    handle_errors,
    non_empty,
)
from ._group import main

EXIT_GROUP_NOT_FOUND = 10      # groups: unknown group
EXIT_GROUP_NOT_EMPTY = 11      # groups: refused while the group has active members


def _admin(bootstrap_server: str):
    import minilog

    return minilog.Admin(bootstrap_server, **client_options())


def _group_errors(func):
    """Map the group errors to their exit codes, then the shared handling."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from minilog.errors import GroupIdNotFoundError, NonEmptyGroupError

        try:
            return func(*args, **kwargs)
        except GroupIdNotFoundError as exc:
            fail(exc.message, EXIT_GROUP_NOT_FOUND)
        except NonEmptyGroupError as exc:
            fail(exc.message, EXIT_GROUP_NOT_EMPTY)
    return wrapper


def _rows(headers: list[str], rows: list[list]) -> None:
    """A plain aligned table (numbers right-aligned), one line per row.

    Cells go through `logsafe`: group, member and client ids are chosen by clients, and
    a newline or an escape sequence in one must not forge a row or drive the terminal.
    """
    text = [[("-" if v is None else logsafe(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    numeric = [all(r[i].lstrip("-").isdigit() or r[i] == "-" for r in text) and bool(text)
               for i in range(len(headers))]

    def line(cells):
        return "  ".join((c.rjust(w) if num else c.ljust(w))
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    click.echo(line(headers))
    for r in text:
        click.echo(line(r))


@main.group()
def groups() -> None:
    """List, describe, reset and delete consumer groups."""


@groups.command("list")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["empty", "assigning", "reconciling", "stable"]),
              help="Only groups in this state. Repeatable.")
@bootstrap_option
@handle_errors
def list_(states: tuple[str, ...], bootstrap_server: str) -> None:
    """List consumer groups with their state."""
    with _admin(bootstrap_server) as admin:
        found = admin.list_groups(list(states))
    if found:
        _rows(["GROUP", "STATE"], [[g.group_id, g.state] for g in found])


@groups.command("describe")
@click.argument("group", callback=non_empty)
@click.option("--members", "show_members", is_flag=True, help="List members and assignments too.")
@bootstrap_option
@handle_errors
@_group_errors
def describe(group: str, show_members: bool, bootstrap_server: str) -> None:
    """Committed offsets, log end offsets and lag of GROUP, per partition."""
    with _admin(bootstrap_server) as admin:
        d = admin.describe_group(group)
    click.echo(f"Group: {logsafe(d.group_id)}  State: {d.state}  Members: {len(d.members)}  "
               f"Epoch: {d.group_epoch}  Assignor: {d.assignor}  Total lag: {d.total_lag}")
    client_of = {m.member_id: m.client_id for m in d.members}
    rows = [[o.topic, o.partition, o.committed, o.log_end_offset, o.lag,
             f"{o.member_id[:12]} ({client_of.get(o.member_id, '')})" if o.member_id else None]
            for o in d.offsets]
    click.echo("")
    _rows(["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER"], rows)
    if show_members and d.members:
        click.echo("")
        _rows(["MEMBER", "CLIENT-ID", "HOST", "EPOCH", "ASSIGNMENT"],
              [[m.member_id, m.client_id, m.host, m.member_epoch,
                ",".join(f"{t}-{p}" for t, p in m.assignment) or None] for m in d.members])


def _parse_datetime(value: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"invalid --to-datetime {value!r}: expected ISO 8601, e.g. 2024-05-01T12:00:00Z",
             EXIT_USAGE)
    try:
        stamp = (when if when.tzinfo is not None else when.astimezone()).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        fail(f"invalid --to-datetime {value!r}: {exc}", EXIT_USAGE)
    if stamp < 0:
        fail(f"invalid --to-datetime {value!r}: before 1970-01-01T00:00:00Z", EXIT_USAGE)
    return when


@groups.command("reset-offsets")
@click.argument("group", callback=non_empty)
@click.option("--topic", required=True, type=TOPIC, help="Topic whose committed offsets to reset.")
@click.option("--to-earliest", is_flag=True, help="To each partition's log start.")
@click.option("--to-latest", is_flag=True, help="To each partition's log end.")
@click.option("--to-offset", type=click.IntRange(0, INT64_MAX), default=None, metavar="N",
              help="To offset N (clamped).")
@click.option("--to-datetime", default=None, metavar="ISO",
              help="To the first record at or after this time (ISO 8601).")
@click.option("--shift-by", type=click.IntRange(-INT64_MAX, INT64_MAX), default=None, metavar="N",
              help="Move the committed offsets by N (negative: back).")
@click.option("--execute", is_flag=True, help="Apply the plan (default: print it only).")
@click.option("--allow-new-group", is_flag=True,
              help="Let --execute create GROUP when it does not exist yet (pre-seeding).")
@bootstrap_option
@handle_errors
@_group_errors
def reset_offsets(group: str, topic: str, to_earliest: bool, to_latest: bool,
                  to_offset: int | None, to_datetime: str | None, shift_by: int | None,
                  execute: bool, allow_new_group: bool, bootstrap_server: str) -> None:
    """Plan (or with --execute apply) new committed offsets for GROUP on --topic."""
    chosen = [to_earliest, to_latest, to_offset is not None, to_datetime is not None,
              shift_by is not None]
    if sum(chosen) != 1:
        fail("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, "
             "--shift-by", EXIT_USAGE)
    target: dict[str, Any] = {}
    if to_earliest:
        target["to_earliest"] = True
    elif to_latest:
        target["to_latest"] = True
    elif to_offset is not None:
        if to_offset < 0:
            fail("--to-offset must be >= 0", EXIT_USAGE)
        target["to_offset"] = to_offset
    elif to_datetime is not None:
        target["to_datetime"] = _parse_datetime(to_datetime)
    else:
        target["shift_by"] = shift_by
    from minilog.errors import GroupIdNotFoundError

    with _admin(bootstrap_server) as admin:
        try:
            plan = admin.reset_offsets(group, topic, execute=execute,
                                       allow_new_group=allow_new_group, **target)
        except GroupIdNotFoundError:
            fail(f"unknown group {group!r}: nothing changed (add --allow-new-group to create it "
                 "with these offsets)", EXIT_GROUP_NOT_FOUND)
    for warning in plan.warnings:
        click.echo(f"minilog: warning: {warning}", err=True)
    _rows(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
          [[group, r.topic, r.partition, r.current, r.target] for r in plan.rows])
    if execute:
        click.echo(f"\nReset {len(plan.rows)} partition(s) of {topic} for group {logsafe(group)}.")
    else:
        note = (f" (the group has {plan.active_members} active member(s): --execute will be "
                "refused until they stop)") if plan.active_members else ""
        if plan.new_group and not allow_new_group:
            note = (f" (group {group!r} does not exist: --execute needs --allow-new-group "
                    "to create it)")
        click.echo(f"\nDry run: nothing changed{note}. Add --execute to apply.")


@groups.command("delete")
@click.argument("group", callback=non_empty)
@bootstrap_option
@handle_errors
@_group_errors
def delete(group: str, bootstrap_server: str) -> None:
    """Delete GROUP and its committed offsets (refused while it has members)."""
    with _admin(bootstrap_server) as admin:
        admin.delete_group(group)
    click.echo(f"Deleted group {logsafe(group)}.")
