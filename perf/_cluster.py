"""A private local cluster for the replication perf scripts: `minilog cluster up` in a temp dir.

Theory of operation: `LocalCluster` runs the public command
`minilog cluster up --brokers N --data-dir TMP -q` (etcd and N brokers,
detached, recorded in TMP/cluster.json) and `minilog cluster down` on exit,
so the scripts measure the same processes a user starts. The state file
gives each broker's pid: `kill(broker_id, SIGKILL)` and `restart()`
(`cluster up` again, which starts the stopped brokers from their recorded
command lines, on the same ports and data dirs) are what failover_timer.py
needs.

Resource handling: `cluster down` always runs on exit (it SIGKILLs what
does not stop in time); the temp dir is removed unless the caller named one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

CLUSTER_START_TIMEOUT_S = 120.0   # `cluster up` on 2 loaded cores
CLUSTER_STOP_TIMEOUT_S = 30.0
_CLI = [sys.executable, "-m", "minilog.cli"]


class LocalCluster:
    """`with LocalCluster(3, settings) as cluster:` -> cluster.bootstrap, cluster.pid(i), ..."""

    def __init__(self, brokers: int = 3, settings: Sequence[str] = (), data_dir: str | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="minilog-perf-cluster-")
        self.brokers = brokers
        self.settings = list(settings)
        self.bootstrap = ""

    def __enter__(self) -> LocalCluster:
        try:
            self._up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _up(self) -> None:
        cmd = [*_CLI, "cluster", "up", "--brokers", str(self.brokers), "--data-dir", self.data_dir,
               "--timeout", str(CLUSTER_START_TIMEOUT_S), "-q"]
        for kv in self.settings:
            cmd += ["--set", kv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLUSTER_START_TIMEOUT_S + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"minilog cluster up failed (rc={proc.returncode}): {proc.stderr.strip()}")
        self.bootstrap = proc.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc) -> None:
        subprocess.run([*_CLI, "cluster", "down", "--data-dir", self.data_dir,
                        "--timeout", str(CLUSTER_STOP_TIMEOUT_S)],
                       capture_output=True, text=True, timeout=CLUSTER_STOP_TIMEOUT_S * 3)
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _state(self) -> dict:
        with open(os.path.join(self.data_dir, "cluster.json"), encoding="utf-8") as f:
            return json.load(f)

    def _broker(self, broker_id: int) -> dict:
        return next(b for b in self._state()["brokers"] if b["broker_id"] == broker_id)

    def pid(self, broker_id: int) -> int:
        return int(self._broker(broker_id)["process"]["pid"])

    def pids(self) -> dict[int, int]:
        return {b["broker_id"]: int(b["process"]["pid"]) for b in self._state()["brokers"]}

    def address(self, broker_id: int) -> str:
        b = self._broker(broker_id)
        return f"{b['host']}:{b['port']}"

    def kill(self, broker_id: int, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid(broker_id), sig)

    def restart(self) -> None:
        """`minilog cluster up` again: starts the recorded processes that are not running (a
        killed broker) from their recorded command lines, same port and data dir."""
        self._up()


def wait_for(predicate, what: str, timeout_s: float, interval_s: float = 0.02):
    """Poll `predicate` until truthy; RuntimeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
