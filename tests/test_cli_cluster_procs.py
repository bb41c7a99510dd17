"""`minilog cluster up | status | down` with a real etcd and three real brokers, and
`topics describe` / `--under-replicated` on the cluster they form (issue 9, sections 3 and 6);
the replication perf script's smoke run (section 5) on its own cluster.

Every command runs as the installed `minilog` process, as a user runs it. The
fixture SIGKILLs whatever a failed test left running (from the state file and
by scanning /proc for processes naming the test's directory). Waits are
conditions with deadlines; a killed broker leaves the ISRs when its lease
lapses (`broker.session.timeout.ms`, set low here so the test takes seconds).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from minilog.cli._common import EXIT_ERROR, EXIT_OK
from minilog.cli._local_cluster import ProcessRecord, process_alive

from test_cli_cluster import assert_one_line_error, needs_etcd, processes_under, run

pytestmark = [needs_etcd, pytest.mark.slow]

SESSION_MS = 2000      # broker.session.timeout.ms: a killed broker's lease lapses this fast, and the
                       # controller takes it out of every ISR
DEADLINE_S = 60.0      # any one condition below (loaded 2-core machine)
SETTINGS = ["--set", f"broker.session.timeout.ms={SESSION_MS}"]
PERF = pathlib.Path(__file__).resolve().parent.parent / "perf"
_PERF_TIMEOUT_S = 300


def wait_until(predicate, what: str, timeout_s: float = DEADLINE_S, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(interval_s)


def state_of(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "cluster.json"), encoding="utf-8") as f:
        return json.load(f)


def records(state: dict) -> list[ProcessRecord]:
    procs = [ProcessRecord(**b["process"]) for b in state["brokers"]]
    return procs + ([ProcessRecord(**state["etcd"])] if state.get("etcd") else [])


@pytest.fixture
def cluster_dir(tmp_path) -> Iterator[str]:
    """A directory for one cluster; everything started in it is killed at the end."""
    data_dir = str(tmp_path / "cluster")
    yield data_dir
    try:
        for record in records(state_of(data_dir)):
            if process_alive(record):
                os.kill(record.pid, signal.SIGKILL)
    except FileNotFoundError:
        pass
    for line in processes_under(data_dir):
        os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == EXIT_OK, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def describe_rows(text: str) -> dict[int, dict]:
    """`topics describe` rows: PARTITION LEADER EPOCH REPLICAS ISR ..."""
    row = re.compile(r"^\s*(\d+)\s+(\d+|none)\s+(-?\d+)\s+([\d,]+)\s+([\d,]*)\s+(-?\d+)\s+(-?\d+)\s", re.M)
    return {int(m[1]): {"leader": m[2], "replicas": m[4].split(","), "isr": [i for i in m[5].split(",") if i],
                        "log_end": int(m[7])}
            for m in row.finditer(text)}


def status_rows(text: str) -> dict[str, dict]:
    """`cluster status --data-dir` broker rows: ID ADDRESS ALIVE CONTROLLER PID (CONTROLLER blank
    but for the controller)."""
    rows = {}
    for m in re.finditer(r"^(\d+)\s+(\S+:\d+)\s+(yes|no)\s+(yes\s+)?(\d+|-)\s*$", text, re.M):
        rows[m[1]] = {"address": m[2], "alive": m[3] == "yes", "controller": bool(m[4]), "pid": m[5]}
    return rows


def test_cluster_round_trip_with_a_killed_broker(cluster_dir):
    """up starts etcd and 3 detached brokers and prints the bootstrap list; a second up on the
    same DIR is refused; status lists 3 live brokers and one controller; a topic with RF=3
    shows Leader, Replicas, Isr; after kill -9 of a broker, --under-replicated lists every
    partition and status shows it dead while acks=all produce keeps working; up again starts
    only that broker; down stops every process, and up on the same DIR brings the topic back."""
    bootstrap = ok(run("cluster", "up", "--brokers", "3", "--data-dir", cluster_dir, "-q", *SETTINGS)).strip()
    state = state_of(cluster_dir)
    assert bootstrap == ",".join(f"{b['host']}:{b['port']}" for b in state["brokers"])
    assert [b["broker_id"] for b in state["brokers"]] == [0, 1, 2]
    assert all(process_alive(r) for r in records(state)), "up returned, the processes must outlive it"

    again = run("cluster", "up", "--data-dir", cluster_dir, *SETTINGS)
    assert_one_line_error(again, EXIT_ERROR, "already running")

    env = {"MINILOG_BOOTSTRAP_SERVER": bootstrap}
    status = ok(run("cluster", "status", "--data-dir", cluster_dir))
    rows = status_rows(status)
    assert sorted(rows) == ["0", "1", "2"] and all(r["alive"] for r in rows.values()), status
    assert sum(r["controller"] for r in rows.values()) == 1, status
    assert [rows[str(b["broker_id"])]["pid"] for b in state["brokers"]] == \
        [str(b["process"]["pid"]) for b in state["brokers"]], status
    assert "Under-replicated partitions: 0  Offline partitions: 0" in status

    ok(run("topics", "create", "orders", "--partitions", "3", "--replication-factor", "3",
           "--config", "min.insync.replicas=2", env=env))

    def fully_replicated():
        parts = describe_rows(ok(run("topics", "describe", "orders", env=env)))
        return parts if len(parts) == 3 and all(len(p["isr"]) == 3 for p in parts.values()) else None

    parts = wait_until(fully_replicated, "orders led with a full ISR")
    header = ok(run("topics", "describe", "orders", env=env))
    assert re.search(r"PARTITION\s+LEADER\s+EPOCH\s+REPLICAS\s+ISR", header), header
    for p in parts.values():
        assert sorted(p["replicas"]) == ["0", "1", "2"] and p["leader"] in p["replicas"]
    ok(run("produce", "orders", "--value", "before", env=env))
    # offsets come from each partition's leader, whichever broker answered the describe
    assert sum(p["log_end"] for p in describe_rows(ok(run("topics", "describe", "orders", env=env))).values()) == 1
    assert ok(run("topics", "describe", "--under-replicated", env=env)) == ""
    offsets = wait_until(lambda: (r := run("topics", "describe", "__consumer_offsets", env=env)).returncode == 0
                         and r.stdout, "__consumer_offsets created")
    assert "ReplicationFactor: 3" in offsets, offsets     # cluster up's default, min(3, brokers)

    os.kill(state["brokers"][1]["process"]["pid"], signal.SIGKILL)

    def under_replicated():
        text = ok(run("topics", "describe", "--under-replicated", env=env))
        listed = {int(m[1]) for m in re.finditer(r"^orders\s+(\d+)\s", text, re.M)}
        return text if listed == {0, 1, 2} else None

    text = wait_until(under_replicated, "every partition of orders under-replicated")
    for line in text.splitlines():
        if line.startswith("orders"):
            assert "1" not in line.split()[4].split(","), line    # the ISR lost broker 1
    status = wait_until(lambda: (s := ok(run("cluster", "status", "--data-dir", cluster_dir)))
                        and not status_rows(s)["1"]["alive"] and s, "broker 1 shown dead")
    assert status_rows(status)["1"]["pid"] == "-", status
    assert len(re.findall(r"^orders\s+\d+\s.*under-replicated", status, re.M)) == 3, status
    assert "Offline partitions: 0" in status, status      # every partition kept a leader
    ok(run("produce", "orders", "--value", "after", "--acks", "all", env=env))  # 2 of 3 in sync

    restarted = ok(run("cluster", "up", "--data-dir", cluster_dir))    # brings back broker 1 only
    assert re.search(r"^broker 1 .*pid \d+", restarted, re.M) and "(was running)" in restarted, restarted
    assert [line for line in restarted.splitlines() if "(was running)" not in line
            and line.startswith(("broker", "etcd"))] == [
        next(line for line in restarted.splitlines() if line.startswith("broker 1"))], restarted
    assert status_rows(ok(run("cluster", "status", "--data-dir", cluster_dir)))["1"]["alive"]

    stopped = ok(run("cluster", "down", "--data-dir", cluster_dir))
    assert "Stopped 3 brokers and etcd" in stopped
    assert processes_under(cluster_dir) == []
    assert not os.path.exists(os.path.join(cluster_dir, "cluster.json"))
    assert_one_line_error(run("cluster", "down", "--data-dir", cluster_dir), EXIT_ERROR, "no cluster running")

    bootstrap = ok(run("cluster", "up", "--data-dir", cluster_dir, "-q", *SETTINGS)).strip()
    listed = ok(run("topics", "list", "--names-only", env={"MINILOG_BOOTSTRAP_SERVER": bootstrap}))
    assert listed.split() == ["orders"]
    ok(run("cluster", "down", "--data-dir", cluster_dir))
    assert processes_under(cluster_dir) == []


def test_replication_perf_runs_both_modes_on_its_own_cluster():
    """perf/replication_perf.py starts its own cluster, produces to an RF=1 topic (acks=1) and an
    RF=3 topic (acks=all, min.insync.replicas=2), acknowledges every record in both, prints one
    JSON object with both rates and their ratio, and leaves no process behind (the figures are
    not checked: benchmarks are never timed assertions)."""
    out = run_perf("replication_perf.py", "--num-records", "2000")
    assert out["tool"] == "replication_perf"
    for mode in ("baseline", "replicated"):
        (only,) = out[mode]["runs"].values()
        assert (only["acked"], only["errors"]) == (2000, 0), out[mode]
        assert out[mode]["median_records_per_sec"] == only["records_per_sec"] > 0
    assert out["ratio"] == out["replicated"]["median_records_per_sec"] / out["baseline"]["median_records_per_sec"]
    assert "min.insync.replicas=2" in out["replicated"]["what"]


def run_perf(name: str, *args: str) -> dict:
    """Run perf/NAME with --json --no-progress; its one JSON line, and nothing it started left."""
    before = set(processes_under("minilog-perf-cluster-"))
    proc = subprocess.run([sys.executable, str(PERF / name), "--json", "--no-progress", *args],
                          capture_output=True, text=True, timeout=_PERF_TIMEOUT_S, cwd=PERF.parent)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    assert set(processes_under("minilog-perf-cluster-")) <= before
    return json.loads(lines[0])
