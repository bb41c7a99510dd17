"""`minilog cluster up | down | status`: a local etcd and N brokers for trying replication.

Theory of operation: `up` and `down` drive `_local_cluster` (processes and
the state file DIR/cluster.json); `up` decides that the cluster has formed
by asking it, through `minilog.Admin`, for its Metadata until every broker
is listed (each broker is listed while it holds its etcd lease). `status`
is a client command: one Metadata request through `--bootstrap-server` (or
the bootstrap list recorded in `--data-dir`), printed as a broker table and
the partitions that are under-replicated or offline (`_health.py`).

Exit codes (docs/cli.md): EXIT_ERROR for every local-cluster problem (etcd
not installed, DIR already running, nothing running, a process that died on
start, a cluster that did not form in time); the client's codes for
`status` (EXIT_BROKER_UNAVAILABLE when no broker answers).
"""

from __future__ import annotations

import os
from typing import Any

import click

from ._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    bootstrap_option,
    client_options,
    handle_errors,
)
from ._group import main
from ._health import OFFLINE, unhealthy_partitions
from . import _local_cluster as lc
from .topics import _console, _table, problems_table

_DEFAULT_DIR = "./minilog-cluster"


def _local(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a `_local_cluster` call; its ClusterError becomes one CLI error line."""
    try:
        return call(*args, **kwargs)
    except lc.ClusterError as exc:
        raise CliError(str(exc), EXIT_ERROR) from None


@main.group()
def cluster() -> None:
    """Start, stop and inspect a local cluster (etcd and N brokers on loopback)."""


def _all_registered(state: lc.ClusterState) -> bool:
    """True when a broker of `state` answers Metadata listing every broker of `state`."""
    import minilog
    from minilog.errors import MinilogError

    wanted = {b.broker_id for b in state.brokers}
    try:
        with minilog.Admin(state.bootstrap, request_timeout_ms=2_000) as admin:
            return wanted <= set(admin.metadata().brokers)
    except (MinilogError, OSError):
        return False    # not answering yet


@cluster.command("up")
@click.option("--brokers", "-n", type=click.IntRange(1, lc.BROKERS_MAX), default=None,
              help="Number of brokers (ids 0..N-1)  [default: 3]")
@click.option("--data-dir", default=_DEFAULT_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Directory for etcd's and every broker's data, their logs and the state file.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A broker setting for every broker (as `minilog serve --set`). Repeatable.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=lc.START_TIMEOUT_S,
              show_default=True, help="Seconds to wait for every broker to register.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the bootstrap address.")
@handle_errors
def up(brokers: int | None, data_dir: str, host: str, sets: tuple[str, ...], timeout_s: float,
       quiet: bool) -> None:
    """Start etcd and N brokers in the background; print the bootstrap address.

    The processes keep running after this command exits; stop them with
    `minilog cluster down --data-dir DIR`. Data stays in DIR: `up` on the same
    DIR later restarts the cluster with its topics. `up` on a DIR whose cluster
    partly runs (a broker was killed) starts only the stopped processes again,
    from their recorded command lines.
    """
    for pair in sets:
        if "=" not in pair or not pair.partition("=")[0].strip():
            raise CliError(f"--set expects KEY=VALUE, got {pair!r}", EXIT_USAGE)
    from minilog.metastore import etcd_binary

    state, restarted = _local(lc.start_cluster, data_dir, brokers, etcd_binary=etcd_binary(), host=host,
                   settings=list(sets), timeout_s=timeout_s, registered=_all_registered)
    if quiet:
        click.echo(state.bootstrap)
        return
    assert state.etcd is not None
    started = set(restarted) if restarted else None    # None: a new cluster, everything started
    mark = {True: "", False: "  (was running)"}
    click.echo(f"etcd      {state.etcd_endpoint}  pid {state.etcd.pid}"
               + mark[started is None or "etcd" in started])
    for b in state.brokers:
        click.echo(f"broker {b.broker_id}  {b.address}  pid {b.process.pid}  data {b.data_dir}"
                   + mark[started is None or b.process.name in started])
    click.echo(f"logs in {os.path.join(state.data_dir, 'logs')}")
    click.echo(f"bootstrap: {state.bootstrap}")


@cluster.command("down")
@click.option("--data-dir", default=_DEFAULT_DIR, show_default=True, type=click.Path(file_okay=False),
              help="The directory given to `cluster up`.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 3600), default=lc.STOP_TIMEOUT_S,
              show_default=True, help="Seconds each process gets after SIGTERM before SIGKILL.")
@handle_errors
def down(data_dir: str, timeout_s: float) -> None:
    """Stop the brokers (SIGTERM, SIGKILL after --timeout), then etcd. Data and logs stay."""
    state, killed = _local(lc.stop_cluster, data_dir, timeout_s=timeout_s)
    note = f" ({', '.join(killed)} did not stop in {timeout_s:g} s: killed)" if killed else ""
    click.echo(f"Stopped {len(state.brokers)} brokers and etcd in {state.data_dir}{note}.")


@cluster.command("status")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Ask the cluster `cluster up` started in DIR (its bootstrap list and broker ids).")
@bootstrap_option
@handle_errors
def status(data_dir: str | None, bootstrap_server: str) -> None:
    """List brokers (id, address, alive, controller) and under-replicated / offline partitions.

    A broker is alive while it is registered (holds its lease); brokers that
    are not are known from partitions' replica sets, or from DIR's state file.
    """
    import minilog

    recorded: dict[int, str] = {}
    pids: dict[int, str] = {}
    if data_dir is not None:
        state = _local(lc.read_state, os.path.abspath(data_dir))
        if state is None:
            raise CliError(f"no cluster recorded in {os.path.abspath(data_dir)} (no {lc.STATE_FILE})")
        recorded = {b.broker_id: b.address for b in state.brokers}
        pids = {b.broker_id: str(b.process.pid) if lc.process_alive(b.process) else "-"
                for b in state.brokers}
        source = click.get_current_context().get_parameter_source("bootstrap_server")
        if source is None or source.name == "DEFAULT":
            bootstrap_server = state.bootstrap
    with minilog.Admin(bootstrap_server, **client_options()) as admin:
        meta = admin.metadata()
    live = {node: f"{host}:{port}" for node, (host, port) in meta.brokers.items()}
    known = set(live) | set(recorded)
    for parts in meta.partitions.values():
        for p in parts:
            known.update(p.replicas)
    console = _console()
    console.print(f"Cluster: {meta.cluster_id or '-'}  Controller: "
                  f"{meta.controller_id if meta.controller_id >= 0 else 'none'}  "
                  f"Brokers: {len(live)} alive of {len(known)}  "
                  f"Topics: {sum(1 for t in meta.topics if not t.startswith('__'))}")
    table = _table("ID", "ADDRESS", "ALIVE", "CONTROLLER", *(["PID"] if pids else []))
    for node in sorted(known):
        table.add_row(str(node), live.get(node) or recorded.get(node) or "-",
                      "yes" if node in live else "no", "yes" if node == meta.controller_id else "",
                      *([pids.get(node, "-")] if pids else []))
    console.print(table)
    problems = unhealthy_partitions(meta.partitions, live)
    offline = sum(1 for p in problems if p.status == OFFLINE)
    console.print(f"Under-replicated partitions: {len(problems) - offline}  Offline partitions: {offline}")
    if problems:
        console.print(problems_table(problems))
