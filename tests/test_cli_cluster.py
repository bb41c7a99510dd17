"""`minilog cluster up | down | status` and `topics describe --under-replicated`: the parts
that need no running cluster (issue 9, sections 3 and 6).

Error paths run the installed `minilog` command as a real process (etcd missing,
a broker that dies on start, nothing to stop); `cluster status` and
`describe --under-replicated` run against one real `minilog serve`. The
partition-health rules are checked as a table. The round trip with a real etcd
and three brokers is in test_cli_cluster_procs.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from minilog.cli import main
from minilog.cli._common import (
    EXIT_BROKER_UNAVAILABLE,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TOPIC_NOT_FOUND,
    EXIT_USAGE,
)
from minilog.cli._health import OFFLINE, UNDER_REPLICATED, partition_health, unhealthy_partitions
from minilog.client.admin import PartitionInfo
from minilog.metastore import etcd_binary

_TIMEOUT_S = 120


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed `minilog` command as a process (cluster up must detach for real)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MINILOG_")}
    full_env.update(env or {})
    return subprocess.run(["minilog", *args], env=full_env, capture_output=True, text=True,
                          timeout=_TIMEOUT_S)


def cli(bs: str, *args: str):
    return CliRunner().invoke(main, list(args), env={"MINILOG_BOOTSTRAP_SERVER": bs},
                              catch_exceptions=False)


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    stdout = result.stdout
    stderr = result.stderr
    returncode = getattr(result, "returncode", getattr(result, "exit_code", None))
    assert returncode == code, (returncode, stdout, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("minilog: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def processes_under(path: str) -> list[str]:
    """Command lines of live (non-zombie) processes that name `path`: what a test left running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if path in cmdline and not zombie:
            found.append(f"{pid}: {cmdline}")
    return found


needs_etcd = pytest.mark.skipif(etcd_binary() is None and os.environ.get("CI") != "true",
                                reason="etcd binary not found (apt-get install -y etcd-server)")


# ----------------------------------------------------------------------------
# The rules, as a table

HEALTH_CASES = [
    # (leader, replicas, isr, live brokers, status)
    ("all in sync", 0, [0, 1, 2], [0, 1, 2], [0, 1, 2], "ok"),
    ("one replica", 0, [0], [0], [0], "ok"),
    ("a follower left the ISR", 0, [0, 1, 2], [0, 2], [0, 1, 2], UNDER_REPLICATED),
    ("a dead follower still in the ISR", 0, [0, 1, 2], [0, 1, 2], [0, 2], "ok"),
    ("no leader", -1, [0, 1, 2], [1], [0, 2], OFFLINE),
    ("the leader is not alive", 1, [0, 1, 2], [1], [0, 2], OFFLINE),
    ("offline beats under-replicated", -1, [0, 1], [0], [], OFFLINE),
]


@pytest.mark.parametrize("case", HEALTH_CASES, ids=[c[0] for c in HEALTH_CASES])
def test_partition_health_rules(case):
    """Each row of the rules in minilog/cli/_health.py gives its status."""
    _, leader, replicas, isr, live, status = case
    assert partition_health(leader, replicas, isr, live) == status


def test_unhealthy_partitions_filters_and_orders():
    """unhealthy_partitions keeps the asked statuses of the asked topics, by topic then partition."""
    parts = {
        "b": [PartitionInfo(1, -1, 3, [0, 1], [1]), PartitionInfo(0, 0, 1, [0, 1], [0])],
        "a": [PartitionInfo(0, 0, 1, [0, 1], [0, 1])],
    }
    found = unhealthy_partitions(parts, [0])
    assert [(p.topic, p.partition, p.status) for p in found] == [("b", 0, UNDER_REPLICATED),
                                                                 ("b", 1, OFFLINE)]
    assert [p.partition for p in unhealthy_partitions(parts, [0], statuses=[OFFLINE])] == [1]
    assert unhealthy_partitions(parts, [0], topics=["a"]) == []


# ----------------------------------------------------------------------------
# cluster up / down errors


def test_cluster_up_without_etcd_is_one_line(tmp_path):
    """No etcd binary: one line naming the package, exit 1, nothing started, no state file."""
    data = str(tmp_path / "c")
    result = run("cluster", "up", "--data-dir", data, env={"MINILOG_ETCD_BINARY": str(tmp_path / "no-etcd")})
    assert_one_line_error(result, EXIT_ERROR, "etcd not found", "etcd-server")
    assert not os.path.exists(os.path.join(data, "cluster.json"))
    assert processes_under(data) == []


@needs_etcd
def test_cluster_up_stops_everything_when_a_broker_fails_to_start(tmp_path):
    """A broker that exits on start (a bad setting): one line naming it and its log, exit 1,
    etcd and the other brokers stopped, no state file left."""
    data = str(tmp_path / "c")
    try:
        result = run("cluster", "up", "--brokers", "2", "--data-dir", data, "--set", "no.such.setting=1")
        line = assert_one_line_error(result, EXIT_ERROR, "broker-0 exited with code 2")
        assert "no.such.setting" in line and os.path.join(data, "logs", "broker-0.log") in line
        assert not os.path.exists(os.path.join(data, "cluster.json"))
        assert processes_under(data) == []
    finally:
        run("cluster", "down", "--data-dir", data, "--timeout", "5")


def test_cluster_up_refuses_a_bad_set_pair(tmp_path):
    """--set without '=' is a usage error before anything starts."""
    result = run("cluster", "up", "--data-dir", str(tmp_path / "c"), "--set", "novalue")
    assert_one_line_error(result, EXIT_USAGE, "--set expects KEY=VALUE")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("make_dir", [False, True], ids=["no-dir", "empty-dir"])
def test_cluster_down_with_nothing_running(tmp_path, make_dir):
    """`down` on a directory with no cluster: one line, exit 1."""
    data = tmp_path / "c"
    if make_dir:
        data.mkdir()
    result = run("cluster", "down", "--data-dir", str(data))
    assert_one_line_error(result, EXIT_ERROR, "no cluster running in")


def test_cluster_down_with_a_stale_state_file(tmp_path):
    """A state file whose processes are all gone: `down` says nothing runs (exit 1) and
    removes the stale file, so `up` starts cleanly next time."""
    data = tmp_path / "c"
    data.mkdir()
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()      # a pid that ran and is gone
    state = {"version": 1, "data_dir": str(data), "etcd_endpoint": "http://127.0.0.1:1",
             "etcd": {"name": "etcd", "pid": proc.pid, "argv": ["sleep", "60"], "log_path": "x"},
             "brokers": []}
    (data / "cluster.json").write_text(json.dumps(state))
    result = run("cluster", "down", "--data-dir", str(data))
    assert_one_line_error(result, EXIT_ERROR, "no cluster running in", "exited")
    assert not (data / "cluster.json").exists()


def test_cluster_down_never_signals_a_recycled_pid(tmp_path):
    """A recorded pid now held by another program (a different command line) is not ours:
    `down` reports nothing running and leaves that process alone."""
    data = tmp_path / "c"
    data.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        state = {"version": 1, "data_dir": str(data), "etcd_endpoint": "http://127.0.0.1:1",
                 "etcd": {"name": "etcd", "pid": other.pid, "argv": ["etcd", "--name", "minilog"],
                          "log_path": "x"},
                 "brokers": []}
        (data / "cluster.json").write_text(json.dumps(state))
        result = run("cluster", "down", "--data-dir", str(data))
        assert_one_line_error(result, EXIT_ERROR, "no cluster running in")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _record(proc: subprocess.Popen, name: str, argv: list[str]) -> dict:
    return {"name": name, "pid": proc.pid, "argv": argv, "log_path": os.devnull}


def _write_state(data, etcd: dict | None, brokers: list[dict]) -> None:
    state = {"version": 1, "data_dir": str(data), "etcd_endpoint": "http://127.0.0.1:1", "etcd": etcd,
             "brokers": [{"broker_id": i, "host": "127.0.0.1", "port": 1 + i, "data_dir": str(data),
                          "process": b} for i, b in enumerate(brokers)]}
    (data / "cluster.json").write_text(json.dumps(state))


_STUBBORN = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "print('ready', flush=True); time.sleep(120)"]


def test_cluster_down_terms_then_kills(tmp_path):
    """`down` sends SIGTERM to every recorded process, SIGKILLs the one still running after
    --timeout, says so, and removes the state file."""
    data = tmp_path / "c"
    data.mkdir()
    polite = subprocess.Popen(["sleep", "120"])
    stubborn = subprocess.Popen(_STUBBORN, stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"  # handler set
        _write_state(data, _record(polite, "etcd", ["sleep", "120"]), [_record(stubborn, "broker-0", _STUBBORN)])
        result = run("cluster", "down", "--data-dir", str(data), "--timeout", "1")
        assert result.returncode == EXIT_OK, result.stderr
        assert "Stopped 1 brokers and etcd" in result.stdout and "broker-0 did not stop" in result.stdout
        assert polite.wait(10) == -signal.SIGTERM
        assert stubborn.wait(10) == -signal.SIGKILL
        assert not (data / "cluster.json").exists()
    finally:
        for proc in (polite, stubborn):
            proc.kill()
            proc.wait()


@needs_etcd
def test_cluster_up_on_a_partly_running_cluster_keeps_its_broker_count(tmp_path):
    """`up --brokers N` on a DIR whose recorded cluster partly runs with another count is refused
    (one line, exit 1) and starts nothing; the running process is left alone."""
    data = tmp_path / "c"
    data.mkdir()
    running = subprocess.Popen(["sleep", "120"])
    gone = subprocess.Popen(["sleep", "120"])
    gone.kill()
    gone.wait()
    try:
        _write_state(data, _record(running, "etcd", ["sleep", "120"]), [_record(gone, "broker-0", ["sleep", "120"])])
        result = run("cluster", "up", "--brokers", "2", "--data-dir", str(data))
        assert_one_line_error(result, EXIT_ERROR, "has 1 brokers, not 2")
        assert running.poll() is None
        assert processes_under(str(data)) == []
    finally:
        running.kill()
        running.wait()


def test_cluster_status_with_no_recorded_cluster(tmp_path):
    """`status --data-dir` on a directory with no state file: one line, exit 1."""
    result = run("cluster", "status", "--data-dir", str(tmp_path))
    assert_one_line_error(result, EXIT_ERROR, "no cluster recorded")


def test_cluster_status_with_no_broker(tmp_path):
    """No broker at the bootstrap address: one line, EXIT_BROKER_UNAVAILABLE."""
    result = run("cluster", "status", "--bootstrap-server", "127.0.0.1:1", "--request-timeout-ms", "1000")
    assert_one_line_error(result, EXIT_BROKER_UNAVAILABLE)


# ----------------------------------------------------------------------------
# One real broker (no --metadata): the same commands see one healthy broker


def test_cluster_status_of_a_single_broker(broker):
    """A single broker is listed alive, with nothing under-replicated or offline."""
    bs = f"{broker.host}:{broker.port}"
    assert cli(bs, "topics", "create", "s1", "--partitions", "2").exit_code == EXIT_OK
    result = cli(bs, "cluster", "status")
    assert result.exit_code == EXIT_OK, result.output
    assert "Brokers: 1 alive of 1" in result.stdout
    assert "Under-replicated partitions: 0  Offline partitions: 0" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["0", bs, "yes"] == next(r for r in rows if r and r[0] == "0")[:3], result.stdout


def test_describe_under_replicated_on_a_single_broker(broker):
    """Nothing is under-replicated on one broker: no rows, exit 0; an unknown topic is exit 4;
    describe with neither NAME nor a filter is a usage error."""
    bs = f"{broker.host}:{broker.port}"
    assert cli(bs, "topics", "create", "u1", "--partitions", "3").exit_code == EXIT_OK
    for args in (["--under-replicated"], ["u1", "--under-replicated"], ["--unavailable-partitions"]):
        result = cli(bs, "topics", "describe", *args)
        assert (result.exit_code, result.stdout) == (EXIT_OK, ""), (args, result.output)
    assert_one_line_error(cli(bs, "topics", "describe", "nope", "--under-replicated"), EXIT_TOPIC_NOT_FOUND)
    assert_one_line_error(cli(bs, "topics", "describe"), EXIT_USAGE, "describe needs a topic NAME")
